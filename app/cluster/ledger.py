"""The cluster's writes to PostgreSQL: batches and their chunks, claims, results and cancels.

Every write that changes a batch is one short transaction holding the batch row's lock (SELECT ... FOR
UPDATE), so whoever holds it sees the batch as it stands: seqs are numbered from its last_seq there
(gap-free in commit order, which a SEQUENCE is not), an index already recorded is dropped there, and a
final batch takes nothing more. Each method returns the events it committed, with their seqs, for the
caller to announce; the clocks (`*_clock` columns) are the database's, the one clock every machine shares.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from ..core import stats, verdict
from ..core.clock import now_iso
from ..core.jsonutil import compact_json
from ..core.results import FINAL_STATUSES
from ..runs.engine import PROGRESS_INTERVAL, cancelled_result
from ..runs.events import Event
from ..runs.store.outbox import enqueue
from ..runs.store.rows import EVENT_COLUMNS, EventRow, event_rows, json_array

log = logging.getLogger(__name__)

NOW = "extract(epoch from clock_timestamp())::float8"  # the database's clock, read when the statement runs
CANCEL_SLICE = 5_000  # never-run URLs a cancel records a transaction (whole chunks: the last may go past it)
_COPY_EVENTS = f"COPY events ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
# Latencies of results that reached the network, as stats.latency_ms takes them (error_kind may be NULL).
_TIMED = "total_ms IS NOT NULL AND (error_kind IS NULL OR NOT (error_kind = ANY(%s::text[])))"

# scheme://[userinfo@]host[:port] up to the path, query or fragment: the host, or an IPv6 address without brackets.
_HOST = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#]*@)?(?:\[([^\]/?#]*)\]|([^:/?#]*))(?::[0-9]*)?(?:[/?#]|$)")
Result = tuple[int, str, stats.Row]  # URL index, the result's JSON text (Event.data_json), its stats Row


@dataclass(frozen=True)
class Claim:
    """A chunk a worker may run: the batch's options and size, and the chunk's URLs that have no result yet."""

    options: dict[str, Any]
    total: int
    indexes: list[int]
    urls: list[str]  # urls[i] is URL indexes[i]
    row_specs: dict[str, dict[str, Any]] | None = None  # the chunk's per-row specs, by URL index as text


class _Head(NamedTuple):
    """A batch row as its lock holder reads it."""

    status: str
    total: int
    last_seq: int
    tally: str | None
    started_clock: float | None
    progress_clock: float | None
    cancelling: bool
    now: float


def plan_chunks(urls: Sequence[str], slots: int, lo: int, hi: int) -> list[list[int]]:
    """URL indexes cut into chunks of clamp(ceil(total / (4 x slots)), lo, hi), a host's URLs side by side.

    Hosts come in the order they first appear, each host's URLs in index order; the host is the one the
    engine's per-host cap counts by, so a chunk keeps a host's URLs together under one worker's cap.
    """
    total = len(urls)
    if not total:
        return []
    size = min(max(math.ceil(total / (4 * max(1, slots))), lo), hi)
    by_host: dict[str, list[int]] = {}
    hosts: dict[str, str] = {}  # an http(s) URL's text up to the first "/" after "://" (its authority in it) -> host
    for index, url in enumerate(urls):
        if url.startswith(("http://", "https://")):
            head = url[: url.find("/", url.find("://") + 3) % (len(url) + 1)]
            host = hosts.get(head)
            if host is None:
                host = hosts[head] = host_of(head)
        else:
            host = host_of(url)
        by_host.setdefault(host, []).append(index)
    ordered = [index for indexes in by_host.values() for index in indexes]
    return [ordered[start : start + size] for start in range(0, total, size)]


def _chunk_specs(row_specs: dict[str, dict[str, Any]], indexes: list[int]) -> str | None:
    """A chunk's share of a batch's per-row specs as JSON text, or None when none of its URLs has one."""
    mine = {str(i): row_specs[str(i)] for i in indexes if str(i) in row_specs}
    return compact_json(mine) if mine else None


def host_of(url: str) -> str:
    """A URL's host as the engine's per-host cap has it (urlsplit's hostname, lower case), at a regex's cost."""
    found = _HOST.match(url)
    if found is None:
        return (urlsplit(url).hostname or "").lower()
    bracketed, plain = found.groups()
    return (plain if bracketed is None else bracketed).lower()


class Ledger:
    """The cluster's writes, each one transaction under the batch row's lock; see the module's docstring."""

    def __init__(self, database_url: str, max_connections: int = 4):
        """Open a pool of up to `max_connections` to an already migrated database (pg_schema.migrate)."""
        self._pool = ConnectionPool(
            database_url, min_size=1, max_size=max_connections, kwargs={"autocommit": True}, open=True, name="ledger"
        )

    def close(self) -> None:
        """Close every connection."""
        self._pool.close()

    # -- batches and chunks ------------------------------------------------------------------

    def create_batch(
        self,
        batch_id: str,
        name: str,
        options: dict[str, Any],
        urls: Sequence[str],
        created_at: str,
        parent_id: str | None,
        chunks: list[list[int]],
        source: dict[str, Any] | None = None,
        row_specs: dict[str, dict[str, Any]] | None = None,
        list_id: str | None = None,
    ) -> list[Event]:
        """Store a new batch, its URLs, its per-row specs and its chunks (chunk no i is chunks[i], pending, with
        its URLs' share of the specs), and its `queued` event."""
        _check_cover(batch_id, chunks, len(urls))
        queued = Event(batch_id, 1, "batch", {"status": "queued", "created_at": created_at})
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO batches"
                " (id, name, status, created_at, options, total, parent_id, last_seq, tally, source, list_id)"
                " VALUES (%s, %s, 'queued', %s, %s, %s, %s, 1, %s, %s, %s)",
                (
                    batch_id,
                    name,
                    created_at,
                    json.dumps(options),
                    len(urls),
                    parent_id,
                    compact_json(stats.Tally().state()),
                    None if source is None else json.dumps(source),
                    list_id,
                ),
            )
            conn.execute(
                "INSERT INTO url_lists (batch_id, urls) VALUES (%s, %s)", (batch_id, json_array(urls).decode())
            )
            if row_specs is not None:
                conn.execute(
                    "INSERT INTO row_specs (batch_id, specs) VALUES (%s, %s)", (batch_id, compact_json(row_specs))
                )
            now = _clock(conn)
            columns = "batch_id, no, indexes, urls, specs, created_clock"
            with conn.cursor().copy(f"COPY chunks ({columns}) FROM STDIN") as copy:
                for no, indexes in enumerate(chunks):
                    specs = _chunk_specs(row_specs, indexes) if row_specs else None
                    copy.write_row(
                        (batch_id, no, _int_array(indexes), compact_json([urls[i] for i in indexes]), specs, now)
                    )
            _copy_events(conn, event_rows([queued]))
        return [queued]

    def mark_sent(self, batch_id: str, nos: list[int]) -> None:
        """Note that chunks were sent to the workers (again): state sent, sent_clock now, one more send."""
        with self._pool.connection() as conn, conn.transaction():
            if _lock(conn, batch_id) is None:
                return
            conn.execute(
                f"UPDATE chunks SET state = 'sent', sent_clock = {NOW}, sends = sends + 1"
                " WHERE batch_id = %s AND no = ANY(%s::int[]) AND state <> 'done'",  # a done chunk stays done
                (batch_id, nos),
            )

    def claim(self, batch_id: str, no: int) -> tuple[Claim | None, list[Event]]:
        """Take chunk `no` to run: its URLs without a result, or None when the batch is final or gone or the
        chunk is done (one whose every URL has its result is marked done here). The first claim of a queued
        batch makes it running."""
        with self._pool.connection() as conn, _written(conn):
            head, (chunks, recorded_rows) = _begin_locked(
                conn,
                batch_id,
                (
                    "SELECT c.indexes, c.urls, c.state, b.options, c.specs FROM chunks c JOIN batches b ON b.id = c.batch_id"
                    " WHERE c.batch_id = %s AND c.no = %s",
                    (batch_id, no),
                ),
                (
                    "SELECT i FROM chunks c, unnest(c.indexes) i,"
                    " LATERAL (SELECT FROM events e WHERE e.batch_id = c.batch_id AND e.idx = i LIMIT 1) found"
                    " WHERE c.batch_id = %s AND c.no = %s",
                    (batch_id, no),
                ),
            )
            if head is None or head.status in FINAL_STATUSES or head.cancelling:
                return None, []
            if not chunks or chunks[0][2] == "done":
                return None, []
            indexes, urls_json, _, options, specs = chunks[0]
            recorded = {row[0] for row in recorded_rows}
            todo = [(j, index) for j, index in enumerate(indexes) if index not in recorded]
            if not todo:
                _commit(conn, ("UPDATE chunks SET state = 'done' WHERE batch_id = %s AND no = %s", (batch_id, no)))
                return None, []
            urls = json.loads(urls_json) if urls_json is not None else _urls_of(conn, batch_id, indexes)
            events = []
            last: list[tuple[str, tuple[Any, ...]]] = []
            if head.status == "queued":
                started = Event(batch_id, head.last_seq + 1, "batch", {"status": "running", "started_at": now_iso()})
                last.append(
                    (
                        "UPDATE batches SET status = 'running', started_at = %s, started_clock = %s,"
                        " progress_clock = %s, last_seq = %s WHERE id = %s",
                        (started.data["started_at"], head.now, head.now, started.seq, batch_id),
                    )
                )
                last.append((_INSERT_EVENT, event_rows([started])[0]))
                events.append(started)
            last.append(
                (
                    "UPDATE chunks SET touched_clock = %s, sent_clock = COALESCE(sent_clock, %s),"
                    " state = CASE WHEN state = 'pending' THEN 'sent' ELSE state END WHERE batch_id = %s AND no = %s",
                    (head.now, head.now, batch_id, no),
                )
            )
            _commit(conn, *last)
        claim = Claim(
            json.loads(options),
            head.total,
            [index for _, index in todo],
            [urls[j] for j, _ in todo],
            None if specs is None else json.loads(specs),
        )
        return claim, events

    def touch(self, batch_id: str, nos: list[int]) -> None:
        """A worker's heartbeat for chunks it is running (touched_clock now).

        It takes no batch lock: it stamps only its own chunk rows, and a heartbeat must not wait behind a
        cancel writing a million results.
        """
        with self._pool.connection() as conn:
            conn.execute(
                f"UPDATE chunks SET touched_clock = {NOW} WHERE batch_id = %s AND no = ANY(%s::int[])"
                " AND state <> 'done'",
                (batch_id, nos),
            )

    def chunk_done(self, batch_id: str, no: int) -> bool:
        """Mark a chunk done once each of its URLs has a result; False (it stays open) while one has none.

        It takes no batch lock (one statement): results are only ever added, so a chunk whose every URL has
        one is done whatever else happens to the batch, and writers need not wait for this.
        """
        with self._pool.connection() as conn:
            done = conn.execute(
                "UPDATE chunks c SET state = 'done' WHERE c.batch_id = %s AND c.no = %s AND NOT EXISTS ("
                " SELECT FROM unnest(c.indexes) i WHERE NOT EXISTS ("
                " SELECT FROM events e WHERE e.batch_id = c.batch_id AND e.idx = i)) RETURNING c.no",
                (batch_id, no),
            ).fetchone()
        return done is not None

    def stalled(self, unsent_after: float, silent_after: float) -> list[tuple[str, int]]:
        """Chunks of unfinished batches to send again: pending for over `unsent_after` s (never sent), or sent
        with no sign of life (send or heartbeat) for over `silent_after` s; as (batch id, chunk no)."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT c.batch_id, c.no FROM chunks c JOIN batches b ON b.id = c.batch_id, (SELECT {NOW} AS now) t"
                " WHERE c.state <> 'done' AND b.status IN ('queued', 'running') AND NOT b.cancelling AND ("
                " (c.state = 'pending' AND COALESCE(c.created_clock, 0) < t.now - %s)"
                " OR (c.state = 'sent' AND GREATEST(c.sent_clock, c.touched_clock) < t.now - %s))"
                " ORDER BY b.num, c.no",
                (unsent_after, silent_after),
            ).fetchall()
        return [(batch_id, no) for batch_id, no in rows]

    def unfinished(self) -> list[str]:
        """Ids of the batches queued or running, oldest first."""
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT id FROM batches WHERE status IN ('queued', 'running') ORDER BY num").fetchall()
        return [row[0] for row in rows]

    # -- results -----------------------------------------------------------------------------

    def append(self, batch_id: str, results: list[Result]) -> list[Event]:
        """Record results (URL index, data JSON, stats Row): each index once, numbered from the batch's last seq.

        Nothing is taken once the batch is final or gone, and an index already recorded (or twice in the
        call: the first stays) is dropped. The stored tally takes the new rows; a `progress` event follows
        them when the last one is PROGRESS_INTERVAL old; the append that records the last URL also ends the
        batch: status done, its summary stored and its final `batch` event. Returns the committed events.
        """
        if not results:
            return []
        unique: dict[int, Result] = {}
        for result in results:
            unique.setdefault(result[0], result)
        with self._pool.connection() as conn, _written(conn):
            # The lock, the recorded check and the rows' COPY are few round trips: the row stays locked (and the
            # other writers wait) from the first to the commit, and each one is a wait for a busy process's turn.
            head, (recorded_rows,) = _begin_locked(conn, batch_id, _recorded_query(batch_id, list(unique)))
            if head is None or head.status in FINAL_STATUSES or head.cancelling:
                return []
            for index in unique:
                if not 0 <= index < head.total:
                    raise ValueError(f"batch {batch_id} has no URL index {index} (it has {head.total} URLs)")
            recorded = {row[0] for row in recorded_rows}
            fresh = [result for index, result in unique.items() if index not in recorded]
            if not fresh:
                return []
            at = now_iso()
            seq = head.last_seq
            part = stats.Tally()
            events: list[Event] = []
            rows: list[EventRow] = []
            for index, data_json, row in fresh:
                seq += 1
                part.add(row)
                events.append(Event(batch_id, seq, "result", at=at, data_json=data_json, row=row))
                rows.append((batch_id, seq, "result", at, index, *_columns(row), data_json))
            tally = _tally(head)
            tally.merge(part)
            finished = tally.finished == head.total
            progress_clock = head.progress_clock if head.progress_clock is not None else head.now
            if not finished and head.now - progress_clock >= PROGRESS_INTERVAL:
                seq += 1
                progress = Event(
                    batch_id, seq, "progress", stats.batch_summary(tally, head.total, head.started_clock, head.now)
                )
                rows += event_rows([progress])  # in the results' COPY
                events.append(progress)
                progress_clock = head.now
            try:
                _copy_events(conn, rows)
            except psycopg.errors.UniqueViolation:
                # The lock and the check above keep an index from being recorded twice; the index is the backstop.
                log.error("batch %s: a result recorded twice got past the ledger's check", batch_id, exc_info=True)
                raise
            if finished:
                events.append(self._conclude(conn, batch_id, head, tally, "done", seq + 1))
                conn.commit()
                return events
            _commit(
                conn,
                (
                    "UPDATE batches SET last_seq = %s, tally = %s, progress_clock = %s WHERE id = %s",
                    (seq, compact_json(tally.state()), progress_clock, batch_id),
                ),
            )
        return events

    def cancel(self, batch_id: str) -> list[Event] | None:
        """Cancel a queued or running batch; None when it is final or gone (or another cancel ended it first).

        The first transaction marks the batch cancelling: from its commit on, append and claim take nothing.
        Then, a transaction per CANCEL_SLICE URLs or so (a chunk at least), the URLs of the chunks not done
        that have no result get one, cancelled (as the single-process engine words it), and those chunks are
        done; the last transaction adds the final `cancelled` event with the batch's summary. So no result
        follows `cancelled`, and a worker's append waits one slice at most, never a million rows. A cancel
        cut short (its process died) leaves the batch cancelling: cancelling() lists it, and cancel() again
        goes on from where it stopped (two cancels at once share the work).

        The list returned holds the final event only: the cancelled results before it are committed with
        their seqs (a viewer reads them by seq), but a million of them are not held here to be returned.
        """
        # A cancelled result's row is the same whether the URL ran (and waited) or not: its history is no column.
        row = stats.row_of(cancelled_result(0, "", None).to_dict())
        columns = _columns(row)
        while True:
            with self._pool.connection() as conn, conn.transaction():
                head = _lock(conn, batch_id)
                if head is None or head.status in FINAL_STATUSES:
                    return None
                if not head.cancelling:
                    conn.execute("UPDATE batches SET cancelling = true WHERE id = %s", (batch_id,))
                chunks = _next_open_chunks(conn, batch_id, CANCEL_SLICE)
                tally = _tally(head)
                if not chunks:
                    if tally.finished != head.total:  # create_batch checks that the chunks cover every URL
                        raise RuntimeError(
                            f"batch {batch_id}: its chunks are done but {head.total - tally.finished} URLs have no "
                            "result, so it cannot end; were its chunks changed by hand?"
                        )
                    return [self._conclude(conn, batch_id, head, tally, "cancelled", head.last_seq + 1)]
                at, seq = now_iso(), head.last_seq
                rows: list[EventRow] = []
                waited = _waited(conn, batch_id, [index for _, indexes, _ in chunks for index in indexes])
                for _, indexes, urls_json in chunks:
                    recorded = _recorded(conn, batch_id, indexes)
                    urls = json.loads(urls_json) if urls_json is not None else _urls_of(conn, batch_id, indexes)
                    for index, url in zip(indexes, urls):
                        if index in recorded:
                            continue
                        seq += 1
                        # Worded as the single-process engine does: a URL that waited in its host's queue keeps
                        # what it had done.
                        result = cancelled_result(index, url, waited.get(index))
                        rows.append((batch_id, seq, "result", at, index, *columns, compact_json(result.to_dict())))
                        tally.add(row)
                _copy_events(conn, rows)
                conn.execute(
                    "UPDATE chunks SET state = 'done' WHERE batch_id = %s AND no = ANY(%s::int[])",
                    (batch_id, [chunk[0] for chunk in chunks]),
                )
                conn.execute(
                    "UPDATE batches SET last_seq = %s, tally = %s WHERE id = %s",
                    (seq, compact_json(tally.state()), batch_id),
                )

    def note_waiting(self, notes: Mapping[tuple[str, int], dict[str, Any]]) -> None:
        """Keep what URLs sent back to their host's queue have done ((batch id, URL index) -> Requeued.history, the
        latest), for a cancel to record them with it; notes of a final or gone batch are dropped."""
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            # FOR SHARE waits for a cancel's transaction holding the batch's lock, then reads the status it left: a
            # note commits between two of the cancel's slices (the later ones read it), or finds the batch final
            # and is dropped, so none outlives the end that deleted the batch's notes.
            cursor.executemany(
                "INSERT INTO waiting_urls (batch_id, idx, history) SELECT %s, %s, %s WHERE EXISTS"
                " (SELECT 1 FROM batches WHERE id = %s AND status IN ('queued', 'running') FOR SHARE)"
                " ON CONFLICT (batch_id, idx) DO UPDATE SET history = EXCLUDED.history",
                [(batch_id, index, compact_json(history), batch_id) for (batch_id, index), history in notes.items()],
            )

    def cancelling(self) -> list[str]:
        """Ids of the batches whose cancel began but did not end (its process died): cancel() each to end it."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT id FROM batches WHERE cancelling AND status IN ('queued', 'running') ORDER BY num"
            ).fetchall()
        return [row[0] for row in rows]

    def _conclude(
        self, conn: psycopg.Connection[Any], batch_id: str, head: _Head, tally: stats.Tally, status: str, seq: int
    ) -> Event:
        """End a batch whose every URL has its result: its final event (exact percentiles, the verdict), row and
        chunks."""
        finished_at = now_iso()
        summary = stats.batch_summary(tally, head.total, head.started_clock, head.now)
        # The stored tally keeps no latencies: the final percentiles are the stored rows' exact ones.
        summary["stats"].update(zip((f"p{p}_ms" for p in stats.PERCENTILES), _exact_percentiles(conn, batch_id)))
        row = conn.execute("SELECT options FROM batches WHERE id = %s", (batch_id,)).fetchone()
        thresholds = json.loads(row[0]).get("thresholds") if row else None
        judged = verdict.batch_verdict(summary["counts"], summary["stats"], thresholds)
        data = {"status": status, "finished_at": finished_at, **summary, "verdict": judged}
        final = Event(batch_id, seq, "batch", data)
        _copy_events(conn, event_rows([final]))
        conn.execute(
            "UPDATE batches SET status = %s, finished_at = %s, summary = %s, last_seq = %s, tally = %s,"
            " progress_clock = %s WHERE id = %s",
            (status, finished_at, json.dumps(summary), seq, compact_json(tally.state()), head.now, batch_id),
        )
        conn.execute("UPDATE chunks SET state = 'done' WHERE batch_id = %s AND state <> 'done'", (batch_id,))
        conn.execute("DELETE FROM waiting_urls WHERE batch_id = %s", (batch_id,))  # every URL has its result now
        found = conn.execute("SELECT options FROM batches WHERE id = %s", (batch_id,)).fetchone()
        # Committed with the final event: a finished batch always has its deliveries (the web process sends them).
        enqueue(conn.execute, _pg_marks, batch_id, found[0] if found else None)
        log.info(
            "batch %s %s: %s",
            batch_id,
            status,
            summary["counts"],
            extra={"batch_id": batch_id, "status": status, "counts": summary["counts"]},
        )
        return final


# -- helpers ---------------------------------------------------------------------------------


def _pg_marks(sql: str) -> str:
    """A statement written with ? marks (the outbox's) with psycopg's %s."""
    return sql.replace("?", "%s")


_LOCK = (
    "SELECT status, total, last_seq, tally, started_clock, progress_clock, cancelling, "
    f"{NOW} FROM batches WHERE id = %s FOR UPDATE"
)
_INSERT_EVENT = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))})"


@contextmanager
def _written(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Around a transaction _begin_locked opened: whatever the block did not commit is rolled back as it ends
    (an error, or nothing to write), so no connection goes back to the pool holding a batch's lock."""
    try:
        yield
    finally:
        if conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
            conn.rollback()


def _begin_locked(
    conn: psycopg.Connection[Any], batch_id: str, *queries: tuple[str, tuple[Any, ...]]
) -> tuple[_Head | None, list[list[tuple[Any, ...]]]]:
    """Begin a transaction, lock the batch's row and read it, then run `queries` under the lock, all in one
    round trip (the server runs a pipeline's statements in order); the row (None: no such batch) and each
    query's rows. Use inside _written."""
    with conn.pipeline():
        conn.execute("BEGIN")
        locked = conn.execute(_LOCK, (batch_id,))
        cursors = [conn.execute(sql, args) for sql, args in queries]
    row = locked.fetchone()
    return (_Head(*row) if row is not None else None), [cursor.fetchall() for cursor in cursors]


def _commit(conn: psycopg.Connection[Any], *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run a transaction's last statements and commit it, in one round trip."""
    with conn.pipeline():
        for sql, args in statements:
            conn.execute(sql, args)
        conn.commit()


def _lock(conn: psycopg.Connection[Any], batch_id: str) -> _Head | None:
    """Lock a batch's row until the transaction ends, and read it; None when there is no such batch."""
    row = conn.execute(_LOCK, (batch_id,)).fetchone()
    return _Head(*row) if row is not None else None


def _clock(conn: psycopg.Connection[Any]) -> float:
    """The database's clock, in epoch seconds."""
    row = conn.execute(f"SELECT {NOW}").fetchone()
    assert row is not None
    return float(row[0])


def _recorded(conn: psycopg.Connection[Any], batch_id: str, indexes: list[int]) -> set[int]:
    """Which of these URL indexes of a batch have a result already."""
    sql, args = _recorded_query(batch_id, indexes)
    return {row[0] for row in conn.execute(sql, args).fetchall()}


def _recorded_query(batch_id: str, indexes: list[int]) -> tuple[str, tuple[Any, ...]]:
    """The query whose rows are the URL indexes, of these, that have a result already."""
    # One probe of the (batch_id, idx) index per index, whatever the planner believes of the table's size:
    # `idx = ANY(...)` lets it scan the whole batch (O(batch) per append) while its statistics are stale.
    return (
        "SELECT i FROM unnest(%s::text::int[]) i,"
        " LATERAL (SELECT FROM events e WHERE e.batch_id = %s AND e.idx = i LIMIT 1) found",
        (_int_array(indexes), batch_id),
    )


def _int_array(values: list[int]) -> str:
    """Integers as PostgreSQL's array text: psycopg dumps a list element by element in Python, ~10 times slower."""
    return "{" + ",".join(map(str, values)) + "}"


def _next_open_chunks(
    conn: psycopg.Connection[Any], batch_id: str, urls: int
) -> list[tuple[int, list[int], str | None]]:
    """The first chunks of a batch not done, as (no, indexes, urls JSON), holding about `urls` URLs (one at least)."""
    chunks: list[tuple[int, list[int], str | None]] = []
    held = 0
    # A cursor on the server: the rows are read a few at a time, so the chunks after the slice are never read.
    with conn.cursor(name="open_chunks") as cursor:
        cursor.itersize = 4
        cursor.execute(
            "SELECT no, indexes, urls FROM chunks WHERE batch_id = %s AND state <> 'done' ORDER BY no", (batch_id,)
        )
        for no, indexes, urls_json in cursor:
            if chunks and held + len(indexes) > urls:
                break
            chunks.append((no, indexes, urls_json))
            held += len(indexes)
    return chunks


def _waited(conn: psycopg.Connection[Any], batch_id: str, indexes: list[int]) -> dict[int, dict[str, Any]]:
    """What those of `indexes` a worker noted waiting in their host's queue had done (Ledger.note_waiting)."""
    rows = conn.execute(
        "SELECT idx, history FROM waiting_urls WHERE batch_id = %s AND idx = ANY(%s::int[])", (batch_id, indexes)
    ).fetchall()
    return {index: json.loads(history) for index, history in rows}


def _urls_of(conn: psycopg.Connection[Any], batch_id: str, indexes: list[int]) -> list[str]:
    """The URLs at these indexes, from the batch's whole list (for a chunk stored without its own)."""
    row = conn.execute("SELECT urls FROM url_lists WHERE batch_id = %s", (batch_id,)).fetchone()
    every = json.loads(row[0]) if row is not None else []
    return [every[index] for index in indexes]


def _copy_events(conn: psycopg.Connection[Any], rows: Iterable[EventRow]) -> None:
    """Insert event rows (the columns rows.EVENT_COLUMNS names) with one COPY."""
    with conn.cursor().copy(_COPY_EVENTS) as copy:
        for row in rows:
            copy.write_row(row)


def _columns(row: stats.Row) -> tuple[Any, ...]:
    """A result's indexed columns from its stats Row, as event_rows has them (ok and warn as 1 or 0)."""
    ok, status_code, error_kind, total_ms, size, warn, reasons, warnings = row
    return (1 if ok else 0), status_code, error_kind, total_ms, size, (1 if warn else 0), reasons, warnings


def _tally(head: _Head) -> stats.Tally:
    """The batch's stored tally (an empty one for a row stored without)."""
    return stats.Tally.from_state(json.loads(head.tally)) if head.tally else stats.Tally()


def _exact_percentiles(conn: psycopg.Connection[Any], batch_id: str) -> list[float | None]:
    """The batch's latency percentiles by nearest rank, as stats.percentile gives them (percentile_disc is it)."""
    row = conn.execute(
        "SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY total_ms) FROM events"
        f" WHERE batch_id = %s AND idx IS NOT NULL AND {_TIMED}",
        ([p / 100 for p in stats.PERCENTILES], batch_id, sorted(stats.NO_LATENCY)),
    ).fetchone()
    values = row[0] if row is not None and row[0] is not None else [None] * len(stats.PERCENTILES)
    return [None if value is None else round(value, 2) for value in values]


def _check_cover(batch_id: str, chunks: list[list[int]], total: int) -> None:
    """Refuse chunks that do not hold each URL index exactly once: a URL left out would never run."""
    seen = bytearray(total)
    for indexes in chunks:
        for index in indexes:
            if not 0 <= index < total or seen[index]:
                raise ValueError(f"batch {batch_id}: URL index {index} is out of range or in two chunks")
            seen[index] = 1
    if seen.count(0):
        raise ValueError(f"batch {batch_id}: URL index {seen.index(0)} is in no chunk")
