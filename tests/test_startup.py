"""Starting and stopping as a person does: one server per data folder, one-line start-up errors, a second
Ctrl-C that stops at once, and `make run` ending without make's "Interrupt" line."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.support.server import ROOT


def start_fails(data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python wsgi.py` that must refuse to start; its exit code and what it printed."""
    full_env = {**os.environ, "GREENBATCH_DATA_DIR": str(data_dir), "GREENBATCH_PORT": "0", **env}
    return subprocess.run(
        [sys.executable, str(ROOT / "wsgi.py")], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=30
    )


def one_line(refused: subprocess.CompletedProcess[str]) -> str:
    """The single line a refused start printed (no traceback)."""
    lines = [line for line in (refused.stdout + refused.stderr).splitlines() if line.strip()]
    assert "Traceback" not in refused.stderr, refused.stderr
    cannot = [line for line in lines if line.startswith("greenbatch: cannot start: ")]
    assert len(cannot) == 1, lines
    return cannot[0]


def test_a_second_server_on_the_same_data_folder_refuses_to_start_naming_the_pid_that_holds_it(make_server, tmp_path):
    first = make_server(data_dir=tmp_path / "shared")
    refused = start_fails(tmp_path / "shared", {})
    assert refused.returncode == 2
    line = one_line(refused)
    assert f"{tmp_path / 'shared'} is in use by pid {first.proc.pid}" in line and "GREENBATCH_DATA_DIR" in line
    assert first.request("GET", "/readyz").status_code == 200, "the first server is untouched"
    first.stop()
    second = make_server(data_dir=tmp_path / "shared")  # the folder is free again once its server exits
    assert second.request("GET", "/healthz").status_code == 200


def test_a_killed_server_leaves_its_folder_free_for_the_next_start(make_server, tmp_path):
    make_server(data_dir=tmp_path / "killed").kill()
    assert make_server(data_dir=tmp_path / "killed").request("GET", "/healthz").status_code == 200


def test_a_taken_port_stops_start_up_in_one_line_before_the_data_folder_is_touched(make_server, tmp_path):
    running = make_server()
    port = int(running.base_url.rsplit(":", 1)[1])
    refused = start_fails(tmp_path / "other", {"GREENBATCH_PORT": str(port)})
    assert refused.returncode == 2
    assert f"127.0.0.1:{port} is in use (another greenbatch?); use GREENBATCH_PORT={port + 1}" in one_line(refused)
    assert not (tmp_path / "other" / "greenbatch.db").exists()


def test_a_bad_allow_list_entry_stops_start_up_in_one_line_naming_the_variable(tmp_path):
    refused = start_fails(tmp_path / "bad", {"GREENBATCH_ALLOW_TARGETS": "10.0.0.0/33"})
    assert refused.returncode == 2
    line = one_line(refused)
    assert "GREENBATCH_ALLOW_TARGETS" in line and "10.0.0.0/33" in line


def test_a_second_ctrl_c_stops_at_once_and_what_was_in_flight_runs_on_the_next_start(make_server, target, tmp_path):
    data = tmp_path / "twice"
    server = make_server(data_dir=data, env={"GREENBATCH_SHUTDOWN_GRACE": "60"})
    batch = server.submit([target.url(f"/delay/4000?n={i}") for i in range(6)], concurrency=3)
    deadline = time.monotonic() + 10
    while server.batch(batch["id"])["counts"]["running"] < 3:
        assert time.monotonic() < deadline, "the fetches never started"
        time.sleep(0.05)
    server.signal(signal.SIGINT)
    time.sleep(0.5)
    assert server.proc.poll() is None, "the first Ctrl-C gives in-flight fetches their grace"
    stopping = time.monotonic()
    server.signal(signal.SIGINT)
    assert server.proc.wait(10) == 0
    assert time.monotonic() - stopping < 5, "the second Ctrl-C does not wait out the 60 s grace"
    assert "received SIGINT again: stopping now" in server.log()
    server.stop()

    restarted = make_server(data_dir=data)
    done = restarted.wait(batch["id"], timeout=60)
    assert done["status"] == "done" and done["counts"]["ok"] == 6
    with sqlite3.connect(data / "greenbatch.db") as db:
        counts = dict(
            db.execute(
                "SELECT idx, COUNT(*) FROM events WHERE batch_id = ? AND type = 'result' GROUP BY idx", (batch["id"],)
            )
        )
    db.close()
    assert counts == {i: 1 for i in range(6)}, "every URL once: the killed fetches ran again, nothing doubled"


def test_make_run_stopped_with_ctrl_c_ends_without_make_reporting_an_interrupt(tmp_path):
    venv = Path(sys.prefix)  # the virtualenv running these tests (not resolved: its python links outside it)
    env = {**os.environ, "GREENBATCH_PORT": "0", "GREENBATCH_DATA_DIR": str(tmp_path / "run")}
    log = tmp_path / "make-run.log"
    with open(log, "wb") as out:
        # A session of its own, so the Ctrl-C goes to make and the server together, as a terminal sends it.
        make = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"VENV={venv}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while "greenbatch listening on" not in log.read_text(errors="replace"):
                assert make.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.1)
            os.killpg(make.pid, signal.SIGINT)
            make.wait(30)
        finally:
            if make.poll() is None:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait()
    printed = log.read_text(errors="replace")
    assert "stopped cleanly" in printed
    assert "Interrupt" not in printed and "Error" not in printed, printed


def test_start_up_says_which_addresses_will_be_fetched(make_server, target, tmp_path):
    allowed = make_server()  # the fixtures allow the target's address
    assert f"fetch policy: public addresses only; also allowed: 127.0.0.1:{target.port}" in allowed.log()
    default = make_server(env={"GREENBATCH_ALLOW_TARGETS": ""}, data_dir=tmp_path / "default")
    assert (
        "fetch policy: public addresses only; to fetch a server on this machine, start with "
        "GREENBATCH_ALLOW_TARGETS=127.0.0.1:<its port>" in default.log()
    )


def test_cluster_mode_with_only_one_of_its_two_settings_stops_start_up_naming_both(tmp_path):
    refused = start_fails(tmp_path / "half", {"GREENBATCH_DATABASE_URL": "postgresql:///greenbatch"})
    assert refused.returncode == 2
    line = one_line(refused)
    assert "GREENBATCH_DATABASE_URL" in line and "GREENBATCH_REDIS_URL" in line and "is not" in line
    assert not (tmp_path / "half" / "greenbatch.db").exists()


def test_the_default_mode_runs_a_batch_with_the_cluster_libraries_unimportable(make_server, target):
    server = make_server()
    blocked = subprocess.run(
        [sys.executable, "-c", "import redis"], env=server.env, capture_output=True, text=True, timeout=30
    )
    assert blocked.returncode != 0 and "cluster mode only" in blocked.stderr
    results = server.run_batch([target.url(f"/bytes/64?n={n}") for n in range(20)])
    assert len(results) == 20 and all(result["ok"] for result in results.values())
