"""The issue's planted diff: URLs of the target's /changes route whose answers change between two runs."""

from __future__ import annotations

import uuid
from typing import Any


def planted_urls(target: Any) -> tuple[list[str], str, str]:
    """(kept, gone, new): run `gone` + kept, then kept + `new`, and the second run differs from the first by
    3 newly failing, 2 fixed, 4 final URL changed, 1 removed, 1 added and 2 unchanged."""
    tag = uuid.uuid4().hex[:8]  # the target counts answers per path: a fresh tag starts every URL at its first

    def url(name: str, answers: str) -> str:
        return target.url(f"/changes/{tag}/{name}?answers={answers}")

    kept = (
        [url(f"nf{i}", "200,500") for i in range(3)]
        + [url(f"fx{i}", "500,200") for i in range(2)]
        + [url(f"fu{i}", "200,redirect") for i in range(4)]
        + [url(f"same{i}", "200") for i in range(2)]
    )
    return kept, url("gone", "200"), url("new", "200")


def untimed(summary: dict[str, int]) -> dict[str, int]:
    """A diff summary's kinds that are not 0, a URL that only got slower or faster counted as unchanged: on a loaded
    machine one loopback fetch can take 100 ms more in one run than in the other, which a diff shows as a change
    in time (tests that are not about time ask with `slower=1000` where they can)."""
    kinds = {kind: n for kind, n in summary.items() if n and kind not in ("slower", "faster")}
    timed = summary.get("slower", 0) + summary.get("faster", 0)
    return kinds | {"unchanged": kinds.get("unchanged", 0) + timed} if timed else kinds
