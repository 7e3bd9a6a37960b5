"""The batch as the outside world sees it: one builder shared by the API, the pages and the stream."""

from __future__ import annotations

from typing import Any

from flask import url_for

from ..core import stats
from ..runs.store import BatchRecord
from .services import services


def batch_json(record: BatchRecord, listed: bool = False) -> dict[str, Any]:
    """A batch as the API, the pages and the websocket show it; `listed` for lists (see listed_options)."""
    # A batch the engine holds is ahead of the store by up to one flush: take its live view.
    live = services().engine.live(record.id)
    status, started_at, last_seq, finished_at = record.status, record.started_at, record.last_seq, record.finished_at
    if live is not None:
        status, last_seq = live["status"], live["last_seq"]
        started_at, finished_at = live["started_at"] or started_at, live["finished_at"] or finished_at
        counts, batch_stats = live["counts"], live["stats"]
    elif record.summary is not None:
        counts, batch_stats = record.summary["counts"], record.summary["stats"]
    else:  # not final and not live: left by a stopped process, waiting to resume
        rows = list(services().store.result_rows(record.id).values())
        counts = stats.counts(record.total, rows)
        batch_stats = stats.summarize(rows)
    return {
        "id": record.id,
        "name": record.name,
        "status": status,
        "created_at": record.created_at,
        "started_at": started_at,
        "finished_at": finished_at,
        "parent_id": record.parent_id,
        "options": listed_options(record.options) if listed else record.options,
        "counts": counts,
        "stats": batch_stats,
        "last_seq": last_seq,
        "links": {
            "self": url_for("api.get_batch", batch_id=record.id),
            "results": url_for("api.results", batch_id=record.id),
            "events": url_for("api.events", batch_id=record.id),
            "csv": url_for("api.results", batch_id=record.id, format="csv"),
            "ndjson": url_for("api.results", batch_id=record.id, format="ndjson"),
        },
    }


def listed_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options as lists show them: header names in `header_names`, never the values (up to 16 KiB a batch)."""
    shown = {key: value for key, value in options.items() if key != "headers"}
    shown["header_names"] = list(options.get("headers") or {})
    return shown
