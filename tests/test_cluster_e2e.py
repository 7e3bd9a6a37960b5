"""Cluster mode end to end: two web processes, two workers, a real redis-server and PostgreSQL, the real target.

A batch submitted on one web process is watched live on the other; the results are those a single
process gives; cancel reaches the workers; Redis losing everything, or only the stream keys, costs the
viewers nothing; a web process dying between storing a batch and sending it strands nothing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

for module in ("psycopg", "redis", "dramatiq", "websocket"):
    pytest.importorskip(module)

import redis  # noqa: E402
import websocket  # noqa: E402

from tests.support.cluster import Cluster  # noqa: E402
from tests.support.gunicorn import GUNICORN, running_gunicorn  # noqa: E402
from tests.support.nginx import NGINX  # noqa: E402
from tests.support.receiver import verified  # noqa: E402
from tests.support.server import ROOT, GreenbatchServer  # noqa: E402
from tests.support.services import Redis  # noqa: E402

FINAL = ("done", "cancelled", "failed")


@pytest.fixture(scope="module")
def cluster_redis(tmp_path_factory):
    """A redis-server of this module's own: the tests restart it and delete its keys."""
    server = Redis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres, cluster_redis, target_env, receiver):
    """Web processes A and B and two workers (one process, two chunks at once each) on a fresh database."""
    env = {"GREENBATCH_ALLOW_TARGETS": f"{target_env['GREENBATCH_ALLOW_TARGETS']},127.0.0.1:{receiver.port}"}
    instance = Cluster(tmp_path_factory.mktemp("cluster"), postgres.new_database(), cluster_redis.url, env)
    try:
        instance.start_web()
        instance.start_web()
        instance.start_worker(threads=2)
        instance.start_worker(threads=2)
    except BaseException:
        instance.stop()
        raise
    yield instance
    instance.stop()


@pytest.fixture
def web_a(cluster) -> GreenbatchServer:
    """The web process batches are submitted on."""
    return cluster.webs[0]


@pytest.fixture
def web_b(cluster) -> GreenbatchServer:
    """The other web process: viewers and cancels."""
    return cluster.webs[1]


class Viewer(threading.Thread):
    """A websocket viewer in a thread: every message it gets until the server closes."""

    def __init__(self, server: GreenbatchServer, path: str):
        super().__init__(daemon=True)
        self.ws = websocket.create_connection("ws" + server.base_url[4:] + path, timeout=60)
        self.messages: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        """Read until the close frame (or an error, kept for the test)."""
        try:
            while True:
                text = self.ws.recv()
                if not text:
                    return
                self.messages.append(json.loads(text))
        except websocket.WebSocketConnectionClosedException:
            return
        except BaseException as exc:  # noqa: BLE001 - shown by the test that reads it
            self.error = exc

    def events(self) -> list[dict[str, Any]]:
        """Every event received, in arrival order."""
        return [event for m in self.messages if m["type"] == "events" for event in m["events"]]

    def finish(self, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait for the server's close; the events."""
        self.join(timeout)
        ended = not self.is_alive()
        self.stop()
        assert ended, f"the viewer got no end within {timeout} s: {self.messages[-2:]}"
        assert self.error is None, self.error
        return self.events()

    def stop(self) -> None:
        """Close the connection (if the server has not) and its socket."""
        self.ws.close(timeout=1)
        self.join(5)
        self.ws.shutdown()


def urls_of(target, count: int) -> list[str]:
    """A batch whose results vary: ok, 404, 503, bodies, redirects."""
    kinds = ["/status/200", "/status/200", "/bytes/700", "/status/404", "/redirect/1", "/status/503", "/status/200"]
    return [target.url(f"{kinds[i % len(kinds)]}?i={i}") for i in range(count)]


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what differs between two runs of the same URL: when, and how long."""
    return {key: value for key, value in result.items() if key not in ("started_at", "finished_at", "timings")}


def all_events(server: GreenbatchServer, batch_id: str) -> list[dict[str, Any]]:
    """Every stored event of a batch, read page by page through the API."""
    found: list[dict[str, Any]] = []
    while True:
        after = found[-1]["seq"] if found else 0
        page = server.request("GET", f"/api/v1/batches/{batch_id}/events", params={"after": after}).json()
        found += page["events"]
        if not page["more"]:
            return found


def assert_every_event_once_in_order(events: list[dict[str, Any]], total: int, status: str = "done") -> None:
    """seq 1..N with no gap and no repeat, each URL's result once, the final `batch` event last."""
    seqs = [event["seq"] for event in events]
    assert seqs == list(range(1, len(seqs) + 1)), f"seqs not 1..N: first bad at {_first_gap(seqs)}"
    indexes = [event["data"]["index"] for event in events if event["type"] == "result"]
    assert sorted(indexes) == list(range(total))
    assert events[0]["type"] == "batch" and events[0]["data"]["status"] == "queued"
    assert events[-1]["type"] == "batch" and events[-1]["data"]["status"] == status


def _first_gap(seqs: list[int]) -> int | None:
    """Where a list of seqs first leaves 1, 2, 3..."""
    return next((i for i, seq in enumerate(seqs, 1) if seq != i), None)


def connections_to(worker, port: int) -> int:
    """TCP connections a worker's chunk-running process holds to a port of this machine (its fetches)."""
    try:
        found = psutil.Process(worker.child_pid()).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return 0
    return sum(1 for conn in found if conn.raddr and conn.raddr.port == port)


def wait_until(condition, timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll `condition` until true; the seconds it took (AssertionError naming `what` past `timeout`)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start


# -- a batch on A, watched on B --------------------------------------------------------------------


@pytest.fixture(scope="module")
def watched(cluster, target):
    """A 5,000-URL batch submitted on web A while viewers watch on web B: (batch, its events, the list's events)."""
    web_a, web_b = cluster.webs
    listing = Viewer(web_b, "/ws/batches")
    listing.start()
    urls = urls_of(target, 5000)
    batch = web_a.submit(urls, concurrency=20)
    viewer = Viewer(web_b, f"/ws/batches/{batch['id']}?after=0")
    viewer.start()
    events = viewer.finish(90)
    listing.stop()
    return batch, urls, events, listing.events()


def test_a_viewer_on_web_b_gets_every_event_in_order_once_while_web_a_takes_the_batch(watched, web_b):
    batch, urls, events, _ = watched
    assert_every_event_once_in_order(events, len(urls))
    stored = all_events(web_b, batch["id"])
    assert [event["seq"] for event in stored] == [event["seq"] for event in events]
    assert web_b.batch(batch["id"])["last_seq"] == len(events)


def test_the_batches_list_on_web_b_shows_the_batch_from_queued_to_done(watched):
    batch, _, _, listed = watched
    mine = [event for event in listed if event["batch_id"] == batch["id"]]
    statuses = [event["data"]["status"] for event in mine if event["type"] == "batch"]
    assert statuses[-1] == "done" and "running" in statuses
    assert [event["seq"] for event in mine] == sorted({event["seq"] for event in mine})
    assert any(event["type"] == "progress" for event in mine)


def test_the_results_equal_a_single_process_run_of_the_same_batch(watched, web_b, make_server):
    batch, urls, _, _ = watched
    server = make_server()
    alone = server.wait(server.submit(urls, concurrency=20)["id"], timeout=60)
    clustered = web_b.batch(batch["id"])
    assert [comparable(result) for result in web_b.results(batch["id"])] == [
        comparable(result) for result in server.results(alone["id"])
    ]
    assert clustered["counts"] == alone["counts"]
    assert clustered["stats"]["by_status"] == alone["stats"]["by_status"]


def test_the_hosts_of_a_batch_answer_on_any_web_process_from_its_stored_results(watched, web_b):
    batch, urls, _, _ = watched
    answer = web_b.request("GET", f"/api/v1/batches/{batch['id']}/hosts")
    assert answer.status_code == 200
    (host,) = answer.json()["hosts"]
    assert (host["host"], host["done"], host["ok"] + host["failed"]) == ("127.0.0.1", len(urls), len(urls))
    assert (host["in_flight"], host["paused_until"]) == (0, None)  # the workers' to know, not the web's


def test_the_diff_of_two_runs_stored_by_the_workers_reads_the_same_on_either_web_process(cluster, target):
    web_a, web_b = cluster.webs
    tag = f"cluster{time.monotonic_ns()}"
    kept = [target.url(f"/changes/{tag}/nf?answers=200,500"), target.url(f"/changes/{tag}/fx?answers=500,200")]
    base = web_a.wait(web_a.submit([*kept, target.url(f"/changes/{tag}/gone")])["id"])
    batch = web_a.wait(web_a.submit([*kept, target.url(f"/changes/{tag}/new")])["id"])
    diffs = [
        web.request("GET", f"/api/v1/batches/{batch['id']}/diff?base={base['id']}").json() for web in (web_a, web_b)
    ]
    assert diffs[0] == diffs[1]
    summary = diffs[0]["summary"]
    assert (summary["newly_failed"], summary["fixed"], summary["added"], summary["removed"]) == (1, 1, 1, 1)


def test_a_batch_the_workers_finish_is_notified_once_though_both_web_processes_send(cluster, target, receiver):
    web_a, web_b = cluster.webs
    secret = "cluster-webhook-secret"
    batch = web_a.wait(
        web_a.submit([target.url("/ok")], webhook={"url": receiver.url("/cluster"), "secret": secret})["id"]
    )

    [request] = receiver.received("/cluster")
    assert verified(request, secret)["batch_id"] == batch["id"]
    time.sleep(1.2)  # each web process looks for due deliveries every second: a second send would have come by now
    assert len(receiver.received("/cluster")) == 1
    [delivery] = web_b.request("GET", f"/api/v1/batches/{batch['id']}/deliveries").json()["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("sent", 1)


def test_expectations_checks_and_warnings_give_the_same_answers_as_one_process(web_a, web_b, make_server, target):
    urls = [
        {"url": "/redirect-to?url=/page/a&status=302", "expect": {"status": 301}, "meta": {"sku": "A1"}},
        {"url": "/redirect-to?url=/page/b&status=301", "expect": {"final_url": "/page/b"}},
        "/challenge",
        {"url": "/product/4?stock=0", "checks": [{"source": "json", "path": "$.stock", "op": ">", "value": 0}]},
        "/shop/5",
    ]
    options = {
        "base_url": target.url("/"),
        "checks": [{"source": "header", "name": "content-type", "op": "present"}],
        "thresholds": {"failed_rate": 0.1},
    }
    submitted = web_a.submit(urls, **options)
    viewer = Viewer(web_b, f"/ws/batches/{submitted['id']}?after=0")
    viewer.start()
    final = viewer.finish(60)[-1]
    clustered = web_b.wait(submitted["id"], timeout=60)
    assert final["data"]["verdict"] == clustered["verdict"], "the final event carries the verdict"
    server = make_server()
    alone = server.wait(server.submit(urls, **options)["id"], timeout=60)
    mine = web_b.results(clustered["id"])
    assert [(r["outcome"], [x["rule"] for x in r["reasons"]]) for r in mine] == [
        ("failed", ["expect.status", "temporary_redirect"]),
        ("ok", []),
        ("warn", ["bot_challenge"]),
        ("failed", ["check[1]"]),
        ("ok", []),
    ]
    assert mine[0]["meta"] == {"sku": "A1"}
    assert [comparable(r) for r in mine] == [comparable(r) for r in server.results(alone["id"])]
    for key in ("counts", "verdict"):
        assert clustered[key] == alone[key], key
    assert clustered["counts"]["warn"] == 1 and clustered["verdict"]["pass"] is False
    assert clustered["stats"]["by_reason"] == alone["stats"]["by_reason"]
    assert [r["index"] for r in web_b.results(clustered["id"], outcome="warn")] == [2]
    assert [r["index"] for r in web_b.results(clustered["id"], reason="check[1]")] == [3]


# -- cancel ------------------------------------------------------------------------------------------


def test_cancel_from_web_b_ends_the_batch_with_cancelled_last_and_the_workers_idle_within_a_second(
    cluster, web_a, web_b, target
):
    urls = [target.url(f"/delay/1500?i={i}") for i in range(1000)]
    batch = web_a.submit(urls, concurrency=8)
    workers = cluster.workers
    wait_until(lambda: all(connections_to(w, target.port) for w in workers), 20, "chunks running on both workers")
    cancelled = web_b.request("POST", f"/api/v1/batches/{batch['id']}/cancel")
    asked = time.monotonic()
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    idle = wait_until(
        lambda: not any(connections_to(w, target.port) for w in workers), 5, "the workers' fetches to stop"
    )
    assert time.monotonic() - asked - idle < 0.1 and idle < 1.0, f"the workers took {idle:.2f} s to stop"
    time.sleep(0.5)  # what a worker might still append comes now, if ever
    events = all_events(web_b, batch["id"])
    assert_every_event_once_in_order(events, len(urls), status="cancelled")
    counts = web_b.batch(batch["id"])["counts"]
    assert counts["cancelled"] > 0 and counts["ok"] + counts["failed"] + counts["cancelled"] == len(urls)


# -- Redis loses data --------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["redis restarted", "stream keys deleted"])
def test_the_batch_completes_and_its_viewer_gets_every_event_when_redis_loses(
    loss, cluster, cluster_redis, web_a, web_b, target
):
    urls = [target.url(f"/delay/40?i={i}") for i in range(2000)]
    batch = web_a.submit(urls, concurrency=5)
    viewer = Viewer(web_b, f"/ws/batches/{batch['id']}?after=0")
    viewer.start()
    wait_until(lambda: len(viewer.events()) > 300, 30, "the first results live")
    if loss == "redis restarted":
        cluster_redis.restart()  # no persistence: the queue, the streams and the cancel keys are gone
    else:
        client = redis.Redis.from_url(cluster_redis.url)
        for _ in range(10):
            client.delete(*client.keys("gb:events:*") or ["gb:none"])
            time.sleep(0.1)
        client.close()
    events = viewer.finish(60)
    assert_every_event_once_in_order(events, len(urls))
    assert web_a.batch(batch["id"])["counts"]["ok"] == len(urls)


def test_a_batch_submitted_while_redis_is_down_is_stored_and_runs_once_redis_is_back(
    cluster_redis, web_a, web_b, target
):
    cluster_redis.stop()
    try:
        batch = web_a.submit([target.url(f"/status/200?i={i}") for i in range(200)])
        assert batch["status"] == "queued"
    finally:
        cluster_redis.start()
    assert web_b.wait(batch["id"], timeout=30)["counts"]["ok"] == 200


# -- a web process dies between storing a batch and sending it --------------------------------------


def test_the_janitor_sends_a_batch_whose_web_process_died_before_sending_it_within_15_s(cluster, web_b, target):
    from app.cluster.ledger import Ledger, plan_chunks

    urls = [target.url(f"/status/200?i={i}") for i in range(300)]
    ledger = Ledger(cluster.env["GREENBATCH_DATABASE_URL"])
    try:
        # What a submit on web A commits before it sends the chunks: then A dies.
        ledger.create_batch(
            "deadbeef0001",
            "orphan",
            {"concurrency": 10},
            urls,
            "2026-01-01T00:00:00.000Z",
            None,
            plan_chunks(urls, 8, 64, 1000),
        )
    finally:
        ledger.close()
    stored = time.monotonic()
    cluster.webs[0].kill()  # it may have been the janitor: B must take over
    try:
        done = web_b.wait("deadbeef0001", timeout=30)
        took = time.monotonic() - stored
        assert done["status"] == "done" and done["counts"]["ok"] == len(urls)
        started = next(e for e in all_events(web_b, "deadbeef0001") if e["data"].get("status") == "running")
        assert started and took < 25, f"the batch ended {took:.1f} s after it was stored"
        assert "janitor: sending" in cluster.webs[1].log()
    finally:
        cluster.webs[0].start()  # A again, for whatever runs next


# -- starting -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["GREENBATCH_DATABASE_URL", "GREENBATCH_REDIS_URL"])
def test_one_cluster_setting_without_the_other_stops_start_up_naming_both(given, tmp_path):
    env = {**os.environ, "GREENBATCH_DATA_DIR": str(tmp_path), "GREENBATCH_PORT": "0", given: "unix:///nowhere"}
    env.pop("GREENBATCH_DATABASE_URL" if given == "GREENBATCH_REDIS_URL" else "GREENBATCH_REDIS_URL", None)
    done = subprocess.run([sys.executable, "wsgi.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "GREENBATCH_DATABASE_URL" in done.stderr and "GREENBATCH_REDIS_URL" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_process_gevent_did_not_patch_first_is_refused_with_how_to_start_it(cluster, tmp_path):
    script = "from app.web import create_app; create_app()"
    env = {**os.environ, **cluster.env, "GREENBATCH_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "monkey.patch_all()" in done.stderr and "python wsgi.py" in done.stderr, done.stderr[-2000:]


@pytest.mark.skipif(GUNICORN is None, reason="gunicorn is not installed (requirements-dev.txt)")
def test_gunicorn_serves_cluster_mode_with_two_web_processes(cluster, tmp_path, target):
    with running_gunicorn(tmp_path, cluster.env, "-w", "2") as (proc, base):
        batch = requests.post(base + "/api/v1/batches", json={"urls": urls_of(target, 200)}, timeout=10).json()
        ws = websocket.create_connection(f"ws{base[4:]}/ws/batches/{batch['id']}?after=0", timeout=30)
        types = []
        try:
            while not types or types[-1] != "end":
                types.append(json.loads(ws.recv())["type"])
        finally:
            ws.close()
        assert types[0] == "snapshot"
        assert requests.get(f"{base}/api/v1/batches/{batch['id']}", timeout=5).json()["status"] == "done"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    booted = (tmp_path / "gunicorn.log").read_text().count("Booting worker")
    assert booted == 2


# -- make cluster -----------------------------------------------------------------------------------


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx)")
def test_make_cluster_serves_through_nginx_and_stops_everything_on_ctrl_c(target_env, target, tmp_path):
    out = tmp_path / "make-cluster.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.cluster"],
            cwd=ROOT,
            env={**os.environ, **target_env},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "Ctrl-C stops everything" in out.read_text(), 60, "make cluster to start", 0.1)
        base = re.search(r"open (http://127\.0\.0\.1:\d+/dash/)", out.read_text()).group(1)
        started = psutil.Process(proc.pid).children(recursive=True)
        assert requests.get(base, timeout=10).status_code == 200
        batch = requests.post(base + "api/v1/batches", json={"urls": urls_of(target, 50)}, timeout=10).json()
        wait_until(
            lambda: requests.get(f"{base}api/v1/batches/{batch['id']}", timeout=10).json()["status"] == "done",
            30,
            "the batch to end",
            0.1,
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.read_text()
    assert "stopped; removed" in text and not Path(re.search(r"in (/\S+gb-cluster-\S+)", text).group(1)).exists()
    assert not [child for child in started if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
