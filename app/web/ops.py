"""Operations: liveness and readiness probes, and Prometheus metrics at /metrics.

Every number here is counted from events and engine state, with the bounds stats.py uses, so the
dashboard, the API and /metrics never disagree. Each app has a registry of its own (never
prometheus-client's global one), so several apps can live in one process.

Metrics:
  greenbatch_batches{status}                        stored batches by status (read from the store at each scrape)
  greenbatch_fetches_total{outcome,error_kind}      final URL results; outcome ok|warn|failed|cancelled, error_kind
                                                    one of model.ERROR_KINDS or "none" (an accepted response)
  greenbatch_fetch_duration_seconds                 histogram of URL total times (buckets: stats.HISTOGRAM_BOUNDS_MS)
  greenbatch_inflight_fetches                       fetches holding a server-wide slot right now
  greenbatch_websocket_connections                  open websockets (the server tells us how: count_websockets)
  greenbatch_store_write_seconds                    histogram of the store's grouped commits
  greenbatch_host_pauses_total                      hosts paused by a Retry-After (paced batches, this process)
  greenbatch_retries_total{status}                  answers retried, by status (paced batches, this process)
  process_*                                         CPU, memory and file descriptors of this process
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from itertools import accumulate

import gevent
import prometheus_client
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import CollectorRegistry, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from ..core import stats
from ..core.results import BATCH_STATUSES
from ..runs.events import Event
from ..runs.hosts import Counters
from ..runs.services import Services
from ..runs.store import Store
from ..runs.store.outbox import DELIVERY_STATES
from .services import services

bp = Blueprint("ops", __name__)

EXTENSION = "greenbatch.metrics"
READY_TIMEOUT = 2.0  # seconds /readyz waits for the store; probes usually give up after 1-5 s
FETCH_BUCKETS = tuple(bound / 1000 for bound in stats.HISTOGRAM_BOUNDS_MS)
STORE_WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class BatchesByStatus:
    """greenbatch_batches{status}, counted by the store at scrape time.

    Counted rather than tracked from events: the count then includes batches from earlier runs of
    the server and drops deleted ones (a delete emits no event), and it costs one GROUP BY over the
    batches table (one row per batch) per scrape, on a reader thread.
    """

    def __init__(self, store: Store):
        self.store = store

    def describe(self) -> list[GaugeMetricFamily]:
        """The metric's name and help, so registering it reads nothing from the store."""
        return [self._family()]

    def collect(self) -> list[GaugeMetricFamily]:
        """One sample per batch status, zeros included, so dashboards see every series."""
        counts = self.store.count_by_status()
        family = self._family()
        for status in BATCH_STATUSES:
            family.add_metric([status], counts.get(status, 0))
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        """An empty greenbatch_batches family."""
        return GaugeMetricFamily("greenbatch_batches", "Stored batches by status.", labels=["status"])


class DeliveriesByStatus:
    """greenbatch_notifications{status}: the outbox's deliveries by status, counted by the store at scrape time
    (like greenbatch_batches: one GROUP BY over a table of a row per notify target of a finished batch)."""

    def __init__(self, store: Store):
        self.store = store

    def describe(self) -> list[GaugeMetricFamily]:
        """The metric's name and help, so registering it reads nothing from the store."""
        return [self._family()]

    def collect(self) -> list[GaugeMetricFamily]:
        """One sample per delivery status, zeros included."""
        counts = self.store.count_deliveries()
        family = self._family()
        for status in DELIVERY_STATES:
            family.add_metric([status], counts.get(status, 0))
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        """An empty greenbatch_notifications family."""
        return GaugeMetricFamily(
            "greenbatch_notifications",
            "Notification deliveries by status: pending, sent, failed (after 3 tries), skipped (notify_on).",
            labels=["status"],
        )


class FetchMetrics:
    """greenbatch_fetches_total and greenbatch_fetch_duration_seconds, kept as plain numbers.

    The bus tap runs on the hub for every result, so it must not take a lock per update as
    prometheus-client's Counter and Histogram do (a gevent lock once patched): the tap only keeps the
    result's stats row, and the rows are counted into a dict and a list in one loop at the next scrape
    (or every FOLD_EVERY results, to bound the memory). Taps and scrapes both run on the hub without
    yielding, so a scrape never sees half an update.
    """

    FETCHES_HELP = (
        'Final URL results, by outcome and error kind (error_kind is "none" when an accepted response came back).'
    )
    DURATION_HELP = "Total time of URL fetches that reached the network."
    FOLD_EVERY = 10_000

    def __init__(self):
        self.fetches: dict[tuple[str, str], int] = {("ok", "none"): 0}  # a series from the first scrape
        self.buckets = [0] * (len(FETCH_BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self.seconds = 0.0
        self._pending: list[stats.Row] = []

    def observe(self, events: list[Event]) -> None:
        """Bus tap: keep each final result's row for counting; never blocks."""
        if events[0].type == "result":  # the bus hands results on in lists of their own
            self._pending.extend([event.row for event in events])
            if len(self._pending) >= self.FOLD_EVERY:
                self._fold()

    def _fold(self) -> None:
        """Count the kept rows into the totals: outcome and error kind, latency bucket and sum."""
        rows, self._pending = self._pending, []
        fetches, buckets, total = self.fetches, self.buckets, self.seconds  # added in order, as the library does
        for row in rows:
            key = (stats.outcome(row), row.error_kind or "none")
            fetches[key] = fetches.get(key, 0) + 1
            latency = stats.latency_ms(row)
            if latency is not None:
                seconds = latency / 1000
                buckets[bisect_left(FETCH_BUCKETS, seconds)] += 1  # the first bound >= the value, as `le` means
                total += seconds
        self.seconds = total

    def describe(self) -> list:
        """The two families' names and help, for the registry's duplicate check."""
        return [
            CounterMetricFamily("greenbatch_fetches", self.FETCHES_HELP, labels=["outcome", "error_kind"]),
            HistogramMetricFamily("greenbatch_fetch_duration_seconds", self.DURATION_HELP),
        ]

    def collect(self) -> list:
        """The counts so far, in the exposition prometheus-client gives its own Counter and Histogram."""
        self._fold()
        fetches = CounterMetricFamily("greenbatch_fetches", self.FETCHES_HELP, labels=["outcome", "error_kind"])
        for (outcome, kind), count in self.fetches.items():
            fetches.add_metric([outcome, kind], count)
        bounds = [floatToGoString(bound) for bound in FETCH_BUCKETS] + ["+Inf"]
        duration = HistogramMetricFamily(
            "greenbatch_fetch_duration_seconds",
            self.DURATION_HELP,
            buckets=list(zip(bounds, accumulate(self.buckets))),
            sum_value=self.seconds,
        )
        return [fetches, duration]


class PoliteMetrics:
    """greenbatch_host_pauses_total and greenbatch_retries_total{status}, from the engine's hosts.Counters."""

    PAUSES_HELP = "Hosts paused by a Retry-After (paced batches fetched by this process)."
    RETRIES_HELP = "Answers retried, by status (paced batches fetched by this process)."

    def __init__(self, counters: Counters):
        self.counters = counters

    def describe(self) -> list:
        """The families' names and help."""
        return [
            CounterMetricFamily("greenbatch_host_pauses", self.PAUSES_HELP),
            CounterMetricFamily("greenbatch_retries", self.RETRIES_HELP, labels=["status"]),
        ]

    def collect(self) -> list:
        """The counts so far."""
        pauses = CounterMetricFamily("greenbatch_host_pauses", self.PAUSES_HELP, value=self.counters.pauses)
        retries = CounterMetricFamily("greenbatch_retries", self.RETRIES_HELP, labels=["status"])
        for status, count in sorted(self.counters.retries.items()):
            retries.add_metric([str(status)], count)
        return [pauses, retries]


class Metrics:
    """The server's metrics: fed by the event bus tap, the store's commits and the engine's state."""

    def __init__(self, svc: Services):
        self.registry = CollectorRegistry()
        self.websocket_count: Callable[[], int] | None = None
        self.fetches = FetchMetrics()
        self.registry.register(self.fetches)
        self.inflight = Gauge(
            "greenbatch_inflight_fetches", "Fetches in flight now, across every batch.", registry=self.registry
        )
        self.inflight.set_function(svc.engine.inflight)
        self.websockets = Gauge(
            "greenbatch_websocket_connections", "Open websocket connections.", registry=self.registry
        )
        self.websockets.set_function(lambda: self.websocket_count() if self.websocket_count else 0)
        self.store_writes = Histogram(
            "greenbatch_store_write_seconds",
            "Time of each grouped commit of events to the store.",
            buckets=STORE_WRITE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(BatchesByStatus(svc.store))
        self.registry.register(DeliveriesByStatus(svc.store))
        self.registry.register(PoliteMetrics(svc.engine.counters))
        ProcessCollector(registry=self.registry)

    def observe_store_write(self, seconds: float, events: int) -> None:
        """Store observer: one grouped commit took `seconds`."""
        self.store_writes.observe(seconds)

    def render(self, accept: str | None) -> Response:
        """The metrics in the text format the scraper asked for (Prometheus text or OpenMetrics)."""
        encoder, content_type = choose_encoder(accept or "")
        return Response(encoder(self.registry), content_type=content_type)


def init_app(app: Flask, svc: Services) -> Metrics:
    """Build the app's metrics, feed them from the bus and the store, and add the ops routes."""
    # _created samples (one per label set) are noise for us; the setting is process-wide in prometheus-client.
    prometheus_client.disable_created_metrics()
    metrics = Metrics(svc)
    svc.bus.tap(metrics.fetches.observe)
    svc.store.observe_writes(metrics.observe_store_write)
    app.extensions[EXTENSION] = metrics
    app.register_blueprint(bp)
    return metrics


def count_websockets(app: Flask, count: Callable[[], int]) -> None:
    """Hook for whoever holds the websockets (the server, or the stream): `count()` is read at each scrape."""
    app.extensions[EXTENSION].websocket_count = count


# -- routes ----------------------------------------------------------------------------------


@bp.get("/healthz")
def healthz():
    """Liveness: 200 while the process serves requests."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """Readiness: 200 when the store's commits work, its file is not known to be damaged, and it can open a
    write transaction within READY_TIMEOUT seconds; 503 otherwise."""
    svc = services()
    fault = svc.store.fault()
    if fault is not None:  # known already: the last commit failed, or SQLite or quick_check found damage
        response = jsonify(
            {
                "status": "unavailable",
                "store": fault.state,
                "message": fault.message,
                "error": fault.error,
                "since": fault.since,
            }
        )
        response.status_code = 503
        return response
    writable = None
    with gevent.Timeout(READY_TIMEOUT, False):
        writable = svc.store.writable()
    if writable:
        return {"status": "ready", "store": "writable"}
    if svc.config.cluster:
        reason = (
            f"PostgreSQL (GREENBATCH_DATABASE_URL) did not take a write within {READY_TIMEOUT:g} s: check that "
            "it runs and that this host reaches it"
            if writable is None
            else "PostgreSQL (GREENBATCH_DATABASE_URL) refuses writes: check its log and free disk space"
        )
    elif writable is None:
        reason = (
            f"the store {svc.config.db_path} did not open a write transaction within {READY_TIMEOUT:g} s: another "
            "process may hold a write lock on it, or the disk is very slow"
        )
    else:
        reason = (
            f"the store {svc.config.db_path} cannot open a write transaction: check free disk space, permissions "
            "and the server log"
        )
    response = jsonify({"status": "unavailable", "store": "not writable", "message": reason})
    response.status_code = 503
    return response


@bp.get("/metrics")
def metrics():
    """Prometheus metrics of this server."""
    return current_app.extensions[EXTENSION].render(request.headers.get("Accept"))
