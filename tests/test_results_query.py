"""The results query on the store itself, SQLite's and PostgreSQL's alike: every filter, sort and offset gives
what filtering and sorting the results by hand gives; in SQLite each reads an index (never the whole batch), and
an older file gets the indexes."""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import pytest

from app.core.stats import latency_ms, outcome, row_of
from app.runs.events import Event
from app.runs.store import SQLiteStore, queries
from app.runs.store.base import RESULT_SORTS, ResultQuery
from app.runs.store.schema import EVENT_INDEXES

BATCH = "b0"
SIZE = 400
LIMIT = 37  # an odd page, so pages cross from results with a value to those without one
STARTED = "2026-12-06T00:00:00.000Z"


def made_result(index: int, rnd: random.Random) -> dict[str, Any]:
    """A result as the engine stores it: ok, failed by status or by error, blocked, or cancelled (some in flight)."""
    url = f"http://host{index % 7}.test/{index}" + ("?deal=50%_off" if index % 50 == 3 else "")
    kind = rnd.choice([None, None, None, "status", "dns", "blocked", "cancelled", "read_timeout", "invalid_url"])
    code = rnd.choice([200, 204, 404, 500]) if kind in (None, "status") else None
    if kind is None and code not in (200, 204):
        code = 200
    if kind == "status" and code in (200, 204):
        code = 503
    total = {None: None, "cancelled": rnd.choice([0.0, 12.5]), "blocked": 0.0, "invalid_url": 0.0}.get(kind, -1.0)
    if total == -1.0:
        total = float(rnd.randrange(1, 60))  # whole milliseconds: plenty of ties
    return {
        "index": index,
        "url": url,
        "final_url": (url + "/moved" if index % 5 == 0 else url) if code else None,
        "status_code": code,
        "ok": kind is None,
        "error": None if kind is None else {"kind": kind, "message": f"{kind} at #{index}"},
        "bytes": rnd.randrange(0, 5) * 100 if code else 0,
        "timings": {"total": total} if total is not None else {},
    }


@pytest.fixture(scope="module")
def stored(module_store_factory):
    """A store holding one batch of SIZE mixed results, stored out of index order among other events."""
    rnd = random.Random(15)
    store = module_store_factory(flush_interval=0.01)
    store.create_batch(BATCH, "mixed", {}, [f"http://host.test/{i}" for i in range(SIZE)], STARTED)
    results = [made_result(i, rnd) for i in range(SIZE)]
    order = list(range(SIZE))
    rnd.shuffle(order)
    events, seq = [], 0
    for n, index in enumerate(order):
        if n % 50 == 0:
            seq += 1
            events.append(Event(BATCH, seq, "progress", {"counts": {}}))
        seq += 1
        events.append(Event(BATCH, seq, "result", results[index], row=row_of(results[index])))
    store.extend(events)
    assert store.flush(10)
    return store, results


def by_hand(results: list[dict[str, Any]], query: ResultQuery) -> list[dict[str, Any]]:
    """What the query should answer, worked out in Python with the page's rules."""

    def kept(r: dict[str, Any]) -> bool:
        row = row_of(r)
        ended = outcome(row)
        if query.outcome == "not_ok" and ended == "ok" or query.outcome not in (None, "not_ok", ended):
            return False
        if query.status is not None and r["status_code"] != query.status:
            return False
        if query.error is not None and row.error_kind != query.error:
            return False
        text = query.q.lower() if query.q else ""
        return not text or text in r["url"].lower() or text in (r["final_url"] or "").lower()

    def value(r: dict[str, Any]) -> Any:
        row = row_of(r)
        return {
            "index": r["index"],
            "status": r["status_code"],
            "latency": latency_ms(row),
            "size": row.bytes if row.status_code is not None else None,
        }[query.sort]

    matching = [r for r in results if kept(r)]
    with_value = sorted((r for r in matching if value(r) is not None), key=lambda r: (value(r), r["index"]))
    without = sorted((r for r in matching if value(r) is None), key=lambda r: r["index"])
    if query.descending:
        with_value.reverse()
        without.reverse()
    return with_value + without


FILTERS = [
    {},
    {"outcome": "ok"},
    {"outcome": "failed"},
    {"outcome": "cancelled"},
    {"outcome": "not_ok"},
    {"status": 404},
    {"error": "dns"},
    {"error": "cancelled"},
    {"q": "HOST3.test/1"},
    {"q": "50%_off"},
    {"outcome": "failed", "status": 500},
    {"outcome": "ok", "q": "/moved"},
]


@pytest.mark.parametrize("sort", RESULT_SORTS)
@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
def test_every_filter_sort_and_offset_answers_what_sorting_the_results_by_hand_does(stored, sort, descending):
    store, results = stored
    for given in FILTERS:
        wanted = by_hand(results, ResultQuery(sort=sort, descending=descending, **given))
        for offset in sorted({0, LIMIT, 5 * LIMIT, max(0, len(wanted) - 1), len(wanted)}):
            query = ResultQuery(sort=sort, descending=descending, offset=offset, limit=LIMIT, **given)
            page = store.result_page(BATCH, query)
            where = f"{given} at {offset}"
            assert [r["index"] for r in page.results] == [r["index"] for r in wanted[offset : offset + LIMIT]], where
            assert (page.total, page.total_exact, page.offset) == (len(wanted), True, offset), where


def test_failed_is_what_the_counts_call_failed_and_not_ok_adds_the_cancelled(stored):
    store, results = stored
    ended = {r["index"]: outcome(row_of(r)) for r in results}
    every = [r["index"] for r in store.results(BATCH, limit=1000)]
    assert every == list(range(SIZE))
    for name, wanted in [("ok", {"ok"}), ("failed", {"failed"}), ("cancelled", {"cancelled"})]:
        assert [r["index"] for r in store.results(BATCH, limit=1000, outcome=name)] == [
            i for i in every if ended[i] in wanted
        ]
    assert [r["index"] for r in store.results(BATCH, limit=1000, outcome="not_ok")] == [
        i for i in every if ended[i] != "ok"
    ]


def test_a_finished_batch_finds_an_offset_in_index_order_by_the_index_itself(stored):
    store, results = stored
    for descending in (False, True):
        for offset in (0, 1, 123, SIZE - 1, SIZE):
            query = ResultQuery(descending=descending, offset=offset, limit=LIMIT)
            dense = store.result_page(BATCH, query, total=SIZE, dense=True)
            assert dense == store.result_page(BATCH, query), (descending, offset)


def test_a_page_can_start_at_a_url_index_and_says_which_offset_that_is(stored):
    store, results = stored
    failed = by_hand(results, ResultQuery(outcome="failed"))
    start = failed[10]["index"] - 1  # not itself failed: the page starts at the next one that is
    page = store.result_page(BATCH, ResultQuery(outcome="failed", start=start, limit=5))
    assert [r["index"] for r in page.results] == [r["index"] for r in failed[10:15]]
    assert page.offset == 10
    back = store.result_page(BATCH, ResultQuery(outcome="failed", start=start, descending=True, limit=5))
    assert [r["index"] for r in back.results] == [r["index"] for r in failed[9:4:-1]]
    assert back.offset == len(failed) - 10
    unlocated = store.result_page(BATCH, ResultQuery(start=7, limit=2, locate=False))
    assert ([r["index"] for r in unlocated.results], unlocated.offset) == ([7, 8], None)


def test_a_known_total_is_taken_as_given_and_the_page_says_how_far_the_stored_events_went(stored):
    store, _ = stored
    page = store.result_page(BATCH, ResultQuery(outcome="ok", limit=3), total=5)
    assert page.total == 5, "not counted again"
    assert page.last_seq == SIZE + SIZE // 50


def test_a_batchs_progress_reports_are_read_without_its_results(stored):
    store, _ = stored
    reports = store.events(BATCH, after=0, limit=100, types=("progress",))
    assert [e["seq"] for e in reports] == [1 + 51 * n for n in range(SIZE // 50)]
    assert store.events(BATCH, after=reports[2]["seq"], limit=2, types=("progress",)) == reports[3:5]


def test_a_search_that_runs_out_of_time_answers_what_it_found_and_says_its_total_is_a_lower_bound(stored, monkeypatch):
    store, results = stored
    monkeypatch.setattr(queries, "CHECK_EVERY", 1)
    monkeypatch.setattr(queries, "SEARCH_LIMIT", 0.0)
    monkeypatch.setattr(queries, "COUNT_LIMIT", 0.0)
    page = store.result_page(BATCH, ResultQuery(q="host", limit=LIMIT))
    assert not page.total_exact
    assert page.total >= len(page.results)
    assert [r["index"] for r in page.results] == list(range(len(page.results))), "what it found, in order"
    counted = store.result_page(BATCH, ResultQuery(outcome="failed", status=500, limit=3))
    assert not counted.total_exact and counted.total == len(counted.results) + 1, "a full page: at least one more"


# -- paging a running batch ----------------------------------------------------------------------


def _sorting(index: int, value: int) -> dict[str, Any]:
    """An ok result whose status code, size and latency all grow with `value`."""
    url = f"http://host.test/{index}"
    return {
        "index": index,
        "url": url,
        "final_url": url,
        "status_code": 100 + value // 10,
        "ok": True,
        "error": None,
        "bytes": value,
        "timings": {"total": float(value)},
    }


ORDERS = [(sort, descending) for sort in RESULT_SORTS for descending in (False, True)]


def test_pages_read_with_the_first_pages_last_seq_hold_each_result_once_while_more_are_stored(store_factory):
    # A result stored between two pages that sorts before them would move every later row on by one: without
    # until_seq the next page starts one row early (a repeat) or, for one that sorts after it, late (a skip).
    store = store_factory(flush_interval=0.01)
    seqs = dict.fromkeys(range(len(ORDERS)), 0)  # one batch per order, each with its own events

    def store_results(placed: dict[int, list[int]], value_of) -> None:
        events = []
        for n, indexes in placed.items():
            for index in indexes:
                seqs[n] += 1
                result = _sorting(index, value_of(n, index))
                events.append(Event(f"running{n}", seqs[n], "result", result, row=row_of(result)))
        store.extend(events)
        assert store.flush(10)

    for n in seqs:
        store.create_batch(f"running{n}", "running", {}, [f"http://host.test/{i}" for i in range(200)], STARTED)
    first = {n: random.Random(n).sample(range(100, 160), 60) for n in seqs}  # stored before page 1, in no order
    store_results(first, lambda n, index: 2000 + index)
    pages = {
        n: store.result_page(f"running{n}", ResultQuery(sort=s, descending=d, limit=10))
        for n, (s, d) in enumerate(ORDERS)
    }
    pins = {n: page.last_seq for n, page in pages.items()}
    seen = {n: [r["index"] for r in page.results] for n, page in pages.items()}
    for turn in range(1, 6):
        # Three results per batch that sort before every stored one in its order (an index, values past an end).
        ahead = {
            n: [99 - 3 * turn - k if not d else 160 + 3 * turn + k for k in range(3)] for n, (_, d) in enumerate(ORDERS)
        }
        store_results(ahead, lambda n, index: 1900 + index if not ORDERS[n][1] else 3000 + index)
        for n, (sort, descending) in enumerate(ORDERS):
            query = ResultQuery(sort=sort, descending=descending, limit=10, offset=10 * turn, until_seq=pins[n])
            page = store.result_page(f"running{n}", query)
            assert page.last_seq == pins[n] and page.total == 60 and page.total_exact, ORDERS[n]
            seen[n] += [r["index"] for r in page.results]
    for n, order in enumerate(ORDERS):
        assert sorted(seen[n]) == list(range(100, 160)), f"{order}: {seen[n]}"


# -- the indexes ----------------------------------------------------------------------------------

# Filters an index answers alone, and those that also read some rows (a search, or a second filter).
COVERED = [{}, {"outcome": "ok"}, {"outcome": "failed"}, {"outcome": "not_ok"}, {"status": 404}, {"error": "dns"}]
PARTLY = [{"outcome": "cancelled"}, {"q": "a"}, {"outcome": "failed", "status": 500}, {"error": "dns", "status": 404}]


def read_from_the_index_alone(given: dict[str, Any], sort: str) -> bool:
    """Whether the query needs nothing but its index: a filter the index answers, and a sort it holds."""
    if given not in COVERED:
        return False
    if sort == "index":
        return True
    if sort == "status":  # the status index's order: every filter but a status one would need the rows
        return given in ({}, {"status": 404})
    return "status" not in given and "error" not in given  # the outcome index holds latency and size


@pytest.mark.parametrize("module_store_factory", ["sqlite"], indirect=True)  # SQLite's plans: PostgreSQL plans alone
@pytest.mark.parametrize("sort", RESULT_SORTS)
@pytest.mark.parametrize("given", COVERED + PARTLY, ids=str)
def test_each_filter_and_sort_reads_an_index_and_never_scans_the_batch(stored, sort, given):
    store, _ = stored
    conn = sqlite3.connect(store.path)
    try:
        for descending in (False, True):
            query = ResultQuery(sort=sort, descending=descending, offset=900, **given)
            plan = queries.explain(conn, BATCH, query)
            assert plan[0].startswith("SEARCH events USING ") and "INDEX results_by_" in plan[0], plan
            assert not any(step.startswith("SCAN") for step in plan), plan
            if read_from_the_index_alone(given, sort):
                assert "COVERING INDEX" in plan[0], f"counted and skipped in the index: {plan}"
            by_error = "error" in given or given.get("outcome") == "cancelled"  # the error kind's index drives
            if sort == "index" or sort == "status" and not by_error:
                assert len(plan) == 1, f"read in order, never sorted: {plan}"
    finally:
        conn.close()


OLD_SCHEMA = """
CREATE TABLE events (
    batch_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, at TEXT NOT NULL, idx INTEGER, ok INTEGER,
    status_code INTEGER, error_kind TEXT, total_ms REAL, bytes INTEGER, data TEXT NOT NULL,
    PRIMARY KEY (batch_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX results_by_index ON events (batch_id, idx) WHERE type = 'result';
"""


def test_a_file_from_before_the_result_indexes_gets_them_when_opened_and_keeps_one_result_per_url(tmp_path):
    path = str(tmp_path / "old.db")
    old = {"index": 0, "url": "http://a.test/", "status_code": 404, "ok": False, "error": {"kind": "status"}}
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute(
            "INSERT INTO events VALUES ('old', 1, 'result', ?, 0, 0, 404, 'status', 5.0, 0, ?)",
            (STARTED, '{"index":0,"url":"http://a.test/","status_code":404,"ok":false,"error":{"kind":"status"}}'),
        )
    store = SQLiteStore(path, flush_interval=0.01)
    try:
        with sqlite3.connect(path) as conn:
            made = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
        assert {name: made.get(name) for name in EVENT_INDEXES} == EVENT_INDEXES
        page = store.result_page("old", ResultQuery(status=404))
        assert (page.results, page.total) == ([old], 1)
        again = Event("old", 2, "result", {**old, "status_code": 200, "ok": True, "error": None})
        store.extend([again])
        assert store.flush(10)
        assert store.results("old") == [old], "the second result of URL #0 is refused, as before"
    finally:
        store.close()
