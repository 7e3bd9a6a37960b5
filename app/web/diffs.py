"""The diff of two batches: GET /api/v1/batches/<id>/diff, a page of changes or every change as a download."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from flask import Response, current_app, request
from gevent import get_hub

from ..core.lru import LRU
from ..runs.diff import DEFAULT_FACTOR, KEYS, KINDS, LISTED_BY_DEFAULT, MAX_FACTOR, PENDING, Change, Diff, compare
from .api import _bad_parameter, _batch_or_404, _choice_arg, _int_arg, bp
from .errors import ApiError
from .exports import _cell, utf8
from .services import services

DIFF_FORMATS = ("csv", "ndjson")
CSV_COLUMNS = (
    "key",
    "index",
    "base_index",
    "kind",
    *(f"{side}_{name}" for side in ("before", "after") for name in ("status_code", "final_url", "outcome", "total_ms")),
)
DOWNLOAD_ROWS = 1000  # changes written per chunk of a download
# Diffs of two batches that ended with every event stored: they never change, so their pages and downloads
# need not compare again. (A live batch's view may count events not stored yet: never kept.)
_KEPT: LRU[tuple[str, str, str, float, frozenset[str]], Diff] = LRU(8)


@bp.get("/batches/<batch_id>/diff")
def diff(batch_id: str):
    """What changed from a base batch (default: the one this was rerun from) to this one, kind by kind."""
    batch = _batch_or_404(batch_id)
    base_id = request.args.get("base") or batch.parent_id
    if not base_id:
        raise _bad_parameter(
            "base",
            f"batch {batch_id} was not rerun from another: give the batch to compare it with as base=<id>",
            "is required for a batch that was not rerun from another",
        )
    base = _batch_or_404(base_id)
    key = _choice_arg("key", KEYS) or "url"
    factor = _factor()
    kinds = _kinds()
    fmt = _choice_arg("format", DIFF_FORMATS)
    store = services().store
    limit = current_app.config["GREENBATCH"].max_diff_urls
    larger = max(base.counts["total"], batch.counts["total"])
    if larger > limit:
        raise ApiError(
            413,
            "diff_too_large",
            f"a diff compares at most {limit} URLs a batch (GREENBATCH_MAX_DIFF_URLS) and one of these has {larger}; "
            "download both batches' results (format=ndjson) to compare them elsewhere",
        )
    asked = (base.id, batch.id, key, factor, kinds)
    found = _KEPT.get(asked)
    if found is None:
        engine = services().engine
        ended = all(view.final and not engine.is_live(view.id) for view in (base, batch))  # before the rows are read
        rows = store.diff_rows(base.id), store.diff_rows(batch.id)
        # Pure Python over every URL (~0.1 s for 10,000): on a thread, so the hub keeps serving meanwhile.
        found = get_hub().threadpool.apply(compare, (*rows, key, factor, kinds))
        if ended:
            _KEPT.put(asked, found)
    chosen = found.changes
    head = {"base": base.id, "batch": batch.id, "key": key, "slower": factor}
    if fmt is not None:
        if request.args.get("after", "") != "" or request.args.get("limit", "") != "":
            raise _bad_parameter("after", f"a download (format={fmt}) holds every change", "applies to pages only")
        return _download(chosen, fmt, base.id, batch.id)
    after = _int_arg("after", -1, -1, 2**62)
    limit = _int_arg("limit", 100, 1, 1000)
    page = [change for change in chosen if change.position > after][:limit]
    more = len(page) == limit and page[-1] is not chosen[-1]
    return {
        **head,
        "summary": found.summary,
        "changes": [change.to_dict() for change in page],
        "total": len(chosen),
        "next_after": page[-1].position if more else None,
        "base_final": base.final,
        "batch_final": batch.final,
    }


def _factor() -> float:
    """`slower`: how many times longer (or shorter) a URL's time must become to count as slower (faster)."""
    raw = request.args.get("slower", "")
    if raw == "":
        return DEFAULT_FACTOR
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 1.0 < value <= MAX_FACTOR:  # also refuses nan
        raise _bad_parameter(
            "slower",
            f"slower must be a number above 1 and at most {MAX_FACTOR:g} (how many times the time changed)",
            f"must be above 1 and at most {MAX_FACTOR:g}",
        )
    return value


def _kinds() -> frozenset[str]:
    """`kind`: which kinds of change to list, comma-separated; every change but unchanged when absent."""
    raw = request.args.get("kind", "")
    if not raw:
        return frozenset(LISTED_BY_DEFAULT)
    asked = [kind for kind in raw.split(",") if kind]
    unknown = sorted(set(asked) - {*KINDS, PENDING})
    if unknown:
        listed = ", ".join((*KINDS, PENDING))
        raise ApiError(
            400,
            "invalid_parameter",
            f"kind must be one or more of {listed}, separated by commas",
            [{"field": "kind", "message": f"{', '.join(unknown)} is not one of {listed}"}],
        )
    return frozenset(asked)


def _download(changes: list[Change], fmt: str, base_id: str, batch_id: str) -> Response:
    """Every chosen change as CSV (spreadsheet-safe) or NDJSON, a thousand at a time."""
    body = _csv_chunks(changes) if fmt == "csv" else _ndjson_chunks(changes)
    kind = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    response = Response(body, content_type=kind)
    name = f"greenbatch-diff-{base_id}-{batch_id}.{fmt}"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _ndjson_chunks(changes: list[Change]) -> Iterator[str]:
    """Changes as NDJSON: one change (as the page shows it) a line."""
    for start in range(0, len(changes), DOWNLOAD_ROWS):
        yield "".join(json.dumps(change.to_dict()) + "\n" for change in changes[start : start + DOWNLOAD_ROWS])


def _csv_chunks(changes: list[Change]) -> Iterator[bytes]:
    """Changes as CSV: a header row, then a row per change, every field quoted and formulas defused (a URL stored
    with a lone surrogate has U+FFFD in its place)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL)
    writer.writerow(CSV_COLUMNS)
    for start in range(0, len(changes), DOWNLOAD_ROWS):
        for change in changes[start : start + DOWNLOAD_ROWS]:
            sides = [change.before, change.after]
            values = [value for side in sides for value in (side.side().values() if side else (None, None, None, None))]
            writer.writerow([_cell(v) for v in (change.key, change.index, change.base_index, change.kind, *values)])
        yield utf8(buffer.getvalue())
        buffer.seek(0)
        buffer.truncate()
    if not changes:
        yield utf8(buffer.getvalue())
