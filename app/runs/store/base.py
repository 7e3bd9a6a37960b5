"""The store's contract: what the engine, the reader, the API and the stream need from storage, and its errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ...core.stats import Row
from ...core.urllist import UrlList
from ..diff import DiffRow
from ..events import Event
from .outbox import Delivery


class StoreOpenError(Exception):
    """The database cannot be opened as a usable store; the message names it (a file, or a URL without its
    password) and what to do."""


class StoreError(Exception):
    """A read or a write the database refused; the message names the database and its reason."""


@dataclass(frozen=True)
class StoreFault:
    """Why the store is not fit to take batches: `failing` (commits fail, retried) or `damaged` (until restart)."""

    state: str
    error: str  # the database's own words, e.g. "database or disk is full"
    since: str  # when it began (ISO time)
    message: str  # for the person on call: what happened and what to do


# Which results a filter takes by how they ended: as a batch's counts have it (ok, failed, cancelled);
# not_ok: failed or cancelled, every URL that did not end ok (what "rerun failed" and `results --failed` take);
# stopped: the cancelled that were in flight (they had started: their time is above 0).
OUTCOMES = ("ok", "warn", "failed", "cancelled", "not_ok", "stopped")
EVENT_TYPES = ("batch", "progress", "result")
RESULT_SORTS = ("index", "status", "latency", "size")
MAX_SEARCH = 200  # characters of a search (ResultQuery.q) the API takes


@dataclass(frozen=True)
class ResultQuery:
    """A page of a batch's results: which ones (every filter given must hold), in what order, and from where.

    Sorts: by URL index, status code, latency (total time; none for results that never reached the network)
    or size (bytes; none without a response). Results without a value go last either way; ties go by index,
    in the sort's direction. `start` (index sort only) begins the page at the first result at or after URL
    index `start` (at or before it, descending) instead of at `offset`; with `locate` the answer says the
    offset that is. `until_seq` leaves out the results stored after that event: pages read with the first
    page's last_seq hold the same results however many arrive between them, so none repeats or is skipped.
    """

    outcome: str | None = None  # one of OUTCOMES
    status: int | None = None  # HTTP status code
    error: str | None = None  # error kind
    reason: str | None = None  # a rule among the result's reasons (expect.final_url, check[2], a warning kind)
    q: str | None = None  # a substring of the URL or of the final URL; ASCII letters match either case
    sort: str = "index"  # one of RESULT_SORTS
    descending: bool = False
    offset: int = 0
    limit: int = 100
    start: int | None = None
    locate: bool = True
    until_seq: int | None = None

    @property
    def filtered(self) -> bool:
        """Whether the query leaves some results out."""
        return (
            self.outcome is not None
            or self.status is not None
            or self.error is not None
            or self.reason is not None
            or bool(self.q)
        )


@dataclass(frozen=True)
class ResultPage:
    """A page of results, with how many match the query and how far the batch's stored events went when read."""

    results: list[dict[str, Any]]
    total: int  # results matching the query; when not total_exact, at least this many
    total_exact: bool  # False when counting (or, for a search, reading) stopped at its time limit
    offset: int | None  # where the page starts among the matching results (None: a start not located)
    last_seq: int  # every event up to this seq was stored when the page was read


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
    source: dict[str, Any] | None = None  # where its URLs came from (app/core/sources.py), None for a list
    list_id: str | None = None  # the watch list it is a run of (app/runs/schedule.py), None for a batch alone


@dataclass
class ListRecord:
    """A watch list as stored (app/runs/store/lists.py): its URLs, the options of each run, and its schedule."""

    id: str
    name: str
    urls: list[str]
    options: dict[str, Any]
    schedule: dict[str, str]  # {"every": "6h"} or {"cron": "0 3 * * *"}
    notify: list[dict[str, Any]]
    notify_on: str | None
    consecutive_failures: int | None
    keep_runs: int
    paused: bool
    created_at: str
    next_run_at: float | None  # epoch seconds; None while paused
    last_run_at: float | None
    runs: int  # runs started so far
    skipped: int  # scheduled runs skipped: the one before was still going, or its source could not be read
    last_skipped_at: float | None
    source: dict[str, Any] | None = None  # a sitemap or page read again at each run, instead of `urls` (then [])
    last_skipped_reason: str | None = None  # why the last skipped run did not start
    # Per-URL expectations, meta and checks by index (a saved batch's row_specs), passed into each run's options;
    # None when it has none. New `urls` drop them. Not read by all_lists.
    row_specs: dict[str, dict[str, Any]] | None = None
    url_count: int = 0  # len(urls), kept so that listing the lists never reads their URLs
    # The run a process claimed (claim_run, a compare-and-set): the list's runs never overlap, in any process.
    running_batch: str | None = None
    running_since: float | None = None  # epoch seconds of the claim
    running_slot: float | None = None  # the scheduled slot it runs for, until its batch is stored; None for a run now


# The columns of a lists row a ListRecord is made of, in its fields' order.
LIST_FIELDS = tuple(field for field in ListRecord.__dataclass_fields__)
# What a change may set (the rest is the scheduler's, or fixed at creation).
LIST_CHANGES = (
    "name",
    "urls",
    "source",
    "options",
    "schedule",
    "notify",
    "notify_on",
    "consecutive_failures",
    "keep_runs",
    "paused",
    "next_run_at",
    "row_specs",
)


class ListStore(Protocol):
    """The watch lists' rows, in both stores (app/runs/store/lists.py)."""

    def create_list(self, record: ListRecord) -> None: ...
    def get_list(self, list_id: str) -> ListRecord | None: ...
    def all_lists(self) -> list[ListRecord]: ...
    def page_lists(self, limit: int, after: tuple[str, str] | None = None) -> list[ListRecord]: ...
    def count_lists(self) -> int: ...
    def change_list(self, list_id: str, changes: dict[str, Any]) -> bool: ...
    def delete_list(self, list_id: str) -> bool: ...
    def scheduled_lists(self) -> list[tuple[str, float]]: ...
    def claim_slot(self, list_id: str, slot: float, following: float, now: float) -> bool: ...
    def number_run(self, list_id: str) -> int: ...
    def claim_slot_run(
        self, list_id: str, slot: float, following: float, now: float, batch_id: str, grace: float = ...
    ) -> tuple[bool, bool]: ...
    def claim_run(self, list_id: str, batch_id: str, now: float, grace: float = ...) -> bool: ...
    def renew_claim(self, list_id: str, batch_id: str, now: float) -> bool: ...
    def release_run(self, list_id: str, batch_id: str, slot: float | None = None) -> None: ...
    def stored_run(self, list_id: str, batch_id: str) -> None: ...
    def lost_runs(self, before: float) -> list[ListRecord]: ...
    def note_skipped(self, list_id: str, now: float, reason: str) -> None: ...
    def list_runs(self, list_id: str, limit: int, offset: int = 0) -> list[str]: ...


class Store(ListStore, Protocol):
    """What the engine, the API and the stream need from storage: SQLiteStore, and cluster mode's PostgresStore."""

    def create_batch(
        self,
        batch_id: str,
        name: str,
        options: dict[str, Any],
        urls: Sequence[str],
        created_at: str,
        parent_id: str | None = None,
        source: dict[str, Any] | None = None,
        row_specs: dict[str, dict[str, Any]] | None = None,
        list_id: str | None = None,
    ) -> None: ...
    def extend(self, events: list[Event]) -> None: ...
    def flush(self, timeout: float | None = None) -> bool: ...
    def get_batch(self, batch_id: str, recent: bool = False) -> BatchRecord | None: ...
    def list_batches(self, limit: int, before: int | None = None) -> list[BatchRecord]: ...
    def recent_list_runs(self, list_ids: Sequence[str], per: int) -> list[BatchRecord]: ...
    def unfinished_batches(self) -> list[BatchRecord]: ...
    def urls(self, batch_id: str) -> UrlList: ...
    def row_specs(self, batch_id: str) -> dict[str, dict[str, Any]] | None: ...
    def iter_result_rows(self, batch_id: str, page: int = 10_000) -> Iterator[tuple[int, Row]]: ...
    def diff_rows(self, batch_id: str) -> list[DiffRow]: ...
    def results(
        self, batch_id: str, after: int = -1, limit: int = 100, outcome: str | None = None
    ) -> list[dict[str, Any]]: ...
    def result_page(
        self, batch_id: str, query: ResultQuery, total: int | None = None, dense: bool = False
    ) -> ResultPage: ...
    def iter_results(self, batch_id: str, outcome: str | None = None) -> Iterator[dict[str, Any]]: ...
    def result_pages(
        self, batch_id: str, outcome: str | None = None, extract: tuple[tuple[str, ...], ...] = ()
    ) -> Iterator[tuple[bytes, ...]]: ...
    def events(
        self, batch_id: str, after: int = 0, limit: int = 1000, types: tuple[str, ...] = EVENT_TYPES
    ) -> list[dict[str, Any]]: ...
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
    def claim_deliveries(self, lease: float, limit: int, now: float | None = None) -> list[Delivery]: ...
    def record_delivery(
        self,
        delivery: Delivery,
        state: str,
        tries: list[dict[str, Any]],
        due: float,
        payload: dict[str, Any] | None = None,
        note: str | None = None,
    ) -> bool: ...
    def release_deliveries(self) -> int: ...
    def deliveries(self, batch_id: str) -> list[Delivery]: ...
    def list_deliveries(self, list_id: str, limit: int = ...) -> list[Delivery]: ...
    def last_list_deliveries(self, list_ids: Sequence[str]) -> dict[str, Delivery]: ...
    def count_deliveries(self) -> dict[str, int]: ...
    def close(self) -> None: ...
