"""GET /api/v1/batches/<id>/running: the URLs a batch has in flight now, with how long each has been."""

from __future__ import annotations

import time

from tests.support.server import error_of


def running_of(server, batch_id: str) -> dict:
    """The running list of a batch (asserting 200)."""
    response = server.request("GET", f"/api/v1/batches/{batch_id}/running")
    assert response.status_code == 200, response.text
    return response.json()


def test_running_lists_the_urls_in_flight_oldest_first_with_their_elapsed_time(server, target):
    urls = [target.url(f"/delay/{1500 + 100 * i}?n={i}") for i in range(6)]
    batch = server.submit(urls, concurrency=3)
    deadline = time.monotonic() + 10
    while (answer := running_of(server, batch["id"]))["count"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    answer = running_of(server, batch["id"])
    assert answer["count"] == 3
    assert [u["index"] for u in answer["running"]] == [0, 1, 2]
    assert [u["url"] for u in answer["running"]] == urls[:3]
    elapsed = [u["elapsed_ms"] for u in answer["running"]]
    assert all(250 <= ms < 1500 for ms in elapsed), elapsed
    assert elapsed == sorted(elapsed, reverse=True), "oldest first"
    assert all(u["started_at"].endswith("Z") for u in answer["running"])


def test_running_is_empty_once_the_batch_has_ended(server, target):
    batch = server.submit([target.url("/ok")])
    server.wait(batch["id"])
    assert running_of(server, batch["id"]) == {"batch_id": batch["id"], "running": [], "count": 0}


def test_running_lists_at_most_500_and_counts_them_all(make_server, target):
    server = make_server()
    batch = server.submit([target.url(f"/delay/3000?n={i}") for i in range(600)], concurrency=600)
    deadline = time.monotonic() + 10
    while (answer := running_of(server, batch["id"]))["count"] < 600 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answer["count"] == 600
    assert len(answer["running"]) == 500
    server.request("POST", f"/api/v1/batches/{batch['id']}/cancel")


def test_running_of_an_unknown_batch_is_a_404(server):
    response = server.request("GET", "/api/v1/batches/0123456789ab/running")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
