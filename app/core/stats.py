"""Counts, percentiles and histograms: the one place every number a user sees is computed."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

# Histogram bucket upper bounds in milliseconds; the last bucket catches everything slower.
HISTOGRAM_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# Errors that never reached the network say nothing about latency.
_NO_LATENCY = frozenset({"cancelled", "blocked", "invalid_url"})


class Row(NamedTuple):
    """The few fields of a result that statistics need."""

    ok: bool
    status_code: int | None
    error_kind: str | None
    total_ms: float | None
    bytes: int


def row_of(result: dict[str, Any]) -> Row:
    """Project a result (as JSON data) onto the fields statistics need."""
    error = result.get("error")
    return Row(
        bool(result.get("ok")),
        result.get("status_code"),
        error["kind"] if error else None,
        (result.get("timings") or {}).get("total"),
        result.get("bytes") or 0,
    )


def outcome(row: Row) -> str:
    """How a result counts: "ok", "cancelled", or "failed" (any other error, a `status` one among them)."""
    if row.ok:
        return "ok"
    return "cancelled" if row.error_kind == "cancelled" else "failed"


def latency_ms(row: Row) -> float | None:
    """The result's total time when it says something about latency (it reached the network), else None."""
    if row.total_ms is None or row.error_kind in _NO_LATENCY:
        return None
    return row.total_ms


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return round(sorted_values[rank - 1], 2)


def counts(total: int, rows: Iterable[Row], running: int = 0) -> dict[str, int]:
    """Counts of a batch by outcome; pending is what has neither finished nor started."""
    by_outcome = {"ok": 0, "failed": 0, "cancelled": 0}
    for row in rows:
        by_outcome[outcome(row)] += 1
    ok, failed, cancelled = by_outcome["ok"], by_outcome["failed"], by_outcome["cancelled"]
    pending = max(0, total - ok - failed - cancelled - running)
    return {"total": total, "pending": pending, "running": running, "ok": ok, "failed": failed, "cancelled": cancelled}


def summarize(rows: Iterable[Row]) -> dict[str, Any]:
    """Latency percentiles, histogram, breakdowns by status and error kind, and bytes.

    Every result that did not end ok has one error kind, so by_error without `cancelled` adds up to the
    failed count (results stored before the `status` kind have a failed status and no kind).
    """
    latencies: list[float] = []
    by_status: dict[str, int] = {}
    by_error: dict[str, int] = {}
    total_bytes = 0
    for row in rows:
        if row.status_code is not None:
            key = str(row.status_code)
            by_status[key] = by_status.get(key, 0) + 1
        if row.error_kind:
            by_error[row.error_kind] = by_error.get(row.error_kind, 0) + 1
        latency = latency_ms(row)
        if latency is not None:
            latencies.append(latency)
        total_bytes += row.bytes
    latencies.sort()
    return {
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "min_ms": round(latencies[0], 2) if latencies else None,
        "max_ms": round(latencies[-1], 2) if latencies else None,
        "mean_ms": round(sum(latencies) / len(latencies), 2) if latencies else None,
        "by_status": dict(sorted(by_status.items())),
        "by_error": dict(sorted(by_error.items())),
        "bytes": total_bytes,
        "histogram": histogram(latencies),
    }


def histogram(sorted_latencies: list[float]) -> list[dict[str, Any]]:
    """Bucket latencies by HISTOGRAM_BOUNDS_MS; `le_ms` None marks the overflow bucket."""
    buckets: list[dict[str, Any]] = [{"le_ms": bound, "count": 0} for bound in HISTOGRAM_BOUNDS_MS]
    buckets.append({"le_ms": None, "count": 0})
    i = 0
    for value in sorted_latencies:
        while i < len(HISTOGRAM_BOUNDS_MS) and value > HISTOGRAM_BOUNDS_MS[i]:
            i += 1
        buckets[i]["count"] += 1
    return buckets


def throughput(finished: int, started_at: float | None, ended_at: float | None) -> float | None:
    """URLs per second over a batch's run so far."""
    if not started_at or not ended_at or ended_at <= started_at:
        return None
    return round(finished / (ended_at - started_at), 2)
