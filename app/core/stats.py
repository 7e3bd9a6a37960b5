"""Counts, percentiles and histograms: the one place every number a user sees is computed."""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from typing import Any, NamedTuple

from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

# Histogram bucket upper bounds in milliseconds; the last bucket catches everything slower.
HISTOGRAM_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# Percentiles a batch shows, and the relative error allowed in those of a running batch.
PERCENTILES = (50, 90, 95, 99)
RELATIVE_ACCURACY = 0.01
SKETCH_FROM = 64  # latencies a Sketch keeps as they are (512 bytes) before it sketches them
# Errors that never reached the network say nothing about latency.
NO_LATENCY = frozenset({"cancelled", "blocked", "invalid_url"})


class Row(NamedTuple):
    """The few fields of a result that statistics need (the stored columns of a result, in this order)."""

    ok: bool
    status_code: int | None
    error_kind: str | None
    total_ms: float | None
    bytes: int
    warn: bool = False  # outcome "warn" (ok is true for it too)
    reasons: str | None = None  # the rules of the result's reasons as " rule rule " (spaces around each), or None
    warnings: str | None = None  # its warnings' kinds, the same way


def row_of(result: dict[str, Any]) -> Row:
    """Project a result (as JSON data) onto the fields statistics need."""
    error = result.get("error")
    reasons = result.get("reasons")
    warnings = result.get("warnings")
    return Row(
        bool(result.get("ok")),
        result.get("status_code"),
        error["kind"] if error else None,
        (result.get("timings") or {}).get("total"),
        result.get("bytes") or 0,
        result.get("outcome") == "warn",
        names(reason["rule"] for reason in reasons) if reasons else None,
        names(warning["kind"] for warning in warnings) if warnings else None,
    )


def names(items: Any) -> str:
    """Rule names or warning kinds as one stored text, " a b ": a filter finds " a " in it."""
    return " " + " ".join(items) + " "


def outcome(row: Row) -> str:
    """How a result counts: "ok", "warn", "cancelled", or "failed" (any other error, a `status` one among them)."""
    if row.ok:
        return "warn" if row.warn else "ok"
    return "cancelled" if row.error_kind == "cancelled" else "failed"


def latency_ms(row: Row) -> float | None:
    """The result's total time when it says something about latency (it reached the network), else None."""
    if row.total_ms is None or row.error_kind in NO_LATENCY:
        return None
    return row.total_ms


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    return round(sorted_values[_rank(len(sorted_values), p) - 1], 2)


def _rank(n: int, p: float) -> int:
    """The 1-based nearest rank of percentile p among n values."""
    return max(1, math.ceil(p / 100 * n))


def counts(
    total: int, ok: int, failed: int, cancelled: int, running: int = 0, warn: int = 0, waiting: int = 0
) -> dict[str, int]:
    """Counts of a batch by outcome; `ok` includes `warn`; waiting is what its host's Retry-After pause holds
    back, pending what has neither finished nor started nor waits so."""
    pending = max(0, total - ok - failed - cancelled - running - waiting)
    return {
        "total": total,
        "pending": pending,
        "waiting": waiting,
        "running": running,
        "ok": ok,
        "failed": failed,
        "cancelled": cancelled,
        "warn": warn,
    }


class Tally:
    """A batch's counts and statistics, kept up to date one result at a time.

    add() is O(1); counts() and summary() cost O(histogram buckets + sketch bins), whatever the batch's
    size. Counts, breakdowns, bytes, the histogram and min/max/mean are exact. Percentiles come from a
    DDSketch: the value it gives for a rank is within RELATIVE_ACCURACY of the true value at that rank.
    With `keep_latencies`, every latency is also kept (8 bytes each) so that summary(exact=True), asked
    once when the batch ends, gives exact percentiles.

    Tallies of parts of a batch merge into the tally of the whole (merge()), and one travels as JSON-ready
    data (state(), from_state()): both cost O(histogram buckets + sketch bins), however many results.

    Every result that did not end ok has one error kind, so by_error without `cancelled` adds up to the
    failed count (results stored before the `status` kind have a failed status and no kind).
    """

    def __init__(self, keep_latencies: bool = False):
        """An empty tally."""
        self.ok = self.failed = self.cancelled = self.warn = 0
        self.bytes = 0
        self._by_reason: dict[str, int] = {}
        self._by_warning: dict[str, int] = {}
        self._by_status: dict[int, int] = {}
        self._by_error: dict[str, int] = {}
        self._buckets = [0] * (len(HISTOGRAM_BOUNDS_MS) + 1)
        self._timed = 0  # results with a latency
        self._sum_ms = 0.0
        self._min_ms = math.inf
        self._max_ms = -math.inf
        # DDSketch(RELATIVE_ACCURACY), built from its parts so that state() reads the stores it holds.
        self._positive, self._negative = DenseStore(), DenseStore()
        self._sketch = BaseDDSketch(LogarithmicMapping(RELATIVE_ACCURACY), self._positive, self._negative, 0.0)
        self._latencies: array[float] | None = array("d") if keep_latencies else None

    @property
    def finished(self) -> int:
        """Results added so far."""
        return self.ok + self.failed + self.cancelled

    def add(self, row: Row) -> None:
        """Count one final result."""
        ok, status_code, error_kind, total_ms, size, warn, reasons, warnings = row
        if ok:  # outcome(row), inlined as latency_ms is below: this runs once per URL
            self.ok += 1
            if warn:
                self.warn += 1
        elif error_kind == "cancelled":
            self.cancelled += 1
        else:
            self.failed += 1
        if status_code is not None:
            self._by_status[status_code] = self._by_status.get(status_code, 0) + 1
        if error_kind:
            self._by_error[error_kind] = self._by_error.get(error_kind, 0) + 1
        self.bytes += size
        if reasons is not None:
            _count_names(self._by_reason, reasons)
        if warnings is not None:
            _count_names(self._by_warning, warnings)
        if total_ms is None or error_kind in NO_LATENCY:
            return  # latency_ms(row) is None
        self._buckets[bisect_left(HISTOGRAM_BOUNDS_MS, total_ms)] += 1
        self._timed += 1
        self._sum_ms += total_ms
        if total_ms < self._min_ms:
            self._min_ms = total_ms
        if total_ms > self._max_ms:
            self._max_ms = total_ms
        self._sketch.add(total_ms)
        if self._latencies is not None:
            self._latencies.append(total_ms)

    def merge(self, other: Tally) -> None:
        """Count another tally's results too, as if each had been added here.

        Latencies stay kept only if both tallies keep them; else summary(exact=True) estimates.
        """
        self.ok += other.ok
        self.failed += other.failed
        self.cancelled += other.cancelled
        self.warn += other.warn
        self.bytes += other.bytes
        for name, n in other._by_reason.items():
            self._by_reason[name] = self._by_reason.get(name, 0) + n
        for name, n in other._by_warning.items():
            self._by_warning[name] = self._by_warning.get(name, 0) + n
        for code, n in other._by_status.items():
            self._by_status[code] = self._by_status.get(code, 0) + n
        for kind, n in other._by_error.items():
            self._by_error[kind] = self._by_error.get(kind, 0) + n
        self._buckets = [a + b for a, b in zip(self._buckets, other._buckets)]
        self._timed += other._timed
        self._sum_ms += other._sum_ms
        self._min_ms = min(self._min_ms, other._min_ms)
        self._max_ms = max(self._max_ms, other._max_ms)
        self._sketch.merge(other._sketch)
        if self._latencies is not None:
            if other._latencies is None:
                self._latencies = None
            else:
                self._latencies.extend(other._latencies)

    def state(self) -> dict[str, Any]:
        """Everything the tally counts but its kept latencies, as JSON-ready data for from_state()."""
        timed = self._timed
        return {
            "ok": self.ok,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "warn": self.warn,
            "by_reason": dict(self._by_reason),
            "by_warning": dict(self._by_warning),
            "bytes": self.bytes,
            "by_status": {str(code): n for code, n in self._by_status.items()},
            "by_error": dict(self._by_error),
            "buckets": list(self._buckets),
            "timed": timed,
            "sum_ms": self._sum_ms,
            "min_ms": self._min_ms if timed else None,
            "max_ms": self._max_ms if timed else None,
            "sketch": {
                # What the sketch counted at zero is the rest of its count (floats that hold whole numbers).
                "zero": int(self._sketch.count - self._positive.count - self._negative.count),
                "positive": _store_state(self._positive),
                "negative": _store_state(self._negative),
            },
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Tally:
        """The tally a state() describes (its latencies are not kept)."""
        tally = cls()
        tally.ok, tally.failed, tally.cancelled = state["ok"], state["failed"], state["cancelled"]
        tally.bytes = state["bytes"]
        tally.warn = state.get("warn", 0)  # a state stored before the warn tier has none
        tally._by_reason = dict(state.get("by_reason") or {})
        tally._by_warning = dict(state.get("by_warning") or {})
        tally._by_status = {int(code): n for code, n in state["by_status"].items()}
        tally._by_error = dict(state["by_error"])
        tally._buckets = list(state["buckets"])
        tally._timed = state["timed"]
        tally._sum_ms = state["sum_ms"]
        if tally._timed:
            tally._min_ms, tally._max_ms = state["min_ms"], state["max_ms"]
        sketch = state["sketch"]
        tally._positive, tally._negative = _store_of(sketch["positive"]), _store_of(sketch["negative"])
        tally._sketch = BaseDDSketch(
            LogarithmicMapping(RELATIVE_ACCURACY), tally._positive, tally._negative, float(sketch["zero"])
        )
        return tally

    def counts(self, total: int, running: int = 0, waiting: int = 0) -> dict[str, int]:
        """Counts of the batch by outcome (see counts())."""
        return counts(total, self.ok, self.failed, self.cancelled, running, self.warn, waiting)

    def summary(self, exact: bool = False) -> dict[str, Any]:
        """Latency percentiles, histogram, breakdowns by status and error kind, and bytes.

        exact: percentiles from the kept latencies (one sort), when the tally keeps them.
        """
        timed = self._timed
        if exact and self._latencies is not None:
            ordered = sorted(self._latencies)
            p50, p90, p95, p99 = (percentile(ordered, p) for p in PERCENTILES)
            del ordered
        else:
            p50, p90, p95, p99 = (self._estimate(p) for p in PERCENTILES)
        buckets: list[dict[str, Any]] = [{"le_ms": b, "count": c} for b, c in zip(HISTOGRAM_BOUNDS_MS, self._buckets)]
        buckets.append({"le_ms": None, "count": self._buckets[-1]})
        return {
            "p50_ms": p50,
            "p90_ms": p90,
            "p95_ms": p95,
            "p99_ms": p99,
            "min_ms": round(self._min_ms, 2) if timed else None,
            "max_ms": round(self._max_ms, 2) if timed else None,
            "mean_ms": round(self._sum_ms / timed, 2) if timed else None,
            "by_status": dict(sorted((str(code), n) for code, n in self._by_status.items())),
            "by_error": dict(sorted(self._by_error.items())),
            "by_reason": dict(sorted(self._by_reason.items())),
            "by_warning": dict(sorted(self._by_warning.items())),
            "bytes": self.bytes,
            "histogram": buckets,
        }

    def _estimate(self, p: float) -> float | None:
        """The sketch's value at the nearest-rank percentile p, within RELATIVE_ACCURACY of the true one."""
        return _sketched(self._sketch, self._timed, self._min_ms, self._max_ms, p)


class Sketch:
    """Latencies for a percentile: kept as they are up to SKETCH_FROM of them (exact), then in a DDSketch whose
    bins grow with the spread of the values (log scale), not their number (within RELATIVE_ACCURACY). What a
    Tally does for a batch, for each of many parts of one (its hosts)."""

    __slots__ = ("count", "_values", "_low", "_high", "_sketch")

    def __init__(self) -> None:
        """No latency yet."""
        self.count = 0
        self._values: array[float] | None = array("d")
        self._low, self._high = math.inf, -math.inf
        self._sketch: BaseDDSketch | None = None

    def add(self, ms: float) -> None:
        """Count one latency."""
        self.count += 1
        self._low, self._high = min(self._low, ms), max(self._high, ms)
        if self._values is not None:
            self._values.append(ms)
            if len(self._values) < SKETCH_FROM:
                return
            self._sketch = BaseDDSketch(LogarithmicMapping(RELATIVE_ACCURACY), DenseStore(), DenseStore(), 0.0)
            for value in self._values:
                self._sketch.add(value)
            self._values = None
            return
        assert self._sketch is not None
        self._sketch.add(ms)

    def percentile(self, p: float) -> float | None:
        """The nearest-rank percentile p (exact, or within RELATIVE_ACCURACY once sketched), rounded to 0.01 ms;
        None without latencies."""
        if self._values is not None:
            return percentile(sorted(self._values), p)
        assert self._sketch is not None
        return _sketched(self._sketch, self.count, self._low, self._high, p)


def _sketched(sketch: BaseDDSketch, n: int, low: float, high: float, p: float) -> float | None:
    """A sketch's value at the nearest-rank percentile p of its n values (low to high, exact)."""
    if not n:
        return None
    index = _rank(n, p) - 1  # 0-based
    # The sketch takes a quantile q and looks up the value at 0-based rank q * (n - 1), counting a bin
    # as holding that rank once its running count exceeds it: index + 0.5 falls inside the bin of the
    # value at `index`, and never lands a float error short of it.
    q = min(1.0, (index + 0.5) / (n - 1)) if n > 1 else 0.0
    value = sketch.get_quantile_value(q)
    if value is None:
        return None
    # A bin's representative value may lie just outside what was seen; min and max are exact.
    return round(min(max(value, low), high), 2)


def _count_names(counts: dict[str, int], text: str) -> None:
    """Count each name of a names() text once."""
    for name in text.split():
        counts[name] = counts.get(name, 0) + 1


def _store_state(store: DenseStore) -> list[Any]:
    """A sketch store's bins as [lowest key, [count of each key from it up]]; [0, []] when empty."""
    if not store.count:
        return [0, []]
    low, offset, bins = store.min_key, store.offset, store.bins
    return [low, [int(bins[key - offset]) for key in range(low, store.max_key + 1)]]


def _store_of(state: list[Any]) -> DenseStore:
    """The sketch store a _store_state() describes."""
    store = DenseStore()
    low, counts = state
    if not counts:
        return store
    # The two ends through add(), which sizes the bins once; the keys between straight into the bins (as
    # _store_state reads them). Adding every key in order re-sized the bins at each, and a cluster worker reads
    # the batch's tally at every append.
    high = low + len(counts) - 1
    store.add(low, float(counts[0]))
    if high != low:
        store.add(high, float(counts[-1]))
        middle = counts[1:-1]
        start = low + 1 - store.offset
        store.bins[start : start + len(middle)] = [float(n) for n in middle]
        store.count += sum(middle)
    return store


def throughput(finished: int, started_at: float | None, ended_at: float | None) -> float | None:
    """URLs per second over a batch's run so far."""
    if not started_at or not ended_at or ended_at <= started_at:
        return None
    return round(finished / (ended_at - started_at), 2)


def batch_summary(
    tally: Tally,
    total: int,
    started_at: float | None,
    now: float,
    running: int = 0,
    exact: bool = False,
    waiting: int = 0,
) -> dict[str, Any]:
    """A batch's counts and statistics so far, from its tally (the same cost at any size): its progress events,
    the summary of a running batch, and (exact) the summary stored for an ended one.

    exact: percentiles from the tally's kept latencies (Tally.summary), when it keeps them.
    """
    batch_counts = tally.counts(total, running, waiting)
    # The rate is of URLs fetched: a cancelled batch's never-run URLs took no time and say nothing of speed.
    fetched = batch_counts["ok"] + batch_counts["failed"]
    rate = throughput(fetched, started_at, now) if fetched else None
    return {"counts": batch_counts, "stats": {**tally.summary(exact=exact), "urls_per_s": rate}}
