"""The results query: a page of a batch's results under a filter and a sort, read on the index that serves it.

A page is read in two steps: the seqs of its rows, from one of schema.RESULT_INDEXES (covering wherever the
query needs nothing else, so counting and skipping to an offset never read a row), then those rows' data by
primary key. A count or a search that reads rows runs under a time limit, past which it answers what it
found and says the answer is partial (ResultPage.total_exact).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ...core.jsonutil import compact_json
from ...core.results import ERROR_KINDS
from ...core.stats import Row, latency_ms
from .base import ResultPage, ResultQuery

_T = TypeVar("_T")

COUNT_LIMIT = 0.25  # seconds a count may take; past it the total is a lower bound
SEARCH_LIMIT = 1.0  # seconds a page with a search (`q`) may read rows; past it the page holds what was found
CHECK_EVERY = 20_000  # SQLite instructions between two looks at the clock while a limit holds
FETCH_CHUNK = 500  # seqs per statement when a page's rows are read (SQLite before 3.32 takes 999 parameters)

# Error kinds whose results say nothing about latency: the rule is stats.latency_ms's, asked once per kind.
NO_LATENCY = tuple(kind for kind in ERROR_KINDS if latency_ms(Row(False, None, kind, 1.0, 0)) is None)
# A sort's value of a row, NULL where the row has none (such rows go last); the page shows the same values.
SORT_VALUES = {
    "status": "status_code",
    "latency": f"CASE WHEN error_kind IN ({', '.join(map(repr, NO_LATENCY))}) THEN NULL ELSE total_ms END",
    "size": "CASE WHEN status_code IS NULL THEN NULL ELSE bytes END",
}
OUTCOME_TERMS = {
    "ok": ("ok = 1",),
    "failed": ("ok = 0", "error_kind IS NOT 'cancelled'"),  # a failure stored before error kinds has none
    "cancelled": ("error_kind = 'cancelled'",),  # never ok: the error kind's index alone decides
    "not_ok": ("ok = 0",),
    "stopped": ("ok = 0", "error_kind = 'cancelled'", "total_ms > 0"),  # all three in the outcome index
}


@dataclass
class Select:
    """The seq-finding statement's parts: its index, its WHERE terms with their arguments, and its order."""

    index: str
    terms: list[str]
    args: list[Any]
    order: str
    reads_rows: bool = False  # a term needs the row itself (a search), not the index alone

    def where(self, *more: str) -> str:
        """The WHERE clause with `more` terms added."""
        return " AND ".join([*self.terms, *more])


def plan(batch_id: str, query: ResultQuery) -> Select:
    """How to find the query's rows: the narrowest index for its filter (or for its sort when unfiltered)."""
    terms = ["batch_id = ?", "idx IS NOT NULL"]  # the indexes' own condition: SQLite uses them only when it holds
    args: list[Any] = [batch_id]
    if query.error is not None or query.outcome == "cancelled":
        index = "results_by_error"
    elif query.status is not None or query.sort == "status":
        index = "results_by_status"
    elif query.outcome is not None or query.sort in ("latency", "size"):
        index = "results_by_outcome"
    else:
        index = "results_by_index"
    if query.outcome is not None:
        terms += OUTCOME_TERMS[query.outcome]
    if query.error is not None:
        terms.append("error_kind = ?")
        args.append(query.error)
    if query.status is not None:
        terms.append("status_code = ?")
        args.append(query.status)
    reads_rows = False
    if query.q:
        terms += search_terms()
        args += search_args(query.q)
        reads_rows = True
    direction = " DESC" if query.descending else ""
    if query.sort == "index" or (query.sort == "status" and query.status is not None):
        order = f"idx{direction}"  # the driving index's own order: read in order, never sorted
    elif query.sort == "status":
        order = f"status_code{direction}, idx{direction}"  # the status index's own order
    else:
        value = SORT_VALUES[query.sort]
        order = f"({value}) IS NULL, {value}{direction}, idx{direction}"
    return Select(index, terms, args, order, reads_rows)


def search_terms() -> list[str]:
    """A search's terms: the stored JSON holds the text at all (cheap), then the URL or the final URL does."""
    return [
        "data LIKE ? ESCAPE '\\'",
        "(json_extract(data, '$.url') LIKE ? ESCAPE '\\' OR json_extract(data, '$.final_url') LIKE ? ESCAPE '\\')",
    ]


def search_args(q: str) -> list[str]:
    """The search's LIKE patterns: the text as the stored JSON writes it, then as the URL has it."""
    stored = compact_json(q)[1:-1]  # what JSON escapes in a string (quotes, backslashes) it escapes here too
    return [_contains(stored), _contains(q), _contains(q)]


def _contains(text: str) -> str:
    """A LIKE pattern matching text that contains `text` (its own % and _ taken literally)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def within(conn: sqlite3.Connection, seconds: float, fn: Callable[[], _T]) -> tuple[_T | None, bool]:
    """fn() with SQLite interrupted after `seconds`: (its value, True), or (None, False) when interrupted."""
    deadline = time.monotonic() + seconds
    conn.set_progress_handler(lambda: time.monotonic() > deadline, CHECK_EVERY)
    try:
        return fn(), True
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_INTERRUPT:
            raise
        return None, False
    finally:
        conn.set_progress_handler(None, 0)


def read_page(
    conn: sqlite3.Connection, batch_id: str, query: ResultQuery, total: int | None, dense: bool
) -> ResultPage:
    """ResultPage for the query, on a reader connection (see Store.result_page)."""
    # Read first: every row read below that is older than this seq is in the page; newer ones may be too.
    last_seq = conn.execute("SELECT MAX(seq) FROM events WHERE batch_id = ?", (batch_id,)).fetchone()[0] or 0
    select = plan(batch_id, query)
    exact = True
    offset: int | None = query.offset
    if query.start is not None:
        seqs, offset = _from_start(conn, select, query)
    elif dense and not query.filtered and query.sort == "index" and total is not None:
        # Every index below the batch's size has its result: the offset is the index itself.
        first = total - 1 - query.offset if query.descending else query.offset
        bound = "idx <= ?" if query.descending else "idx >= ?"
        seqs = _seqs(conn, select, [bound], [first], query.limit, 0)
    elif query.sort == "status" and query.status is None and not query.descending:
        seqs = _nulls_last(conn, select, query)
    else:
        seqs, exact = _limited_seqs(conn, select, [], [], query.limit, query.offset)
    if total is None and exact:
        counted, exact = within(conn, COUNT_LIMIT, lambda: _count(conn, select))
        total = counted if counted is not None else 0
    elif total is None:
        total = 0  # the page's own read ran out of time: counting would too
    shown = (offset or 0) + len(seqs) if seqs else 0
    if not exact or total < shown:
        # A partial count says "at least": at least what was found, and one more where the page is full.
        total = max(total, shown + (1 if len(seqs) == query.limit and not exact else 0))
    return ResultPage(_rows(conn, batch_id, seqs), total, exact, offset, last_seq)


def _from_start(conn: sqlite3.Connection, select: Select, query: ResultQuery) -> tuple[list[int], int | None]:
    """A page from URL index query.start in index order, and its offset (counted when asked)."""
    start = query.start or 0
    bound, before = ("idx <= ?", "idx > ?") if query.descending else ("idx >= ?", "idx < ?")
    seqs, _ = _limited_seqs(conn, select, [bound], [start], query.limit, 0)
    if not query.locate:
        return seqs, None
    offset, _ = within(
        conn, COUNT_LIMIT, lambda: _count(conn, select, (before,), (start,))
    )  # None when counting took too long: the page is still the right one
    return seqs, offset


def _nulls_last(conn: sqlite3.Connection, select: Select, query: ResultQuery) -> list[int]:
    """Ascending by status code with results that have none after the rest: two ranges of the status index."""
    seqs = _seqs(conn, select, ["status_code IS NOT NULL"], [], query.limit, query.offset)
    if len(seqs) == query.limit:
        return seqs
    # The page reaches past the last status code: the rest comes from those without one, in index order.
    skip = 0 if seqs else query.offset - _count(conn, select, ("status_code IS NOT NULL",))
    without = Select(select.index, select.terms, select.args, "idx", select.reads_rows)
    return seqs + _seqs(conn, without, ["status_code IS NULL"], [], query.limit - len(seqs), max(0, skip))


def _limited_seqs(
    conn: sqlite3.Connection, select: Select, more: list[str], args: list[Any], limit: int, offset: int
) -> tuple[list[int], bool]:
    """_seqs, under SEARCH_LIMIT when the query reads rows: (what was found, whether the read finished)."""
    if not select.reads_rows:
        return _seqs(conn, select, more, args, limit, offset), True
    found: list[int] = []

    def read() -> None:
        for (seq,) in _cursor(conn, select, more, args, limit, offset):
            found.append(seq)

    _, finished = within(conn, SEARCH_LIMIT, read)
    return found, finished


def _seqs(
    conn: sqlite3.Connection, select: Select, more: list[str], args: list[Any], limit: int, offset: int
) -> list[int]:
    """The seqs of the page's rows, in the page's order."""
    return [seq for (seq,) in _cursor(conn, select, more, args, limit, offset)]


def _cursor(
    conn: sqlite3.Connection, select: Select, more: list[str], args: list[Any], limit: int, offset: int
) -> sqlite3.Cursor:
    """The seq-finding statement, run."""
    return conn.execute(
        f"SELECT seq FROM events INDEXED BY {select.index} WHERE {select.where(*more)}"
        f" ORDER BY {select.order} LIMIT ? OFFSET ?",
        [*select.args, *args, limit, offset],
    )


def _count(conn: sqlite3.Connection, select: Select, more: tuple[str, ...] = (), args: tuple[Any, ...] = ()) -> int:
    """How many rows the statement (with `more` terms) finds."""
    sql = f"SELECT COUNT(*) FROM events INDEXED BY {select.index} WHERE {select.where(*more)}"
    return int(conn.execute(sql, [*select.args, *args]).fetchone()[0])


def _rows(conn: sqlite3.Connection, batch_id: str, seqs: list[int]) -> list[dict[str, Any]]:
    """The results stored under these seqs, in their order."""
    data: dict[int, str] = {}
    for start in range(0, len(seqs), FETCH_CHUNK):
        chunk = seqs[start : start + FETCH_CHUNK]
        marks = ", ".join("?" * len(chunk))
        data.update(
            conn.execute(f"SELECT seq, data FROM events WHERE batch_id = ? AND seq IN ({marks})", [batch_id, *chunk])
        )
    return [json.loads(data[seq]) for seq in seqs]


def explain(conn: sqlite3.Connection, batch_id: str, query: ResultQuery) -> list[str]:
    """SQLite's plan for the query's seq-finding statement (for tests and bench/paging.py)."""
    select = plan(batch_id, query)
    sql = f"SELECT seq FROM events INDEXED BY {select.index} WHERE {select.where()} ORDER BY {select.order} LIMIT ? OFFSET ?"
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, [*select.args, query.limit, query.offset])]
