"""greenbatch's benchmark: `make bench` (or `BENCH_ARGS=--quick make bench` for a smoke run).

Everything runs on this machine, on 127.0.0.1: the target (tests/support/target.py --quiet) in its own
process, a fresh greenbatch server (`python wsgi.py`) per end-to-end run, and the drivers of
bench/drivers.py in fresh processes. For each workload (bench/workloads.py) and each run:

  e2e:<client>     POST the batch to the server; one websocket viewer follows every event; the time
                   runs from the POST to the viewer's `end`. CPU and peak RSS are the server's.
  engine:<client>  Engine + transport in one process, events to a null sink (no store, no viewer).
  grequests        grequests.map over one Session pooled to the concurrency.
  threads          a ThreadPoolExecutor of `concurrency` threads sharing one pooled requests Session.

Then: 200 websocket viewers on one W1 batch (every viewer must get every event; delivery lag), and
the latency of GET /api/v1/batches/<id> at a fixed rate while W2 runs (our own open-loop gevent
load generator, bench/drivers.py apiload). Medians of --runs runs (default 3; 11 for W2, the short,
noise-prone one, and 151 of its e2e:fast/engine:fast pair); the dashboard's overhead is the median
of the back-to-back e2e/engine pairs' ratios, printed with a bootstrap 90% interval. JSON and a
Markdown table go to bench/out/. --profile also records the server with py-spy during W2 and
summarises the profile. --cluster runs bench/cluster.py instead: cluster mode (PostgreSQL, Redis, 1 and 2
workers) against the one-process default, and a 1,000,000-URL batch across 2 workers.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests

from bench.drivers import follow
from bench.procs import Server, cpu_seconds, machine, peak_rss_mib, reset_peak_rss
from bench.workloads import WORKLOADS, Workload
from tests.support.processes import stop_process
from tests.support.target import start_target

OUT = ROOT / "bench" / "out"
CLIENTS = ("fast", "requests")
BASELINES = ("grequests", "threads")
FINAL = ("done", "cancelled", "failed")


# -- one measurement -------------------------------------------------------------------------


class Viewer(threading.Thread):
    """One websocket viewer following a batch to its `end` in a thread: bench/drivers.py's raw client.

    It checks every event's seq (1..last, none twice) and counts the results without decoding the
    JSON: the harness's CPU is spent on the two cores the server and the target use, and
    websocket-client with orjson cost 23-46 ms of CPU per W2 run against ~8 ms for this (bench/NOTES.md).
    """

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.results = 0
        self.complete = False
        self.ended: float | None = None
        self.error: str | None = None
        self.cpu_s = 0.0

    def run(self) -> None:
        started = time.thread_time()
        try:
            seen = follow(self.url, timed=False)
            self.results, self.complete, self.ended, self.error = (
                seen["results"],
                seen["complete"],
                seen["ended"],
                seen["error"],
            )
        except Exception as exc:  # noqa: BLE001 - reported with the measurement
            self.error = repr(exc)
        finally:
            self.cpu_s = time.thread_time() - started  # the harness's share of the two cores


class Spy:
    """py-spy recording a running process into `path` (raw collapsed stacks) until stopped."""

    def __init__(self, pid: int, path: Path | None):
        self.proc = None
        if path is not None:
            self.proc = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--output",
                    str(path),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.5)  # let py-spy attach before the load starts

    def stop(self) -> None:
        """Stop recording and let py-spy write its file."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT, 60)
        self.proc = None


def e2e(workload: Workload, target, client: str, profile: Path | None = None) -> dict:
    """greenbatch end to end: a fresh server, the batch POSTed, persisted, followed by one viewer."""
    server = Server(target.port).start()
    spy = None
    try:
        session = requests.Session()
        session.trust_env = False
        body = json.dumps(
            {"urls": workload.urls(target.base_url), "options": {"concurrency": workload.concurrency, "client": client}}
        )
        spy = Spy(server.pid, profile)
        reset_peak_rss(server.pid)
        server_cpu, target_cpu = cpu_seconds(server.pid), cpu_seconds(target.pid)
        started = time.time()  # the viewer stamps its `end` with time.time() too
        response = session.post(
            server.base_url + "/api/v1/batches", data=body, headers={"Content-Type": "application/json"}, timeout=120
        )
        if response.status_code != 201:
            raise RuntimeError(f"POST answered {response.status_code}: {response.text[:500]}")
        batch_id = response.json()["id"]
        viewer = Viewer(f"{server.ws_url}/ws/batches/{batch_id}?after=0")
        viewer.start()
        viewer.join(600)
        if viewer.ended is None:
            raise RuntimeError(f"viewer did not see the end of {batch_id}: {viewer.error}\n{server.log_tail()}")
        seconds = viewer.ended - started
        cpu = cpu_seconds(server.pid) - server_cpu
        target_used = cpu_seconds(target.pid) - target_cpu
        peak = peak_rss_mib(server.pid)
        spy.stop()
        stored = session.get(f"{server.base_url}/api/v1/batches/{batch_id}", timeout=30).json()
        return {
            "seconds": seconds,
            "urls": workload.n,
            "ok": stored["counts"]["ok"],
            "cpu_s": cpu,
            "peak_rss_mib": peak,
            "target_cpu_s": target_used,
            "viewer_results": viewer.results,
            "viewer_complete": viewer.complete,
            "viewer_cpu_s": viewer.cpu_s,
            "stored_status": stored["status"],
        }
    finally:
        if spy is not None:
            spy.stop()
        server.stop()


def driver(mode: str, workload: Workload, target, *extra: str) -> dict:
    """Run a bench/drivers.py mode in a fresh process and return its JSON (plus the target's CPU)."""
    target_cpu = cpu_seconds(target.pid)
    command = [
        sys.executable,
        str(ROOT / "bench" / "drivers.py"),
        mode,
        "--workload",
        workload.name,
        "--n",
        str(workload.n),
        "--target",
        target.base_url,
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed ({done.returncode}): {done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["target_cpu_s"] = cpu_seconds(target.pid) - target_cpu
    return out


PAIR = ("e2e:fast", "engine:fast")  # the modes the dashboard-overhead target divides
MIN_PAIRS_FOR_INTERVAL = 10  # fewer pairs' bootstrap interval would be little more than their range


def run_order(modes: list[str], run: int) -> list[str]:
    """The modes of one run, each e2e:<client> right beside its engine:<client>, the pair's order flipped every run.

    The overhead target divides one by the other, and this VM's speed drifts over seconds: measured
    back to back, first one then the other leading, both see the same drift (bench/NOTES.md).
    """
    ordered: list[str] = []
    for mode in modes:
        if mode in ordered:
            continue
        kind, _, client = mode.partition(":")
        partner = {"e2e": f"engine:{client}", "engine": f"e2e:{client}"}.get(kind)
        pair = [mode, partner] if partner in modes else [mode]
        ordered += pair if run % 2 == 0 else pair[::-1]
    return ordered


def modes_of_run(modes: list[str], run: int, runs: int) -> list[str]:
    """Every mode for the first `runs` runs; after them only the overhead's pair, e2e:fast and engine:fast."""
    return modes if run < runs else [mode for mode in modes if mode in PAIR]


def measure(mode: str, workload: Workload, target) -> dict:
    """One run of one mode on one workload."""
    kind, _, client = mode.partition(":")
    if kind == "e2e":
        out = e2e(workload, target, client)
    elif kind == "engine":
        out = driver("engine", workload, target, "--client", client)
    else:
        out = driver(kind, workload, target)
    out["urls_per_s"] = out["urls"] / out["seconds"]
    out["cpu_ms_per_url"] = out["cpu_s"] / out["urls"] * 1000
    if workload.ideal:
        out["ratio_to_ideal"] = workload.ideal / out["seconds"]
    return out


# -- profiles --------------------------------------------------------------------------------


def summarise_profile(raw: Path, top: int = 30) -> str:
    """Self and inclusive sample shares by function from py-spy's raw (collapsed) output."""
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = [_function(frame) for frame in stack.split(";")]
        own[frames[-1]] += samples
        for name in set(frames):
            inclusive[name] += samples
    lines = [f"{total} samples", "", "self %   function", "-------  --------"]
    lines += [f"{100 * n / total:6.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "incl %   function", "-------  --------"]
    lines += [f"{100 * n / total:6.1f}%  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def _write_profile(raw: Path, title: str) -> None:
    """Summarise a py-spy recording next to it and print the summary."""
    summary = summarise_profile(raw)
    raw.with_suffix(".summary.txt").write_text(f"{title}\n\n{summary}\n")
    print(f"\n== {title}\n{summary}", flush=True)


def _function(frame: str) -> str:
    """'fetch (app/transport.py:176)' -> 'fetch (app/transport.py)', paths shortened to the project or package."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


# -- reporting -------------------------------------------------------------------------------


def medians(runs: list[dict]) -> dict:
    """The median of every numeric field over runs (booleans: all true)."""
    out = {}
    for key in runs[0]:
        values = [r[key] for r in runs if key in r]
        if all(isinstance(v, bool) for v in values):
            out[key] = all(values)
        elif all(isinstance(v, (int, float)) for v in values):
            out[key] = statistics.median(values)
        else:
            out[key] = values[-1]
    out["runs"] = len(runs)
    out["urls_per_s_all"] = [round(r["urls_per_s"]) for r in runs]
    return out


def _runs_text(workload: Workload) -> str:
    """How many runs a workload gets, e.g. "W2 11 (151 of e2e:fast and engine:fast)"."""
    extra = f" ({workload.pair_runs} of {' and '.join(PAIR)})" if workload.pair_runs > workload.runs else ""
    return f"{workload.name} {workload.runs}{extra}"


def paired_share(e2e_runs: list[dict], engine_runs: list[dict]) -> float:
    """End to end's URLs/s as a share of the engine alone's: the median over runs of each back-to-back pair's ratio.

    Run i of e2e:<client> and of engine:<client> are measured one right after the other (run_order), so
    their ratio sees one state of this VM, whose speed moves by a third within a minute; a ratio of the
    two medians can divide a fast moment by a slow one (bench/NOTES.md, section 12).
    """
    return statistics.median(_pair_ratios(e2e_runs, engine_runs))


def _pair_ratios(e2e_runs: list[dict], engine_runs: list[dict]) -> list[float]:
    """Each back-to-back pair's URLs/s ratio, end to end over the engine alone."""
    return [e["urls_per_s"] / g["urls_per_s"] for e, g in zip(e2e_runs, engine_runs, strict=True)]


def paired_share_interval(
    e2e_runs: list[dict], engine_runs: list[dict], level: float = 0.9, resamples: int = 2000
) -> tuple[float, float]:
    """How far paired_share could move with other pairs: a bootstrap interval of the pairs' median.

    The pairs are drawn again with replacement `resamples` times; the interval holds the middle
    `level` of the medians. Seeded, so the same runs always give the same interval.
    """
    ratios = _pair_ratios(e2e_runs, engine_runs)
    draw = random.Random(0).choices
    medians = sorted(statistics.median(draw(ratios, k=len(ratios))) for _ in range(resamples))
    tail = round(resamples * (1 - level) / 2)
    return medians[tail], medians[resamples - 1 - tail]


def _overhead(share: float) -> float:
    """The overhead a share of the engine alone's throughput means, rounded for printing."""
    return round(1 - share, 2) + 0  # + 0 turns -0.0 into 0.0: "0 %", not "-0 %"


def table(summary: dict) -> str:
    """The results as a Markdown table."""
    lines = [
        "| Workload | Mode | URLs/s (median) | runs (URLs/s) | ratio to ideal | CPU ms/URL | peak RSS MiB | ok |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, modes in summary.items():
        for mode, m in modes.items():
            ratio = f"{m['ratio_to_ideal']:.2f}" if "ratio_to_ideal" in m else "-"
            lines.append(
                f"| {name} | {mode} | {m['urls_per_s']:,.0f} | {', '.join(map(str, m['urls_per_s_all']))} | "
                f"{ratio} | {m['cpu_ms_per_url']:.3f} | {m['peak_rss_mib']:.0f} | {m['ok']:.0f}/{m['urls']:.0f} |"
            )
    return "\n".join(lines)


def verdicts(summary: dict, fanout: dict | None, joining: dict | None = None, raw: dict | None = None) -> list[str]:
    """Each target, met or missed and by how much (the overhead from `raw`'s back-to-back pairs when given)."""
    out = []

    def line(name: str, value: float, goal: float, text: str, higher: bool = True) -> None:
        met = value >= goal if higher else value <= goal
        out.append(f"- {'MET' if met else 'MISSED'}: {name}: {text}")

    w1, w2, w3 = summary.get("W1", {}), summary.get("W2", {}), summary.get("W3", {})
    if "e2e:fast" in w2 and "grequests" in w2:
        ratio = w2["e2e:fast"]["urls_per_s"] / w2["grequests"]["urls_per_s"]
        line(
            "W2 end to end >= 3x grequests",
            ratio,
            3,
            f"{ratio:.2f}x ({w2['e2e:fast']['urls_per_s']:,.0f} vs {w2['grequests']['urls_per_s']:,.0f} URLs/s)",
        )
    if "e2e:fast" in w1:
        ratio = w1["e2e:fast"]["ratio_to_ideal"]
        line("W1 end to end >= 0.75 of ideal", ratio, 0.75, f"{ratio:.2f}")
    if "e2e:fast" in w3:
        ratio = w3["e2e:fast"]["ratio_to_ideal"]
        line("W3 end to end >= 0.6 of ideal", ratio, 0.6, f"{ratio:.2f}")
        if "grequests" in w3:
            ours, theirs = w3["e2e:fast"]["peak_rss_mib"], w3["grequests"]["peak_rss_mib"]
            line("W3 server peak RSS <= grequests'", ours, theirs, f"{ours:.0f} MiB vs {theirs:.0f} MiB", higher=False)
    for name, modes in summary.items():
        if "e2e:fast" in modes and "engine:fast" in modes:
            of_medians = modes["e2e:fast"]["urls_per_s"] / modes["engine:fast"]["urls_per_s"]
            if raw and name in raw:
                pairs = raw[name]
                share = paired_share(pairs["e2e:fast"], pairs["engine:fast"])
                how = f"median of {len(pairs['e2e:fast'])} back-to-back pairs"
                if len(pairs["e2e:fast"]) >= MIN_PAIRS_FOR_INTERVAL:
                    low, high = paired_share_interval(pairs["e2e:fast"], pairs["engine:fast"])
                    how += f", 90% interval {_overhead(high):.0%} to {_overhead(low):.0%}"
                how += f"; the ratio of the two medians is {of_medians:.0%}"
            else:
                share, how = of_medians, "ratio of the medians"
            line(
                f"{name} dashboard overhead <= 20% of engine-alone throughput",
                share,
                0.8,
                f"end to end runs at {share:.0%} of the engine alone (overhead {_overhead(share):.0%}; {how})",
            )
    for label, f in (("joined before the start", fanout), ("joining the running batch", joining)):
        if f:
            line(
                f"{f['viewers']} viewers ({label}) all get every event",
                1 if f["all_complete"] else 0,
                1,
                f"{f['viewers'] - f['incomplete']}/{f['viewers']} complete",
            )
            line(
                f"{f['viewers']} viewers ({label}) delivery lag p99 < 500 ms",
                -f["lag_p99_ms"],
                -500,
                f"p99 {f['lag_p99_ms']:.0f} ms (p50 {f['lag_p50_ms']:.0f}, max {f['lag_max_ms']:.0f})",
            )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/out/results.{json,md} (or, with --cluster, bench/cluster.py's)."""
    argv = sys.argv[1:] if argv is None else argv
    if "--cluster" in argv:
        from bench.cluster import main as cluster_main  # PostgreSQL, Redis and the cluster's libraries

        return cluster_main([arg for arg in argv if arg != "--cluster"])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="issue 16's cluster rows instead (bench/cluster.py; its own options follow, e.g. --quick, --runs)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: a fifth of the URLs, one run each")
    parser.add_argument(
        "--runs",
        type=int,
        help="runs per mode (default: 3; W2 11, and 151 of its e2e:fast/engine:fast pair; 1 with --quick)",
    )
    parser.add_argument("--workloads", default="W1,W2,W3")
    parser.add_argument(
        "--modes", default=",".join([f"e2e:{c}" for c in CLIENTS] + [f"engine:{c}" for c in CLIENTS] + list(BASELINES))
    )
    parser.add_argument("--no-fanout", action="store_true", help="skip the 200-viewer run")
    parser.add_argument("--no-api", action="store_true", help="skip the API latency run")
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only profile: py-spy on the server during W2 end to end (each client) and the "
        "fan-out run; summaries go to bench/out/profile-*.summary.txt",
    )
    parser.add_argument("--clients", default=",".join(CLIENTS), help="clients for --profile")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else None)  # None: each workload's own number of runs
    factor = 0.2 if args.quick else 1.0
    OUT.mkdir(parents=True, exist_ok=True)
    info = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        **machine(),
        "runs": runs or "per workload",
        "quick": args.quick,
        "load_at_start": os.getloadavg(),
    }
    print(json.dumps(info), flush=True)
    target = start_target(quiet=True, backlog=4096)
    try:
        if args.profile:
            for client in args.clients.split(","):
                raw = OUT / f"profile-W2-{client}.txt"
                m = e2e(WORKLOADS["W2"].scaled(factor), target, client, profile=raw)
                _write_profile(
                    raw,
                    f"W2 end to end, client {client}: {m['urls'] / m['seconds']:,.0f} URLs/s, "
                    f"{m['cpu_s'] / m['urls'] * 1000:.3f} ms server CPU/URL",
                )
            for joined_before in (True, False):
                raw = OUT / f"profile-fanout-{'joined' if joined_before else 'joining'}.txt"
                m = fan_out(
                    WORKLOADS["W1"].scaled(factor), target, args.viewers, profile=raw, joined_before=joined_before
                )
                _write_profile(
                    raw,
                    f"{m['viewers']} viewers on W1 ({'joined before' if joined_before else 'joining'}):"
                    f" lag p99 {m['lag_p99_ms']:.0f} ms, server CPU {m['server_cpu_s']:.2f} s",
                )
            return 0
        workloads = [WORKLOADS[name].scaled(factor) for name in args.workloads.split(",")]
        modes = args.modes.split(",")
        raw: dict[str, dict[str, list[dict]]] = {w.name: {m: [] for m in modes} for w in workloads}
        for workload in workloads:
            for run in range(runs or max(workload.runs, workload.pair_runs)):
                for mode in run_order(modes_of_run(modes, run, runs or workload.runs), run):
                    m = measure(mode, workload, target)
                    raw[workload.name][mode].append(m)
                    print(
                        f"{workload.name} run {run + 1} {mode:16s} {m['urls_per_s']:8,.0f} URLs/s  "
                        f"{m['seconds']:6.2f} s  cpu {m['cpu_ms_per_url']:.3f} ms/URL  rss {m['peak_rss_mib']:.0f} MiB"
                        f"  ok {m['ok']}/{m['urls']}",
                        flush=True,
                    )
        summary = {name: {mode: medians(rs) for mode, rs in modes_.items()} for name, modes_ in raw.items()}
        fanout = joining = api = None
        if not args.no_fanout:
            fanout = fan_out(WORKLOADS["W1"].scaled(factor), target, args.viewers)
            print("fan-out, viewers joined before the start:", json.dumps(fanout), flush=True)
            joining = fan_out(WORKLOADS["W1"].scaled(factor), target, args.viewers, joined_before=False)
            print("fan-out, viewers joining the running batch:", json.dumps(joining), flush=True)
        if not args.no_api:
            api = api_latency(WORKLOADS["W2"].scaled(factor), target)
            print("api latency:", json.dumps(api), flush=True)
        report = {
            "info": info,
            "summary": summary,
            "fanout": fanout,
            "fanout_joining": joining,
            "api": api,
            "raw": raw,
            "load_at_end": os.getloadavg(),
        }
        (OUT / "results.json").write_text(json.dumps(report, indent=1))
        text = "\n".join(
            [
                f"date {info['date']}, nproc {info['nproc']}, {info['cpu']}, Python {info['python']}, "
                f"{runs or ', '.join(_runs_text(w) for w in workloads)} run(s) per mode"
                f"{', QUICK' if args.quick else ''}",
                "",
                table(summary),
                "",
                *verdicts(summary, fanout, joining, raw),
            ]
        )
        if api:
            text += (
                f"\n\nAPI GET /api/v1/batches/<id> at {api['rate']:.0f}/s during W2: p50 {api['p50_ms']:.1f} ms, "
                f"p90 {api['p90_ms']:.1f} ms, p99 {api['p99_ms']:.1f} ms, max {api['max_ms']:.1f} ms "
                f"({api['requests']} requests, {api['errors']} errors; W2 took {api['batch_seconds']:.2f} s)"
            )
        for label, f in (("joined before the start", fanout), ("joining the running batch", joining)):
            if f:
                text += (
                    f"\n\n{f['viewers']} viewers on W1, {label}: {f['viewers'] - f['incomplete']} complete, lag p50 "
                    f"{f['lag_p50_ms']:.0f} ms, p99 {f['lag_p99_ms']:.0f} ms, max {f['lag_max_ms']:.0f} ms, "
                    f"server CPU {f['server_cpu_s']:.2f} s, last end {f['seconds_to_last_end']:.2f} s after POST"
                )
        (OUT / "results.md").write_text(text + "\n")
        print("\n" + text, flush=True)
    finally:
        target.stop()
    return 0


def fan_out(workload: Workload, target, count: int, profile: Path | None = None, joined_before: bool = True) -> dict:
    """200 (or `count`) raw websocket viewers on one batch, in their own gevent process.

    joined_before: the viewers connect while a 3 s gate batch runs, so the measured batch is all live
    delivery; otherwise they connect just after the POST and each first replays what it missed.
    """
    server = Server(target.port, env={"GREENBATCH_MAX_RUNNING_BATCHES": "1"}).start()
    spy = None
    try:
        spy = Spy(server.pid, profile)
        cpu = cpu_seconds(server.pid)
        out = driver(
            "viewers",
            workload,
            target,
            "--server",
            server.base_url,
            "--viewers",
            str(count),
            "--gate-ms",
            "3000" if joined_before else "0",
        )
        out["server_cpu_s"] = cpu_seconds(server.pid) - cpu
        return out
    finally:
        if spy is not None:
            spy.stop()
        server.stop()


def api_latency(workload: Workload, target) -> dict:
    """GET /api/v1/batches/<id> at a fixed rate while the batch runs."""
    server = Server(target.port).start()
    try:
        return driver("apiload", workload, target, "--server", server.base_url, "--rate", "20")
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
