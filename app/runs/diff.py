"""What changed between two runs: each URL of a batch aligned with its row in a base batch, and the kind of
change it shows, the first that holds in KINDS' order (a row counts once)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# The kinds of change, in the order a row is judged: it counts under the first that holds.
KINDS = (
    "newly_failed",
    "fixed",
    "status_changed",
    "final_url_changed",
    "slower",
    "faster",
    "added",
    "removed",
    "unchanged",
)
# A row aligned with a URL of the other batch that has no result yet (a run still going): not judged yet.
PENDING = "pending"
KEYS = ("url", "path")
DEFAULT_FACTOR = 2.0
MAX_FACTOR = 1000.0
MIN_TIME_CHANGE_MS = 100.0  # slower and faster also need at least this much time between the two runs
# What a diff lists unless asked for other kinds: every change, not the rows that stayed as they were.
LISTED_BY_DEFAULT = tuple(kind for kind in KINDS if kind != "unchanged")


def outcome_of(result: dict[str, Any]) -> str:
    """How a stored result ended: ok, warn, failed or cancelled (its `outcome`; worked out from `ok` and the error
    for a result stored before outcomes)."""
    outcome = result.get("outcome")
    if isinstance(outcome, str):
        return outcome
    if result.get("ok"):
        return "ok"
    return "cancelled" if (result.get("error") or {}).get("kind") == "cancelled" else "failed"


@dataclass(slots=True)
class DiffRow:
    """One URL of a batch as a diff reads it; `outcome` is None while the URL has no result yet."""

    index: int
    url: str
    outcome: str | None
    status_code: int | None
    final_url: str | None
    total_ms: float | None

    def side(self) -> dict[str, Any]:
        """The row as a change's `before` or `after` shows it."""
        return {
            "status_code": self.status_code,
            "final_url": self.final_url,
            "outcome": self.outcome,
            "total_ms": self.total_ms,
        }


@dataclass(slots=True)
class Change:
    """One aligned row: its key, its index in each batch (None where it is not in that batch) and its kind.

    `position` orders a diff: the batch's rows by index, then the removed ones by their base index.
    """

    key: str
    index: int | None
    base_index: int | None
    kind: str
    before: DiffRow | None
    after: DiffRow | None
    position: int

    def to_dict(self) -> dict[str, Any]:
        """The change as the API shows it."""
        return {
            "key": self.key,
            "index": self.index,
            "base_index": self.base_index,
            "kind": self.kind,
            "before": None if self.before is None else self.before.side(),
            "after": None if self.after is None else self.after.side(),
        }


@dataclass(frozen=True)
class Diff:
    """Every aligned row of two batches, in position order, and how many there are of each kind."""

    changes: list[Change]
    summary: dict[str, int]


# A URL's path and its query (no fragment), after its scheme and host: urlsplit's reading, five times faster.
_PATH_QUERY = re.compile(r"[^:/?#]+://[^/?#]*([^?#]*)(\?[^#]*)?")


def path_key(url: str) -> str:
    """A URL's path and query, scheme, host, trailing slash and case ignored: staging lines up with production."""
    found = _PATH_QUERY.match(url)
    if found is None:  # not an absolute URL: all of it is its path
        return url.lower()
    path, query = found.groups()
    return ((path.rstrip("/") or "/") + (query if query and query != "?" else "")).lower()


def judge(before: DiffRow, after: DiffRow, factor: float, key: str = "url") -> str:
    """The kind of change between two results of one URL: the first of KINDS that holds (PENDING while one
    has no result). Under key=path final URLs compare by path too: staging's redirects end on staging."""
    if before.outcome is None or after.outcome is None:
        return PENDING
    was_failed, is_failed = before.outcome == "failed", after.outcome == "failed"
    if is_failed and not was_failed:
        return "newly_failed"
    if was_failed and not is_failed and after.outcome != "cancelled":
        return "fixed"
    if before.status_code != after.status_code:
        return "status_changed"
    if _final_key(before.final_url, key) != _final_key(after.final_url, key):
        return "final_url_changed"
    was, now = before.total_ms, after.total_ms
    if was is not None and now is not None:
        if now - was >= MIN_TIME_CHANGE_MS and now >= factor * was:
            return "slower"
        if was - now >= MIN_TIME_CHANGE_MS and was >= factor * now:
            return "faster"
    return "unchanged"


def _final_key(final_url: str | None, key: str) -> str | None:
    """What is compared of a final URL under `key`."""
    return path_key(final_url) if key == "path" and final_url is not None else final_url


def _keyed(rows: Iterable[DiffRow], key: str) -> dict[tuple[str, int], DiffRow]:
    """Rows by (key, how many rows before had the same key): a URL listed twice aligns with its second listing."""
    make = path_key if key == "path" else str
    seen: dict[str, int] = defaultdict(int)
    keyed = {}
    for row in rows:
        k = make(row.url)
        keyed[(k, seen[k])] = row
        seen[k] += 1
    return keyed


def compare(
    base: Sequence[DiffRow],
    batch: Sequence[DiffRow],
    key: str = "url",
    factor: float = DEFAULT_FACTOR,
    listed: Collection[str] = LISTED_BY_DEFAULT,
) -> Diff:
    """Align the batch's rows with the base's by `key` (one of KEYS), judge each pair and count every kind;
    `changes` holds the rows of the `listed` kinds only."""
    before = _keyed(base, key)
    after = _keyed(batch, key)
    summary = dict.fromkeys((*KINDS, PENDING), 0)
    changes = []
    for aligned, row in after.items():
        old = before.get(aligned)
        if old is None:
            kind = "added" if row.outcome is not None else PENDING
        else:
            kind = judge(old, row, factor, key)
        summary[kind] += 1
        if kind in listed:
            changes.append(Change(aligned[0], row.index, None if old is None else old.index, kind, old, row, row.index))
    changes.sort(key=lambda change: change.position)
    for aligned, old in before.items():
        if aligned not in after:
            summary["removed"] += 1
            if "removed" in listed:
                changes.append(Change(aligned[0], None, old.index, "removed", old, None, len(batch) + old.index))
    return Diff(changes, summary)
