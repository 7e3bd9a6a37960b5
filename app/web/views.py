"""The batch as the outside world sees it: app/runs/reader.py's view in JSON, with its links; one builder shared
by the API, the pages and the stream."""

from __future__ import annotations

from typing import Any

from flask import url_for

from ..core.clock import iso_at
from ..core.options import redacted, shown_target_url
from ..core.verdict import batch_verdict
from ..runs.reader import BatchView
from ..runs.store.outbox import Delivery


def batch_json(view: BatchView, listed: bool = False) -> dict[str, Any]:
    """A batch as the API, the pages and the websocket show it; `listed` for lists (see listed_options)."""
    return {
        "id": view.id,
        "name": view.name,
        "status": view.status,
        "created_at": view.created_at,
        "started_at": view.started_at,
        "finished_at": view.finished_at,
        "parent_id": view.parent_id,
        "list_id": view.list_id,
        "source": view.source,
        "options": listed_options(view.options) if listed else shown_options(view.options),
        "counts": view.counts,
        "stats": view.stats,
        # Null until the batch ends; then what its thresholds (or, without any, its failures) say.
        "verdict": batch_verdict(view.counts, view.stats or {}, view.options.get("thresholds")) if view.final else None,
        "last_seq": view.last_seq,
        "links": {
            "self": url_for("api.get_batch", batch_id=view.id),
            "page": url_for("pages.batch", batch_id=view.id),
            "results": url_for("api.results", batch_id=view.id),
            "events": url_for("api.events", batch_id=view.id),
            "csv": url_for("api.results", batch_id=view.id, format="csv"),
            "ndjson": url_for("api.results", batch_id=view.id, format="ndjson"),
            "json": url_for("api.results", batch_id=view.id, format="json"),
        },
    }


def shown_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options as a batch shows them: without the per-row sidecar (each result carries its own row's), notify
    secrets cut short."""
    if "rows" not in options:
        return redacted(options)
    return redacted({key: value for key, value in options.items() if key != "rows"})


def listed_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options as lists show them: header names in `header_names`, never the values (up to 16 KiB a batch)."""
    shown = {key: value for key, value in options.items() if key not in ("headers", "rows")}
    shown["header_names"] = list(options.get("headers") or {})
    return redacted(shown)


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    """A notification delivery as the API and the batch page show it: its URL without secrets, its last try."""
    last = delivery.tries[-1] if delivery.tries else {}
    return {
        "id": delivery.id,
        "batch_id": delivery.batch_id,
        "target": delivery.target,
        "type": delivery.kind,
        "url": shown_target_url(delivery.url, delivery.kind),
        "status": delivery.state,
        "attempts": delivery.attempts,
        "last_status_code": last.get("status_code"),
        "last_error": last.get("error"),
        "note": delivery.note,
        "created_at": delivery.created_at,
        "updated_at": delivery.updated_at,
        "next_try_at": iso_at(delivery.due) if delivery.state == "pending" else None,
        "tries": delivery.tries,
    }
