"""What the paced dispatcher (app/runs/hosts.py) costs per pick and per wake with many hosts queued.

    .venv/bin/python bench/hosts.py                      # 20,000 hosts, 1,000 picks
    .venv/bin/python bench/hosts.py --hosts 100000 --picks 5000

In this process, no network: a paced batch (per_host 1) of two URLs on each of --hosts hosts. The first URL
of every host is taken, so every host is full and its second URL waits in its queue. Then:

  wake  the dispatcher woken with no host ready: it looks for a URL and for when the next host is ready.
  pick  a slot of a random host frees, and the dispatcher hands that host's queued URL on (Hosts.next_url).
  waiting  the count of URLs held back by their hosts' refusals (Hosts.waiting: each progress event and each read of
        a running batch asks it), with one host in 100 paused by a Retry-After.

CPU (time.process_time) per wake and per pick, median and worst of the --picks.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.config import Config  # noqa: E402
from app.core.options import BatchOptions  # noqa: E402
from app.runs.hosts import Counters, Hosts  # noqa: E402


def main() -> None:
    """Fill the queues, then time wakes and picks; print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20_000)
    parser.add_argument("--picks", type=int, default=1_000)
    args = parser.parse_args()
    count = args.hosts
    options = BatchOptions.parse({"per_host": 1}, Config.from_env({}))
    # URL i and URL count + i are on host i: every host's first URL comes before any second one.
    hosts = Hosts(options, iter(range(2 * count)), lambda i: f"http://h{i % count}.test/{i}", Counters())
    for _ in range(count):
        hosts.next_url()
    assert hosts._pick(time.monotonic()) is None  # every second URL queued behind its full host
    wakes = []
    for _ in range(min(args.picks, 100)):
        started = time.process_time()
        hosts._pick(time.monotonic())
        hosts._next_ready_time()
        wakes.append(time.process_time() - started)
    picks = []
    for name in random.Random(18).sample(range(count), min(args.picks, count)):
        hosts.leave(hosts.hosts[f"h{name}.test"])
        started = time.process_time()
        index = hosts.next_url()
        picks.append(time.process_time() - started)
        assert index == count + name, (index, name)
    for name in range(0, count, 100):
        hosts.pause(hosts.hosts[f"h{name}.test"], 3600, "429 Retry-After: 3600")
    waits = []
    for _ in range(min(args.picks, 100)):
        started = time.process_time()
        held = hosts.waiting()
        waits.append(time.process_time() - started)
    assert held == len([name for name in range(0, count, 100) if hosts.hosts[f"h{name}.test"].queue]), held
    for what, times in (("wake", wakes), ("pick", picks), ("waiting", waits)):
        print(
            f"{what}: {count} hosts queued, median {statistics.median(times) * 1e6:.1f} us, "
            f"worst {max(times) * 1e6:.1f} us ({len(times)} timed)"
        )


if __name__ == "__main__":
    main()
