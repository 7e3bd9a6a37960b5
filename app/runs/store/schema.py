"""The SQLite file: its schema, how it is opened and checked, how an older one is migrated, and which of
SQLite's errors mean a damaged file or a full disk."""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import time

from ...core.jsonutil import compact_json
from .base import StoreOpenError

log = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
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
    source TEXT,  -- JSON: the sitemap or page its URLs came from (app/core/sources.py); NULL for a list
    list_id TEXT  -- the watch list this batch is a run of (lists.id); NULL for a batch submitted alone
);
-- A batch's URLs in submission order, as one JSON array: one row to write when the batch is created,
-- not one per URL, while the batch's fetches wait for it.
CREATE TABLE IF NOT EXISTS url_lists (
    batch_id TEXT PRIMARY KEY,
    urls TEXT NOT NULL
);
-- A batch's per-row specs (expect, meta, checks by URL index), as one JSON object: apart from `batches`, whose
-- options every listing reads (a million rows there made each listing parse them). Batches without any have no row.
CREATE TABLE IF NOT EXISTS row_specs (
    batch_id TEXT PRIMARY KEY,
    specs TEXT NOT NULL
);
-- Watch lists (app/runs/schedule.py): URLs run as a new batch on a schedule. Times the scheduler compares are
-- epoch seconds; next_run_at is NULL while the list is paused.
CREATE TABLE IF NOT EXISTS lists (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    urls TEXT NOT NULL,                -- JSON array, as url_lists keeps a batch's
    options TEXT NOT NULL,             -- JSON, as a batch's (without notify)
    schedule TEXT NOT NULL,            -- JSON: {"every": "6h"} or {"cron": "0 3 * * *"}
    notify TEXT NOT NULL,              -- JSON array of notify entries
    notify_on TEXT,
    consecutive_failures INTEGER,
    keep_runs INTEGER NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    next_run_at REAL,
    last_run_at REAL,
    runs INTEGER NOT NULL DEFAULT 0,   -- runs started so far: the next one's number in its name
    skipped INTEGER NOT NULL DEFAULT 0,  -- runs not started: the one before was still going, the source unreadable
    last_skipped_at REAL,
    source TEXT,                       -- JSON: a sitemap or page read again at each run (urls is then []); or NULL
    last_skipped_reason TEXT,
    row_specs TEXT,                    -- JSON: per-URL expect, meta and checks passed into each run; or NULL
    url_count INTEGER NOT NULL DEFAULT 0,  -- the length of urls: listing the lists never reads them
    running_batch TEXT,                -- the run claimed last (claim_run): runs never overlap, in any process
    running_since REAL,
    running_slot REAL                  -- the scheduled slot it runs for, until its batch is stored; NULL for a run now
);
CREATE TABLE IF NOT EXISTS events (
    batch_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    at TEXT NOT NULL,
    idx INTEGER,
    ok INTEGER,
    status_code INTEGER,
    error_kind TEXT,
    total_ms REAL,
    bytes INTEGER,
    warn INTEGER,
    reasons TEXT,
    warnings TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (batch_id, seq)
) WITHOUT ROWID;
-- The notification outbox (outbox.py); a file made before it gets the table when opened.
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL,
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
    claim_token TEXT,  -- the claim it is held under: a write by any other sender changes nothing
    UNIQUE (batch_id, target)
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (due) WHERE state = 'pending';
"""
# Columns added to `events` since its first version, with their types: migrate() adds those a file lacks.
ADDED_EVENT_COLUMNS = (("warn", "INTEGER"), ("reasons", "TEXT"), ("warnings", "TEXT"))

# The indexes of a batch's results (rows with an idx: its `result` events), each covering the reads that use
# it: the results query reads seq and these columns from the index alone, never the row, to count and to skip
# to an offset. (`WHERE type = 'result'` would name a column no index holds, and SQLite 3.40 reads the row to
# check it; nor does it read an expression's value from an expression index.) Each costs every result's insert
# a little: those keyed by a few values (ok, a status code, an error kind) append at the end of their range;
# keys in random order (latency, size) would touch a random page of a large index per result, so sorting by
# latency or size reads the outcome index and sorts instead. bench/paging.py measures both sides.
EVENT_INDEXES = {
    # One final result per URL, enforced by the database itself; index order, and the offset of a page in it.
    "results_by_index": "CREATE UNIQUE INDEX results_by_index ON events (batch_id, idx) WHERE idx IS NOT NULL",
    # ok, failed, cancelled; and the columns a sort by latency or size reads without the row.
    "results_by_outcome": "CREATE INDEX results_by_outcome ON events"
    " (batch_id, ok, idx, error_kind, status_code, total_ms, bytes) WHERE idx IS NOT NULL",
    "results_by_error": "CREATE INDEX results_by_error ON events (batch_id, error_kind, idx) WHERE idx IS NOT NULL",
    "results_by_status": "CREATE INDEX results_by_status ON events (batch_id, status_code, idx) WHERE idx IS NOT NULL",
    # The warn outcome, and the results with a reason (failed or warned by a rule): each holds only such rows, so a
    # batch that has none pays nothing per result; the reason filter reads `reasons` from the index, not the row.
    "results_warned": "CREATE INDEX results_warned ON events (batch_id, idx) WHERE warn = 1",
    "results_by_reason": "CREATE INDEX results_by_reason ON events (batch_id, idx, reasons) WHERE reasons IS NOT NULL",
    # A batch's other events (its state changes and progress reports, about one a second): its throughput's history
    # without reading its results.
    "changes_by_batch": "CREATE INDEX changes_by_batch ON events (batch_id, seq) WHERE idx IS NULL",
}


def connect(path: str) -> sqlite3.Connection:
    """Open a connection in WAL mode; NORMAL sync survives a killed process (not a power cut)."""
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def check_file(path: str) -> None:
    """Refuse what SQLite would open silently or only fail on later: a folder, an empty file, a file that
    is not SQLite's, one shorter than its header says. A missing file is fine: it is created."""
    afresh = "move it away to start afresh"
    if os.path.isdir(path):
        raise StoreOpenError(f"the database {path} is a folder, not a file; {afresh}")
    try:
        with open(path, "rb") as f:
            header = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreOpenError(
            f"the database {path} cannot be read ({exc.strerror}); check its owner and permissions"
        ) from None
    if size == 0:
        raise StoreOpenError(
            f"the database {path} is an empty file (0 bytes), which greenbatch never makes: "
            f"it was emptied or made by something else; {afresh}"
        )
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        raise StoreOpenError(
            f"the database {path} is not a SQLite database or is damaged (it does not start "
            f"with SQLite's header); {afresh}"
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The header's page count is valid only while its change counter equals "version valid for" (SQLite's format),
    # and the file may be shorter while a WAL holds pages a checkpoint could not copy yet (a full disk).
    if pages and header[24:28] == header[92:96] and size < pages * page_size and not has_journal(path):
        raise StoreOpenError(
            f"the database {path} is not a SQLite database or is damaged (truncated: {size} bytes "
            f"where its header says {pages * page_size}); {afresh}"
        )


def has_journal(path: str) -> bool:
    """Whether the database has a WAL (or rollback journal) with content, which SQLite reads with the file."""
    for suffix in ("-wal", "-journal"):
        try:
            if os.path.getsize(path + suffix) > 0:
                return True
        except OSError:
            pass
    return False


def open_error(path: str, exc: sqlite3.Error) -> StoreOpenError:
    """What to tell the operator when SQLite refuses to open or set up the database."""
    if is_damage(exc):
        return StoreOpenError(
            f"the database {path} is not a SQLite database or is damaged ({exc}); move it away to start afresh"
        )
    if is_full(exc):
        return StoreOpenError(f"the database {path} cannot be set up: the disk is full ({exc}); free some space")
    return StoreOpenError(
        f"the database {path} cannot be opened ({exc}); check that its folder is writable "
        "and its files are the server's"
    )


def is_damage(exc: BaseException) -> bool:
    """Whether SQLite said the file is corrupt or not a database (its primary code; extended codes included)."""
    return ((getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF) in DAMAGED


def is_full(exc: BaseException) -> bool:
    """Whether SQLite said the disk (or the database's size limit) is full."""
    return ((getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF) == sqlite3.SQLITE_FULL


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a database made by an earlier version up to SCHEMA: its per-URL `urls` rows become url_lists, the
    events get EVENT_INDEXES, batches a `source` and a `list_id` column, lists a `source`, their row specs, url_count
    and run claim (LIST_RUN_COLUMNS), deliveries a `claim_token`, and per-row specs kept in options move to
    row_specs."""
    _move_url_rows(conn)
    _add_columns(conn, "events", ADDED_EVENT_COLUMNS)  # NULL in rows stored before
    _index_events(conn)
    _add_columns(conn, "batches", (("source", "TEXT"),))  # NULL: their URLs were a list
    _add_list_column(conn)
    _add_columns(conn, "lists", (("source", "TEXT"), ("last_skipped_reason", "TEXT")))  # NULL: a fixed list of URLs
    _add_list_run_columns(conn)
    _add_columns(conn, "deliveries", (("claim_token", "TEXT"),))  # NULL: held by no claim
    _move_row_specs(conn)


def _move_row_specs(conn: sqlite3.Connection) -> None:
    """Move the per-row specs an earlier version kept in a batch's options (options.rows) to row_specs, one batch
    at a time, so that reading a batch's options no longer parses them."""
    found = conn.execute("SELECT id FROM batches WHERE instr(options, '\"rows\"') > 0").fetchall()
    moved = 0
    for (batch_id,) in found:  # a header's value may say "rows" too: its options are read to tell
        with conn:
            conn.execute("BEGIN")
            (text,) = conn.execute("SELECT options FROM batches WHERE id = ?", (batch_id,)).fetchone()
            options = json.loads(text)
            if not isinstance(options.get("rows"), dict):
                continue
            specs = options.pop("rows")
            conn.execute(
                "INSERT OR IGNORE INTO row_specs (batch_id, specs) VALUES (?, ?)", (batch_id, compact_json(specs))
            )
            conn.execute("UPDATE batches SET options = ? WHERE id = ?", (json.dumps(options), batch_id))
            moved += 1
    if moved:
        log.info("store: moved the per-row specs of %d batches out of their options to row_specs", moved)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """The names of a table's columns (none for a table that does not exist)."""
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _add_columns(conn: sqlite3.Connection, table: str, columns: tuple[tuple[str, str], ...]) -> None:
    """Add the (name, type) columns a table made by an earlier version lacks."""
    have = _columns(conn, table)
    for name, kind in columns:
        if name not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def _add_list_column(conn: sqlite3.Connection) -> None:
    """Give an earlier version's batches table its `list_id` column (NULL: none was a list's run), and its index."""
    _add_columns(conn, "batches", (("list_id", "TEXT"),))
    # A list's runs, newest first, without reading the other batches.
    conn.execute("CREATE INDEX IF NOT EXISTS batches_by_list ON batches (list_id, num) WHERE list_id IS NOT NULL")


LIST_RUN_COLUMNS = (
    ("row_specs", "TEXT"),
    ("url_count", "INTEGER NOT NULL DEFAULT 0"),
    ("running_batch", "TEXT"),
    ("running_since", "REAL"),
    ("running_slot", "REAL"),
)


def _add_list_run_columns(conn: sqlite3.Connection) -> None:
    """Give an earlier version's lists their row specs, url_count (counted once here) and run claim columns."""
    have = _columns(conn, "lists")
    if not have or {name for name, _ in LIST_RUN_COLUMNS} <= have:
        return
    with conn:
        conn.execute("BEGIN")
        for name, kind in LIST_RUN_COLUMNS:
            if name not in have:
                conn.execute(f"ALTER TABLE lists ADD COLUMN {name} {kind}")
        if "url_count" not in have:
            conn.execute("UPDATE lists SET url_count = json_array_length(urls)")


def _index_events(conn: sqlite3.Connection) -> None:
    """Create the EVENT_INDEXES a file lacks, and replace any made by an earlier version under another definition."""
    have = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").fetchall())
    wanted = {name: sql for name, sql in EVENT_INDEXES.items() if have.get(name) != sql}
    if not wanted:
        return
    started = time.monotonic()
    with conn:
        conn.execute("BEGIN")
        for name, sql in wanted.items():
            conn.execute(f"DROP INDEX IF EXISTS {name}")
            conn.execute(sql)
    if have:  # not a new file: say why this start took longer
        log.info("store: indexed the stored events (%s) in %.1f s", ", ".join(wanted), time.monotonic() - started)


def _move_url_rows(conn: sqlite3.Connection) -> None:
    """Move the URLs of an earlier version's per-URL `urls` table to url_lists, one batch at a time."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'urls'").fetchone() is None:
        return
    moved = 0
    with conn:
        conn.execute("BEGIN")
        rows = conn.execute("SELECT batch_id, url FROM urls ORDER BY batch_id, idx")
        # One batch's URLs at a time, in index order (the primary key's order): memory holds one list.
        for batch_id, group in itertools.groupby(rows, key=lambda row: row[0]):
            conn.execute(
                "INSERT OR IGNORE INTO url_lists (batch_id, urls) VALUES (?, ?)",
                (batch_id, compact_json([url for _, url in group])),
            )
            moved += 1
        conn.execute("DROP TABLE urls")
    log.info("store: moved the URLs of %d batches to url_lists", moved)
