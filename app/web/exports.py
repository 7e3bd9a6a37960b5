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


# The download formats (`format=` of the results route) and their content types: each streams the whole batch.
FORMATS = ("csv", "ndjson", "json")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson", "json": "application/json"}


def download(store: Store, batch_id: str, fmt: str, outcome: str | None) -> Response:
    """The whole batch (or its ok/failed results) as a `fmt` (one of FORMATS) attachment, streamed."""
    rows = store.iter_results(batch_id, outcome=outcome)
    # The first page is read before answering: a store that fails now gets a JSON 503, not a 200.
    rows = itertools.chain(list(itertools.islice(rows, 1)), rows)
    body = {"csv": _csv_lines, "ndjson": _ndjson_lines, "json": _json_array}[fmt](rows)
    response = Response(stream_with_context(_broken_on_failure(body, fmt, batch_id)), content_type=CONTENT_TYPES[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="greenbatch-{batch_id}.{fmt}"'
    return response


class ExportBroken(ConnectionResetError):
    """Raised into the WSGI server to end an export's chunked body without its last chunk.

    A reset connection is what pywsgi (ours and gunicorn's) closes without a traceback: the cause is logged here.
    """


def _broken_on_failure(lines: Iterator[str], fmt: str, batch_id: str) -> Iterator[str]:
    """An export's lines; if the store fails midway, an error line, then a broken body (never a clean short 200).

    Raising while the body streams makes the server close the connection without the chunked encoding's
    last chunk, so curl, requests and browsers report an incomplete download.
    """
    try:
        yield from lines
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


def _compact(row: dict[str, Any]) -> str:
    """One result as JSON without spaces."""
    return json.dumps(row, separators=(",", ":"))


def _ndjson_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """Results as NDJSON: one JSON object a line."""
    return (_compact(r) + "\n" for r in rows)


def _json_array(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """Results as one JSON array, a result a line, written as they are read (never held as a list)."""
    yield "["
    separator = "\n"
    for r in rows:
        yield separator + _compact(r)
        separator = ",\n"
    yield "\n]\n"


def _csv_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """Results as CSV, one line at a time, every field quoted and spreadsheet formulas defused."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL)

    def line(values: list[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(list(CSV_COLUMNS))
    for r in rows:
        error = r.get("error") or {}
        t = r.get("timings") or {}
        yield line(
            [
                _cell(v)
                for v in (
                    r["index"],
                    r["url"],
                    r.get("final_url"),
                    r.get("status_code"),
                    _boolean(r.get("ok")),
                    error.get("kind"),
                    error.get("message"),
                    r.get("bytes"),
                    r.get("content_type"),
                    len(r.get("redirects") or []),
                    r.get("attempts"),
                    r.get("started_at"),
                    r.get("finished_at"),
                    t.get("total"),
                    t.get("ttfb"),
                    t.get("dns"),
                    t.get("connect"),
                    t.get("tls"),
                    t.get("wait"),
                    t.get("download"),
                )
            ]
        )


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
