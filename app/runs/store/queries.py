"""The results query: a page of a batch's results under a filter and a sort, read on the index that serves it.

A page is read in two steps: the seqs of its rows, from one of schema.RESULT_INDEXES (covering wherever the
query needs nothing else, so counting and skipping to an offset never read a row), then those rows' data by
primary key. A count or a search that reads rows runs under a time limit, past which it answers what it
found and says the answer is partial (ResultPage.total_exact).

Both stores run these statements: they are written once, in SQLite's spelling, and a Dialect turns the few
places where PostgreSQL's differs (parameter marks, index hints, case-blind LIKE, JSON, the time limit)
into its own (postgres.PostgresDialect).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
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
    # ok is true for a warned result too (as counts' ok counts it): `warn` narrows to those.
    "ok": ("ok = 1",),
    "warn": ("warn = 1",),  # the results_warned index holds these rows only
    # A failure stored before error kinds has none (SQLite's `IS NOT` is PostgreSQL's `IS DISTINCT FROM`: neither).
    "failed": ("ok = 0", "(error_kind IS NULL OR error_kind <> 'cancelled')"),
    "cancelled": ("error_kind = 'cancelled'",),  # never ok: the error kind's index alone decides
    "not_ok": ("ok = 0",),
    "stopped": ("ok = 0", "error_kind = 'cancelled'", "total_ms > 0"),  # all three in the outcome index
}


class Dialect:
    """What the shared statements need of a database, as SQLite has it; PostgreSQL's store overrides the rest."""

    like = "LIKE"  # a LIKE where ASCII letters match in either case, and every other character only itself
    nulls_last = ""  # what puts NULLs last in a descending order (in SQLite NULL is the least value: they are)
    skip_locked = ""  # what lets concurrent claims pass over each other's rows (SQLite has one writer at a time)

    def sql(self, text: str) -> str:
        """A statement written with ? marks, as this database takes it."""
        return text

    def clock(self, conn: Any) -> float:
        """Now in unix seconds, as leases of this database are read: this process's clock (one process writes)."""
        return time.time()

    def index(self, name: str) -> str:
        """What follows `FROM events` to read the index `name` (SQLite's planner is told which one)."""
        return f" INDEXED BY {name}"

    def position(self, column: str) -> str:
        """Where a text given as the next argument starts in a column, from 1; 0 when it is not there."""
        return f"instr({column}, ?)"

    def text_at(self, key: str) -> str:
        """The text of a row's data at a top-level key (NULL where there is none)."""
        return f"json_extract(data, '$.{key}')"

    def within(self, conn: Any, seconds: float, fn: Callable[[], _T]) -> tuple[_T | None, bool]:
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

    def read_within(
        self, conn: Any, seconds: float, sql: str, args: Sequence[Any]
    ) -> tuple[list[tuple[Any, ...]], bool]:
        """A statement's rows, read for `seconds` at most: (the rows read, whether they are all of them)."""
        rows: list[tuple[Any, ...]] = []

        def read() -> None:
            for row in conn.execute(self.sql(sql), args):
                rows.append(row)

        _, finished = self.within(conn, seconds, read)
        return rows, finished


SQLITE = Dialect()


# Statements both stores run besides the results page (? marks; Dialect.sql turns them into PostgreSQL's).
# A batch's committed events after a seq, in order.
EVENTS_AFTER = "SELECT seq, type, at, data FROM events WHERE batch_id = ? AND seq > ? ORDER BY seq LIMIT ?"


def events_of_types(dialect: Dialect, types: tuple[str, ...]) -> str:
    """EVENTS_AFTER of some types only (their names follow the batch id and seq); without results, the few
    other events come from their own index, not from among the results."""
    index = "" if "result" in types else dialect.index("changes_by_batch")
    without_results = "" if "result" in types else " AND idx IS NULL"
    return (
        f"SELECT seq, type, at, data FROM events{index} WHERE batch_id = ?{without_results} AND seq > ?"
        f" AND type IN ({', '.join('?' * len(types))}) ORDER BY seq LIMIT ?"
    )


def results_after(outcome: str | None) -> str:
    """A page of a batch's stored results after a URL index, in index order; `outcome` (base.OUTCOMES) filters."""
    chosen = "".join(f" AND {term}" for term in OUTCOME_TERMS.get(outcome or "", ()))
    return f"SELECT data FROM events WHERE batch_id = ? AND type = 'result' AND idx > ?{chosen} ORDER BY idx LIMIT ?"


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


def plan(batch_id: str, query: ResultQuery, dialect: Dialect = SQLITE) -> Select:
    """How to find the query's rows: the narrowest index for its filter (or for its sort when unfiltered)."""
    terms = ["batch_id = ?", "idx IS NOT NULL"]  # the indexes' own condition: SQLite uses them only when it holds
    args: list[Any] = [batch_id]
    if query.outcome == "warn":
        index = "results_warned"
    elif query.reason is not None:
        index = "results_by_reason"
    elif query.error is not None or query.outcome == "cancelled":
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
    if query.reason is not None:
        # The reasons text is " rule rule ": a rule is found with the spaces around it, never inside another.
        terms += ["reasons IS NOT NULL", f"{dialect.position('reasons')} > 0"]
        args.append(f" {query.reason} ")
    if query.until_seq is not None:
        # Every index holds seq (SQLite: the primary key's tail): the term is read from the index, not the row.
        terms.append("seq <= ?")
        args.append(query.until_seq)
    reads_rows = False
    if query.q:
        terms += search_terms(dialect)
        args += search_args(query.q)
        reads_rows = True
    direction = " DESC" if query.descending else ""
    if query.sort == "index" or (query.sort == "status" and query.status is not None):
        order = f"idx{direction}"  # the driving index's own order: read in order, never sorted
    elif query.sort == "status":
        nulls = dialect.nulls_last if query.descending else ""
        order = f"status_code{direction}{nulls}, idx{direction}"  # the status index's own order
    else:
        value = SORT_VALUES[query.sort]
        order = f"({value}) IS NULL, {value}{direction}, idx{direction}"
    return Select(index, terms, args, order, reads_rows)


def search_terms(dialect: Dialect) -> list[str]:
    """A search's terms: the stored JSON holds the text at all (cheap), then the URL or the final URL does."""
    like = f"{dialect.like} ? ESCAPE '\\'"
    return [f"data {like}", f"({dialect.text_at('url')} {like} OR {dialect.text_at('final_url')} {like})"]


def search_args(q: str) -> list[str]:
    """The search's LIKE patterns: the text as the stored JSON writes it, then as the URL has it."""
    stored = compact_json(q)[1:-1]  # what JSON escapes in a string (quotes, backslashes) it escapes here too
    return [_contains(stored), _contains(q), _contains(q)]


def _contains(text: str) -> str:
    """A LIKE pattern matching text that contains `text` (its own % and _ taken literally)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass(frozen=True)
class Reading:
    """A connection and how its database spells the shared statements: what a page's reads run on."""

    conn: Any  # a sqlite3 or a psycopg connection
    dialect: Dialect

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run a statement written with ? marks; its cursor."""
        return self.conn.execute(self.dialect.sql(sql), args)

    def within(self, seconds: float, fn: Callable[[], _T]) -> tuple[_T | None, bool]:
        """fn() under a time limit (Dialect.within)."""
        return self.dialect.within(self.conn, seconds, fn)


def read_page(
    conn: Any, batch_id: str, query: ResultQuery, total: int | None, dense: bool, dialect: Dialect = SQLITE
) -> ResultPage:
    """ResultPage for the query, on a reader connection (see Store.result_page)."""
    db = Reading(conn, dialect)
    # Read first: the page holds the results stored up to this seq (see until_seq below).
    last_seq = db.execute("SELECT MAX(seq) FROM events WHERE batch_id = ?", (batch_id,)).fetchone()[0] or 0
    if query.until_seq is not None and query.until_seq < last_seq:
        # Results stored since are left out: the batch's counts (total) and its dense indexes no longer say which.
        last_seq, total, dense = query.until_seq, None, False
    # The page holds the results up to last_seq and no later one (stored while it is read), so the next page,
    # read with it as until_seq, goes on from where this one ends.
    select = plan(batch_id, dataclasses.replace(query, until_seq=last_seq), dialect)
    exact = True
    offset: int | None = query.offset
    if query.start is not None:
        seqs, offset = _from_start(db, select, query)
    elif dense and not query.filtered and query.sort == "index" and total is not None:
        # Every index below the batch's size has its result: the offset is the index itself.
        first = total - 1 - query.offset if query.descending else query.offset
        bound = "idx <= ?" if query.descending else "idx >= ?"
        seqs = _seqs(db, select, [bound], [first], query.limit, 0)
    elif query.sort == "status" and query.status is None and not query.descending:
        seqs = _nulls_last(db, select, query)
    else:
        seqs, exact = _limited_seqs(db, select, [], [], query.limit, query.offset)
    if total is None and exact:
        counted, exact = db.within(COUNT_LIMIT, lambda: _count(db, select))
        total = counted if counted is not None else 0
    elif total is None:
        total = 0  # the page's own read ran out of time: counting would too
    shown = (offset or 0) + len(seqs) if seqs else 0
    if not exact or total < shown:
        # A partial count says "at least": at least what was found, and one more where the page is full.
        total = max(total, shown + (1 if len(seqs) == query.limit and not exact else 0))
    return ResultPage(_rows(db, batch_id, seqs), total, exact, offset, last_seq)


def _from_start(db: Reading, select: Select, query: ResultQuery) -> tuple[list[int], int | None]:
    """A page from URL index query.start in index order, and its offset (counted when asked)."""
    start = query.start or 0
    bound, before = ("idx <= ?", "idx > ?") if query.descending else ("idx >= ?", "idx < ?")
    seqs, _ = _limited_seqs(db, select, [bound], [start], query.limit, 0)
    if not query.locate:
        return seqs, None
    offset, _ = db.within(
        COUNT_LIMIT, lambda: _count(db, select, (before,), (start,))
    )  # None when counting took too long: the page is still the right one
    return seqs, offset


def _nulls_last(db: Reading, select: Select, query: ResultQuery) -> list[int]:
    """Ascending by status code with results that have none after the rest: two ranges of the status index."""
    seqs = _seqs(db, select, ["status_code IS NOT NULL"], [], query.limit, query.offset)
    if len(seqs) == query.limit:
        return seqs
    # The page reaches past the last status code: the rest comes from those without one, in index order.
    skip = 0 if seqs else query.offset - _count(db, select, ("status_code IS NOT NULL",))
    without = Select(select.index, select.terms, select.args, "idx", select.reads_rows)
    return seqs + _seqs(db, without, ["status_code IS NULL"], [], query.limit - len(seqs), max(0, skip))


def _limited_seqs(
    db: Reading, select: Select, more: list[str], args: list[Any], limit: int, offset: int
) -> tuple[list[int], bool]:
    """_seqs, under SEARCH_LIMIT when the query reads rows: (what was found, whether the read finished)."""
    if not select.reads_rows:
        return _seqs(db, select, more, args, limit, offset), True
    rows, finished = db.dialect.read_within(
        db.conn, SEARCH_LIMIT, _seq_sql(db.dialect, select, more), [*select.args, *args, limit, offset]
    )
    return [seq for (seq,) in rows], finished


def _seqs(db: Reading, select: Select, more: list[str], args: list[Any], limit: int, offset: int) -> list[int]:
    """The seqs of the page's rows, in the page's order."""
    cursor = db.execute(_seq_sql(db.dialect, select, more), [*select.args, *args, limit, offset])
    return [seq for (seq,) in cursor]


def _seq_sql(dialect: Dialect, select: Select, more: list[str] | tuple[str, ...] = ()) -> str:
    """The seq-finding statement."""
    return (
        f"SELECT seq FROM events{dialect.index(select.index)} WHERE {select.where(*more)}"
        f" ORDER BY {select.order} LIMIT ? OFFSET ?"
    )


def _count(db: Reading, select: Select, more: tuple[str, ...] = (), args: tuple[Any, ...] = ()) -> int:
    """How many rows the statement (with `more` terms) finds."""
    sql = f"SELECT COUNT(*) FROM events{db.dialect.index(select.index)} WHERE {select.where(*more)}"
    return int(db.execute(sql, [*select.args, *args]).fetchone()[0])


def _rows(db: Reading, batch_id: str, seqs: list[int]) -> list[dict[str, Any]]:
    """The results stored under these seqs, in their order."""
    data: dict[int, str] = {}
    for start in range(0, len(seqs), FETCH_CHUNK):
        chunk = seqs[start : start + FETCH_CHUNK]
        marks = ", ".join("?" * len(chunk))
        data.update(
            db.execute(f"SELECT seq, data FROM events WHERE batch_id = ? AND seq IN ({marks})", [batch_id, *chunk])
        )
    return [json.loads(data[seq]) for seq in seqs]


def explain(conn: sqlite3.Connection, batch_id: str, query: ResultQuery) -> list[str]:
    """SQLite's plan for the query's seq-finding statement as read_page runs it, with an until_seq (for tests and
    bench/paging.py)."""
    select = plan(batch_id, query if query.until_seq is not None else dataclasses.replace(query, until_seq=2**62))
    sql = _seq_sql(SQLITE, select)
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, [*select.args, query.limit, query.offset])]
