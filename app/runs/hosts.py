"""Per-host pacing of a batch: which URL may start next, so no host gets more than the batch allows.

A paced batch (BatchOptions.paced) has a `Hosts` per run. Its dispatcher hands a fetcher only a URL whose
host may take a request now: fewer than `per_host` in flight, `per_host_interval` since the last request
started there, and no Retry-After pause. A URL whose host is not ready waits in that host's queue as an
index (a few bytes), never holding a fetcher or a greenlet, so 100,000 URLs on one host cost a deque. The
dispatcher keeps the hosts with queued URLs filed by when they can take one (ready now, a heap of those
waiting for the clock, or waiting for a slot or a start), so a pick costs O(log hosts), not a look at each.
Every request a URL makes (each redirect hop and each retry) passes the same gate (`UrlPass`); a URL whose
next request is to a host that is paused, or (a redirect) to one that is not ready, goes back to the queue of
that host, to go on at that hop once it is ready.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent.event import Event as Signal

from ..core import stats
from ..core.clock import iso_at
from ..core.options import BatchOptions
from ..fetch.errors import Resume, RetryLater

DEFER_YIELD = 1000  # URLs the dispatcher sets aside in one go before it lets the hub run
LEARN_WINDOW = 1.0  # seconds of request starts a refusal is compared with (servers count requests a second)
LEARN_MARGIN = 1.2  # the learned interval is this much longer than the pace the host allowed (jitter aside)
LEARN_MAX = 10.0  # seconds: the longest interval refusals teach (never past the batch's max_retry_after either)
LEARN_FORGET = 10.0  # seconds of answers at the learned pace, none refused, after which the host is unpaced again


def host_of(url: str) -> str:
    """The host a URL's requests count against (urlsplit's hostname, lower case)."""
    return (urlsplit(url).hostname or "").lower()


@dataclass
class Host:
    """One host of a paced batch: its requests in flight, when the last one started, and any pause."""

    name: str
    in_flight: int = 0  # URLs holding a slot of this host (dispatched, or fetching there now)
    starting: int = 0  # URLs dispatched here that have not sent their first request yet
    last_start: float = float("-inf")  # monotonic time of the last request start
    paused_until: float = 0.0  # monotonic
    pause_reason: str = ""
    pauses: int = 0
    refused: int = 0  # answers with one of the batch's retry_statuses (429, 503)
    learned: float = 0.0  # seconds between starts this host's refusals taught (0: none yet)
    measured: float = 0.0  # the part of `learned` the host's pace showed: answers that are not refusals bring it back
    refusal: int = 0  # the status of its latest refusal (429, 503), for the reason its pace gives
    learned_at: float = float("-inf")  # monotonic: refusals of requests started before this are old news
    lesson: float | None = None  # start of a refused request whose lesson waits for its neighbours' answers
    lesson_seen: float = 0.0  # monotonic time that refusal was answered: what the host took is counted up to it
    lesson_paced: bool = False  # that refused request started while the learned pace held the host back
    clean_since: float | None = None  # start of the first request of the answers since the last refusal, none refused
    answered: deque[float] = field(default_factory=deque)  # starts of the requests it took (not refused), lately
    queue: deque[int] = field(default_factory=deque)  # URL indexes waiting for this host
    timed_at: float | None = None  # when its live entry in the dispatcher's heap is due (None: it has none)


@dataclass
class Counters:
    """What paced batches did since the process started, for /metrics."""

    pauses: int = 0  # hosts paused by a Retry-After
    retries: dict[int, int] = field(default_factory=dict)  # answers retried, by status


@dataclass
class Requeued:
    """A URL sent back to its host's queue: what it had done before, so its next go continues it."""

    retried: int  # tries made at the hop it goes on at
    spent: float  # seconds of fetch time used (its deadline's share)
    started_at: str | None
    refused: int  # refusals it retried after
    attempts: int
    redirects: list[dict[str, Any]]  # the hops it made before
    resume: Resume | None  # the hop it goes on at (None: its URL, from the start)
    host: str  # the host whose queue it waits in: the dispatcher takes that host's slot for it
    ready_at: float = 0.0  # monotonic: the URL's own backoff ends then (it joins its host's queue at that time)

    def history(self) -> dict[str, Any]:
        """What the URL has done, as its result keeps it if the batch is cancelled while it waits (JSON)."""
        return {
            "started_at": self.started_at,
            "attempts": self.attempts,
            "refused": self.refused,
            "redirects": self.redirects,
        }


class Hosts:
    """The hosts of one paced run: their gates, their queues, and the dispatcher's choice of the next URL."""

    def __init__(self, options: BatchOptions, todo: Iterator[int], url_of: Callable[[int], str], counters: Counters):
        self.cap = options.per_host or 0
        self.interval = options.per_host_interval
        self.learn_max = min(LEARN_MAX, options.max_retry_after)
        self.hosts: dict[str, Host] = {}
        self.requeued: dict[int, Requeued] = {}
        self._todo = todo  # URL indexes not taken yet, in order
        self._todo_left = True
        self._url_of = url_of
        self._queued: dict[str, Host] = {}  # hosts with URLs in their queue, in the order they got them
        # Each queued host is filed by what it waits for: nothing (ready, oldest first), the clock (the heap,
        # by when), or a slot or a start (neither: leave() and start() file it again). A filing may be stale
        # (a host paused since it was filed ready); the dispatcher checks it when it comes up.
        self._ready_hosts: OrderedDict[str, Host] = OrderedDict()
        self._timed: list[tuple[float, int, Host]] = []  # (due, tie-break, host), a heap
        self._ties = itertools.count()
        # URLs backing off (a refusal without Retry-After, a retried connection error), (ready_at, tie-break, index),
        # a heap: each joins the front of its host's queue when its own time comes, while the host's other URLs go on.
        self._backing_off: list[tuple[float, int, int]] = []
        # Hosts whose refusals may hold their URLs back (paused, or paced by what they taught), the only ones waiting()
        # looks at: a host joins when a refusal pauses or paces it, and leaves once waiting() finds it free again.
        self._held: dict[str, Host] = {}
        self.in_flight = 0  # slots held, all hosts together
        self._changed = Signal()
        self.counters = counters

    # -- the dispatcher's side ------------------------------------------------------------------

    def next_url(self) -> int | None:
        """The next URL whose host may take a request now, its slot taken; waits while none can; None when none is left."""
        while True:
            index = self._pick(time.monotonic())
            if index is not None:
                return index
            # A URL in flight may yet come back to a queue.
            if not self._todo_left and not self._queued and not self.in_flight and not self._backing_off:
                return None
            self._wait(self._next_ready_time())

    def _pick(self, now: float) -> int | None:
        """A queued URL whose host is ready, else the next untaken URL whose host is ready (others are queued)."""
        self._due(now)
        while self._ready_hosts:
            _, host = self._ready_hosts.popitem(last=False)
            if not self._ready(host, now):
                self._file(host, now)  # a stale filing: paused, or its slot taken by a redirect, since
                continue
            queued = host.queue.popleft()
            if not host.queue:
                del self._queued[host.name]
            self._take(host)
            self._file(host, now)  # still ready: behind the other ready hosts
            return queued
        set_aside = 0
        while self._todo_left:
            taken = next(self._todo, None)
            if taken is None:
                self._todo_left = False
                break
            index = taken
            host = self.host(host_of(self._url_of(index)))
            if not host.queue and self._ready(host, now):
                self._take(host)
                return index
            self._queue(host, index)
            set_aside += 1
            if set_aside % DEFER_YIELD == 0:
                gevent.sleep(0)  # a long run of one busy host's URLs must not hold the hub
                now = time.monotonic()
        return None

    def _queue(self, host: Host, index: int, front: bool = False) -> None:
        """Put a URL in its host's queue."""
        filed = bool(host.queue)  # a host with queued URLs is filed already (or waits for a slot or a start)
        if front:
            host.queue.appendleft(index)
        else:
            host.queue.append(index)
        self._queued.setdefault(host.name, host)
        if not filed:
            self._file(host, time.monotonic())

    def _file(self, host: Host, now: float) -> None:
        """File a host with queued URLs by what it waits for: nothing, the clock, or a slot or a start."""
        if not host.queue:
            return
        if self._ready(host, now):
            self._ready_hosts.setdefault(host.name, host)
            return
        due = self._ready_at(host, now)
        if due is not None and due != host.timed_at:
            host.timed_at = due
            heapq.heappush(self._timed, (due, next(self._ties), host))

    def _due(self, now: float) -> None:
        """Queue the URLs whose backoff is over, and file again the hosts of the heap whose time has come."""
        while self._backing_off and self._backing_off[0][0] <= now:
            _, _, index = heapq.heappop(self._backing_off)
            self._queue(self.host(self.requeued[index].host), index, front=True)
        while self._timed and self._timed[0][0] <= now:
            due, _, host = heapq.heappop(self._timed)
            if host.timed_at == due:  # else a stale entry: the host was filed again since
                host.timed_at = None
                self._file(host, now)

    def _ready(self, host: Host, now: float) -> bool:
        """Whether a host may take one more URL now."""
        if self.cap and host.in_flight >= self.cap:
            return False
        if now < host.paused_until:
            return False
        interval = self.interval_of(host, now)
        if interval:
            # One URL at a time waits for the interval: it is dispatched only once the last request has started.
            return host.starting == 0 and now >= host.last_start + interval
        return True

    def _take(self, host: Host) -> None:
        """A URL of `host` goes to a fetcher: it holds one of the host's slots."""
        host.in_flight += 1
        host.starting += 1
        self.in_flight += 1

    def _ready_at(self, host: Host, now: float) -> float | None:
        """When a host becomes ready by the clock; None when it waits for a slot or a start instead."""
        interval = self.interval_of(host, now)
        if (self.cap and host.in_flight >= self.cap) or (interval and host.starting):
            return None
        return max(host.paused_until, host.last_start + interval)

    def _next_ready_time(self) -> float | None:
        """When the soonest queued host becomes ready by the clock; None when each waits for a slot or a start."""
        if self._ready_hosts:
            return 0.0  # filed ready while the dispatcher let the hub run (DEFER_YIELD): pick again at once
        while self._timed and self._timed[0][2].timed_at != self._timed[0][0]:
            heapq.heappop(self._timed)  # stale: the host was filed again since
        due = [heap[0][0] for heap in (self._timed, self._backing_off) if heap]
        return min(due) if due else None

    def _wait(self, until: float | None) -> None:
        """Sleep until `until` (monotonic) or until a slot frees, a request starts or a URL is queued again."""
        signal = self._changed
        timeout = None if until is None else max(0.0, until - time.monotonic())
        signal.wait(timeout)

    def _notify(self) -> None:
        """Wake the dispatcher: something it waits for may have changed."""
        signal, self._changed = self._changed, Signal()
        signal.set()

    # -- the fetchers' side ------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        """The state of one host, made on first sight."""
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = Host(name)
        return host

    def may_enter(self, host: Host) -> bool:
        """Whether a URL already running may send its next request (a redirect) to `host` now."""
        return self._ready(host, time.monotonic())

    def enter(self, host: Host) -> None:
        """Take a slot of `host` for a URL already running (a redirect to it that may_enter allowed)."""
        host.in_flight += 1
        self.in_flight += 1

    def leave(self, host: Host) -> None:
        """Give back a slot of `host`."""
        host.in_flight -= 1
        self.in_flight -= 1
        self._file(host, time.monotonic())
        self._notify()

    def may_start(self, host: Host) -> bool:
        """Whether a request to `host` may start now: its pause is over and its interval has passed."""
        now = time.monotonic()
        return now >= max(host.paused_until, host.last_start + self.interval_of(host, now))

    def start(self, host: Host, first: bool) -> float:
        """A request to `host` starts now (may_start allowed it): note the start; its time."""
        now = time.monotonic()
        host.last_start = now
        if first:
            host.starting -= 1
            self._file(host, now)
            self._notify()
        return now

    def pause(self, host: Host, seconds: float, reason: str) -> None:
        """Hold every request to `host` for `seconds` (never shortening a longer pause): the host asked (Retry-After)."""
        until = time.monotonic() + seconds
        if until > host.paused_until:
            host.paused_until = until
            host.pause_reason = reason
        self._held[host.name] = host
        host.pauses += 1
        self.counters.pauses += 1

    def refused(self, host: Host, status: int, retrying: bool, started: float) -> None:
        """Count an answer with a retried status and the retry it leads to, and slow the host down.

        The host took the requests it answered that started from a second before the refused one until its
        refusal came back: from then on its requests start LEARN_MARGIN times further apart than that pace
        (twice as far apart as before, when it refuses one sent at the learned pace), whatever the batch's
        per_host_interval; never more than learn_max apart. Answers that are not refusals undo the doubling, and
        LEARN_FORGET seconds of them unpace the host.
        """
        host.refused += 1
        host.refusal = status
        host.clean_since = None
        if retrying:
            self.counters.retries[status] = self.counters.retries.get(status, 0) + 1
        if started < host.learned_at or host.lesson is not None:
            return  # sent before the last lesson, or the lesson of this burst is being drawn already
        host.lesson, host.lesson_seen = started, time.monotonic()
        host.lesson_paced = host.learned > 0

    def interval_of(self, host: Host, now: float) -> float:
        """The seconds between two request starts to `host`: the batch's, or what its refusals taught.

        A refusal's lesson is drawn once the host's pause is over, so the requests sent alongside the
        refused one have their answers and the pace counted is the one the host took.
        """
        if host.lesson is not None and now >= host.paused_until:
            # Requests that start together reach the host in any order: one started with the refused one, or
            # after it but before its refusal came back, may have reached the host first and been taken. So the
            # count ends at the refusal's answer, not its start: else a burst's refusal counts none of the burst
            # and paces the host at one request per LEARN_MARGIN seconds.
            if not host.lesson_paced:
                # A refused request sent at the learned pace shows that pace, not the host's: at one request a
                # second or slower the window holds one at most, which would teach 1.2 s for good. It only doubles.
                since = host.lesson - LEARN_WINDOW
                taken = sum(1 for at in host.answered if since < at <= host.lesson_seen)
                host.measured = min(self.learn_max, LEARN_MARGIN * LEARN_WINDOW / max(1, taken))
            # A host that refuses whatever the pace is asked at most once every learn_max seconds, not ever slower.
            host.learned = min(self.learn_max, max(2 * host.learned, host.measured))
            host.learned_at, host.lesson = now, None
            if host.learned > self.interval:
                self._held[host.name] = host  # only a lesson slows a host: the answers that follow can only free it
        return max(self.interval, host.learned)

    def took(self, host: Host, started: float) -> None:
        """The host answered a request that started at `started` without refusing it."""
        host.answered.append(started)
        if host.learned and started >= host.learned_at:
            if host.clean_since is None:
                host.clean_since = started
            if started - host.clean_since >= LEARN_FORGET:
                # LEARN_FORGET seconds taken at the learned pace, none refused: the host goes unpaced again (if it
                # still limits, its next refusal teaches a pace anew).
                host.learned = host.measured = 0.0
                host.clean_since = None
            elif host.learned > host.measured:
                # Taken at the learned pace: the doubling a refusal at that pace added halves, down to the measured
                # pace.
                host.learned = (host.learned + host.measured) / 2
        kept_from = time.monotonic() - 2 * LEARN_WINDOW
        if host.lesson is not None:
            # A lesson is drawn when the pause ends (a Retry-After may be longer than the window kept): its
            # second of starts stays until then.
            kept_from = min(kept_from, host.lesson - LEARN_WINDOW)
        while host.answered and host.answered[0] < kept_from:
            host.answered.popleft()

    def requeue(self, index: int, state: Requeued) -> None:
        """A URL goes back to the front of the queue of the host it waits for, to go on once that host is ready;
        one backing off joins it when its backoff is over (state.ready_at), the host's other URLs going on meanwhile."""
        self.requeued[index] = state
        if state.ready_at > time.monotonic():
            heapq.heappush(self._backing_off, (state.ready_at, next(self._ties), index))
        else:
            self._queue(self.host(state.host), index, front=True)
        self._notify()

    def stop(self) -> None:
        """Wake the dispatcher so it sees the run is over."""
        self._notify()

    # -- what the batch's viewers see ---------------------------------------------------------------

    def held_back(self, host: Host, now: float) -> bool:
        """Whether a host's refusals hold its URLs back now: a pause, or a pace they taught it."""
        return host.paused_until > now or host.learned > self.interval

    def waiting(self) -> int:
        """URLs backing off (a refusal, a connection error), and those queued behind a host its refusals hold back
        (paused now, or paced by what they taught)."""
        now = time.monotonic()
        queued = 0
        for host in list(self._held.values()):
            if self.held_back(host, now):
                queued += len(host.queue)
            else:
                del self._held[host.name]  # free again: only a new pause or lesson holds it back
        return len(self._backing_off) + queued

    def paused(self, name: str) -> tuple[str | None, str]:
        """(ISO time host `name` may take its next request, or None when its refusals do not hold it back; why)."""
        host = self.hosts.get(name)
        now = time.monotonic()
        if host is None or not self.held_back(host, now):
            return None, ""
        if host.paused_until > now:
            return iso_at(time.time() + host.paused_until - now), host.pause_reason
        next_start = max(now, host.last_start + host.learned)
        reason = f"{host.refusal} answers: paced at one request every {host.learned:.1f} s"
        return iso_at(time.time() + next_start - now), reason


class UrlPass:
    """One URL's way through its hosts' gates (follow.HopGate): it holds a slot of the host it is at."""

    def __init__(self, hosts: Hosts, index: int, host: str):
        self.hosts = hosts
        self.index = index
        self.held: Host | None = hosts.host(host)  # the dispatcher took this slot for the URL
        self.waits_for = host  # the host whose queue the URL goes back to (RetryLater)
        self.first = True  # the dispatcher's slot has not sent its first request yet
        self.started = 0.0  # monotonic start of the URL's latest request, 0 before its first
        self.was_refused = False  # whether that request's answer was a refusal (429, 503)
        self.ready_at = 0.0  # monotonic: the URL's own backoff, when retry_later sends it back for one

    def before_request(self, url: str) -> None:
        """Wait for the host of `url` to take one more request (slot, interval, pause), then count its start."""
        self._answered()
        name = host_of(url)
        if self.held is None or self.held.name != name:
            host = self.hosts.host(name)
            if not self.hosts.may_enter(host):
                # A full, paced or paused host is waited for in its queue, never in a fetcher or the deadline.
                self.waits_for = name
                raise RetryLater()
            self.release()
            self.hosts.enter(host)
            self.held = host
        elif not self.hosts.may_start(self.held):
            # Paused by a refusal, or its interval not over (a retry; a lesson drawn since the URL was handed out):
            # the URL waits in the host's queue, where waiting is not fetch time, never asleep under its deadline.
            self.waits_for = name
            raise RetryLater()
        self.started = self.hosts.start(self.held, self.first)
        self.first = False

    def _answered(self) -> None:
        """The URL's latest request is over: a host that did not refuse it took it (what refusals compare with)."""
        if self.started and not self.was_refused and self.held is not None:
            self.hosts.took(self.held, self.started)
        self.started, self.was_refused = 0.0, False

    def no_answer(self, url: str) -> None:
        """The URL's latest request got no answer (refused, reset, timed out connecting): neither taken nor refused."""
        self.started, self.was_refused = 0.0, False

    def pause(self, url: str, seconds: float, reason: str) -> None:
        """Pause the host of `url` (a Retry-After)."""
        self.hosts.pause(self.hosts.host(host_of(url)), seconds, reason)

    def refused(self, url: str, status: int, retrying: bool) -> None:
        """Count a 429 or 503 (a status the batch retries) of the host of `url`."""
        self.was_refused = True
        self.hosts.refused(self.hosts.host(host_of(url)), status, retrying, self.started)

    def retry_later(self, url: str, after: float = 0.0) -> None:
        """Leave the fetcher: the engine queues the URL again behind its host's pause, `after` seconds from now."""
        self.waits_for = host_of(url)
        self.ready_at = time.monotonic() + after if after > 0 else 0.0
        raise RetryLater()

    def release(self) -> None:
        """Give back the slot the URL holds (at its end, or when it moves to another host)."""
        self._answered()
        if self.held is not None:
            if self.first:
                self.held.starting -= 1  # dispatched but never sent a request (a URL check failed)
                self.first = False
            self.hosts.leave(self.held)
            self.held = None


# -- the hosts of a batch, as the API and the page show them ---------------------------------------------


@dataclass(frozen=True)
class HostLive:
    """What the fetching process knows of one host of a batch right now."""

    in_flight: int = 0
    paused_until: str | None = None  # ISO time, None when not paused
    pause_reason: str = ""
    refused: int = 0  # 429/503 answers seen so far, retried ones included


HOST_FIELDS = ("host", "in_flight", "done", "ok", "failed", "p50_ms", "refused", "paused_until", "pause_reason")
REFUSED_STATUSES = frozenset({429, 503})  # what `refused` counts among stored final answers


@dataclass
class HostTally:
    """One host's stored results so far: done (ok, failed; cancelled are neither), refusals, latencies."""

    done: int = 0
    ok: int = 0
    failed: int = 0
    refused: int = 0
    latencies: stats.Sketch = field(default_factory=stats.Sketch)


class HostTable:
    """Per host of a batch, its stored results counted one at a time, so a read costs what its hosts cost.

    `refused` counts the 429 and 503 answers the results record (retried ones, a final one, a `rate_limited`
    end); p50_ms is exact up to stats.SKETCH_FROM latencies a host, then within stats.RELATIVE_ACCURACY (1 %).
    """

    def __init__(self) -> None:
        """No result yet."""
        self.hosts: dict[str, HostTally] = {}
        self.seq = 0  # the stored events counted: those numbered up to this one

    def add(self, result: dict[str, Any]) -> None:
        """Count one stored result."""
        name = host_of(result["url"])
        tally = self.hosts.get(name)
        if tally is None:
            tally = self.hosts[name] = HostTally()  # a host whose URLs were all cancelled is listed too
        row = stats.row_of(result)
        kind = stats.outcome(row)
        if kind == "cancelled":
            return
        tally.done += 1
        if kind == "ok" or kind == "warn":  # ok holds the warned, as the batch's counts do
            tally.ok += 1
        else:
            tally.failed += 1
        tally.refused += result.get("refused", 0)
        if row.status_code in REFUSED_STATUSES or row.error_kind == "rate_limited":
            tally.refused += 1
        latency = stats.latency_ms(row)
        if latency is not None:
            tally.latencies.add(latency)

    def rows(self, live: Mapping[str, HostLive]) -> list[dict[str, Any]]:
        """The hosts table: with `live`, the fetching process's view (empty when it has none: a finished batch,
        or cluster mode's web process), whose refusals count when they are ahead of the stored ones; the most
        refused first, then the slowest, then by name."""
        table = []
        for name in sorted(set(self.hosts) | set(live)):
            counted = self.hosts.get(name) or HostTally()
            now = live.get(name, HostLive())
            table.append(
                {
                    "host": name,
                    "in_flight": now.in_flight,
                    "done": counted.done,
                    "ok": counted.ok,
                    "failed": counted.failed,
                    "p50_ms": counted.latencies.percentile(50),
                    "refused": max(now.refused, counted.refused),
                    "paused_until": now.paused_until,
                    "pause_reason": now.pause_reason,
                }
            )
        table.sort(key=_most_refused_then_slowest)
        return table


def host_table(results: Iterable[dict[str, Any]], live: Mapping[str, HostLive]) -> list[dict[str, Any]]:
    """The hosts table of these results (HostTable.rows)."""
    table = HostTable()
    for result in results:
        table.add(result)
    return table.rows(live)


def _most_refused_then_slowest(host: dict[str, Any]) -> tuple[int, float]:
    """The hosts table's order: the most refused first, then the slowest median."""
    return -int(host["refused"]), -float(host["p50_ms"] or 0.0)
