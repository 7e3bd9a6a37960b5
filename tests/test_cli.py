"""The command line client, run as a subprocess against a real server: `python -m app.cli submit ...`, and the
`greenbatch` console script where this virtualenv has the project installed."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.server import ROOT

TOKEN = "cli-test-token-0123456789"
CLI = [sys.executable, "-m", "app.cli"]


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without the caller's GREENBATCH_* settings, plus `env`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("GREENBATCH_")}, **(env or {})}


def run_cli(
    *args: str, server=None, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run the CLI with `--server` pointing at `server` (unless env says otherwise); stdout and stderr as text."""
    command = [*CLI, *args]
    if server is not None:
        command += ["--server", server.base_url]
    return subprocess.run(
        command, cwd=ROOT, env=cli_env(env), input=stdin, capture_output=True, text=True, timeout=timeout
    )


def url_file(tmp_path, *urls: str, name: str = "urls.txt") -> Path:
    """A URL file with a comment and a blank line, as people write them."""
    path = tmp_path / name
    path.write_text("# checked nightly\n" + "\n".join(urls) + "\n\n")
    return path


def queued_id(stderr: str) -> str:
    """The batch id from the CLI's `batch <id> queued` line."""
    match = re.search(r"batch (\w+) queued", stderr)
    assert match, stderr
    return match.group(1)


@pytest.fixture
def finished(server, target):
    """A finished batch of three URLs: two ok, one failed (500)."""
    batch = server.submit([target.url("/ok"), target.url("/status/500"), target.url("/ok?2")])
    return server.wait(batch["id"])


# -- submit ----------------------------------------------------------------------------------


def test_submit_without_follow_prints_the_batch_id_and_names_the_batch_after_its_file(server, target, tmp_path):
    done = run_cli("submit", str(url_file(tmp_path, target.url("/ok"), target.url("/ok?2"))), server=server)
    assert done.returncode == 0, done.stderr
    batch_id = done.stdout.strip()
    batch = server.batch(batch_id)
    assert batch["name"] == "urls.txt" and batch["counts"]["total"] == 2
    assert f"batch {batch_id} queued: 2 URLs; watch it at {server.base_url}/batches/{batch_id}" in done.stderr
    named = run_cli("submit", str(url_file(tmp_path, target.url("/ok"))), "--name", "nightly", server=server)
    assert server.batch(named.stdout.strip())["name"] == "nightly"


def test_submit_sends_every_batch_option_the_api_takes(server, target, tmp_path):
    done = run_cli(
        "submit",
        str(url_file(tmp_path, target.url("/ok"))),
        *("--method", "head", "--max-redirects", "2", "--retries", "1", "--accept-status", "200-299,404"),
        *("-H", "X-Check: nightly", "--header", "Accept: text/plain", "--per-host", "3", "--concurrency", "4"),
        *("--timeout", "5", "--connect-timeout", "2.5", "--max-bytes", "1000", "--client", "requests"),
        *("--per-host-interval", "0.5", "--retry-statuses", "429", "--ignore-retry-after", "--max-retry-after", "9"),
        *("--head-fallback-statuses", "405"),
        *("--capture-tls", "--capture-header", "X-Robots-Tag", "--no-tls-verify"),
        server=server,
    )
    assert done.returncode == 0, done.stderr
    assert server.batch(done.stdout.strip())["options"] == {
        "per_host_interval": 0.5,
        "retry_statuses": [429],
        "respect_retry_after": False,
        "max_retry_after": 9.0,
        "head_fallback_statuses": [405],
        "method": "HEAD",
        "max_redirects": 2,
        "retries": 1,
        "accept_status": "200-299,404",
        "headers": {"X-Check": "nightly", "Accept": "text/plain"},
        "per_host": 3,
        "concurrency": 4,
        "timeout": 5.0,
        "connect_timeout": 2.5,
        "max_bytes": 1000,
        "client": "requests",
        "capture": {"tls": True, "headers": ["x-robots-tag"]},
        "tls_verify": False,
    }


def test_no_redirects_is_max_redirects_0_and_cannot_be_combined_with_more(server, target, tmp_path):
    urls = str(url_file(tmp_path, target.url("/redirect/1")))
    done = run_cli("submit", urls, "--no-redirects", server=server)
    assert server.batch(done.stdout.strip())["options"]["max_redirects"] == 0
    both = run_cli("submit", urls, "--no-redirects", "--max-redirects", "3", server=server)
    assert both.returncode == 2 and "--no-redirects and --max-redirects contradict each other" in both.stderr


def test_a_dash_reads_the_urls_from_standard_input(server, target):
    done = run_cli("submit", "-", "--follow", server=server, stdin=f"{target.url('/ok')}\n{target.url('/ok?b')}\n")
    assert done.returncode == 0, done.stderr
    assert len(list(csv.DictReader(io.StringIO(done.stdout)))) == 2


def test_refused_urls_are_reported_by_their_line_in_the_file_and_nothing_is_submitted(server, target, tmp_path):
    before = len(server.request("GET", "/api/v1/batches", params={"limit": 200}).json()["batches"])
    path = tmp_path / "urls.txt"
    path.write_text(f"# nightly\n{target.url('/ok')}\n\n# staging\nftp://x/file\n{target.url('/ok?2')}\nnot a url\n")
    done = run_cli("submit", str(path), server=server)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert (
        lines[0].startswith(f"{path} line 5: only http:// and https:// URLs are fetched")
        and "(ftp://x/file)" in lines[0]
    )
    assert lines[1].startswith(f"{path} line 7: ") and "(not a url)" in lines[1]
    assert "nothing was submitted" in lines[-1]
    assert len(server.request("GET", "/api/v1/batches", params={"limit": 200}).json()["batches"]) == before


def test_refused_urls_in_a_csv_file_are_reported_by_line_past_a_header_and_a_cell_of_two_lines(
    server, target, tmp_path
):
    path = tmp_path / "links.csv"
    path.write_text(f'url,note\n{target.url("/ok")},"two\nlines"\nftp://x/file,bad\n')
    done = run_cli("submit", str(path), server=server)
    assert done.returncode == 2
    assert f"{path} line 4: only http:// and https:// URLs are fetched" in done.stderr


def test_binary_and_empty_files_are_refused_before_anything_is_sent(tmp_path):
    binary = tmp_path / "photo.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    done = run_cli("submit", str(binary), "--server", "http://127.0.0.1:9")
    assert done.returncode == 2 and f"{binary} looks like a binary file" in done.stderr
    empty = url_file(tmp_path)
    done = run_cli("submit", str(empty), "--server", "http://127.0.0.1:9")
    assert (
        done.returncode == 2
        and f"{empty} has no URLs (blank lines and lines starting with # are skipped)" in done.stderr
    )


# -- following and results -------------------------------------------------------------------


def test_follow_writes_csv_results_to_stdout_and_exits_0_when_every_url_is_ok(server, target, tmp_path):
    urls = [target.url(f"/ok?n={i}") for i in range(5)]
    done = run_cli("submit", str(url_file(tmp_path, *urls)), "--follow", "--timeout", "5", server=server)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert sorted(row["url"] for row in rows) == sorted(urls)
    assert all(row["status_code"] == "200" for row in rows)
    summary = done.stderr
    assert "(urls.txt) done in " in summary and ": 5 URLs, 5 ok, 0 failed" in summary
    assert "latency p50 " in summary and " p90 " in summary and " p99 " in summary
    assert "statuses: 200 5" in summary
    assert "\r" not in summary, "stderr is not a terminal: plain lines, no redrawing"


def test_follow_exits_1_when_any_url_failed_and_summarizes_errors_by_kind(server, target, tmp_path):
    output = tmp_path / "results.ndjson"
    done = run_cli(
        "submit",
        str(url_file(tmp_path, target.url("/ok"), target.url("/status/500"), target.url("/bytes/5000"))),
        *("--follow", "--max-bytes", "1000", "--format", "ndjson", "--output", str(output)),
        server=server,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["ok"] for r in sorted(results, key=lambda r: r["index"])] == [True, False, False]
    assert "1 ok, 2 failed" in done.stderr
    assert "errors: " in done.stderr and "too_large 1" in done.stderr
    assert f"results written to {output} (ndjson)" in done.stderr
    assert not Path(f"{output}.part").exists()


def test_on_a_terminal_progress_is_one_redrawn_bar_with_ok_and_failed_counts(server, target, tmp_path):
    urls = str(url_file(tmp_path, *[target.url(f"/delay/300?n={i}") for i in range(6)]))
    leader, follower = pty.openpty()
    command = [*CLI, "submit", urls, "--follow", "--concurrency", "2", "--server", server.base_url]
    process = subprocess.Popen(
        [*command, "--output", str(tmp_path / "out.csv")],
        cwd=ROOT,
        env=cli_env(),
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
    assert "\r\x1b[?25l[" in text, "the bar is redrawn in place (click's progress bar)"
    assert "[##############################]  6/6  ok 6  failed 0" in text
    assert "URLs/s" in text
    assert "\x1b[?25h" in text, "the cursor is shown again at the end"


def test_ctrl_c_during_follow_prints_the_command_to_reattach_which_then_follows_to_the_end(server, target, tmp_path):
    urls = str(url_file(tmp_path, *[target.url(f"/delay/700?n={i}") for i in range(5)]))
    output = tmp_path / "out.csv"
    command = [*CLI, "submit", urls, "--follow", "--concurrency", "1", "--server", server.base_url, "-o", str(output)]
    process = subprocess.Popen(
        command, cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([process.stderr], [], [], 30)
        assert ready, "the CLI said nothing within 30 s"
        first = process.stderr.readline()
        batch_id = queued_id(first)
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest
    assert f"stopped following; batch {batch_id} goes on running on the server. Re-attach with:" in rest
    reattach = rest.strip().splitlines()[-1].strip()
    assert reattach == f"python -m app.cli follow {batch_id} --server {server.base_url} --output {output}"
    assert not output.exists()
    assert server.batch(batch_id)["status"] in ("queued", "running")
    again = subprocess.run(
        [sys.executable, *shlex.split(reattach)[1:]],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr
    assert f"batch {batch_id} (urls.txt) done" in again.stderr
    assert len(list(csv.DictReader(io.StringIO(output.read_text())))) == 5


def test_status_prints_the_batch_summary_or_its_json(server, finished):
    done = run_cli("status", finished["id"], server=server)
    assert done.returncode == 0, done.stderr
    assert (
        f"batch {finished['id']} ({finished['name']}) done in " in done.stdout
        and ": 3 URLs, 2 ok, 1 failed" in done.stdout
    )
    assert "statuses: 200 2, 500 1" in done.stdout
    as_json = run_cli("status", finished["id"], "--json", server=server)
    assert json.loads(as_json.stdout)["counts"] == finished["counts"]


def test_results_writes_every_result_or_only_the_failed_ones_to_stdout_or_a_file(server, finished, tmp_path):
    every = run_cli("results", finished["id"], server=server)
    assert every.returncode == 0, every.stderr
    assert len(list(csv.DictReader(io.StringIO(every.stdout)))) == 3
    failed = run_cli("results", finished["id"], "--failed", "--format", "ndjson", server=server)
    assert [json.loads(line)["status_code"] for line in failed.stdout.splitlines()] == [500]
    output = tmp_path / "failed.csv"
    saved = run_cli("results", finished["id"], "--failed", "--output", str(output), server=server)
    assert saved.stdout == "" and f"results written to {output} (csv)" in saved.stderr
    assert [row["status_code"] for row in csv.DictReader(io.StringIO(output.read_text()))] == ["500"]


def test_cancel_stops_a_running_batch_and_a_second_cancel_says_it_is_over(server, target, tmp_path):
    urls = str(url_file(tmp_path, *[target.url(f"/delay/2000?n={i}") for i in range(5)]))
    batch_id = run_cli("submit", urls, "--concurrency", "1", server=server).stdout.strip()
    done = run_cli("cancel", batch_id, server=server)
    assert done.returncode == 0, done.stderr
    assert f"batch {batch_id} (urls.txt) cancelled" in done.stdout and "5 URLs" in done.stdout
    assert server.batch(batch_id)["status"] == "cancelled"
    again = run_cli("cancel", batch_id, server=server)
    assert again.returncode == 2
    assert f"the server answered 409: batch {batch_id} is cancelled" in again.stderr


def test_a_batch_with_cancelled_rows_fails_its_verdict_and_the_cli_exit_reads_that_verdict(server, target):
    batch = server.submit([target.url(f"/delay/2000?cancel={i}") for i in range(3)], concurrency=1)
    assert server.request("POST", f"/api/v1/batches/{batch['id']}/cancel").status_code == 200
    done = server.wait(batch["id"])
    cancelled = done["counts"]["cancelled"]
    assert cancelled >= 2
    assert done["verdict"] == {
        "pass": False,
        "violations": [{"threshold": "cancelled", "limit": 0, "actual": cancelled}],
    }
    followed = run_cli("follow", batch["id"], "--format", "ndjson", server=server)
    assert followed.returncode == 1, followed.stderr
    assert f"verdict: FAIL (cancelled {cancelled} > 0)" in followed.stderr


def test_a_server_from_before_cancelled_rows_failed_the_verdict_still_gets_exit_1_for_them():
    from app.cli import EXIT_FAILED, EXIT_OK, exit_status

    counts = {"total": 3, "ok": 1, "failed": 0, "cancelled": 2, "warn": 0}
    assert exit_status({"counts": counts, "verdict": {"pass": True, "violations": []}}, False) == EXIT_FAILED
    passed = {**counts, "ok": 3, "cancelled": 0}
    assert exit_status({"counts": passed, "verdict": {"pass": True, "violations": []}}, False) == EXIT_OK


def test_list_shows_the_newest_batches_first_in_a_table(server, target, tmp_path):
    first = run_cli(
        "submit", str(url_file(tmp_path, target.url("/ok"), name="first.txt")), server=server
    ).stdout.strip()
    second = run_cli("submit", str(url_file(tmp_path, target.url("/ok"), name="second.txt")), server=server).stdout
    done = run_cli("list", "--limit", "2", server=server)
    assert done.returncode == 0, done.stderr
    header, newest, older = done.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "URLS", "OK", "FAILED", "CREATED", "(UTC)", "NAME"]
    assert newest.startswith(second.strip()) and newest.endswith("second.txt")
    assert older.startswith(first) and older.endswith("first.txt")


def test_an_unknown_batch_id_says_what_the_server_said(server):
    done = run_cli("status", "nosuchbatch", server=server)
    assert done.returncode == 2
    assert "greenbatch: the server answered 404: no batch with id 'nosuchbatch'" in done.stderr


# -- talking to the wrong thing, and plain words -----------------------------------------------


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
    assert run_cli("list", "--server", secured.base_url, "--token", TOKEN).returncode == 0


def test_an_unreachable_server_exits_2_saying_how_to_start_one(tmp_path):
    done = run_cli("submit", str(url_file(tmp_path, "http://example.com/")), "--server", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert "the server is not reachable at http://127.0.0.1:9 (connection refused)" in done.stderr
    assert "make run" in done.stderr and "--server" in done.stderr
    assert "Traceback" not in done.stderr


class Impostor(BaseHTTPRequestHandler):
    """Not greenbatch: /html/ answers a page, /json/ JSON of its own, anything else a 404 page."""

    def do_GET(self):
        self.answer()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.answer()

    def answer(self):
        if self.path.startswith("/json/"):
            status, kind, body = (422 if self.command == "POST" else 200), "application/json", b'{"detail": "no"}'
        elif self.path.startswith("/html/"):
            status, kind, body = 200, "text/html; charset=utf-8", b"<html><body>Welcome to nginx!</body></html>"
        else:
            status, kind, body = 404, "text/html", b"<html><body>Not Found</body></html>"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def impostor():
    """A small HTTP server on 127.0.0.1 that is not greenbatch; its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


def test_a_server_that_is_not_greenbatch_is_named_as_such_without_its_body(impostor, tmp_path):
    answers = {
        ("list", "--server", f"{impostor}/html"): "200 text/html",
        ("status", "abc", "--server", f"{impostor}/json"): "200 application/json",
        (
            "submit",
            str(url_file(tmp_path, "https://example.com/")),
            "--server",
            f"{impostor}/json",
        ): "422 application/json",
        ("results", "abc", "--server", impostor): "404 text/html",
    }
    for args, answered in answers.items():
        done = run_cli(*args)
        server = args[-1]
        assert done.returncode == 2, done.stderr
        assert f"greenbatch: {server} does not look like a greenbatch server (it answered {answered})" in done.stderr
        assert "<html" not in done.stderr and "detail" not in done.stderr and "Traceback" not in done.stderr


def test_a_bad_number_is_refused_in_plain_words_before_anything_is_sent():
    unreachable = ("--server", "http://127.0.0.1:9")
    words = run_cli("submit", "-", "--concurrency", "abc", *unreachable, stdin="")
    assert words.returncode == 2
    assert "greenbatch: --concurrency must be a whole number, not 'abc'" in words.stderr
    assert "not reachable" not in words.stderr and "Traceback" not in words.stderr
    zero = run_cli("submit", "-", "--timeout", "0", *unreachable, stdin="")
    assert "greenbatch: --timeout must be above 0, not '0'" in zero.stderr
    fraction = run_cli("submit", "-", "--retries", "1.5", *unreachable, stdin="")
    assert "greenbatch: --retries must be a whole number, not '1.5'" in fraction.stderr


def test_usage_errors_exit_2(tmp_path, server):
    missing = run_cli("submit", str(tmp_path / "missing.txt"), server=server)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    without_follow = run_cli("submit", "-", "--output", str(tmp_path / "x.csv"), server=server, stdin="")
    assert without_follow.returncode == 2 and "--output and --format need --follow" in without_follow.stderr
    header = run_cli("submit", "-", "-H", "X-A: 1", "-H", "x-a: 2", server=server, stdin="")
    assert header.returncode == 2 and "-H gives the header 'x-a' twice ('X-A' first)" in header.stderr
    assert run_cli("submit", "-", "--concurrency", "0", server=server, stdin="").returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_importing_the_cli_imports_neither_flask_nor_gevent_nor_patches_sockets():
    probe = (
        "import sys, app.cli, socket; print('flask' in sys.modules, 'gevent' in sys.modules, socket.socket.__module__)"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == ["False", "False", "socket"], done.stderr


def test_the_greenbatch_command_runs_the_cli_from_any_directory(server, tmp_path):
    script = Path(sys.prefix) / "bin" / "greenbatch"
    if not script.exists():
        pytest.skip(
            f"{script} is absent: this virtualenv lacks the project (make installs it: pip install --no-deps -e .)"
        )
    done = subprocess.run(
        [str(script), "list", "--server", server.base_url], cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    usage = subprocess.run([str(script), "submit", "--help"], env=cli_env(), capture_output=True, text=True)
    assert "Usage: " in usage.stdout and "--accept-status" in usage.stdout


# -- issue 17: expectations, the verdict and JUnit ----------------------------------------------------


def redirects_csv(tmp_path, target) -> Path:
    """A migration's old,new pairs with a meta column: the first lands where expected, the second does not."""
    path = tmp_path / "redirects.csv"
    path.write_text(
        "old,new,expected_status,owner\n"
        f"{target.url('/redirect/1?status=301')},{target.url('/redirect/0?status=301')},301,web\n"
        f"{target.url('/redirect/1?status=302')},{target.url('/redirect/0?status=302')},301,shop\n"
    )
    return path


def test_a_csv_with_a_header_is_sent_as_csv_and_a_failed_verdict_exits_1_with_failures_by_reason(
    server, target, tmp_path
):
    done = run_cli("submit", str(redirects_csv(tmp_path, target)), "--follow", "--format", "ndjson", server=server)
    assert done.returncode == 1, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["meta"]["owner"] for r in results] == ["web", "shop"], "each row's meta came through: sent as CSV"
    assert [r["outcome"] for r in results] == ["ok", "failed"]
    assert "verdict: FAIL" in done.stderr
    assert "by reason: " in done.stderr and "expect.status 1" in done.stderr


def test_thresholds_decide_the_exit_status_and_warn_passes_unless_fail_on_warn(server, target, tmp_path):
    urls = url_file(tmp_path, target.url("/ok"), target.url("/redirect/1?status=302"))
    warned = run_cli("submit", str(urls), "--follow", "--threshold", "failed_rate=0%", server=server)
    assert warned.returncode == 0, warned.stderr
    assert "2 ok (1 warn), 0 failed" in warned.stderr and "verdict: PASS" in warned.stderr
    strict = run_cli("follow", queued_id(warned.stderr), "--fail-on", "warn", server=server)
    assert strict.returncode == 1, strict.stderr
    slow = url_file(tmp_path, target.url("/delay/300"), name="slow.txt")
    missed = run_cli("submit", str(slow), "--follow", "--threshold", "p50_ms=100", server=server)
    assert missed.returncode == 1, missed.stderr
    assert re.search(r"verdict: FAIL \(p50_ms [0-9.]+ ms > 100 ms\)", missed.stderr), missed.stderr
    refused = run_cli("submit", str(slow), "--threshold", "p42_ms=1", server=server)
    assert refused.returncode == 2 and "--threshold 'p42_ms=1' must be NAME=VALUE" in refused.stderr


def test_junit_output_has_one_test_case_per_url_and_failures_carry_their_reasons(server, target, tmp_path):
    output = tmp_path / "redirects.xml"
    done = run_cli(
        "submit",
        str(redirects_csv(tmp_path, target)),
        *("--follow", "--format", "junit", "--output", str(output)),
        server=server,
    )
    assert done.returncode == 1, done.stderr
    suite = ET.parse(output).getroot().find("testsuite")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("redirects.csv", "2", "1")
    cases = suite.findall("testcase")
    assert [case.get("name") for case in cases] == [
        target.url("/redirect/1?status=301"),
        target.url("/redirect/1?status=302"),
    ]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure.get("type") == "expect.status"
    assert failure.get("message").startswith("302 where 301 was expected")


def test_a_junit_case_writes_a_lone_surrogate_a_result_holds_as_a_replacement_character():
    from app.cli import junit_case  # the CLI is its own program: imported here only for this unit

    result = {
        "index": 0,
        "url": "http://example.com/\ud800",
        "outcome": "failed",
        "reasons": [{"rule": "expect.final_url", "expected": "http://example.com/\udfff", "actual": "x\udc00"}],
        "status_code": 200,
        "final_url": "http://example.com/\ud800",
    }
    written = ET.tostring(junit_case(result, "batch \ud800", False), encoding="unicode").encode("utf-8")
    case = ET.fromstring(written)
    assert case.get("name") == "http://example.com/\ufffd" and case.get("classname") == "batch \ufffd"
    assert case.find("failure").get("message") == "lands on x\ufffd instead of http://example.com/\ufffd"
