"""Durability: a killed server loses no stored result, doubles none, and finishes its batches on restart."""

from __future__ import annotations

import signal
import sqlite3
import time


def stored_results(data_dir, batch_id):
    """(index, count) of result events straight from the SQLite file."""
    with sqlite3.connect(data_dir / "greenbatch.db") as conn:
        return dict(
            conn.execute(
                "SELECT idx, COUNT(*) FROM events WHERE batch_id = ? AND type = 'result' GROUP BY idx", (batch_id,)
            )
        )


def wait_for_results(server, batch_id, at_least, timeout=20):
    """Poll until a running batch has at least `at_least` finished URLs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = server.batch(batch_id)["counts"]
        if counts["ok"] + counts["failed"] >= at_least:
            return counts
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not reach {at_least} results")


def test_sigkill_mid_batch_loses_nothing_and_the_restart_fetches_only_what_is_missing(make_server, target, tmp_path):
    data = tmp_path / "kill"
    server = make_server(data_dir=data)
    urls = [target.url(f"/delay/200?n={i}") for i in range(60)]
    batch = server.submit(urls, concurrency=5)
    wait_for_results(server, batch["id"], 15)
    time.sleep(0.3)  # let a flush land so some results are on disk
    server.kill()
    before = stored_results(data, batch["id"])
    assert before, "some results were committed before the kill"
    assert all(n == 1 for n in before.values())
    target.hits(reset=True)

    restarted = make_server(data_dir=data)
    done = restarted.wait(batch["id"], timeout=60)
    assert done["status"] == "done"
    assert done["counts"]["ok"] == 60 and done["counts"]["pending"] == 0
    after = stored_results(data, batch["id"])
    assert sorted(after) == list(range(60)), "every URL ends in exactly one final state"
    assert all(n == 1 for n in after.values()), "no result is doubled"
    # Only URLs without a stored result were fetched again (in-flight ones at the kill are among them).
    assert sum(target.hits().values()) == 60 - len(before)


def test_sigterm_mid_batch_exits_zero_and_the_next_start_finishes_the_batch(make_server, target, tmp_path):
    data = tmp_path / "term"
    server = make_server(data_dir=data, env={"GREENBATCH_SHUTDOWN_GRACE": "0.2"})
    batch = server.submit([target.url("/delay/300")] * 40, concurrency=4)
    wait_for_results(server, batch["id"], 4)
    assert server.stop() == 0
    stored = stored_results(data, batch["id"])
    assert 4 <= len(stored) < 40

    restarted = make_server(data_dir=data)
    done = restarted.wait(batch["id"], timeout=60)
    assert done["counts"]["ok"] == 40
    assert all(n == 1 for n in stored_results(data, batch["id"]).values())


def test_sigint_also_stops_cleanly(make_server):
    server = make_server()
    server.signal(signal.SIGINT)
    assert server.proc.wait(15) == 0
    assert "stopped cleanly" in server.log()


def test_a_ten_thousand_url_batch_ends_with_every_url_in_exactly_one_final_state(make_server, target, tmp_path):
    data = tmp_path / "big"
    server = make_server(data_dir=data)
    urls = [target.url(f"/ok?i={i}") if i % 10 else target.url("/status/500") for i in range(10_000)]
    response = server.request(
        "POST",
        "/api/v1/batches",
        data="\n".join(urls),
        headers={"Content-Type": "text/plain"},
        params={"concurrency": 100},
    )
    assert response.status_code == 201, response.text
    batch_id = response.json()["id"]
    done = server.wait(batch_id, timeout=180)
    assert done["counts"] == {
        "total": 10_000,
        "pending": 0,
        "waiting": 0,
        "running": 0,
        "ok": 9_000,
        "failed": 1_000,
        "cancelled": 0,
        "warn": 0,
    }
    stored = stored_results(data, batch_id)
    assert len(stored) == 10_000 and set(stored.values()) == {1}
    assert done["stats"]["by_status"] == {"200": 9000, "500": 1000}


def test_a_batch_left_unfinished_by_a_version_with_one_row_per_url_finishes_on_the_next_start(
    make_server, target, tmp_path
):
    data = tmp_path / "old"
    server = make_server(data_dir=data, env={"GREENBATCH_SHUTDOWN_GRACE": "0.2"})
    urls = [target.url(f"/delay/300?n={i}") for i in range(30)]
    batch = server.submit(urls, concurrency=3)
    wait_for_results(server, batch["id"], 3)
    assert server.stop() == 0
    stored = stored_results(data, batch["id"])
    # Put the file back in the earlier layout: the batch's URLs one row each, no url_lists.
    with sqlite3.connect(data / "greenbatch.db") as conn:
        conn.executescript("""
            CREATE TABLE urls (batch_id TEXT NOT NULL, idx INTEGER NOT NULL, url TEXT NOT NULL,
                               PRIMARY KEY (batch_id, idx)) WITHOUT ROWID;
            DROP TABLE url_lists;
        """)
        conn.executemany("INSERT INTO urls VALUES (?, ?, ?)", [(batch["id"], i, u) for i, u in enumerate(urls)])
    target.hits(reset=True)

    restarted = make_server(data_dir=data)
    done = restarted.wait(batch["id"], timeout=60)
    assert done["status"] == "done" and done["counts"]["ok"] == 30
    assert sorted(stored_results(data, batch["id"])) == list(range(30))
    assert sum(target.hits().values()) == 30 - len(stored), "only the URLs without a stored result ran again"
    assert {r["url"] for r in restarted.results(batch["id"])} == set(urls)
