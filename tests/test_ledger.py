"""The cluster's ledger on a real PostgreSQL: every URL recorded once, seqs gap-free in commit order, one final
event, nothing after a cancel, and the same payloads as the single-process engine."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import psycopg
import pytest

from app.cluster.ledger import Ledger, host_of, plan_chunks
from app.core import stats
from app.core.config import Config
from app.core.jsonutil import compact_json
from app.core.options import BatchOptions
from app.core.urllist import UrlList
from app.fetch import guard
from app.runs.engine import CANCELLED_MESSAGE, BatchRun, Engine
from app.runs.events import EventBus
from app.runs.store import SQLiteStore
from tests.support.ledger_appender import fetched

CREATED = "2026-01-01T00:00:00.000Z"


def sql(pg_url: str, query: str, *params):
    """Rows of one query, read on a connection of its own."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def new_batch(ledger: Ledger, batch_id: str, total: int, chunk: int = 100) -> list[str]:
    """A stored batch of `total` URLs on 7 hosts, in chunks of `chunk`; its URLs."""
    urls = [f"http://h{i % 7}.test/{i}" for i in range(total)]
    events = ledger.create_batch(
        batch_id, "test", {"concurrency": 5}, urls, CREATED, None, plan_chunks(urls, 1, chunk, chunk)
    )
    assert [(e.seq, e.type, e.data) for e in events] == [(1, "batch", {"status": "queued", "created_at": CREATED})]
    return urls


def stored_events(pg_url: str, batch_id: str) -> list[tuple[int, str, int | None, dict]]:
    """(seq, type, index, data) of a batch's stored events, in seq order."""
    rows = sql(pg_url, "SELECT seq, type, idx, data FROM events WHERE batch_id = %s ORDER BY seq", batch_id)
    return [(seq, type_, idx, json.loads(data)) for seq, type_, idx, data in rows]


def stored_tally(pg_url: str, batch_id: str) -> tuple[stats.Tally, list[float]]:
    """One tally of every stored result of a batch, and their latencies in order."""
    tally = stats.Tally(keep_latencies=True)
    for ok, status_code, error_kind, total_ms, size in sql(
        pg_url,
        "SELECT ok, status_code, error_kind, total_ms, bytes FROM events WHERE batch_id = %s AND idx IS NOT NULL",
        batch_id,
    ):
        tally.add(stats.Row(bool(ok), status_code, error_kind, total_ms, size))
    latencies = sorted(tally._latencies or [])
    return tally, latencies


def without_rate(payload: dict) -> dict:
    """A summary payload without its throughput, which depends on when it was made."""
    return {**payload, "stats": {k: v for k, v in payload["stats"].items() if k != "urls_per_s"}}


def start_appenders(
    pg_url: str, batch_id: str, total: int, processes: int, upto: int | None = None
) -> list[subprocess.Popen]:
    """Processes appending results to a batch, each index (below `upto`) by 3 in 5 of them (2 of 4), started at once."""
    procs = []
    for k in range(processes):
        mine = [str(i) for i in range(upto or total) if (i + k) % processes < processes * 3 // 5]
        command = [sys.executable, "-m", "tests.support.ledger_appender", pg_url, batch_id, str(k), str(20 + 15 * k)]
        procs.append(subprocess.Popen([*command, *mine], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for proc in procs:
        assert proc.stdout.readline() == "ready\n"
    for proc in procs:  # all at once
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return procs


def test_processes_appending_overlapping_indexes_record_each_once_with_gap_free_seqs_and_one_final_event(
    ledger, pg_url
):
    total, processes = 2000, 5
    new_batch(ledger, "b1", total)
    claim, running = ledger.claim("b1", 0)
    assert claim is not None and [e.seq for e in running] == [2]
    procs = start_appenders(pg_url, "b1", total, processes)
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    assert sum(1 for output in outputs if json.loads(output)) >= 3, "the processes' appends interleaved"

    events = stored_events(pg_url, "b1")
    seqs = [seq for seq, _, _, _ in events]
    assert seqs == list(range(1, len(events) + 1)), "seqs are 1..N without a gap"
    assert sql(pg_url, "SELECT last_seq, status FROM batches WHERE id = 'b1'") == [(len(events), "done")]
    indexes = [idx for _, type_, idx, _ in events if type_ == "result"]
    assert sorted(indexes) == list(range(total)), "every index exactly once"
    finals = [(seq, data) for seq, type_, _, data in events if type_ == "batch" and data["status"] == "done"]
    assert len(finals) == 1 and finals[0][0] == seqs[-1], "one final event, the last"
    # Each committed event was reported to exactly one caller: the one whose append committed it.
    reported = sorted([1, 2] + [seq for output in outputs for seq, _ in json.loads(output)])
    assert reported == seqs

    final = finals[0][1]
    tally, latencies = stored_tally(pg_url, "b1")
    assert final["counts"] == tally.counts(total)
    expected = tally.summary(exact=True)
    assert {k: v for k, v in final["stats"].items() if k not in ("urls_per_s", "mean_ms")} == {
        k: v for k, v in expected.items() if k != "mean_ms"
    }
    assert final["stats"]["mean_ms"] == pytest.approx(expected["mean_ms"], abs=0.01)
    assert [final["stats"][f"p{p}_ms"] for p in stats.PERCENTILES] == [
        stats.percentile(latencies, p) for p in stats.PERCENTILES
    ]
    stored = json.loads(sql(pg_url, "SELECT summary FROM batches WHERE id = 'b1'")[0][0])
    assert stored == {"counts": final["counts"], "stats": final["stats"]}


def test_a_cluster_batch_records_its_source_for_every_web_process_to_read(ledger, pg_url):
    from app.runs.store.postgres import PostgresStore

    source = {"type": "page_links", "url": "http://a.test/", "include": None, "exclude": None, "max_urls": None}
    ledger.create_batch("src", "links", {}, ["http://a.test/x"], CREATED, None, [[0]], source=source)
    store = PostgresStore(pg_url)
    try:
        assert store.get_batch("src").source == source
    finally:
        store.close()


def test_an_append_drops_indexes_recorded_before_and_repeated_within_it(ledger, pg_url):
    new_batch(ledger, "b2", 10)
    ledger.claim("b2", 0)
    rng = random.Random(2)
    first = ledger.append("b2", [fetched(i, rng) for i in (0, 1, 2)])
    assert [(e.seq, e.type) for e in first] == [(3, "result"), (4, "result"), (5, "result")]
    again = fetched(1, rng)
    events = ledger.append("b2", [again, fetched(3, rng), fetched(3, rng), fetched(4, rng)])
    assert [(e.seq, e.data["index"]) for e in events] == [(6, 3), (7, 4)]
    assert ledger.append("b2", [fetched(0, rng)]) == []
    assert sorted(idx for _, t, idx, _ in stored_events(pg_url, "b2") if t == "result") == [0, 1, 2, 3, 4]


def test_a_cancel_records_the_urls_never_run_as_cancelled_and_its_event_is_the_last(ledger, pg_url):
    urls = new_batch(ledger, "b3", 250, chunk=40)
    ledger.claim("b3", 0)
    rng = random.Random(3)
    ledger.append("b3", [fetched(i, rng) for i in range(0, 250, 3)])

    events = ledger.cancel("b3")
    assert events is not None and [e.type for e in events] == ["batch"]
    final = events[0]
    assert final.data["status"] == "cancelled" and final.data["counts"]["cancelled"] == 250 - 84

    stored = stored_events(pg_url, "b3")
    assert stored[-1][0] == final.seq and stored[-1][3] == final.data
    assert [seq for seq, *_ in stored] == list(range(1, final.seq + 1))
    results = {idx: data for _, type_, idx, data in stored if type_ == "result"}
    assert sorted(results) == list(range(250))
    never_run = results[1]
    assert never_run["url"] == urls[1] and never_run["error"] == {"kind": "cancelled", "message": CANCELLED_MESSAGE}
    assert never_run["timings"] == {"total": 0.0, "ttfb": None} and never_run["ok"] is False
    assert sql(pg_url, "SELECT status, last_seq FROM batches WHERE id = 'b3'") == [("cancelled", final.seq)]
    tally, _ = stored_tally(pg_url, "b3")
    assert final.data["counts"] == tally.counts(250)
    assert final.data["stats"]["urls_per_s"] is not None  # of the 84 fetched, not of the cancelled

    assert ledger.append("b3", [fetched(1, rng)]) == [], "no result follows `cancelled`"
    assert ledger.cancel("b3") is None
    assert ledger.claim("b3", 1) == (None, [])

    assert stored_events(pg_url, "b3") == stored
    assert ledger.stalled(0, 0) == [] and ledger.unfinished() == []


def test_a_cancel_records_a_url_noted_waiting_in_its_hosts_queue_with_its_latest_note_and_drops_later_notes(
    ledger, pg_url
):
    new_batch(ledger, "b3w", 3)
    ledger.claim("b3w", 0)
    first = {"started_at": "2026-01-01T00:00:01.000Z", "attempts": 1, "refused": 1, "redirects": []}
    latest = {**first, "attempts": 2, "refused": 2, "redirects": [{"url": "http://h0.test/0", "status": 302}]}
    ledger.note_waiting({("b3w", 0): first})
    ledger.note_waiting({("b3w", 0): latest, ("b3w", 2): first})
    ended = fetched(2, random.Random(4))
    ledger.append("b3w", [ended])  # URL 2 ended after its note: its result stands

    assert ledger.cancel("b3w") is not None
    results = {idx: data for _, type_, idx, data in stored_events(pg_url, "b3w") if type_ == "result"}
    waited = results[0]
    assert waited["error"]["message"] == "batch was cancelled while this URL waited in its host's queue"
    assert {key: waited[key] for key in latest} == latest and waited["outcome"] == "cancelled"
    assert results[1]["error"]["message"] == CANCELLED_MESSAGE and results[1]["attempts"] == 0
    assert results[2] == json.loads(ended[1])
    ledger.note_waiting({("b3w", 1): first})  # a worker's note sent after the end
    assert sql(pg_url, "SELECT count(*) FROM waiting_urls WHERE batch_id = 'b3w'") == [(0,)]


def test_a_cancel_while_processes_append_leaves_each_url_one_result_and_no_result_after_it(ledger, pg_url, monkeypatch):
    monkeypatch.setattr("app.cluster.ledger.CANCEL_SLICE", 150)  # many slices, the appends between them
    total = 2000
    new_batch(ledger, "c1", total)
    ledger.claim("c1", 0)
    # The last 200 URLs never get a result from the appenders: however fast they are, the batch is not done
    # before the cancel comes, so the cancel always has URLs to record.
    procs = start_appenders(pg_url, "c1", total, 4, upto=total - 200)
    deadline = time.monotonic() + 30
    while sql(pg_url, "SELECT last_seq FROM batches WHERE id = 'c1'")[0][0] < 50 and time.monotonic() < deadline:
        time.sleep(0.01)  # the cancel comes once the appends are under way
    final = ledger.cancel("c1")
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs

    assert final is not None and final[0].data["status"] == "cancelled"
    events = stored_events(pg_url, "c1")
    assert [seq for seq, *_ in events] == list(range(1, final[0].seq + 1))
    assert events[-1][3] == final[0].data, "`cancelled` is the last event"
    assert sorted(idx for _, type_, idx, _ in events if type_ == "result") == list(range(total))
    counts = final[0].data["counts"]
    assert 0 < counts["cancelled"] < total and counts["ok"] + counts["failed"] + counts["cancelled"] == total
    appended = [(seq, type_) for output in outputs for seq, type_ in json.loads(output)]
    assert max(appended)[0] < final[0].seq
    assert sum(type_ == "result" for _, type_ in appended) == counts["ok"] + counts["failed"]


def test_two_cancels_at_once_share_the_work_and_one_of_them_ends_the_batch(ledger, pg_url, monkeypatch):
    monkeypatch.setattr("app.cluster.ledger.CANCEL_SLICE", 100)
    new_batch(ledger, "c2", 2000)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(ledger.cancel, ["c2", "c2"]))
    assert sorted(answers, key=bool) == [None, answers[0] or answers[1]]
    events = stored_events(pg_url, "c2")
    assert [seq for seq, *_ in events] == list(range(1, 2003))
    assert sorted(idx for _, type_, idx, _ in events if type_ == "result") == list(range(2000))
    assert [data["status"] for _, type_, _, data in events if type_ == "batch"] == ["queued", "cancelled"]


def test_a_cancel_cut_short_refuses_results_and_is_ended_by_cancelling_again(ledger, pg_url):
    new_batch(ledger, "c3", 300)
    ledger.claim("c3", 0)
    # What a cancel's first transaction leaves when its process dies right after it.
    sql(pg_url, "UPDATE batches SET cancelling = true WHERE id = 'c3'")
    assert ledger.append("c3", [fetched(5, random.Random(1))]) == []
    assert ledger.claim("c3", 1) == (None, [])
    assert ledger.stalled(0, 0) == [], "its chunks are not sent again"
    assert ledger.cancelling() == ["c3"]
    final = ledger.cancel("c3")
    assert final is not None and final[0].data["counts"]["cancelled"] == 300
    assert ledger.cancelling() == [] and ledger.unfinished() == []


def test_a_queued_batch_cancelled_before_any_claim_ends_with_every_url_cancelled(ledger, pg_url):
    new_batch(ledger, "b4", 30)
    events = ledger.cancel("b4")
    assert events is not None and events[0].seq == 32
    assert events[0].data["counts"] == {
        "total": 30,
        "pending": 0,
        "waiting": 0,
        "running": 0,
        "ok": 0,
        "failed": 0,
        "cancelled": 30,
        "warn": 0,
    }
    assert events[0].data["stats"]["urls_per_s"] is None and events[0].data["stats"]["p50_ms"] is None


def test_a_claim_gives_the_chunks_urls_without_a_result_and_makes_a_queued_batch_running(ledger, pg_url):
    urls = new_batch(ledger, "b5", 20, chunk=10)
    chunk = sql(pg_url, "SELECT indexes FROM chunks WHERE batch_id = 'b5' AND no = 1")[0][0]
    rng = random.Random(5)
    ledger.append("b5", [fetched(i, rng) for i in chunk[:4]])  # a first copy of the chunk got this far

    claim, events = ledger.claim("b5", 1)
    assert [(e.type, e.data["status"]) for e in events] == [("batch", "running")]
    assert claim is not None and claim.total == 20 and claim.options == {"concurrency": 5}
    assert claim.indexes == chunk[4:] and claim.urls == [urls[i] for i in chunk[4:]]
    again, events = ledger.claim("b5", 1)
    assert again == claim and events == [], "only the first claim starts the batch"
    assert sql(pg_url, "SELECT status FROM batches WHERE id = 'b5'") == [("running",)]

    ledger.append("b5", [fetched(i, rng) for i in chunk[4:]])
    assert ledger.claim("b5", 1) == (None, []), "a chunk whose URLs all have results is done"
    assert ledger.claim("b5", 99) == (None, []) and ledger.claim("nope", 0) == (None, [])
    other = sql(pg_url, "SELECT indexes FROM chunks WHERE batch_id = 'b5' AND no = 0")[0][0]
    ledger.append("b5", [fetched(i, rng) for i in other])
    assert sql(pg_url, "SELECT status FROM batches WHERE id = 'b5'") == [("done",)]
    assert ledger.claim("b5", 0) == (None, []), "a done batch gives nothing to run"


def test_chunks_group_urls_by_host_and_hold_total_over_four_times_the_slots_within_the_clamp():
    urls = [f"http://{'ab'[i % 2]}.test/{i}" for i in range(1000)] + ["http://C.test/x"]
    chunks = plan_chunks(urls, slots=2, lo=10, hi=1000)
    assert [len(c) for c in chunks] == [126] * 7 + [119]  # ceil(1001 / 8)
    flat = [i for c in chunks for i in c]
    assert flat == list(range(0, 1000, 2)) + list(range(1, 1000, 2)) + [1000], "a host's URLs side by side"
    assert [len(c) for c in plan_chunks(urls, slots=100, lo=64, hi=1000)][:2] == [64, 64]  # raised to lo
    assert {len(c) for c in plan_chunks(urls, slots=1, lo=10, hi=100)[:-1]} == {100}  # held to hi
    assert plan_chunks([], 4, 64, 1000) == []
    assert plan_chunks(urls[:3], 4, 64, 1000) == [[0, 2, 1]]


@pytest.mark.parametrize(
    "url",
    [
        "http://Example.COM/a",
        "https://user:pw@host.test:8443/x?y#z",
        "http://a@b@host.test/",
        "http://[::1]:8080/p",
        "http://[2001:DB8::1]/",
        "http://host.test?q=1",
        "http://host.test#f",
        "http://host.test",
        "http://127.0.0.1:9/x",
        "http://host.test:/x",
        "http://hé.test/",
        "mailto:someone@example.com",
    ],
)
def test_the_host_chunks_group_by_is_the_one_the_engines_per_host_cap_counts(url):
    assert host_of(url) == (urlsplit(url).hostname or "").lower()


def test_a_batch_whose_chunks_miss_or_repeat_a_url_is_refused(ledger, pg_url):
    urls = ["http://a.test/0", "http://a.test/1", "http://a.test/2"]
    for chunks in ([[0, 1]], [[0, 1], [1, 2]], [[0, 1, 2, 3]]):
        with pytest.raises(ValueError):
            ledger.create_batch("b6", "x", {}, urls, CREATED, None, chunks)
    assert sql(pg_url, "SELECT count(*) FROM batches") == [(0,)]


def test_stalled_finds_chunks_never_sent_and_chunks_sent_but_silent(ledger, pg_url):
    new_batch(ledger, "b7", 30, chunk=10)  # chunks 0, 1, 2
    assert ledger.stalled(unsent_after=30, silent_after=60) == []
    age(pg_url, "b7", 31)
    assert ledger.stalled(unsent_after=30, silent_after=60) == [("b7", 0), ("b7", 1), ("b7", 2)]

    ledger.mark_sent("b7", [0, 1, 2])
    assert sql(pg_url, "SELECT state, sends FROM chunks WHERE batch_id = 'b7' ORDER BY no") == [("sent", 1)] * 3
    assert ledger.stalled(unsent_after=30, silent_after=30) == []
    ledger.claim("b7", 1)
    age(pg_url, "b7", 20)
    ledger.touch("b7", [1])  # a worker runs chunk 1 and says so
    age(pg_url, "b7", 20)
    assert ledger.stalled(unsent_after=30, silent_after=30) == [("b7", 0), ("b7", 2)]

    chunk = sql(pg_url, "SELECT indexes FROM chunks WHERE batch_id = 'b7' AND no = 2")[0][0]
    assert ledger.chunk_done("b7", 2) is False, "a chunk with URLs left stays open"
    ledger.append("b7", [fetched(i, random.Random(7)) for i in chunk])
    assert ledger.chunk_done("b7", 2) is True
    age(pg_url, "b7", 20)
    assert ledger.stalled(unsent_after=30, silent_after=30) == [("b7", 0), ("b7", 1)]
    assert ledger.unfinished() == ["b7"]
    ledger.cancel("b7")
    assert ledger.stalled(0, 0) == [] and ledger.unfinished() == []


def age(pg_url: str, batch_id: str, seconds: float) -> None:
    """Move a batch's chunks `seconds` into the past: when each was stored, last sent and last heard of."""
    sql(
        pg_url,
        "UPDATE chunks SET created_clock = created_clock - %s, sent_clock = sent_clock - %s,"
        " touched_clock = touched_clock - %s WHERE batch_id = %s",
        seconds,
        seconds,
        seconds,
        batch_id,
    )


def engine_summary(tmp_path, total: int, rows: list[tuple[int, stats.Row]], final: bool) -> dict:
    """What the single-process engine's _summary gives for a batch with these results."""
    config = Config(data_dir=str(tmp_path))
    store = SQLiteStore(config.db_path)
    try:
        policy = guard.Policy.from_settings(config.allow_private, config.allow_targets, config.deny_targets)
        engine = Engine(config, store, EventBus(store), policy)
        run = BatchRun("b", BatchOptions.defaults(config), UrlList.of(["http://a.test/"] * total), total)
        for index, row in rows:
            run.add(index, row)
        return engine._summary(run, final=final)
    finally:
        store.close()


def test_progress_and_final_payloads_equal_the_single_process_engines_for_the_same_results(ledger, pg_url, tmp_path):
    total = 400
    new_batch(ledger, "b8", total)
    ledger.claim("b8", 0)
    rng = random.Random(8)
    results = [fetched(i, rng) for i in range(total)]
    ledger.append("b8", results[:150])
    sql(pg_url, "UPDATE batches SET progress_clock = progress_clock - 2 WHERE id = 'b8'")  # a second has gone by
    events = ledger.append("b8", results[150:300])
    progress = events[-1]
    assert progress.type == "progress" and progress.seq == 303
    expected = engine_summary(tmp_path, total, [(i, row) for i, _, row in results[:300]], final=False)
    assert without_rate(progress.data) == without_rate(expected)
    assert progress.data["stats"]["urls_per_s"] > 0
    assert ledger.append("b8", results[300:350])[-1].type == "result", "the next progress waits its second"

    final = ledger.append("b8", results[350:])[-1]
    expected = engine_summary(tmp_path, total, [(i, row) for i, _, row in results], final=True)
    assert list(final.data) == ["status", "finished_at", "counts", "stats", "verdict"]
    assert final.data["status"] == "done"
    verdict = {"pass": expected["counts"]["failed"] == 0, "violations": []}  # no thresholds: whether a row failed
    assert without_rate(final.data) == without_rate(
        {"status": "done", "finished_at": final.data["finished_at"], **expected, "verdict": verdict}
    )


def test_a_batch_run_by_the_single_process_server_gives_the_same_final_event_through_the_ledger(ledger, server, target):
    rng = random.Random(9)
    routes = ["/status/200", "/status/404", "/status/503", "/bytes/700", "/delay/3", "/delay/12", "/redirect/2"]
    urls = [target.url(f"{rng.choice(routes)}?i={i}") for i in range(150)]
    urls += [target.url(f"/delay/400?i={i}") for i in range(10)]  # past the batch's deadline
    batch = server.submit(urls, concurrency=20, timeout=0.2)
    server.wait(batch["id"])
    events = server.request("GET", f"/api/v1/batches/{batch['id']}/events", params={"type": "batch"}).json()
    single = events["events"][-1]["data"]
    results = server.results(batch["id"])

    new_batch(ledger, "b9", len(urls))
    ledger.claim("b9", 0)
    rng.shuffle(results)
    committed = []
    for start in range(0, len(results), 37):
        group = results[start : start + 37]
        committed += ledger.append("b9", [(r["index"], compact_json(r), stats.row_of(r)) for r in group])
    final = committed[-1].data
    assert final["status"] == single["status"] == "done"
    assert without_rate(final) == {**without_rate(single), "finished_at": final["finished_at"]}


def test_a_claim_carries_its_chunks_share_of_the_row_specs_not_the_batchs_whole_set(ledger, pg_url):
    urls = [f"http://a.test/{i}" for i in range(4)]
    specs = {"1": {"meta": {"n": 1}}, "3": {"expect": {"status": 301}}}
    ledger.create_batch("rs", "rows", {"concurrency": 2}, urls, CREATED, None, [[0, 1], [2], [3]], row_specs=specs)
    claims = [ledger.claim("rs", no)[0] for no in range(3)]
    assert [claim.row_specs for claim in claims] == [
        {"1": {"meta": {"n": 1}}},
        None,
        {"3": {"expect": {"status": 301}}},
    ]
    assert "rows" not in claims[0].options
    assert sql(pg_url, "SELECT specs FROM row_specs WHERE batch_id = 'rs'") == [(compact_json(specs),)]
