"""The janitor: sends again the chunks no worker will run otherwise, so no crash strands a batch.

One web process at a time sweeps, the one holding a PostgreSQL advisory lock (on a connection of its own:
the lock goes with the process, however it ends). Once a second it sends:

- chunks still pending UNSENT_AFTER seconds after their batch was stored (the web process that stored
  them died before sending, or Redis refused the send);
- chunks sent longer than `silent_after` ago that no worker has touched since (their message was lost);
- every open chunk when Redis has lost its keys (restarted without persistence, or flushed): the queue
  went with them. A key `gb:epoch` the janitor sets tells: when it is missing, Redis lost everything.

It also ends cancels left unfinished (the web process running one died between its transactions).

A worker that dies is Dramatiq's to handle: its messages go back to the queue after the heartbeat
timeout. A chunk sent twice runs at most its missing URLs again, and each URL's result is recorded once.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent
import psycopg

from .ledger import Ledger

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

JANITOR_LOCK = 0x67626A61  # pg_try_advisory_lock key: one janitor in the cluster ("gbja" in ASCII)
SWEEP_INTERVAL = 1.0  # seconds between sweeps
UNSENT_AFTER = 5.0  # seconds a stored chunk may wait for its first send
# Seconds a cancel may stay unfinished before the janitor ends it: one under way in another process (a
# million URLs take seconds) must not be joined at once, one whose process died is ended soon.
CANCEL_RESUME_AFTER = 10.0
EPOCH_KEY = "gb:epoch"  # set by the janitor; gone means Redis lost its keys, the queue with them


class Janitor:
    """Sweeps for stranded chunks while this process holds the janitor's lock."""

    def __init__(
        self,
        database_url: str,
        ledger: Ledger,
        client: Redis,
        send: Callable[[str, list[int]], bool],
        cancel: Callable[[str], bool],
        silent_after: float,
    ):
        self._database_url = database_url
        self._ledger = ledger
        self._client = client
        self._send = send
        self._cancel = cancel
        self.silent_after = silent_after
        self._cancelling: dict[str, float] = {}  # batch id -> when a sweep first saw its cancel unfinished
        self._conn: psycopg.Connection | None = None
        self.holds_lock = False
        self._failing = False
        self._greenlet: gevent.Greenlet[[], None] | None = None

    def start(self) -> None:
        """Start sweeping (one greenlet)."""
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop sweeping and give up the lock."""
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
            self._greenlet = None
        self._disconnect()

    def _run(self) -> None:
        """Sweep once a second while holding the lock; try for the lock otherwise."""
        while True:
            try:
                if self._lock():
                    self.sweep()
                if self._failing:
                    log.info("the janitor works again")
                    self._failing = False
            except Exception as exc:  # noqa: BLE001 - PostgreSQL or Redis away: try again next second
                if not self._failing:
                    log.warning("the janitor could not sweep (%r); it tries again every second", exc)
                    self._failing = True
                if isinstance(exc, psycopg.Error):
                    self._disconnect()
            gevent.sleep(SWEEP_INTERVAL)

    def _lock(self) -> bool:
        """Whether this process holds the janitor's lock (taken now if free); the connection checked each time."""
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._database_url, autocommit=True)
            self.holds_lock = False
        if self.holds_lock:
            self._conn.execute("SELECT 1")  # the session (and so the lock) is still there
            return True
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (JANITOR_LOCK,)).fetchone()
        self.holds_lock = bool(row and row[0])
        if self.holds_lock:
            log.info("this process is the cluster's janitor: it sends again chunks no worker will run otherwise")
        return self.holds_lock

    def sweep(self) -> int:
        """Finish cancels cut short, send what is stranded now; how many chunks were sent."""
        self._finish_cancels()
        if self._client.set(EPOCH_KEY, secrets.token_hex(8), nx=True):
            # Redis lost its keys (or this is the cluster's first sweep): the queued messages are gone.
            stalled = self._ledger.stalled(0.0, 0.0)
            if stalled:
                log.warning("Redis lost its keys (restarted?): sending the %d open chunks again", len(stalled))
        else:
            stalled = self._ledger.stalled(UNSENT_AFTER, self.silent_after)
        by_batch: dict[str, list[int]] = {}
        for batch_id, no in stalled:
            by_batch.setdefault(batch_id, []).append(no)
        for batch_id, nos in by_batch.items():
            log.info("janitor: sending %d chunks of batch %s again", len(nos), batch_id, extra={"batch_id": batch_id})
            self._send(batch_id, nos)
        return len(stalled)

    def _finish_cancels(self) -> None:
        """End the cancels left unfinished for CANCEL_RESUME_AFTER seconds (the process running one died)."""
        now = time.monotonic()
        unfinished = self._ledger.cancelling()
        self._cancelling = {batch_id: self._cancelling.get(batch_id, now) for batch_id in unfinished}
        for batch_id, since in self._cancelling.items():
            if now - since >= CANCEL_RESUME_AFTER:
                log.warning(
                    "janitor: ending the cancel of batch %s, left unfinished", batch_id, extra={"batch_id": batch_id}
                )
                self._cancel(batch_id)

    def _disconnect(self) -> None:
        """Close the lock's connection (PostgreSQL releases the lock with it)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None
        self.holds_lock = False
