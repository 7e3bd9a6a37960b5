"""The watch lists' rows, spelled once for both stores: each store runs these statements on its own connections
(SQLite's writer thread, PostgreSQL's pool) through _in_transaction and _reading."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from .base import LIST_CHANGES, LIST_FIELDS, ListRecord
from .queries import Reading

_T = TypeVar("_T")
JSON_FIELDS = ("urls", "options", "schedule", "notify", "source")
LIST_COLUMNS = ", ".join(LIST_FIELDS)


def _record(row: tuple[Any, ...]) -> ListRecord:
    """A lists row (LIST_COLUMNS) as a record."""
    values = dict(zip(LIST_FIELDS, row, strict=True))
    for name in JSON_FIELDS:
        values[name] = None if values[name] is None else json.loads(values[name])
    values["paused"] = bool(values["paused"])
    return ListRecord(**values)


def _column(name: str, value: Any) -> Any:
    """A record's value as its column holds it."""
    if name in JSON_FIELDS:
        return None if value is None else json.dumps(value)
    if name == "paused":
        return int(bool(value))
    return value


class ListRows:
    """Store.create_list and its kin (base.ListStore), for a store that provides _in_transaction and _reading."""

    def _in_transaction(self, fn: Callable[[Reading], _T]) -> _T:
        """fn(db) in one write transaction, committed before this returns."""
        raise NotImplementedError

    def _reading(self, fn: Callable[[Reading], _T]) -> _T:
        """fn(db) on a reader connection."""
        raise NotImplementedError

    def create_list(self, record: ListRecord) -> None:
        """Store a new list."""
        values = [_column(name, getattr(record, name)) for name in LIST_FIELDS]
        marks = ", ".join("?" * len(LIST_FIELDS))
        self._in_transaction(lambda db: db.execute(f"INSERT INTO lists ({LIST_COLUMNS}) VALUES ({marks})", values))

    def get_list(self, list_id: str) -> ListRecord | None:
        """One list, or None."""
        row = self._reading(
            lambda db: db.execute(f"SELECT {LIST_COLUMNS} FROM lists WHERE id = ?", (list_id,)).fetchone()
        )
        return None if row is None else _record(row)

    def all_lists(self) -> list[ListRecord]:
        """Every list, oldest first."""
        rows = self._reading(
            lambda db: db.execute(f"SELECT {LIST_COLUMNS} FROM lists ORDER BY created_at, id").fetchall()
        )
        return [_record(row) for row in rows]

    def page_lists(self, limit: int, after: tuple[str, str] | None = None) -> list[ListRecord]:
        """Lists oldest first, at most `limit`; `after` is the (created_at, id) of the last one of the page before."""
        where, args = ("WHERE created_at > ? OR (created_at = ? AND id > ?)", after[:1] + after) if after else ("", ())
        sql = f"SELECT {LIST_COLUMNS} FROM lists {where} ORDER BY created_at, id LIMIT ?"
        rows = self._reading(lambda db: db.execute(sql, (*args, limit)).fetchall())
        return [_record(row) for row in rows]

    def count_lists(self) -> int:
        """How many lists there are."""
        return int(self._reading(lambda db: db.execute("SELECT COUNT(*) FROM lists").fetchone()[0]))

    def change_list(self, list_id: str, changes: dict[str, Any]) -> bool:
        """Set some of a list's LIST_CHANGES fields; False when there is no such list."""
        unknown = set(changes) - set(LIST_CHANGES)
        if unknown:
            raise ValueError(f"a list's {', '.join(sorted(unknown))} cannot be changed")
        if not changes:
            return self.get_list(list_id) is not None
        sets = ", ".join(f"{name} = ?" for name in changes)
        args = [_column(name, value) for name, value in changes.items()]
        return bool(
            self._in_transaction(
                lambda db: db.execute(f"UPDATE lists SET {sets} WHERE id = ?", (*args, list_id)).rowcount
            )
        )

    def delete_list(self, list_id: str) -> bool:
        """Remove a list; its runs stay, as batches of no list. False when there was no such list."""

        def delete(db: Reading) -> bool:
            db.execute("UPDATE batches SET list_id = NULL WHERE list_id = ?", (list_id,))
            return bool(db.execute("DELETE FROM lists WHERE id = ?", (list_id,)).rowcount)

        return self._in_transaction(delete)

    def scheduled_lists(self) -> list[tuple[str, float]]:
        """(id, next_run_at) of every list not paused."""
        rows = self._reading(
            lambda db: db.execute("SELECT id, next_run_at FROM lists WHERE next_run_at IS NOT NULL").fetchall()
        )
        return [(list_id, float(at)) for list_id, at in rows]

    def claim_slot(self, list_id: str, slot: float, following: float, now: float) -> bool:
        """Take a list's due run at `slot` and schedule its next at `following`; False when another process (or
        a change) moved the slot first: the compare-and-set that lets one scheduler only run each slot."""
        return bool(
            self._in_transaction(
                lambda db: (
                    db.execute(
                        "UPDATE lists SET next_run_at = ?, last_run_at = ? WHERE id = ? AND next_run_at = ?",
                        (following, now, list_id, slot),
                    ).rowcount
                )
            )
        )

    def number_run(self, list_id: str) -> int:
        """Count one more run of a list; its number (1 for the first)."""

        def count(db: Reading) -> int:
            db.execute("UPDATE lists SET runs = runs + 1 WHERE id = ?", (list_id,))
            row = db.execute("SELECT runs FROM lists WHERE id = ?", (list_id,)).fetchone()
            return int(row[0]) if row else 0

        return self._in_transaction(count)

    def note_skipped(self, list_id: str, now: float, reason: str) -> None:
        """Record a run that did not start, and why (its previous run was still going, its source unreadable)."""
        self._in_transaction(
            lambda db: db.execute(
                "UPDATE lists SET skipped = skipped + 1, last_skipped_at = ?, last_skipped_reason = ? WHERE id = ?",
                (now, reason, list_id),
            )
        )

    def list_runs(self, list_id: str, limit: int) -> list[str]:
        """The ids of a list's runs, newest first (through batches_by_list)."""
        rows = self._reading(
            lambda db: db.execute(
                "SELECT id FROM batches WHERE list_id = ? ORDER BY num DESC LIMIT ?", (list_id, limit)
            ).fetchall()
        )
        return [batch_id for (batch_id,) in rows]
