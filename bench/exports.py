"""How fast a batch's results download: `python bench/exports.py` (the CSV, NDJSON and JSON exports of issue 15).

Builds a store of one finished batch of --rows results (1,000,000 by default) in a temporary folder,
written through the store's own API (SQLiteStore.create_batch and extend, as the engine writes them),
then starts the real server on it (`python wsgi.py`) and downloads each format once, to nowhere,
reading as fast as it can. For each format it prints rows/s (wall clock), the server's CPU seconds
for the download, and its peak RSS during it (VmHWM, reset before each download).

--db PATH keeps the built database at PATH and reuses it on the next run (building takes a minute);
--plain makes every result ok and plain, as a 0 ms target's (by default a tenth fail, a fiftieth were
redirected, and a few hold quotes, formulas and text beyond ASCII, so the CSV's careful path runs too);
--checkout DIR serves another checkout's build on the same database (before and after a change);
--profile runs each download in this process instead, through the Flask app's test client under
cProfile, and prints where the time goes, then Python's peak allocation (tracemalloc) in a second run.
measure() does what the command does, for other benchmarks to call.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __name__ == "__main__" and "--profile" in sys.argv:
    from gevent import monkey

    monkey.patch_all()  # as wsgi.py does, before anything else is imported: --profile serves in this process

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tests.support.server as support_server  # noqa: E402
from bench.procs import cpu_seconds, machine, peak_rss_mib, reset_peak_rss  # noqa: E402
from tests.support.server import GreenbatchServer  # noqa: E402

BATCH_ID = "b1e55ed00001"
FORMATS = ("csv", "ndjson", "json")
WRITE_GROUP = 5000  # events handed to the store at a time while building


def sample_result(index: int, varied: bool = True) -> dict[str, Any]:
    """A result as the engine makes them (Result.to_dict), varied the way a real batch varies (or every one
    ok, as from the benchmark's 0 ms target)."""
    url = f"http://shop-{index % 97}.example.com/products/item-{index}?ref=sitemap&page={index % 13}"
    second = 1_700_000_000 + index // 5000
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{index % 1000:03d}Z"
    fresh = index % 7 == 0  # a new connection: dns, connect (and tls) measured; null on a reused one
    total = round(3 + (index * 7919 % 100_000) / 997, 3)
    result: dict[str, Any] = {
        "index": index,
        "url": url,
        "final_url": url,
        "status_code": 200,
        "ok": True,
        "error": None,
        "bytes": 512 + index % 4096,
        "content_type": "text/html; charset=utf-8",
        "redirects": [],
        "attempts": 1,
        "started_at": started,
        "finished_at": started,
        "timings": {
            "total": total,
            "ttfb": round(total * 0.8, 3),
            "dns": 0.412 if fresh else None,
            "connect": 0.218 if fresh else None,
            "tls": None,
            "wait": round(total * 0.7, 3),
            "download": round(total * 0.2, 3),
        },
        # What the verdict (app/core/verdict.py) makes of a plain ok answer: a database built before these three
        # keys existed exports by another path, so rebuild one kept with --db from before them.
        "outcome": "ok",
        "reasons": [],
        "warnings": [],
    }
    if not varied:
        return result
    if index % 10 == 3:  # a status the batch does not accept
        result.update(ok=False, status_code=404, error={"kind": "status", "message": "404 Not Found"}, outcome="failed")
        result["reasons"] = [{"rule": "accept_status", "expected": "200-399", "actual": "404", "hop": 0}]
    elif index % 50 == 7:  # followed redirects
        result["final_url"] = url.replace("http://", "https://") + "&landed=1"
        result["redirects"] = [{"url": url, "status": 301}, {"url": url.replace("http:", "https:"), "status": 302}]
        result.update(outcome="warn", warnings=[{"kind": "temporary_redirect", "evidence": "302 at hop 2"}])
    elif index % 97 == 11:  # no response at all
        result.update(
            ok=False,
            final_url=None,
            status_code=None,
            bytes=0,
            content_type=None,
            error={"kind": "connect_timeout", "message": "no connection to shop-11.example.com:80 within 10 s"},
            timings={"total": 10000.412, "ttfb": None},
            outcome="failed",
            reasons=[
                {"rule": "error", "expected": "a response", "actual": "connect_timeout: no connection within 10 s"}
            ],
        )
    elif index % 1009 == 5:  # text a spreadsheet would run, and text beyond ASCII
        result.update(content_type='=HYPERLINK("http://x.test","ok")', url=url + "&q=caf\u00e9-\u2603")
    return result


def build(db_path: Path, rows: int, varied: bool) -> None:
    """Write one finished batch of `rows` results through the store's API, as the engine does."""
    import gevent  # noqa: F401 - the store runs its writer on gevent's hub and thread pool

    from app.core import stats
    from app.core.clock import now_iso
    from app.runs.events import Event
    from app.runs.store import SQLiteStore

    started = time.monotonic()
    store = SQLiteStore(str(db_path), flush_rows=WRITE_GROUP)
    urls = [sample_result(i, varied)["url"] for i in range(rows)]
    store.create_batch(BATCH_ID, "exports benchmark", {"concurrency": 500}, urls, now_iso())
    del urls
    seq = 1
    store.extend([Event(BATCH_ID, seq, "batch", {"status": "running", "started_at": now_iso()})])
    tally = stats.Tally(keep_latencies=True)
    for start in range(0, rows, WRITE_GROUP):
        events = []
        for index in range(start, min(rows, start + WRITE_GROUP)):
            seq += 1
            data = sample_result(index, varied)
            row = stats.row_of(data)
            tally.add(row)
            events.append(Event(BATCH_ID, seq, "result", data, row=row))
        store.extend(events)
        store.flush(60)
    summary = {
        "status": "done",
        "finished_at": now_iso(),
        "counts": tally.counts(rows),
        "stats": tally.summary(exact=True),
    }
    store.extend([Event(BATCH_ID, seq + 1, "batch", summary)])
    store.close()
    print(f"built {rows:,} results in {db_path} in {time.monotonic() - started:.0f} s", flush=True)


def download(server: GreenbatchServer, fmt: str, outcome: str | None) -> dict[str, Any]:
    """One export to nowhere: rows, bytes, wall seconds, the server's CPU seconds and peak RSS meanwhile."""
    assert server.proc is not None
    pid = server.proc.pid
    params = {"format": fmt, **({"outcome": outcome} if outcome else {})}
    before = rss_mib(pid)
    reset_peak_rss(pid)
    cpu, client_cpu = cpu_seconds(pid), time.process_time()
    started = time.perf_counter()
    response = server.request("GET", f"/api/v1/batches/{BATCH_ID}/results", params=params, stream=True, timeout=600)
    response.raise_for_status()
    size = lines = 0
    for chunk in response.iter_content(1 << 16):
        size += len(chunk)
        lines += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    cpu, client_cpu = cpu_seconds(pid) - cpu, time.process_time() - client_cpu
    rows = lines - (1 if fmt in ("csv",) else 2 if fmt == "json" else 0)  # a header line; the brackets' lines
    return {
        "format": fmt,
        "outcome": outcome or "all",
        "rows": rows,
        "mib": round(size / 2**20, 1),
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "server_cpu_s": round(cpu, 2),
        "server_rows_per_cpu_s": round(rows / cpu) if cpu else None,
        "server_peak_rss_mib": round(peak_rss_mib(pid), 1),
        "server_rss_growth_mib": round(peak_rss_mib(pid) - before, 1),  # its peak during the download, less before
        "client_cpu_s": round(client_cpu, 2),  # this process, reading the download with requests
    }


def rss_mib(pid: int) -> float:
    """A process's resident set size now (VmRSS), in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def serve_and_measure(data: Path, formats: list[str], outcome: str | None, checkout: Path) -> list[dict[str, Any]]:
    """Start `python wsgi.py` of `checkout` on the folder holding the database and download each format once."""
    support_server.ROOT = checkout  # where GreenbatchServer finds wsgi.py and runs it from
    server = GreenbatchServer(data, {"GREENBATCH_INTEGRITY_CHECK_INTERVAL": "0"}, log_name="bench-exports.log")
    server.start(timeout=60)
    try:
        idle_rss = peak_rss_mib(server.proc.pid)  # type: ignore[union-attr]
        print(f"server started: RSS {idle_rss:.1f} MiB", flush=True)
        found = []
        for fmt in formats:
            found.append(download(server, fmt, outcome))
            print(json.dumps(found[-1]), flush=True)
        return found
    finally:
        server.stop(60)


def profile(data: Path, formats: list[str], outcome: str | None, top: int) -> None:
    """Each download in this process through the Flask app's test client: once under cProfile, once under
    tracemalloc (Python's peak allocation while it streams), each to nowhere."""
    import tracemalloc

    from app import create_app
    from app.core.config import Config

    os.environ["GREENBATCH_DATA_DIR"] = str(data)
    os.environ["GREENBATCH_INTEGRITY_CHECK_INTERVAL"] = "0"
    client = create_app(Config.from_env()).test_client()

    def stream(fmt: str) -> int:
        params = {"format": fmt, **({"outcome": outcome} if outcome else {})}
        response = client.get(f"/api/v1/batches/{BATCH_ID}/results", query_string=params, buffered=False)
        return sum(len(chunk) for chunk in response.response)

    for fmt in formats:
        profiler = cProfile.Profile(time.process_time)  # CPU time: other processes on the machine do not count
        cpu, started = time.process_time(), time.perf_counter()
        profiler.enable()
        size = stream(fmt)
        profiler.disable()
        cpu, seconds = time.process_time() - cpu, time.perf_counter() - started
        tracemalloc.start()
        stream(fmt)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"\n== {fmt}: {size / 2**20:.1f} MiB in {seconds:.2f} s, {cpu:.2f} s CPU under cProfile; "
            f"Python's peak allocation while streaming (tracemalloc, another run): {peak / 2**20:.1f} MiB"
        )
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
        print(out.getvalue())


def measure(
    rows: int = 1_000_000,
    formats: tuple[str, ...] = FORMATS,
    *,
    db: Path | None = None,
    plain: bool = False,
    outcome: str | None = None,
    checkout: Path = ROOT,
) -> list[dict[str, Any]]:
    """Build a batch of `rows` results (or copy `db`, when it exists; else keep what is built there), serve it
    with `checkout`'s wsgi.py and download each format once: a dict of figures per format."""
    with built(rows, db, plain) as data:
        return serve_and_measure(data, list(formats), outcome, checkout.resolve())


@contextlib.contextmanager
def built(rows: int, db: Path | None, plain: bool) -> Iterator[Path]:
    """A temporary data folder whose greenbatch.db holds the batch: copied from `db`, or built (and kept at `db`)."""
    temp = Path(tempfile.mkdtemp(prefix="gb-exports-"))
    try:
        data = temp / "data"
        data.mkdir()
        if db is not None and db.exists():
            shutil.copyfile(db, data / "greenbatch.db")
        else:
            build(data / "greenbatch.db", rows, not plain)  # closed: SQLite has moved its WAL into the file
            if db is not None:
                shutil.copyfile(data / "greenbatch.db", db)
        yield data
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def main() -> None:
    """Build (or reuse) the database, then measure or profile each format."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="results in the batch (default 1,000,000)")
    parser.add_argument("--db", type=Path, help="keep the database here and reuse it when it exists")
    parser.add_argument(
        "--plain", action="store_true", help="every result ok and plain, as from a 0 ms target (default: varied)"
    )
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated, default csv,ndjson,json")
    parser.add_argument("--outcome", choices=("ok", "failed"), help="export only these results")
    parser.add_argument("--profile", action="store_true", help="cProfile each download in this process")
    parser.add_argument("--top", type=int, default=25, help="functions to list per profile")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument(
        "--checkout", type=Path, default=ROOT, help="serve this checkout's wsgi.py (another build, for a before/after)"
    )
    args = parser.parse_args()
    formats = tuple(f for f in args.formats.split(",") if f)
    if args.profile:
        with built(args.rows, args.db, args.plain) as data:
            profile(data, list(formats), args.outcome, args.top)
        return
    found = measure(args.rows, formats, db=args.db, plain=args.plain, outcome=args.outcome, checkout=args.checkout)
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": machine(), "exports": found}, indent=2) + "\n")


if __name__ == "__main__":
    main()
