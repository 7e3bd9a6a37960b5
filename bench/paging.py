"""The batch page and the results API at a million results: what opening the page and paging through it cost.

Builds a store file of one finished batch of --rows results (1,000,000 by default) with the store's own API
(SQLiteStore.create_batch and extend, as the engine writes them; kept in --data and reused while it holds the
same batch), then measures:

  store   SQLiteStore.result_page in this process: pages at offsets 0, 500,000 and 900,000 in index order (as
          for a finished batch, and as for a running one, which cannot map offsets to indexes), filters and
          sorts; CPU (time.process_time, every thread of this process) and wall time, medians of --runs.
  http    a server (`python wsgi.py`) started on that file: the page's open (GET /batches/<id>, then the first
          results page it asks for) and the same pages through GET /api/v1/batches/<id>/results; wall time
          and the server's CPU per request, medians of --runs.
  writes  the insert CPU per result of --write-rows results (100,000) committed in the store's groups of 500,
          with the result indexes (schema.EVENT_INDEXES) and with the unique index alone, as before them.

    .venv/bin/python bench/paging.py                   # a few minutes the first time (the file is ~700 MB)
    .venv/bin/python bench/paging.py --rows 100000 --runs 3
    .venv/bin/python bench/paging.py --only writes

A Markdown table goes to stdout and everything to bench/out/paging.json; bench/big.py may call measure().
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.core.config import Config  # noqa: E402
from app.core.options import BatchOptions  # noqa: E402
from app.core.stats import HISTOGRAM_BOUNDS_MS, Row, latency_ms, outcome, percentile, row_of  # noqa: E402
from app.runs.events import Event  # noqa: E402
from app.runs.store import SQLiteStore  # noqa: E402
from app.runs.store.base import ResultQuery  # noqa: E402
from app.runs.store.schema import EVENT_INDEXES  # noqa: E402
from bench.procs import cpu_seconds  # noqa: E402
from tests.support.server import GreenbatchServer  # noqa: E402

OUT = ROOT / "bench" / "out"
BATCH = "0123456789ab"  # the batch's id in the built file
STARTED = "2026-12-06T00:00:00.000Z"
GROUP = 500  # results per extend(): the store's flush_rows, so each is one commit
PROGRESS_EVERY = 5_000  # a progress event per this many results, as the engine's one a second would be at 5,000/s


def made_result(index: int, rnd: random.Random) -> dict[str, Any]:
    """One stored result: 85 % ok; 404s, 503s, DNS failures, blocked and cancelled ones for the filters."""
    url = f"https://site{index % 997}.example/path/{index}?q={index * 7 % 1000}"
    draw = rnd.random()
    code, kind = 200, None
    if draw >= 0.85:
        code, kind = (404, "status") if draw < 0.90 else (503, "status") if draw < 0.93 else (None, "dns")
        if 0.96 <= draw < 0.98:
            kind = "blocked"
        elif draw >= 0.98:
            kind = "cancelled"
    total = 0.0 if kind in ("blocked", "cancelled") else round(rnd.expovariate(1 / 80), 2)
    return {
        "index": index,
        "url": url,
        "final_url": url if code else None,
        "status_code": code,
        "ok": kind is None,
        "error": None if kind is None else {"kind": kind, "message": f"{kind} (bench)"},
        "bytes": rnd.randrange(0, 50_000) if code else 0,
        "content_type": "text/html" if code else None,
        "redirects": [],
        "attempts": 1,
        "started_at": STARTED,
        "finished_at": STARTED,
        "timings": {"total": total, "ttfb": total / 2, "dns": 1.0, "connect": 1.0, "tls": None, "wait": 3.0},
    }


class Summary:
    """The finished batch's counts and stats, as the engine stores them with its final `batch` event."""

    def __init__(self, total: int):
        self.total = total
        self.outcomes = {"ok": 0, "failed": 0, "cancelled": 0}
        self.by_status: dict[str, int] = {}
        self.by_error: dict[str, int] = {}
        self.bytes = 0
        self.latencies: list[float] = []

    def add(self, row: Row) -> None:
        """Count one result."""
        self.outcomes[outcome(row)] += 1
        if row.status_code is not None:
            self.by_status[str(row.status_code)] = self.by_status.get(str(row.status_code), 0) + 1
        if row.error_kind:
            self.by_error[row.error_kind] = self.by_error.get(row.error_kind, 0) + 1
        self.bytes += row.bytes
        latency = latency_ms(row)
        if latency is not None:
            self.latencies.append(latency)

    def data(self) -> dict[str, Any]:
        """The final event's counts and stats."""
        lat = sorted(self.latencies)
        buckets = [0] * (len(HISTOGRAM_BOUNDS_MS) + 1)
        for value in lat:
            buckets[next((i for i, b in enumerate(HISTOGRAM_BOUNDS_MS) if value <= b), len(HISTOGRAM_BOUNDS_MS))] += 1
        histogram = [{"le_ms": b, "count": c} for b, c in zip((*HISTOGRAM_BOUNDS_MS, None), buckets)]
        counts = {"total": self.total, "pending": 0, "running": 0, **self.outcomes}
        stats = {
            **{f"p{p}_ms": percentile(lat, p) for p in (50, 90, 99)},
            "min_ms": lat[0] if lat else None,
            "max_ms": lat[-1] if lat else None,
            "mean_ms": round(sum(lat) / len(lat), 2) if lat else None,
            "by_status": dict(sorted(self.by_status.items())),
            "by_error": dict(sorted(self.by_error.items())),
            "bytes": self.bytes,
            "histogram": histogram,
            "urls_per_s": None,
        }
        return {"counts": counts, "stats": stats}


def build(path: Path, rows: int) -> None:
    """A store file holding one finished batch of `rows` results, written through the store's API."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(str(path), flush_rows=GROUP)
    try:
        existing = store.get_batch(BATCH)
        if existing is not None and existing.status == "done" and existing.total == rows:
            return
        if existing is not None:
            store.delete_batch(BATCH)
        started = time.monotonic()
        options = BatchOptions.defaults(Config.from_env({})).to_dict()
        urls = [f"https://site{i % 997}.example/path/{i}?q={i * 7 % 1000}" for i in range(rows)]
        store.create_batch(BATCH, "a million results", options, urls, STARTED)
        del urls
        rnd = random.Random(15)
        summary = Summary(rows)
        seq = 1
        store.extend([Event(BATCH, seq, "batch", {"status": "running", "started_at": STARTED}, at=STARTED)])
        for start in range(0, rows, GROUP):
            events = []
            for index in range(start, min(rows, start + GROUP)):
                seq += 1
                result = made_result(index, rnd)
                row = row_of(result)
                summary.add(row)
                events.append(Event(BATCH, seq, "result", result, at=STARTED, row=row))
            if (start + GROUP) % PROGRESS_EVERY == 0:
                seq += 1
                events.append(Event(BATCH, seq, "progress", summary.data(), at=STARTED))
            store.extend(events)
            store.flush()
        final = {"status": "done", "started_at": STARTED, "finished_at": STARTED, **summary.data()}
        store.extend([Event(BATCH, seq + 1, "batch", final, at=STARTED)])
        store.flush()
        print(f"built {path} with {rows:,} results in {time.monotonic() - started:.0f} s", file=sys.stderr)
    finally:
        store.close()


def timed(fn: Callable[[], Any], runs: int) -> dict[str, float]:
    """Median wall and CPU milliseconds of fn() over `runs` calls (after one call to warm the caches)."""
    fn()
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return {"wall_ms": round(statistics.median(walls) * 1000, 1), "cpu_ms": round(statistics.median(cpus) * 1000, 1)}


def cases(rows: int) -> list[tuple[str, dict[str, Any], bool]]:
    """(label, results query, whether the batch is dense: finished, every index present) for each page measured."""
    half, most = rows // 2, rows * 9 // 10
    return [
        ("index, offset 0", {}, True),
        (f"index, offset {half:,}", {"offset": half}, True),
        (f"index, offset {most:,}", {"offset": most}, True),
        (f"index, offset {half:,} (running)", {"offset": half}, False),
        (f"index, offset {most:,} (running)", {"offset": most}, False),
        (f"index descending, offset {most:,} (running)", {"offset": most, "descending": True}, False),
        ("failed, offset 0", {"outcome": "failed"}, False),
        (f"failed, offset {rows // 10:,}", {"outcome": "failed", "offset": rows // 10}, False),
        ("error dns, offset 0", {"error": "dns"}, False),
        ("status 404, offset 0", {"status": 404}, False),
        (f"ok, offset {rows * 8 // 10:,}", {"outcome": "ok", "offset": rows * 8 // 10}, False),
        (f"status sort, offset {most:,}", {"sort": "status", "offset": most}, False),
        ("latency descending, offset 0", {"sort": "latency", "descending": True}, False),
        (f"latency descending, offset {half:,}", {"sort": "latency", "descending": True, "offset": half}, False),
        ("size descending, offset 0", {"sort": "size", "descending": True}, False),
        ("search q=site5.example/path/9999", {"q": "site5.example/path/9999"}, False),
    ]


def known_total(summary: dict[str, Any], params: dict[str, Any]) -> int | None:
    """The total the API takes from the batch's counts for this query (api._known_total's rule), or None: counted."""
    counts, stats = summary["counts"], summary["stats"]
    if params.get("q") or sum(key in params for key in ("outcome", "status", "error")) > 1:
        return None
    if "outcome" in params:
        return int(counts[params["outcome"]])
    if "status" in params:
        return int(stats["by_status"].get(str(params["status"]), 0))
    if "error" in params:
        return int(stats["by_error"].get(params["error"], 0))
    return int(counts["ok"] + counts["failed"] + counts["cancelled"])


def measure_store(path: Path, rows: int, runs: int) -> dict[str, Any]:
    """result_page in this process for each case, given the total where the API takes it from the counts."""
    store = SQLiteStore(str(path))
    out: dict[str, Any] = {}
    try:
        record = store.get_batch(BATCH)
        assert record is not None and record.summary is not None, f"{path} holds no finished batch {BATCH}"
        for label, params, dense in cases(rows):
            query = ResultQuery(limit=100, **params)
            total = known_total(record.summary, params)
            out[label] = timed(lambda q=query, t=total, d=dense: store.result_page(BATCH, q, total=t, dense=d), runs)
    finally:
        store.close()
    return out


def measure_http(path: Path, rows: int, runs: int) -> dict[str, Any]:
    """The same pages through the API of a server started on the file, and the page's open."""
    server = GreenbatchServer(path.parent, {"GREENBATCH_LOG_LEVEL": "warning"}, log_name="paging-server.log").start(60)
    session = requests.Session()
    session.trust_env = False
    results = server.url(f"/api/v1/batches/{BATCH}/results")
    out: dict[str, Any] = {}

    def get(url: str, **params: Any) -> None:
        response = session.get(url, params=params, timeout=120)
        assert response.status_code == 200, response.text[:300]

    def over_http(fn: Callable[[], Any]) -> dict[str, float]:
        cpu = cpu_seconds(server.proc.pid)
        measured = timed(fn, runs)
        measured["server_cpu_ms"] = round((cpu_seconds(server.proc.pid) - cpu) / (runs + 1) * 1000, 1)
        del measured["cpu_ms"]  # this process's, not the server's
        return measured

    try:
        out["open: page HTML + first results page"] = over_http(
            lambda: (get(server.url(f"/batches/{BATCH}")), get(results, limit=100, sort="index", order="asc", offset=0))
        )
        for label, params, dense in cases(rows):
            if not dense and label.startswith("index, offset"):
                continue  # the server knows the batch is finished: the same as the line above
            api = {k: v for k, v in params.items() if k != "descending"}
            if params.get("descending"):
                api["order"] = "desc"
            out[label] = over_http(lambda a=api: get(results, limit=100, **a))
    finally:
        server.stop()
    return out


def measure_writes(folder: Path, rows: int) -> dict[str, Any]:
    """Insert CPU per result, committed in groups of GROUP through the store, with the result indexes and without."""
    rnd = random.Random(7)
    results = [made_result(i, rnd) for i in range(rows)]
    out: dict[str, Any] = {}
    for label, keep in (("unique index only (before)", {"results_by_index"}), ("result indexes", set(EVENT_INDEXES))):
        best = None
        for attempt in range(2):
            path = folder / f"writes-{attempt}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            store = SQLiteStore(str(path), flush_interval=60, flush_rows=10**9)
            try:
                for name in set(EVENT_INDEXES) - keep:
                    store._writer.execute(f"DROP INDEX {name}")
                store.create_batch(BATCH, "writes", {}, [], STARTED)
                groups = []
                for start in range(0, rows, GROUP):
                    group = [
                        Event(BATCH, i + 1, "result", results[i], at=STARTED, row=row_of(results[i]))
                        for i in range(start, min(rows, start + GROUP))
                    ]
                    for event in group:
                        event.data_json  # noqa: B018 - encoded before timing: the engine's hub does it, not the writer
                    groups.append(group)
                cpu = time.process_time()
                for group in groups:
                    store.extend(group)
                    store.flush()
                used = (time.process_time() - cpu) / rows * 1e6
            finally:
                store.close()
                for suffix in ("", "-wal", "-shm"):
                    Path(str(path) + suffix).unlink(missing_ok=True)
            best = used if best is None else min(best, used)
        out[label] = {"cpu_us_per_result": round(best or 0, 2)}
    return out


def measure(data: Path, rows: int, runs: int, only: tuple[str, ...], write_rows: int) -> dict[str, Any]:
    """Build the file if needed and take the measurements asked for: {"store": ..., "http": ..., "writes": ...}."""
    path = data / "greenbatch.db"
    out: dict[str, Any] = {"rows": rows, "runs": runs}
    if {"store", "http"} & set(only):
        build(path, rows)
    if "store" in only:
        out["store"] = measure_store(path, rows, runs)
    if "http" in only:
        out["http"] = measure_http(path, rows, runs)
    if "writes" in only:
        out["writes"] = measure_writes(data, write_rows)
    return out


def table(measured: dict[str, Any]) -> str:
    """The measurements as Markdown."""
    lines = [f"Results at {measured['rows']:,} (medians of {measured['runs']} runs)", ""]
    if "store" in measured or "http" in measured:
        lines += [
            "| page | store CPU ms | store wall ms | HTTP wall ms | server CPU ms |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        labels = list(measured.get("http", {})) + [
            k for k in measured.get("store", {}) if k not in measured.get("http", {})
        ]
        for label in labels:
            store = measured.get("store", {}).get(label, {})
            http = measured.get("http", {}).get(label, {})
            cells = [store.get("cpu_ms"), store.get("wall_ms"), http.get("wall_ms"), http.get("server_cpu_ms")]
            lines.append(f"| {label} | " + " | ".join("–" if c is None else f"{c:,}" for c in cells) + " |")
    if "writes" in measured:
        lines += ["", "| inserts | CPU µs per result |", "| --- | ---: |"]
        lines += [f"| {label} | {m['cpu_us_per_result']} |" for label, m in measured["writes"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, measure, print the table and write bench/out/paging.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="results in the batch (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=5, help="timed calls per page (default 5)")
    parser.add_argument("--data", type=Path, default=OUT / "paging", help="where the store file is kept")
    parser.add_argument("--only", default="store,http,writes", help="any of store, http, writes (comma-separated)")
    parser.add_argument("--write-rows", type=int, default=100_000, help="results inserted to measure writes")
    args = parser.parse_args(argv)
    only = tuple(part for part in args.only.split(",") if part)
    measured = measure(args.data, args.rows, args.runs, only, args.write_rows)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "paging.json").write_text(json.dumps(measured, indent=2))
    print(table(measured))


if __name__ == "__main__":
    main()
