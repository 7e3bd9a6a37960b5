"""The engine end to end: what one result records, every error kind, redirects, caps, cancel, rerun, exports."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import datetime
from urllib.parse import quote

import pytest


def only_result(server, urls, **options):
    """Run a batch to its end and return (batch, results by index)."""
    batch = server.submit(urls, **options)
    done = server.wait(batch["id"])
    return done, {r["index"]: r for r in server.results(batch["id"])}


def test_a_result_records_status_size_type_timings_and_attempts(server, target):
    batch, results = only_result(server, [target.url("/bytes/1500")])
    result = results[0]
    assert result["status_code"] == 200 and result["ok"] is True and result["error"] is None
    assert result["bytes"] == 1500
    assert result["content_type"] == "application/octet-stream"
    assert result["final_url"] == target.url("/bytes/1500")
    assert result["attempts"] == 1
    assert result["started_at"] <= result["finished_at"]
    timings = result["timings"]
    assert timings["total"] >= timings["ttfb"] > 0
    assert timings["dns"] is not None and timings["connect"] is not None and timings["tls"] is None
    assert batch["counts"] == {
        "total": 1,
        "pending": 0,
        "waiting": 0,
        "running": 0,
        "ok": 1,
        "failed": 0,
        "cancelled": 0,
        "warn": 0,
    }
    assert batch["stats"]["p50_ms"] is not None and batch["stats"]["by_status"] == {"200": 1}


def test_a_status_outside_accept_status_fails_with_a_status_error_naming_the_accepted_statuses(server, target):
    _, results = only_result(
        server, [target.url("/status/503"), target.url("/status/404")], accept_status="200-399,404"
    )
    assert results[0]["ok"] is False and results[0]["status_code"] == 503
    assert results[0]["error"] == {"kind": "status", "message": "503 is not an accepted status (200-399,404)"}
    assert results[1]["ok"] is True and results[1]["error"] is None


def test_status_failures_count_in_the_errors_panel_the_failed_filter_and_both_exports(server, target):
    urls = [target.url("/ok"), target.url("/status/500"), target.url("/status/404"), target.url("/loop")]
    batch, results = only_result(server, urls, max_redirects=1)
    assert batch["counts"]["failed"] == 3
    assert batch["stats"]["by_error"] == {"status": 2, "too_many_redirects": 1}, "the errors add up to the failed"
    assert [r["index"] for r in server.results(batch["id"], outcome="failed")] == [1, 2, 3]
    response = server.request("GET", f"/api/v1/batches/{batch['id']}/results", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["error_kind"], r["error_message"]) for r in rows[1:3]] == [
        ("status", "500 is not an accepted status (200-399)"),
        ("status", "404 is not an accepted status (200-399)"),
    ]
    response = server.request("GET", f"/api/v1/batches/{batch['id']}/results", params={"format": "ndjson"})
    exported = [json.loads(line) for line in response.text.splitlines()]
    assert [r["error"] and r["error"]["kind"] for r in exported] == [None, "status", "status", "too_many_redirects"]


def test_redirects_are_followed_hop_by_hop_and_each_hop_recorded(server, target):
    _, results = only_result(server, [target.url("/redirect/3")])
    result = results[0]
    assert result["status_code"] == 200
    assert [hop["status"] for hop in result["redirects"]] == [302, 302, 302]
    assert [hop["url"] for hop in result["redirects"]] == [target.url(f"/redirect/{n}") for n in (3, 2, 1)]
    assert result["final_url"] == target.url("/redirect/0")
    assert result["timings"]["redirect"] > 0
    assert result["attempts"] == 1, "hops are not attempts"


def test_a_redirect_loop_ends_as_too_many_redirects_naming_the_loop(server, target):
    _, results = only_result(server, [target.url("/loop"), target.url("/loop-a")], max_redirects=3)
    assert results[0]["error"] == {"kind": "too_many_redirects", "message": "redirect loop: /loop redirects to itself"}
    assert len(results[0]["redirects"]) == 4
    assert results[1]["error"] == {
        "kind": "too_many_redirects",
        "message": "redirect loop: /loop-a -> /loop-b -> /loop-a",
    }


def test_a_chain_longer_than_max_redirects_that_is_no_loop_names_where_it_pointed_last(server, target):
    _, results = only_result(server, [target.url("/redirect/5")], max_redirects=2)
    assert results[0]["error"] == {
        "kind": "too_many_redirects",
        "message": "more than 2 redirects; the last pointed to /redirect/2",
    }


def test_a_redirect_to_another_scheme_ends_as_invalid_url(server, target):
    _, results = only_result(server, [target.url("/redirect-to?url=ftp://example.com/x")])
    assert results[0]["error"]["kind"] == "invalid_url"


class HeaderRecorder:
    """A tiny HTTP server in the test process that remembers the headers of each request."""

    def __init__(self):
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(dict(self.headers))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_headers_are_sent_and_credentials_never_follow_a_redirect_to_another_origin(make_server, target):
    recorder = HeaderRecorder()
    try:
        server = make_server(env={"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{target.port},127.0.0.1:{recorder.port}"})
        direct = f"http://127.0.0.1:{recorder.port}/direct"
        redirected = target.url(f"/redirect-to?url=http://127.0.0.1:{recorder.port}/hop")
        headers = {"X-Probe": "42", "Authorization": "Bearer secret", "Cookie": "a=b"}
        _, results = only_result(server, [direct], headers=headers)
        assert results[0]["ok"]
        assert recorder.seen[0]["X-Probe"] == "42" and recorder.seen[0]["Authorization"] == "Bearer secret"
        _, results = only_result(server, [redirected], headers=headers)
        assert results[0]["ok"] and len(results[0]["redirects"]) == 1
        hop = recorder.seen[1]
        assert hop["X-Probe"] == "42"
        assert "Authorization" not in hop and "Cookie" not in hop
        assert hop["User-Agent"].startswith("greenbatch/")
    finally:
        recorder.close()


def test_head_requests_read_no_body(server, target):
    _, results = only_result(server, [target.url("/bytes/5000")], method="HEAD")
    assert results[0]["status_code"] == 200 and results[0]["bytes"] == 0


@pytest.mark.parametrize(
    "path, options, kind",
    [
        ("/delay/3000", {"timeout": 0.5}, "deadline"),
        ("/trickle?bytes=100&interval=0.2", {"timeout": 1}, "deadline"),
        ("/endless", {"max_bytes": 200_000}, "too_large"),
        ("/gzip?size=300000", {"max_bytes": 100_000}, "too_large"),
        ("/reset", {}, "other"),
        ("/close", {}, "other"),
    ],
)
def test_error_kinds_from_the_target(server, target, path, options, kind):
    started = time.monotonic()
    _, results = only_result(server, [target.url(path)], **options)
    assert results[0]["error"]["kind"] == kind, results[0]
    assert results[0]["ok"] is False
    assert time.monotonic() - started < 15


def test_a_closed_allowed_port_ends_as_refused(make_server, target, closed_port):
    server = make_server(env={"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{target.port},127.0.0.1:{closed_port}"})
    _, results = only_result(server, [f"http://127.0.0.1:{closed_port}/"])
    assert results[0]["error"]["kind"] == "refused"


def test_a_denied_address_ends_as_blocked(server, target):
    # Typed in a batch, it is refused at submit (tests/test_ssrf.py); a redirect leads the fetch there.
    _, results = only_result(server, [target.url("/redirect-to?url=http://127.0.0.1:1/")])
    assert results[0]["error"]["kind"] == "blocked"


def test_a_tls_failure_ends_as_tls(server, target):
    # The target speaks plain HTTP: a TLS handshake against it fails.
    _, results = only_result(server, [f"https://127.0.0.1:{target.port}/ok"])
    assert results[0]["error"]["kind"] == "tls"


def test_retries_on_connection_errors_count_attempts(make_server, target, closed_port):
    server = make_server(env={"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{target.port},127.0.0.1:{closed_port}"})
    _, results = only_result(server, [f"http://127.0.0.1:{closed_port}/"], retries=2)
    assert results[0]["error"]["kind"] == "refused"
    assert results[0]["attempts"] == 3


def test_concurrency_bounds_the_fetches_in_flight(server, target):
    started = time.monotonic()
    batch = server.submit([target.url("/delay/300")] * 8, concurrency=2)
    server.wait(batch["id"])
    # 8 URLs of 300 ms, 2 at a time: at least 4 rounds.
    assert time.monotonic() - started >= 1.1


def test_per_host_cap_bounds_one_host(server, target):
    started = time.monotonic()
    batch = server.submit([target.url("/delay/300")] * 4, concurrency=10, per_host=1)
    server.wait(batch["id"])
    assert time.monotonic() - started >= 1.1


def test_cancel_stops_in_flight_fetches_within_a_second_and_cancels_the_queue(server, target):
    batch = server.submit([target.url("/delay/10000")] * 10, concurrency=3)
    server.wait(batch["id"], statuses=("running",))
    time.sleep(0.3)
    started = time.monotonic()
    response = server.request("POST", f"/api/v1/batches/{batch['id']}/cancel")
    assert response.status_code == 200, response.text
    done = server.wait(batch["id"], timeout=5)
    assert time.monotonic() - started < 1.5
    assert done["status"] == "cancelled"
    assert done["counts"]["cancelled"] == 10 and done["counts"]["pending"] == 0
    results = server.results(batch["id"])
    assert sorted(r["index"] for r in results) == list(range(10))
    assert {r["error"]["kind"] for r in results} == {"cancelled"}
    assert done["stats"]["urls_per_s"] is None, "a batch that fetched nothing has no rate"


def parse_iso(text: str) -> datetime:
    """A result's or batch's UTC timestamp."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_rate_of_a_cancelled_batch_counts_the_urls_it_fetched_not_those_that_never_ran(server, target):
    batch = server.submit([target.url("/ok")] * 2 + [target.url("/delay/10000")] * 200, concurrency=2)
    deadline = time.monotonic() + 10
    while server.request("GET", f"/api/v1/batches/{batch['id']}").json()["counts"]["ok"] < 2:
        assert time.monotonic() < deadline, "the two quick URLs never finished"
        time.sleep(0.05)
    assert server.request("POST", f"/api/v1/batches/{batch['id']}/cancel").status_code == 200
    done = server.wait(batch["id"], timeout=10)
    assert done["counts"]["ok"] == 2 and done["counts"]["cancelled"] == 200
    seconds = (parse_iso(done["finished_at"]) - parse_iso(done["started_at"])).total_seconds()
    # The rate times the run time is the URLs it counted: 2 fetched, never the 200 that never ran.
    assert done["stats"]["urls_per_s"] * max(seconds, 0.01) < 20


def test_cancelling_a_batch_ends_every_url_that_never_ran_as_cancelled_once_however_many_slices_it_takes(
    make_server, target
):
    # The never-run URLs are marked a slice (engine.CANCEL_SLICE) at a time, each committed before the next.
    server = make_server(env={"GREENBATCH_MAX_URLS": "20000"})
    urls = [target.url(f"/delay/10000?i={i}") for i in range(12_001)]
    batch = server.submit(urls, concurrency=2)
    server.wait(batch["id"], statuses=("running",))
    response = server.request("POST", f"/api/v1/batches/{batch['id']}/cancel")
    assert response.status_code == 200, response.text
    done = server.wait(batch["id"], timeout=60)
    assert done["status"] == "cancelled"
    assert done["counts"] == {
        "total": 12_001,
        "pending": 0,
        "waiting": 0,
        "running": 0,
        "ok": 0,
        "failed": 0,
        "cancelled": 12_001,
        "warn": 0,
    }
    results = server.results(batch["id"])
    assert [r["index"] for r in results] == list(range(12_001))
    assert {r["error"]["kind"] for r in results} == {"cancelled"}


def test_cancelling_a_finished_batch_answers_409(server, target):
    batch = server.submit([target.url("/ok")])
    server.wait(batch["id"])
    response = server.request("POST", f"/api/v1/batches/{batch['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_finished"


def test_rerun_failed_makes_a_new_batch_of_only_the_urls_that_did_not_end_ok(server, target):
    urls = [target.url("/ok"), target.url("/status/500"), target.url("/ok"), target.url("/status/404")]
    batch = server.submit(urls)
    server.wait(batch["id"])
    response = server.request("POST", f"/api/v1/batches/{batch['id']}/rerun", json={"only": "failed"})
    assert response.status_code == 201, response.text
    rerun = response.json()
    assert rerun["parent_id"] == batch["id"] and rerun["id"] != batch["id"]
    server.wait(rerun["id"])
    assert [r["url"] for r in server.results(rerun["id"])] == [urls[1], urls[3]]


def test_rerun_all_repeats_every_url_with_the_same_options(server, target):
    batch = server.submit([target.url("/ok"), target.url("/status/500")], concurrency=7)
    server.wait(batch["id"])
    rerun = server.request("POST", f"/api/v1/batches/{batch['id']}/rerun").json()
    assert rerun["counts"]["total"] == 2 and rerun["options"]["concurrency"] == 7


def test_results_filter_by_outcome_and_page_by_index(server, target):
    urls = [target.url("/ok"), target.url("/status/500")] * 3
    batch = server.submit(urls)
    server.wait(batch["id"])
    failed = server.results(batch["id"], outcome="failed")
    assert [r["index"] for r in failed] == [1, 3, 5]
    page = server.request("GET", f"/api/v1/batches/{batch['id']}/results", params={"limit": 2, "after": 1}).json()
    assert [r["index"] for r in page["results"]] == [2, 3] and page["next_after"] == 3


def test_csv_export_streams_every_result_with_a_filename(server, target):
    urls = [target.url("/ok"), target.url("/status/500"), target.url("/html?ctype==HYPERLINK(1)")]
    batch = server.submit(urls)
    server.wait(batch["id"])
    response = server.request("GET", f"/api/v1/batches/{batch['id']}/results", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert f"greenbatch-{batch['id']}.csv" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(r["index"]) for r in rows] == [0, 1, 2]
    assert rows[1]["status_code"] == "500" and rows[1]["ok"] == "false"
    assert rows[2]["content_type"].startswith("'="), "a formula from a target must be defused"


def test_ndjson_export_has_one_result_per_line(server, target):
    batch = server.submit([target.url("/ok")] * 3)
    server.wait(batch["id"])
    response = server.request("GET", f"/api/v1/batches/{batch['id']}/results", params={"format": "ndjson"})
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [r["index"] for r in lines] == [0, 1, 2]


def test_events_are_numbered_from_one_without_gaps_and_end_with_the_final_state(server, target):
    batch = server.submit([target.url("/ok")] * 5)
    server.wait(batch["id"])
    body = server.request("GET", f"/api/v1/batches/{batch['id']}/events", params={"after": 0}).json()
    seqs = [e["seq"] for e in body["events"]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert body["events"][0]["data"]["status"] == "queued"
    assert body["events"][-1]["type"] == "batch" and body["events"][-1]["data"]["status"] == "done"
    assert sorted(e["data"]["index"] for e in body["events"] if e["type"] == "result") == [0, 1, 2, 3, 4]
    later = server.request("GET", f"/api/v1/batches/{batch['id']}/events", params={"after": seqs[-2]}).json()
    assert [e["seq"] for e in later["events"]] == [seqs[-1]]


def test_a_full_group_of_events_is_committed_without_waiting_out_the_flush_interval(make_server, target):
    # GREENBATCH_FLUSH_ROWS events commit at once even when GREENBATCH_FLUSH_INTERVAL is long: the
    # interval (10 s, its maximum) and the slow URLs (20 s) both outlast the 8 s we wait, so only the
    # row count can have committed the fast results while the batch still runs. One fetcher sits in the
    # first slow URL; the other runs the fast ones and then the last slow one, so the URLs never run
    # out while we wait (running out also asks for a commit, which would hide a broken row count).
    server = make_server(env={"GREENBATCH_FLUSH_INTERVAL": "10", "GREENBATCH_FLUSH_ROWS": "10"})
    slow = target.url("/delay/20000")
    batch = server.submit([slow] + [target.url(f"/ok?i={i}") for i in range(12)] + [slow], concurrency=2)
    deadline = time.monotonic() + 8
    try:
        while True:
            events = server.request("GET", f"/api/v1/batches/{batch['id']}/events", params={"after": 0}).json()
            results = [e for e in events["events"] if e["type"] == "result"]
            if len(results) >= 8:
                break
            assert time.monotonic() < deadline, f"only {len(results)} results were committed: {events}"
            time.sleep(0.1)
        assert server.batch(batch["id"])["status"] == "running"
    finally:
        server.request("POST", f"/api/v1/batches/{batch['id']}/cancel")


def test_the_rate_of_a_running_batch_keeps_falling_while_it_waits_on_a_slow_url(server, target):
    # The statistics of a batch are cached between new results, but its URLs/s is "so far" and must
    # not freeze while nothing finishes.
    batch = server.submit([target.url("/ok")] * 4 + [target.url("/delay/5000")], concurrency=5)
    try:
        deadline = time.monotonic() + 10
        while server.batch(batch["id"])["counts"]["ok"] < 4:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first = server.batch(batch["id"])
        time.sleep(1)
        later = server.batch(batch["id"])
        assert later["counts"] == first["counts"] and later["status"] == "running"
        assert later["stats"]["urls_per_s"] < first["stats"]["urls_per_s"]
    finally:
        server.request("POST", f"/api/v1/batches/{batch['id']}/cancel")


def test_delete_removes_a_finished_batch_and_refuses_a_running_one(server, target):
    running = server.submit([target.url("/delay/3000")])
    assert server.request("DELETE", f"/api/v1/batches/{running['id']}").status_code == 409
    server.request("POST", f"/api/v1/batches/{running['id']}/cancel")
    server.wait(running["id"])
    assert server.request("DELETE", f"/api/v1/batches/{running['id']}").status_code == 204
    assert server.request("GET", f"/api/v1/batches/{running['id']}").status_code == 404


def test_batches_beyond_the_running_limit_queue_in_order(make_server, target):
    server = make_server(env={"GREENBATCH_MAX_RUNNING_BATCHES": "1"})
    first = server.submit([target.url("/delay/500")])
    second = server.submit([target.url("/ok")])
    assert server.batch(second["id"])["status"] == "queued"
    server.wait(second["id"])
    assert server.batch(first["id"])["status"] == "done"
    assert server.batch(first["id"])["finished_at"] <= server.batch(second["id"])["started_at"]


def test_results_read_back_exactly_as_they_were_streamed_whatever_their_characters(server, target):
    # Target-controlled text (a content type with quotes, a backslash and non-ASCII) and a URL with
    # non-ASCII and an emoji go through the store's JSON unchanged: the events, the results page and
    # the NDJSON export all agree with what was submitted.
    ctype = 'text/x-"quoted"\\back; name=caf\u00e9'
    urls = [target.url("/html?ctype=") + quote(ctype), target.url("/status/200?q=caf\u00e9&e=\U0001f600")]
    batch = server.submit(urls)
    server.wait(batch["id"])
    results = server.results(batch["id"])
    assert [r["url"] for r in results] == urls
    events = server.request("GET", f"/api/v1/batches/{batch['id']}/events").json()["events"]
    streamed = {e["data"]["index"]: e["data"] for e in events if e["type"] == "result"}
    assert [streamed[i] for i in range(2)] == results
    exported = [
        json.loads(line)
        for line in server.request(
            "GET", f"/api/v1/batches/{batch['id']}/results", params={"format": "ndjson"}
        ).text.splitlines()
    ]
    assert exported == results
    # The target sends the header's UTF-8 bytes; HTTP clients read header bytes as Latin-1.
    assert results[0]["content_type"] == ctype.encode("utf-8").decode("latin-1")
