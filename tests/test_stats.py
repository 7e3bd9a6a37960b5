"""A batch's statistics kept one result at a time equal those recomputed from every result.

Counts, breakdowns, bytes, the histogram, min and max are exact; the mean is exact but for the order of
its sum; the percentiles of a running batch are within 1 % of the exact ones, and those of a finished
batch are exact.
"""

from __future__ import annotations

import json
import math
import random

import pytest

from app.core.config import Config
from app.core.stats import HISTOGRAM_BOUNDS_MS, RELATIVE_ACCURACY, SKETCH_FROM, Row, Sketch, Tally, batch_summary
from app.fetch import guard
from app.runs.engine import Engine
from app.runs.events import Event, EventBus
from app.runs.reader import BatchReader
from app.runs.store import SQLiteStore

KINDS = ["status", "dns", "refused", "read_timeout", "deadline", "tls", "too_large", "other"]
NO_LATENCY = ["cancelled", "blocked", "invalid_url"]


def random_rows(rng: random.Random, n: int) -> list[Row]:
    """Results as a batch may end them: mostly ok, some failed with or without a status, some cancelled."""
    rows = []
    for _ in range(n):
        shape = rng.random()
        latency = round(rng.choice([rng.lognormvariate(3, 1.2), rng.uniform(0, 3), rng.uniform(900, 60_000)]), 3)
        if shape < 0.65:
            rows.append(Row(True, rng.choice([200, 200, 204, 301]), None, latency, rng.randrange(0, 100_000)))
        elif shape < 0.75:  # warned: ok, with a reason and its warning, maybe another warning mapped to ok
            kinds = rng.choice([" temporary_redirect ", " temporary_redirect long_chain ", " bot_challenge "])
            rows.append(Row(True, rng.choice([200, 999]), None, latency, 0, True, kinds.split()[0].join("  "), kinds))
        elif shape < 0.85:
            reasons = rng.choice([" accept_status ", " expect.final_url expect.status ", " check[0] "])
            rows.append(
                Row(False, rng.choice([404, 500, 503]), "status", latency, rng.randrange(0, 500), False, reasons)
            )
        elif shape < 0.95:
            rows.append(Row(False, None, rng.choice(KINDS), latency, 0))
        elif shape < 0.98:
            rows.append(Row(False, None, rng.choice(NO_LATENCY), 0.0, 0))
        else:
            rows.append(Row(False, None, None, None, 0))  # stored before the `status` kind and timings
    return rows


def nearest_rank(ordered: list[float], p: float) -> float:
    """The value at percentile p by the nearest-rank rule."""
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def recomputed(total: int, rows: list[Row]) -> dict:
    """Every figure of a batch computed from scratch from all of its results."""
    ok = sum(r.ok for r in rows)
    warn = sum(r.warn for r in rows)
    by_reason: dict[str, int] = {}
    by_warning: dict[str, int] = {}
    for r in rows:
        for name in (r.reasons or "").split():
            by_reason[name] = by_reason.get(name, 0) + 1
        for name in (r.warnings or "").split():
            by_warning[name] = by_warning.get(name, 0) + 1
    cancelled = sum(not r.ok and r.error_kind == "cancelled" for r in rows)
    failed = len(rows) - ok - cancelled
    latencies = sorted(r.total_ms for r in rows if r.total_ms is not None and r.error_kind not in NO_LATENCY)
    by_status: dict[str, int] = {}
    by_error: dict[str, int] = {}
    for r in rows:
        if r.status_code is not None:
            by_status[str(r.status_code)] = by_status.get(str(r.status_code), 0) + 1
        if r.error_kind:
            by_error[r.error_kind] = by_error.get(r.error_kind, 0) + 1
    bounds = [*HISTOGRAM_BOUNDS_MS, math.inf]
    histogram = [
        {"le_ms": None if bound == math.inf else bound, "count": sum(low < v <= bound for v in latencies)}
        for low, bound in zip([-math.inf, *bounds], bounds)
    ]
    return {
        "counts": {
            "total": total,
            "pending": total - len(rows),
            "waiting": 0,
            "running": 0,
            "ok": ok,
            "failed": failed,
            "cancelled": cancelled,
            "warn": warn,
        },
        "latencies": latencies,
        "stats": {
            "p50_ms": round(nearest_rank(latencies, 50), 2) if latencies else None,
            "p90_ms": round(nearest_rank(latencies, 90), 2) if latencies else None,
            "p95_ms": round(nearest_rank(latencies, 95), 2) if latencies else None,
            "p99_ms": round(nearest_rank(latencies, 99), 2) if latencies else None,
            "min_ms": round(latencies[0], 2) if latencies else None,
            "max_ms": round(latencies[-1], 2) if latencies else None,
            "mean_ms": round(sum(latencies) / len(latencies), 2) if latencies else None,
            "by_status": dict(sorted(by_status.items())),
            "by_error": dict(sorted(by_error.items())),
            "by_reason": dict(sorted(by_reason.items())),
            "by_warning": dict(sorted(by_warning.items())),
            "bytes": sum(r.bytes for r in rows),
            "histogram": histogram,
        },
    }


def within_stated_error(estimate: float | None, exact: float | None) -> bool:
    """Within RELATIVE_ACCURACY of the exact value, give or take the rounding of both to 0.01 ms."""
    if exact is None:
        return estimate is None
    return estimate is not None and abs(estimate - exact) <= RELATIVE_ACCURACY * exact + 0.01


@pytest.mark.parametrize("n", [0, 1, 2, 3, 10, 99, 100, 101, 1_000, 25_000])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_tally_fed_one_result_at_a_time_equals_a_recomputation_from_every_result(n, seed):
    rows = random_rows(random.Random(seed * 1_000_003 + n), n)
    total = n + 7
    tally = Tally()
    for row in rows:
        tally.add(row)
    expected = recomputed(total, rows)

    assert tally.counts(total) == expected["counts"]
    summary = tally.summary()
    exact = expected["stats"]
    for key in ("by_status", "by_error", "bytes", "histogram", "min_ms", "max_ms"):
        assert summary[key] == exact[key], key
    if exact["mean_ms"] is None:
        assert summary["mean_ms"] is None
    else:  # the same sum taken in another order may differ in its last bit, never by a cent
        assert summary["mean_ms"] == pytest.approx(exact["mean_ms"], abs=0.01)
    for key in ("p50_ms", "p90_ms", "p95_ms", "p99_ms"):
        assert within_stated_error(summary[key], exact[key]), (key, summary[key], exact[key])
    assert list(summary) == list(exact), "the same fields in the same order"


def test_the_counts_of_a_running_batch_leave_its_running_urls_out_of_pending():
    tally = Tally()
    for row in [Row(True, 200, None, 5.0, 10), Row(False, None, "cancelled", 0.0, 0), Row(False, 500, "status", 1, 0)]:
        tally.add(row)
    assert tally.counts(10, running=3) == {
        "total": 10,
        "pending": 4,
        "waiting": 0,
        "running": 3,
        "ok": 1,
        "failed": 1,
        "cancelled": 1,
        "warn": 0,
    }


def test_urls_held_back_by_their_hosts_pause_count_as_waiting_not_pending():
    tally = Tally()
    tally.add(Row(True, 200, None, 5.0, 10))
    counts = tally.counts(10, running=2, waiting=5)
    assert (counts["pending"], counts["waiting"], counts["running"], counts["ok"]) == (2, 5, 2, 1)


def test_a_batch_summary_rates_the_urls_fetched_per_second_never_the_cancelled_ones_that_never_ran():
    tally = Tally()
    for row in [Row(True, 200, None, 5.0, 10)] * 6 + [Row(False, 500, "status", 1, 0)] * 2:
        tally.add(row)
    for _ in range(12):
        tally.add(Row(False, None, "cancelled", None, 0))
    summary = batch_summary(tally, 25, started_at=100.0, now=104.0, running=3)
    assert summary["counts"] == tally.counts(25, running=3)
    assert summary["stats"] == {**tally.summary(), "urls_per_s": 2.0}, "8 URLs fetched in 4 s"
    assert list(summary["stats"])[-1] == "urls_per_s"
    cancelled_only = Tally()
    cancelled_only.add(Row(False, None, "cancelled", None, 0))
    assert batch_summary(cancelled_only, 1, 100.0, 104.0)["stats"]["urls_per_s"] is None, "nothing fetched: no rate"
    assert batch_summary(tally, 25, None, 104.0)["stats"]["urls_per_s"] is None, "not started: no rate"


@pytest.mark.parametrize("n", [1, 2, 99, 100, 101, 20_000])
def test_a_tally_that_keeps_its_latencies_gives_exact_percentiles_when_asked_for_the_final_summary(n):
    rows = random_rows(random.Random(n), n)
    tally = Tally(keep_latencies=True)
    for row in rows:
        tally.add(row)
    exact = recomputed(n, rows)["stats"]
    final = tally.summary(exact=True)
    assert (final["p50_ms"], final["p90_ms"], final["p99_ms"]) == (exact["p50_ms"], exact["p90_ms"], exact["p99_ms"])
    live = tally.summary()
    assert all(within_stated_error(live[key], exact[key]) for key in ("p50_ms", "p90_ms", "p99_ms"))


def test_percentiles_of_latencies_spread_over_six_orders_of_magnitude_stay_within_one_percent():
    rng = random.Random(15)
    latencies = [10 ** rng.uniform(-1, 5) for _ in range(50_000)]
    tally = Tally()
    for ms in latencies:
        tally.add(Row(True, 200, None, ms, 0))
    ordered = sorted(latencies)
    for p in (1, 10, 25, 50, 75, 90, 99, 99.9):
        estimate = tally._estimate(p)
        assert within_stated_error(estimate, round(nearest_rank(ordered, p), 2)), p


def test_a_finished_batch_stores_the_exact_percentiles_of_its_results(server, target):
    rng = random.Random(14)
    urls = [target.url(f"/delay/{rng.choice([0, 0, 1, 2, 5, 10, 20])}?i={i}") for i in range(300)]
    batch = server.submit(urls, concurrency=20)
    done = server.wait(batch["id"])
    results = server.results(batch["id"])
    ordered = sorted(r["timings"]["total"] for r in results)
    assert len(ordered) == 300
    assert (done["stats"]["p50_ms"], done["stats"]["p90_ms"], done["stats"]["p99_ms"]) == tuple(
        round(nearest_rank(ordered, p), 2) for p in (50, 90, 99)
    )
    assert done["stats"]["max_ms"] == round(ordered[-1], 2) and done["stats"]["min_ms"] == round(ordered[0], 2)


def test_a_batch_left_unfinished_by_a_stopped_server_is_counted_from_its_stored_results_page_by_page(tmp_path):
    rows = random_rows(random.Random(7), 25_000)  # more than one page of stored rows
    config = Config(data_dir=str(tmp_path))
    store = SQLiteStore(config.db_path, flush_interval=0.01)
    try:
        store.create_batch("b", "left", {}, [f"http://a.test/{i}" for i in range(30_000)], "2026-11-28T00:00:00.000Z")
        store.extend([Event("b", i + 1, "result", {"index": i}, row=row) for i, row in enumerate(rows)])
        assert store.flush(30)
        policy = guard.Policy.from_settings(config.allow_private, config.allow_targets, config.deny_targets)
        engine = Engine(config, store, EventBus(store), policy)  # never resumed: the batch is not live
        view = BatchReader(store, engine).get("b")
        expected = recomputed(30_000, rows)
        assert view.counts == expected["counts"]
        for key in ("by_status", "by_error", "bytes", "histogram", "min_ms", "max_ms"):
            assert view.stats[key] == expected["stats"][key], key
        for key in ("p50_ms", "p90_ms", "p95_ms", "p99_ms"):
            assert within_stated_error(view.stats[key], expected["stats"][key]), key
    finally:
        store.close()


@pytest.mark.parametrize("parts", [1, 2, 7, 50])
def test_a_tally_merged_from_tallies_of_parts_equals_one_tally_of_every_result(parts):
    rows = random_rows(random.Random(parts), 20_000)
    whole = Tally()
    for row in rows:
        whole.add(row)
    merged = Tally()
    for start in range(parts):
        part = Tally()
        for row in rows[start::parts]:
            part.add(row)
        merged.merge(part)

    assert merged.counts(25_000) == whole.counts(25_000)
    summary, expected = merged.summary(), whole.summary()
    # Sketches of parts merge bin by bin: the estimates are the same ones, not merely as close.
    assert {k: v for k, v in summary.items() if k != "mean_ms"} == {k: v for k, v in expected.items() if k != "mean_ms"}
    assert summary["mean_ms"] == pytest.approx(expected["mean_ms"], abs=0.01)
    exact = recomputed(25_000, rows)["stats"]
    for key in ("p50_ms", "p90_ms", "p95_ms", "p99_ms"):
        assert within_stated_error(summary[key], exact[key]), key


def test_a_tally_travels_as_json_and_comes_back_counting_the_same():
    rows = random_rows(random.Random(3), 5_000)
    tally = Tally()
    for row in rows[:4_000]:
        tally.add(row)
    state = json.loads(json.dumps(tally.state()))
    back = Tally.from_state(state)
    assert back.summary() == tally.summary() and back.counts(5_000) == tally.counts(5_000)
    assert back.state() == state
    for row in rows[4_000:]:  # it keeps counting from where it was
        back.add(row)
        tally.add(row)
    assert back.summary() == tally.summary()


def test_an_empty_tally_travels_and_merges_as_no_results():
    empty = Tally.from_state(json.loads(json.dumps(Tally().state())))
    assert empty.summary() == Tally().summary() and empty.finished == 0
    tally = Tally()
    tally.add(Row(True, 200, None, 12.5, 10))
    before = tally.summary()
    tally.merge(empty)
    assert tally.summary() == before
    empty.merge(tally)
    assert empty.summary() == before


def test_merged_tallies_keep_their_latencies_for_exact_percentiles_only_when_both_keep_them():
    rows = random_rows(random.Random(5), 3_000)
    left, right = Tally(keep_latencies=True), Tally(keep_latencies=True)
    for i, row in enumerate(rows):
        (left if i % 3 else right).add(row)
    left.merge(right)
    exact = recomputed(3_000, rows)["stats"]
    final = left.summary(exact=True)
    assert [final[k] for k in ("p50_ms", "p90_ms", "p99_ms")] == [exact[k] for k in ("p50_ms", "p90_ms", "p99_ms")]
    left.merge(Tally.from_state(right.state()))  # its latencies did not travel: exact is no longer possible
    assert left.summary(exact=True) == left.summary()


def test_a_sketch_gives_the_exact_median_of_a_few_latencies_and_one_within_the_stated_error_of_many():
    rng = random.Random(18)
    for count in (1, 2, SKETCH_FROM - 1, SKETCH_FROM, 5_000):
        latencies = [rng.lognormvariate(4, 1.5) for _ in range(count)]
        sketch = Sketch()
        for latency in latencies:
            sketch.add(latency)
        exact = round(nearest_rank(sorted(latencies), 50), 2)
        if count < SKETCH_FROM:
            assert sketch.percentile(50) == exact, count
        else:
            assert within_stated_error(sketch.percentile(50), exact), count
    assert Sketch().percentile(50) is None
