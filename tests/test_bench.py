"""The benchmark's own logic (bench/): what it reads off the wire, and the order it measures in."""

import json
import subprocess
import sys
from pathlib import Path
from statistics import NormalDist

from app.runs.events import Event
from app.web.stream import events_message
from bench.big import COLUMNS, EXPORTS, NOT_SUPPORTED
from bench.drivers import _HEAD
from bench.run import modes_of_run, paired_share, paired_share_interval, run_order, verdicts


def test_the_viewers_driver_reads_every_events_seq_type_and_time_from_the_servers_own_json():
    # The driver scans the server's messages instead of decoding them: if the event head changes
    # shape, this fails here rather than as viewers that silently "miss" every event in make bench.
    events = [
        Event(
            "0123456789ab",
            7,
            "result",
            {"index": 0, "error": {"message": 'say "seq":1 {}'}},
            at="2026-11-28T02:00:00.001Z",
        ),
        Event("0123456789ab", 8, "batch", {"status": "done"}, at="2026-11-28T02:00:00.002Z"),
    ]
    heads = _HEAD.findall(events_message(events).encode())
    assert heads == [(b"7", b"result", b"2026-11-28T02:00:00.001Z"), (b"8", b"batch", b"2026-11-28T02:00:00.002Z")]


def test_each_run_measures_a_clients_end_to_end_and_engine_alone_back_to_back_leading_in_turn():
    modes = ["e2e:fast", "e2e:requests", "engine:fast", "engine:requests", "grequests", "threads"]
    assert run_order(modes, 0) == ["e2e:fast", "engine:fast", "e2e:requests", "engine:requests", "grequests", "threads"]
    assert run_order(modes, 1) == ["engine:fast", "e2e:fast", "engine:requests", "e2e:requests", "grequests", "threads"]
    assert run_order(["e2e:fast", "grequests"], 1) == ["e2e:fast", "grequests"]


def test_the_overhead_is_the_median_of_back_to_back_pairs_not_a_ratio_of_medians_from_different_moments():
    # Run 3 caught the VM in a slow moment in both modes: as a pair it says 0.9, like the others.
    e2e = [{"urls_per_s": u} for u in (9_000, 9_500, 5_000)]
    engine = [{"urls_per_s": u} for u in (10_000, 10_000, 5_560)]
    assert round(paired_share(e2e, engine), 3) == 0.9
    summary = {"W2": {"e2e:fast": {"urls_per_s": 9_000}, "engine:fast": {"urls_per_s": 10_000}}}
    verdict = verdicts(summary, None, raw={"W2": {"e2e:fast": e2e, "engine:fast": engine}})
    assert verdict == [
        "- MET: W2 dashboard overhead <= 20% of engine-alone throughput: end to end runs at 90% of "
        "the engine alone (overhead 10%; median of 3 back-to-back pairs; the ratio of the two "
        "medians is 90%)"
    ]
    slow = [{"urls_per_s": u} for u in (7_000, 7_900, 4_000)]
    assert verdicts(summary, None, raw={"W2": {"e2e:fast": slow, "engine:fast": engine}})[0].startswith("- MISSED")


def test_after_its_runs_of_every_mode_a_workload_runs_only_the_pair_its_overhead_divides():
    modes = ["e2e:fast", "e2e:requests", "engine:fast", "engine:requests", "grequests", "threads"]
    assert modes_of_run(modes, 10, 11) == modes
    assert modes_of_run(modes, 11, 11) == ["e2e:fast", "engine:fast"]
    assert run_order(modes_of_run(modes, 12, 11), 12) == ["e2e:fast", "engine:fast"]
    assert run_order(modes_of_run(modes, 13, 11), 13) == ["engine:fast", "e2e:fast"]


def test_the_overhead_comes_with_how_far_other_pairs_could_move_it():
    # Pairs scattered as on this VM (a share of 0.86 give or take 0.1): nine times the pairs, a third the width.
    scatter = NormalDist(0.86, 0.1)

    def runs(pairs):
        shares = [scatter.inv_cdf((i + 0.5) / pairs) for i in range(pairs)]
        return [{"urls_per_s": 10_000 * s} for s in shares], [{"urls_per_s": 10_000}] * pairs

    few, many = runs(25), runs(225)
    (few_low, few_high), (many_low, many_high) = paired_share_interval(*few), paired_share_interval(*many)
    assert few_low < paired_share(*few) < few_high and many_low < paired_share(*many) < many_high
    assert many_high - many_low < (few_high - few_low) / 2
    assert paired_share_interval(*few) == (few_low, few_high)  # seeded: the same runs print the same interval
    summary = {"W2": {"e2e:fast": {"urls_per_s": 8_600}, "engine:fast": {"urls_per_s": 10_000}}}
    verdict = verdicts(summary, None, raw={"W2": dict(zip(("e2e:fast", "engine:fast"), many))})[0]
    assert f"median of 225 back-to-back pairs, 90% interval {1 - many_high:.0%} to {1 - many_low:.0%};" in verdict


def test_bench_big_prints_a_row_per_batch_size_with_every_column_and_a_line_per_target(tmp_path):
    # A smoke run of `make bench-big` at a tiny size: the shape of its report, never its timings.
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, str(root / "bench" / "big.py"), "--sizes", "2000", "--runs", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "| " + " | ".join(COLUMNS) + " |" in lines
    (row,) = [line for line in lines if line.startswith("| 2,000 URLs |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert len(cells) == len(COLUMNS) and all(cells)
    url_rate, peak, get, frames, *exports, page, pages, submit = cells[1:]
    assert url_rate[0].isdigit() and "ms server CPU/URL" in url_rate
    assert peak.endswith("MiB)") and "submit" in peak
    assert get.startswith("p50 ") and ", p99 " in get and ", max " in get
    assert "lag p99" in frames
    assert len(exports) == len(EXPORTS) and all("rows/s" in e and "RSS +" in e for e in exports)
    assert page.startswith("open ")
    assert ("@0 " in pages or NOT_SUPPORTED in pages) and "failed" in pages
    assert submit.startswith("POST ") and "server CPU" in submit
    verdicts = [line for line in lines if line.startswith(("- MET: ", "- MISSED: ", "- N/A: "))]
    for target in ("URLs/s", "peak RSS", "GET /api/v1/batches/<id> p99", "progress frames", "batch page"):
        assert any(target in line for line in verdicts), target
    for fmt in EXPORTS:
        assert any(f"{fmt.upper()} export" in line for line in verdicts), fmt
    assert any("results pages" in line for line in verdicts) and any("outcome=failed" in line for line in verdicts)
    (written,) = tmp_path.glob("big-*.json")
    (summary,) = json.loads(written.read_text())["summary"]
    assert summary["urls"] == 2000 and summary["ok"] == 2000 and summary["csv_rows"] == summary["ndjson_rows"] == 2000
    assert (tmp_path / "big.md").read_text().strip() in done.stdout
    again = subprocess.run(
        [sys.executable, str(root / "bench" / "big.py"), "--report", str(written), "--out", str(tmp_path / "again")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert row in again.stdout.splitlines()  # a saved run prints the same table again
