"""The PostgreSQL store of cluster mode: the SQLite store's batches and event log, shared by every process.

It answers as SQLiteStore does (the same tests run against both): events handed to extend() are committed
by one writer greenlet in groups (writer.EventWriter, as SQLite's are), observers hear of each group on the
hub in commit order, reads of a batch are shared, and the results page runs the statements of queries.py in
PostgreSQL's spelling (PostgresDialect). psycopg is imported here and nowhere in the default mode.

Where its queries run: psycopg picks its wait function when first imported (psycopg/waiting.py: its C wait,
which blocks the thread, unless gevent has patched `select`). Patched first (wsgi.py, app.worker, python -m
app.cluster), the waits yield to other greenlets, so queries run in the calling greenlet. Not patched at all
(the pytest process, the import command), they run on threads, as SQLiteStore runs SQLite, so the hub never
waits on PostgreSQL. Patched after psycopg's import, each query would stop every greenlet: the store refuses to
open, saying so.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import gevent
import gevent.monkey
import psycopg
import psycopg.errors
import psycopg.waiting
from gevent.threadpool import ThreadPool
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from ...core import stats
from ...core.jsonutil import compact_json
from ...core.results import FINAL_STATUSES
from ..events import Event
from . import pg_schema
from .base import BatchRecord, StoreError, StoreOpenError
from .lists import ListRows
from .outbox import Outbox, enqueue
from .queries import OUTCOME_TERMS, Dialect, Reading
from .reads import StoreReads
from .rows import (
    APPLY_BATCH_EVENT,
    EVENT_COLUMNS,
    RECENT_LIST_RUNS,
    EventRow,
    batch_event_args,
    json_array,
    record_of,
)
from .writer import EventWriter

_T = TypeVar("_T")
EXPORT_SPAN = 1000  # URL indexes in each read of result_pages, as in SQLite's store
CONNECT_TIMEOUT = 10  # seconds to reach PostgreSQL when the store opens (and each new connection)
POOL_WAIT = 5.0  # seconds a read or a write waits for a connection (a free one, or a new one) before it fails
READ_STEP_MAX = 1000  # rows per fetch at most while a statement is read under a time limit

# A batches row as record_of takes it, then the cluster's live tally, its first start and the database's clock
# now (epoch seconds: the clock the ledger stamps started_clock with, whatever the web machine's says).
BATCH_COLUMNS = (
    "num, id, name, status, created_at, started_at, finished_at, options, total, parent_id, summary, source, list_id,"
    " last_seq,"
    " tally, started_clock, EXTRACT(EPOCH FROM clock_timestamp())::float8"
)
# A group of events is copied (COPY, a fraction of the client's work of any INSERT) into a table of the writer's
# session, then inserted from there as INSERT OR IGNORE does. Events of a batch not stored (deleted while it ran)
# are dropped: their foreign key would fail the whole group, every time it is retried.
INCOMING = """
CREATE TEMP TABLE IF NOT EXISTS incoming_events (
    batch_id TEXT, seq BIGINT, type TEXT, at TEXT, idx INTEGER, ok BOOLEAN, status_code INTEGER,
    error_kind TEXT, total_ms DOUBLE PRECISION, bytes BIGINT, warn BOOLEAN, reasons TEXT, warnings TEXT, data TEXT
) ON COMMIT DELETE ROWS
"""
COPY_EVENTS = f"COPY incoming_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
INSERT_EVENTS = f"""
INSERT INTO events ({", ".join(EVENT_COLUMNS)})
SELECT batch_id, seq, type, at, idx, ok::int, status_code, error_kind, total_ms, bytes, warn::int, reasons, warnings, data
FROM incoming_events i
WHERE EXISTS (SELECT 1 FROM batches b WHERE b.id = i.batch_id)
ON CONFLICT DO NOTHING
"""
RAISE_LAST_SEQ = """
UPDATE batches b SET last_seq = GREATEST(b.last_seq, i.seq)
FROM (SELECT batch_id, MAX(seq) AS seq FROM incoming_events GROUP BY batch_id) AS i WHERE b.id = i.batch_id
"""

# -- PostgreSQL's spelling of the shared statements ----------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _marks(sql: str) -> str:
    """A statement written with ? marks (queries.py, rows.py) with psycopg's %s instead."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresDialect(Dialect):
    """Where PostgreSQL's SQL differs from SQLite's in the shared statements."""

    like = 'COLLATE "C" ILIKE'  # under the C collation ILIKE folds ASCII letters only, as SQLite's LIKE does
    nulls_last = " NULLS LAST"  # NULL is the greatest value in PostgreSQL
    skip_locked = " FOR UPDATE SKIP LOCKED"  # two web processes' senders never claim the same delivery

    def sql(self, text: str) -> str:
        """The statement with %s marks."""
        return _marks(text)

    def clock(self, conn: Any) -> float:
        """Now in unix seconds by PostgreSQL's clock: the one every web process's leases are read against."""
        return float(conn.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()[0])

    def index(self, name: str) -> str:
        """Nothing: PostgreSQL's planner picks the index (it takes no hints)."""
        return ""

    def position(self, column: str) -> str:
        """strpos: PostgreSQL's instr."""
        return f"strpos({column}, ?)"

    def text_at(self, key: str) -> str:
        """The text at a key, by the schema's json_text_at (NULL where PostgreSQL cannot read the row as JSON)."""
        return f"json_text_at(data, '{key}')"

    def within(self, conn: Any, seconds: float, fn: Callable[[], _T]) -> tuple[_T | None, bool]:
        """fn() with its statements cancelled by PostgreSQL after `seconds` (statement_timeout)."""
        if seconds <= 0:
            return None, False  # no time at all (a statement_timeout of 0 would mean no limit)
        try:
            with conn.transaction():
                _time_limit(conn, seconds)
                value = fn()
            return value, True
        except psycopg.errors.QueryCanceled:
            return None, False

    def read_within(
        self, conn: Any, seconds: float, sql: str, args: Sequence[Any]
    ) -> tuple[list[tuple[Any, ...]], bool]:
        """The rows as found, through a server-side cursor fetched a few at a time, each fetch under what is
        left of the time: when time runs out, the rows already found are kept (as SQLite's interrupted read)."""
        rows: list[tuple[Any, ...]] = []
        if seconds <= 0:
            return rows, False
        deadline = time.monotonic() + seconds
        step = 10
        try:
            with conn.transaction(), conn.cursor(name="limited_read") as cursor:
                cursor.execute(self.sql(sql), args)
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return rows, False
                    _time_limit(conn, left)
                    got = cursor.fetchmany(step)
                    rows += got
                    if len(got) < step:
                        return rows, True
                    step = min(2 * step, READ_STEP_MAX)
        except psycopg.errors.QueryCanceled:
            return rows, False


def _time_limit(conn: Any, seconds: float) -> None:
    """Limit each statement of the current transaction to `seconds` (at least 1 ms)."""
    conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(max(1, math.ceil(seconds * 1000))),))


POSTGRES = PostgresDialect()
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _span_query(extract: tuple[tuple[str, ...], ...], outcome: str | None) -> str:
    """result_pages' query of a span of URL indexes (batch id, first index, index past the last): the stored
    texts, or for each group of paths in `extract` the JSON array of their values, a line a result.

    Each row's JSON is read once (json_to_record, a level of keys at a time): json's operators would read the
    whole text again for each path. A value keeps its stored text (numbers as written); a string is written
    again by PostgreSQL, escaping what JSON requires.
    """
    # The outcomes of the results pages (queries.OUTCOME_TERMS); one not listed is a KeyError, never no filter.
    chosen = "".join(f" AND {term}" for term in OUTCOME_TERMS[outcome]) if outcome else ""
    where = f"batch_id = %s AND type = 'result' AND idx >= %s AND idx < %s{chosen}"
    if not extract:
        return f"SELECT string_agg(data, E'\\n' ORDER BY idx) FROM events WHERE {where}"
    groups = [[_keys(path) for path in paths] for paths in extract]
    objects: dict[tuple[str, ...], list[str]] = {}  # each object read (by its keys from the root): its keys read
    for keys in (keys for group in groups for keys in group):
        for depth in range(len(keys)):
            read = objects.setdefault(keys[:depth], [])
            if keys[depth] not in read:
                read.append(keys[depth])
    alias = {keys: f"r{n}" for n, keys in enumerate(objects)}  # a parent is always named before its children
    joins = ""
    for keys, read in objects.items():
        if keys:
            parent = f'{alias[keys[:-1]]}."{keys[-1]}"'
            source = f"CASE WHEN json_typeof({parent}) = 'object' THEN {parent} END"
        else:
            source = "e.data::json"
        columns = ", ".join(f'"{key}" json' for key in read)
        joins += f" LEFT JOIN LATERAL json_to_record({source}) AS {alias[keys]} ({columns}) ON true"
    arrays = [
        "'[' || concat_ws(',', "
        + ", ".join(f"COALESCE({alias[keys[:-1]]}.\"{keys[-1]}\"::text, 'null')" for keys in group)
        + ") || ']'"
        for group in groups
    ]
    values = ", ".join(f"{array} AS x{n}" for n, array in enumerate(arrays))
    lines = ", ".join(f"string_agg(x{n}, E'\\n' ORDER BY idx)" for n in range(len(arrays)))
    # The span's rows first, then their JSON: a key read from it (such as ok) names no column of events.
    rows = f"SELECT idx, data FROM events WHERE {where}"
    return f"SELECT {lines} FROM (SELECT e.idx, {values} FROM ({rows}) AS e{joins}) AS span"


def _keys(path: str) -> tuple[str, ...]:
    """The keys of a JSON path such as $.timings.total (object keys only, as the exports use)."""
    keys = tuple(path.split(".")[1:]) if path.startswith("$.") else ()
    if not keys or not all(_KEY.match(key) for key in keys):
        raise ValueError(f"the PostgreSQL store reads JSON paths of plain keys ($.a.b), not {path!r}")
    return keys


# -- opening -------------------------------------------------------------------------------------------------


def display_name(url: str) -> str:
    """The database a URL names, for messages and logs: user, host, port and name, never the password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "(a database URL psycopg cannot read)"
    host = str(params.get("host") or "")
    port = f":{params['port']}" if params.get("port") else ""
    user = f"{params['user']}@" if params.get("user") else ""
    socket = f"?host={host}" if host.startswith("/") else ""
    return f"postgresql://{user}{'' if socket else host}{port}/{params.get('dbname') or ''}{socket}"


def _scrub(text: str, url: str) -> str:
    """`text` without the URL's password in it, should a message ever quote it."""
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        return text
    return text.replace(str(password), "***") if password else text


def cooperative_waits() -> bool:
    """Whether psycopg's waits yield to other greenlets (gevent patched first); False when nothing is patched.

    StoreOpenError when gevent patched after psycopg was imported: its C wait would stop every greenlet.
    """
    if not gevent.monkey.is_module_patched("select"):  # what psycopg itself looks at
        return False
    if psycopg.waiting.wait is getattr(psycopg.waiting, "wait_c", None):
        raise StoreOpenError(
            "psycopg was imported before gevent patched the standard library, so each query would stop every "
            "greenlet of this process: patch first (gevent.monkey.patch_all(), as wsgi.py and python -m "
            "app.cluster do) and import nothing that imports psycopg before it"
        )
    return True


def _quietly(fn: Callable[..., _T], args: tuple[Any, ...]) -> tuple[_T | None, Exception | None]:
    """fn(*args) on a pool thread, its error returned rather than raised (gevent's pool would print it)."""
    try:
        return fn(*args), None
    except Exception as exc:  # noqa: BLE001 - raised again by the caller, on its own greenlet
        return None, exc


def connect(url: str) -> psycopg.Connection[Any]:
    """One connection in autocommit mode (for the schema and the import command); psycopg's errors as they are."""
    return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, application_name="greenbatch")


def open_database(url: str) -> psycopg.Connection[Any]:
    """A connection to a database brought up to the latest schema; StoreOpenError (naming it) if that fails."""
    name = display_name(url)
    try:
        conn = connect(url)
    except psycopg.Error as exc:
        raise StoreOpenError(
            f"the database {name} cannot be reached ({_scrub(str(exc).strip(), url)}); check "
            "GREENBATCH_DATABASE_URL, that PostgreSQL runs and that it takes this user's connections"
        ) from None
    try:
        pg_schema.migrate(conn)
    except (psycopg.Error, RuntimeError) as exc:
        conn.close()
        raise StoreOpenError(f"the database {name} cannot be set up: {_scrub(str(exc).strip(), url)}") from None
    return conn


def _record(row: tuple[Any, ...]) -> BatchRecord:
    """A batches row (BATCH_COLUMNS) as a record; a running cluster batch's summary comes from its tally."""
    record = record_of(row[:14])
    tally, started_clock, now = row[14:]
    if record.summary is None and tally is not None:
        # The tally the ledger's appends keep (stats.Tally.state), summed up as its progress events are: nobody
        # counts the batch's rows again.
        kept = stats.Tally.from_state(json.loads(tally))
        record.summary = stats.batch_summary(kept, record.total, started_clock, now)
    return record


class PostgresStore(EventWriter, StoreReads, ListRows, Outbox):
    """The shared store of cluster mode: a PostgreSQL database (GREENBATCH_DATABASE_URL)."""

    _dialect = POSTGRES
    _log = logging.getLogger(__name__)

    def __init__(
        self,
        url: str,
        flush_interval: float = 0.1,
        flush_rows: int = 500,
        readers: int = 4,
    ):
        """Open the database and bring its schema up to date; StoreOpenError, naming it, when it cannot be used."""
        self.name = display_name(url)  # what messages call the database (SQLiteStore.path's counterpart)
        cooperative = cooperative_waits()
        open_database(url).close()
        self._url = url
        pools = []
        for role, size in (("reads", readers), ("writes", 2)):  # reads never keep the writer waiting
            pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                url,
                min_size=1,
                max_size=size,
                kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT, "application_name": "greenbatch"},
                name=f"greenbatch-{role}",
                # A connection PostgreSQL ended (a restart, a terminated session) is replaced before use, never
                # handed out to fail the read or write that takes it: one empty query a checkout.
                check=ConnectionPool.check_connection,
                timeout=POOL_WAIT,
                num_workers=1,
                open=False,
            )
            pools.append(pool)
        self._reads, self._writes = pools
        try:
            for pool in pools:
                pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            for pool in pools:
                pool.close()
            raise StoreOpenError(
                f"the database {self.name} cannot be reached ({self._scrub(exc)}); check that PostgreSQL runs"
            ) from None
        # Threads for the queries (reads, writes) while psycopg's waits would block the hub; None: greenlets.
        self._threads = None if cooperative else (ThreadPool(readers), ThreadPool(2))
        EventWriter.__init__(self, flush_interval, flush_rows)
        StoreReads.__init__(self)

    # -- writes ------------------------------------------------------------------------------

    def create_batch(
        self,
        batch_id: str,
        name: str,
        options: dict[str, Any],
        urls: Sequence[str],
        created_at: str,
        parent_id: str | None = None,
        source: dict[str, Any] | None = None,
        row_specs: dict[str, dict[str, Any]] | None = None,
        list_id: str | None = None,
    ) -> None:
        """Store a new batch, its URLs and its per-row specs, committed before this returns; StoreError (nothing
        stored) if it cannot."""
        fault = self.fault()
        if fault is not None:
            raise StoreError(fault.message)  # a new batch would only add to what waits in memory
        url_list = json_array(urls).decode()

        specs = None if row_specs is None else compact_json(row_specs)

        def write(conn: psycopg.Connection[Any]) -> None:
            # One statement (one round trip), all or nothing: the row, then its URL list and its row specs.
            conn.execute(
                "WITH batch AS (INSERT INTO batches"
                " (id, name, status, created_at, options, total, parent_id, source, list_id)"
                " VALUES (%s, %s, 'queued', %s, %s, %s, %s, %s, %s) RETURNING id),"
                " specs AS (INSERT INTO row_specs (batch_id, specs) SELECT id, %s::text FROM batch WHERE %s::text IS NOT NULL)"
                " INSERT INTO url_lists (batch_id, urls) SELECT id, %s FROM batch",
                (
                    batch_id,
                    name,
                    created_at,
                    json.dumps(options),
                    len(urls),
                    parent_id,
                    None if source is None else json.dumps(source),
                    list_id,
                    specs,
                    specs,
                    url_list,
                ),
            )

        self._write(write)

    @property
    def _target(self) -> str:
        """What the writer's messages name: the database, without its password."""
        return self.name

    def _commit(self, events: list[Event], rows: list[EventRow]) -> None:
        """Commit a group of events where writes run (EventWriter's flush loop calls it)."""
        self._on(1, self._write_events, events, rows)

    def _commit_fault(self, exc: Exception) -> tuple[str, str] | None:
        """What a failed commit means (EventWriter): PostgreSQL's reason (no password in it), and what to do."""
        if not isinstance(exc, psycopg.Error):
            return None
        advice = "check that PostgreSQL runs, takes connections and has disk space, and the server log"
        return self._scrub(exc), advice

    def _write_events(self, events: list[Event], rows: list[EventRow]) -> None:
        """Commit a group of events (`rows` is event_rows(events), made on the hub) in one transaction: the
        rows, each batch event on its batch's row, and each batch's last_seq."""
        with self._writes.connection() as conn, conn.transaction():
            conn.execute(INCOMING)  # the first time on this connection (a read-only database fails it, at once)
            with conn.cursor() as cursor, cursor.copy(COPY_EVENTS) as copy:
                for row in rows:
                    copy.write_row(row)
            conn.execute(INSERT_EVENTS)
            for event in events:
                if event.type == "batch":
                    conn.execute(_marks(APPLY_BATCH_EVENT), batch_event_args(event))
                    if event.data["status"] in FINAL_STATUSES:
                        found = conn.execute("SELECT options FROM batches WHERE id = %s", (event.batch_id,)).fetchone()
                        enqueue(conn.execute, _marks, event.batch_id, found[0] if found else None)
            conn.execute(RAISE_LAST_SEQ)

    def _transaction(self, fn: Callable[[Any], _T]) -> _T:
        """fn(conn) in one write transaction (the outbox's writes)."""

        def write(conn: psycopg.Connection[Any]) -> _T:
            with conn.transaction():
                return fn(conn)

        return self._write(write)

    def _on(self, role: int, fn: Callable[..., _T], *args: Any) -> _T:
        """fn(*args) where queries run: in this greenlet, or on the threads for reads (role 0) or writes (1)."""
        if self._threads is None:
            return fn(*args)
        value, error = self._threads[role].apply(_quietly, (fn, args))
        if error is not None:
            raise error
        return cast(_T, value)  # no error: what fn returned

    def _write(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run a write on a writer connection; a PostgreSQL failure becomes a StoreError naming the database."""
        try:
            return cast(_T, self._on(1, self._with_connection, self._writes, fn, ()))  # what fn returned
        except psycopg.Error as exc:
            raise StoreError(self._describe(exc, "writing to")) from exc

    def _in_transaction(self, fn: Callable[[Reading], _T]) -> _T:
        """fn(db) in one write transaction (ListRows' writes)."""
        return self._transaction(lambda conn: fn(Reading(conn, POSTGRES)))

    def _reading(self, fn: Callable[[Reading], _T]) -> _T:
        """fn(db) on a reader connection (ListRows' reads)."""
        return self._read(lambda conn: fn(Reading(conn, POSTGRES)))

    @staticmethod
    def _with_connection(
        pool: ConnectionPool[psycopg.Connection[Any]], fn: Callable[..., _T], args: tuple[Any, ...]
    ) -> _T:
        """fn(conn, *args) with a connection of the pool."""
        with pool.connection() as conn:
            return fn(conn, *args)

    def _describe(self, exc: psycopg.Error, doing: str) -> str:
        """A failed read's or write's message: the database and PostgreSQL's reason."""
        return f"{doing} {self.name} failed: {self._scrub(exc)}"

    def _scrub(self, exc: BaseException) -> str:
        """An error's text, on one line, without the URL's password."""
        return _scrub(" ".join(str(exc).split()), self._url)

    def delete_batch(self, batch_id: str) -> bool:
        """Remove a batch, its URLs, its events and its chunks; False when there was no such batch."""

        def delete(conn: psycopg.Connection[Any]) -> bool:
            # The URL list, events and chunks go with the row (ON DELETE CASCADE).
            return conn.execute("DELETE FROM batches WHERE id = %s", (batch_id,)).rowcount > 0

        try:
            return self._write(delete)
        finally:
            self._forget_pages(batch_id)

    def writable(self) -> bool:
        """Whether PostgreSQL takes writes right now (reachable, not a standby, not read-only)."""

        def probe(conn: psycopg.Connection[Any]) -> bool:
            sql = "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'"
            row = conn.execute(sql).fetchone()
            return bool(row and row[0])

        try:
            return self._write(probe)
        except StoreError:
            return False

    def close(self, timeout: float = 10) -> None:
        """Commit what is buffered (within `timeout` s; one last try while commits fail), then close every connection."""
        self._stop_writing(timeout)
        self._on(1, self._reads.close)
        self._on(1, self._writes.close)
        if self._threads is not None:
            for threads in self._threads:
                threads.kill()

    # -- reads -------------------------------------------------------------------------------

    def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        """fn(conn, *args) on a reader connection; StoreError when PostgreSQL fails it."""
        try:
            return cast(_T, self._on(0, self._with_connection, self._reads, fn, args))  # what fn returned
        except psycopg.Error as exc:
            raise StoreError(self._describe(exc, "reading")) from exc

    @staticmethod
    def _read_batch(conn: psycopg.Connection[Any], batch_id: str) -> BatchRecord | None:
        """get_batch's query."""
        row = conn.execute(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = %s", (batch_id,)).fetchone()
        return None if row is None else _record(row)

    def list_batches(self, limit: int, before: int | None = None) -> list[BatchRecord]:
        """Batches newest first, without result rows; `before` is a cursor (num)."""

        def read(conn: psycopg.Connection[Any]) -> list[BatchRecord]:
            where, args = ("WHERE num < %s", (before, limit)) if before else ("", (limit,))
            sql = f"SELECT {BATCH_COLUMNS} FROM batches {where} ORDER BY num DESC LIMIT %s"
            return [_record(r) for r in conn.execute(sql, args)]

        return self._read(read)

    def recent_list_runs(self, list_ids: Sequence[str], per: int) -> list[BatchRecord]:
        """The last `per` runs of each of the lists, in one query (through batches_by_list), newest first."""

        def read(conn: psycopg.Connection[Any]) -> list[BatchRecord]:
            marks = ", ".join(["%s"] * len(list_ids))
            query = RECENT_LIST_RUNS.format(marks=marks).replace("?", "%s")
            sql = f"SELECT {BATCH_COLUMNS} FROM batches WHERE id IN ({query}) ORDER BY num DESC"
            return [_record(r) for r in conn.execute(sql, (*list_ids, per))]

        return self._read(read) if list_ids else []

    def unfinished_batches(self) -> list[BatchRecord]:
        """Batches left queued or running, oldest first."""

        def read(conn: psycopg.Connection[Any]) -> list[BatchRecord]:
            sql = f"SELECT {BATCH_COLUMNS} FROM batches WHERE status IN ('queued', 'running') ORDER BY num"
            return [_record(r) for r in conn.execute(sql)]

        return self._read(read)

    def result_pages(
        self, batch_id: str, outcome: str | None = None, extract: tuple[tuple[str, ...], ...] = ()
    ) -> Iterator[tuple[bytes, ...]]:
        """Every result of a batch in index order, a page of UTF-8 texts per read, each a line a result (see
        SQLiteStore.result_pages): EXPORT_SPAN URL indexes a read, the next read running while the caller
        handles this page, a span without results yielding no page."""
        sqls = (_span_query(extract, outcome), _span_query((), outcome))
        columns = max(1, len(extract))
        total = self._read(self._read_total, batch_id)
        start = 0
        ahead = self._read_ahead(self._read_span, sqls, columns, batch_id, start, EXPORT_SPAN) if total else None
        while ahead is not None:
            page = ahead()
            start += EXPORT_SPAN
            if start < total:
                ahead = self._read_ahead(self._read_span, sqls, columns, batch_id, start, start + EXPORT_SPAN)
            else:
                ahead = None
            if page[0] is not None:
                gevent.sleep(0)  # a turn for every other greenlet between pages: a download never holds the hub long
                yield cast(tuple[bytes, ...], page)  # a span with results has every column

    @staticmethod
    def _read_total(conn: psycopg.Connection[Any], batch_id: str) -> int:
        """How many URLs a batch has (0 when there is no such batch)."""
        row = conn.execute("SELECT total FROM batches WHERE id = %s", (batch_id,)).fetchone()
        return 0 if row is None else int(row[0])

    @classmethod
    def _read_span(
        cls, conn: psycopg.Connection[Any], sqls: tuple[str, str], columns: int, batch_id: str, lo: int, hi: int
    ) -> tuple[bytes | None, ...]:
        """One read of result_pages: the results of URL indexes lo to hi - 1 (None for each column without any).

        `sqls`: the span's query, and the same without extraction. A row PostgreSQL cannot read as JSON (NaN, a
        lone surrogate) fails the read: the span is read again in halves, down to that row, whose stored text
        then stands in each column (as SQLite's store hands it over).
        """
        try:
            row = conn.execute(sqls[0], (batch_id, lo, hi)).fetchone()
        except psycopg.DataError:
            if hi - lo == 1:
                found = conn.execute(sqls[1], (batch_id, lo, hi)).fetchone()
                row = (found[0] if found else None,) * columns
            else:
                middle = (lo + hi) // 2
                first = cls._read_span(conn, sqls, columns, batch_id, lo, middle)
                rest = cls._read_span(conn, sqls, columns, batch_id, middle, hi)
                return tuple(
                    b"\n".join(part for part in parts if part is not None) or None for parts in zip(first, rest)
                )
        return tuple(None if text is None else text.encode() for text in row or (None,) * columns)

    def _read_ahead(self, fn: Callable[..., _T], *args: Any) -> Callable[[], _T]:
        """Start fn(conn, *args) in a greenlet now (psycopg yields while PostgreSQL works); call what this
        returns to wait for its value (StoreError when PostgreSQL fails it)."""
        reading = gevent.spawn(self._quietly, fn, args)

        def value() -> _T:
            result, error = reading.get()
            if error is not None:
                raise error
            return cast(_T, result)  # no error: what fn returned

        return value

    def _quietly(self, fn: Callable[..., _T], args: tuple[Any, ...]) -> tuple[_T | None, StoreError | None]:
        """self._read(fn, *args), its StoreError returned rather than raised (gevent would print it)."""
        try:
            return self._read(fn, *args), None
        except StoreError as exc:
            return None, exc
