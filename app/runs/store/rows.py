"""How events and batches map onto table rows, in both stores: the events table's columns, SQLite's multi-row
insert, a batch event applied to its row, a URL list as one JSON text, and a batches row read back as a
BatchRecord."""

from __future__ import annotations

import functools
import itertools
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from ...core.jsonutil import compact_json
from ...core.results import FINAL_STATUSES
from ..events import Event
from .base import BatchRecord

EventRow = tuple[Any, ...]  # EVENT_COLUMNS' values


def record_of(row: sqlite3.Row | tuple[Any, ...]) -> BatchRecord:
    """Turn a batches row (with last_seq appended) into a record."""
    (num, id_, name, status, created, started, finished, options, total, parent, summary, source, list_id, last_seq) = (
        row
    )
    return BatchRecord(
        id=id_,
        num=num,
        name=name,
        status=status,
        created_at=created,
        started_at=started,
        finished_at=finished,
        options=json.loads(options),
        total=total,
        parent_id=parent,
        summary=json.loads(summary) if summary else None,
        last_seq=last_seq or 0,
        source=json.loads(source) if source else None,
        list_id=list_id,
    )


EVENT_COLUMNS = (
    "batch_id",
    "seq",
    "type",
    "at",
    "idx",
    "ok",
    "status_code",
    "error_kind",
    "total_ms",
    "bytes",
    "warn",
    "reasons",
    "warnings",
    "data",
)
NO_RESULT = (None,) * 8  # the result columns of an event that is not a result
MAX_PARAMETERS = 8192  # per statement; fewer if this SQLite allows fewer (999 before 3.32, 32,766 since)


# Where a result row holds warn, reasons and warnings, and their values when it has none (most rows): a statement
# for such rows has them as constants, which SQLite need not bind.
UNJUDGED = slice(10, 13)
UNJUDGED_VALUES = (False, None, None)
_UNJUDGED_SQL = "0, NULL, NULL"


@functools.lru_cache(maxsize=32)
def insert_events_sql(rows: int, unjudged: bool = False) -> str:
    """INSERT OR IGNORE of `rows` events in one statement; `unjudged` rows come without warn, reasons and warnings."""
    marks = ["?"] * len(EVENT_COLUMNS)
    if unjudged:
        marks[UNJUDGED] = [_UNJUDGED_SQL]
    one = "(" + ", ".join(marks) + ")"
    return f"INSERT OR IGNORE INTO events ({', '.join(EVENT_COLUMNS)}) VALUES " + ", ".join([one] * rows)


def insert_events(conn: sqlite3.Connection, rows: list[EventRow]) -> None:
    """Insert event rows a chunk per statement: bound in C, then run by SQLite with the GIL released.

    One statement per row would take the GIL back from the hub after every row, and one JSON text
    unpacked by SQLite would cost more CPU than binding columns. Each chunk is padded to a power of two
    with copies of its last row, which INSERT OR IGNORE drops, so whatever the group sizes only a
    few statements exist and sqlite3 keeps them prepared. Results without warn, reasons or warnings go
    in statements of their own that leave those three columns out of the binding.
    """
    plain: list[EventRow] = []
    judged: list[EventRow] = []
    for row in rows:
        if row[UNJUDGED] == UNJUDGED_VALUES:
            plain.append(row[:10] + row[13:])
        else:
            judged.append(row)
    limit = min(MAX_PARAMETERS, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    for group, unjudged in ((plain, True), (judged, False)):
        if not group:
            continue
        per = 1 << (limit // len(group[0])).bit_length() - 1
        for start in range(0, len(group), per):
            chunk = group[start : start + per]
            size = 1 << (len(chunk) - 1).bit_length()
            chunk += [chunk[-1]] * (size - len(chunk))
            conn.execute(insert_events_sql(size, unjudged), list(itertools.chain.from_iterable(chunk)))


def event_rows(events: list[Event]) -> list[EventRow]:
    """The events table's row for each event: indexed columns of a result, then the payload's JSON."""
    rows: list[EventRow] = []
    for e in events:
        if e.type == "result":
            # A stats Row holds (ok, status_code, error_kind, total_ms, bytes, warn, reasons, warnings): the
            # columns' order; ok and warn bind as 1/0.
            rows.append((e.batch_id, e.seq, e.type, e.at, e.data["index"], *e.row, e.data_json))
        else:
            rows.append((e.batch_id, e.seq, e.type, e.at, None, *NO_RESULT, e.data_json))
    return rows


BATCH_COLUMNS = (
    "num, id, name, status, created_at, started_at, finished_at, options, total, parent_id, summary, source, list_id,"
    " (SELECT MAX(seq) FROM events e WHERE e.batch_id = b.id)"
)
# The ids of the last `per` runs of each of some lists ({marks}: one mark a list id, then ? for per); both stores.
RECENT_LIST_RUNS = (
    "SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY list_id ORDER BY num DESC) AS place"
    " FROM batches WHERE list_id IN ({marks})) AS ranked WHERE place <= ?"
)
# A page of a batch's result rows after an index, in index order (by the results_by_index index).
ROW_PAGE_QUERY = (
    "SELECT idx, ok, status_code, error_kind, total_ms, bytes, warn, reasons, warnings FROM events"
    " WHERE batch_id = ? AND type = 'result' AND idx > ? ORDER BY idx LIMIT ?"
)

# A batch event's new status (and, once final, its summary) on its row; the SQL both stores run (? marks).
APPLY_BATCH_EVENT = (
    "UPDATE batches SET status = ?, started_at = COALESCE(started_at, ?),"
    " finished_at = COALESCE(?, finished_at), summary = COALESCE(?, summary) WHERE id = ?"
)


def batch_event_args(event: Event) -> tuple[Any, ...]:
    """APPLY_BATCH_EVENT's arguments for a `batch` event."""
    d = event.data
    summary = None
    if d["status"] in FINAL_STATUSES and "counts" in d:
        summary = json.dumps({"counts": d["counts"], "stats": d.get("stats")})
    return (d["status"], d.get("started_at"), d.get("finished_at"), summary, event.batch_id)


URL_SLICE = 10_000  # URLs encoded at a time when a batch's list is written


def json_array(urls: Sequence[str]) -> bytearray:
    """A batch's URLs as one JSON array of UTF-8, built a slice at a time into one buffer (SQLite binds it as is).

    Encoding the whole list at once held it three more times (bytes, str, SQLite's copy): ~400 MB at a million.
    """
    out = bytearray(b"[")
    for start in range(0, len(urls), URL_SLICE):
        if start:
            out += b","
        # compact_json keeps what orjson refuses (a lone surrogate), escaped by the standard library: ASCII then.
        out += compact_json(urls[start : start + URL_SLICE])[1:-1].encode("utf-8", "surrogatepass")
    out += b"]"
    return out
