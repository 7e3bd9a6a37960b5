"""A worker process's chunks: fetched with the engine's own fetch path, appended to the ledger, announced on Redis.

One Runner per worker process. Each chunk message runs `run_chunk` in its own greenlet (a Dramatiq "thread");
results go to one writer greenlet that appends them to PostgreSQL in groups, so a chunk's actor returns (and
its message is acked) only once its results are committed. A URL may be fetched twice after a crash or a
pause; the ledger records it once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gevent
import psycopg
import redis
from gevent.event import Event as Signal

from ..core import stats
from ..core.config import Config
from ..core.jsonutil import compact_json
from ..core.options import BatchOptions, ValidationError
from ..core.results import Result
from ..fetch import guard
from ..fetch.base import Transport
from ..runs.engine import BatchRun, Fetching
from ..runs.hosts import Requeued
from .ledger import Ledger
from .streams import announce

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

CANCEL_KEY = "gb:cancel:"  # + batch id: set by whoever cancels the batch; workers stop its fetches
CANCEL_CHECK = 0.5  # seconds between two looks at the cancel keys of the batches running here
WRITE_INTERVAL = 0.1  # seconds results wait for others to share their append (unless WRITE_ROWS are waiting)
WRITE_ROWS = 500
RETRY_FIRST, RETRY_MAX = 0.1, 5.0  # seconds between attempts while PostgreSQL cannot take an append
STOP_GRACE = 5.0  # seconds fetches in flight may finish after a worker is told to stop
# Seconds a batch's transport keeps its idle connections once no chunk of the batch runs here: the next chunk
# of the batch this process takes (within a poll or two) fetches over them rather than opening its own.
TRANSPORT_LINGER = 2.0


def cancel_key(batch_id: str) -> str:
    """The Redis key whose presence tells workers a batch is cancelled."""
    return CANCEL_KEY + batch_id


class ResultsLost(RuntimeError):
    """Results of a chunk could not be appended for a reason other than PostgreSQL being unreachable."""


@dataclass
class ChunkRun(BatchRun):
    """Chunk `no` of a batch, as claimed: `urls` maps each index without a result to its URL."""

    no: int = 0
    indexes: list[int] = field(default_factory=list)  # the chunk's indexes without a result when claimed, in order
    recorded: set[int] = field(default_factory=set)  # indexes this run has a result for
    first_ticket: int = 0  # the writer's tickets of this run's first and latest results
    ticket: int = 0

    def __post_init__(self) -> None:
        """A chunk keeps its own indexes, not a flag per URL of the whole batch."""
        self.done = bytearray()

    @property
    def finished(self) -> int:
        """URLs of the chunk with a result from this run."""
        return len(self.recorded)

    def add(self, index: int, row: stats.Row) -> bool:
        """Count URL `index`'s result; False if this run has one already."""
        if index in self.recorded:
            return False
        self.recorded.add(index)
        return True

    def todo(self) -> Iterator[int]:
        """The chunk's indexes without a result from this run, in claim order, read lazily."""
        recorded = self.recorded
        return (index for index in self.indexes if index not in recorded)


@dataclass
class SharedTransport:
    """A batch's transport in this process, shared by its chunks running here (the engine's is one per batch too)."""

    transport: Transport
    users: int = 0  # chunks fetching with it now
    closer: gevent.Greenlet[[str], None] | None = None  # closes it TRANSPORT_LINGER after its last user left


class Writer:
    """One greenlet that appends the process's results to the ledger in groups, then announces what committed.

    Each result gets a ticket; tickets commit in order, so `wait(t)` returning means every result up to t is
    in PostgreSQL (or the ledger refused it: a batch already final, an index recorded by another copy).
    """

    def __init__(self, ledger: Ledger, client: Redis, interval: float = WRITE_INTERVAL, rows: int = WRITE_ROWS):
        self.ledger = ledger
        self.redis = client
        self.interval = interval
        self.rows = rows
        self._queue: list[tuple[str, int, dict[str, Any], stats.Row]] = []
        self._notes: dict[tuple[str, int], dict[str, Any]] = {}  # (batch id, URL index) -> its latest waiting note
        self._tickets = 0  # tickets handed out
        self._committed = 0  # every ticket up to this one is committed
        self._lost: list[tuple[int, int]] = []  # (first, last) tickets of groups the ledger raised on
        self._wake = Signal()
        self._commit = Signal()  # set (and replaced) after each group
        self._greenlet = gevent.spawn(self._loop)

    def put(self, batch_id: str, index: int, data: dict[str, Any], row: stats.Row) -> int:
        """Queue one result for the next append; its ticket."""
        self._queue.append((batch_id, index, data, row))
        self._tickets += 1
        if len(self._queue) >= self.rows:
            self._wake.set()
        return self._tickets

    def note(self, batch_id: str, index: int, history: dict[str, Any]) -> None:
        """Queue what a URL sent back to its host's queue has done, for the next group (Ledger.note_waiting)."""
        self._notes[(batch_id, index)] = history

    def hurry(self) -> None:
        """Append what is queued now rather than at the end of the interval."""
        self._wake.set()

    def wait(self, ticket: int, since: int = 0) -> None:
        """Return once every result up to `ticket` is committed; ResultsLost if one from `since` on never will be."""
        while self._committed < ticket:
            self._wake.set()
            self._commit.wait()
        for first, last in self._lost:
            if first <= ticket and since <= last:
                raise ResultsLost(f"results {first}-{last} of this worker could not be appended; see the log")

    def close(self) -> None:
        """Append what is queued, then stop."""
        self.wait(self._tickets)
        self._greenlet.kill()

    def _loop(self) -> None:
        """Take what is queued about every `interval` (sooner when `rows` wait) and append it."""
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._notes:
                self._note()
            if not self._queue:
                continue
            taken, self._queue = self._queue, []
            first, last = self._tickets - len(taken) + 1, self._tickets
            try:
                self._append(taken)
            except Exception:  # noqa: BLE001 - a bug must not stop the writer: the chunks waiting on it fail instead
                log.exception("results %d-%d of this worker could not be appended", first, last)
                self._lost.append((first, last))
            self._committed = last
            done, self._commit = self._commit, Signal()
            done.set()

    def _note(self) -> None:
        """Store the waiting notes queued; a note that cannot be stored costs only the history a cancel would keep."""
        notes, self._notes = self._notes, {}
        try:
            self.ledger.note_waiting(notes)
        except Exception as exc:  # noqa: BLE001 - the writer goes on: the results waiting on it matter more
            log.warning("%d notes of URLs waiting in their host's queue were not stored (%s)", len(notes), exc)

    def _append(self, taken: list[tuple[str, int, dict[str, Any], stats.Row]]) -> None:
        """Append a group of results, a transaction per batch, retrying while PostgreSQL is unreachable."""
        by_batch: dict[str, list[tuple[int, str, stats.Row]]] = {}
        for batch_id, index, data, row in taken:
            by_batch.setdefault(batch_id, []).append((index, compact_json(data), row))
        for batch_id, rows in by_batch.items():
            delay = RETRY_FIRST
            while True:
                try:
                    events = self.ledger.append(batch_id, rows)
                    break
                except psycopg.OperationalError as exc:
                    # The append is idempotent (recorded indexes are dropped), so a commit whose answer was
                    # lost is safe to send again.
                    log.warning(
                        "batch %s: %d results wait for PostgreSQL (%s); trying again in %.1f s",
                        batch_id,
                        len(rows),
                        exc,
                        delay,
                        extra={"batch_id": batch_id},
                    )
                    gevent.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
            announce(self.redis, events)


class Runner(Fetching):
    """Runs the chunks this worker process claims, with the engine's fetch path and its caps."""

    def __init__(self, config: Config, ledger: Ledger, client: Redis, chunks_at_once: int = 1):
        """`chunks_at_once`: the chunks this process may run at once (Dramatiq's threads)."""
        policy = guard.Policy.from_settings(config.allow_private, config.allow_targets, config.deny_targets)
        super().__init__(config, policy)
        self.ledger = ledger
        self.redis = client
        self.writer = Writer(ledger, client)
        self.chunks_at_once = chunks_at_once
        self._runs: dict[str, list[ChunkRun]] = {}  # batch id -> its chunks running here
        self._transports: dict[str, SharedTransport] = {}  # batch id -> its transport here
        # A worker says it runs a chunk a few times per heartbeat timeout, so the janitor never takes it for stalled.
        self._touch_every = config.cluster_heartbeat_timeout / 3
        self._loops = [gevent.spawn(self._watch_cancels), gevent.spawn(self._touch_chunks)]

    def run_chunk(self, batch_id: str, no: int) -> bool:
        """Fetch a chunk's URLs that have no result and commit their results; False if stopped first (send it again)."""
        claim, events = self.ledger.claim(batch_id, no)
        announce(self.redis, events)
        if claim is None:
            log.info("batch %s chunk %d: nothing to run (batch final or gone, or chunk done)", batch_id, no)
            return True
        try:
            # A batch stored before row specs had their own place keeps them in its options (options.rows).
            raw = claim.options if claim.row_specs is None else {**claim.options, "rows": claim.row_specs}
            options = BatchOptions.parse(raw, self.config)
        except ValidationError as exc:
            log.error(
                "batch %s chunk %d: this worker refuses the batch's options (%s); give workers the same GREENBATCH_* "
                "limits as the web processes",
                batch_id,
                no,
                exc,
                extra={"batch_id": batch_id},
            )
            raise
        urls = dict(zip(claim.indexes, claim.urls, strict=True))
        run = ChunkRun(batch_id, options, urls, len(urls), no=no, indexes=claim.indexes)
        runs = self._runs.setdefault(batch_id, [])
        runs.append(run)
        log.info(
            "batch %s chunk %d running: %d URLs to fetch",
            batch_id,
            no,
            run.total,
            extra={"batch_id": batch_id, "status": "running"},
        )
        try:
            self._fetch_all(run)
        finally:
            runs.remove(run)
            if not runs:
                del self._runs[batch_id]
        self.writer.wait(run.ticket, run.first_ticket)
        if run.cancelled:
            return True  # the batch is final: nothing of it is left to run
        if run.finished < run.total:
            log.info("batch %s chunk %d stopped with %d of %d URLs done", batch_id, no, run.finished, run.total)
            return False
        self.ledger.chunk_done(batch_id, no)
        return True

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Take no new URL; fetches in flight get `grace` seconds, then are killed (their chunks are sent again)."""
        self._stopping = True
        gevent.spawn_later(grace, self._kill_all)

    def close(self) -> None:
        """Commit what is queued, stop the loops, close the transports and the ledger (after the last chunk returned)."""
        try:
            self.writer.close()
        except ResultsLost as exc:
            log.error("%s", exc)
        gevent.killall(self._loops)
        for batch_id in list(self._transports):
            self._drop_transport(batch_id)
        self.ledger.close()

    def _open_transport(self, run: BatchRun) -> Transport:
        """The batch's transport here, made by its first chunk: a chunk opens no connection another one left idle."""
        shared = self._transports.get(run.id)
        if shared is None:
            # Idle connections kept for every chunk of the batch this process may run at once.
            options = dataclasses.replace(run.options, concurrency=run.options.concurrency * self.chunks_at_once)
            shared = self._transports[run.id] = SharedTransport(self.transport_factory(options, self.resolver))
        if shared.closer is not None:
            shared.closer.kill(block=False)
            shared.closer = None
        shared.users += 1
        return shared.transport

    def _close_transport(self, run: BatchRun, transport: Transport) -> None:
        """A chunk's fetches are over: the batch's transport closes TRANSPORT_LINGER after its last chunk here."""
        shared = self._transports[run.id]
        shared.users -= 1
        if shared.users:
            return
        if run.cancelled or self._stopping:
            self._drop_transport(run.id)
        else:
            shared.closer = gevent.spawn_later(TRANSPORT_LINGER, self._drop_transport, run.id)

    def _drop_transport(self, batch_id: str) -> None:
        """Close a batch's transport here unless a chunk took it up again."""
        shared = self._transports.get(batch_id)
        if shared is None or shared.users:
            return
        del self._transports[batch_id]
        if shared.closer is not None and shared.closer is not gevent.getcurrent():
            shared.closer.kill(block=False)
        shared.transport.close()

    def _record(self, run: BatchRun, result: Result) -> None:
        """Queue a result for the writer; none once the batch is cancelled (the cancel recorded every URL left)."""
        assert isinstance(run, ChunkRun)  # the only runs a Runner fetches
        if run.cancelled:
            return
        data = result.to_dict()
        row = stats.row_of(data)
        if run.add(result.index, row):
            run.ticket = self.writer.put(run.id, result.index, data, row)
            run.first_ticket = run.first_ticket or run.ticket

    def _requeued(self, run: BatchRun, index: int, state: Requeued) -> None:
        """Note what a URL sent back to its host's queue has done: a cancel records it with that, as one process does."""
        if not run.cancelled:
            self.writer.note(run.id, index, state.history())

    def _taken_all(self) -> None:
        """The chunk's last URLs are taken: append what is queued without waiting for the interval."""
        self.writer.hurry()

    def _kill_all(self) -> None:
        """Kill every fetch in flight here; unfinished URLs get no result, so they run again elsewhere."""
        for runs in self._runs.values():
            for run in runs:
                if run.pool is not None:
                    run.pool.kill(block=False)

    def _cancel(self, batch_id: str) -> None:
        """Stop a cancelled batch's fetches here now."""
        for run in self._runs.get(batch_id, ()):
            if not run.cancelled:
                run.cancelled = True
                log.info(
                    "batch %s chunk %d: cancelled, %d URLs in flight stopped",
                    batch_id,
                    run.no,
                    run.running,
                    extra={"batch_id": batch_id, "status": "cancelled"},
                )
                if run.pool is not None:
                    run.pool.kill(block=False)

    def _watch_cancels(self) -> None:
        """Every CANCEL_CHECK seconds, stop the fetches of running batches whose cancel key is set."""
        unreachable = False  # one warning per outage, not two a second
        while True:
            gevent.sleep(CANCEL_CHECK)
            batch_ids = list(self._runs)
            if not batch_ids:
                continue
            try:
                flags = self.redis.mget([cancel_key(batch_id) for batch_id in batch_ids])
            except redis.RedisError as exc:
                if not unreachable:
                    log.warning("cannot read cancel keys on Redis (%s); cancelled batches run on until it answers", exc)
                unreachable = True
                continue
            unreachable = False
            for batch_id, flag in zip(batch_ids, flags, strict=True):
                if flag is not None:
                    self._cancel(batch_id)

    def _touch_chunks(self) -> None:
        """Tell the ledger, a few times per heartbeat timeout, which chunks run here."""
        while True:
            gevent.sleep(self._touch_every)
            for batch_id, runs in list(self._runs.items()):
                try:
                    self.ledger.touch(batch_id, [run.no for run in runs])
                except psycopg.Error as exc:
                    log.warning("batch %s: cannot touch its chunks (%s)", batch_id, exc, extra={"batch_id": batch_id})
