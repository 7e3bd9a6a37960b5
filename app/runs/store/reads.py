"""The reads both stores answer alike, each in its database's spelling, and the sharing of reads among viewers.

A store (sqlite.py, postgres.py) is also a StoreReads: it says where a read runs (_read: SQLite's reader
threads, a pooled psycopg connection), how its SQL is spelled (_dialect) and how a batches row is read
(_read_batch); this class holds the statements and the rules that are the same for both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import orjson
from gevent.event import AsyncResult

from ...core.lru import LRU
from ...core.stats import Row
from ...core.urllist import UrlList
from ..diff import DiffRow, outcome_of
from ..events import Event
from .base import EVENT_TYPES, BatchRecord, ResultPage, ResultQuery
from .queries import EVENTS_AFTER, Dialect, events_of_types, read_page, results_after
from .rows import ROW_PAGE_QUERY

_T = TypeVar("_T")
_NOT_READ = object()  # what a shared read hands its waiters when it failed
REPLAY_CACHE_PAGES = 16  # full pages of stored events kept for viewers replaying the same batch at once


def _row_of(index: int, url: str, status: int | None, total_ms: float | None, data: str) -> DiffRow:
    """A stored result as a diff reads it: its outcome and final URL from its stored text (what orjson cannot
    read, a NaN or a lone surrogate, json can)."""
    try:
        result = orjson.loads(data)
    except orjson.JSONDecodeError:
        result = json.loads(data)
    final = result.get("final_url")
    return DiffRow(index, url, outcome_of(result), status, final if isinstance(final, str) else None, total_ms)


class StoreReads:
    """A store's reads that do not depend on its database (see the module's docstring)."""

    _dialect: Dialect  # how the store's database spells the shared statements (queries.py)

    def __init__(self) -> None:
        """No read shared or kept yet."""
        # (batch id, after, limit) -> a full page of stored events. Committed events never change (only
        # delete_batch removes them), so a page holding `limit` events is final and can serve every viewer.
        self._pages: LRU[tuple[str, int, int], list[Event]] = LRU(REPLAY_CACHE_PAGES)
        # Shared reads in flight: key -> (serial, result, or _NOT_READ when the read failed).
        self._reads_running: dict[tuple[str | int, ...], tuple[int, AsyncResult[object]]] = {}
        self._read_serial = 0

    # -- what each store says ----------------------------------------------------------------

    def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        """fn(conn, *args) with a reader connection, away from the hub; StoreError when the database fails it."""
        raise NotImplementedError

    def _read_batch(self, conn: Any, batch_id: str) -> BatchRecord | None:
        """get_batch's query."""
        raise NotImplementedError

    # -- reads -------------------------------------------------------------------------------

    def get_batch(self, batch_id: str, recent: bool = False) -> BatchRecord | None:
        """One batch, or None.

        `recent`: the caller can take the row as read a moment ago, so it joins a read of the same batch
        already running: viewers joining a batch together make a handful of reads between them, not one
        each queued on the reader threads.
        """
        return self._shared_read(("batch", batch_id), 0 if recent else None, self._read_batch, batch_id)

    def count_by_status(self) -> dict[str, int]:
        """How many stored batches are in each status (one scan of the batches table, no events read)."""

        def read(conn: Any) -> dict[str, int]:
            return dict(conn.execute("SELECT status, COUNT(*) FROM batches GROUP BY status").fetchall())

        return self._read(read)

    def row_specs(self, batch_id: str) -> dict[str, dict[str, Any]] | None:
        """A batch's per-row specs ({"index": {"expect", "meta", "checks"}}), or None when it has none.

        A batch stored before they had their own table keeps them in its options (options.rows), read there.
        """
        sql = self._dialect.sql(
            "SELECT r.specs, CASE WHEN r.specs IS NULL THEN b.options END FROM batches b"
            " LEFT JOIN row_specs r ON r.batch_id = b.id WHERE b.id = ?"
        )

        def read(conn: Any) -> dict[str, dict[str, Any]] | None:
            row = conn.execute(sql, (batch_id,)).fetchone()
            if row is None:
                return None
            specs, options = row
            if specs is not None:
                return cast(dict[str, dict[str, Any]], json.loads(specs))
            return cast(dict[str, dict[str, Any]] | None, json.loads(options).get("rows"))

        return self._read(read)

    def urls(self, batch_id: str) -> UrlList:
        """A batch's URLs in submission order, held compactly (the list of str is only read on the way)."""
        sql = self._dialect.sql("SELECT urls FROM url_lists WHERE batch_id = ?")

        def read(conn: Any) -> UrlList:
            row = conn.execute(sql, (batch_id,)).fetchone()
            return UrlList.of([]) if row is None else UrlList.from_json(row[0])

        return self._read(read)

    def iter_result_rows(self, batch_id: str, page: int = 10_000) -> Iterator[tuple[int, Row]]:
        """(URL index, statistics row) of each stored result in index order, read `page` at a time: what a
        resumed batch must not fetch again and what its counts start from, never all in memory at once."""
        sql = self._dialect.sql(ROW_PAGE_QUERY)

        def read(conn: Any, after: int) -> list[tuple[int, Row]]:
            return [
                (idx, Row(bool(ok), sc, ek, ms, b or 0, bool(warn), reasons, warnings))
                for idx, ok, sc, ek, ms, b, warn, reasons, warnings in conn.execute(sql, (batch_id, after, page))
            ]

        after = -1
        while True:
            chunk = self._read(read, after)
            yield from chunk
            if len(chunk) < page:
                return
            after = chunk[-1][0]

    def diff_rows(self, batch_id: str) -> list[DiffRow]:
        """Each URL of a batch, in index order, with what a diff compares of its result (none yet: outcome None).

        One read of the URL list and of the result columns; the outcome and the final URL are read from each
        result's stored text here (orjson: a few ms for 10,000), where PostgreSQL's JSON reading took a few
        tenths of a second.
        The alignment of two batches is a dictionary's work in diff.compare.
        """
        sql = self._dialect.sql(
            "SELECT idx, status_code, total_ms, data FROM events"
            " WHERE batch_id = ? AND type = 'result' AND idx IS NOT NULL"
        )
        urls_sql = self._dialect.sql("SELECT urls FROM url_lists WHERE batch_id = ?")

        def read(conn: Any) -> list[DiffRow]:
            row = conn.execute(urls_sql, (batch_id,)).fetchone()
            urls = UrlList.of([]) if row is None else UrlList.from_json(row[0])
            found = {idx: rest for idx, *rest in conn.execute(sql, (batch_id,))}
            rows = []
            for index, url in enumerate(urls):
                stored = found.get(index)
                if stored is None:
                    rows.append(DiffRow(index, url, None, None, None, None))
                else:
                    rows.append(_row_of(index, url, *stored))
            return rows

        return self._read(read)

    def results(
        self, batch_id: str, after: int = -1, limit: int = 100, outcome: str | None = None
    ) -> list[dict[str, Any]]:
        """A page of results by URL index after `after`; `outcome` (one of base.OUTCOMES) filters."""
        sql = self._dialect.sql(results_after(outcome))

        def read(conn: Any) -> list[dict[str, Any]]:
            return [json.loads(d) for (d,) in conn.execute(sql, (batch_id, after, limit))]

        return self._read(read)

    def result_page(
        self, batch_id: str, query: ResultQuery, total: int | None = None, dense: bool = False
    ) -> ResultPage:
        """A page of results under a filter and a sort, from an offset, with how many match.

        total: how many results match, when the caller knows (from the batch's counts): not counted again.
        dense: every URL index below the batch's size has its result (a finished batch), so an offset in
        index order is the index itself.
        """
        return self._read(read_page, batch_id, query, total, dense, self._dialect)

    def iter_results(self, batch_id: str, outcome: str | None = None) -> Iterator[dict[str, Any]]:
        """Every result of a batch in index order, read a page at a time."""
        for (texts,) in self.result_pages(batch_id, outcome):
            for text in texts.split(b"\n"):
                yield json.loads(text)

    def result_pages(
        self, batch_id: str, outcome: str | None = None, extract: tuple[tuple[str, ...], ...] = ()
    ) -> Iterator[tuple[bytes, ...]]:
        """Every result of a batch in index order, a page of UTF-8 texts per read, each a line a result."""
        raise NotImplementedError

    def events(
        self, batch_id: str, after: int = 0, limit: int = 1000, types: tuple[str, ...] = EVENT_TYPES
    ) -> list[dict[str, Any]]:
        """Committed events of a batch after a sequence number, in order, as JSON-ready data; only of `types`."""
        if set(EVENT_TYPES) <= set(types):
            return [event.to_dict() for event in self._read(self._read_events, batch_id, after, limit)]
        sql = self._dialect.sql(events_of_types(self._dialect, types))

        def read(conn: Any) -> list[dict[str, Any]]:
            rows = conn.execute(sql, (batch_id, after, *types, limit))
            return [Event(batch_id, seq, type_, at=at, data_json=d).to_dict() for seq, type_, at, d in rows]

        return self._read(read)

    # -- reads shared by viewers -------------------------------------------------------------

    def read_mark(self) -> int:
        """A mark for stored_events: every read numbered above it starts after this call."""
        return self._read_serial

    def stored_events(self, batch_id: str, after: int = 0, limit: int = 1000, mark: int | None = None) -> list[Event]:
        """Committed events after a sequence number, in order, carrying their stored JSON (nothing decoded).

        Viewers that join a running batch together ask for the same pages, so reads are shared. A full
        page is final (committed events never change): it is read once and kept. A shorter page may
        still grow, so a caller shares one only if that read started after the caller's `mark`
        (read_mark(), taken when it subscribed): such a read holds everything committed then.
        """
        key = (batch_id, after, limit)
        page = self._pages.get(key)
        if page is not None:
            return page
        page = self._shared_read(("events", *key), mark, self._read_events, *key)
        if len(page) == limit:
            self._pages.put(key, page)
        return page

    def _forget_pages(self, batch_id: str) -> None:
        """Drop the kept pages of a deleted batch."""
        self._pages.drop(lambda key: key[0] == batch_id)

    def _shared_read(self, key: tuple[str | int, ...], join_after: int | None, fn: Callable[..., _T], *args: Any) -> _T:
        """fn(conn, *args) by _read, or the result of a read of the same `key` already running, if that read
        is numbered above `join_after` (a read_mark(); None: never join). Later callers may join this read
        while it runs."""
        result: object  # fn's value, or _NOT_READ
        pending = self._reads_running.get(key)
        if pending is not None and join_after is not None and pending[0] > join_after:
            result = pending[1].get()
            if result is not _NOT_READ:
                return cast(_T, result)  # what the same read, fn(conn, *args), returned
        self._read_serial += 1
        mine: tuple[int, AsyncResult[object]] = (self._read_serial, AsyncResult())
        self._reads_running[key] = mine
        result = _NOT_READ
        try:
            result = self._read(fn, *args)
            return result
        finally:
            if self._reads_running.get(key) is mine:
                del self._reads_running[key]
            mine[1].set(result)  # _NOT_READ when the read failed: each waiter then reads for itself

    def _read_events(self, conn: Any, batch_id: str, after: int, limit: int) -> list[Event]:
        """stored_events' query, where reads run."""
        return [
            Event(batch_id, seq, type_, at=at, data_json=d)
            for seq, type_, at, d in conn.execute(self._dialect.sql(EVENTS_AFTER), (batch_id, after, limit))
        ]
