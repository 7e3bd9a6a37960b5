"""What a batch looks like now: one reader for the API, the pages, the stream and /metrics.

A batch the engine holds is ahead of its stored row by up to one commit (its status, counts and last
seq), so the engine's live state wins while it holds the batch; a finished batch shows its stored
summary; a batch left unfinished by a stopped process is counted from its stored results.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gevent

from ..core import stats
from ..core.results import FINAL_STATUSES
from .control import BatchControl
from .engine import LiveState
from .store import BatchRecord, Store

SETTLE_POLL = 0.05  # seconds between reads while a batch's final state is still being committed


@dataclass(frozen=True)
class BatchView:
    """A batch as it stands now: its stored row, with the engine's live state while the engine holds it."""

    id: str
    num: int
    name: str
    status: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    parent_id: str | None
    options: dict[str, Any]
    total: int
    counts: dict[str, int]
    stats: dict[str, Any]
    last_seq: int

    @property
    def final(self) -> bool:
        """Whether the batch has ended (and every one of its events is committed)."""
        return self.status in FINAL_STATUSES


class BatchReader:
    """Reads batches as they stand now: the store's rows, corrected by the engine's live state."""

    def __init__(self, store: Store, engine: BatchControl):
        self.store = store
        self.engine = engine

    def get(self, batch_id: str, recent: bool = False) -> BatchView | None:
        """One batch, or None; `recent`: a row read a moment ago will do (see Store.get_batch)."""
        record = self.store.get_batch(batch_id, recent=recent)
        return None if record is None else self.view(record)

    def page(self, limit: int, before: int | None = None) -> list[BatchView]:
        """Batches newest first; `before` is a cursor (a batch's num)."""
        return [self.view(record) for record in self.store.list_batches(limit, before)]

    def settled(self, batch_id: str, timeout: float) -> BatchView | None:
        """The batch once its final state is committed (at most `timeout` s), or as it stands then; None if gone."""
        deadline = time.monotonic() + timeout
        self.engine.wait_released(batch_id, timeout)  # woken by the commit, not by polling
        while True:
            view = self.get(batch_id)
            if view is None or view.final or time.monotonic() > deadline:
                return view
            gevent.sleep(SETTLE_POLL)

    def view(self, record: BatchRecord) -> BatchView:
        """A stored batch as it stands now."""
        live: LiveState | None = self.engine.live(record.id)
        if live is not None:
            return BatchView(
                record.id,
                record.num,
                record.name,
                live.status,
                record.created_at,
                live.started_at or record.started_at,
                live.finished_at or record.finished_at,
                record.parent_id,
                record.options,
                record.total,
                live.counts,
                live.stats,
                live.last_seq,
            )
        if record.summary is not None:
            counts, batch_stats = record.summary["counts"], record.summary["stats"]
        else:  # not final and not live: left by a stopped process, waiting to resume
            tally = stats.Tally()
            for _, row in self.store.iter_result_rows(record.id):  # a page at a time
                tally.add(row)
            counts, batch_stats = tally.counts(record.total), tally.summary()
        return BatchView(
            record.id,
            record.num,
            record.name,
            record.status,
            record.created_at,
            record.started_at,
            record.finished_at,
            record.parent_id,
            record.options,
            record.total,
            counts,
            batch_stats,
            record.last_seq,
        )
