"""The command line client, run as a subprocess against a real server: `python -m app.cli submit ...`."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import select
import subprocess
import sys
import time

from tests.support.server import ROOT

TOKEN = "cli-test-token-0123456789"


def run_cli(
    *args: str, server=None, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run the CLI with `--server` pointing at `server` (unless env says otherwise); stdout and stderr as text."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GREENBATCH_")}
    command = [sys.executable, "-m", "app.cli", *args]
    if server is not None:
        command += ["--server", server.base_url]
    return subprocess.run(
        command, cwd=ROOT, env={**base, **(env or {})}, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def url_file(tmp_path, *urls: str, name: str = "urls.txt"):
    """A URL file with a comment and a blank line, as people write them."""
    path = tmp_path / name
    path.write_text("# checked nightly\n" + "\n".join(urls) + "\n\n")
    return path


def test_submit_without_follow_prints_the_batch_id_and_exits_0(server, target, tmp_path):
    done = run_cli(
        "submit",
        str(url_file(tmp_path, target.url("/ok"), target.url("/ok?2"))),
        "--name",
        "nightly",
        "--concurrency",
        "2",
        server=server,
    )
    assert done.returncode == 0, done.stderr
    batch_id = done.stdout.strip()
    batch = server.batch(batch_id)
    assert batch["name"] == "nightly" and batch["counts"]["total"] == 2 and batch["options"]["concurrency"] == 2
    assert f"batch {batch_id} queued: 2 URLs" in done.stderr


def test_follow_writes_csv_results_to_stdout_and_exits_0_when_every_url_is_ok(server, target, tmp_path):
    urls = [target.url(f"/ok?n={i}") for i in range(5)]
    done = run_cli("submit", str(url_file(tmp_path, *urls)), "--follow", "--timeout", "5", server=server)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert sorted(row["url"] for row in rows) == sorted(urls)
    assert all(row["ok"] == "True" for row in rows)
    summary = done.stderr
    assert ": 5 URLs, 5 ok, 0 failed, 0 cancelled" in summary
    assert "latency p50 " in summary and " p90 " in summary and " p99 " in summary
    assert "statuses: 200 5" in summary
    assert "\r" not in summary, "stderr is not a terminal: plain lines, no redrawing"


def test_follow_exits_1_when_any_url_failed_and_summarizes_errors_by_kind(server, target, tmp_path):
    output = tmp_path / "results.ndjson"
    blocked = "http://127.0.0.1:1/"  # a loopback port the guard does not allow
    done = run_cli(
        "submit",
        str(url_file(tmp_path, target.url("/ok"), target.url("/status/500"), blocked)),
        "--follow",
        "--format",
        "ndjson",
        "--output",
        str(output),
        server=server,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["ok"] for r in sorted(results, key=lambda r: r["index"])] == [True, False, False]
    assert "1 ok, 2 failed" in done.stderr
    assert "errors: blocked 1" in done.stderr
    assert f"results written to {output} (ndjson)" in done.stderr


def test_a_dash_reads_the_urls_from_standard_input(server, target):
    done = run_cli("submit", "-", "--follow", server=server, stdin=f"{target.url('/ok')}\n{target.url('/ok?b')}\n")
    assert done.returncode == 0, done.stderr
    assert len(list(csv.DictReader(io.StringIO(done.stdout)))) == 2


def test_the_server_and_token_come_from_the_environment(make_server, target, tmp_path):
    secured = make_server(env={"GREENBATCH_API_TOKENS": TOKEN})
    urls = str(url_file(tmp_path, target.url("/ok")))
    refused = run_cli("submit", urls, env={"GREENBATCH_SERVER": secured.base_url})
    assert refused.returncode == 2
    assert "401" in refused.stderr and "--token" in refused.stderr and "GREENBATCH_TOKEN" in refused.stderr
    accepted = run_cli(
        "submit", urls, "--follow", env={"GREENBATCH_SERVER": secured.base_url, "GREENBATCH_TOKEN": TOKEN}
    )
    assert accepted.returncode == 0, accepted.stderr


def test_a_refused_batch_exits_2_naming_the_bad_url(server, target, tmp_path):
    done = run_cli("submit", str(url_file(tmp_path, target.url("/ok"), "ftp://example.com/file")), server=server)
    assert done.returncode == 2
    assert "the server refused (400)" in done.stderr
    assert "urls[1] 'ftp://example.com/file'" in done.stderr


def test_an_unreachable_server_exits_2_with_a_clear_message(tmp_path):
    done = run_cli("submit", str(url_file(tmp_path, "http://example.com/")), "--server", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert "cannot reach greenbatch at http://127.0.0.1:9/" in done.stderr and "--server" in done.stderr
    assert "Traceback" not in done.stderr


def test_usage_errors_exit_2(tmp_path, server):
    assert run_cli("submit", str(tmp_path / "missing.txt"), server=server).returncode == 2
    assert run_cli("submit", "-", "--output", str(tmp_path / "x.csv"), server=server, stdin="").returncode == 2
    assert run_cli("submit", "-", "--concurrency", "0", server=server, stdin="").returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_importing_the_cli_neither_imports_nor_patches_gevent():
    probe = "import sys, app.cli, socket; print('gevent' in sys.modules, socket.socket.__module__)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == ["False", "socket"], done.stderr


def test_on_a_terminal_progress_is_one_redrawn_bar(server, target, tmp_path):
    urls = str(url_file(tmp_path, *[target.url(f"/delay/300?n={i}") for i in range(6)]))
    leader, follower = pty.openpty()
    base = {k: v for k, v in os.environ.items() if not k.startswith("GREENBATCH_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "submit",
            urls,
            "--follow",
            "--concurrency",
            "2",
            "--server",
            server.base_url,
            "--output",
            str(tmp_path / "out.csv"),
        ],
        cwd=ROOT,
        env=base,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the CLI exited and closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    assert process.wait(10) == 0
    text = seen.decode()
    assert "\r\x1b[K[" in text, "the bar is redrawn in place"
    assert "[##############################] 6/6  ok 6  failed 0" in text
    assert "URLs/s" in text
