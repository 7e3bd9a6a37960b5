"""The benchmark's workloads, shared by the orchestrator (run.py) and the drivers it starts."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Workload:
    """N URLs of one target path fetched at a concurrency; `ideal` is the best possible wall time."""

    name: str
    n: int
    concurrency: int
    path: str
    delay_ms: int = 0
    about: str = ""
    runs: int = 3  # runs per mode by default (make bench); --runs sets every workload's
    pair_runs: int = 0  # more runs of e2e:fast and engine:fast alone, for the overhead's pairs (0: none)

    @property
    def ideal(self) -> float | None:
        """Rounds of the delay the concurrency allows, in seconds; None when CPU is the only limit."""
        if not self.delay_ms:
            return None
        rounds = -(-self.n // self.concurrency)
        return rounds * self.delay_ms / 1000

    def urls(self, base_url: str) -> list[str]:
        """Distinct URLs (the index rides in the query, which the target ignores)."""
        return [f"{base_url}{self.path}?i={i}" for i in range(self.n)]

    def scaled(self, factor: float) -> Workload:
        """The same workload with fewer URLs, for --quick (concurrency kept)."""
        return replace(self, n=max(self.concurrency, int(self.n * factor)))


def every_event_once(seqs: list[int]) -> bool:
    """What a viewer must have seen: every event from 1 to the last, in order, none twice."""
    return bool(seqs) and seqs == list(range(1, len(seqs) + 1))


WORKLOADS = {
    "W1": Workload("W1", 2000, 200, "/delay/100", 100, "latency-bound: 2,000 x /delay/100 at concurrency 200"),
    # W2 runs for about half a second and is CPU-bound: this machine's noise moves it most, so it gets
    # more runs, and its overhead more pairs. One run's pairs spread from 0.5 to 1.8 while 364 pairs of
    # four runs put the overhead at 17 % (90 % interval 14-18 %): a run's median still crosses the 20 %
    # target in ~1 run in 9 with 31 pairs, ~1 in 22 with 91, ~1 in 65 with 151 (bench/NOTES.md,
    # section 13). A pair costs ~3 s, a run of every mode ~20 s.
    "W2": Workload(
        "W2", 5000, 50, "/bytes/1024", 0, "CPU-bound: 5,000 x /bytes/1024 at concurrency 50", runs=11, pair_runs=151
    ),
    "W3": Workload("W3", 10000, 1000, "/delay/200", 200, "wide: 10,000 x /delay/200 at concurrency 1,000"),
}
