"""The store's contract: what the engine, the reader, the API and the stream need from storage, and its errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ...core.stats import Row
from ..events import Event


class StoreOpenError(Exception):
    """The database file cannot be opened as a usable store; the message names the file and what to do."""


class StoreError(Exception):
    """A read or a write the database refused; the message names the file and SQLite's reason."""


@dataclass(frozen=True)
class StoreFault:
    """Why the store is not fit to take batches: `failing` (commits fail, retried) or `damaged` (until restart)."""

    state: str
    error: str  # SQLite's own words, e.g. "database or disk is full"
    since: str  # when it began (ISO time)
    message: str  # for the person on call: what happened and what to do


@dataclass
class BatchRecord:
    """A batch as stored: its row and the sequence number of its newest committed event."""

    id: str
    num: int
    name: str
    status: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    options: dict[str, Any]
    total: int
    parent_id: str | None
    summary: dict[str, Any] | None
    last_seq: int


class Store(Protocol):
    """What the engine, the API and the stream need from storage; SQLiteStore is the real one."""

    def create_batch(
        self,
        batch_id: str,
        name: str,
        options: dict[str, Any],
        urls: list[str],
        created_at: str,
        parent_id: str | None = None,
    ) -> None: ...
    def extend(self, events: list[Event]) -> None: ...
    def flush(self, timeout: float | None = None) -> bool: ...
    def get_batch(self, batch_id: str, recent: bool = False) -> BatchRecord | None: ...
    def list_batches(self, limit: int, before: int | None = None) -> list[BatchRecord]: ...
    def unfinished_batches(self) -> list[BatchRecord]: ...
    def urls(self, batch_id: str) -> list[str]: ...
    def result_rows(self, batch_id: str) -> dict[int, Row]: ...
    def results(
        self, batch_id: str, after: int = -1, limit: int = 100, outcome: str | None = None
    ) -> list[dict[str, Any]]: ...
    def iter_results(self, batch_id: str, outcome: str | None = None) -> Iterator[dict[str, Any]]: ...
    def result_pages(
        self, batch_id: str, outcome: str | None = None, extract: tuple[tuple[str, ...], ...] = ()
    ) -> Iterator[tuple[bytes, ...]]: ...
    def events(self, batch_id: str, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]: ...
    def read_mark(self) -> int: ...
    def stored_events(
        self, batch_id: str, after: int = 0, limit: int = 1000, mark: int | None = None
    ) -> list[Event]: ...
    def observe_writes(self, observer: Callable[[float, int], None]) -> None: ...
    def observe_commits(self, observer: Callable[[list[Event]], None]) -> None: ...
    def delete_batch(self, batch_id: str) -> bool: ...
    def writable(self) -> bool: ...
    def fault(self) -> StoreFault | None: ...
    def count_by_status(self) -> dict[str, int]: ...
    def close(self) -> None: ...
