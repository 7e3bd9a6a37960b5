"""Exports: a batch's results as a CSV, NDJSON or JSON-array download, streamed a page at a time (memory stays
flat whatever the batch's size), spreadsheet-safe, and never a clean-looking short file when the store fails
midway."""

from __future__ import annotations

import bisect
import csv
import errno
import io
import itertools
import json
import logging
import operator
import re
from collections.abc import Iterator
from typing import Any

import orjson
from flask import Response, stream_with_context

from ..runs.store import Store, StoreError

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "index",
    "url",
    "final_url",
    "status_code",
    "ok",
    "error_kind",
    "error_message",
    "bytes",
    "content_type",
    "redirects",
    "attempts",
    "started_at",
    "finished_at",
    "total_ms",
    "ttfb_ms",
    "dns_ms",
    "connect_ms",
    "tls_ms",
    "wait_ms",
    "download_ms",
)
TIMINGS = ("total", "ttfb", "dns", "connect", "tls", "wait", "download")  # the last columns: timings[name], in ms


# The download formats (`format=` of the results route) and their content types: each streams the whole batch.
FORMATS = ("csv", "ndjson", "json")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson", "json": "application/json"}


def download(store: Store, batch_id: str, fmt: str, outcome: str | None) -> Response:
    """The whole batch (or its ok/failed results) as a `fmt` (one of FORMATS) attachment, streamed."""
    body = chunks(store, batch_id, fmt, outcome)
    response = Response(stream_with_context(_broken_on_failure(body, fmt, batch_id)), content_type=CONTENT_TYPES[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="greenbatch-{batch_id}.{fmt}"'
    return response


def chunks(store: Store, batch_id: str, fmt: str, outcome: str | None = None) -> Iterator[str]:
    """A download's text, a chunk per page the store reads (a few hundred KiB), memory flat whatever the size.

    The first page is read before this returns: a store that fails now raises StoreError here (the API
    answers a JSON 503), not once a 200 has begun.
    """
    pages = store.result_texts(batch_id, outcome, _TIMING_PATHS if fmt == "csv" else ())
    pages = itertools.chain(list(itertools.islice(pages, 1)), pages)
    return {"csv": _csv_chunks, "ndjson": _ndjson_chunks, "json": _json_array_chunks}[fmt](pages)


class ExportBroken(ConnectionResetError):
    """Raised into the WSGI server to end an export's chunked body without its last chunk.

    A reset connection is what pywsgi (ours and gunicorn's) closes without a traceback: the cause is logged here.
    """


def _broken_on_failure(body: Iterator[str], fmt: str, batch_id: str) -> Iterator[str]:
    """An export's text; if the store fails midway, an error line, then a broken body (never a clean short 200).

    Raising while the body streams makes the server close the connection without the chunked encoding's
    last chunk, so curl, requests and browsers report an incomplete download.
    """
    try:
        yield from body
    except StoreError as exc:
        message = f"the export of batch {batch_id} stopped: {exc}; this file is incomplete"
        log.error("%s", message, extra={"batch_id": batch_id})
        if fmt == "csv":
            buffer = io.StringIO()
            csv.writer(buffer, quoting=csv.QUOTE_ALL).writerow(["error", message])
            yield buffer.getvalue()
        else:
            yield json.dumps({"error": {"code": "store_unavailable", "message": message, "details": []}}) + "\n"
        raise ExportBroken(errno.ECONNRESET, message) from exc


# NDJSON and the JSON array carry each result's stored text as it is: the compact JSON the engine wrote
# (compact_json of Result.to_dict), one line each; each store page is one chunk of the body.


def _ndjson_chunks(pages: Iterator[list[tuple[str, ...]]]) -> Iterator[str]:
    """Results as NDJSON: one JSON object a line."""
    for rows in pages:
        yield "\n".join([row[0] for row in rows]) + "\n"


def _json_array_chunks(pages: Iterator[list[tuple[str, ...]]]) -> Iterator[str]:
    """Results as one JSON array, a result a line, written as they are read (never held as a list)."""
    opening = "[\n"
    for rows in pages:
        yield opening + ",\n".join([row[0] for row in rows])
        opening = ",\n"
    yield "[\n]\n" if opening == "[\n" else "\n]\n"


def _csv_chunks(pages: Iterator[list[tuple[str, ...]]]) -> Iterator[str]:
    """Results as CSV, a store page per chunk, every field quoted and spreadsheet formulas defused."""
    yield _csv_text([list(CSV_COLUMNS)])
    for rows in pages:
        yield _csv_page(rows)


def _csv_cells(result: dict[str, Any]) -> list[Any]:
    """One result's CSV fields, in CSV_COLUMNS' order, before defusing."""
    error = result.get("error") or {}
    t = result.get("timings") or {}
    return [
        result["index"],
        result["url"],
        result.get("final_url"),
        result.get("status_code"),
        _boolean(result.get("ok")),
        error.get("kind"),
        error.get("message"),
        result.get("bytes"),
        result.get("content_type"),
        len(result.get("redirects") or []),
        result.get("attempts"),
        result.get("started_at"),
        result.get("finished_at"),
        *(t.get(name) for name in TIMINGS),
    ]


def csv_line(result: dict[str, Any]) -> str:
    """One result as a CSV line, the reference way: csv's writer quotes every field, formulas defused.

    Every line of a CSV download is this line (most are made faster, below, to the same text).
    """
    return _csv_text([[_cell(v) for v in _csv_cells(result)]])


def _csv_text(rows: list[list[Any]]) -> str:
    """Rows as CSV text, every field quoted."""
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL).writerows(rows)
    return buffer.getvalue()


def _boolean(value: Any) -> str | None:
    """true or false as JSON writes them (csv would write Python's True and False)."""
    return None if value is None else ("true" if value else "false")


# Where a spreadsheet may start a cell: the field's start, or a separator inside it (a `;`-splitting locale
# cuts "text/html;=1+2" in two), past spaces and quotes; there, a formula trigger (ASCII or full-width) or a
# tab or CR gets a `'` before it.
_FORMULA_START = re.compile(r'(^|[;,\t\r\n])([ "]*)(?=[-=+@\t\r\uff1d\uff0b\uff0d\uff20])')


def _cell(value: Any) -> Any:
    """Defuse text a spreadsheet would run as a formula (targets control content types and URLs)."""
    if isinstance(value, str):
        return _FORMULA_START.sub(r"\1\2'", value)
    return value


# -- the fast way to the same lines ---------------------------------------------------------------
#
# csv's writer takes ~7 us a line, the defusing regex ~1 us a field and a float's repr ~0.5 us: too slow
# for a million results. Most results need none of them.
# - With every field quoted, a field without a quote is written as it is, and defusing changes nothing
#   where no trigger follows a field's start, a separator or a space. In a result's stored JSON text a
#   quote, tab, CR or LF inside a string (anything escaped) shows as a backslash, and a string that starts
#   with a trigger as a quote before it. So stored text with no backslash, no [;, "] before a trigger and
#   no full-width trigger holds nothing to quote or defuse: its line is joined straight from its values.
# - The timings come from SQLite as the numbers' stored text, which is their repr (orjson and json write the
#   shortest text that reads back the same float) except in exponent form or below 0.0001, which take csv_line.
# Any other result takes csv_line; tests/test_exports.py checks that both give the same lines.
_TIMING_PATHS = tuple(f"$.timings.{name}" for name in TIMINGS)


def _classes(**members: bytes) -> bytes:
    """A bytes.translate table: each byte of members[name] becomes `name`, every other byte a dot."""
    table = bytearray(b"." * 256)
    for name, chars in members.items():
        for char in chars:
            table[char] = ord(name)
    return bytes(table)


# B a backslash, P what may come before a trigger, T an ASCII trigger, D a digit.
_TEXT_CLASSES = _classes(B=b"\\", P=b';, "', T=b"-=+@", D=b"0123456789")
_NEEDS_CARE = (b"B", b"PT", b"D" * 19)  # orjson reads integers past 64 bits as floats, json keeps them whole
_FULL_WIDTH_TRIGGERS = ("\uff1d", "\uff0b", "\uff0d", "\uff20")
_NUMBER_LIST = b"0123456789.-,[]\n"  # the characters of timings' texts, besides null
_QUOTES_PER_LINE = 2 * len(CSV_COLUMNS)
_NO_ERROR: dict[str, Any] = {}


def _csv_page(rows: list[tuple[str, ...]]) -> str:
    """A store page of (stored JSON, timings' JSON) as CSV lines: csv_line's, joined straight where that is safe."""
    texts = [row[0] for row in rows]
    page = "[" + ",".join(texts) + "]"
    try:
        results = orjson.loads(page)
    except orjson.JSONDecodeError:  # what only json reads (NaN, from its fallback encoder): the careful way
        return "".join(csv_line(json.loads(text)) for text in texts)
    timings = "\n".join([row[1] for row in rows])
    careful = _careful_texts(page, texts) | _careful_timings(timings, rows)
    # [3.0,null,0.4] becomes 3.0","","0.4: the timings' fields, less the quotes around them all.
    fields = timings.replace("null", "").replace("[", "").replace("]", "").replace(",", '","').split("\n")
    lines = list(map(_plain_csv_line, results, fields))
    # A line with other than two quotes a field had a quote in a field, or other than len(TIMINGS) timings.
    quotes = list(map(str.count, lines, itertools.repeat('"')))
    if quotes.count(_QUOTES_PER_LINE) != len(lines):
        careful.update(i for i, count in enumerate(quotes) if count != _QUOTES_PER_LINE)
    for i in careful:
        lines[i] = csv_line(json.loads(texts[i]))
    return "".join(lines)


def _careful_texts(page: str, texts: list[str]) -> set[int]:
    """Which results of a page (its texts joined as a JSON array) show something to quote or defuse."""
    classes = page.encode().translate(_TEXT_CLASSES)  # bytes of non-ASCII characters become dots
    found = [at + len(needle) - 1 for needle in _NEEDS_CARE for at in _find_all(classes, needle)]
    careful = set()
    if found:
        sizes = map(len, texts) if page.isascii() else map(len, map(str.encode, texts))
        ends = list(itertools.accumulate(map(operator.add, sizes, itertools.repeat(1))))  # each text's end in page
        careful = {bisect.bisect_right(ends, at) for at in found}
    if not page.isascii() and any(trigger in page for trigger in _FULL_WIDTH_TRIGGERS):
        careful.update(i for i, text in enumerate(texts) if any(trigger in text for trigger in _FULL_WIDTH_TRIGGERS))
    return careful


def _careful_timings(timings: str, rows: list[tuple[str, ...]]) -> set[int]:
    """Which results' timings (their JSON arrays, a line each) hold anything but null and plain numbers."""
    if _only_numbers(timings):
        return set()
    return {i for i, row in enumerate(rows) if not _only_numbers(row[1])}


def _only_numbers(timings: str) -> bool:
    """Whether JSON arrays hold only null and numbers written as repr writes them."""
    return not timings.encode().translate(None, _NUMBER_LIST).replace(b"null", b"") and "0.0000" not in timings


def _find_all(haystack: bytes, needle: bytes) -> Iterator[int]:
    """Where `needle` starts in `haystack`, each place."""
    at = haystack.find(needle)
    while at >= 0:
        yield at
        at = haystack.find(needle, at + 1)


def _plain_csv_line(r: dict[str, Any], timings: str) -> str:
    """csv_line of a result with no quote and nothing to defuse, and plain timings, without csv's writer."""
    e = r.get("error") or _NO_ERROR
    ok = r.get("ok")
    # Each field as csv writes it: str() of the value, "" for None, inside quotes.
    return (
        f'"{r["index"]}","{r["url"]}","{"" if (v := r.get("final_url")) is None else v}",'
        f'"{"" if (v := r.get("status_code")) is None else v}","{"" if ok is None else "true" if ok else "false"}",'
        f'"{"" if (v := e.get("kind")) is None else v}","{"" if (v := e.get("message")) is None else v}",'
        f'"{"" if (v := r.get("bytes")) is None else v}","{"" if (v := r.get("content_type")) is None else v}",'
        f'"{len(r.get("redirects") or ())}","{"" if (v := r.get("attempts")) is None else v}",'
        f'"{"" if (v := r.get("started_at")) is None else v}","{"" if (v := r.get("finished_at")) is None else v}",'
        f'"{timings}"\r\n'
    )
