"""Benchmark drivers, each run by run.py in a fresh process so its CPU and peak RSS are its own.

    python bench/drivers.py engine    --workload W2 --target URL --client fast
    python bench/drivers.py grequests --workload W2 --target URL
    python bench/drivers.py threads   --workload W2 --target URL
    python bench/drivers.py viewers   --workload W1 --target URL --server URL --viewers 200 --client fast
    python bench/drivers.py apiload   --workload W2 --target URL --server URL --rate 20 --client fast

Each prints one JSON object on stdout. `threads` runs unpatched; every other driver is a gevent process.
"""

import sys

GEVENT_MODES = {"engine", "grequests", "viewers", "apiload"}

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] in GEVENT_MODES and sys.argv[1] != "grequests":
    from gevent import monkey

    monkey.patch_all()  # grequests patches on import, with its own choice of modules

import argparse
import base64
import collections
import functools
import json
import os
import re
import resource
import socket
import struct
import tempfile
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import peak_rss_mib
from bench.workloads import WORKLOADS, Workload, every_event_once

FINAL = ("done", "cancelled", "failed")


def _cpu() -> float:
    """This process's user + system CPU seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measured(run) -> dict:
    """Run `run()` (which returns (urls, ok, extra)) and add wall time, CPU and peak RSS."""
    cpu, wall = _cpu(), time.perf_counter()
    n, ok, extra = run()
    seconds = time.perf_counter() - wall
    return {"seconds": seconds, "urls": n, "ok": ok, "cpu_s": _cpu() - cpu, "peak_rss_mib": peak_rss_mib(), **extra}


# -- the engine alone ------------------------------------------------------------------------


class NullStore:
    """A store that keeps nothing: the engine alone, without persistence."""

    def create_batch(self, *args, **kwargs) -> None:
        """Nothing to create."""

    def __init__(self):
        self._observers = []

    def extend(self, events) -> None:
        """Drop the events, as if committed at once."""
        for observer in self._observers:
            observer(events)

    def observe_commits(self, observer) -> None:
        """Viewers of the bus get events when they are 'committed': here, at once."""
        self._observers.append(observer)

    def flush(self, timeout=None) -> bool:
        """Nothing is ever pending."""
        return True


def engine_alone(workload: Workload, target: str, client: str) -> dict:
    """Engine + transport in this process, events to a null sink, no store and no viewers."""
    import gevent.event

    from app.core.config import Config
    from app.core.options import BatchOptions
    from app.fetch import guard
    from app.runs.engine import Engine
    from app.runs.events import EventBus

    port = urlsplit(target).port
    config = Config(data_dir=tempfile.mkdtemp(prefix="gb-engine-"), allow_targets=f"127.0.0.1:{port}")
    policy = guard.Policy.from_settings(config.allow_private, config.allow_targets, config.deny_targets)
    store = NullStore()
    bus = EventBus(store)
    engine = Engine(config, store, bus, policy)
    options = BatchOptions.parse({"concurrency": workload.concurrency, "client": client}, config)
    urls = workload.urls(target)
    finished = gevent.event.Event()
    tally = {"ok": 0, "results": 0}

    def watch(events) -> None:
        for event in events:
            if event.type == "result":
                tally["results"] += 1
                tally["ok"] += bool(event.data["ok"])
            elif event.type == "batch" and event.data["status"] in FINAL:
                finished.set()

    bus.tap(watch)
    from app.runs.collector import tune_gc

    tune_gc()  # the collector settings the server runs with (app/runs/collector.py), so only the dashboard differs

    def run():
        engine.submit(urls, options)
        finished.wait()
        return tally["results"], tally["ok"], {}

    return _measured(run)


# -- the baselines ---------------------------------------------------------------------------


def _session(pool_size: int):
    """A requests Session pooled to the concurrency, proxies from the environment off (as greenbatch does)."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    return session


def with_grequests(workload: Workload, target: str) -> dict:
    """grequests.map over one shared Session whose pool is sized to the concurrency."""
    import grequests  # patches the standard library on import

    session = _session(workload.concurrency)
    urls = workload.urls(target)

    def run():
        responses = grequests.map(
            (grequests.get(u, session=session, timeout=30) for u in urls), size=workload.concurrency
        )
        return len(responses), sum(1 for r in responses if r is not None and r.status_code == 200), {}

    return _measured(run)


def with_threads(workload: Workload, target: str) -> dict:
    """A ThreadPoolExecutor of `concurrency` threads sharing one pooled requests Session."""
    from concurrent.futures import ThreadPoolExecutor

    session = _session(workload.concurrency)
    urls = workload.urls(target)

    def get(url: str) -> bool:
        try:
            return session.get(url, timeout=30).status_code == 200
        except Exception:  # noqa: BLE001 - a failed fetch counts as not ok
            return False

    def run():
        with ThreadPoolExecutor(workload.concurrency) as pool:
            oks = list(pool.map(get, urls))
        return len(oks), sum(oks), {}

    return _measured(run)


# -- websocket viewers -----------------------------------------------------------------------

# The head of every event as the server writes it (app/runs/events.py Event.json): seq, type and time in
# one scan of a message. Parsing the JSON, or three scans, cost the fan-out driver twice the CPU
# (bench/NOTES.md, section 11), on the two cores the server uses.
_HEAD = re.compile(rb'\{"seq":(\d+),"type":"(\w+)","batch_id":"[^"]*","at":"([^"]+)"')


@functools.lru_cache(maxsize=4096)
def _stamp(at: bytes) -> float:
    """An event's `at` as a Unix time. Cached: events of the same millisecond share it, and 200 viewers
    parsing every stamp anew cost ~0.5 s of CPU per fan-out run, on the cores the server uses."""
    return datetime.fromisoformat(at.decode().replace("Z", "+00:00")).timestamp()


class RawViewer:
    """A minimal websocket client (RFC 6455, client side): enough to follow one batch and time every event."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=120)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed during the websocket handshake")
            self.buf += chunk
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"no upgrade: {head[:200]!r}")
        self.buf = bytearray(rest)

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("server closed mid-frame")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def message(self) -> bytes | None:
        """The next text message, or None when the server closes."""
        parts = []
        while True:
            first, second = self._exact(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._exact(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._exact(8))[0]
            payload = self._exact(length)
            opcode = first & 0x0F
            if opcode == 0x9:
                self._send(0xA, payload[:125])
            elif opcode == 0x8:
                self._send(0x8, payload[:2])
                return None
            elif opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if first & 0x80:
                    return b"".join(parts)

    def close(self) -> None:
        self.sock.close()


# A result's fetch end (app/core/results.py Result.to_dict's finished_at), for `follow(fetched=True)`.
_FINISHED = re.compile(rb'"finished_at":"([^"]+)"')


def follow(url: str, timed: bool = True, fetched: bool = False) -> dict:
    """Follow one batch to its `end`: every result seq seen, and (if `timed`) the lag of every live event.

    fetched: also each live result's lag from its fetch's end (its `finished_at`), which in cluster mode
    comes before the event's `at` (stamped when a worker's writer appends it) by the writer's wait.
    """
    viewer = RawViewer(url)
    connected = time.time()
    seqs: list[int] = []
    lags: list[float] = []
    fetch_lags: list[float] = []
    results = 0
    ended = error = None
    try:
        while True:
            message = viewer.message()
            if message is None:
                break
            now = time.time()
            if message.startswith(b'{"type":"events"'):
                heads = _HEAD.findall(message)
                seqs += [int(seq) for seq, _, _ in heads]
                results += sum(1 for _, kind, _ in heads if kind == b"result")
                if timed:  # events of the same millisecond share a lag
                    for at, count in collections.Counter([at for _, _, at in heads]).items():
                        stamp = _stamp(at)
                        if stamp >= connected:  # replayed history is not delivery lag
                            lags += [(now - stamp) * 1000] * count
                if fetched:
                    for at, count in collections.Counter(_FINISHED.findall(message)).items():
                        stamp = _stamp(at)
                        if stamp >= connected:
                            fetch_lags += [(now - stamp) * 1000] * count
            elif message.startswith(b'{"type":"end"'):
                ended = now
                break
            elif message.startswith(b'{"type":"error"'):
                error = message.decode(errors="replace")
                break
    finally:
        viewer.close()
    complete = every_event_once(seqs)
    return {
        "results": results,
        "events": len(seqs),
        "complete": complete,
        "ended": ended,
        "lags": lags,
        "fetch_lags": fetch_lags,
        "error": error,
    }


def _post_batch(server: str, urls: list[str], options: dict) -> str:
    """Submit a batch and return its id."""
    import requests

    response = requests.post(f"{server}/api/v1/batches", json={"urls": urls, "options": options}, timeout=60)
    response.raise_for_status()
    return response.json()["id"]


def _percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))]


def viewers(workload: Workload, target: str, server: str, count: int, client: str, gate_ms: int) -> dict:
    """Submit one batch and follow it with `count` websocket viewers; every viewer must get every event.

    With gate_ms, a one-URL batch of /delay/<gate_ms> runs first (the server runs one batch at a time),
    so the viewers are all connected before the measured batch starts: pure live fan-out, no replay.
    """
    import gevent

    ws_base = "ws" + server[len("http") :]
    if gate_ms:
        _post_batch(server, [f"{target}/delay/{gate_ms}"], {"concurrency": 1})
    started = time.time()
    batch_id = _post_batch(server, workload.urls(target), {"concurrency": workload.concurrency, "client": client})
    jobs = [gevent.spawn(follow, f"{ws_base}/ws/batches/{batch_id}?after=0") for _ in range(count)]
    gevent.joinall(jobs, raise_error=True)
    outcomes = [job.value for job in jobs]
    lags = [lag for outcome in outcomes for lag in outcome["lags"]]
    return {
        "viewers": count,
        "urls": workload.n,
        "batch_id": batch_id,
        "all_complete": all(o["complete"] and o["results"] == workload.n for o in outcomes),
        "incomplete": sum(1 for o in outcomes if not (o["complete"] and o["results"] == workload.n)),
        "live_events_timed": len(lags),
        "lag_p50_ms": _percentile(lags, 50),
        "lag_p99_ms": _percentile(lags, 99),
        "lag_max_ms": max(lags) if lags else None,
        "seconds_to_last_end": max(o["ended"] or 0 for o in outcomes) - started,
        "gate_ms": gate_ms,
    }


def api_load(workload: Workload, target: str, server: str, rate: float, client: str) -> dict:
    """Submit a batch, then GET it at a fixed rate until it ends; latency counts from each scheduled start."""
    import gevent
    import requests

    session = requests.Session()
    session.trust_env = False
    started = time.perf_counter()
    batch_id = _post_batch(server, workload.urls(target), {"concurrency": workload.concurrency, "client": client})
    latencies: list[float] = []
    status = {"final": False, "errors": 0}

    def one(scheduled: float) -> None:
        try:
            response = session.get(f"{server}/api/v1/batches/{batch_id}", timeout=30)
            latencies.append((time.perf_counter() - scheduled) * 1000)
            if response.status_code != 200:
                status["errors"] += 1
            elif response.json()["status"] in FINAL:
                status["final"] = True
        except requests.RequestException:
            status["errors"] += 1

    interval = 1 / rate
    tick = time.perf_counter()
    jobs = []
    # Open loop: a slow answer does not delay the next request (no coordinated omission).
    while not status["final"] and time.perf_counter() - started < 120:
        jobs.append(gevent.spawn(one, tick))
        tick += interval
        gevent.sleep(max(0.0, tick - time.perf_counter()))
    gevent.joinall(jobs)
    return {
        "batch_id": batch_id,
        "batch_seconds": time.perf_counter() - started,
        "rate": rate,
        "requests": len(latencies),
        "errors": status["errors"],
        "p50_ms": _percentile(latencies, 50),
        "p90_ms": _percentile(latencies, 90),
        "p99_ms": _percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Run one driver and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=sorted(GEVENT_MODES | {"threads"}))
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--n", type=int, help="override the workload's URL count")
    parser.add_argument("--target", required=True, help="the target's base URL")
    parser.add_argument("--server", help="greenbatch's base URL (viewers, apiload)")
    parser.add_argument("--client", default="fast")
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument(
        "--gate-ms", type=int, default=0, help="viewers: connect while a batch of this delay runs first"
    )
    args = parser.parse_args(argv)
    workload = WORKLOADS[args.workload]
    if args.n:
        workload = Workload(workload.name, args.n, workload.concurrency, workload.path, workload.delay_ms)
    if args.mode == "engine":
        out = engine_alone(workload, args.target, args.client)
    elif args.mode == "grequests":
        out = with_grequests(workload, args.target)
    elif args.mode == "threads":
        out = with_threads(workload, args.target)
    elif args.mode == "viewers":
        out = viewers(workload, args.target, args.server, args.viewers, args.client, args.gate_ms)
    else:
        out = api_load(workload, args.target, args.server, args.rate, args.client)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
