"""The notification outbox both stores keep: one delivery row per notify target of a batch, written in the
transaction that stores the batch's final event (so a finished batch always has its deliveries, and a killed
server sends them after restart), claimed by one sender at a time and updated after each try."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ...core.clock import now_iso

_T = TypeVar("_T")

DELIVERY_STATES = ("pending", "sent", "failed", "skipped")
_COLUMNS = "id, batch_id, target, kind, url, state, attempts, tries, payload, note, created_at, updated_at, due"
ENQUEUE = (
    "INSERT INTO deliveries (batch_id, target, kind, url, state, attempts, tries, created_at, updated_at, due)"
    " VALUES (?, ?, ?, ?, 'pending', 0, '[]', ?, ?, ?) ON CONFLICT (batch_id, target) DO NOTHING"
)
MAX_LISTED = 500  # deliveries one listing returns, newest first
# The newest delivery of each of some lists' runs ({marks}: one mark a list id), by batches_by_list and the
# deliveries' (batch_id, target) key: the list id, then _COLUMNS.
LAST_LIST_DELIVERIES = (
    f"SELECT list_id, {_COLUMNS} FROM (SELECT b.list_id, {', '.join('d.' + name for name in _COLUMNS.split(', '))},"
    " ROW_NUMBER() OVER (PARTITION BY b.list_id ORDER BY d.id DESC) AS place"
    " FROM deliveries d JOIN batches b ON b.id = d.batch_id WHERE b.list_id IN ({marks})) AS ranked WHERE place = 1"
)


@dataclass(frozen=True)
class Delivery:
    """One delivery row: a notify target (`target`, its index in the batch's options.notify) of one batch."""

    id: int
    batch_id: str
    target: int
    kind: str
    url: str
    state: str
    attempts: int
    tries: list[dict[str, Any]]
    payload: dict[str, Any] | None
    note: str | None
    created_at: str
    updated_at: str
    due: float
    claim_token: str | None = None  # the claim this copy was read under: every write of it must carry it

    @property
    def delivery_id(self) -> str:
        """The id a receiver deduplicates by: the same for every try, across stores and restarts."""
        return f"{self.batch_id}-{self.target}"


def _delivery(row: tuple[Any, ...], claim_token: str | None = None) -> Delivery:
    """A deliveries row read back (under a claim: its token)."""
    tries = json.loads(row[7]) if row[7] else []
    payload = json.loads(row[8]) if row[8] else None
    return Delivery(
        id=int(row[0]),
        batch_id=row[1],
        target=int(row[2]),
        kind=row[3],
        url=row[4],
        state=row[5],
        attempts=int(row[6]),
        tries=tries,
        payload=payload,
        note=row[9],
        created_at=row[10],
        updated_at=row[11],
        due=float(row[12]),
        claim_token=claim_token,
    )


def enqueue(execute: Callable[..., Any], sql: Callable[[str], str], batch_id: str, options_text: str | None) -> int:
    """Write the pending deliveries of a batch that just ended (one per notify target; none twice): part of the
    transaction that stores its final event. The count written."""
    if not options_text or '"notify"' not in options_text:
        return 0  # the batches that notify no one (nearly all) cost a substring search
    targets = json.loads(options_text).get("notify") or []
    at, due = now_iso(), time.time()
    for index, target in enumerate(targets):
        execute(sql(ENQUEUE), (batch_id, index, target.get("type"), target.get("url"), at, at, due))
    return len(targets)


class Outbox:
    """The outbox's statements, for a store that says how it reads (_read) and runs a write transaction
    (_transaction); `_dialect.skip_locked` lets concurrent senders of PostgreSQL claim disjoint rows."""

    _dialect: Any

    def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        """fn(conn, *args) on a reader connection."""
        raise NotImplementedError

    def _transaction(self, fn: Callable[[Any], _T]) -> _T:
        """fn(conn) in one write transaction."""
        raise NotImplementedError

    def claim_deliveries(self, lease: float, limit: int, now: float | None = None) -> list[Delivery]:
        """Pending deliveries due by `now` (the store's clock when None) that no sender holds, each now held for
        `lease` s under a new claim token (a sender that dies lets go when its lease ends), oldest first."""
        sql = self._dialect.sql
        pick = (
            "SELECT id FROM deliveries WHERE state = 'pending' AND due <= ? AND (claimed_until IS NULL OR"
            f" claimed_until <= ?) ORDER BY id LIMIT ?{self._dialect.skip_locked}"
        )
        token = secrets.token_hex(8)

        def claim(conn: Any) -> list[Delivery]:
            # Leases of PostgreSQL are read against its own clock: web processes' clocks may disagree.
            at = now if now is not None else self._dialect.clock(conn)
            ids = [row[0] for row in conn.execute(sql(pick), (at, at, limit)).fetchall()]
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            conn.execute(
                sql(f"UPDATE deliveries SET claimed_until = ?, claim_token = ? WHERE id IN ({marks})"),
                (at + lease, token, *ids),
            )
            rows = conn.execute(sql(f"SELECT {_COLUMNS} FROM deliveries WHERE id IN ({marks}) ORDER BY id"), ids)
            return [_delivery(row, token) for row in rows.fetchall()]

        return self._transaction(claim)

    def record_delivery(
        self,
        delivery: Delivery,
        state: str,
        tries: list[dict[str, Any]],
        due: float,
        payload: dict[str, Any] | None = None,
        note: str | None = None,
    ) -> bool:
        """A claimed delivery after a try (or the decision not to send it): its state, its tries, when it is due
        next; the sender's hold on it ends. False, and nothing written, when its claim is no longer the sender's
        (its lease ended and another sender claimed it, or it was released)."""
        statement = self._dialect.sql(
            "UPDATE deliveries SET state = ?, attempts = ?, tries = ?, due = ?, payload = COALESCE(?, payload),"
            " note = ?, updated_at = ?, claimed_until = NULL, claim_token = NULL WHERE id = ? AND claim_token = ?"
        )
        args = (state, len(tries), json.dumps(tries), due, _json(payload), note, now_iso(), delivery.id)
        written = self._transaction(lambda conn: conn.execute(statement, (*args, delivery.claim_token)).rowcount)
        return int(written) == 1

    def release_deliveries(self) -> int:
        """Let go of every claim (a process that held them died): only where no other sender can be running."""
        statement = "UPDATE deliveries SET claimed_until = NULL, claim_token = NULL WHERE claimed_until IS NOT NULL"
        return int(self._transaction(lambda conn: conn.execute(statement).rowcount))

    def deliveries(self, batch_id: str) -> list[Delivery]:
        """A batch's deliveries, in its targets' order."""
        statement = self._dialect.sql(f"SELECT {_COLUMNS} FROM deliveries WHERE batch_id = ? ORDER BY target")
        return self._read(lambda conn: [_delivery(row) for row in conn.execute(statement, (batch_id,)).fetchall()])

    def list_deliveries(self, list_id: str, limit: int = MAX_LISTED) -> list[Delivery]:
        """The deliveries of a watch list's runs (batches.list_id), newest first."""
        statement = self._dialect.sql(
            f"SELECT {_COLUMNS} FROM deliveries WHERE batch_id IN (SELECT id FROM batches WHERE list_id = ?)"
            " ORDER BY id DESC LIMIT ?"
        )
        return self._read(lambda conn: [_delivery(row) for row in conn.execute(statement, (list_id, limit))])

    def last_list_deliveries(self, list_ids: Sequence[str]) -> dict[str, Delivery]:
        """The newest delivery of each list's runs, by list id, in one query (a list whose runs sent none: absent)."""
        if not list_ids:
            return {}
        statement = self._dialect.sql(LAST_LIST_DELIVERIES.format(marks=", ".join("?" * len(list_ids))))
        return self._read(
            lambda conn: {row[0]: _delivery(row[1:]) for row in conn.execute(statement, tuple(list_ids)).fetchall()}
        )

    def count_deliveries(self) -> dict[str, int]:
        """How many deliveries are in each state (for /metrics)."""
        statement = "SELECT state, COUNT(*) FROM deliveries GROUP BY state"
        return self._read(lambda conn: {state: int(count) for state, count in conn.execute(statement).fetchall()})


def _json(value: dict[str, Any] | None) -> str | None:
    """A JSON column's text, or NULL."""
    return None if value is None else json.dumps(value)
