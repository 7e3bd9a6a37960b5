"""A full disk and a damaged database: the server says so, loses nothing, and never shows less than it has.

Disk-full tests run on a small tmpfs (the tests run as root; they skip when mounting is not allowed).
Damaged-database tests corrupt copies of a real database a server wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import gevent
import pytest
import requests

from app.runs.events import Event
from app.runs.store import SQLiteStore
from tests.support.events import result_event
from tests.support.server import ROOT, GreenbatchServer, error_of

FINAL = ("done", "cancelled", "failed")
PAD = "p" * 1800  # long URLs make big events, so a full disk stops commits soon after it fills


# -- a small disk ----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs of its own, unmounted afterwards; skips where mounting is not permitted."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)  # a process still holds a file


def fill(disk: Path) -> Path:
    """Take every free byte of `disk` with one file; returns it (delete it to give the space back)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


def stored_results(db: Path, batch_id: str) -> dict[int, int]:
    """{URL index: result events stored}, straight from the file."""
    with sqlite3.connect(db) as conn:
        return dict(
            conn.execute(
                "SELECT idx, COUNT(*) FROM events WHERE batch_id = ? AND type = 'result' GROUP BY idx", (batch_id,)
            )
        )


def test_a_full_disk_keeps_the_batch_live_refuses_submits_and_recovers_as_soon_as_space_returns(
    small_disk, tmp_path, make_server, target
):
    server = make_server(data_dir=tmp_path / "logs", env={"GREENBATCH_DATA_DIR": str(small_disk)})
    total = 3000
    urls = [target.url(f"/delay/100?i={i}&pad={PAD}") for i in range(total)]
    batch_id = server.submit(urls, concurrency=30)["id"]
    seen = []  # (finished URLs, status) at each poll: what anyone watching the batch was shown

    def poll() -> dict:
        batch = server.batch(batch_id)
        seen.append((batch["counts"]["ok"] + batch["counts"]["failed"], batch["status"]))
        return batch

    while poll()["counts"]["ok"] < 200:
        time.sleep(0.05)
    filler = fill(small_disk)
    deadline = time.monotonic() + 30
    while (ready := server.request("GET", "/readyz")).status_code == 200:
        assert time.monotonic() < deadline, "/readyz still says ready 30 s after the disk filled"
        poll()
        time.sleep(0.1)
    assert ready.status_code == 503
    assert ready.json()["store"] == "failing" and "disk is full" in ready.json()["message"]

    refused = server.request("POST", "/api/v1/batches", json={"urls": [target.url("/ok")]})
    assert refused.status_code == 503
    error = error_of(refused)
    assert error["code"] == "store_unavailable"
    assert "nothing was stored" in error["message"] and "disk is full" in error["message"]
    rerun = server.request("POST", f"/api/v1/batches/{batch_id}/rerun")
    assert rerun.status_code == 503 and error_of(rerun)["code"] == "store_unavailable"

    # Every URL gets fetched meanwhile; the batch stays live, shown from memory, until its events are stored.
    deadline = time.monotonic() + 60
    while (batch := poll())["counts"]["pending"] or batch["counts"]["running"]:
        assert time.monotonic() < deadline, f"the batch did not finish fetching: {batch['counts']}"
        time.sleep(0.2)
    held = time.monotonic() + 35  # longer than any wait the engine gives up after
    while time.monotonic() < held:
        batch = poll()
        assert batch["status"] not in FINAL, "a batch whose final events are not stored must not look final"
        assert batch["counts"]["ok"] == total
        time.sleep(0.5)
    deleting = server.request("DELETE", f"/api/v1/batches/{batch_id}")
    assert deleting.status_code == 409, "a batch whose last events are not stored yet cannot be deleted"

    filler.unlink()
    done = server.wait(batch_id, timeout=30)
    assert done["status"] == "done" and done["counts"]["ok"] == total and done["counts"]["pending"] == 0
    assert server.request("GET", "/readyz").status_code == 200
    finished = [count for count, _ in seen]
    assert finished == sorted(finished), "the finished count shown never goes backwards"
    stored = stored_results(small_disk / "greenbatch.db", batch_id)
    assert sorted(stored) == list(range(total)) and set(stored.values()) == {1}, "every URL stored exactly once"
    server.submit([target.url("/ok")])  # 201 again: submits work
    server.stop()


def test_a_server_stopped_while_its_disk_is_full_exits_at_once_and_the_next_start_finishes_the_batch(
    small_disk, tmp_path, make_server, target
):
    env = {"GREENBATCH_DATA_DIR": str(small_disk), "GREENBATCH_SHUTDOWN_GRACE": "0.5"}
    server = make_server(data_dir=tmp_path / "logs", env=env)
    total = 1500
    batch_id = server.submit([target.url(f"/delay/100?i={i}&pad={PAD}") for i in range(total)], concurrency=30)["id"]
    while server.batch(batch_id)["counts"]["ok"] < 200:
        time.sleep(0.05)
    filler = fill(small_disk)
    deadline = time.monotonic() + 30
    while server.request("GET", "/readyz").status_code == 200:
        assert time.monotonic() < deadline, "/readyz still says ready 30 s after the disk filled"
        time.sleep(0.1)
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 5, "a store whose commits fail does not hold up the stop"
    assert "not committed" in server.log()

    filler.unlink()
    restarted = make_server(data_dir=tmp_path / "logs", env=env)
    done = restarted.wait(batch_id, timeout=60)
    assert done["status"] == "done" and done["counts"]["ok"] == total
    stored = stored_results(small_disk / "greenbatch.db", batch_id)
    assert sorted(stored) == list(range(total)) and set(stored.values()) == {1}, "every URL stored exactly once"
    restarted.stop()


def result(batch_id: str, seq: int) -> Event:
    """A result event as the engine makes it, big enough that a full disk shows soon."""
    return result_event(batch_id, seq, seq - 1, f"?pad={PAD}")


def test_events_that_cannot_be_committed_wait_in_order_and_reach_the_observers_once_when_space_returns(small_disk):
    store = SQLiteStore(str(small_disk / "gb.db"), flush_interval=0.01, flush_rows=100)
    try:
        store.create_batch("b", "full", {}, ["http://a.test/"], "2026-12-01T00:00:00.000Z")
        committed: list[int] = []
        store.observe_commits(lambda events: committed.extend(e.seq for e in events))
        filler = fill(small_disk)
        seq = 0
        for _ in range(30):
            store.extend([result("b", seq + i) for i in range(1, 101)])
            seq += 100
            gevent.sleep(0.01)
        assert not store.flush(3), "3,000 big events cannot all fit on a full disk"
        fault = store.fault()
        assert fault is not None and fault.state == "failing" and "full" in fault.error
        assert committed == list(range(1, len(committed) + 1)), "only committed events, in order"

        filler.unlink()
        assert store.flush(20), "space is back: everything is committed"
        assert store.fault() is None
        assert committed == list(range(1, seq + 1)), "each event reaches the observers once, in seq order"
        assert [e.seq for e in store.stored_events("b", 0, 5000)] == committed
    finally:
        store.close()


# -- a damaged database ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def written_db(tmp_path_factory, target_env, target):
    """A database a server wrote: one done batch of 3,000 URLs; (file, batch id). Tests corrupt copies of it.

    One URL at a time, so results are stored in index order and a damaged URL's pages hold no result of
    another export span: with 50 at once, one fetch stalled by a loaded machine was stored among later
    URLs' results, and damage meant for the middle broke the first span too."""
    data = tmp_path_factory.mktemp("written")
    server = GreenbatchServer(data, target_env).start()
    try:
        batch = server.submit([target.url(f"/ok?i={i:05d}x") for i in range(3000)], concurrency=1)
        assert server.wait(batch["id"], timeout=60)["counts"]["ok"] == 3000
    finally:
        assert server.stop() == 0
    return data / "greenbatch.db", batch["id"]


def damaged_copy(written_db, tmp_path: Path, *indexes: int) -> Path:
    """A data folder holding a copy of the written database with garbage over every page that holds the
    result of one of these URL indexes."""
    source, _ = written_db
    data = tmp_path / "damaged"
    data.mkdir()
    db = data / "greenbatch.db"
    shutil.copyfile(source, db)
    raw = bytearray(db.read_bytes())
    page_size = int.from_bytes(raw[16:18], "big")
    pages = set()
    for index in indexes:
        marker = f"i={index:05d}x".encode()
        at = raw.find(marker)
        assert at >= 0, marker
        while at >= 0:
            pages.add(at // page_size)
            at = raw.find(marker, at + 1)
    for page in pages:
        raw[page * page_size : (page + 1) * page_size] = os.urandom(page_size)
    db.write_bytes(raw)
    return data


def test_damaged_middle_pages_make_readyz_503_and_break_an_export_that_cannot_finish(written_db, tmp_path, make_server):
    _, batch_id = written_db
    server = make_server(data_dir=damaged_copy(written_db, tmp_path, 1500))
    deadline = time.monotonic() + 20
    while (ready := server.request("GET", "/readyz")).status_code == 200:
        assert time.monotonic() < deadline, "the integrity check at start did not report the damage"
        time.sleep(0.1)
    assert ready.status_code == 503 and ready.json()["store"] == "damaged"
    assert "greenbatch.db is damaged" in ready.json()["message"]
    refused = server.request("POST", "/api/v1/batches", json={"urls": ["http://a.test/"]})
    assert refused.status_code == 503 and error_of(refused)["code"] == "store_unavailable"

    for fmt in ("csv", "ndjson", "json"):
        response = server.request("GET", f"/api/v1/batches/{batch_id}/results", params={"format": fmt}, stream=True)
        assert response.status_code == 200, f"the first page was readable, so the download starts: {response.text}"
        received = b""
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for chunk in response.iter_content(None):
                received += chunk
        lines = received.decode().splitlines()
        assert 1000 <= len(lines) < 3000
        assert "stopped" in lines[-1] and "incomplete" in lines[-1] and "error" in lines[-1]
        if fmt != "csv":  # a JSON error on a line of its own, after the last whole result
            assert json.loads(lines[-1])["error"]["code"] == "store_unavailable"
            assert json.loads(lines[-2].rstrip(","))["url"].startswith("http://")


def test_an_export_whose_first_page_is_damaged_answers_a_json_error(written_db, tmp_path, make_server):
    _, batch_id = written_db
    server = make_server(
        data_dir=damaged_copy(written_db, tmp_path, 5), env={"GREENBATCH_INTEGRITY_CHECK_INTERVAL": "0"}
    )
    response = server.request("GET", f"/api/v1/batches/{batch_id}/results", params={"format": "csv"})
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "store_unavailable" and "malformed" in error["message"]
    ready = server.request("GET", "/readyz")
    assert ready.status_code == 503 and ready.json()["store"] == "damaged", "a read that met damage is remembered"


def start_fails(data: Path) -> str:
    """Start `python wsgi.py` on this data folder, expect exit 2, and return what it printed."""
    env = {**os.environ, "GREENBATCH_DATA_DIR": str(data), "GREENBATCH_PORT": "0"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "wsgi.py")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stdout + done.stderr
    return done.stdout + done.stderr


def garbage(db: Path) -> None:
    """Bytes that are no database at all."""
    db.write_bytes(os.urandom(8192))


def truncated(db: Path) -> None:
    """The first half of the file."""
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])


def emptied(db: Path) -> None:
    """0 bytes."""
    db.write_bytes(b"")


def folder(db: Path) -> None:
    """A folder where the file should be."""
    db.unlink()
    db.mkdir()


@pytest.mark.parametrize(
    "damage, problem",
    [
        (garbage, "is not a SQLite database or is damaged"),
        (truncated, "is not a SQLite database or is damaged (truncated"),
        (emptied, "is an empty file (0 bytes)"),
        (folder, "is a folder, not a file"),
    ],
    ids=["garbage", "truncated", "empty", "folder"],
)
def test_a_database_that_cannot_be_used_stops_start_up_with_one_line_naming_the_file_and_the_setting(
    written_db, tmp_path, damage, problem
):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(written_db[0], data / "greenbatch.db")
    damage(data / "greenbatch.db")
    printed = start_fails(data)
    last = printed.strip().splitlines()[-1]
    assert printed.count("cannot start") == 1 and "Traceback" not in printed, printed
    assert last.startswith(f"greenbatch: cannot start: the database {data / 'greenbatch.db'} {problem}"), last
    assert last.endswith("move it away to start afresh, or set GREENBATCH_DATA_DIR"), last


def test_a_missing_database_is_created(tmp_path, make_server):
    server = make_server(data_dir=tmp_path / "new")
    assert (tmp_path / "new" / "greenbatch.db").stat().st_size > 0
    assert server.request("GET", "/readyz").status_code == 200


GUNICORN = shutil.which("gunicorn", path=os.path.dirname(sys.executable)) or shutil.which("gunicorn")


@pytest.mark.skipif(GUNICORN is None, reason="gunicorn is not installed (requirements-dev.txt)")
def test_gunicorn_stops_with_the_one_line_error_instead_of_restarting_the_worker(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    emptied(data / "greenbatch.db")
    env = {**os.environ, "GREENBATCH_DATA_DIR": str(data)}
    done = subprocess.run(
        [GUNICORN, "-k", "app.worker.Worker", "-w", "1", "-b", "127.0.0.1:0", "wsgi:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    printed = done.stdout + done.stderr
    assert done.returncode == 3, printed
    assert printed.count("greenbatch: cannot start: the database") == 1, "the worker was not started again"
    assert "Traceback" not in printed
