"""The PostgreSQL schema of cluster mode, as numbered migrations applied in order, once, under a lock.

The tables mirror the SQLite file's (schema.py), so one set of queries reads both: `events` holds every
event of every batch, a result's row carrying the columns its filters and sorts read. Cluster mode adds
the bookkeeping the workers share: each batch's live tally and clocks (written under the batch row's lock
by whoever appends), and its chunks, the unit of work a worker takes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # psycopg is imported by cluster mode only, after gevent has patched (see postgres.py)
    import psycopg

log = logging.getLogger(__name__)

# A constant key for pg_advisory_xact_lock: one process at a time migrates ("gb" "mi" in ASCII).
MIGRATION_LOCK = 0x67626D69

# Each migration runs in its own transaction; append new ones, never edit one that has shipped.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "batches, URL lists, events with their result indexes, chunks",
        """
CREATE TABLE batches (
    num BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    options TEXT NOT NULL,
    total INTEGER NOT NULL,
    parent_id TEXT,
    summary TEXT,
    last_seq BIGINT NOT NULL DEFAULT 0,
    -- Cluster bookkeeping, changed only under this row's lock (SELECT ... FOR UPDATE):
    tally TEXT,                        -- stats.Tally state of the results recorded so far (JSON)
    started_clock DOUBLE PRECISION,    -- epoch seconds the first chunk started (for urls_per_s)
    progress_clock DOUBLE PRECISION    -- epoch seconds of the last progress event
);
CREATE INDEX batches_unfinished ON batches (num) WHERE status IN ('queued', 'running');

CREATE TABLE url_lists (
    batch_id TEXT PRIMARY KEY REFERENCES batches (id) ON DELETE CASCADE,
    urls TEXT NOT NULL                 -- the URLs in submission order, one JSON array (as in SQLite)
);

CREATE TABLE events (
    batch_id TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    at TEXT NOT NULL,
    idx INTEGER,
    ok INTEGER,                        -- 1 or 0 as in SQLite, so the results queries read both stores
    status_code INTEGER,
    error_kind TEXT,
    total_ms DOUBLE PRECISION,
    bytes BIGINT,
    data TEXT NOT NULL,
    PRIMARY KEY (batch_id, seq)
);
-- One final result per URL, enforced by the database: the backstop when a chunk runs twice.
CREATE UNIQUE INDEX results_by_index ON events (batch_id, idx) WHERE idx IS NOT NULL;
CREATE INDEX results_by_outcome ON events (batch_id, ok, idx) INCLUDE (error_kind, status_code, total_ms, bytes)
    WHERE idx IS NOT NULL;
CREATE INDEX results_by_error ON events (batch_id, error_kind, idx) WHERE idx IS NOT NULL;
CREATE INDEX results_by_status ON events (batch_id, status_code, idx) WHERE idx IS NOT NULL;
CREATE INDEX changes_by_batch ON events (batch_id, seq) WHERE idx IS NULL;

CREATE TABLE chunks (
    batch_id TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    no INTEGER NOT NULL,
    indexes INTEGER[] NOT NULL,        -- URL indexes of the batch, grouped by host
    state TEXT NOT NULL DEFAULT 'pending',  -- pending (not yet sent), sent, done
    sent_clock DOUBLE PRECISION,       -- epoch seconds of the last send
    touched_clock DOUBLE PRECISION,    -- epoch seconds a worker last said it is running it
    sends INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, no)
);
CREATE INDEX chunks_open ON chunks (state, sent_clock) WHERE state <> 'done';
""",
    ),
    (
        2,
        "each chunk's URLs beside its indexes, and when it was made; a batch being cancelled",
        """
-- A claim reads its chunk's URLs here, not by decoding the batch's whole URL list (a million at worst).
ALTER TABLE chunks ADD COLUMN urls TEXT;                    -- JSON array, the URL of each of `indexes`
ALTER TABLE chunks ADD COLUMN created_clock DOUBLE PRECISION;  -- epoch seconds (database clock) it was stored
-- True from a cancel's first transaction until its last (which makes the status cancelled): appends are refused.
ALTER TABLE batches ADD COLUMN cancelling BOOLEAN NOT NULL DEFAULT false;
""",
    ),
    (
        3,
        "json_text_at: the text at a key of a stored result, for searches",
        """
-- A result's stored text may be JSON PostgreSQL refuses to read: Python's json writes NaN (where orjson cannot encode
-- a result), and a lone surrogate as an escape, which PostgreSQL refuses anywhere in a text it reads. A search then
-- reads the first string under the key from the text itself (the stored order puts the result's own keys first).
CREATE FUNCTION json_text_at(data TEXT, key TEXT) RETURNS TEXT
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN data::json ->> key;
EXCEPTION WHEN data_exception THEN
    RETURN substring(data from '"' || key || '":"((?:[^"\\\\]|\\\\.)*)"');
END
$$;
""",
    ),
    (
        4,
        "a result's warn outcome, its reasons' rules and its warnings' kinds, with the indexes of their filters",
        """
ALTER TABLE events ADD COLUMN warn INTEGER;      -- 1 when the outcome is warn (ok is 1 too)
ALTER TABLE events ADD COLUMN reasons TEXT;      -- ' rule rule ': the rules of the result's reasons
ALTER TABLE events ADD COLUMN warnings TEXT;     -- ' kind kind ': the kinds of its warnings
-- Only results that warned, or have a reason: a batch without them pays nothing per result.
CREATE INDEX results_warned ON events (batch_id, idx) WHERE warn = 1;
CREATE INDEX results_by_reason ON events (batch_id, idx) INCLUDE (reasons) WHERE reasons IS NOT NULL;
""",
    ),
    (
        5,
        "batches.source: the sitemap or page a batch's URLs came from",
        """
ALTER TABLE batches ADD COLUMN source TEXT;  -- JSON (app/core/sources.py); NULL when the URLs were a list
""",
    ),
    (
        6,
        "row_specs: a batch's per-row specs apart from its options; each chunk's share of them",
        """
-- Apart from batches.options, which every listing reads: one JSON object {"index": {"expect", "meta", "checks"}}.
-- A batch stored before keeps them in options.rows, read there (StoreReads.row_specs).
CREATE TABLE row_specs (
    batch_id TEXT PRIMARY KEY REFERENCES batches (id) ON DELETE CASCADE,
    specs TEXT NOT NULL
);
-- A claim reads its chunk's row specs here (JSON object by URL index), not by decoding the batch's whole set.
ALTER TABLE chunks ADD COLUMN specs TEXT;
""",
    ),
    (
        7,
        "deliveries: the notification outbox, one row per notify target of a finished batch",
        """
CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
    batch_id TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    target INTEGER NOT NULL,  -- the index of its entry in the batch's options.notify (where its secret is)
    kind TEXT NOT NULL,  -- webhook or slack
    url TEXT NOT NULL,
    state TEXT NOT NULL,  -- pending, sent, failed or skipped (notify_on or consecutive_failures said no)
    attempts INTEGER NOT NULL DEFAULT 0,
    tries TEXT NOT NULL DEFAULT '[]',  -- JSON: each try's at, status_code, error, ms
    payload TEXT,  -- JSON: what every try sends, made at the first
    note TEXT,  -- why it was skipped
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    due DOUBLE PRECISION NOT NULL,  -- unix seconds when it is next tried
    claimed_until DOUBLE PRECISION,  -- a sender holds it until then
    UNIQUE (batch_id, target)
);
CREATE INDEX deliveries_pending ON deliveries (due) WHERE state = 'pending';
""",
    ),
    (
        8,
        "watch lists, and batches.list_id: the list a batch is a run of",
        """
-- As in SQLite (schema.py): times the scheduler compares are epoch seconds; next_run_at is NULL while paused.
CREATE TABLE lists (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    urls TEXT NOT NULL,
    options TEXT NOT NULL,
    schedule TEXT NOT NULL,
    notify TEXT NOT NULL,
    notify_on TEXT,
    consecutive_failures INTEGER,
    keep_runs INTEGER NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    next_run_at DOUBLE PRECISION,
    last_run_at DOUBLE PRECISION,
    runs INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    last_skipped_at DOUBLE PRECISION
);
ALTER TABLE batches ADD COLUMN list_id TEXT;  -- no foreign key: a deleted list's runs stay, as batches
CREATE INDEX batches_by_list ON batches (list_id, num) WHERE list_id IS NOT NULL;
""",
    ),
    (
        9,
        "lists.source: a watch list of a sitemap or page, read again at each run; why its last run was skipped",
        """
ALTER TABLE lists ADD COLUMN source TEXT;  -- JSON, as in SQLite (schema.py); NULL for a fixed list of URLs
ALTER TABLE lists ADD COLUMN last_skipped_reason TEXT;
""",
    ),
    (
        10,
        "lists: row specs passed into each run, url_count, and the run claim that keeps runs from overlapping",
        """
-- As in SQLite (schema.py).
ALTER TABLE lists ADD COLUMN row_specs TEXT;
ALTER TABLE lists ADD COLUMN url_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE lists ADD COLUMN running_batch TEXT;
ALTER TABLE lists ADD COLUMN running_since DOUBLE PRECISION;
ALTER TABLE lists ADD COLUMN running_slot DOUBLE PRECISION;
UPDATE lists SET url_count = json_array_length(urls::json);
""",
    ),
    (
        11,
        "deliveries.claim_token: the claim a delivery is held under (a sender whose lease ended writes nothing)",
        """
ALTER TABLE deliveries ADD COLUMN claim_token TEXT;
""",
    ),
    (
        12,
        "waiting_urls: what a cluster batch's URLs sent back to their host's queue had done, for a cancel to keep",
        """
-- A worker notes each URL it sends back to its host's queue (a refusal, a backoff) with what the URL has done;
-- a cancel records such a URL with it, as the single-process engine does. Gone once the batch ends.
CREATE TABLE waiting_urls (
    batch_id TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    history TEXT NOT NULL,  -- JSON: started_at, attempts, refused, redirects (hosts.Requeued.history)
    PRIMARY KEY (batch_id, idx)
);
""",
    ),
)

LATEST = MIGRATIONS[-1][0]


def current_version(conn: psycopg.Connection) -> int:
    """The schema version a database is at; 0 for an empty one."""
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    found = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(found[0]) if found and found[0] is not None else 0


def migrate(conn: psycopg.Connection) -> list[int]:
    """Bring the database up to LATEST, one migration per transaction; the versions applied (none if current).

    Any number of processes may start at once: each migration is applied under an advisory lock, and the
    version is read again once the lock is held. A database newer than this code is refused.
    """
    applied = []
    for version, title, sql in MIGRATIONS:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
            have = current_version(conn)
            if have > LATEST:
                raise RuntimeError(
                    f"the database is at schema version {have}, newer than this greenbatch knows ({LATEST}); "
                    "upgrade greenbatch"
                )
            if have >= version:
                continue
            log.info("database schema: applying migration %d (%s)", version, title)
            conn.execute(sql.encode())  # our own constant text, several statements
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (%s, to_char(now() AT TIME ZONE 'UTC', "
                '\'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\'))',
                (version,),
            )
            applied.append(version)
    return applied
