"""Events: every result and batch change, numbered per batch, written to the store and fanned out to viewers."""
from __future__ import annotations

import functools
import json
import logging
from typing import Any, Callable, Protocol

import orjson

from .model import now_iso
from .stats import Row, row_of

log = logging.getLogger(__name__)

Listener = Callable[["Event"], None]
_STDLIB_COMPACT = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def compact_json(value: Any) -> str:
    """Compact JSON text of events, store rows and websocket messages (orjson: ~8x the standard library).

    Non-ASCII stays raw UTF-8 and NaN becomes null. What orjson refuses (a lone surrogate in an error
    message, an integer beyond 64 bits) falls back to the standard library, so an event is never lost.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError
        return _STDLIB_COMPACT(value)


@functools.lru_cache(maxsize=1024)
def _string_json(text: str) -> str:
    """A string's JSON, cached: an event's head repeats its batch id, its type and (per millisecond) its time."""
    return compact_json(text)


class Event:
    """One numbered fact about a batch: `batch` (state change), `result` (one URL done) or `progress`.

    Its JSON is made once and shared: the store writes `data_json`, and every viewer's `events` message
    joins the same `json` text instead of encoding the event again. An event read back from the store
    carries its stored text and decodes `data` only if someone asks for it. Treat events as immutable.
    """

    __slots__ = ("batch_id", "seq", "type", "at", "_data", "_data_json", "_json", "_row")

    def __init__(self, batch_id: str, seq: int, type: str, data: dict[str, Any] | None = None,
                 at: str | None = None, *, data_json: str | None = None, row: Row | None = None):
        if data is None and data_json is None:
            raise ValueError(f"event {seq} of batch {batch_id} needs data or data_json")
        self.batch_id = batch_id
        self.seq = seq
        self.type = type
        self.at = at if at is not None else now_iso()
        self._data = data
        self._data_json = data_json
        self._json: str | None = None
        self._row = row

    @property
    def row(self) -> Row:
        """A result's fields statistics count (stats.row_of its payload); the engine hands over the one it made."""
        if self._row is None:
            self._row = row_of(self.data)
        return self._row

    @property
    def data(self) -> dict[str, Any]:
        """The event's payload (decoded from the stored text on first use)."""
        if self._data is None:
            self._data = json.loads(self._data_json)
        return self._data

    @property
    def data_json(self) -> str:
        """The payload as compact JSON, encoded on first use (the store asks first, on the hub)."""
        if self._data_json is None:
            self._data_json = compact_json(self._data)
        return self._data_json

    @property
    def json(self) -> str:
        """The whole event as compact JSON, its payload's text included as is (the same bytes as stored)."""
        if self._json is None:
            # What compact_json of the whole would give, without building and encoding a dict per event.
            self._json = (f'{{"seq":{self.seq},"type":{_string_json(self.type)},'
                          f'"batch_id":{_string_json(self.batch_id)},"at":{_string_json(self.at)},'
                          f'"data":{self.data_json}}}')
        return self._json

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data, the same on the API, the websocket and in the store."""
        return {"seq": self.seq, "type": self.type, "batch_id": self.batch_id, "at": self.at, "data": self.data}

    def __repr__(self) -> str:
        return f"Event({self.batch_id!r}, {self.seq}, {self.type!r})"


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

    def emit(self, batch_id: str, type_: str, data: dict[str, Any], row: Row | None = None) -> Event:
        """Number an event, queue it for the store and deliver it to listeners; never blocks."""
        seq = self._last_seq[batch_id] + 1
        self._last_seq[batch_id] = seq
        event = Event(batch_id, seq, type_, data, row=row)
        self._sink.append(event)
        listeners = self._listeners.get(batch_id)
        if listeners:
            self._deliver(listeners, event)
        if type_ != "result" and self._global:
            self._deliver(self._global, event)
        self._deliver(self._taps, event)
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
    def _deliver(listeners: list[Listener], event: Event) -> None:
        """Hand an event to each listener; a broken viewer must never stop a batch, nor the other viewers."""
        for listener in tuple(listeners):  # a listener may unsubscribe itself meanwhile
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a viewer's fault is logged, not raised into the engine
                log.exception("event listener failed on batch %s seq %s", event.batch_id, event.seq)
