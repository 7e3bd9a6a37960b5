"""`make bench-big`: one batch of 100,000 URLs and one of 1,000,000, end to end (issue 15's table).

    .venv/bin/python bench/big.py                          # 100,000 and 1,000,000 URLs (about 10 minutes)
    .venv/bin/python bench/big.py --quick                  # 20,000 and 100,000: a smoke run (about 2 minutes)
    .venv/bin/python bench/big.py --sizes 2000 --runs 1    # any sizes
    .venv/bin/python bench/big.py --build /tmp/old --build .   # before and after, in one invocation

Everything runs on 127.0.0.1: the target (tests/support/target.py) in its own process, and a fresh
greenbatch server (`python wsgi.py` of the build, a temp data dir, GREENBATCH_MAX_URLS and
GREENBATCH_MAX_REQUEST_BYTES raised to fit) per batch, so each peak RSS is its own batch's. Each batch
is N x /bytes/512 (a 0 ms route, 512-byte bodies, every URL distinct) at concurrency 500. Per batch:

  submit    the POST of the JSON body: wall time, server CPU, the server's peak RSS during it.
  run       URLs/s from the batch's started_at/finished_at; server CPU per URL; peak RSS (VmHWM) of the
            whole batch, submit included.
  GET       `GET /api/v1/batches/<id>` every 0.5 s through the run, one at a time (a slow answer delays
            the next rather than piling more onto a stalled server): p50, p99, max.
  frames    one websocket client on /ws/batches (it gets `batch` and `progress` events, not results):
            each progress frame's size, its lag (arrival - the event's `at`) and the time since the
            one before, over the whole run, its first tenth of rows ("early") and its last ("late").
  exports   CSV, NDJSON and JSON of the finished batch, read to the end over HTTP/1.0: rows/s, rows
            per server CPU second, and the server's RSS growth (its peak during the export minus its
            RSS before).
  page      the finished batch's page: GET /batches/<id>, then its first data (the results page the
            page asks for, or, for a page that replays events, the first websocket message and the
            whole replay); results pages at offset 0, N/2 and 9N/10 by index, the failed
            filter and the first page by latency; each the median of 3 requests.

Medians of --runs runs (default 3 below 500,000 URLs, 1 above: a 1,000,000-URL run takes minutes).
The table and a line per target, met or missed, are printed and written with every figure to
bench/out/big-<date>.json and bench/out/big.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.drivers import _HEAD, RawViewer, _percentile, _stamp  # noqa: E402
from bench.procs import cpu_seconds, machine, reset_peak_rss  # noqa: E402
from tests.support.processes import stop_process  # noqa: E402
from tests.support.target import start_target  # noqa: E402

OUT = ROOT / "bench" / "out"
PATH = "/bytes/512"  # the 0 ms target route with 512-byte bodies
CONCURRENCY = 500
POLL_INTERVAL = 0.5  # seconds between GETs of the running batch
PROBES = 3  # requests per page probe; the median is reported
FINAL = ("done", "cancelled", "failed")
EXPORTS = ("csv", "ndjson", "json")
REPLAY_LIMIT = 180.0  # seconds a page's websocket replay of the finished batch may take before we stop waiting
NOT_SUPPORTED = "n/a (not supported by this build)"

# The targets of issue 15, read at the largest size (the throughput ratio: largest over smallest).
MIN_RATIO = 0.9
MAX_PEAK_MIB = 250
MAX_GET_P99_MS = 50
# "The same cost": the last tenth's frames' lag p99, and the time between them, within this of the first tenth's.
MAX_FRAME_GROWTH_MS = 50
MIN_EXPORT_ROWS_PER_S = 150_000
MAX_EXPORT_GROWTH_MIB = 32  # "flat memory": an export's RSS growth, whatever the batch's size
MAX_OPEN_MS = 200
MAX_PAGE_MS = 100

_LISTENING = re.compile(r'greenbatch listening on (http://[^\s"/]+)')
_RESULTS_LINK = re.compile(r'data-[\w-]+="([^"]*/results(?:\?[^"]*)?)"')


# -- the processes ----------------------------------------------------------------------------


class BuildServer:
    """A greenbatch server of one checkout (`python <build>/wsgi.py`) on 127.0.0.1, with its own temp data dir."""

    def __init__(self, build: Path, env: dict[str, str]):
        self.build = build
        self.env = env
        self.data_dir = tempfile.mkdtemp(prefix="gb-big-")
        self.log_path = Path(self.data_dir) / "server.log"
        self.proc: subprocess.Popen | None = None
        self.base_url = ""

    def start(self, timeout: float = 30) -> BuildServer:
        """Start the process and wait for its `listening` line."""
        env = {
            **os.environ,
            "GREENBATCH_HOST": "127.0.0.1",
            "GREENBATCH_PORT": "0",
            "GREENBATCH_DATA_DIR": self.data_dir,
            **self.env,
        }
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(self.build / "wsgi.py")],
            cwd=self.build,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            match = _LISTENING.search(self.log_path.read_text(errors="replace"))
            if match:
                self.base_url = match.group(1)
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"greenbatch ({self.build}) did not start: {self.log_tail()}")

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        """The server's base URL with the ws scheme."""
        return "ws" + self.base_url[len("http") :]

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log, for error reports."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM by pid, SIGKILL if it lingers, and remove its data dir."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, 30)
        if getattr(self, "_log", None):
            self._log.close()
        subprocess.run(["rm", "-rf", self.data_dir], check=False)


def status_mib(pid: int, field: str) -> float:
    """One kB figure of /proc/<pid>/status (VmRSS, VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def machine_busy_s() -> float:
    """CPU seconds every process on this machine has used since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def describe(build: Path) -> str:
    """A build's name for the table: its folder and commit, e.g. "bench@58c734f"."""
    done = subprocess.run(
        ["git", "-C", str(build), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    commit = done.stdout.strip() or "?"
    dirty = subprocess.run(
        ["git", "-C", str(build), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{build.name}@{commit}{'+' if dirty else ''}"


# -- while the batch runs ---------------------------------------------------------------------


class Poller(threading.Thread):
    """GET /api/v1/batches/<id> every POLL_INTERVAL s until the batch is final, one request at a time.

    One at a time: a request that takes longer than the interval delays the next instead of joining it,
    so the poll cannot pile work onto a server that stalls (open loop at 2/s, 16 GETs of a 1,000,000-URL
    batch on today's main queued behind each other for 16 s each, slowing the batch they measured).
    """

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[dict[str, Any]] = []  # {"ms", "done", "status"} per answer
        self.errors = 0
        self.final = threading.Event()
        self._stopping = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        session.trust_env = False
        while not (self.final.is_set() or self._stopping.is_set()):
            started = time.perf_counter()
            self._one(session)
            self._stopping.wait(max(0.0, started + POLL_INTERVAL - time.perf_counter()))
        session.close()

    def _one(self, session: requests.Session) -> None:
        started = time.perf_counter()
        try:
            response = session.get(self.url, timeout=120)
            ms = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                self.errors += 1
                return
            batch = response.json()
            counts = batch["counts"]
            done = counts["ok"] + counts["failed"] + counts["cancelled"]
            self.samples.append({"ms": ms, "done": done, "status": batch["status"]})
            if batch["status"] in FINAL:
                self.final.set()
        except (requests.RequestException, ValueError, KeyError):
            self.errors += 1

    def stop(self) -> None:
        """Stop polling once the request in flight (if any) is answered."""
        self._stopping.set()
        self.join(130)


class ProgressListener(threading.Thread):
    """One websocket client on /ws/batches: every `batch` and `progress` event, with its arrival time and frame size."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.viewer = RawViewer(url)  # connected now, before the batch is posted
        self.frames: list[dict[str, Any]] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            while (message := self.viewer.message()) is not None:
                arrived = time.time()
                if not message.startswith(b'{"type":"events"'):
                    continue
                for event in json.loads(message)["events"]:
                    data = event["data"]
                    counts = data.get("counts") or {}
                    self.frames.append(
                        {
                            "batch_id": event["batch_id"],
                            "type": event["type"],
                            "bytes": len(message),
                            "at": _stamp(event["at"].encode()),
                            "lag_ms": (arrived - _stamp(event["at"].encode())) * 1000,
                            "done": counts.get("ok", 0) + counts.get("failed", 0) + counts.get("cancelled", 0),
                        }
                    )
        except (OSError, ConnectionError, ValueError) as exc:
            self.error = repr(exc)

    def stop(self) -> None:
        """Close the connection; the thread ends on its next read."""
        try:
            self.viewer.sock.shutdown(2)
        except OSError:
            pass
        self.viewer.close()
        self.join(10)


# -- after the batch --------------------------------------------------------------------------


def timed_get(session: requests.Session, url: str, **params: Any) -> tuple[float, requests.Response]:
    """One GET and its wall time in ms (the body read to the end)."""
    started = time.perf_counter()
    response = session.get(url, params=params, timeout=120)
    _ = response.content
    return (time.perf_counter() - started) * 1000, response


def median_get(session: requests.Session, url: str, **params: Any) -> tuple[float, requests.Response]:
    """The median wall time of PROBES GETs, and the last answer."""
    times, response = [], None
    for _ in range(PROBES):
        ms, response = timed_get(session, url, **params)
        times.append(ms)
    assert response is not None
    return statistics.median(times), response


def replay(url: str, limit: float = REPLAY_LIMIT) -> dict[str, Any]:
    """What a page that replays events does: follow /ws/batches/<id>?after=0 to `end`; first message and whole time.

    A viewer that falls behind is closed with 4000 "resync" and comes back with ?after=<last seq>, as the
    page does.
    """
    started = time.perf_counter()
    first_ms = None
    last_seq, results = 0, 0
    while time.perf_counter() - started < limit:
        viewer = RawViewer(f"{url}?after={last_seq}")
        try:
            viewer.sock.settimeout(max(1.0, limit - (time.perf_counter() - started)))
            while (message := viewer.message()) is not None:
                if message.startswith(b'{"type":"events"'):
                    if first_ms is None:
                        first_ms = (time.perf_counter() - started) * 1000
                    heads = _HEAD.findall(message)
                    results += sum(1 for _, kind, _ in heads if kind == b"result")
                    last_seq = int(heads[-1][0]) if heads else last_seq
                elif message.startswith(b'{"type":"end"'):
                    return {"first_ms": first_ms, "seconds": time.perf_counter() - started, "results": results}
        except OSError:
            break
        finally:
            viewer.close()
    return {"first_ms": first_ms, "seconds": None, "results": results}


def page_probes(session: requests.Session, base: str, ws_base: str, batch_id: str, n: int) -> dict[str, Any]:
    """The batch page's open, results pages at three offsets in the page's own order (by index), the failed
    filter, and the first page sorted by latency (reported, no target: that sort reads and sorts the batch)."""
    out: dict[str, Any] = {}
    html_ms, page = timed_get(session, f"{base}/batches/{batch_id}")
    if page.status_code != 200:
        raise RuntimeError(f"GET /batches/{batch_id} answered {page.status_code}")
    out["page_html_ms"] = html_ms
    link = _RESULTS_LINK.search(page.text)
    if link:  # the page asks the results API for its first page
        first_ms, _ = timed_get(session, base + html.unescape(link.group(1)), limit=100)
        out.update(page_source="results API", page_first_ms=first_ms, page_replay_s=None)
    else:  # the page replays the batch's events over its websocket
        seen = replay(f"{ws_base}/ws/batches/{batch_id}")
        out.update(page_source="websocket replay", page_first_ms=seen["first_ms"], page_replay_s=seen["seconds"])
        out["page_replay_results"] = seen["results"]

    results = f"{base}/api/v1/batches/{batch_id}/results"
    pages = {}
    for label, offset in (("0", 0), ("half", n // 2), ("90", n * 9 // 10)):
        ms, response = median_get(session, results, offset=offset, limit=100, sort="index")
        pages[label] = (offset, ms, response)
    out["pages_supported"] = _paged_and_sorted(pages)
    for label, (offset, ms, _) in pages.items():
        out[f"page_at_{label}_offset"] = offset
        out[f"page_at_{label}_ms"] = ms if out["pages_supported"] else None
    ms, response = median_get(session, results, outcome="failed", limit=100)
    out["page_failed_ms"] = ms if response.status_code == 200 else None
    ms, response = median_get(session, results, limit=100, sort="latency", order="desc")
    out["page_latency_sorted_ms"] = ms if response.status_code == 200 and out["pages_supported"] else None
    return out


def _paged_and_sorted(pages: dict[str, tuple[int, float, requests.Response]]) -> bool:
    """Whether the server honoured offset=: a 400 says no, and so does the same page at every offset."""
    for offset, _, response in pages.values():
        if response.status_code != 200:
            return False
        indexes = [r.get("index") for r in response.json().get("results") or []]
        # A finished batch in index order: the page at offset N starts at URL N (today's API ignores offset).
        if not indexes or indexes[0] != offset or indexes != sorted(indexes):
            return False
    return True


def read_raw(url: str, limit: float = 600) -> tuple[int, bytes, int, int]:
    """GET over HTTP/1.0 on a plain socket, read to EOF: status, head, body bytes and newlines in the body.

    HTTP/1.0 so the body comes unchunked and this reader spends next to no CPU (requests decoding one
    chunk per row took about a second per 60,000 rows, on the cores the server uses).
    """
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    with socket.create_connection((parts.hostname, parts.port), timeout=limit) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"{url}: closed before the end of the head")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        size, lines = len(body), body.count(b"\n")
        while chunk := sock.recv(1 << 20):
            size += len(chunk)
            lines += chunk.count(b"\n")
    return int(head.split(None, 2)[1]), head, size, lines


def export(url: str, pid: int, fmt: str, n: int) -> dict[str, Any]:
    """Read one export to its end: rows/s, bytes, and the server's RSS growth during it."""
    before = status_mib(pid, "VmRSS")
    reset_peak_rss(pid)
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    status, head, size, lines = read_raw(f"{url}?format={fmt}")
    seconds = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"{fmt} export answered {status}: {head[:300]!r}")
    rows = {"csv": lines - 1, "ndjson": lines}.get(fmt, n)  # csv: a header line; json: one array
    return {
        f"{fmt}_s": seconds,
        f"{fmt}_rows": rows,
        f"{fmt}_rows_per_s": rows / seconds,
        f"{fmt}_mib": size / 2**20,
        f"{fmt}_cpu_s": cpu_seconds(pid) - cpu,
        f"{fmt}_rss_growth_mib": status_mib(pid, "VmHWM") - before,
    }


# -- one batch --------------------------------------------------------------------------------


def body_of(n: int, target: str) -> bytes:
    """The JSON body of an n-URL batch: distinct URLs (the index rides in the query, which the target ignores)."""
    urls = [f"{target}{PATH}?i={i}" for i in range(n)]
    return json.dumps({"urls": urls, "name": f"bench-big {n}", "options": {"concurrency": CONCURRENCY}}).encode()


def measure(build: Path, n: int, target) -> dict[str, Any]:
    """One batch of n URLs on a fresh server of `build`, then its pages and exports."""
    body = body_of(n, target.base_url)
    env = {
        "GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{target.port}",
        "GREENBATCH_MAX_URLS": str(max(n, 10_000)),
        "GREENBATCH_MAX_REQUEST_BYTES": str(max(len(body) + 2**20, 10 * 2**20)),
    }
    server = BuildServer(build, env).start()
    session = requests.Session()
    session.trust_env = False
    listener = poller = None
    try:
        out: dict[str, Any] = {"urls": n, "load_at_start": os.getloadavg()[0], "body_mib": len(body) / 2**20}
        listener = ProgressListener(f"{server.ws_url}/ws/batches")
        listener.start()
        target_cpu = cpu_seconds(target.pid)

        reset_peak_rss(server.pid)
        cpu = cpu_seconds(server.pid)
        started = time.perf_counter()
        response = session.post(
            server.base_url + "/api/v1/batches", data=body, headers={"Content-Type": "application/json"}, timeout=600
        )
        out["submit_s"] = time.perf_counter() - started
        if response.status_code != 201:
            raise RuntimeError(f"POST answered {response.status_code}: {response.text[:500]}")
        batch_id = response.json()["id"]
        del body
        out["submit_cpu_s"] = cpu_seconds(server.pid) - cpu
        out["submit_peak_rss_mib"] = status_mib(server.pid, "VmHWM")
        reset_peak_rss(server.pid)  # the whole batch's peak is the larger of the two windows'

        cpu = cpu_seconds(server.pid)
        ours, busy, wall = cpu + cpu_seconds(target.pid) + time.process_time(), machine_busy_s(), time.perf_counter()
        poller = Poller(f"{server.base_url}/api/v1/batches/{batch_id}")
        poller.start()
        if not poller.final.wait(n / 200 + 300):  # a bound far above any run's time (200 URLs/s)
            raise RuntimeError(f"batch {batch_id} did not finish; server log:\n{server.log_tail()}")
        out["run_cpu_s"] = cpu_seconds(server.pid) - cpu
        out["peak_rss_mib"] = max(out["submit_peak_rss_mib"], status_mib(server.pid, "VmHWM"))
        out["target_cpu_s"] = cpu_seconds(target.pid) - target_cpu
        # What the rest of the machine used while the batch ran, in cores: the noise beside these figures.
        ours = cpu_seconds(server.pid) + cpu_seconds(target.pid) + time.process_time() - ours
        out["others_cores"] = max(0.0, machine_busy_s() - busy - ours) / (time.perf_counter() - wall)
        poller.stop()
        time.sleep(0.3)  # the final `batch` event's frame
        listener.stop()

        batch = session.get(f"{server.base_url}/api/v1/batches/{batch_id}", timeout=60).json()
        seconds = _seconds_between(batch["started_at"], batch["finished_at"])
        out.update(status=batch["status"], ok=batch["counts"]["ok"], failed=batch["counts"]["failed"])
        out.update(batch_s=seconds, urls_per_s=n / seconds, cpu_ms_per_url=out["run_cpu_s"] / n * 1000)
        out.update(_get_figures(poller))
        out.update(_frame_figures(listener, batch_id, n))

        for fmt in EXPORTS:  # first, while the server holds nothing but the finished batch
            out.update(export(f"{server.base_url}/api/v1/batches/{batch_id}/results", server.pid, fmt, n))
        out.update(page_probes(session, server.base_url, server.ws_url, batch_id, n))
        return out
    finally:
        try:
            if poller is not None:
                poller.stop()
            if listener is not None:
                listener.stop()
            session.close()
        finally:  # whatever failed above, the server goes: nothing else would stop it
            server.stop()


def _seconds_between(start: str, end: str) -> float:
    """Seconds between two of the API's ISO times."""
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def _get_figures(poller: Poller) -> dict[str, Any]:
    """p50, p99 and max of the GETs during the run."""
    ms = [s["ms"] for s in poller.samples]
    return {
        "get_samples": len(ms),
        "get_errors": poller.errors,
        "get_p50_ms": _percentile(ms, 50),
        "get_p99_ms": _percentile(ms, 99),
        "get_max_ms": max(ms) if ms else None,
    }


def _frame_figures(listener: ProgressListener, batch_id: str, n: int) -> dict[str, Any]:
    """Progress frames' size and lag, over the run and in its first and last tenth of rows."""
    frames = [f for f in listener.frames if f["batch_id"] == batch_id and f["type"] == "progress"]
    lags = [f["lag_ms"] for f in frames]
    early = [f["lag_ms"] for f in frames if f["done"] <= n / 10] or lags[:1]
    late = [f["lag_ms"] for f in frames if f["done"] >= n * 9 / 10] or lags[-1:]
    # The engine sleeps PROGRESS_INTERVAL (1 s), computes the summary, then stamps the event: the time
    # between two events' `at` beyond 1 s is what a summary took, plus the hub's delay in waking the reporter.
    gaps = [((b["at"] - a["at"]) * 1000, b["done"]) for a, b in zip(frames, frames[1:])]
    early_gaps = [ms for ms, done in gaps if done <= n / 10] or [ms for ms, _ in gaps[:1]]
    late_gaps = [ms for ms, done in gaps if done >= n * 9 / 10] or [ms for ms, _ in gaps[-1:]]
    return {
        "frames": len(frames),
        "frames_error": listener.error,
        "frame_bytes_first": frames[0]["bytes"] if frames else None,
        "frame_bytes_last": frames[-1]["bytes"] if frames else None,
        "frame_bytes_max": max(f["bytes"] for f in frames) if frames else None,
        "lag_p50_ms": _percentile(lags, 50),
        "lag_p99_ms": _percentile(lags, 99),
        "lag_max_ms": max(lags) if lags else None,
        "lag_early_p99_ms": _percentile(early, 99),
        "lag_late_p99_ms": _percentile(late, 99),
        "frame_gap_p50_ms": _percentile([ms for ms, _ in gaps], 50),
        "frame_gap_max_ms": max(ms for ms, _ in gaps) if gaps else None,
        "frame_gap_early_p50_ms": _percentile(early_gaps, 50),
        "frame_gap_late_p50_ms": _percentile(late_gaps, 50),
    }


# -- reporting --------------------------------------------------------------------------------


def derive(m: dict[str, Any]) -> dict[str, Any]:
    """A run's figures plus those computed from them (here, so a saved report is read again by today's rules).

    page_open_ms: the HTML plus the page's first data; for a page that replays the batch's events, the
    whole replay, since its table, counts by facet and filters are whole only once every result is in.
    """
    m = dict(m)
    if m["page_source"] == "websocket replay":
        replayed = m["page_replay_s"]
        m["page_open_ms"] = None if replayed is None else m["page_html_ms"] + replayed * 1000
    else:
        m["page_open_ms"] = m["page_html_ms"] + m["page_first_ms"]
    return m


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every numeric figure over runs (None where no run had one), the last run's text."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if all(isinstance(v, bool) for v in values):
            out[key] = all(values)
        elif numbers:
            out[key] = statistics.median(numbers)
        else:
            out[key] = values[-1]
    out["runs"] = len(runs)
    out["urls_per_s_all"] = [round(r["urls_per_s"]) for r in runs]
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _export_cell(m: dict[str, Any], fmt: str) -> str:
    cpu = m[fmt + "_cpu_s"]
    per_cpu = f"{m[fmt + '_rows'] / cpu / 1000:,.0f}k" if cpu else "-"
    return (
        f"{m[fmt + '_s']:.1f} s ({m[fmt + '_rows_per_s'] / 1000:,.0f}k rows/s, {per_cpu} rows per server CPU s, "
        f"RSS +{max(0.0, m[fmt + '_rss_growth_mib']):.0f} MiB)"
    )


def _pages_cell(m: dict[str, Any]) -> str:
    if not m["pages_supported"]:
        offsets = "offsets " + NOT_SUPPORTED
    else:
        offsets = ", ".join(f"@{m[f'page_at_{k}_offset']:,} {_ms(m[f'page_at_{k}_ms'])}" for k in ("0", "half", "90"))
    failed = NOT_SUPPORTED if m["page_failed_ms"] is None else _ms(m["page_failed_ms"])
    latency = m.get("page_latency_sorted_ms")
    return f"{offsets}; failed {failed}; by latency {NOT_SUPPORTED if latency is None else _ms(latency)}"


def _page_cell(m: dict[str, Any]) -> str:
    if m["page_source"] != "websocket replay":
        return f"open {_ms(m['page_open_ms'])} (HTML {_ms(m['page_html_ms'])} + the first results page)"
    opened = f"not within {REPLAY_LIMIT:.0f} s" if m["page_open_ms"] is None else _seconds(m["page_open_ms"])
    return (
        f"open {opened} (HTML {_ms(m['page_html_ms'])} + the websocket replay of every event; "
        f"first message after {_ms(m['page_first_ms'])})"
    )


COLUMNS = (
    "batch",
    "URLs/s",
    "peak RSS",
    "`GET /api/v1/batches/<id>` while running",
    "progress frames",
    "CSV export",
    "NDJSON export",
    "JSON export",
    "batch page",
    "results pages (by index, limit=100)",
    "submit",
)


def _label(m: dict[str, Any], builds: int) -> str:
    return f"{m['urls']:,} URLs" + (f" ({m['build']})" if builds > 1 else "")


def table(rows: list[dict[str, Any]], builds: int) -> str:
    """The issue's table, one row per build and batch size."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join("---" for _ in COLUMNS) + " |"]
    for m in rows:
        cells = [
            _label(m, builds),
            f"{m['urls_per_s']:,.0f} ({m['cpu_ms_per_url']:.3f} ms server CPU/URL)",
            f"{m['peak_rss_mib']:.0f} MiB (submit {m['submit_peak_rss_mib']:.0f} MiB)",
            f"p50 {_ms(m['get_p50_ms'])}, p99 {_ms(m['get_p99_ms'])}, max {_ms(m['get_max_ms'])}",
            f"{m['frames']:.0f} of {_bytes(m['frame_bytes_last'])}; lag p99 {_ms(m['lag_p99_ms'])} "
            f"(early {_ms(m['lag_early_p99_ms'])}, late {_ms(m['lag_late_p99_ms'])}); one every "
            f"{_seconds(m['frame_gap_p50_ms'])}, at most {_seconds(m['frame_gap_max_ms'])} apart",
            *(_export_cell(m, fmt) for fmt in EXPORTS),
            _page_cell(m),
            _pages_cell(m),
            f"POST {m['submit_s']:.2f} s, server CPU {m['submit_cpu_s']:.2f} s",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f} s"


def _bytes(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} B"


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Each target of issue 15, met or missed, per build: read at its largest batch (the ratio: largest / smallest)."""
    out = []
    for build in dict.fromkeys(m["build"] for m in rows):
        mine = sorted((m for m in rows if m["build"] == build), key=lambda m: m["urls"])
        small, big = mine[0], mine[-1]
        at = f"{big['urls']:,} URLs"

        def line(met: bool | None, text: str, build: str = build) -> None:
            word = {True: "MET", False: "MISSED", None: "N/A"}[met]
            out.append(f"- {word}: {build}: {text}")

        if big is small:
            line(None, f"URLs/s at the largest batch >= {MIN_RATIO} of the smallest's: one size only")
        else:
            ratio = big["urls_per_s"] / small["urls_per_s"]
            line(
                ratio >= MIN_RATIO,
                f"URLs/s at {at} >= {MIN_RATIO} of {small['urls']:,} URLs': {ratio:.2f} "
                f"({big['urls_per_s']:,.0f} vs {small['urls_per_s']:,.0f}); in server CPU per URL, steadier on a "
                f"shared machine, {small['cpu_ms_per_url'] / big['cpu_ms_per_url']:.2f} ({big['cpu_ms_per_url']:.3f} "
                f"vs {small['cpu_ms_per_url']:.3f} ms)",
            )
        line(
            big["peak_rss_mib"] < MAX_PEAK_MIB, f"peak RSS at {at} < {MAX_PEAK_MIB} MiB: {big['peak_rss_mib']:.0f} MiB"
        )
        p99 = big["get_p99_ms"]
        line(
            None if p99 is None else p99 < MAX_GET_P99_MS,
            f"GET /api/v1/batches/<id> p99 at {at} < {MAX_GET_P99_MS} ms: {_ms(p99)} ({big['get_samples']:.0f} GETs)",
        )
        early, late = big["lag_early_p99_ms"], big["lag_late_p99_ms"]
        gap_early, gap_late = big["frame_gap_early_p50_ms"], big["frame_gap_late_p50_ms"]
        line(
            None
            if None in (early, late, gap_early, gap_late)
            else late <= early + MAX_FRAME_GROWTH_MS and gap_late <= gap_early + MAX_FRAME_GROWTH_MS,
            f"progress frames cost the same in the last tenth of the {at} batch as in its first (each within "
            f"{MAX_FRAME_GROWTH_MS} ms): lag p99 {_ms(late)} vs {_ms(early)}, time between frames (p50) "
            f"{_ms(gap_late)} vs {_ms(gap_early)}; {_bytes(big['frame_bytes_last'])} vs "
            f"{_bytes(big['frame_bytes_first'])} a frame",
        )
        for fmt in EXPORTS:
            speed, growth = big[f"{fmt}_rows_per_s"], big[f"{fmt}_rss_growth_mib"]
            line(
                speed >= MIN_EXPORT_ROWS_PER_S and growth <= MAX_EXPORT_GROWTH_MIB,
                f"{fmt.upper()} export at {at} >= {MIN_EXPORT_ROWS_PER_S:,} rows/s with flat memory (RSS growth "
                f"<= {MAX_EXPORT_GROWTH_MIB} MiB): {speed:,.0f} rows/s, +{max(0.0, growth):.0f} MiB",
            )
        opened = big["page_open_ms"]
        line(
            None if opened is None else opened < MAX_OPEN_MS,
            f"batch page at {at} opens in < {MAX_OPEN_MS} ms: " + _page_cell(big),
        )
        if not big["pages_supported"]:
            line(None, f"results pages at any offset < {MAX_PAGE_MS} ms: offset/sort {NOT_SUPPORTED}")
        else:
            slowest = max(big[f"page_at_{k}_ms"] for k in ("0", "half", "90"))
            line(
                slowest < MAX_PAGE_MS, f"results pages at {at}, any offset, < {MAX_PAGE_MS} ms: slowest {_ms(slowest)}"
            )
        failed = big["page_failed_ms"]
        line(
            None if failed is None else failed < MAX_PAGE_MS,
            f"filtered page (outcome=failed) at {at} < {MAX_PAGE_MS} ms: "
            + (NOT_SUPPORTED if failed is None else _ms(failed)),
        )
    return out


# -- main -------------------------------------------------------------------------------------


def runs_for(n: int, runs: int | None) -> int:
    """--runs, or by default 3 runs of a batch under 500,000 URLs and 1 of a larger one."""
    return runs if runs else (3 if n < 500_000 else 1)


def main(argv: list[str] | None = None) -> int:
    """Run every size on every build (or read a saved run), print the table and the targets, write them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", help="batch sizes, comma-separated (default 100000,1000000)")
    parser.add_argument("--quick", action="store_true", help="sizes 20000,100000 and 1 run each: a smoke run")
    parser.add_argument("--runs", type=int, help="runs per size, the median reported (default 3, 1 from 500,000 up)")
    parser.add_argument(
        "--build",
        action="append",
        type=Path,
        help="a checkout to benchmark (its wsgi.py runs the server); repeat to compare builds (default: this one)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="where big-<date>.json and big.md go")
    parser.add_argument(
        "--report", type=Path, metavar="JSON", help="measure nothing: print a saved big-<date>.json's table again"
    )
    args = parser.parse_args(argv)
    if args.report:
        saved = json.loads(args.report.read_text())
        info, raw = saved["info"], saved["raw"]
    else:
        sizes = sorted(int(s) for s in (args.sizes or ("20000,100000" if args.quick else "100000,1000000")).split(","))
        builds = [b.resolve() for b in (args.build or [ROOT])]
        for build in builds:
            if not (build / "wsgi.py").exists():
                parser.error(f"--build {build}: no wsgi.py there")
        info, raw = run_all(sizes, 1 if args.quick and not args.runs else args.runs, builds)
    rows = [medians([derive(m) for m in runs_]) for runs_ in raw.values()]
    names = list(info["builds"])
    rows.sort(key=lambda m: (m["urls"], names.index(m["build"])))
    counted = ", ".join(f"{m['urls']:,}: {m['runs']}" for m in rows)
    text = "\n".join(
        [
            f"bench-big {info['date']}: nproc {info['nproc']}, {info['cpu']}, Python {info['python']}; "
            f"{info['workload']}; load {info['load_at_start'][0]:.1f} at the start, "
            f"{info['load_at_end'][0]:.1f} at the end; medians of {counted} run(s)",
            "",
            table(rows, len(names)),
            "",
            "Other processes on this machine while the batches ran (of its "
            f"{info['nproc']} cores): " + "; ".join(f"{_label(m, len(names))} {m['others_cores']:.2f}" for m in rows),
            "",
            *verdicts(rows),
        ]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    written = [args.out / "big.md"]
    if not args.report:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        written.insert(0, args.out / f"big-{stamp}.json")
        written[0].write_text(json.dumps({"info": info, "summary": rows, "raw": raw}, indent=1))
    written[-1].write_text(text + "\n")
    print("\n" + text, flush=True)
    print(f"\nwritten: {', '.join(map(str, written))}", flush=True)
    return 0


def run_all(
    sizes: list[int], runs: int | None, builds: list[Path]
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Measure every size on every build, runs_for(size) times: what ran where, and every run's figures."""
    names = {build: describe(build) for build in builds}
    info = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **machine(),
        "sizes": sizes,
        "builds": {names[b]: str(b) for b in builds},
        "workload": f"N x {PATH} (0 ms, 512-byte bodies), concurrency {CONCURRENCY}",
        "load_at_start": os.getloadavg(),
    }
    print(json.dumps(info), flush=True)
    target = start_target(quiet=True, backlog=4096)
    raw: dict[str, list[dict[str, Any]]] = {}
    try:
        for n in sizes:
            for run in range(runs_for(n, runs)):
                for build in builds:  # builds side by side, so they share the machine's state of the moment
                    m = {"build": names[build], **measure(build, n, target)}
                    raw.setdefault(f"{names[build]} {n}", []).append(m)
                    print(
                        f"{names[build]} {n:,} URLs run {run + 1}: {m['urls_per_s']:,.0f} URLs/s, "
                        f"peak {m['peak_rss_mib']:.0f} MiB, GET p99 {_ms(m['get_p99_ms'])}, "
                        f"CSV {m['csv_rows_per_s']:,.0f} rows/s, load {m['load_at_start']:.1f}, "
                        f"other processes {m['others_cores']:.2f} cores",
                        flush=True,
                    )
    finally:
        target.stop()
    info["load_at_end"] = os.getloadavg()
    return info, raw


if __name__ == "__main__":
    sys.exit(main())
