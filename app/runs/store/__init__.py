"""Durable storage of batches and their event log: the contract (base.py), the SQLite file (schema.py),
its rows (rows.py) and the store itself (sqlite.py: the writer, the reads, the integrity check)."""

from __future__ import annotations

from .base import BatchRecord, Store, StoreError, StoreFault, StoreOpenError
from .sqlite import SQLiteStore

__all__ = ["BatchRecord", "SQLiteStore", "Store", "StoreError", "StoreFault", "StoreOpenError"]
