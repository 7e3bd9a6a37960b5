"""Events: every result and batch change, numbered per batch, written to the store and fanned out to viewers."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .model import now_iso

log = logging.getLogger(__name__)

Listener = Callable[["Event"], None]


@dataclass(frozen=True)
class Event:
    """One numbered fact about a batch: `batch` (state change), `result` (one URL done) or `progress`."""

    batch_id: str
    seq: int
    type: str
    data: dict[str, Any]
    at: str = field(default_factory=now_iso)

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data, the same on the API, the websocket and in the store."""
        return {"seq": self.seq, "type": self.type, "batch_id": self.batch_id, "at": self.at, "data": self.data}


class EventSink(Protocol):
    """Where events are made durable (the store)."""

    def append(self, event: Event) -> None:
        """Take an event for writing; must not block the caller."""


class EventBus:
    """Numbers each batch's events, hands them to the store, then to live listeners, in that order."""

    def __init__(self, sink: EventSink):
        self._sink = sink
        self._last_seq: dict[str, int] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._global: list[Listener] = []
        self._taps: list[Listener] = []

    def open(self, batch_id: str, last_seq: int = 0) -> None:
        """Start numbering a batch's events after `last_seq` (0 for a new batch)."""
        self._last_seq[batch_id] = last_seq

    def close(self, batch_id: str) -> None:
        """Forget a finished batch's counter."""
        self._last_seq.pop(batch_id, None)

    def last_seq(self, batch_id: str) -> int | None:
        """The newest sequence number emitted for a live batch, or None when it is not live."""
        return self._last_seq.get(batch_id)

    def emit(self, batch_id: str, type_: str, data: dict[str, Any]) -> Event:
        """Number an event, queue it for the store and deliver it to listeners; never blocks."""
        seq = self._last_seq[batch_id] + 1
        self._last_seq[batch_id] = seq
        event = Event(batch_id, seq, type_, data)
        self._sink.append(event)
        for listener in list(self._listeners.get(batch_id, ())):
            self._deliver(listener, event)
        if type_ != "result":
            for listener in list(self._global):
                self._deliver(listener, event)
        for listener in self._taps:
            self._deliver(listener, event)
        return event

    def tap(self, listener: Listener) -> None:
        """Call `listener` with every event of every batch, for the server's lifetime (metrics)."""
        self._taps.append(listener)

    def subscribe(self, batch_id: str | None, listener: Listener) -> Callable[[], None]:
        """Call `listener` with each new event of a batch (or every batch and progress event when None)."""
        bucket = self._global if batch_id is None else self._listeners.setdefault(batch_id, [])
        bucket.append(listener)

        def unsubscribe() -> None:
            if listener in bucket:
                bucket.remove(listener)
            if batch_id is not None and not bucket:
                self._listeners.pop(batch_id, None)

        return unsubscribe

    @staticmethod
    def _deliver(listener: Listener, event: Event) -> None:
        """Hand an event to one listener; a broken viewer must never stop a batch."""
        try:
            listener(event)
        except Exception:  # noqa: BLE001 - a viewer's fault is logged, not raised into the engine
            log.exception("event listener failed on batch %s seq %s", event.batch_id, event.seq)
