"""Events as the engine makes them, for tests of the store on its own."""

from __future__ import annotations

from app.core.stats import row_of
from app.runs.events import Event


def result_event(batch_id: str, seq: int, index: int, url_suffix: str = "") -> Event:
    """A `result` event of one ok URL (index `index`), with its stats row, as the engine hands it to the store."""
    data = {
        "index": index,
        "url": f"http://a.test/{index}{url_suffix}",
        "status_code": 200,
        "ok": True,
        "error": None,
        "bytes": 3,
        "timings": {"total": 1.5},
    }
    return Event(batch_id, seq, "result", data, row=row_of(data))
