"""What the cluster's ledger costs: create_batch, append in groups, the final append, and a cancel.

    .venv/bin/python bench/ledger.py                     # 200,000 URLs, groups of 500, 1 and 2 writers
    .venv/bin/python bench/ledger.py --urls 1000000      # the issue's million

A throwaway PostgreSQL (tests/support/services.py: unix socket, fsync off as in the tests) in a temp
folder. Results are made before the clock starts (about 330 bytes of JSON each, as a fetch makes them),
so the figures are the ledger's and PostgreSQL's: wall time, rows/s, and CPU per row of the writer
process and of PostgreSQL (every process of the server, from /proc). Each writer appends the results of
every writers-th chunk, in the chunk's order (URLs grouped by host), as workers do; --by-index appends
in index order instead. With 2 writers the batch row's lock makes their transactions take turns.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.cluster.ledger import Ledger, plan_chunks  # noqa: E402
from app.runs.store import pg_schema  # noqa: E402
from tests.support.ledger_appender import fetched  # noqa: E402
from tests.support.services import Postgres  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu(postmaster: int) -> float:
    """CPU seconds used so far by the PostgreSQL server: the postmaster and every process it started."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == postmaster or int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def writer(database_url: str, batch_id: str, indexes: list[int], group: int, seed: int, out) -> None:
    """Append a result for each index, `group` at a time; send back (seconds, CPU seconds, rows committed, and
    the longest append's seconds and events: the one that ends the batch reads every latency)."""
    rng = random.Random(seed)
    results = [fetched(index, rng) for index in indexes]
    ledger = Ledger(database_url, max_connections=1)
    out.send("ready")
    out.recv()  # start together
    cpu, started, committed, longest = time.process_time(), time.perf_counter(), 0, (0.0, "")
    for start in range(0, len(results), group):
        began = time.perf_counter()
        events = ledger.append(batch_id, results[start : start + group])
        took = time.perf_counter() - began
        committed += sum(e.type == "result" for e in events)
        if took > longest[0]:
            longest = (took, events[-1].type + (" " + events[-1].data.get("status", "") if events else ""))
    out.send((time.perf_counter() - started, time.process_time() - cpu, committed, longest))
    out.recv()  # PostgreSQL's CPU is read while this writer's connection (its backend) is still open
    ledger.close()


def run(pg: Postgres, postmaster: int, urls: int, writers: int, group: int, by_index: bool) -> None:
    """One batch of `urls` appended by `writers` processes; print its figures."""
    database_url = pg.new_database()
    with psycopg.connect(database_url, autocommit=True) as conn:
        pg_schema.migrate(conn)
    ledger = Ledger(database_url)
    url_list = [f"http://h{i % 50}.test/{i}" for i in range(urls)]
    started = time.perf_counter()
    chunks = plan_chunks(url_list, 2, 64, 1000)
    ledger.create_batch("b", "bench", {}, url_list, "2026-01-01T00:00:00.000Z", None, chunks)
    print(f"  create_batch of {urls:,} URLs (plan_chunks included): {time.perf_counter() - started:.2f} s")
    ledger.claim("b", 0)
    pipes, procs = [], []
    for k in range(writers):
        ours, theirs = multiprocessing.Pipe()
        # As workers do: each takes every writers-th chunk and appends its results in the chunk's order.
        mine = list(range(k, urls, writers)) if by_index else [i for chunk in chunks[k::writers] for i in chunk]
        proc = multiprocessing.Process(target=writer, args=(database_url, "b", mine, group, k, theirs))
        proc.start()
        pipes.append(ours)
        procs.append(proc)
    for pipe in pipes:
        pipe.recv()  # its results are made
    cpu_before = server_cpu(postmaster)
    wall = time.perf_counter()
    for pipe in pipes:
        pipe.send("go")
    figures = [pipe.recv() for pipe in pipes]
    wall = time.perf_counter() - wall
    pg_cpu = server_cpu(postmaster) - cpu_before
    for pipe in pipes:
        pipe.send("bye")
    for proc in procs:
        proc.join()
    rows = sum(f[2] for f in figures)
    longest = max(f[3] for f in figures)
    client_cpu = sum(f[1] for f in figures)
    print(
        f"  {writers} writer(s), groups of {group}: {rows:,} rows in {wall:.2f} s = {rows / wall:,.0f} rows/s;"
        f" CPU per row: writer {client_cpu / rows * 1e6:.1f} us, PostgreSQL {pg_cpu / rows * 1e6:.1f} us;"
        f" longest append {longest[0] * 1000:.0f} ms (ending with {longest[1]})"
    )
    ledger.close()


def cancel(pg: Postgres, postmaster: int, urls: int) -> None:
    """Cancel a batch whose URLs never ran: every one recorded as cancelled in the one transaction."""
    database_url = pg.new_database()
    with psycopg.connect(database_url, autocommit=True) as conn:
        pg_schema.migrate(conn)
    ledger = Ledger(database_url)
    url_list = [f"http://h{i % 50}.test/{i}" for i in range(urls)]
    ledger.create_batch(
        "c", "bench", {}, url_list, "2026-01-01T00:00:00.000Z", None, plan_chunks(url_list, 2, 64, 1000)
    )
    started, cpu, pg_cpu = time.perf_counter(), time.process_time(), server_cpu(postmaster)
    ledger.cancel("c")
    wall = time.perf_counter() - started
    cpu, pg_cpu = time.process_time() - cpu, server_cpu(postmaster) - pg_cpu
    print(
        f"  cancel of {urls:,} never-run URLs: {wall:.2f} s = {urls / wall:,.0f} rows/s;"
        f" CPU per row: here {cpu / urls * 1e6:.1f} us, PostgreSQL {pg_cpu / urls * 1e6:.1f} us"
    )
    ledger.close()


def main() -> None:
    """Start PostgreSQL, run each case, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=200_000)
    parser.add_argument("--group", type=int, default=500)
    parser.add_argument("--by-index", action="store_true", help="append in index order, not chunk by chunk")
    parser.add_argument(
        "--writers", type=int, nargs="*", default=[1, 2], help="writer counts to run (none: the cancel only)"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gb-bench-pg-"))
    pg = Postgres(folder).start()
    try:
        assert pg.proc is not None
        for writers in args.writers:
            run(pg, pg.proc.pid, args.urls, writers, args.group, args.by_index)
        cancel(pg, pg.proc.pid, args.urls)
    finally:
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
