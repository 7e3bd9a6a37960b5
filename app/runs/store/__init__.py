"""Durable storage of batches and their event log: the contract (base.py), the SQLite file (schema.py),
its rows (rows.py) and the store itself (sqlite.py: its commits, its reads, the integrity check); what both
stores share: the results query (queries.py), the buffered writer (writer.py) and the reads spelled alike and
shared among viewers (reads.py).

Cluster mode's PostgreSQL store (postgres.py, its schema pg_schema.py, and pg_import.py, which copies a SQLite
history into it) imports psycopg: import it from there, never from here, so the default mode never loads it."""

from __future__ import annotations

from .base import BatchRecord, Store, StoreError, StoreFault, StoreOpenError
from .sqlite import SQLiteStore

__all__ = ["BatchRecord", "SQLiteStore", "Store", "StoreError", "StoreFault", "StoreOpenError"]
