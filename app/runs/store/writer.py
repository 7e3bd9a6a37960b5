"""The stores' event writer: events buffered on the hub and committed in groups, oldest first, by one greenlet.

Both stores (sqlite.py, postgres.py) are EventWriters: each says how a group is committed away from the hub
(_commit: SQLite's writer thread, psycopg's connection) and what a failed commit means (_commit_fault), and
this class does the rest: the gathering, flush(), the observers, and the retries while commits fail.

When commits fail (a full disk, a database away), the events stay in memory, oldest first, and are retried
in groups of at most flush_rows with a growing pause; fault() says so until a commit works again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent
from gevent.event import Event as Signal

from ...core.clock import now_iso
from ..events import Event
from .base import StoreFault
from .rows import EventRow, event_rows

MAX_GROUP = 4096  # events per transaction at most while a backlog left by failed commits is written
RETRY_PAUSE = 0.1  # seconds before retrying a failed commit, doubled after each failure...
RETRY_PAUSE_MAX = 2.0  # ...up to this: space (or a database) that comes back is used within this long
FAILURE_REMINDER = 60.0  # seconds between log lines while commits keep failing


class EventWriter:
    """Buffers a store's events and commits them in groups; a store subclasses it (see the module's docstring)."""

    # The store's logger (each store sets its module's): the writer's lines are the store's. It and _target live
    # on the class, not the instance: SQLiteStore keeps to 29 attributes of its own, the most CPython 3.11 keeps
    # inline (one more, and every attribute of the store is read through a dict lookup).
    _log: logging.Logger

    def __init__(self, flush_interval: float, flush_rows: int):
        """Start the writer greenlet."""
        self._flush_interval = flush_interval
        self._flush_rows = flush_rows
        self._buffer: list[Event] = []
        self._wake = Signal()
        self._hurry = Signal()  # set by flush() or a full group: commit now, not at the end of flush_interval
        self._shut = Signal()  # set by close(): no more pauses between retries
        self._appended = 0  # events handed to extend() so far
        self._stored = 0  # how many of them are committed: always the oldest, in order
        self._flushes: list[tuple[int, Signal]] = []  # flush() callers: (events that must be committed, wake-up)
        self._closed = False
        self._failing: StoreFault | None = None  # set while commits of events fail; cleared by the next that works
        self._group_limit: int | None = None  # events per commit at most: None, except after a failed commit
        self._retry_pause = RETRY_PAUSE
        self._fail_started = self._reminded = 0.0
        self._write_observers: list[Callable[[float, int], None]] = []
        self._commit_observers: list[Callable[[list[Event]], None]] = []
        self._flusher = gevent.spawn(self._flush_loop)

    # -- what each store says ----------------------------------------------------------------

    @property
    def _target(self) -> str:
        """The file or database the messages and logs name."""
        raise NotImplementedError

    def _commit(self, events: list[Event], rows: list[EventRow]) -> None:
        """Commit a group of events (`rows` is event_rows(events), made on the hub) in one transaction, away
        from the hub; raises what the database raised."""
        raise NotImplementedError

    def _commit_fault(self, exc: Exception) -> tuple[str, str] | None:
        """What a failed commit means: (the reason, what to do about it) for the database's own error; None for
        any other (a bug, logged with its traceback)."""
        raise NotImplementedError

    # -- the writer --------------------------------------------------------------------------

    def extend(self, events: list[Event]) -> None:
        """Buffer a batch's new events for the next commit; never blocks."""
        if self._closed:
            raise RuntimeError(
                f"store is closed; events {events[0].seq}-{events[-1].seq} of batch {events[0].batch_id} were not saved"
            )
        for event in events:
            event.data_json  # noqa: B018 - encode here, on the hub, once: the writer and every viewer reuse it
        self._buffer.extend(events)
        self._appended += len(events)
        self._wake.set()
        if len(self._buffer) >= self._flush_rows:
            self._hurry.set()  # a full group: commit it now rather than at the end of the interval

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event appended so far is committed, without waiting out the gathering; False on timeout.

        flush(0) asks for the commit and returns at once, without yielding to other greenlets.
        """
        target = self._appended
        if self._stored >= target:
            return True
        self._hurry.set()
        self._wake.set()
        if timeout == 0:
            return False
        waiter = (target, Signal())
        self._flushes.append(waiter)
        try:
            return waiter[1].wait(timeout)
        finally:
            if waiter in self._flushes:
                self._flushes.remove(waiter)

    def fault(self) -> StoreFault | None:
        """Why the store should not take new batches now: failing commits; None when fine."""
        return self._failing

    def observe_writes(self, observer: Callable[[float, int], None]) -> None:
        """Call `observer(seconds, events)` after each committed group of events (metrics); it must not block."""
        self._write_observers.append(observer)

    def observe_commits(self, observer: Callable[[list[Event]], None]) -> None:
        """Call `observer(events)` on the hub with each group of events once committed, in order; it must not block."""
        self._commit_observers.append(observer)

    def _stop_writing(self, timeout: float) -> None:
        """Commit what is buffered (within `timeout` s; one last try while commits fail), then end the writer."""
        self.flush(timeout if self._failing is None else 0)
        self._closed = True
        self._shut.set()
        self._wake.set()
        self._flusher.join(timeout)

    def _flush_loop(self) -> None:
        """Commit buffered events in groups, oldest first: wait for the first, gather for flush_interval, write.

        A group that fails goes back to the head of the buffer; while commits fail, groups hold at most
        flush_rows events (each needs less new disk than the whole backlog) and each retry waits longer;
        once one works, the backlog goes in groups of MAX_GROUP until the buffer is empty.
        """
        while True:
            self._wake.wait()
            self._wake.clear()
            if not self._buffer:
                if self._closed:
                    return
                continue
            if len(self._buffer) < self._flush_rows and not self._closed and self._failing is None:
                # Gather a group of events, unless someone waits in flush() (a batch's end, a shutdown).
                self._hurry.wait(self._flush_interval)
            self._hurry.clear()
            limit = self._group_limit
            if limit is None or len(self._buffer) <= limit:
                writing, self._buffer = self._buffer, []
            else:
                writing, self._buffer = self._buffer[:limit], self._buffer[limit:]
            started = time.perf_counter()
            try:
                self._commit(writing, event_rows(writing))
            except Exception as exc:  # noqa: BLE001 - keep the events and try again rather than lose them
                self._buffer = writing + self._buffer
                self._commit_failed(exc)
                if self._closed:
                    self._log.error(
                        "store: closed with %d events not committed to %s; their batches resume from what "
                        "was committed on the next start",
                        len(self._buffer),
                        self._target,
                    )
                    return
                self._shut.wait(self._retry_pause)
                self._retry_pause = min(self._retry_pause * 2, RETRY_PAUSE_MAX)
                self._wake.set()
                continue
            self._observe_write(time.perf_counter() - started, len(writing))
            if self._failing is not None:
                self._commits_work_again()
            self._stored += len(writing)
            for observer in self._commit_observers:
                observer(writing)  # on the hub, in commit order: live viewers see only what is stored
            if self._flushes:
                for waiter in [w for w in self._flushes if w[0] <= self._stored]:
                    waiter[1].set()
            if self._buffer:
                self._wake.set()
            else:
                self._group_limit = None

    def _commit_failed(self, exc: Exception) -> None:
        """Remember and log a failed commit of events (once, then every FAILURE_REMINDER s)."""
        fault = self._commit_fault(exc)
        if fault is None:
            self._log.exception("store: writing %d events to %s failed; retrying", len(self._buffer), self._target)
            return
        reason, advice = fault
        self._group_limit = min(self._flush_rows, MAX_GROUP)
        now = time.monotonic()
        if self._failing is None:
            self._failing = StoreFault(
                "failing",
                reason,
                now_iso(),
                f"the store {self._target} cannot commit ({reason}); results wait in memory and are retried, and "
                f"new batches are refused until a commit works: {advice}",
            )
            self._fail_started = self._reminded = now
            self._log.error(
                "store: cannot commit to %s: %s; %d events wait in memory and are retried every %g s at most, "
                "%d at a time",
                self._target,
                reason,
                len(self._buffer),
                RETRY_PAUSE_MAX,
                self._group_limit,
            )
        elif now - self._reminded >= FAILURE_REMINDER:
            self._reminded = now
            self._log.error(
                "store: commits to %s still fail after %.0f s (%s); %d events wait in memory",
                self._target,
                now - self._fail_started,
                reason,
                len(self._buffer),
            )

    def _commits_work_again(self) -> None:
        """Forget the failure after a commit that worked, and say so."""
        self._log.warning(
            "store: commits to %s work again after %.1f s; %d events still wait",
            self._target,
            time.monotonic() - self._fail_started,
            len(self._buffer),
        )
        self._failing = None
        self._group_limit = MAX_GROUP
        self._retry_pause = RETRY_PAUSE

    def _observe_write(self, seconds: float, events: int) -> None:
        """Tell the observers about one commit; a broken observer is logged and never stops the writer."""
        for observer in self._write_observers:
            try:
                observer(seconds, events)
            except Exception:  # noqa: BLE001 - metrics must never cost us events
                self._log.exception("store: write observer %r failed", observer)
