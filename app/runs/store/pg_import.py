"""Moving to cluster mode: copy a single-process history (the SQLite file) into the PostgreSQL database.

Each batch is copied in one transaction (its row, its URL list, its events with their seqs), so an import
stopped midway leaves whole batches only, and running it again copies what is missing. A batch already in
PostgreSQL is left as it is: counted as present when it holds the same (row and last seq), as conflicting
when it does not. A batch the single process has not finished is not copied: cluster mode would never run
it (its workers take the chunks of batches submitted to them); finish or cancel it first.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .base import StoreOpenError
from .postgres import display_name, open_database
from .rows import EVENT_COLUMNS
from .schema import check_file

if TYPE_CHECKING:  # psycopg is imported by postgres.py
    import psycopg

log = logging.getLogger(__name__)

# The columns of a batch compared when its id is already in PostgreSQL, as both stores hold them.
COMPARED = (
    "name",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "options",
    "total",
    "parent_id",
    "summary",
    "source",
)


@dataclass
class ImportReport:
    """What an import did, batch ids in the file's order."""

    copied: list[str] = field(default_factory=list)  # new in PostgreSQL
    present: list[str] = field(default_factory=list)  # there already, the same
    conflicting: list[str] = field(default_factory=list)  # there already under the same id, not the same: untouched
    unfinished: list[str] = field(default_factory=list)  # queued or running in the file: not copied
    events: int = 0  # events copied

    def __str__(self) -> str:
        """One line for the person running the import."""
        line = (
            f"{len(self.copied)} batches copied ({self.events} events), {len(self.present)} already there, "
            f"{len(self.unfinished)} unfinished left out"
        )
        if self.conflicting:
            line += f", {len(self.conflicting)} conflicting left untouched: {', '.join(self.conflicting)}"
        return line


def import_sqlite(sqlite_path: str, database_url: str) -> ImportReport:
    """Copy every finished batch of a SQLite store into the PostgreSQL database (migrated first); idempotent.

    StoreOpenError (naming the file or the database) when either cannot be used.
    """
    source = _open_sqlite(sqlite_path)
    target = open_database(database_url)
    report = ImportReport()
    try:
        batches = source.execute(
            f"SELECT id, {', '.join(COMPARED)}, (SELECT MAX(seq) FROM events e WHERE e.batch_id = b.id)"
            " FROM batches b ORDER BY num"
        ).fetchall()
        for row in batches:
            batch_id, values, last_seq = row[0], dict(zip(COMPARED, row[1:-1])), row[-1] or 0
            if values["status"] in ("queued", "running"):
                report.unfinished.append(batch_id)
                continue
            stored = target.execute(
                f"SELECT {', '.join(COMPARED)}, last_seq FROM batches WHERE id = %s", (batch_id,)
            ).fetchone()
            if stored is not None:
                same = _comparable(dict(zip(COMPARED, stored[:-1]))) == _comparable(values) and stored[-1] == last_seq
                (report.present if same else report.conflicting).append(batch_id)
                continue
            report.events += _copy_batch(source, target, batch_id, values, last_seq)
            report.copied.append(batch_id)
    finally:
        source.close()
        target.close()
    log.info("import of %s into %s: %s", sqlite_path, display_name(database_url), report)
    return report


def _open_sqlite(path: str) -> sqlite3.Connection:
    """The SQLite store at `path`, opened read-only; StoreOpenError when it is not one this greenbatch reads."""
    if not os.path.isfile(path):
        raise StoreOpenError(f"the database {path} does not exist; give the path of greenbatch.db in the data folder")
    check_file(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"batches", "url_lists", "events"} <= tables:
        conn.close()
        raise StoreOpenError(
            f"the database {path} was made by an older greenbatch: start this greenbatch once on it in the default "
            "mode (it upgrades the file), then import it"
        )
    return conn


def _comparable(values: dict[str, Any]) -> dict[str, Any]:
    """A batch's compared columns with its JSON texts read, so the same values written apart compare equal."""
    return {**values, "options": json.loads(values["options"]), "summary": json.loads(values["summary"] or "null")}


def _copy_batch(
    source: sqlite3.Connection, target: psycopg.Connection[Any], batch_id: str, values: dict[str, Any], last_seq: int
) -> int:
    """Copy one batch (row, URL list, row specs, events) in one transaction; how many events it had."""
    urls = source.execute("SELECT urls FROM url_lists WHERE batch_id = ?", (batch_id,)).fetchone()
    has_specs = source.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'row_specs'").fetchone()
    specs = has_specs and source.execute("SELECT specs FROM row_specs WHERE batch_id = ?", (batch_id,)).fetchone()
    events = source.execute(
        f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE batch_id = ? ORDER BY seq", (batch_id,)
    )
    copied = 0
    with target.transaction():
        target.execute(
            f"INSERT INTO batches (id, {', '.join(COMPARED)}, last_seq) VALUES (%s, {', '.join(['%s'] * len(COMPARED))}, %s)",
            (batch_id, *values.values(), last_seq),
        )
        text = urls[0] if urls is not None else "[]"
        target.execute(
            "INSERT INTO url_lists (batch_id, urls) VALUES (%s, %s)",
            (batch_id, text.decode() if isinstance(text, bytes) else text),  # SQLite may hold it as a blob
        )
        if specs:
            target.execute("INSERT INTO row_specs (batch_id, specs) VALUES (%s, %s)", (batch_id, specs[0]))
        with target.cursor() as cursor, cursor.copy(f"COPY events ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
            for row in events:
                copy.write_row(row)
                copied += 1
    return copied
