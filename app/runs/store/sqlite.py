"""The SQLite store: batches and their event log in one file.

Events are the one source of truth: a batch's results are its `result` events, and its status is
what its last `batch` event said. Writes are buffered and committed by one writer thread every
`flush_interval` seconds (or `flush_rows` events), so a 10,000-URL batch is a few dozen commits,
and SQLite never runs on the gevent hub (writer.EventWriter gathers and retries them). Reads run on
a small pool of threads.

When commits fail (a full disk), the events stay in memory, oldest first, and are retried in groups
of at most flush_rows with a growing pause; fault() says so until a commit works again. A database
found damaged (SQLite's CORRUPT or NOTADB, from any read or write, or from the periodic quick_check)
stays reported until restart. A file that cannot be a usable database refuses to open (StoreOpenError).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import gevent
import gevent.monkey
from gevent.queue import Queue
from gevent.threadpool import ThreadPool

from ...core.clock import now_iso
from ...core.jsonutil import compact_json
from ...core.results import FINAL_STATUSES
from ..events import Event
from .base import BatchRecord, StoreError, StoreFault, StoreOpenError
from .lists import ListRows
from .outbox import Outbox, enqueue
from .queries import OUTCOME_TERMS, SQLITE, Reading
from .reads import StoreReads
from .rows import (
    APPLY_BATCH_EVENT,
    BATCH_COLUMNS,
    RECENT_LIST_RUNS,
    EventRow,
    batch_event_args,
    insert_events,
    json_array,
    record_of,
)
from .schema import SCHEMA, check_file, connect, is_damage, is_full, migrate, open_error
from .writer import EventWriter

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# One row of the events table, in EVENT_COLUMNS' order: idx to bytes are set for results only.

_os_lock = gevent.monkey.get_original("_thread", "allocate_lock")  # blocks the thread, not just the greenlet
READ_START_WAIT = 0.002  # seconds the hub waits at most for a reader thread to begin a read ahead
EXPORT_SPAN = 1000  # URL indexes in each read of result_pages: a few hundred KiB of text, a few ms of SQLite
# result_pages' extraction of a group of paths (the ? after data), and the same for a span holding a text SQLite
# cannot read as JSON, that hands over the text instead (json_valid in every row would cost a second reading).
_EXTRACT = ("json_extract(data{})", "CASE WHEN json_valid(data) THEN json_extract(data{}) ELSE data END")
BLOB_PIECE = 1 << 20  # bytes of a batch's URL list written into its row at a time


def _quietly(fn: Callable[..., _T], args: tuple[Any, ...]) -> tuple[_T | None, sqlite3.Error | None]:
    """fn(*args) on a pool thread, a SQLite error returned rather than raised (gevent's pool would print it)."""
    try:
        return fn(*args), None
    except sqlite3.Error as exc:
        return None, exc


def _apply(pool: ThreadPool, fn: Callable[..., _T], args: tuple[Any, ...] = ()) -> _T:
    """fn(*args) on one of the pool's threads; its SQLite error is raised here, once, for the caller to report."""
    value, error = pool.apply(_quietly, (fn, args))
    if error is not None:
        raise error
    return cast(_T, value)  # no error: value is what fn returned


def _span_query(extract: tuple[tuple[str, ...], ...], outcome: str | None, form: str) -> str:
    """result_pages' query of a span of URL indexes: the stored texts, or each group of paths extracted in
    `form`, each column joined a line a result by SQLite (the GIL released while it reads the whole span)
    and handed over as UTF-8 bytes (no str is made of them)."""
    columns = [form.format(", ?" * len(paths)) for paths in extract] or ["data"]
    # The outcomes of the results pages (queries.OUTCOME_TERMS); one not listed is a KeyError, never no filter.
    chosen = "".join(f" AND {term}" for term in OUTCOME_TERMS[outcome]) if outcome else ""
    return (
        f"SELECT {', '.join(f'CAST(group_concat(x{i}, char(10)) AS BLOB)' for i in range(len(columns)))} FROM"
        f" (SELECT {', '.join(f'{column} AS x{i}' for i, column in enumerate(columns))} FROM events"
        f" WHERE batch_id = ? AND type = 'result' AND idx >= ? AND idx < ?{chosen} ORDER BY idx)"
    )


class SQLiteStore(EventWriter, StoreReads, ListRows, Outbox):
    """The embedded store: one SQLite file in the data folder."""

    _dialect = SQLITE
    _log = log

    def __init__(
        self, path: str, flush_interval: float = 0.1, flush_rows: int = 500, readers: int = 4, check_every: float = 0
    ):
        """Open (or create) the database; StoreOpenError, naming the file, when it cannot be used.

        check_every: seconds between background integrity checks (check_integrity), the first at once; 0: none.
        """
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        except OSError as exc:
            raise StoreOpenError(f"the folder of the database {path} cannot be created ({exc.strerror})") from None
        check_file(path)
        self.path = path
        self._writer_thread = ThreadPool(1)
        self._reader_threads = ThreadPool(readers)
        self._readers: Queue[sqlite3.Connection] = Queue()
        try:
            self._writer = connect(path)
            self._writer.executescript(SCHEMA)
            migrate(self._writer)
            for _ in range(readers):
                self._readers.put(connect(path))
        except sqlite3.Error as exc:
            raise open_error(path, exc) from None
        EventWriter.__init__(self, flush_interval, flush_rows)
        StoreReads.__init__(self)
        self._damaged: StoreFault | None = None  # set once SQLite calls the file damaged; kept until restart
        self._checking: sqlite3.Connection | None = None  # the integrity check's connection while it runs
        self._checker = gevent.spawn(self._check_loop, check_every) if check_every else None

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
        url_list = json_array(urls)

        def write() -> None:
            with self._writer:
                self._writer.execute("BEGIN")
                self._writer.execute(
                    "INSERT INTO batches (id, name, status, created_at, options, total, parent_id, source, list_id)"
                    " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                    (
                        batch_id,
                        name,
                        created_at,
                        json.dumps(options),
                        len(urls),
                        parent_id,
                        _json_or_null(source),
                        list_id,
                    ),
                )
                # A blob of zeros, then written a piece at a time: bound whole, SQLite would copy the list twice.
                row = cast(
                    int,  # an INSERT sets it
                    self._writer.execute(
                        "INSERT INTO url_lists (batch_id, urls) VALUES (?, zeroblob(?))", (batch_id, len(url_list))
                    ).lastrowid,
                )
                with self._writer.blobopen("url_lists", "urls", row) as blob, memoryview(url_list) as view:
                    for start in range(0, len(view), BLOB_PIECE):
                        blob.write(view[start : start + BLOB_PIECE])
                if row_specs is not None:
                    self._writer.execute(
                        "INSERT INTO row_specs (batch_id, specs) VALUES (?, ?)", (batch_id, compact_json(row_specs))
                    )

        self._write(write)

    def _in_transaction(self, fn: Callable[[Reading], _T]) -> _T:
        """fn(db) in one write transaction (ListRows' writes)."""
        return self._transaction(lambda conn: fn(Reading(conn, SQLITE)))

    def _reading(self, fn: Callable[[Reading], _T]) -> _T:
        """fn(db) on a reader thread (ListRows' reads)."""
        return self._read(lambda conn: fn(Reading(conn, SQLITE)))

    def _write(self, fn: Callable[[], _T]) -> _T:
        """Run a write on the writer thread; a SQLite failure becomes a StoreError naming the file."""
        try:
            return _apply(self._writer_thread, fn)
        except sqlite3.Error as exc:
            self._note(exc)
            raise StoreError(self._describe(exc, "writing to")) from exc

    def _describe(self, exc: sqlite3.Error, doing: str) -> str:
        """A failed read's or write's message: the file and SQLite's reason, and what it means when it is known."""
        if is_damage(exc):
            return f"the database {self.path} is damaged ({exc}); /readyz says so until it is replaced"
        if is_full(exc):
            return f"{doing} {self.path} failed: the disk is full ({exc})"
        return f"{doing} {self.path} failed: {exc}"

    def _note(self, exc: BaseException) -> None:
        """Remember it if SQLite called the file damaged."""
        if is_damage(exc):
            self._mark_damaged(str(exc))

    def _mark_damaged(self, error: str) -> None:
        """Report the database as damaged from now until restart (the first finding is kept)."""
        if self._damaged is None:
            self._damaged = StoreFault(
                "damaged",
                error,
                now_iso(),
                f"the database {self.path} is damaged ({error}): stop the server, move the file away or restore a "
                "backup (sqlite3's .recover saves what is still readable)",
            )
            log.error("store: %s", self._damaged.message)

    def fault(self) -> StoreFault | None:
        """Why the store should not take new batches now: damaged (until restart), or failing commits; None when fine."""
        return self._damaged or self._failing

    @property
    def _target(self) -> str:
        """What the writer's messages name: the file."""
        return self.path

    def _commit(self, events: list[Event], rows: list[EventRow]) -> None:
        """Commit a group of events on the writer thread (EventWriter's flush loop calls it)."""
        _apply(self._writer_thread, self._write_events, (events, rows))

    def _commit_fault(self, exc: Exception) -> tuple[str, str] | None:
        """What a failed commit means (EventWriter): SQLite's reason and what to do; damage is noted."""
        if not isinstance(exc, sqlite3.Error):
            return None
        self._note(exc)
        return str(exc), "free some disk space" if is_full(exc) else "check the disk, permissions and the server log"

    def _commit_failed(self, exc: Exception) -> None:
        """EventWriter's handling of a failed commit, then room made if the disk is full."""
        super()._commit_failed(exc)
        if isinstance(exc, sqlite3.Error) and is_full(exc):
            # A failed transaction leaves the WAL file as large as it grew; copying the WAL into the database and
            # truncating it can give that space back. Best effort: while the disk is full it may fail too.
            try:
                _apply(self._writer_thread, self._writer.execute, ("PRAGMA wal_checkpoint(TRUNCATE)",))
            except sqlite3.Error:
                pass

    def _write_events(self, events: list[Event], rows: list[EventRow]) -> None:
        """Commit a group of events (`rows` is event_rows(events), made on the hub) in one transaction,
        applying batch state changes to their rows."""
        with self._writer:
            self._writer.execute("BEGIN")
            insert_events(self._writer, rows)
            for e in events:
                if e.type == "batch":
                    self._apply_batch_event(e)

    def _apply_batch_event(self, event: Event) -> None:
        """Record a batch's new status (and its final summary) on its row; a final one writes its deliveries."""
        self._writer.execute(APPLY_BATCH_EVENT, batch_event_args(event))
        if event.data["status"] in FINAL_STATUSES:
            row = self._writer.execute("SELECT options FROM batches WHERE id = ?", (event.batch_id,)).fetchone()
            enqueue(self._writer.execute, str, event.batch_id, row[0] if row else None)

    def _transaction(self, fn: Callable[[Any], _T]) -> _T:
        """fn(conn) in one write transaction on the writer thread (the outbox's writes)."""

        def write() -> _T:
            with self._writer:
                self._writer.execute("BEGIN")
                return fn(self._writer)

        return self._write(write)

    def delete_batch(self, batch_id: str) -> bool:
        """Remove a batch, its URLs and its events; False when there was no such batch."""

        def delete() -> bool:
            with self._writer:
                self._writer.execute("BEGIN")
                gone = self._writer.execute("DELETE FROM batches WHERE id = ?", (batch_id,)).rowcount
                self._writer.execute("DELETE FROM url_lists WHERE batch_id = ?", (batch_id,))
                self._writer.execute("DELETE FROM row_specs WHERE batch_id = ?", (batch_id,))
                self._writer.execute("DELETE FROM events WHERE batch_id = ?", (batch_id,))
                self._writer.execute("DELETE FROM deliveries WHERE batch_id = ?", (batch_id,))
            return gone > 0

        try:
            return self._write(delete)
        finally:
            self._forget_pages(batch_id)

    def writable(self) -> bool:
        """Whether a write transaction can be opened and committed right now."""

        def probe() -> bool:
            with self._writer:
                self._writer.execute("BEGIN IMMEDIATE")
            return True

        try:
            return _apply(self._writer_thread, probe)
        except sqlite3.Error as exc:
            self._note(exc)
            return False

    def close(self, timeout: float = 10) -> None:
        """Commit what is buffered (within `timeout` s; one last try while commits fail), then close every connection."""
        self._stop_writing(timeout)
        if self._checker is not None:
            checking = self._checking
            if checking is not None:
                checking.interrupt()  # a check of a large file would run on after the pool is gone
            self._checker.kill()
        self._writer_thread.apply(self._writer.close)
        while not self._readers.empty():
            self._readers.get().close()
        self._writer_thread.kill()
        self._reader_threads.kill()

    # -- integrity ---------------------------------------------------------------------------

    def _quick_check(self) -> list[tuple[str]]:
        """check_integrity's query, on a connection of its own that close() can interrupt."""
        conn = self._checking = sqlite3.connect(self.path, check_same_thread=False)
        try:
            return conn.execute("PRAGMA quick_check(1)").fetchall()
        finally:
            self._checking = None
            conn.close()

    def _check_loop(self, every: float) -> None:
        """Run check_integrity now and then every `every` seconds."""
        while True:
            self.check_integrity()
            gevent.sleep(every)

    def check_integrity(self) -> bool:
        """PRAGMA quick_check on a reader thread, reading every page of the file; a problem it finds is
        reported as damage by fault(). False when there is one."""
        started = time.monotonic()
        try:
            problems = _apply(self._reader_threads, self._quick_check)
        except sqlite3.Error as exc:
            self._note(exc)
            log.error("store: the integrity check of %s failed: %s", self.path, exc)
            return False
        if problems != [("ok",)]:
            self._mark_damaged("quick_check: " + " ".join(problems[0][0].split()))
            return False
        log.info("store: integrity check of %s passed in %.1f s", self.path, time.monotonic() - started)
        return True

    # -- reads -------------------------------------------------------------------------------

    def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a read on a reader thread with a connection of its own; StoreError when SQLite fails it."""
        conn = self._readers.get()
        try:
            return _apply(self._reader_threads, fn, (conn,) + args)
        except sqlite3.Error as exc:
            self._note(exc)
            raise StoreError(self._describe(exc, "reading")) from exc
        finally:
            self._readers.put(conn)

    @staticmethod
    def _read_batch(conn: sqlite3.Connection, batch_id: str) -> BatchRecord | None:
        """get_batch's query."""
        row = conn.execute(f"SELECT {BATCH_COLUMNS} FROM batches b WHERE id = ?", (batch_id,)).fetchone()
        return None if row is None else record_of(row)

    def list_batches(self, limit: int, before: int | None = None) -> list[BatchRecord]:
        """Batches newest first, without result rows; `before` is a cursor (num)."""

        def read(conn: sqlite3.Connection) -> list[BatchRecord]:
            where, args = ("WHERE num < ?", (before, limit)) if before else ("", (limit,))
            return [
                record_of(r)
                for r in conn.execute(f"SELECT {BATCH_COLUMNS} FROM batches b {where} ORDER BY num DESC LIMIT ?", args)
            ]

        return self._read(read)

    def recent_list_runs(self, list_ids: Sequence[str], per: int) -> list[BatchRecord]:
        """The last `per` runs of each of the lists, in one query (through batches_by_list), newest first."""

        def read(conn: sqlite3.Connection) -> list[BatchRecord]:
            marks = ", ".join("?" * len(list_ids))
            sql = f"SELECT {BATCH_COLUMNS} FROM batches b WHERE b.id IN ({RECENT_LIST_RUNS.format(marks=marks)})"
            return [record_of(r) for r in conn.execute(sql + " ORDER BY num DESC", (*list_ids, per))]

        return self._read(read) if list_ids else []

    def unfinished_batches(self) -> list[BatchRecord]:
        """Batches a previous process left queued or running, oldest first."""

        def read(conn: sqlite3.Connection) -> list[BatchRecord]:
            return [
                record_of(r)
                for r in conn.execute(
                    f"SELECT {BATCH_COLUMNS} FROM batches b WHERE status IN ('queued', 'running') ORDER BY num"
                )
            ]

        return self._read(read)

    def result_pages(
        self, batch_id: str, outcome: str | None = None, extract: tuple[tuple[str, ...], ...] = ()
    ) -> Iterator[tuple[bytes, ...]]:
        """Every result of a batch in index order, a page of UTF-8 texts per read, each a line a result (for
        exports).

        A page holds the results' stored JSON texts or, for each group of two or more JSON paths in
        `extract`, json_extract of them: the JSON text of an array of those values, strings and numbers
        written as stored (or, where SQLite cannot read a stored text as JSON, such as one with the NaN
        Python's json writes, that text). Each read covers EXPORT_SPAN URL indexes, so it takes bounded
        time whatever the outcome filter skips, and the next read runs on a reader thread while the caller
        handles this page. A span without results yields no page.
        """
        queries = tuple(_span_query(extract, outcome, form) for form in _EXTRACT)
        paths = tuple(itertools.chain.from_iterable(extract))
        total = self._read(self._read_total, batch_id)
        start = 0
        ahead = self._read_ahead(self._read_span, queries, (*paths, batch_id, start, EXPORT_SPAN)) if total else None
        while ahead is not None:
            page = ahead()
            start += EXPORT_SPAN
            if start < total:
                ahead = self._read_ahead(self._read_span, queries, (*paths, batch_id, start, start + EXPORT_SPAN))
            else:
                ahead = None
            if page[0] is not None:
                gevent.sleep(0)  # a turn for every other greenlet between pages: a download never holds the hub long
                yield page

    @staticmethod
    def _read_total(conn: sqlite3.Connection, batch_id: str) -> int:
        """How many URLs a batch has (0 when there is no such batch)."""
        row = conn.execute("SELECT total FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return 0 if row is None else int(row[0])

    @staticmethod
    def _read_span(conn: sqlite3.Connection, queries: tuple[str, ...], args: tuple[Any, ...]) -> tuple[bytes, ...]:
        """One read of result_pages: a span of URL indexes, through results_by_index (None for each column when
        the span holds no result)."""
        try:
            return tuple(conn.execute(queries[0], args).fetchone())
        except sqlite3.OperationalError as exc:
            if str(exc) != "malformed JSON":
                raise
            return tuple(conn.execute(queries[1], args).fetchone())  # a text in the span SQLite cannot read

    def _read_ahead(self, fn: Callable[..., _T], *args: Any) -> Callable[[], _T]:
        """Start fn(conn, *args) on a reader thread now, while the caller works on; call what this returns to
        wait for its value (StoreError when SQLite fails it). The connection goes back to the pool as soon as
        the read ends, even if no one asks for its value."""
        conn = self._readers.get()
        started = _os_lock()
        started.acquire()

        def read(*args: Any) -> _T:
            started.release()
            return fn(*args)

        reading = self._reader_threads.spawn(_quietly, read, (conn, *args))
        reading.rawlink(lambda _: self._readers.put(conn))
        # The thread needs the GIL to begin; a caller that goes on computing would hold it for up to the
        # interpreter's switch interval (5 ms), so the read would start late. Waiting on an OS lock lets the
        # thread take the GIL now and let it go again in SQLite; the bound keeps the hub moving when every
        # reader thread is busy.
        started.acquire(timeout=READ_START_WAIT)

        def value() -> _T:
            result, error = cast(tuple[_T | None, sqlite3.Error | None], reading.get())  # what _quietly returns
            if error is not None:
                self._note(error)
                raise StoreError(self._describe(error, "reading")) from error
            return cast(_T, result)  # no error: what fn returned

        return value


def _json_or_null(value: dict[str, Any] | None) -> str | None:
    """A JSON column's text, or NULL."""
    return None if value is None else json.dumps(value)
