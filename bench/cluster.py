"""Issue 16's cluster rows: `BENCH_ARGS=--cluster make bench` (bench/run.py hands over), or `python bench/cluster.py`.

Everything on this machine: the target (tests/support/target.py) in its own process, a throwaway PostgreSQL
and redis-server (tests/support/services.py: temp folder, unix sockets, fsync off), and for each run fresh
greenbatch processes on a fresh database (tests/support/cluster.py's Cluster: `python wsgi.py` in cluster
mode, `python -m app.cluster worker --processes 1 --threads T`). Modes, on the CPU-bound workload (W2's
`/bytes/1024` at concurrency 50, 20,000 URLs):

  single     the one-process default (`python wsgi.py`, SQLite), as `make bench`'s e2e:fast
  cluster1   cluster mode: 1 web process, 1 worker
  cluster2   cluster mode: 1 web process, 2 workers

each end to end: POST the batch, one websocket viewer on the web process follows every event (seq 1..last,
none twice), timed from the POST to the viewer's `end`. A run takes every mode once, in an order that turns
each run; the ratios (cluster2/cluster1, cluster2/single) are read per run, then their median (--runs, 3).
Then `big`: one 1,000,000-URL batch on 2 workers, submitted on web A while a viewer on web B times every
event's delivery (arrival - the event's `at`, which the ledger stamps at the append), and every index is
checked in PostgreSQL to be recorded once.

CPU is counted for each kind of process (web, worker, PostgreSQL, Redis, target; user + system, with the
children each has reaped, so PostgreSQL's ended backends count) and for the rest of the machine
(`others`, in cores): the cores are shared, so wall-clock ratios swing while CPU per URL holds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil
import psycopg
import redis
import requests

from bench.big import BuildServer
from bench.drivers import _percentile, follow
from bench.procs import machine
from bench.run import Spy, summarise_profile
from tests.support.services import Postgres, Redis
from tests.support.target import start_target
from tests.support.workers import ClusterWorker, stop_workers

OUT = ROOT / "bench" / "out"
TICKS = os.sysconf("SC_CLK_TCK")
PATH = "/bytes/1024"  # W2's route: CPU-bound, nothing to wait for
CONCURRENCY = 50  # W2's
MODES = ("single", "cluster1", "cluster2")
KINDS = ("web", "worker", "postgres", "redis", "target")


# -- CPU of process trees --------------------------------------------------------------------


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every live descendant, each with the children it has reaped."""
    try:
        pids = [pid] + [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / TICKS  # utime, stime, cutime, cstime
    return total


def machine_busy_s() -> float:
    """CPU seconds every process on this machine has used since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / TICKS


class Meter:
    """CPU of each kind of process between start() and stop(), plus this process's and the rest of the machine's."""

    def __init__(self, pids: dict[str, list[int]]):
        self.pids = pids

    def _read(self) -> dict[str, float]:
        out = {kind: sum(tree_cpu(pid) for pid in pids) for kind, pids in self.pids.items()}
        out["bench"] = time.process_time()  # the orchestrator and its viewer thread
        out["machine"] = machine_busy_s()
        return out

    def start(self) -> Meter:
        """Take the first reading."""
        self.before, self.wall = self._read(), time.perf_counter()
        return self

    def stop(self) -> dict[str, float]:
        """CPU seconds of each kind since start; `others_cores`: what the rest of the machine used, in cores."""
        after, wall = self._read(), time.perf_counter() - self.wall
        used = {kind: after[kind] - self.before[kind] for kind in after}
        ours = sum(v for k, v in used.items() if k != "machine")
        return {
            **{k: v for k, v in used.items() if k != "machine"},
            "others_cores": max(0.0, used["machine"] - ours) / wall,
        }


# -- one run ---------------------------------------------------------------------------------


class Watcher(threading.Thread):
    """One websocket viewer following a batch to its `end` (bench/drivers.py's raw client), in a thread."""

    def __init__(self, url: str, timed: bool = False):
        super().__init__(daemon=True)
        self.url = url
        self.timed = timed
        self.seen: dict[str, Any] = {}
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.seen = follow(self.url, timed=self.timed, fetched=self.timed)
        except Exception as exc:  # noqa: BLE001 - reported with the measurement
            self.error = repr(exc)


def _post(base_url: str, body: bytes) -> str:
    """Submit a batch; its id."""
    response = requests.post(
        base_url + "/api/v1/batches", data=body, headers={"Content-Type": "application/json"}, timeout=600
    )
    if response.status_code != 201:
        raise RuntimeError(f"POST answered {response.status_code}: {response.text[:500]}")
    return response.json()["id"]


def body_of(n: int, target) -> bytes:
    """The JSON body of an n-URL batch of distinct URLs (the index rides in the query, which the target ignores)."""
    urls = [f"{target.base_url}{PATH}?i={i}" for i in range(n)]
    return json.dumps({"urls": urls, "options": {"concurrency": CONCURRENCY}}).encode()


def recorded_once(database_url: str, batch_id: str, n: int) -> dict[str, Any]:
    """What PostgreSQL holds of a batch: every index 0..n-1 recorded once, seqs 1..last without a gap."""
    with psycopg.connect(database_url) as conn:
        rows, distinct, low, high = conn.execute(
            "SELECT count(*), count(DISTINCT idx), min(idx), max(idx) FROM events WHERE batch_id = %s"
            " AND idx IS NOT NULL",
            (batch_id,),
        ).fetchone()
        events, last = conn.execute("SELECT count(*), max(seq) FROM events WHERE batch_id = %s", (batch_id,)).fetchone()
    return {
        "every_index_once": rows == distinct == n and low == 0 and high == n - 1,
        "result_rows": rows,
        "seqs_gap_free": events == last,
    }


def run_single(build: Path, n: int, target, profile: Path | None = None) -> dict[str, Any]:
    """The one-process default end to end: a fresh `python wsgi.py` on SQLite, the batch POSTed, one viewer."""
    server = BuildServer(
        build, {"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{target.port}", "GREENBATCH_MAX_URLS": str(max(n, 10_000))}
    ).start()
    spy = None
    try:
        body = body_of(n, target)
        spy = Spy(server.pid, profile)
        meter = Meter({"web": [server.pid], "target": [target.pid]}).start()
        started = time.time()
        batch_id = _post(server.base_url, body)
        answered = time.time()
        viewer = Watcher(f"{server.ws_url}/ws/batches/{batch_id}?after=0")
        viewer.start()
        viewer.join(600)
        cpu = meter.stop()
        spy.stop()
        if not viewer.seen.get("ended"):
            raise RuntimeError(f"viewer did not see the end of {batch_id}: {viewer.error}\n{server.log_tail()}")
        stored = requests.get(f"{server.base_url}/api/v1/batches/{batch_id}", timeout=60).json()
        return _figures("single", n, started, cpu, viewer.seen, stored, answered)
    finally:
        if spy is not None:
            spy.stop()
        server.stop()


class BuildWorker(ClusterWorker):
    """`python -m app.cluster worker --processes 1` of one checkout (tests/support/workers.py runs this one's)."""

    def __init__(self, build: Path, env: dict[str, str], log: Path, threads: int):
        super().__init__(env, log, threads)
        self.build = build

    def start(self) -> BuildWorker:
        """Start the worker in the build's folder (`-m app.cluster` imports the build's app); return at once."""
        args = [sys.executable, "-m", "app.cluster", "worker", "--processes", "1", "--threads", str(self.threads)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(args, cwd=self.build, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self


class Cluster:
    """Web processes and workers of one build on one database: what a cluster run starts and stops."""

    def __init__(self, build: Path, folder: Path, env: dict[str, str]):
        self.build = build
        self.folder = folder
        self.env = env
        self.webs: list[BuildServer] = []
        self.workers: list[BuildWorker] = []

    def start(self, webs: int, workers: int, threads: int) -> Cluster:
        """Start the web processes, then the workers, each once it serves or consumes."""
        for _ in range(webs):
            self.webs.append(BuildServer(self.build, self.env).start())
        for k in range(workers):
            worker = BuildWorker(self.build, self.env, self.folder / f"worker{k + 1}.log", threads)
            self.workers.append(worker)
            worker.start().wait_ready()
        return self

    def logs(self) -> str:
        """The tail of every process's log, for an error report."""
        parts = [f"--- web {web.base_url}\n{web.log_tail(2000)}" for web in self.webs]
        parts += [f"--- {worker.log.name}\n{worker.text()[-2000:]}" for worker in self.workers]
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop the web processes, then the workers, by pid."""
        for web in self.webs:
            web.stop()
        stop_workers(self.workers)


class Rig:
    """The services every cluster run shares: one PostgreSQL and one redis-server, in a temp folder."""

    def __init__(self, target):
        self.target = target
        self.folder = Path(tempfile.mkdtemp(prefix="gb-bench-cluster-"))
        os.chmod(self.folder, 0o755)  # PostgreSQL runs as the postgres user when we are root
        (self.folder / "pg").mkdir()
        (self.folder / "redis").mkdir()
        self.pg = Postgres(self.folder / "pg").start()
        self.redis = Redis(self.folder / "redis").start()
        self.runs = 0

    def cluster(self, build: Path, n: int, threads: int, workers: int, webs: int = 1) -> tuple[Cluster, str]:
        """Fresh web processes and workers on a fresh database and an empty Redis; the cluster and its database URL."""
        database_url = self.pg.new_database()
        client = redis.Redis.from_url(self.redis.url)
        client.flushall()
        client.close()
        self.runs += 1
        env = {
            "GREENBATCH_DATABASE_URL": database_url,
            "GREENBATCH_REDIS_URL": self.redis.url,
            "GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{self.target.port}",
            "GREENBATCH_MAX_URLS": str(max(n, 10_000)),
            "GREENBATCH_CLUSTER_SLOTS": str(max(1, workers * threads)),
        }
        folder = self.folder / f"run{self.runs}"
        folder.mkdir()
        cluster = Cluster(build, folder, env)
        try:
            cluster.start(webs, workers, threads)
        except BaseException:
            cluster.stop()
            raise
        return cluster, database_url

    def pids(self, cluster: Cluster) -> dict[str, list[int]]:
        """Each kind's processes."""
        assert self.pg.proc is not None and self.redis.proc is not None
        return {
            "web": [web.pid for web in cluster.webs],
            "worker": [worker.pid for worker in cluster.workers],
            "postgres": [self.pg.proc.pid],
            "redis": [self.redis.proc.pid],
            "target": [self.target.pid],
        }

    def stop(self) -> None:
        """Stop both servers and remove the folder."""
        self.redis.stop()
        self.pg.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def run_cluster(
    rig: Rig, build: Path, n: int, workers: int, threads: int, profile: Path | None = None
) -> dict[str, Any]:
    """Cluster mode end to end: 1 web process, `workers` workers, the batch POSTed and followed on the web."""
    cluster, database_url = rig.cluster(build, n, threads, workers)
    spies: list[Spy] = []
    try:
        body = body_of(n, rig.target)
        web = cluster.webs[0]
        time.sleep(1.0)  # the workers' first polls and the web's first janitor pass are not the batch's
        if profile is not None:
            spies = [
                Spy(w.child_pid(), profile.with_name(f"{profile.stem}-worker{k + 1}.txt"))
                for k, w in enumerate(cluster.workers)
            ]
            spies.append(Spy(web.pid, profile.with_name(f"{profile.stem}-web.txt")))
        meter = Meter(rig.pids(cluster)).start()
        started = time.time()
        batch_id = _post(web.base_url, body)
        answered = time.time()
        viewer = Watcher(f"{web.ws_url}/ws/batches/{batch_id}?after=0")
        viewer.start()
        viewer.join(600)
        cpu = meter.stop()
        for spy in spies:
            spy.stop()
        if not viewer.seen.get("ended"):
            raise RuntimeError(f"viewer did not see the end of {batch_id}: {viewer.error}\n{cluster.logs()}")
        stored = requests.get(f"{web.base_url}/api/v1/batches/{batch_id}", timeout=60).json()
        out = _figures(f"cluster{workers}", n, started, cpu, viewer.seen, stored, answered)
        out.update(recorded_once(database_url, batch_id, n))
        return out
    finally:
        for spy in spies:
            spy.stop()
        cluster.stop()


def run_big(rig: Rig, build: Path, n: int, threads: int) -> dict[str, Any]:
    """A batch of n URLs on 2 workers, POSTed on web A, timed by a viewer on web B; every index once in PostgreSQL."""
    cluster, database_url = rig.cluster(build, n, threads, workers=2, webs=2)
    try:
        body = body_of(n, rig.target)
        web_a, web_b = cluster.webs
        time.sleep(1.0)
        meter = Meter(rig.pids(cluster)).start()
        started = time.time()
        batch_id = _post(web_a.base_url, body)
        answered = time.time()
        del body
        viewer = Watcher(f"{web_b.ws_url}/ws/batches/{batch_id}?after=0", timed=True)
        viewer.start()
        viewer.join(n / 100 + 600)  # a bound far above any run's time (100 URLs/s)
        cpu = meter.stop()
        if not viewer.seen.get("ended"):
            raise RuntimeError(f"viewer did not see the end of {batch_id}: {viewer.error}\n{cluster.logs()}")
        stored = requests.get(f"{web_a.base_url}/api/v1/batches/{batch_id}", timeout=60).json()
        out = _figures("big", n, started, cpu, viewer.seen, stored, answered)
        out.update(recorded_once(database_url, batch_id, n))
        lags, fetch_lags = viewer.seen["lags"], viewer.seen["fetch_lags"]
        out.update(
            batch_s=_seconds_between(stored["started_at"], stored["finished_at"]),
            lag_timed=len(lags),
            lag_p50_ms=_percentile(lags, 50),
            lag_p99_ms=_percentile(lags, 99),
            lag_max_ms=max(lags) if lags else None,
            fetch_lag_p50_ms=_percentile(fetch_lags, 50),
            fetch_lag_p99_ms=_percentile(fetch_lags, 99),
        )
        return out
    finally:
        cluster.stop()


def _epoch(stamp: str) -> float:
    """One of the API's ISO times as a Unix time."""
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _seconds_between(start: str, end: str) -> float:
    """Seconds between two of the API's ISO times."""
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def _figures(
    mode: str, n: int, posted: float, cpu: dict[str, float], seen: dict, stored: dict, answered: float
) -> dict[str, Any]:
    """One run's figures: URLs/s, CPU ms per URL of each kind, what the viewer saw and the stored batch.

    The time from the POST (`posted`, a time.time()) to the viewer's `end` is split at the batch's
    started_at and finished_at: waiting to start, running, and the end's delivery; `answered` is when
    the POST was answered.
    """
    seconds = seen["ended"] - posted
    started, finished = _epoch(stored["started_at"]), _epoch(stored["finished_at"])
    out: dict[str, Any] = {
        "mode": mode,
        "urls": n,
        "seconds": seconds,
        "urls_per_s": n / seconds,
        "submit_s": answered - posted,
        "start_s": started - posted,
        "run_s": finished - started,
        "end_s": seen["ended"] - finished,
        "status": stored["status"],
        "ok": stored["counts"]["ok"],
        "viewer_complete": bool(seen["complete"]) and seen["results"] == n,
        "others_cores": cpu["others_cores"],
    }
    for kind in (*KINDS, "bench"):
        if kind in cpu:
            out[f"{kind}_ms_per_url"] = cpu[kind] / n * 1000
    out["ours_ms_per_url"] = sum(cpu.get(kind, 0.0) for kind in KINDS) / n * 1000
    return out


# -- reporting -------------------------------------------------------------------------------


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every numeric figure over runs (booleans: all true), with each run's URLs/s."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r.get(key) is not None]
        if values and all(isinstance(v, bool) for v in values):
            out[key] = all(values)
        elif values and all(isinstance(v, (int, float)) for v in values):
            out[key] = statistics.median(values)
        else:
            out[key] = values[-1] if values else None
    out["runs"] = len(runs)
    out["urls_per_s_all"] = [round(r["urls_per_s"]) for r in runs]
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One row per build and mode: URLs/s, CPU ms per URL of each kind, the other processes' load."""
    lines = [
        "| build | mode | URLs/s (median) | runs (URLs/s) | CPU ms/URL: web | worker | PostgreSQL | Redis | target |"
        " all ours | others (cores) | ok |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for build, modes in summary.items():
        for mode, m in modes.items():
            lines.append(
                f"| {build} | {mode} | {m['urls_per_s']:,.0f} | {', '.join(map(str, m['urls_per_s_all']))} | "
                + " | ".join(_ms(m.get(f"{kind}_ms_per_url")) for kind in KINDS)
                + f" | {m['ours_ms_per_url']:.3f} | {m['others_cores']:.2f} | {m['ok']:.0f}/{m['urls']:.0f} |"
            )
    return "\n".join(lines)


def paired(raw: dict[str, list[dict[str, Any]]], over: str, under: str) -> list[float]:
    """Each run's URLs/s ratio of two modes measured in that run."""
    return [a["urls_per_s"] / b["urls_per_s"] for a, b in zip(raw[over], raw[under], strict=False)]


def capacity(mode: str, m: dict[str, Any]) -> float:
    """URLs/s these 2 cores would give the mode if nothing else ran, from its CPU per URL: all of its processes'
    CPU over 2 cores, and no single-threaded process past its one core (the one-process server, each worker)."""
    machine = 2000 / m["ours_ms_per_url"]
    if mode == "single":
        return min(machine, 1000 / m["web_ms_per_url"])
    return min(machine, int(mode[-1]) * 1000 / m["worker_ms_per_url"])


def verdicts(
    build: str, raw: dict[str, list[dict[str, Any]]], summary: dict[str, dict[str, Any]], big: dict | None
) -> list[str]:
    """Each target, met or missed, with what the CPU figures say the modes would reach with the cores their own."""
    out = []

    def line(met: bool, text: str) -> None:
        out.append(f"- {'MET' if met else 'MISSED'} ({build}): {text}")

    def ratio_line(over: str, under: str, goal: float, name: str) -> None:
        if not (raw.get(over) and raw.get(under)):
            return
        ratios = paired(raw, over, under)
        ratio = statistics.median(ratios)
        alone = capacity(over, summary[over]) / capacity(under, summary[under])
        line(
            ratio >= goal,
            f"{name} >= {goal}x: {ratio:.2f}x (per run {', '.join(f'{r:.2f}' for r in ratios)}); from the CPU per"
            f" URL, {alone:.2f}x on these 2 cores with nothing else running",
        )

    ratio_line("cluster2", "cluster1", 1.6, "2 workers vs 1 worker")
    if "cluster1" in summary and "cluster2" in summary:
        # Each URL is fetched by one worker: worker ms/URL is what a worker spends per URL it fetches.
        one, two = summary["cluster1"]["worker_ms_per_url"], summary["cluster2"]["worker_ms_per_url"]
        out.append(
            f"- {build}: 2 workers with a core each (and the rest elsewhere) would give {2 * one / two:.2f}x one worker"
            f" with its core: a worker spends {one:.3f} ms CPU per URL alone, {two:.3f} beside another"
        )
    ratio_line("cluster2", "single", 1.0, "cluster mode, 2 workers, vs the one-process default")
    for mode, m in summary.items():
        ours = m["ours_ms_per_url"]
        if mode == "single":
            out.append(
                f"- {build} single: the server {m['web_ms_per_url']:.3f} ms CPU per URL (at most"
                f" {1000 / m['web_ms_per_url']:,.0f} URLs/s on its one core), with the target {ours:.3f} ms/URL in"
                f" all: at most {capacity(mode, m):,.0f} URLs/s with nothing else running"
            )
            continue
        worker = m["worker_ms_per_url"]
        workers = int(mode[-1])
        out.append(
            f"- {build} {mode}: a worker {worker:.3f} ms CPU per URL it fetches ({workers * 1000 / worker:,.0f} URLs/s"
            f" with a core for each of the {workers}); web, PostgreSQL, Redis and the target {ours - worker:.3f} ms/URL"
            f" beside them; all {ours:.3f} ms/URL: at most {capacity(mode, m):,.0f} URLs/s on these 2 cores with"
            f" nothing else running"
        )
    if big:
        line(
            big["every_index_once"] and big["viewer_complete"] and big["status"] == "done",
            f"{big['urls']:,} URLs across 2 workers: every index once {big['every_index_once']},"
            f" viewer on web B got seq 1..last {big['viewer_complete']}, status {big['status']}"
            f" ({big['urls_per_s']:,.0f} URLs/s, {big['ours_ms_per_url']:.3f} ms CPU/URL in all, other processes"
            f" {big['others_cores']:.2f} cores)",
        )
        line(
            big["lag_p99_ms"] is not None and big["lag_p99_ms"] < 500,
            f"viewer on the other web process: delivery lag p99 {big['lag_p99_ms']:.0f} ms"
            f" (p50 {big['lag_p50_ms']:.0f}, max {big['lag_max_ms']:.0f}; from the fetch's end: p50"
            f" {big['fetch_lag_p50_ms']:.0f}, p99 {big['fetch_lag_p99_ms']:.0f})",
        )
    return out


def _label(build: Path, builds: list[Path]) -> str:
    """A build's name in the table: its folder's, or `this` for the checkout this file is in."""
    if len(builds) == 1:
        return "this"
    return "this" if build.resolve() == ROOT else build.name


def main(argv: list[str] | None = None) -> int:
    """Run the cluster rows and write bench/out/cluster-<date>.json and bench/out/cluster.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4,000 URLs, 1 run, a 100,000-URL big batch")
    parser.add_argument("--runs", type=int, help="runs of every mode (default 3; 1 with --quick)")
    parser.add_argument("--urls", type=int, help="URLs of the W2-like batch (default 20,000)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--threads", type=int, default=2, help="chunks each worker runs at once (default 2)")
    parser.add_argument("--big", type=int, help="URLs of the big batch (default 1,000,000; 0: skip it)")
    parser.add_argument(
        "--build",
        action="append",
        type=Path,
        help="a checkout to run (repeatable; default this one): builds take turns within each run",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only profile: py-spy on each worker and the web during one run of the last cluster mode of --modes",
    )
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    n = args.urls or (4_000 if args.quick else 20_000)
    big_n = args.big if args.big is not None else (100_000 if args.quick else 1_000_000)
    modes = args.modes.split(",")
    builds = [b.resolve() for b in (args.build or [ROOT])]
    OUT.mkdir(parents=True, exist_ok=True)
    info = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        **machine(),
        "urls": n,
        "runs": runs,
        "threads": args.threads,
        "builds": [str(b) for b in builds],
        "load_at_start": os.getloadavg(),
    }
    print(json.dumps(info), flush=True)
    target = start_target(quiet=True, backlog=4096)
    rig = None
    try:
        rig = Rig(target)
        if args.profile:
            mode = [mode for mode in modes if mode.startswith("cluster")][-1]
            raw_path = OUT / f"profile-{mode}.txt"
            m = run_cluster(rig, builds[-1], n, int(mode[-1]), args.threads, profile=raw_path)
            print(json.dumps(m), flush=True)
            for path in sorted(OUT.glob(f"profile-{mode}-*.txt")):
                if path.name.endswith(".summary.txt"):
                    continue
                summary = summarise_profile(path)
                path.with_suffix(".summary.txt").write_text(f"{path.stem}\n\n{summary}\n")
                print(f"\n== {path.stem}\n{summary}", flush=True)
            return 0
        labels = {build: _label(build, builds) for build in builds}
        raw: dict[str, dict[str, list[dict[str, Any]]]] = {labels[b]: {mode: [] for mode in modes} for b in builds}
        for run in range(runs):
            for mode in modes[run % len(modes) :] + modes[: run % len(modes)]:  # each mode leads in turn
                for build in builds[run % len(builds) :] + builds[: run % len(builds)]:
                    if mode == "single":
                        m = run_single(build, n, target)
                    else:
                        m = run_cluster(rig, build, n, int(mode[-1]), args.threads)
                    raw[labels[build]][mode].append(m)
                    print(
                        f"run {run + 1} {labels[build]:8s} {mode:9s} {m['urls_per_s']:8,.0f} URLs/s"
                        f" {m['seconds']:6.2f} s (POST {m['submit_s']:.2f}, start {m['start_s']:.2f}, run {m['run_s']:.2f},"
                        f" end {m['end_s']:.2f})"
                        "  CPU ms/URL "
                        + " ".join(f"{k} {m[f'{k}_ms_per_url']:.3f}" for k in KINDS if f"{k}_ms_per_url" in m)
                        + f"  others {m['others_cores']:.2f} cores  ok {m['ok']}/{n}"
                        + ("" if m["viewer_complete"] else "  VIEWER INCOMPLETE"),
                        flush=True,
                    )
        summary = {label: {mode: medians(rs) for mode, rs in by_mode.items() if rs} for label, by_mode in raw.items()}
        bigs: dict[str, dict[str, Any]] = {}
        if big_n:
            for build in builds:
                bigs[labels[build]] = run_big(rig, build, big_n, args.threads)
                print(f"big ({labels[build]}):", json.dumps(bigs[labels[build]]), flush=True)
        report = {"info": info, "summary": summary, "raw": raw, "big": bigs, "load_at_end": os.getloadavg()}
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        (OUT / f"cluster-{stamp}.json").write_text(json.dumps(report, indent=1))
        lines = [
            f"date {info['date']}, nproc {info['nproc']}, {info['cpu']}, {n:,} x {PATH} at concurrency"
            f" {CONCURRENCY}, {runs} run(s) per mode, {args.threads} threads a worker; load average"
            f" {info['load_at_start'][0]:.1f} at the start, {report['load_at_end'][0]:.1f} at the end",
            "",
            table(summary),
            "",
        ]
        for label in raw:
            lines += verdicts(label, raw[label], summary[label], bigs.get(label))
        text = "\n".join(lines)
        (OUT / "cluster.md").write_text(text + "\n")
        print("\n" + text, flush=True)
    finally:
        if rig is not None:
            rig.stop()
        target.stop()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a stopped run still stops what it started
    sys.exit(main())
