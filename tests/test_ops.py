"""Operations: probes, Prometheus metrics, logs (text and JSON) and the trusted reverse proxy."""

from __future__ import annotations

import json
import re
import sqlite3
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core import stats

TOKEN = "ops-test-token-0123456789"
FORWARDED = {
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "greenbatch.example",
    "X-Forwarded-Prefix": "/dash",
}


def scrape(server) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = server.request("GET", "/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    """One sample's value; 0 when the series does not exist yet."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- probes ----------------------------------------------------------------------------------


def test_healthz_and_readyz_answer_200_json_without_a_token(make_server):
    secured = make_server(env={"GREENBATCH_API_TOKENS": TOKEN})
    assert secured.request("GET", "/api/v1/batches").status_code == 401
    health = secured.request("GET", "/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = secured.request("GET", "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_metrics_need_the_token_when_the_server_has_tokens(make_server):
    secured = make_server(env={"GREENBATCH_API_TOKENS": TOKEN})
    refused = secured.request("GET", "/metrics", headers={"Accept": "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"})
    assert refused.status_code == 401, "a scraper without the token gets 401, not the login page"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    response = secured.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and "greenbatch_batches" in response.text


def test_readyz_answers_503_while_the_store_cannot_take_a_write_and_200_once_it_can(make_server, tmp_path):
    server = make_server(data_dir=tmp_path / "locked")
    holder = sqlite3.connect(tmp_path / "locked" / "greenbatch.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        started = time.monotonic()
        response = server.request("GET", "/readyz")
        assert response.status_code == 503
        assert time.monotonic() - started < 5, "the probe answers within its own timeout"
        body = response.json()
        assert body["status"] == "unavailable" and "greenbatch.db" in body["message"]
        assert server.request("GET", "/healthz").status_code == 200, "alive, just not ready"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert server.request("GET", "/readyz").status_code == 200


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_move_during_a_batch(server, target):
    before = scrape(server)
    urls = [target.url("/delay/400")] * 4 + [target.url("/ok")] * 3 + [target.url("/status/500")] * 2
    batch = server.submit(urls, concurrency=4)
    deadline = time.monotonic() + 10
    during = scrape(server)
    # The store's count follows the batch's events within a flush; the engine's gauge is immediate.
    while not (value(during, "greenbatch_inflight_fetches") and value(during, "greenbatch_batches", status="running")):
        assert time.monotonic() < deadline, "no fetch in flight or no running batch was seen"
        time.sleep(0.02)
        during = scrape(server)
    assert 1 <= value(during, "greenbatch_inflight_fetches") <= 4
    server.wait(batch["id"])

    after = scrape(server)
    moved = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731 - reads as the formula it is
    assert moved("greenbatch_fetches_total", outcome="ok", error_kind="none") == 7
    assert moved("greenbatch_fetches_total", outcome="failed", error_kind="status") == 2, "a 500 is not ok"
    assert moved("greenbatch_fetch_duration_seconds_count") == 9
    assert moved("greenbatch_fetch_duration_seconds_bucket", le="0.25") >= 5, "the fast ones are in a fast bucket"
    assert moved("greenbatch_fetch_duration_seconds_sum") >= 4 * 0.4
    assert moved("greenbatch_batches", status="done") == 1
    assert moved("greenbatch_store_write_seconds_count") >= 1
    assert value(after, "greenbatch_inflight_fetches") == 0
    assert value(after, "process_resident_memory_bytes") > 0


def test_fetch_errors_are_counted_by_kind(server, target):
    before = scrape(server)
    batch = server.submit([target.url("/redirect/3")], max_redirects=1)
    server.wait(batch["id"])
    after = scrape(server)
    labels = {"outcome": "failed", "error_kind": "too_many_redirects"}
    assert value(after, "greenbatch_fetches_total", **labels) - value(before, "greenbatch_fetches_total", **labels) == 1


def test_fetch_duration_buckets_are_the_dashboards_histogram_bounds(server):
    bounds = sorted(
        {
            float(dict(labels)["le"])
            for name, labels in scrape(server)
            if name == "greenbatch_fetch_duration_seconds_bucket"
        }
    )
    assert bounds[:-1] == [ms / 1000 for ms in stats.HISTOGRAM_BOUNDS_MS] and bounds[-1] == float("inf")


def test_fetch_metrics_read_exactly_as_prometheus_clients_own_counter_and_histogram():
    # ops.FetchMetrics keeps plain numbers for speed; its exposition must be the library's, in both formats.
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    from app.runs.events import Event
    from app.web.ops import FETCH_BUCKETS, FetchMetrics

    prometheus_client.disable_created_metrics()  # as ops.init_app does (process-wide: restored below)
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fetches = FetchMetrics()
    ours.register(fetches)
    counter = Counter("greenbatch_fetches", FetchMetrics.FETCHES_HELP, ["outcome", "error_kind"], registry=theirs)
    counter.labels("ok", "none")
    histogram = Histogram(
        "greenbatch_fetch_duration_seconds", FetchMetrics.DURATION_HELP, buckets=FETCH_BUCKETS, registry=theirs
    )
    fetches.FOLD_EVERY = 7  # rows are counted in groups: at every 7th result here, and at each scrape
    totals_ms = [0.0, 0.4, 5.0, 5.0001, 99.9, 100.0, 2500.0, 10000.0, 10000.1, 123456.0, None]
    for seq, total in enumerate(totals_ms * 3):
        if seq == 16:  # a scrape between groups
            assert generate_latest(ours) == generate_latest(theirs)
        error = None if seq % 4 else {"kind": ("refused", "deadline", "cancelled", "blocked")[seq % 3], "message": "x"}
        status = None if error else (200, 404, 301)[seq % 3]
        result = {
            "index": seq,
            "ok": error is None and status != 404,
            "status_code": status,
            "error": error,
            "bytes": 10,
            "timings": {"total": total},
        }
        fetches.observe([Event("b", seq + 1, "result", result)])
        fetches.observe([Event("b", seq + 1, "progress", {"done": seq})])  # only results count
        row = stats.row_of(result)
        counter.labels(stats.outcome(row), row.error_kind or "none").inc()
        if stats.latency_ms(row) is not None:
            histogram.observe(stats.latency_ms(row) / 1000)
    try:
        assert generate_latest(ours) == generate_latest(theirs)
        assert generate_openmetrics(ours) == generate_openmetrics(theirs)
    finally:
        prometheus_client.enable_created_metrics()
    assert sum(fetches.buckets) < len(totals_ms) * 3, "results with no latency are counted but not timed"


def test_every_batch_status_has_a_series_from_the_first_scrape(make_server):
    fresh = scrape(make_server())
    for status in ("queued", "running", "done", "cancelled", "failed"):
        assert ("greenbatch_batches", (("status", status),)) in fresh


def test_open_websockets_are_counted(server):
    websocket = pytest.importorskip("websocket")
    assert value(scrape(server), "greenbatch_websocket_connections") == 0
    connection = websocket.create_connection(server.base_url.replace("http://", "ws://") + "/ws/batches", timeout=10)
    try:
        connection.recv()  # the snapshot: the upgrade is done
        assert value(scrape(server), "greenbatch_websocket_connections") == 1
    finally:
        connection.close()
    deadline = time.monotonic() + 5
    while value(scrape(server), "greenbatch_websocket_connections") != 0:
        assert time.monotonic() < deadline, "the gauge drops when the websocket closes"
        time.sleep(0.05)


# -- logs ------------------------------------------------------------------------------------


def test_json_log_format_writes_only_json_lines_with_the_batch_id_on_each_transition(make_server, target):
    server = make_server(env={"GREENBATCH_LOG_FORMAT": "json"})
    batch = server.submit([target.url("/ok"), target.url("/status/404")])
    server.wait(batch["id"])
    server.request("GET", "/healthz?token=never-logged")
    assert server.stop() == 0

    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]  # every line parses
    assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in lines)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"]) for entry in lines)
    transitions = [entry for entry in lines if entry.get("batch_id") == batch["id"]]
    assert [entry["status"] for entry in transitions] == ["queued", "running", "done"]
    assert transitions[-1]["counts"]["failed"] == 1
    access = [entry for entry in lines if entry["logger"] == "greenbatch.access"]
    posted = next(entry for entry in access if entry["method"] == "POST")
    assert posted["path"] == "/api/v1/batches" and posted["status"] == 201
    assert isinstance(posted["duration_ms"], float) and posted["bytes"] > 0 and posted["client"] == "127.0.0.1"
    assert any(entry["path"] == "/healthz?token=[redacted]" for entry in access)
    assert "never-logged" not in server.log()
    assert any(entry["msg"].startswith("greenbatch listening on http://127.0.0.1:") for entry in lines)


def test_text_log_format_writes_one_access_line_per_request(make_server):
    server = make_server()
    for _ in range(3):
        server.request("GET", "/healthz")
    server.request("GET", "/api/v1/batches/nope")
    log = server.wait_for_log('"GET /api/v1/batches/nope" 404')
    assert len(re.findall(r'greenbatch\.access: 127\.0\.0\.1 "GET /healthz" 200 \d+ B [\d.]+ ms', log)) == 3
    assert '"GET /api/v1/batches/nope" 404' in log


# -- reverse proxy ---------------------------------------------------------------------------


def test_with_one_trusted_proxy_urls_carry_the_forwarded_prefix_host_and_scheme(make_server, target):
    proxied = make_server(
        env={"GREENBATCH_PROXY_HOPS": "1", "GREENBATCH_ALLOWED_ORIGINS": "https://greenbatch.example"}
    )
    response = proxied.request("POST", "/api/v1/batches", json={"urls": [target.url("/ok")]}, headers=FORWARDED)
    assert response.status_code == 201, response.text
    assert response.headers["Location"].startswith("/dash/api/v1/batches/")
    links = response.json()["links"]
    assert links.pop("page").startswith("/dash/batches/")
    assert all(link.startswith("/dash/api/v1/") for link in links.values())
    page = proxied.request("GET", "/", headers=FORWARDED).text
    assert 'data-ws-url="wss://greenbatch.example/dash/ws/batches"' in page
    assert proxied.request("GET", "/api/v1/openapi.json", headers=FORWARDED).json()["servers"] == [{"url": "/dash"}]
    assert '203.0.113.9 "POST /api/v1/batches" 201' in proxied.log(), "the access log shows the real client"


def test_without_trusted_proxies_forwarded_headers_are_ignored(server, target):
    response = server.request("POST", "/api/v1/batches", json={"urls": [target.url("/ok")]}, headers=FORWARDED)
    assert response.status_code == 201, response.text
    assert response.headers["Location"].startswith("/api/v1/batches/")
    links = response.json()["links"]
    assert links.pop("page").startswith("/batches/")
    assert all(link.startswith("/api/v1/") for link in links.values())
    page = server.request("GET", "/", headers=FORWARDED).text
    assert f'data-ws-url="{server.base_url.replace("http://", "ws://")}/ws/batches"' in page


def test_forwarded_headers_from_a_peer_that_is_not_a_trusted_proxy_are_ignored(make_server, target):
    server = make_server(env={"GREENBATCH_PROXY_HOPS": "1", "GREENBATCH_TRUSTED_PROXIES": "10.9.9.9"})
    response = server.request("POST", "/api/v1/batches", json={"urls": [target.url("/ok")]}, headers=FORWARDED)
    assert response.status_code == 201, response.text
    assert response.headers["Location"].startswith("/api/v1/batches/")
    page = server.request("GET", "/", headers=FORWARDED).text
    assert f'data-ws-url="{server.base_url.replace("http://", "ws://")}/ws/batches"' in page
    assert '127.0.0.1 "POST /api/v1/batches" 201' in server.log() and "203.0.113.9" not in server.log()
    assert "not a trusted proxy (GREENBATCH_TRUSTED_PROXIES=10.9.9.9)" in server.log()
