"""Where batches stand in PostgreSQL: each one's newest committed seq, read for the Follower's once-a-second check."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from ..core.results import FINAL_STATUSES

OPEN_STATUSES = ("queued", "running")


@dataclass(frozen=True)
class Head:
    """A batch's row as the check needs it."""

    id: str
    num: int
    status: str
    last_seq: int

    @property
    def final(self) -> bool:
        """Whether the batch has ended (its final event is its last)."""
        return self.status in FINAL_STATUSES


class Heads:
    """Short reads of the batches table on a small pool of its own (autocommit: each read sees the latest commits)."""

    def __init__(self, database_url: str, max_size: int = 2):
        self._pool = ConnectionPool(
            database_url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True},
            name="greenbatch-heads",
            open=True,
        )

    def last_seqs(self, batch_ids: Collection[str]) -> dict[str, int]:
        """The newest committed seq of each of these batches (a deleted one is left out)."""
        if not batch_ids:
            return {}
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT id, last_seq FROM batches WHERE id = ANY(%s)", (list(batch_ids),)).fetchall()
        return {batch_id: int(last_seq) for batch_id, last_seq in rows}

    def moving(self, newer_than: int, batch_ids: Collection[str]) -> tuple[list[Head], int]:
        """Batches queued or running, numbered above `newer_than`, or listed; and the newest batch number (0: none)."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, num, status, last_seq FROM batches WHERE status IN ('queued', 'running') OR num > %s "
                "OR id = ANY(%s) ORDER BY num",
                (newer_than, list(batch_ids)),
            ).fetchall()
            newest = conn.execute("SELECT coalesce(max(num), 0) FROM batches").fetchone()
        heads = [Head(batch_id, int(num), status, int(last_seq)) for batch_id, num, status, last_seq in rows]
        return heads, int(newest[0]) if newest else 0

    def close(self) -> None:
        """Close the pool's connections."""
        self._pool.close()
