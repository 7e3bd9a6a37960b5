"""Durable storage of batches and their event log, in SQLite by default.

Events are the one source of truth: a batch's results are its `result` events, and its status is
what its last `batch` event said. Writes are buffered and committed by one writer thread every
`flush_interval` seconds (or `flush_rows` events), so a 10,000-URL batch is a few dozen commits,
and SQLite never runs on the gevent hub. Reads run on a small pool of threads.
"""
from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import gevent
from gevent.event import AsyncResult, Event as Signal
from gevent.queue import Queue
from gevent.threadpool import ThreadPool

from .events import Event, compact_json
from .model import FINAL_STATUSES
from .stats import Row

log = logging.getLogger(__name__)

_NOT_READ = object()  # what a shared read hands its waiters when it failed
REPLAY_CACHE_PAGES = 16  # full pages of stored events kept for viewers replaying the same batch at once

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    options TEXT NOT NULL,
    total INTEGER NOT NULL,
    parent_id TEXT,
    summary TEXT
);
-- A batch's URLs in submission order, as one JSON array: one row to write when the batch is created,
-- not one per URL (a 5,000-URL batch: ~1 ms instead of 6-10 ms while its fetches wait; bench/RESULTS.md).
CREATE TABLE IF NOT EXISTS url_lists (
    batch_id TEXT PRIMARY KEY,
    urls TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    batch_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    at TEXT NOT NULL,
    idx INTEGER,
    ok INTEGER,
    status_code INTEGER,
    error_kind TEXT,
    total_ms REAL,
    bytes INTEGER,
    data TEXT NOT NULL,
    PRIMARY KEY (batch_id, seq)
) WITHOUT ROWID;
-- One final result per URL, enforced by the database itself.
CREATE UNIQUE INDEX IF NOT EXISTS results_by_index ON events (batch_id, idx) WHERE type = 'result';
"""


@dataclass
class BatchRecord:
    """A batch as stored: its row and the sequence number of its newest committed event."""

    id: str
    num: int
    name: str
    status: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    options: dict[str, Any]
    total: int
    parent_id: str | None
    summary: dict[str, Any] | None
    last_seq: int


class Store(Protocol):
    """What the engine, the API and the stream need from storage; SQLiteStore is the real one."""

    def create_batch(self, batch_id: str, name: str, options: dict[str, Any], urls: list[str],
                     created_at: str, parent_id: str | None = None) -> None: ...
    def extend(self, events: list[Event]) -> None: ...
    def flush(self, timeout: float | None = None) -> bool: ...
    def get_batch(self, batch_id: str, recent: bool = False) -> BatchRecord | None: ...
    def list_batches(self, limit: int, before: int | None = None) -> list[BatchRecord]: ...
    def unfinished_batches(self) -> list[BatchRecord]: ...
    def urls(self, batch_id: str) -> list[str]: ...
    def result_rows(self, batch_id: str) -> dict[int, Row]: ...
    def results(self, batch_id: str, after: int = -1, limit: int = 100,
                outcome: str | None = None) -> list[dict[str, Any]]: ...
    def events(self, batch_id: str, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]: ...
    def read_mark(self) -> int: ...
    def stored_events(self, batch_id: str, after: int = 0, limit: int = 1000,
                      mark: int | None = None) -> list[Event]: ...
    def observe_writes(self, observer: Callable[[float, int], None]) -> None: ...
    def observe_commits(self, observer: Callable[[list[Event]], None]) -> None: ...
    def delete_batch(self, batch_id: str) -> bool: ...
    def writable(self) -> bool: ...
    def count_by_status(self) -> dict[str, int]: ...
    def close(self) -> None: ...


def _connect(path: str) -> sqlite3.Connection:
    """Open a connection in WAL mode; NORMAL sync survives a killed process (not a power cut)."""
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database made by an earlier version up to SCHEMA: its per-URL `urls` rows become url_lists."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'urls'").fetchone() is None:
        return
    moved = 0
    with conn:
        conn.execute("BEGIN")
        rows = conn.execute("SELECT batch_id, url FROM urls ORDER BY batch_id, idx")
        # One batch's URLs at a time, in index order (the primary key's order): memory holds one list.
        for batch_id, group in itertools.groupby(rows, key=lambda row: row[0]):
            conn.execute("INSERT OR IGNORE INTO url_lists (batch_id, urls) VALUES (?, ?)",
                         (batch_id, compact_json([url for _, url in group])))
            moved += 1
        conn.execute("DROP TABLE urls")
    log.info("store: moved the URLs of %d batches to url_lists", moved)


def _record(row: sqlite3.Row | tuple) -> BatchRecord:
    """Turn a batches row (with last_seq appended) into a record."""
    (num, id_, name, status, created, started, finished, options, total, parent, summary, last_seq) = row
    return BatchRecord(id=id_, num=num, name=name, status=status, created_at=created, started_at=started,
                       finished_at=finished, options=json.loads(options), total=total, parent_id=parent,
                       summary=json.loads(summary) if summary else None, last_seq=last_seq or 0)


_EVENT_COLUMNS = ("batch_id", "seq", "type", "at", "idx", "ok", "status_code", "error_kind", "total_ms", "bytes", "data")
MAX_PARAMETERS = 8192  # per statement; fewer if this SQLite allows fewer (999 before 3.32, 32,766 since)


@functools.lru_cache(maxsize=16)
def _insert_events_sql(rows: int) -> str:
    """INSERT OR IGNORE of `rows` events in one statement."""
    one = "(" + ", ".join("?" * len(_EVENT_COLUMNS)) + ")"
    return f"INSERT OR IGNORE INTO events ({', '.join(_EVENT_COLUMNS)}) VALUES " + ", ".join([one] * rows)


def _insert_events(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """Insert event rows a chunk per statement: bound in C, then run by SQLite with the GIL released.

    One statement per row would take the GIL back from the hub after every row, and one JSON text
    unpacked by SQLite costs twice the CPU (bench/RESULTS.md). Each chunk is padded to a power of two
    with copies of its last row, which INSERT OR IGNORE drops, so whatever the group sizes only a
    few statements exist and sqlite3 keeps them prepared.
    """
    limit = min(MAX_PARAMETERS, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    per = 1 << (limit // len(_EVENT_COLUMNS)).bit_length() - 1
    for start in range(0, len(rows), per):
        chunk = rows[start:start + per]
        size = 1 << (len(chunk) - 1).bit_length()
        chunk += [chunk[-1]] * (size - len(chunk))
        conn.execute(_insert_events_sql(size), list(itertools.chain.from_iterable(chunk)))


def _event_rows(events: list[Event]) -> list[tuple]:
    """The events table's row for each event: indexed columns of a result, then the payload's JSON."""
    rows = []
    for e in events:
        if e.type == "result":
            # A stats Row holds (ok, status_code, error_kind, total_ms, bytes): the columns' order; ok binds as 1/0.
            rows.append((e.batch_id, e.seq, e.type, e.at, e.data["index"], *e.row, e.data_json))
        else:
            rows.append((e.batch_id, e.seq, e.type, e.at, None, None, None, None, None, None, e.data_json))
    return rows


_BATCH_COLUMNS = ("num, id, name, status, created_at, started_at, finished_at, options, total, parent_id, summary,"
                  " (SELECT MAX(seq) FROM events e WHERE e.batch_id = b.id)")
_ROW_QUERY = "SELECT idx, ok, status_code, error_kind, total_ms, bytes FROM events WHERE batch_id = ? AND type = 'result'"


class SQLiteStore:
    """The embedded store: one SQLite file in the data folder."""

    def __init__(self, path: str, flush_interval: float = 0.1, flush_rows: int = 500, readers: int = 4):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._flush_interval = flush_interval
        self._flush_rows = flush_rows
        self._writer_thread = ThreadPool(1)
        self._reader_threads = ThreadPool(readers)
        self._writer = _connect(path)
        self._writer.executescript(SCHEMA)
        _migrate(self._writer)
        self._readers: Queue = Queue()
        for _ in range(readers):
            self._readers.put(_connect(path))
        self._buffer: list[Event] = []
        self._writing: list[Event] = []
        self._wake = Signal()
        self._hurry = Signal()  # set by flush() or a full group: commit now, not at the end of flush_interval
        self._idle = Signal()
        self._idle.set()
        self._closed = False
        self._write_observers: list[Callable[[float, int], None]] = []
        self._commit_observers: list[Callable[[list[Event]], None]] = []
        # (batch id, after, limit) -> a full page of stored events. Committed events never change (only
        # delete_batch removes them), so a page holding `limit` events is final and can serve every viewer.
        self._pages: OrderedDict[tuple[str, int, int], list[Event]] = OrderedDict()
        self._reads: dict[tuple, tuple[int, AsyncResult]] = {}  # shared reads in flight: key -> (serial, result)
        self._read_serial = 0
        self._flusher = gevent.spawn(self._flush_loop)

    # -- writes ------------------------------------------------------------------------------

    def create_batch(self, batch_id: str, name: str, options: dict[str, Any], urls: list[str],
                     created_at: str, parent_id: str | None = None) -> None:
        """Store a new batch and its URLs, committed before this returns."""
        url_list = compact_json(urls)

        def write() -> None:
            with self._writer:
                self._writer.execute("BEGIN")
                self._writer.execute(
                    "INSERT INTO batches (id, name, status, created_at, options, total, parent_id)"
                    " VALUES (?, ?, 'queued', ?, ?, ?, ?)",
                    (batch_id, name, created_at, json.dumps(options), len(urls), parent_id))
                self._writer.execute("INSERT INTO url_lists (batch_id, urls) VALUES (?, ?)", (batch_id, url_list))
        self._writer_thread.apply(write)

    def extend(self, events: list[Event]) -> None:
        """Buffer a batch's new events for the next commit; never blocks."""
        if self._closed:
            raise RuntimeError(f"store is closed; events {events[0].seq}-{events[-1].seq} of batch "
                               f"{events[0].batch_id} were not saved")
        for event in events:
            event.data_json  # noqa: B018 - encode here, on the hub, once: the writer thread and every viewer reuse it
        self._buffer.extend(events)
        self._idle.clear()
        self._wake.set()
        if len(self._buffer) >= self._flush_rows:
            self._hurry.set()  # a full group: commit it now rather than at the end of the interval

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event appended so far is committed, without waiting out the gathering; False on timeout.

        flush(0) asks for the commit and returns at once, without yielding to other greenlets.
        """
        if self._buffer:
            self._hurry.set()
            self._wake.set()
        if timeout == 0:
            return self._idle.is_set()
        return self._idle.wait(timeout)

    def _flush_loop(self) -> None:
        """Commit buffered events in groups: wait for the first, gather for flush_interval, write."""
        while True:
            self._wake.wait()
            self._wake.clear()
            if not self._buffer:
                if self._closed:
                    return
                continue
            if len(self._buffer) < self._flush_rows and not self._closed:
                # Gather a group of events, unless someone waits in flush() (a batch's end, a shutdown).
                self._hurry.wait(self._flush_interval)
            self._hurry.clear()
            self._writing, self._buffer = self._buffer, []
            started = time.perf_counter()
            try:
                self._writer_thread.apply(self._write_events, (self._writing, _event_rows(self._writing)))
            except Exception:  # noqa: BLE001 - keep the events and try again rather than lose them
                log.exception("store: writing %d events to %s failed; retrying in 1 s", len(self._writing), self.path)
                self._buffer = self._writing + self._buffer
                self._writing = []
                gevent.sleep(1)
                self._wake.set()
                continue
            self._observe_write(time.perf_counter() - started, len(self._writing))
            committed, self._writing = self._writing, []
            for observer in self._commit_observers:
                observer(committed)  # on the hub, in commit order: live viewers see only what is stored
            if self._buffer:
                self._wake.set()
            else:
                self._idle.set()

    def observe_writes(self, observer: Callable[[float, int], None]) -> None:
        """Call `observer(seconds, events)` after each committed group of events (metrics); it must not block."""
        self._write_observers.append(observer)

    def observe_commits(self, observer: Callable[[list[Event]], None]) -> None:
        """Call `observer(events)` on the hub with each group of events once committed, in order; it must not block."""
        self._commit_observers.append(observer)

    def _observe_write(self, seconds: float, events: int) -> None:
        """Tell the observers about one commit; a broken observer is logged and never stops the writer."""
        for observer in self._write_observers:
            try:
                observer(seconds, events)
            except Exception:  # noqa: BLE001 - metrics must never cost us events
                log.exception("store: write observer %r failed", observer)

    def _write_events(self, events: list[Event], rows: list[tuple]) -> None:
        """Commit a group of events (`rows` is _event_rows(events), made on the hub) in one transaction,
        applying batch state changes to their rows."""
        with self._writer:
            self._writer.execute("BEGIN")
            _insert_events(self._writer, rows)
            for e in events:
                if e.type == "batch":
                    self._apply_batch_event(e)

    def _apply_batch_event(self, event: Event) -> None:
        """Record a batch's new status (and its final summary) on its row."""
        d = event.data
        summary = None
        if d["status"] in FINAL_STATUSES and "counts" in d:
            summary = json.dumps({"counts": d["counts"], "stats": d.get("stats")})
        self._writer.execute(
            "UPDATE batches SET status = ?, started_at = COALESCE(started_at, ?),"
            " finished_at = COALESCE(?, finished_at), summary = COALESCE(?, summary) WHERE id = ?",
            (d["status"], d.get("started_at"), d.get("finished_at"), summary, event.batch_id))

    def delete_batch(self, batch_id: str) -> bool:
        """Remove a batch, its URLs and its events; False when there was no such batch."""
        def delete() -> bool:
            with self._writer:
                self._writer.execute("BEGIN")
                gone = self._writer.execute("DELETE FROM batches WHERE id = ?", (batch_id,)).rowcount
                self._writer.execute("DELETE FROM url_lists WHERE batch_id = ?", (batch_id,))
                self._writer.execute("DELETE FROM events WHERE batch_id = ?", (batch_id,))
            return gone > 0
        try:
            return self._writer_thread.apply(delete)
        finally:
            for key in [key for key in self._pages if key[0] == batch_id]:
                del self._pages[key]

    def writable(self) -> bool:
        """Whether a write transaction can be opened and committed right now."""
        def probe() -> bool:
            with self._writer:
                self._writer.execute("BEGIN IMMEDIATE")
            return True
        try:
            return self._writer_thread.apply(probe)
        except sqlite3.Error:
            return False

    def close(self, timeout: float = 10) -> None:
        """Commit what is buffered, then close every connection."""
        self.flush(timeout)
        self._closed = True
        self._wake.set()
        self._flusher.join(timeout)
        self._writer_thread.apply(self._writer.close)
        while not self._readers.empty():
            self._readers.get().close()
        self._writer_thread.kill()
        self._reader_threads.kill()

    # -- reads -------------------------------------------------------------------------------

    def _read(self, fn, *args):
        """Run a read on a reader thread with a connection of its own."""
        conn = self._readers.get()
        try:
            return self._reader_threads.apply(fn, (conn,) + args)
        finally:
            self._readers.put(conn)

    def get_batch(self, batch_id: str, recent: bool = False) -> BatchRecord | None:
        """One batch, or None.

        `recent`: the caller can take the row as read a moment ago, so it joins a read of the same batch
        already running. 200 viewers joining a batch together then make a handful of reads, not 200
        queued on the reader threads (bench/RESULTS.md, section 11).
        """
        return self._shared_read(("batch", batch_id), 0 if recent else None, self._read_batch, batch_id)

    @staticmethod
    def _read_batch(conn: sqlite3.Connection, batch_id: str) -> BatchRecord | None:
        """get_batch's query."""
        row = conn.execute(f"SELECT {_BATCH_COLUMNS} FROM batches b WHERE id = ?", (batch_id,)).fetchone()
        return None if row is None else _record(row)

    def list_batches(self, limit: int, before: int | None = None) -> list[BatchRecord]:
        """Batches newest first, without result rows; `before` is a cursor (num)."""
        def read(conn: sqlite3.Connection) -> list[BatchRecord]:
            where, args = ("WHERE num < ?", (before, limit)) if before else ("", (limit,))
            return [_record(r) for r in conn.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches b {where} ORDER BY num DESC LIMIT ?", args)]
        return self._read(read)

    def count_by_status(self) -> dict[str, int]:
        """How many stored batches are in each status (one scan of the batches table, no events read)."""
        def read(conn: sqlite3.Connection) -> dict[str, int]:
            return dict(conn.execute("SELECT status, COUNT(*) FROM batches GROUP BY status").fetchall())
        return self._read(read)

    def unfinished_batches(self) -> list[BatchRecord]:
        """Batches a previous process left queued or running, oldest first."""
        def read(conn: sqlite3.Connection) -> list[BatchRecord]:
            return [_record(r) for r in conn.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches b WHERE status IN ('queued', 'running') ORDER BY num")]
        return self._read(read)

    def urls(self, batch_id: str) -> list[str]:
        """A batch's URLs in submission order."""
        def read(conn: sqlite3.Connection) -> list[str]:
            row = conn.execute("SELECT urls FROM url_lists WHERE batch_id = ?", (batch_id,)).fetchone()
            return [] if row is None else json.loads(row[0])
        return self._read(read)

    def result_rows(self, batch_id: str) -> dict[int, Row]:
        """The stored results of a batch by URL index (what a resumed batch must not fetch again)."""
        def read(conn: sqlite3.Connection) -> dict[int, Row]:
            return {idx: Row(bool(ok), sc, ek, ms, b or 0) for idx, ok, sc, ek, ms, b in
                    conn.execute(_ROW_QUERY, (batch_id,))}
        return self._read(read)

    def results(self, batch_id: str, after: int = -1, limit: int = 100,
                outcome: str | None = None) -> list[dict[str, Any]]:
        """A page of results by URL index; outcome 'ok' or 'failed' (anything not ok) filters."""
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            extra = {"ok": " AND ok = 1", "failed": " AND ok = 0"}.get(outcome or "", "")
            return [json.loads(d) for (d,) in conn.execute(
                f"SELECT data FROM events WHERE batch_id = ? AND type = 'result' AND idx > ?{extra}"
                " ORDER BY idx LIMIT ?", (batch_id, after, limit))]
        return self._read(read)

    def iter_results(self, batch_id: str, outcome: str | None = None, page: int = 1000) -> Iterator[dict[str, Any]]:
        """Every result of a batch in index order, read a page at a time (for streamed exports)."""
        after = -1
        while True:
            chunk = self.results(batch_id, after, page, outcome)
            yield from chunk
            if len(chunk) < page:
                return
            after = chunk[-1]["index"]

    def events(self, batch_id: str, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Committed events of a batch after a sequence number, in order, as JSON-ready data."""
        return [event.to_dict() for event in self._read(self._read_events, batch_id, after, limit)]

    def read_mark(self) -> int:
        """A mark for stored_events: every read numbered above it starts after this call."""
        return self._read_serial

    def stored_events(self, batch_id: str, after: int = 0, limit: int = 1000, mark: int | None = None) -> list[Event]:
        """Committed events after a sequence number, in order, carrying their stored JSON (nothing decoded).

        Viewers that join a running batch together ask for the same pages, so reads are shared. A full
        page is final (committed events never change): it is read once and kept. A shorter page may
        still grow, so a caller shares one only if that read started after the caller's `mark`
        (read_mark(), taken with its unflushed() snapshot): such a read holds everything committed then.
        """
        key = (batch_id, after, limit)
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
            return page
        page = self._shared_read(("events", *key), mark, self._read_events, *key)
        if len(page) == limit:
            self._pages[key] = page
            while len(self._pages) > REPLAY_CACHE_PAGES:
                self._pages.popitem(last=False)
        return page

    def _shared_read(self, key: tuple, join_after: int | None, fn: Callable, *args: Any) -> Any:
        """fn(conn, *args) on a reader thread, or the result of a read of the same `key` already running,
        if that read is numbered above `join_after` (a read_mark(); None: never join). Later callers may
        join this read while it runs."""
        pending = self._reads.get(key)
        if pending is not None and join_after is not None and pending[0] > join_after:
            result = pending[1].get()
            if result is not _NOT_READ:
                return result
        self._read_serial += 1
        mine = (self._read_serial, AsyncResult())
        self._reads[key] = mine
        result = _NOT_READ
        try:
            result = self._read(fn, *args)
            return result
        finally:
            if self._reads.get(key) is mine:
                del self._reads[key]
            mine[1].set(result)  # _NOT_READ when the read failed: each waiter then reads for itself

    @staticmethod
    def _read_events(conn: sqlite3.Connection, batch_id: str, after: int, limit: int) -> list[Event]:
        """stored_events' query, on a reader thread."""
        return [Event(batch_id, seq, type_, at=at, data_json=d) for seq, type_, at, d in conn.execute(
            "SELECT seq, type, at, data FROM events WHERE batch_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (batch_id, after, limit))]
