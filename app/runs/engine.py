"""The batch engine: runs each batch's URLs in a gevent pool and turns every outcome into an event."""

from __future__ import annotations

import functools
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.event import Event as Signal
from gevent.lock import BoundedSemaphore, Semaphore
from gevent.pool import Pool
from gevent.queue import Queue

from ..core import stats, verdict
from ..core.clock import iso_at, now_iso
from ..core.config import Config, ConfigError, env_name
from ..core.options import BatchOptions, ValidationError
from ..core.results import ErrorKind, Result, failed_result
from ..core.urllist import UrlList
from ..fetch import TransportFactory, guard, make_transport, tls
from ..fetch.base import USER_AGENT, Hop, Transport
from ..fetch.errors import DeadlineExceeded, FetchError, RetryLater, deadline_message
from ..fetch.follow import follow
from .events import EventBus
from .hosts import Counters, HostLive, Hosts, Requeued, UrlPass, host_of
from .store import Store

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0  # seconds between progress events of a running batch
CANCEL_SLICE = 5_000  # never-run URLs a cancelled batch marks between two commits
RELEASE_WAIT = 30.0  # seconds between log lines while a finished batch waits for its events to be committed
MAX_RUNNING_LISTED = 500  # in-flight URLs one answer lists (oldest first); `count` says how many there are
CANCELLED_MESSAGE = "batch was cancelled before this URL ran"  # a cluster's ledger says it too
CANCELLED_WAITING_MESSAGE = "batch was cancelled while this URL waited in its host's queue"


@dataclass(frozen=True)
class InFlight:
    """A URL being fetched right now."""

    index: int
    url: str
    started_at: str
    elapsed_ms: float


@dataclass(frozen=True)
class LiveState:
    """A batch the engine holds, as it stands: ahead of its stored row by up to one commit."""

    status: str
    started_at: str | None
    finished_at: str | None
    last_seq: int
    counts: dict[str, int]
    stats: dict[str, Any]


@dataclass
class BatchRun:
    """A batch the engine holds in memory while it is queued or running: per URL, its few bytes of URL, a
    done flag and a latency, whatever the batch's size."""

    id: str
    options: BatchOptions
    urls: UrlList | Mapping[int, str]  # URL index -> URL: every URL of the batch, or a chunk's (app.cluster.runner)
    total: int
    done: bytearray = field(init=False)  # 1 at index i once URL i has its final result
    tally: stats.Tally = field(default_factory=lambda: stats.Tally(keep_latencies=True))
    started_at: str | None = None
    finished_at: str | None = None
    started_clock: float | None = None
    status: str = "queued"
    running: int = 0
    in_flight: dict[int, float] = field(default_factory=dict)  # URL index -> perf_counter at its start, oldest first
    cancelled: bool = False
    pool: Pool | None = None
    greenlet: gevent.Greenlet[[BatchRun], None] | None = None
    hosts: Hosts | None = None  # a paced batch's hosts while it fetches (app/runs/hosts.py)
    released: Signal = field(default_factory=Signal)  # set once the final status shows (all events committed)

    def __post_init__(self) -> None:
        """No URL has a result yet."""
        self.done = bytearray(self.total)

    @property
    def finished(self) -> int:
        """URLs with a final result."""
        return self.tally.finished

    def add(self, index: int, row: stats.Row) -> bool:
        """Count URL `index`'s final result; False (and not counted) if it has one already."""
        if self.done[index]:
            return False
        self.done[index] = 1
        self.tally.add(row)
        return True

    def todo(self) -> Iterator[int]:
        """Indexes that have no final result yet, in order; read lazily, so the walk skips what ends meanwhile."""
        done = self.done
        index = done.find(0)
        while index != -1:
            yield index
            index = done.find(0, index + 1)


class Fetching:
    """The fetch path every run shares: a run's URLs at its concurrency, under the per-host and server-wide caps.

    The Engine runs whole batches on it; a cluster worker (app.cluster.runner) runs chunks of them, so both
    fetch, time out, follow redirects and turn failures into results with this one code.
    """

    def __init__(self, config: Config, policy: guard.Policy, transport_factory: TransportFactory | None = None):
        self.config = config
        self.policy = policy
        self.transport_factory = transport_factory or functools.partial(
            make_transport, user_agent=config.user_agent or USER_AGENT
        )
        self.resolver = guard.GuardedResolver(policy)  # what every transport connects through
        if config.ca_bundle:
            problem = tls.check_ca_bundle(config.ca_bundle)
            if problem:
                raise ConfigError(f"{env_name('ca_bundle')}: {problem}")
        tls.use_ca_bundle(config.ca_bundle)  # the CAs trusted are the process's: one setting, every transport
        self._inflight = BoundedSemaphore(config.max_inflight)
        self._stopping = False
        self.counters = Counters()  # host pauses and retries by status since start (/metrics)

    def _record(self, run: BatchRun, result: Result) -> None:
        """Keep a URL's final result (each subclass hands it on its way)."""
        raise NotImplementedError

    def _taken_all(self) -> None:
        """Called by each fetcher once no URL is left to take: what is buffered may go on now."""

    def _requeued(self, run: BatchRun, index: int, state: Requeued) -> None:
        """A URL went back to its host's queue (hosts.requeue): a subclass may keep what it has done."""

    def _fetch_all(self, run: BatchRun) -> None:
        """Fetch every URL of `run` without a result, at its concurrency; return when none is left or the run stops."""
        transport = self._open_transport(run)
        try:
            if run.options.paced:
                self._fetch_paced(run, transport)
                return
            run.pool = Pool(run.options.concurrency)
            # `concurrency` fetchers take the URLs in turn: a greenlet per fetcher, not per URL. A greenlet
            # per URL would map fresh memory for its frames and unmap it at its end, on every URL.
            remaining = run.todo()  # shared: each index goes to exactly one fetcher
            for _ in range(min(run.options.concurrency, run.total - run.finished)):
                run.pool.spawn(self._fetcher, run, transport, remaining)
            run.pool.join()
        finally:
            self._close_transport(run, transport)

    def _fetch_paced(self, run: BatchRun, transport: Transport) -> None:
        """Fetch a paced batch: one dispatcher hands `concurrency` fetchers the URLs whose host may take them now."""
        hosts = run.hosts = Hosts(run.options, run.todo(), run.urls.__getitem__, self.counters)
        fetchers = min(run.options.concurrency, run.total - run.finished)
        run.pool = Pool(fetchers + 1)
        if fetchers <= 0:
            return  # resumed with every URL done: no dispatcher to wait for a fetcher that never comes
        idle = Semaphore(fetchers)  # a URL is dispatched only to a free fetcher, so its host slot starts at once
        handed: Queue[int | None] = Queue()
        for _ in range(fetchers):
            run.pool.spawn(self._paced_fetcher, run, transport, hosts, handed, idle)
        run.pool.spawn(self._dispatch, run, hosts, handed, idle, fetchers)
        run.pool.join()

    def _dispatch(self, run: BatchRun, hosts: Hosts, handed: Queue[int | None], idle: Semaphore, fetchers: int) -> None:
        """Hand each URL to a free fetcher once its host may take it; then tell the fetchers to stop."""
        while not (run.cancelled or self._stopping):
            idle.acquire()
            index = hosts.next_url()
            if index is None or run.cancelled or self._stopping:
                break
            handed.put(index)
        for _ in range(fetchers):
            handed.put(None)

    def _paced_fetcher(
        self, run: BatchRun, transport: Transport, hosts: Hosts, handed: Queue[int | None], idle: Semaphore
    ) -> None:
        """One fetcher of a paced batch: fetch each URL the dispatcher hands over until it says stop."""
        for index in handed:
            if index is None:
                break
            try:
                self._fetch_one(run, transport, index, hosts)
            finally:
                idle.release()  # the dispatcher must never wait for a fetcher that is gone
            gevent.sleep(0)  # as _fetcher: the next URL starts from the back of the loop's callback queue
        self._taken_all()

    def _open_transport(self, run: BatchRun) -> Transport:
        """The transport a run fetches with: a new one for the batch, pooled to its concurrency."""
        return self.transport_factory(run.options, self.resolver)

    def _close_transport(self, run: BatchRun, transport: Transport) -> None:
        """The run's fetches are over: close its transport and the connections it keeps."""
        transport.close()

    # -- fetching one URL --------------------------------------------------------------------

    def _fetcher(self, run: BatchRun, transport: Transport, remaining: Iterator[int]) -> None:
        """One of a batch's fetchers: fetch the next URL without a result until none is left or the batch stops."""
        for index in remaining:
            if run.cancelled or self._stopping:
                return
            self._fetch_one(run, transport, index)
            # The next URL starts from the back of the loop's callback queue, which gevent runs for about its
            # switch interval (5 ms) a turn before it polls again: a fetcher never runs on through URLs whose
            # responses are already there, so a turn of the loop starts a few ms of URLs, wakes about as many
            # the turn after, and requests to the API are read between turns whatever the batch's pace.
            gevent.sleep(0)
        self._taken_all()

    def _fetch_one(self, run: BatchRun, transport: Transport, index: int, hosts: Hosts | None = None) -> None:
        """Fetch one URL under the server-wide cap (and its hosts' gates when paced); record exactly one result,
        unless its host sends it back to the queue (RetryLater)."""
        url = run.urls[index]
        result = Result(index=index, url=url, started_at=now_iso())
        started = time.perf_counter()
        deadline = run.options.timeout
        gate = None
        resume = None
        if hosts is not None:
            earlier = hosts.requeued.pop(index, None)
            if earlier is not None:
                # Time in the host's queue is not fetch time: the deadline counts only the goes at the URL.
                result.started_at, result.retried, result.attempts = (
                    earlier.started_at,
                    earlier.retried,
                    earlier.attempts,
                )
                result.refused, result.redirects, resume = earlier.refused, earlier.redirects, earlier.resume
                started -= earlier.spent
                deadline = max(0.001, deadline - earlier.spent)
            # The dispatcher took the host's slot first: waiting for a busy host holds no server-wide slot.
            gate = UrlPass(hosts, index, earlier.host if earlier is not None else host_of(url))
        hop: Hop | None = None
        try:
            with self._inflight:
                run.running += 1
                run.in_flight[index] = started
                try:
                    with gevent.Timeout(deadline, DeadlineExceeded):
                        hop = follow(
                            transport,
                            result,
                            run.options,
                            started,
                            self.config.max_url_length,
                            gate=gate,
                            resume=resume,
                        )
                finally:
                    run.running -= 1
                    del run.in_flight[index]
        except RetryLater as exc:
            assert hosts is not None and gate is not None
            gate.release()
            spent = time.perf_counter() - started
            state = Requeued(
                result.retried,
                spent,
                result.started_at,
                result.refused,
                result.attempts,
                result.redirects,
                exc.resume,
                gate.waits_for,
                gate.ready_at,
            )
            hosts.requeue(index, state)
            self._requeued(run, index, state)
            return
        except DeadlineExceeded as exc:
            # follow() left the phases the last hop completed in result.timings; the message says what was missing.
            hop_ms = (time.perf_counter() - started) * 1000 - (result.timings.get("redirect") or 0.0)
            result.error = {
                "kind": ErrorKind.DEADLINE.value,
                "message": deadline_message(run.options.timeout, exc.phases, hop_ms, len(result.redirects)),
            }
        except (FetchError, guard.GuardError) as exc:
            result.error = {"kind": exc.kind, "message": self._message(run, index, exc)}
        except gevent.GreenletExit:
            if not run.cancelled:
                raise  # shutting down: no result, so the URL runs again on resume
            result.error = {
                "kind": ErrorKind.CANCELLED.value,
                "message": "batch was cancelled while this URL was in flight",
            }
        except Exception as exc:  # noqa: BLE001 - an unexpected fault is this URL's error, not the batch's
            log.exception(
                "batch %s URL %d (%s) failed unexpectedly",
                run.id,
                index,
                url,
                extra={"batch_id": run.id, "index": index},
            )
            result.error = {"kind": ErrorKind.OTHER.value, "message": f"unexpected error: {exc!r}"}
        if gate is not None:
            gate.release()
        if result.error is not None:
            result.ok = False
        result.finished_at = now_iso()
        result.timings["total"] = round((time.perf_counter() - started) * 1000, 3)
        result.timings.setdefault("ttfb", None)
        try:
            judge(result, hop, run.options, between=_let_the_hub_run)  # once timed: a time.total check reads the total
        except gevent.GreenletExit:
            if not run.cancelled:
                raise  # shutting down: no result, so the URL runs again on resume
            # Cancelled while the hub ran between two of its checks: the URL still records its one result.
            result.ok, result.outcome, result.reasons, result.warnings = False, "cancelled", [], []
            result.error = {
                "kind": ErrorKind.CANCELLED.value,
                "message": "batch was cancelled while this URL was judged",
            }
        except Exception as exc:  # noqa: BLE001 - a fault judging one response fails that URL, never its fetcher
            log.exception("batch %s URL %d (%s) could not be judged", run.id, index, url, extra={"batch_id": run.id})
            result.ok, result.outcome = False, "failed"
            result.error = {"kind": ErrorKind.OTHER.value, "message": f"unexpected error judging it: {exc!r}"}
        self._record(run, result)

    def _message(self, run: BatchRun, index: int, exc: FetchError | guard.GuardError) -> str:
        """A failed URL's message: the detail of a blocked or dns error only where the server explains them."""
        if exc.detail is None:
            return str(exc)
        log.debug("batch %s URL %d: %s", run.id, index, exc.detail, extra={"batch_id": run.id, "index": index})
        return exc.detail if self.config.explain_blocked else str(exc)


def cancelled_result(index: int, url: str, waited: Mapping[str, Any] | None) -> Result:
    """The result of a URL a cancel found without one: never run, or `waited` in its host's queue (Requeued.history)."""
    if waited is None:
        return failed_result(index, url, ErrorKind.CANCELLED, CANCELLED_MESSAGE)
    result = failed_result(index, url, ErrorKind.CANCELLED, CANCELLED_WAITING_MESSAGE)
    # It had run: its tries, refusals and hops are kept, as for a URL cancelled in flight.
    result.attempts, result.refused, result.redirects = waited["attempts"], waited["refused"], waited["redirects"]
    result.started_at = waited["started_at"] or result.started_at
    return result


def _let_the_hub_run() -> None:
    """Between two checks of a row: the hub serves the API and the other fetchers first."""
    gevent.sleep(0)


def judge(result: Result, hop: Hop | None, options: BatchOptions, between: Callable[[], None] | None = None) -> None:
    """Give a fetched result its outcome, reasons and warnings (app/core/verdict.py decides), and ok and error to
    match: ok for ok and warn; a failure the rules decided, not the status alone, has the `mismatch` kind.

    hop: the last response (None when none came); between: called between two checks (checks.run)."""
    headers, body = (hop.headers, hop.body) if hop is not None else (None, None)
    if not options.judged and verdict.plainly_ok(result, headers):
        result.outcome = "ok"  # ok stays true; reasons and warnings stay the empty lists they are made with
        return
    if options.judged:
        expect, checks = options.row_expect(result.index), options.row_checks(result.index)
        if options.rows:
            result.expect, result.meta = expect, options.row_meta(result.index)
        elif expect:
            result.expect = expect
    else:
        expect, checks = None, ()
    outcome, reasons, warnings = verdict.evaluate(
        result, headers, options, expect, options.url_match, options.warn_as, checks, body, between
    )
    result.outcome = outcome
    if outcome == "ok" and not warnings:
        # An ok row carries no error: expectations may pass a status accept_status refused (a 404 expected).
        result.ok, result.error = True, None  # reasons and warnings stay the empty lists they are made with
        return
    result.reasons, result.warnings = reasons, warnings
    result.ok = outcome == "ok" or outcome == "warn"
    error = result.error
    if result.ok:
        result.error = None
    elif error is None or (error["kind"] == ErrorKind.STATUS and reasons[0]["rule"] != "accept_status"):
        first = reasons[0]
        result.error = {
            "kind": ErrorKind.MISMATCH.value,
            "message": f"{first['rule']}: expected {first['expected']}, got {first['actual']}",
        }


class Engine(Fetching):
    """Schedules batches, fetches their URLs concurrently and emits every outcome as an event."""

    def __init__(
        self,
        config: Config,
        store: Store,
        bus: EventBus,
        policy: guard.Policy,
        transport_factory: TransportFactory | None = None,
    ):
        super().__init__(config, policy, transport_factory)
        self.store = store
        self.bus = bus
        self._runs: dict[str, BatchRun] = {}
        self._queue: deque[str] = deque()
        self._active: set[str] = set()

    # -- public ------------------------------------------------------------------------------

    def submit(
        self,
        urls: Sequence[str],
        options: BatchOptions,
        name: str = "",
        parent_id: str | None = None,
        source: dict[str, Any] | None = None,
        list_id: str | None = None,
        batch_id: str | None = None,
    ) -> str:
        """Store a new batch durably, queue it, and return its id; `urls` have passed guard.check_url (the API's job)."""
        batch_id = batch_id or secrets.token_hex(6)  # a watch list's run claims its id first
        created = now_iso()
        name = name or f"{len(urls)} URL{'s' if len(urls) != 1 else ''}"
        self.store.create_batch(
            batch_id, name, options.to_dict(), urls, created, parent_id, source, options.row_specs(), list_id
        )
        self.bus.open(batch_id, 0)
        self.bus.emit(batch_id, "batch", {"status": "queued", "created_at": created})
        self._enqueue(BatchRun(batch_id, options, UrlList.of(urls), len(urls)))
        log.info(
            "batch %s queued: %d URLs, concurrency %d",
            batch_id,
            len(urls),
            options.concurrency,
            extra={"batch_id": batch_id, "status": "queued", "urls": len(urls)},
        )
        return batch_id

    def resume_unfinished(self) -> int:
        """Queue again every batch an earlier process left unfinished; stored results are kept."""
        records = self.store.unfinished_batches()
        for record in records:
            try:
                # The same rules as a new batch: a batch stored by an older version, or before a limit was
                # lowered, must not fetch with options this server now refuses (a Host header, say).
                raw = {**record.options, "rows": self.store.row_specs(record.id)}
                options, refusal = BatchOptions.parse(raw, self.config), None
            except ValidationError as exc:
                options, refusal = BatchOptions.defaults(self.config), exc
            run = BatchRun(record.id, options, self.store.urls(record.id), record.total)
            for index, row in self.store.iter_result_rows(record.id):  # a page at a time, never all at once
                run.add(index, row)
            if record.id in self._runs:
                continue  # submitted to this process while we were reading: it is running already
            self.bus.open(record.id, record.last_seq)
            if refusal is not None:
                self._runs[run.id] = run
                self._refuse_resume(run, refusal)
                continue
            log.info(
                "batch %s resumes: %d of %d URLs already have results",
                record.id,
                run.finished,
                run.total,
                extra={"batch_id": record.id, "status": "queued", "urls": run.total},
            )
            self._enqueue(run)
        return len(records)

    def _refuse_resume(self, run: BatchRun, refusal: ValidationError) -> None:
        """End an unfinished batch as failed because its stored options break today's rules; nothing is fetched."""
        first = refusal.details[0] if refusal.details else {"field": "options", "message": str(refusal)}
        message = (
            f"not resumed: it was stored with options this server no longer accepts ({first['field']} "
            f"{first['message']}); submit its URLs again with options within today's limits"
        )
        log.warning("batch %s %s", run.id, message, extra={"batch_id": run.id, "status": "failed"})
        self._conclude(run, "failed", error=message)

    def cancel(self, batch_id: str) -> bool:
        """Cancel a queued or running batch; False when the engine is not running it."""
        run = self._runs.get(batch_id)
        if run is None or run.cancelled or run.finished_at is not None:
            return False
        run.cancelled = True
        log.info(
            "batch %s cancelled with %d URLs in flight",
            batch_id,
            run.running,
            extra={"batch_id": batch_id, "status": "cancelling"},
        )
        if batch_id in self._queue:
            self._queue.remove(batch_id)
            self._finish(run)
        elif run.pool is not None:
            # Kill in-flight fetches now; each records itself as cancelled on the way out.
            run.pool.kill(block=True, timeout=1)
        return True

    def live(self, batch_id: str) -> LiveState | None:
        """What the engine knows ahead of the store about a batch it holds: status, counts, stats, last seq."""
        run = self._runs.get(batch_id)
        if run is None:
            return None
        # Number the results queued in this turn of the loop: the counts below hold them, so the seq must too.
        self.bus.flush()
        summary = self._summary(run)
        return LiveState(
            run.status,
            run.started_at,
            run.finished_at,
            self.bus.last_seq(batch_id) or 0,
            summary["counts"],
            summary["stats"],
        )

    def running_urls(self, batch_id: str, limit: int = MAX_RUNNING_LISTED) -> tuple[list[InFlight], int]:
        """The oldest `limit` URLs of a batch in flight now, and how many are; none for a batch the engine does not hold."""
        run = self._runs.get(batch_id)
        if run is None:
            return [], 0
        now, wall = time.perf_counter(), time.time()
        listed = []
        for index, started in itertools.islice(run.in_flight.items(), limit):  # a dict keeps start order: oldest first
            elapsed = now - started
            listed.append(InFlight(index, run.urls[index], iso_at(wall - elapsed), round(elapsed * 1000, 1)))
        return listed, len(run.in_flight)

    def hosts_live(self, batch_id: str) -> dict[str, HostLive]:
        """Per host of a batch the engine holds: its URLs in flight, and a paced batch's pauses and refusals."""
        run = self._runs.get(batch_id)
        if run is None:
            return {}
        in_flight: dict[str, int] = {}
        for index in list(run.in_flight):
            name = host_of(run.urls[index])
            in_flight[name] = in_flight.get(name, 0) + 1
        hosts = run.hosts
        names = set(in_flight) | (set(hosts.hosts) if hosts is not None else set())
        live = {}
        for name in names:
            until, reason = hosts.paused(name) if hosts is not None else (None, "")
            refused = hosts.hosts[name].refused if hosts is not None and name in hosts.hosts else 0
            live[name] = HostLive(in_flight.get(name, 0), until, reason, refused)
        return live

    def is_live(self, batch_id: str) -> bool:
        """Whether the engine holds the batch: queued, running, or ended with events still to commit."""
        return batch_id in self._runs

    def wait_released(self, batch_id: str, timeout: float) -> None:
        """Wait (at most `timeout` s) until a batch the engine holds shows its final status; at once if it holds none."""
        run = self._runs.get(batch_id)
        if run is not None:
            run.released.wait(timeout)

    def inflight(self) -> int:
        """Fetches in flight right now across every batch (holding a server-wide slot)."""
        return sum(run.running for run in self._runs.values())

    def stop_now(self) -> None:
        """Stop starting work and kill every fetch in flight (a second Ctrl-C): their URLs resume on the next start."""
        self._stopping = True
        for run in self._runs.values():
            if run.pool is not None:
                run.pool.kill(block=False)

    def shutdown(self, grace: float = 5.0) -> None:
        """Stop starting work; give in-flight fetches `grace` seconds, then leave the rest for resume."""
        self._stopping = True
        greenlets = [run.greenlet for run in self._runs.values() if run.greenlet is not None]
        gevent.joinall(greenlets, timeout=grace)
        for run in self._runs.values():
            if run.pool is not None:
                run.pool.kill(block=True, timeout=1)
        self.bus.flush()  # results queued in this turn of the loop go to the store before it closes

    # -- scheduling --------------------------------------------------------------------------

    def _enqueue(self, run: BatchRun) -> None:
        """Hold a batch and start it when a running slot is free (batches start in submission order)."""
        self._runs[run.id] = run
        self._queue.append(run.id)
        self._start_next()

    def _start_next(self) -> None:
        """Start queued batches while fewer than max_running_batches are running."""
        while self._queue and len(self._active) < self.config.max_running_batches and not self._stopping:
            run = self._runs[self._queue.popleft()]
            self._active.add(run.id)
            run.greenlet = gevent.spawn(self._run, run)
            run.greenlet.link_exception(lambda g, run=run: self._crashed(run, g.exception))  # type: ignore[misc]  # mypy#12557: a lambda with a default

    def _crashed(self, run: BatchRun, exc: BaseException | None) -> None:
        """A bug in the engine ends the batch as failed, never silently."""
        log.error("batch %s failed inside the engine: %r", run.id, exc, extra={"batch_id": run.id, "status": "failed"})
        self._conclude(run, "failed", error=f"internal error: {exc!r}")

    # -- running a batch ---------------------------------------------------------------------

    def _run(self, run: BatchRun) -> None:
        """Fetch every URL without a result, at the batch's concurrency, then finish the batch."""
        run.status = "running"
        run.started_at = now_iso()
        run.started_clock = time.monotonic()
        self.bus.emit(run.id, "batch", {"status": "running", "started_at": run.started_at})
        log.info(
            "batch %s running: %d URLs to fetch",
            run.id,
            run.total - run.finished,
            extra={"batch_id": run.id, "status": "running"},
        )
        reporter = gevent.spawn(self._report_progress, run)
        try:
            self._fetch_all(run)
        finally:
            reporter.kill()
        if self._stopping and not run.cancelled:
            log.info(
                "batch %s paused for shutdown; it resumes on the next start",
                run.id,
                extra={"batch_id": run.id, "status": "paused"},
            )
            self._active.discard(run.id)
            return
        self._finish(run)

    def _finish(self, run: BatchRun) -> None:
        """Mark what never ran as cancelled, emit the final state and free the slot."""
        committing = True
        requeued = run.hosts.requeued if run.hosts is not None else {}
        for marked, index in enumerate(run.todo(), 1):
            earlier = requeued.get(index)
            self._record(run, cancelled_result(index, run.urls[index], None if earlier is None else earlier.history()))
            if committing and marked % CANCEL_SLICE == 0:
                # Each slice is committed before the next is made, so a cancelled batch of a million URLs
                # never holds more than a slice of events; a store that cannot commit gets the rest at once.
                self.bus.flush()
                committing = self.store.flush(RELEASE_WAIT)
        status = "cancelled" if run.cancelled else "done"
        counts = self._conclude(run, status)["counts"]
        log.info(
            "batch %s %s: %s", run.id, status, counts, extra={"batch_id": run.id, "status": status, "counts": counts}
        )

    def _conclude(self, run: BatchRun, status: str, **extra: Any) -> dict[str, Any]:
        """Emit a batch's final state with its summary and verdict, free its slot, and show it once committed; the
        summary."""
        run.finished_at = now_iso()
        summary = self._summary(run, final=True)
        judged = verdict.batch_verdict(summary["counts"], summary["stats"], run.options.thresholds)
        data = {"status": status, "finished_at": run.finished_at, **extra, **summary, "verdict": judged}
        self.bus.emit(run.id, "batch", data)
        self._active.discard(run.id)
        gevent.spawn(self._release, run, status)
        self._start_next()
        return summary

    def _release(self, run: BatchRun, status: str) -> None:
        """Show the final status once the store holds every event, so a reader who sees `done` can read all results.

        However long commits fail (a full disk), the batch stays here until then, shown from memory as
        running: its stored row would show fewer results. A shutdown leaves it to resume from what is stored.
        """
        waited = 0.0
        while not self.store.flush(RELEASE_WAIT):
            if self._stopping:
                return
            waited += RELEASE_WAIT
            fault = self.store.fault()
            log.warning(
                "batch %s is %s, but its last events are not committed after %.0f s (%s); it shows as "
                "running until they are",
                run.id,
                status,
                waited,
                fault.error if fault else "the store is slow",
                extra={"batch_id": run.id, "status": "running"},
            )
        run.status = status
        self.bus.close(run.id)
        self._runs.pop(run.id, None)
        run.released.set()

    def _summary(self, run: BatchRun, final: bool = False) -> dict[str, Any]:
        """Counts and statistics of a batch's results so far (stats.batch_summary), its fetches in flight running.

        final: the summary stored for the ended batch, with exact percentiles (one sort of its latencies).
        """
        waiting = run.hosts.waiting() if run.hosts is not None and not final else 0
        return stats.batch_summary(
            run.tally, run.total, run.started_clock, time.monotonic(), running=run.running, exact=final, waiting=waiting
        )

    def _report_progress(self, run: BatchRun) -> None:
        """Emit counts and statistics about once a second while results keep coming."""
        reported = -1
        while True:
            gevent.sleep(PROGRESS_INTERVAL)
            if run.finished != reported:
                reported = run.finished
                self.bus.emit(run.id, "progress", self._summary(run))

    def _record(self, run: BatchRun, result: Result) -> None:
        """Keep a final result and queue its event: the event is what the store and every viewer see."""
        data = result.to_dict()
        row = stats.row_of(data)
        run.add(result.index, row)
        self.bus.result(run.id, data, row)

    def _taken_all(self) -> None:
        """The last URLs are taken: commit what is buffered now."""
        # So the commit `done` waits for holds only the results still in flight (at most `concurrency`), not up
        # to GREENBATCH_FLUSH_ROWS.
        self.store.flush(0)
