"""Cluster workers: real `python -m app.cluster worker` processes run a batch's chunks against real Redis and
PostgreSQL; whatever happens to a worker (killed, stopped, paused past its heartbeat), every URL of the batch
is recorded exactly once, seq 1..N without a gap, and one final event ends it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

psycopg = pytest.importorskip("psycopg")
redis = pytest.importorskip("redis")
pytest.importorskip("dramatiq")

from app.cluster.broker import NAMESPACE, QUEUE, dispatch, make_broker  # noqa: E402
from app.cluster.ledger import Ledger  # noqa: E402
from app.cluster.runner import cancel_key  # noqa: E402
from app.core.clock import now_iso  # noqa: E402
from app.core.config import Config  # noqa: E402
from app.core.options import BatchOptions  # noqa: E402
from app.runs.store import pg_schema  # noqa: E402
from tests.support.workers import ROOT, ClusterWorker, stop_workers  # noqa: E402

HEARTBEAT = 3  # seconds a silent worker counts as alive (GREENBATCH_CLUSTER_HEARTBEAT_TIMEOUT; 15 by default)
FINAL = ("done", "cancelled", "failed")
MESSAGES = f"{NAMESPACE}:{QUEUE}.msgs"  # Dramatiq's hash of the chunk messages not acked yet


class Cluster:
    """A cluster's shared parts for one test (empty Redis, fresh database) and the workers it starts."""

    def __init__(self, pg_url: str, redis_url: str, allow_targets: str, tmp_path):
        self.tmp_path = tmp_path
        self.env = {
            "GREENBATCH_DATABASE_URL": pg_url,
            "GREENBATCH_REDIS_URL": redis_url,
            "GREENBATCH_CLUSTER_HEARTBEAT_TIMEOUT": str(HEARTBEAT),
            "GREENBATCH_ALLOW_TARGETS": allow_targets,
        }
        self.config = Config(
            database_url=pg_url, redis_url=redis_url, allow_targets=allow_targets, cluster_heartbeat_timeout=HEARTBEAT
        )
        self.redis = redis.Redis.from_url(redis_url)
        self.redis.flushall()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            pg_schema.migrate(conn)
        self.db = psycopg.connect(pg_url, autocommit=True)
        self.ledger = Ledger(pg_url)
        self.broker = make_broker(self.config)
        self.workers: list[ClusterWorker] = []

    def start_workers(self, count: int, threads: int = 2) -> list[ClusterWorker]:
        """Start `count` workers at once and wait until each consumes."""
        started = [
            ClusterWorker(self.env, self.tmp_path / f"worker{len(self.workers) + i}.log", threads).start()
            for i in range(count)
        ]
        self.workers += started
        return [worker.wait_ready() for worker in started]

    def submit(self, urls: list[str], chunk_size: int, **options) -> str:
        """Store a batch and its chunks with the ledger and send one message per chunk, as the web does."""
        batch_id = secrets.token_hex(6)
        chunks = [list(range(i, min(i + chunk_size, len(urls)))) for i in range(0, len(urls), chunk_size)]
        stored = BatchOptions.parse(options, self.config).to_dict()
        self.ledger.create_batch(batch_id, f"{len(urls)} URLs", stored, urls, now_iso(), None, chunks)
        self.ledger.mark_sent(batch_id, list(range(len(chunks))))
        dispatch(self.broker, batch_id, range(len(chunks)))
        return batch_id

    def query(self, sql: str, *args):
        """Rows of one query."""
        return self.db.execute(sql, args).fetchall()

    def recorded(self, batch_id: str) -> int:
        """URLs of the batch with a result so far."""
        return self.query("SELECT count(*) FROM events WHERE batch_id = %s AND idx IS NOT NULL", batch_id)[0][0]

    def wait_recorded(self, batch_id: str, count: int, timeout: float = 20.0) -> None:
        """Wait until `count` URLs of the batch have a result."""
        deadline = time.monotonic() + timeout
        while self.recorded(batch_id) < count:
            assert time.monotonic() < deadline, f"only {self.recorded(batch_id)} of {count} results after {timeout} s"
            time.sleep(0.05)

    def wait_final(self, batch_id: str, timeout: float = 30.0) -> str:
        """Wait until the batch is final; its status."""
        deadline = time.monotonic() + timeout
        while (status := self.query("SELECT status FROM batches WHERE id = %s", batch_id)[0][0]) not in FINAL:
            assert time.monotonic() < deadline, f"batch {status} after {timeout} s, {self.recorded(batch_id)} results"
            time.sleep(0.1)
        return status

    def events(self, batch_id: str) -> list[tuple[int, str, int | None, dict]]:
        """The batch's events in seq order: (seq, type, URL index, data)."""
        rows = self.query("SELECT seq, type, idx, data FROM events WHERE batch_id = %s ORDER BY seq", batch_id)
        return [(seq, type_, idx, json.loads(data)) for seq, type_, idx, data in rows]

    def idle(self) -> bool:
        """Whether every chunk message has been acked (no worker runs or holds one)."""
        return self.redis.hlen(MESSAGES) == 0

    def close(self) -> None:
        """Stop the workers and let go of the services."""
        stopped = stop_workers(self.workers)
        self.ledger.close()
        self.db.close()
        self.broker.close()
        self.redis.close()
        assert stopped, "a worker did not stop on SIGTERM"


@pytest.fixture
def cluster(pg_url, redis_server, target_env, tmp_path):
    """Empty Redis, a migrated database, the ledger and broker a web process would use; workers started on demand."""
    instance = Cluster(pg_url, redis_server.url, target_env["GREENBATCH_ALLOW_TARGETS"], tmp_path)
    yield instance
    instance.close()


def assert_each_index_once(cluster: Cluster, batch_id: str, urls: list[str], status: str = "done") -> list:
    """Every URL recorded exactly once, for its own URL; seq 1..N without a gap; one final event, the last."""
    events = cluster.events(batch_id)
    assert [seq for seq, *_ in events] == list(range(1, len(events) + 1))
    indexes = [idx for _, _, idx, _ in events if idx is not None]
    assert sorted(indexes) == list(range(len(urls)))
    assert all(data["url"] == urls[idx] for _, _, idx, data in events if idx is not None)
    finals = [seq for seq, type_, _, data in events if type_ == "batch" and data["status"] in FINAL]
    assert finals == [events[-1][0]]
    assert events[-1][3]["status"] == status
    return events


def test_a_batch_dispatched_by_hand_ends_with_every_index_once_and_one_final_event(cluster, target):
    """Chunks sent by hand run on the workers with the engine's fetch code; a chunk running past the heartbeat
    timeout stays with its busy worker (its consumer keeps beating) while the other worker idles."""
    workers = cluster.start_workers(2, threads=1)
    target.hits(reset=True)
    kinds = ["/bytes/100", "/status/404", "/delay/50"]
    long_chunk = [target.url(f"/delay/400?i={i}") for i in range(10)]  # 4 s at concurrency 1
    urls = long_chunk + [target.url(f"{kinds[i % 3]}?i={i}") for i in range(20)]
    batch_id = cluster.submit(urls, chunk_size=10, concurrency=1)

    assert cluster.wait_final(batch_id) == "done"
    events = assert_each_index_once(cluster, batch_id, urls)
    results = {idx: data for _, _, idx, data in events if idx is not None}
    assert {results[i]["status_code"] for i in range(10, 30, 3)} == {200}
    assert {results[i]["bytes"] for i in range(10, 30, 3)} == {100}
    assert {results[i]["status_code"] for i in range(11, 30, 3)} == {404}
    assert [data["status"] for _, type_, _, data in events[:2]] == ["queued", "running"]
    assert events[-1][3]["counts"]["total"] == 30
    assert cluster.query("SELECT DISTINCT state FROM chunks WHERE batch_id = %s", batch_id) == [("done",)]
    assert target.hits()["/delay/400"] == len(long_chunk)  # the long chunk ran once: no second copy
    assert sum(f"{batch_id} chunk 0 running" in worker.text() for worker in workers) == 1
    assert not any("Traceback" in worker.text() for worker in workers)


def test_a_worker_judges_each_row_by_its_specs_from_its_chunk_or_from_options_stored_before_they_moved(cluster, target):
    cluster.start_workers(1, threads=1)
    urls = [target.url("/redirect-to?url=/page/a&status=302"), target.url("/ok"), target.url("/status/404")]
    specs = {"0": {"expect": {"status": 301}, "meta": {"sku": "A1"}}, "2": {"expect": {"final_status": 404}}}
    chunks = [[0, 1], [2]]
    batches = []
    for stored, row_specs in (({}, specs), ({"rows": specs}, None)):  # now, and as stored before row_specs
        batch_id = secrets.token_hex(6)
        cluster.ledger.create_batch(batch_id, "rows", stored, urls, now_iso(), None, chunks, row_specs=row_specs)
        dispatch(cluster.broker, batch_id, range(len(chunks)))
        batches.append(batch_id)
    for batch_id in batches:
        assert cluster.wait_final(batch_id) == "done"
        results = {idx: data for _, _, idx, data in cluster.events(batch_id) if idx is not None}
        assert [(results[i]["outcome"], results[i].get("meta")) for i in range(3)] == [
            ("failed", {"sku": "A1"}),
            ("ok", None),
            ("ok", None),
        ]
        assert results[0]["reasons"][0]["rule"] == "expect.status"


def test_the_chunks_of_a_batch_on_one_worker_fetch_over_the_connections_its_earlier_chunks_opened(cluster, target):
    """A worker process keeps one transport per batch, as the engine does, shared by the batch's chunks there:
    a batch of eight chunks at concurrency 2 opens two connections, not two a chunk."""
    cluster.start_workers(1, threads=1)
    urls = [target.url(f"/bytes/100?i={i}") for i in range(80)]
    batch_id = cluster.submit(urls, chunk_size=10, concurrency=2)

    assert cluster.wait_final(batch_id) == "done"
    events = assert_each_index_once(cluster, batch_id, urls)
    opened = [idx for _, _, idx, data in events if idx is not None and data["timings"]["connect"] is not None]
    assert len(opened) == 2, sorted(opened)


def test_a_workers_paced_chunk_backs_off_a_connection_error_in_its_hosts_queue_not_under_the_deadline(cluster, target):
    """The worker runs the engine's paced fetch path: a URL whose connection is reset three times (backoffs of
    0.2 + 0.4 + 0.8 s, past its 1 s timeout) waits in its host's queue and ends ok; the host's other URLs go on."""
    cluster.start_workers(1, threads=1)
    key = secrets.token_hex(4)
    urls = [target.url(f"/paced/{key}/{i}?close=1{'&fail=3' if i == 0 else ''}") for i in range(6)]
    batch_id = cluster.submit(urls, chunk_size=6, concurrency=1, retries=3, timeout=1)

    assert cluster.wait_final(batch_id) == "done"
    results = {idx: data for _, _, idx, data in assert_each_index_once(cluster, batch_id, urls) if idx is not None}
    assert (results[0]["error"], results[0]["status_code"], results[0]["attempts"]) == (None, 200, 4)
    assert [results[i]["status_code"] for i in range(1, 6)] == [200] * 5
    log = target.paced_log(key)
    last_try = max(entry["start"] for entry in log if entry["path"].endswith("/0"))
    assert max(entry["end"] for entry in log if not entry["path"].endswith("/0")) < last_try


def slow_batch(cluster: Cluster, target, count: int, chunk_size: int, delay_ms: int, **options) -> tuple:
    """A batch of `count` distinct /delay URLs, submitted; its id and URLs."""
    urls = [target.url(f"/delay/{delay_ms}?i={i}") for i in range(count)]
    return cluster.submit(urls, chunk_size=chunk_size, **options), urls


def test_a_worker_killed_mid_batch_leaves_its_chunks_to_the_other_and_each_index_is_recorded_once(cluster, target):
    """SIGKILL at ~40 %: the dead worker's unacked chunks go back on the queue after the heartbeat timeout."""
    doomed, survivor = cluster.start_workers(2)
    batch_id, urls = slow_batch(cluster, target, 200, chunk_size=20, delay_ms=150, concurrency=4)
    cluster.wait_recorded(batch_id, 80)

    doomed.signal_child(signal.SIGKILL)

    assert cluster.wait_final(batch_id) == "done"
    assert_each_index_once(cluster, batch_id, urls)
    assert cluster.query("SELECT DISTINCT state FROM chunks WHERE batch_id = %s", batch_id) == [("done",)]
    assert "Traceback" not in survivor.text()


def test_a_worker_stopped_with_sigterm_finishes_its_fetches_in_flight_and_sends_its_chunks_again(cluster, target):
    """SIGTERM mid-chunk: the worker stops within seconds; what it had not fetched runs on the other worker."""
    leaving, staying = cluster.start_workers(2)
    # Four chunks of 3 s, one per thread: the SIGTERM lands while the leaving worker is inside two of them.
    batch_id, urls = slow_batch(cluster, target, 160, chunk_size=40, delay_ms=150, concurrency=2)
    cluster.wait_recorded(batch_id, 32)

    stopped_at = time.monotonic()
    leaving.proc.send_signal(signal.SIGTERM)
    assert leaving.proc.wait(timeout=20) == 0, leaving.text()[-3000:]
    assert time.monotonic() - stopped_at < 10

    assert cluster.wait_final(batch_id) == "done"
    assert_each_index_once(cluster, batch_id, urls)
    log = leaving.text()
    assert "stopped with" in log, log[-3000:]  # its chunks' unfetched URLs went back on the queue at once
    assert "Traceback" not in log, log[-3000:]


def test_a_worker_paused_past_the_heartbeat_and_resumed_adds_no_duplicate_result(cluster, target):
    """SIGSTOP past the heartbeat: another worker runs the paused one's chunks; after SIGCONT both copies
    append, and the ledger keeps one result per URL."""
    (paused,) = cluster.start_workers(1)
    target.hits(reset=True)
    batch_id, urls = slow_batch(cluster, target, 120, chunk_size=60, delay_ms=200, concurrency=3)
    cluster.wait_recorded(batch_id, 10)

    paused.signal_child(signal.SIGSTOP)
    try:
        (other,) = cluster.start_workers(1)
        deadline = time.monotonic() + HEARTBEAT + 10
        while not all(f"chunk {no} running" in other.text() for no in (0, 1)):
            assert time.monotonic() < deadline, "the paused worker's chunks were not redelivered"
            time.sleep(0.1)
    finally:
        paused.signal_child(signal.SIGCONT)

    assert cluster.wait_final(batch_id) == "done"
    assert_each_index_once(cluster, batch_id, urls)
    # The paused worker's fetches in flight ran again on the other: some URLs were fetched twice, recorded once.
    assert target.hits()["/delay/200"] > len(urls)


def test_cancel_stops_the_workers_fetches_of_that_batch_within_a_second(cluster, target):
    """Ledger.cancel plus the Redis key: the workers kill that batch's fetches and go idle within a second."""
    cluster.start_workers(2)
    target.hits(reset=True)
    batch_id, urls = slow_batch(cluster, target, 80, chunk_size=10, delay_ms=3000, concurrency=5)
    deadline = time.monotonic() + 15
    while target.hits().get("/delay/3000", 0) < 20:  # both workers run two chunks each, five URLs at a time
        assert time.monotonic() < deadline, f"fetches in flight: {target.hits()}"
        time.sleep(0.05)

    assert cluster.ledger.cancel(batch_id)
    cluster.redis.set(cancel_key(batch_id), 1)
    cancelled_at = time.monotonic()
    while not cluster.idle():
        assert time.monotonic() - cancelled_at < 1.0, "workers still run chunks of the cancelled batch"
        time.sleep(0.02)

    fetched = target.hits()["/delay/3000"]
    time.sleep(1.0)
    assert target.hits()["/delay/3000"] == fetched  # nothing of the batch started since
    events = assert_each_index_once(cluster, batch_id, urls, status="cancelled")
    assert sum(1 for _, _, idx, data in events if idx is not None and data["error"]) == len(urls)


def test_a_url_cancelled_while_it_waited_in_its_hosts_queue_keeps_its_tries_and_refusals_as_in_one_process(
    cluster, target
):
    """A URL a 429 with Retry-After: 30 sent back to its host's queue is cancelled with the try and refusal it made
    (the worker notes them when it queues the URL); the URL queued behind it never ran and says so."""
    cluster.start_workers(1, threads=1)
    key = secrets.token_hex(4)
    urls = [target.url(f"/paced/{key}/{i}?rate=0&retry_after=30") for i in range(2)]
    batch_id = cluster.submit(urls, chunk_size=2, concurrency=1, retries=3)
    deadline = time.monotonic() + 15
    while not cluster.query("SELECT 1 FROM waiting_urls WHERE batch_id = %s", batch_id):
        assert time.monotonic() < deadline, f"no URL noted as waiting; the target saw {target.paced_log(key)}"
        time.sleep(0.02)

    assert cluster.ledger.cancel(batch_id)
    cluster.redis.set(cancel_key(batch_id), 1)
    events = assert_each_index_once(cluster, batch_id, urls, status="cancelled")
    results = {idx: data for _, _, idx, data in events if idx is not None}
    waited, never_ran = results[0], results[1]
    assert waited["error"] == {
        "kind": "cancelled",
        "message": "batch was cancelled while this URL waited in its host's queue",
    }
    assert (waited["attempts"], waited["refused"], waited["outcome"]) == (1, 1, "cancelled")
    assert waited["started_at"] is not None and waited["url"] == urls[0]
    assert never_ran["error"]["message"] == "batch was cancelled before this URL ran"
    assert (never_ran["attempts"], never_ran.get("refused", 0)) == (0, 0)
    assert [entry["status"] for entry in target.paced_log(key)] == [429]
    assert not cluster.query("SELECT 1 FROM waiting_urls WHERE batch_id = %s", batch_id)  # kept until the batch ends
    wait_until_idle = time.monotonic() + 5
    while not cluster.idle():  # the worker let go of the chunk, though its host's pause had 30 s to go
        assert time.monotonic() < wait_until_idle, "the worker still runs the cancelled chunk"
        time.sleep(0.02)


def run_module(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run a command of `python -m app.cluster` (or `python -c`) from the checkout with `env` added."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GREENBATCH_")}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def test_migrate_creates_the_schema_and_workers_need_both_cluster_settings(pg_url, redis_server):
    """`python -m app.cluster migrate` brings an empty database to the latest schema; without both settings the
    cluster commands refuse to start, naming them."""
    env = {"GREENBATCH_DATABASE_URL": pg_url, "GREENBATCH_REDIS_URL": redis_server.url}
    done = run_module(env, "-m", "app.cluster", "migrate")
    assert done.returncode == 0, done.stderr
    assert f"now at version {pg_schema.LATEST}" in done.stdout
    again = run_module(env, "-m", "app.cluster", "migrate")
    assert f"already at version {pg_schema.LATEST}" in again.stdout

    alone = run_module({"GREENBATCH_DATABASE_URL": pg_url}, "-m", "app.cluster", "worker")
    assert alone.returncode == 2
    assert "GREENBATCH_DATABASE_URL" in alone.stderr and "GREENBATCH_REDIS_URL" in alone.stderr


def test_the_actors_module_refuses_to_load_before_gevent_patches(pg_url, redis_server):
    """Plain `dramatiq app.cluster.actors` (no gevent) stops at once, saying how to start a worker instead."""
    env = {"GREENBATCH_DATABASE_URL": pg_url, "GREENBATCH_REDIS_URL": redis_server.url}
    loaded = run_module(env, "-c", "import app.cluster.actors")
    assert loaded.returncode != 0
    assert "python -m app.cluster worker" in loaded.stderr and "dramatiq-gevent" in loaded.stderr


def test_import_sqlite_copies_a_one_process_history_once_and_says_what_it_did(
    make_server, target, pg_url, redis_server
):
    """`python -m app.cluster import-sqlite <greenbatch.db>` copies finished batches; run again, it copies none."""
    alone = make_server()
    alone.run_batch([target.url(f"/bytes/32?n={n}") for n in range(4)] + [{"url": target.url("/ok"), "meta": {"n": 4}}])
    alone.stop()
    env = {"GREENBATCH_DATABASE_URL": pg_url, "GREENBATCH_REDIS_URL": redis_server.url}
    path = str(alone.data_dir / "greenbatch.db")
    first = run_module(env, "-m", "app.cluster", "import-sqlite", path)
    assert first.returncode == 0, first.stderr
    assert "1 batches copied" in first.stdout
    again = run_module(env, "-m", "app.cluster", "import-sqlite", path)
    assert "0 batches copied" in again.stdout and "1 already there" in again.stdout
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT specs FROM row_specs").fetchall() == [('{"4":{"meta":{"n":4}}}',)]
    missing = run_module(env, "-m", "app.cluster", "import-sqlite", path + ".missing")
    assert missing.returncode == 2 and "cannot import" in missing.stderr
