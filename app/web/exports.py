"""Exports: a batch's results as a CSV, NDJSON or JSON-array download, streamed a page at a time (memory stays
flat whatever the batch's size), spreadsheet-safe, and never a clean-looking short file when the store fails
midway."""

from __future__ import annotations

import csv
import errno
import io
import itertools
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import orjson
from flask import Response, stream_with_context

from ..core.verdict import OUTCOMES
from ..runs.store import Store, StoreError

log = logging.getLogger(__name__)

_BASE_COLUMNS = (
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
# What a result means (app/core/verdict.py), after the fetch's columns; the batch's meta columns follow them.
VERDICT_COLUMNS = ("outcome", "reasons", "expected_status", "expected_final_url", "expected_final_status")
CSV_COLUMNS = (*_BASE_COLUMNS, *VERDICT_COLUMNS)
TIMINGS = ("total", "ttfb", "dns", "connect", "tls", "wait", "download")  # the last columns: timings[name], in ms


# The download formats (`format=` of the results route) and their content types: each streams the whole batch.
FORMATS = ("csv", "ndjson", "json")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson", "json": "application/json"}


# What a batch with the capture option adds to each CSV line, after the columns every batch has; then one
# `header:<name>` column per header it listed.
CAPTURE_COLUMNS = (
    "remote_ip",
    "http_version",
    "server",
    "tls_version",
    "tls_issuer",
    "tls_subject",
    "tls_not_after",
    "tls_days_left",
    "tls_name_match",
    "tls_chain_valid",
    "tls_problems",
)


def download(
    store: Store,
    batch_id: str,
    fmt: str,
    outcome: str | None,
    meta_columns: tuple[str, ...] = (),
    capture: dict[str, Any] | None = None,
) -> Response:
    """The whole batch (or its ok/failed results) as a `fmt` (one of FORMATS) attachment, streamed; a CSV ends
    each line with the `meta_columns` of its row, then, for a batch that captures (its `capture` option), the
    captured columns."""
    if fmt == "csv" and capture:
        body = captured_csv_chunks(store, batch_id, outcome, capture, meta_columns)
    else:
        body = chunks(store, batch_id, fmt, outcome, meta_columns)
    response = Response(stream_with_context(_broken_on_failure(body, fmt, batch_id)), content_type=CONTENT_TYPES[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="greenbatch-{batch_id}.{fmt}"'
    return response


def chunks(
    store: Store, batch_id: str, fmt: str, outcome: str | None = None, meta_columns: tuple[str, ...] = ()
) -> Iterator[bytes | str]:
    """A download's text, a chunk per page the store reads (a few hundred KiB), memory flat whatever its size.

    The first page is read before this returns: a store that fails now raises StoreError here (the API
    answers a JSON 503), not once a 200 has begun.
    """
    pages = store.result_pages(batch_id, outcome, _CSV_PATHS if fmt == "csv" else ())
    pages = itertools.chain(list(itertools.islice(pages, 1)), pages)
    if fmt == "csv":
        return _csv_chunks(pages, meta_columns)
    return {"ndjson": _ndjson_chunks, "json": _json_array_chunks}[fmt](pages)


def captured_csv_chunks(
    store: Store, batch_id: str, outcome: str | None, capture: dict[str, Any], meta_columns: tuple[str, ...] = ()
) -> Iterator[bytes | str]:
    """The CSV of a batch that captures: each line csv_line's columns and the captured ones, every text defused
    (the server's headers and certificate names are the target's text); read whole, a page at a time."""
    names = list(capture.get("headers") or [])
    pages = store.result_pages(batch_id, outcome)
    first = list(itertools.islice(pages, 1))  # a store that fails now raises here, before the 200

    def lines() -> Iterator[bytes]:
        header = [*CSV_COLUMNS, *meta_columns, *CAPTURE_COLUMNS, *(f"header:{name}" for name in names)]
        yield utf8(_csv_text([[_cell(name) for name in header]]))
        for (texts,) in itertools.chain(first, pages):
            rows = []
            for text in texts.split(b"\n"):
                result = json.loads(text)
                captured = [_cell(value) for value in _captured_values(result, names)]
                rows.append(_csv_row(result, meta_columns) + captured)
            yield utf8(_csv_text(rows))

    return lines()


def _csv_row(result: dict[str, Any], meta_columns: tuple[str, ...]) -> list[Any]:
    """csv_line's fields of a result, defused, as a list."""
    return next(csv.reader([csv_line(result, meta_columns)]))


def _captured_values(result: dict[str, Any], names: list[str]) -> list[Any]:
    """A result's captured fields in CAPTURE_COLUMNS order, then its listed headers' values."""
    tls = result.get("tls") or {}
    headers = result.get("headers") or {}
    problems = tls.get("problems")
    return [
        result.get("remote_ip"),
        result.get("http_version"),
        result.get("server"),
        tls.get("version"),
        tls.get("issuer"),
        tls.get("subject"),
        tls.get("not_after"),
        tls.get("days_left"),
        _boolean(tls.get("name_match")),
        _boolean(tls.get("chain_valid")),
        "; ".join(problems) if problems else None,
        *(headers.get(name) for name in names),
    ]


class ExportBroken(ConnectionResetError):
    """Raised into the WSGI server to end an export's chunked body without its last chunk.

    A reset connection is what pywsgi (ours and gunicorn's) closes without a traceback: the cause is logged here.
    """


def _broken_on_failure(body: Iterator[bytes | str], fmt: str, batch_id: str) -> Iterator[bytes | str]:
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
        else:  # on a line of its own: the JSON array's last chunk ends without a line break
            line = json.dumps({"error": {"code": "store_unavailable", "message": message, "details": []}}) + "\n"
            yield ("\n" if fmt == "json" else "") + line
        raise ExportBroken(errno.ECONNRESET, message) from exc


# NDJSON and the JSON array carry each result's stored text as it is: the compact JSON the engine wrote
# (compact_json of Result.to_dict), one line each; each page the store reads is one chunk of the body.


def _ndjson_chunks(pages: Iterator[tuple[bytes, ...]]) -> Iterator[bytes]:
    """Results as NDJSON: one JSON object a line."""
    for (texts,) in pages:
        yield texts + b"\n"


def _json_array_chunks(pages: Iterator[tuple[bytes, ...]]) -> Iterator[bytes]:
    """Results as one JSON array, a result a line, written as they are read (never held as a list)."""
    opening = b"[\n"
    for (texts,) in pages:
        yield opening + texts.replace(b"\n", b",\n")
        opening = b",\n"
    yield b"[\n]\n" if opening == b"[\n" else b"\n]\n"


def _csv_chunks(pages: Iterator[tuple[bytes, ...]], meta_columns: tuple[str, ...]) -> Iterator[bytes]:
    """Results as CSV, a store page per chunk, every field quoted and spreadsheet formulas defused."""
    yield utf8(_csv_text([[_cell(name) for name in (*CSV_COLUMNS, *meta_columns)]]))
    plain = _plain_verdicts(len(meta_columns))
    ends = {outcome: f",{fields}\r\n" for outcome, fields in plain.items()}
    for values, timings in pages:
        lines, verdicts = _csv_page_lines(values, timings, ends)
        if verdicts is None:  # every line ends with its outcome's fields
            yield utf8("".join(lines))
            continue
        yield utf8(
            "".join(
                line[:-2] + "," + (_plain_verdict(more, plain) or _verdict_fields(more, meta_columns)) + "\r\n"
                for line, more in zip(lines, verdicts)
            )
        )


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str, a surrogate is always a lone one: UTF-8 has no form of it


def utf8(text: str) -> bytes:
    """A download's text as UTF-8, each lone surrogate in it written as U+FFFD: a result's stored text may escape one
    (Python's json writes what orjson refuses, such as an error message holding one; releases before the API
    refused them stored them in URLs too), and json reads it back as it is."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text).encode()


# How a result's extracted values end (_VERDICT_PATHS, the line's end after them) when its verdict needs no work
# besides its outcome: no reasons (the empty list the engine writes, or none), expectations or meta.
_PLAIN_TAILS = (b",[],null,null]", b",null,null,null]")


def _plain_verdicts_only(values: bytes, results: int) -> bool:
    """Whether every result of a page (its values, JSON arrays a line each) has no reasons, expectations or meta.

    A tail matched up to the line's end is the line's last values: json_extract writes one value for each
    path, and `[]` followed by a comma at the end is a whole value.
    """
    last = values[values.rfind(b"\n") + 1 :]
    if not last.endswith(_PLAIN_TAILS):
        return False
    first, other = _PLAIN_TAILS if last.endswith(_PLAIN_TAILS[0]) else reversed(_PLAIN_TAILS)
    found = values.count(first + b"\n")  # most pages hold results of one kind: the last one's
    return found == results - 1 or found + values.count(other + b"\n") == results - 1


def _plain_verdicts(metas: int) -> dict[str | None, str]:
    """The verdict fields of the results that need no work, by their outcome: an outcome alone (None: a result
    stored before outcomes)."""
    empty = ',""' * (len(VERDICT_COLUMNS) - 1 + metas)
    plain: dict[str | None, str] = {name: f'"{name}"{empty}' for name in OUTCOMES}
    plain[None] = '""' + empty
    return plain


def _plain_verdict(verdict: list[Any] | dict[str, Any], plain: dict[str | None, str]) -> str | None:
    """A result's verdict fields when it has an outcome alone (no reasons, expectations or meta), else None."""
    if isinstance(verdict, dict):
        return None
    outcome, reasons, expect, meta = verdict
    if reasons or meta or any(value is not None for value in _expected(expect)):
        return None
    return plain.get(outcome) if outcome is None or isinstance(outcome, str) else None


def _verdict_fields(data: list[Any] | dict[str, Any], meta_columns: tuple[str, ...]) -> str:
    """A result's verdict and meta fields, from their values at _VERDICT_PATHS (or its whole stored result, where
    SQLite could not read its text), quoted and defused; without the line's end."""
    if isinstance(data, dict):  # the stored result itself
        data = [data.get("outcome"), data.get("reasons"), data.get("expect"), data.get("meta")]
    outcome, reasons, expect, meta = data
    meta = meta if isinstance(meta, dict) else {}
    fields = [outcome, reasons_text(reasons or []), *_expected(expect)]
    fields += [_meta_text(meta.get(name)) for name in meta_columns]
    return _csv_text([[_cell(v) for v in fields]])[:-2]


def _expected(expect: Any) -> list[Any]:
    """The expected status, final URL and final status of a result's expectations (None where it has none)."""
    return [expect.get(name) for name in _EXPECTED] if isinstance(expect, dict) else [None] * len(_EXPECTED)


def reasons_text(reasons: list[dict[str, Any]]) -> str:
    """A result's reasons in words, for the CSV: `rule: expected X, got Y`, joined by "; "."""
    return "; ".join(f"{r.get('rule')}: expected {r.get('expected')}, got {r.get('actual')}" for r in reasons)


def _meta_text(value: Any) -> Any:
    """A meta value as a CSV field: true and false as JSON writes them."""
    return _boolean(value) if isinstance(value, bool) else value


def meta_columns(rows: dict[str, Any] | None) -> tuple[str, ...]:
    """The meta columns of a batch's per-row specs (Store.row_specs), in the order they first appear."""
    seen: dict[str, None] = {}
    for row in (rows or {}).values():
        for name in row.get("meta") or ():
            seen.setdefault(name, None)
    return tuple(seen)


# What a CSV line takes from a result besides its timings, in this order: read by SQLite (json_extract) for a
# download, straight from the result in csv_line.
_VALUE_PATHS = (
    "$.index",
    "$.url",
    "$.final_url",
    "$.status_code",
    "$.ok",
    "$.error.kind",
    "$.error.message",
    "$.bytes",
    "$.content_type",
    "$.redirects",
    "$.attempts",
    "$.started_at",
    "$.finished_at",
)
_EXPECTED = ("status", "final_url", "final_status")
_VERDICT_PATHS = ("$.outcome", "$.reasons", "$.expect", "$.meta")  # expect: one path, not one a key (fewer lookups)
# The values and the verdict's in one json_extract, the timings in another (their text is turned into fields as
# it is); SQLite 3.40 keeps a row's parsed JSON for the second.
_CSV_PATHS = ((*_VALUE_PATHS, *_VERDICT_PATHS), tuple(f"$.timings.{name}" for name in TIMINGS))
_VERDICT_AT = len(_VALUE_PATHS)  # where a result's verdict values begin in its extracted values


def csv_line(result: dict[str, Any], meta_columns: tuple[str, ...] = ()) -> str:
    """One result as a line of the CSV download of a batch with these meta columns."""
    line = _csv_line_of(*_base_fields(result))
    return line[:-2] + "," + _verdict_fields(result, meta_columns) + "\r\n"


def _base_fields(result: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """A result's values (at _VALUE_PATHS) and timings, as _csv_line_of takes them."""
    error = result.get("error") or {}
    timings = result.get("timings") or {}
    values = [
        result["index"],
        result["url"],
        result.get("final_url"),
        result.get("status_code"),
        result.get("ok"),
        error.get("kind"),
        error.get("message"),
        result.get("bytes"),
        result.get("content_type"),
        result.get("redirects"),
        result.get("attempts"),
        result.get("started_at"),
        result.get("finished_at"),
    ]
    return values, [timings.get(name) for name in TIMINGS]


def _csv_line_of(values: list[Any], timings: list[Any]) -> str:
    """A CSV line from a result's values (at _VALUE_PATHS) and timings: every field quoted by csv's writer,
    ok as JSON writes it, the redirects counted, and formulas defused."""
    index, url, final_url, status, ok, kind, message, size, content_type, redirects, attempts, started, finished = (
        values
    )
    fields = [index, url, final_url, status, _boolean(ok), kind, message, size, content_type, len(redirects or [])]
    return _csv_text([[_cell(v) for v in (*fields, attempts, started, finished, *timings)]])


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


# -- a million lines ---------------------------------------------------------------------------------
#
# csv's writer takes ~7 us a line, the defusing regex ~1 us a field, a float's repr ~0.5 us and reading a
# whole result's JSON ~3 us: too slow for a million results, and most results need none of it.
# - SQLite reads each result's values and timings (json_extract, on a reader thread, the GIL released) and
#   hands over their JSON, strings and numbers written as stored; orjson reads the values (as json would,
#   but for integers past 64 bits, kept out below); the timings stay text.
# - With every field quoted, a field without a quote is written as it is, and defusing changes nothing
#   where no trigger follows a field's start, a separator or a space. In JSON a quote, tab, CR or LF inside
#   a string (anything escaped) shows as a backslash, and a string that starts with a trigger as a quote
#   before it. So values whose JSON has no backslash, no [;, "] before a trigger and no full-width trigger
#   hold nothing to quote or defuse: their line is joined straight from them.
# - A number's stored text is its repr (orjson and json write the shortest text that reads back the same
#   float), except in exponent form and below 0.0001.
# - Most pages hold results whose verdict is an outcome alone: their lines end alike (_PLAIN_TAILS), found
#   by counting those ends in the page's text, and each line is written whole with its outcome's fields.
#   Only an apostrophe lets str() put a quote in a line of such values (a list or an object holding a text
#   with one), so the page's quotes are counted only where its text holds one.
# Any other result's line is _csv_line_of its values as json reads them; tests/test_exports.py checks that
# a download's lines are those of the row-by-row conversion, whatever the results hold.


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
_FULL_WIDTH_TRIGGERS = tuple(trigger.encode() for trigger in "\uff1d\uff0b\uff0d\uff20")
_FULL_WIDTH = "\uff00".encode()[:2]  # how the UTF-8 of U+FF00 to U+FF3F begins, full-width triggers among them
_NUMBER_LIST = b"0123456789.-,[]\n"  # the characters of timings' JSON, besides null
_QUOTES_PER_LINE = 2 * len(_BASE_COLUMNS)


def _csv_page_lines(values: bytes, timings: bytes, ends: dict[str | None, str]) -> tuple[list[str], list[Any] | None]:
    """A page of results as CSV lines of the fetch's columns, and each result's verdict values (or its stored
    result), from their values and timings (JSON arrays, a line a result); or, where every verdict needs no
    work, as whole lines, each ending with `ends` of its outcome (and no verdict values)."""
    try:
        results = orjson.loads(b"".join((b"[", values.replace(b"\n", b","), b"]")))  # JSON holds no raw line break
    except orjson.JSONDecodeError:  # what only json reads (a lone surrogate): line by line
        results = None
    plain = results is not None and _plain_verdicts_only(values, len(results))
    if not plain and (values.startswith(b"{") or b"\n{" in values):  # a stored text SQLite could not read
        results = None  # in place of the values (a plain verdict's line ends with a `]`)
    if results is None:
        read = [json.loads(line) for line in values.split(b"\n")]
        lines = list(map(_careful_csv_line, read, timings.split(b"\n")))
        return lines, [data if isinstance(data, dict) else data[_VERDICT_AT:] for data in read]
    careful = _careful_values(values) | _careful_timings(timings, len(results))
    # [3.0,null,0.4] becomes 3.0","","0.4: the timings' fields, less the quotes around them all.
    fields = timings.replace(b"null", b"").replace(b"[", b"").replace(b"]", b"").replace(b",", b'","')
    timing_fields = fields.decode().split("\n")
    verdicts: list[Any] | None = None
    if plain:
        try:
            lines = list(map(_plain_csv_line_and_verdict, results, timing_fields, itertools.repeat(ends)))
            per_line = _QUOTES_PER_LINE + ends[None].count('"')  # every plain verdict has as many fields
        except (KeyError, TypeError):  # an outcome of no kind there is: its verdict is read on its own
            plain = False
    if not plain:
        verdicts = [result[_VERDICT_AT:] for result in results]
        lines = list(map(_plain_csv_line, results, timing_fields))
        per_line = _QUOTES_PER_LINE
    # Every line has two quotes a field, more only where a value's text holds one: escaped in JSON (a careful
    # result, written again), or where str() writes a list or an object holding a text with an apostrophe.
    apostrophe = b"'" in values
    text = "".join(lines) if plain or apostrophe else ""
    if apostrophe:
        quotes = per_line * (len(lines) - len(careful)) + sum(lines[i].count('"') for i in careful)
        if text.count('"') != quotes:
            careful.update(i for i, line in enumerate(lines) if line.count('"') != per_line)
    if not careful:
        return [text] if plain else lines, verdicts
    value_lines, timing_lines = values.split(b"\n"), timings.split(b"\n")
    for i in careful:
        read = json.loads(value_lines[i])
        lines[i] = _careful_csv_line(read, timing_lines[i])
        if verdicts is not None:
            verdicts[i] = read[_VERDICT_AT:]
        else:
            lines[i] = lines[i][:-2] + ends[read[_VERDICT_AT]]
    return lines, verdicts


def _careful_csv_line(values: list[Any] | dict[str, Any], timings: bytes) -> str:
    """A result's CSV line from its values and timings as json reads them (or from its stored result, which the
    store hands over in place of its values where SQLite could not read its text)."""
    if isinstance(values, dict):
        return _csv_line_of(*_base_fields(values))
    return _csv_line_of(values[:_VERDICT_AT], json.loads(timings))


def _careful_values(values: bytes) -> set[int]:
    """Which results' values (their JSON arrays, a line each) hold something to quote or defuse."""
    classes = values.translate(_TEXT_CLASSES)  # bytes of non-ASCII characters become dots
    found = [at for needle in _NEEDS_CARE for at in _find_all(classes, needle)]
    if not values.isascii() and _FULL_WIDTH in values:
        found += [at for trigger in _FULL_WIDTH_TRIGGERS for at in _find_all(values, trigger)]
    return _lines_at(values, found)


def _careful_timings(timings: bytes, results: int) -> set[int]:
    """Which results' timings (their JSON arrays, a line each) hold anything but null and plain numbers."""
    if _only_numbers(timings, results):
        return set()
    return {i for i, line in enumerate(timings.split(b"\n")) if not _only_numbers(line, 1)}


def _only_numbers(timings: bytes, arrays: int) -> bool:
    """Whether this many JSON arrays hold only null and numbers written as repr writes them."""
    if timings.count(b"[") != arrays or b"0.0000" in timings:  # an array in an array; a number repr writes 1e-05
        return False
    return not timings.translate(None, _NUMBER_LIST).replace(b"null", b"")


def _find_all(haystack: bytes, needle: bytes) -> Iterator[int]:
    """Where `needle` starts in `haystack`, each place."""
    at = haystack.find(needle)
    while at >= 0:
        yield at
        at = haystack.find(needle, at + 1)


def _lines_at(text: bytes, places: list[int]) -> set[int]:
    """The numbers of the lines these places of `text` are on (counted from 0), reading the text once."""
    lines, line, counted = set(), 0, 0
    for at in sorted(places):
        line += text.count(b"\n", counted, at)
        counted = at
        lines.add(line)
    return lines


def _plain_csv_line(values: list[Any], timings: str) -> str:
    """_csv_line_of a result with no quote and nothing to defuse in its values, and its timings' fields,
    without csv's writer."""
    index, url, final_url, status, ok, kind, message, size, content_type, redirects, attempts, started, finished = (
        values[0],
        values[1],
        values[2],
        values[3],
        values[4],
        values[5],
        values[6],
        values[7],
        values[8],
        values[9],
        values[10],
        values[11],
        values[12],
    )  # the first _VERDICT_AT values (indexing, not a slice: no list made per line)
    # Each field as csv writes it: str() of the value, "" for None, inside quotes.
    return (
        f'"{index}","{url}","{"" if final_url is None else final_url}","{"" if status is None else status}",'
        f'"{"" if ok is None else "true" if ok else "false"}","{"" if kind is None else kind}",'
        f'"{"" if message is None else message}","{"" if size is None else size}",'
        f'"{"" if content_type is None else content_type}","{len(redirects or ())}",'
        f'"{"" if attempts is None else attempts}","{"" if started is None else started}",'
        f'"{"" if finished is None else finished}","{timings}"\r\n'
    )


def _plain_csv_line_and_verdict(values: list[Any], timings: str, ends: dict[str | None, str]) -> str:
    """_plain_csv_line of a result whose verdict needs no work, ending with its outcome's verdict fields."""
    # _plain_csv_line's f-string again, its end the verdict's: one string made a line, not a line and its copy.
    (
        index, url, final_url, status, ok, kind, message, size, content_type, redirects, attempts, started, finished,
        outcome, _, _, _,
    ) = values  # fmt: skip
    return (
        f'"{index}","{url}","{"" if final_url is None else final_url}","{"" if status is None else status}",'
        f'"{"" if ok is None else "true" if ok else "false"}","{"" if kind is None else kind}",'
        f'"{"" if message is None else message}","{"" if size is None else size}",'
        f'"{"" if content_type is None else content_type}","{len(redirects or ())}",'
        f'"{"" if attempts is None else attempts}","{"" if started is None else started}",'
        f'"{"" if finished is None else finished}","{timings}"{ends[outcome]}'
    )
