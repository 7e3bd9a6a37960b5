"""What a batch looks like now: one reader for the API, the pages, the stream and /metrics.

A batch the engine holds is ahead of its stored row by up to one commit (its status, counts and last
seq), so the engine's live state wins while it holds the batch; a finished batch shows its stored
summary; a batch left unfinished by a stopped process is counted from its stored results.
"""

from __future__ import annotations

import datetime
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import gevent

from ..core import stats
from ..core.results import FINAL_STATUSES
from .certificates import CertificatePage, CertificateTable, Key
from .control import BatchControl
from .engine import LiveState
from .hosts import HostTable
from .store import BatchRecord, Store

SETTLE_POLL = 0.05  # seconds between reads while a batch's final state is still being committed
TABLE_PAGE = 5_000  # stored results a table (hosts, certificates) counts per read
TABLES_KEPT = 16  # tables kept between reads, the most recently read
Table = TypeVar("Table", HostTable, CertificateTable)


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
    source: dict[str, Any] | None = None  # the sitemap or page its URLs came from; None for a list
    list_id: str | None = None  # the watch list it is a run of; None for a batch submitted alone

    @property
    def final(self) -> bool:
        """Whether the batch has ended (and every one of its events is committed)."""
        return self.status in FINAL_STATUSES


class BatchReader:
    """Reads batches as they stand now: the store's rows, corrected by the engine's live state."""

    def __init__(self, store: Store, engine: BatchControl):
        self.store = store
        self.engine = engine
        # Stored rows of batches the engine holds, read once: what the engine's live state does not override
        # (name, num, options, total, created_at) cannot change while it holds them (delete waits for the end).
        self._held: dict[str, BatchRecord] = {}
        # Tables of batches kept between reads (hosts, certificates), the most recently read last.
        self._tables: OrderedDict[tuple[str, str], HostTable | CertificateTable] = OrderedDict()

    def hosts(self, batch_id: str) -> list[dict[str, Any]]:
        """The hosts table of a batch (hosts.HostTable.rows): its stored results, and the engine's live view."""
        table = self._caught_up(batch_id, HostTable)
        return table.rows(self.engine.hosts_live(batch_id))

    def certificates(
        self, batch_id: str, now: datetime.datetime, limit: int | None = None, after: Key | None = None
    ) -> CertificatePage:
        """A page of a batch's certificate inventory (certificates.CertificateTable.page); days_left counts from
        `now`."""
        return self._caught_up(batch_id, CertificateTable).page(now, limit, after)

    def _caught_up(self, batch_id: str, kind: type[Table]) -> Table:
        """A batch's table of this kind, counting the results stored since it was last read.

        TABLES_KEPT tables are kept, so a poll of a running batch costs what its new results and its table's
        rows cost, not every result again; a table read first (or again, once dropped) counts them all.
        """
        key = (kind.__name__, batch_id)
        table = self._tables.pop(key, None) or kind()
        self._tables[key] = table
        while len(self._tables) > TABLES_KEPT:
            self._tables.popitem(last=False)
        while True:
            events = self.store.events(batch_id, after=table.seq, limit=TABLE_PAGE, types=("result",))
            for event in events:
                # Two reads of one batch may interleave (each waits for the store): each result counts once.
                if event["seq"] > table.seq:
                    table.seq = event["seq"]
                    table.add(event["data"])
            if len(events) < TABLE_PAGE:
                return cast(Table, table)
            gevent.sleep(0)  # a long catch-up (a large batch read first) lets other requests in between pages

    def get(self, batch_id: str, recent: bool = False) -> BatchView | None:
        """One batch, or None; `recent`: a row read a moment ago will do (see Store.get_batch)."""
        record = self._held.get(batch_id)
        if record is not None:
            live = self.engine.live(batch_id)
            if live is not None:
                # No store read: a reader thread's answer comes back through the hub's callback queue, behind
                # every fetcher waiting there, so a running batch's GET would wait out a whole lap of its fetchers.
                return self._live_view(record, live)
            del self._held[batch_id]
        record = self.store.get_batch(batch_id, recent=recent)
        if record is None:
            return None
        if self.engine.is_live(batch_id):
            self._hold(record)
        return self.view(record)

    def _hold(self, record: BatchRecord) -> None:
        """Keep a live batch's stored row, forgetting those of batches the engine no longer holds."""
        for batch_id in [held for held in self._held if not self.engine.is_live(held)]:
            del self._held[batch_id]
        self._held[record.id] = record

    def page(self, limit: int, before: int | None = None) -> list[BatchView]:
        """Batches newest first; `before` is a cursor (a batch's num)."""
        return [self.view(record) for record in self.store.list_batches(limit, before)]

    def recent_list_runs(self, list_ids: list[str], per: int) -> dict[str, list[BatchView]]:
        """The last `per` runs of each list, newest first, as they stand now: one store read for them all."""
        found: dict[str, list[BatchView]] = {list_id: [] for list_id in list_ids}
        for record in self.store.recent_list_runs(list_ids, per):
            if record.list_id in found:
                found[record.list_id].append(self.view(record))
        return found

    def settled(self, batch_id: str, timeout: float) -> BatchView | None:
        """The batch once its final state is committed (at most `timeout` s), or as it stands then; None if gone."""
        deadline = time.monotonic() + timeout
        self.engine.wait_released(batch_id, timeout)  # woken by the commit, not by polling
        while True:
            view = self.get(batch_id)
            if view is None or view.final or time.monotonic() > deadline:
                return view
            gevent.sleep(SETTLE_POLL)

    @staticmethod
    def _live_view(record: BatchRecord, live: LiveState) -> BatchView:
        """A batch the engine holds: its stored row, with the engine's status, times, counts, stats and last seq."""
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
            record.source,
            record.list_id,
        )

    def view(self, record: BatchRecord) -> BatchView:
        """A stored batch as it stands now."""
        live: LiveState | None = self.engine.live(record.id)
        if live is not None:
            return self._live_view(record, live)
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
            record.source,
            record.list_id,
        )
