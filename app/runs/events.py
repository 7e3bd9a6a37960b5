"""Events: every result and batch change, numbered per batch, written to the store and fanned out to viewers."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import gevent

from ..core.clock import now_iso
from ..core.jsonutil import compact_json
from ..core.stats import Row, row_of

if TYPE_CHECKING:
    from gevent._types import _Callback

log = logging.getLogger(__name__)

Listener = Callable[[list["Event"]], None]  # called with events of one batch, in seq order


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

    def __init__(
        self,
        batch_id: str,
        seq: int,
        type: str,
        data: dict[str, Any] | None = None,
        at: str | None = None,
        *,
        data_json: str | None = None,
        row: Row | None = None,
    ):
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
            self._data = json.loads(cast(str, self._data_json))  # __init__ insists on one of the two
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
            self._json = (
                f'{{"seq":{self.seq},"type":{_string_json(self.type)},'
                f'"batch_id":{_string_json(self.batch_id)},"at":{_string_json(self.at)},'
                f'"data":{self.data_json}}}'
            )
        return self._json

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data, the same on the API, the websocket and in the store."""
        return {"seq": self.seq, "type": self.type, "batch_id": self.batch_id, "at": self.at, "data": self.data}

    def __repr__(self) -> str:
        return f"Event({self.batch_id!r}, {self.seq}, {self.type!r})"


class EventSink(Protocol):
    """Where events are made durable (the store)."""

    def extend(self, events: list[Event]) -> None:
        """Take events of one batch, in seq order, for writing; must not block the caller."""

    def observe_commits(self, observer: Listener) -> None:
        """Call `observer` on the hub with each group of events once it is committed, in commit order."""


class EventBus:
    """Numbers each batch's events, hands them to the store and its taps, and to viewers once committed.

    Viewers (subscribe) only ever see committed events: a seq, once anyone has seen it, names that one
    event forever, even if the process is killed before its next commit (a restarted server numbers on
    from the last committed seq, so an uncommitted seq would be reused for another event).

    Listeners and the sink are called with a list: the events of one batch, in seq order. A batch's
    fetches finish many per turn of the gevent loop (most of a batch's concurrency at once), so `result` queues each
    result and the bus numbers and hands on the queue at the end of the turn, as one list: the store,
    each viewer and the metrics then take one call per turn instead of one per result. Every other
    event goes at once, after the results queued before it, so each batch's events stay in seq order.
    """

    def __init__(self, sink: EventSink):
        self._sink = sink
        self._last_seq: dict[str, int] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._global: list[Listener] = []
        self._taps: list[Listener] = []
        self._results: dict[str, list[tuple[dict[str, Any], Row | None]]] = {}  # batch id -> queued results
        self._handing_on: _Callback | None = None  # the loop callback that will hand on the queued results
        sink.observe_commits(self._committed)

    def open(self, batch_id: str, last_seq: int = 0) -> None:
        """Start numbering a batch's events after `last_seq` (0 for a new batch)."""
        self._last_seq[batch_id] = last_seq

    def close(self, batch_id: str) -> None:
        """Forget a finished batch's counter."""
        self._last_seq.pop(batch_id, None)

    def last_seq(self, batch_id: str) -> int | None:
        """The newest sequence number handed on for a live batch, or None when it is not live."""
        return self._last_seq.get(batch_id)

    def emit(self, batch_id: str, type_: str, data: dict[str, Any], row: Row | None = None) -> Event:
        """Number an event and hand it on now, after the results queued before it; never blocks."""
        self.flush()
        seq = self._last_seq[batch_id] + 1
        self._last_seq[batch_id] = seq
        event = Event(batch_id, seq, type_, data, row=row)
        self._hand_on(batch_id, [event])
        return event

    def result(self, batch_id: str, data: dict[str, Any], row: Row | None = None) -> None:
        """Queue a `result` event: numbered and handed on with the others at the end of this turn of the loop."""
        queued = self._results.get(batch_id)
        if queued is None:
            if batch_id not in self._last_seq:  # fail here, in the caller, not later inside the loop's callback
                raise KeyError(f"batch {batch_id} is not open on the event bus")
            queued = self._results[batch_id] = []
            if self._handing_on is None:
                self._handing_on = gevent.get_hub().loop.run_callback(self.flush)
        queued.append((data, row))

    def flush(self) -> None:
        """Number and hand on the queued results now (emit does it first; so must a shutdown)."""
        if self._handing_on is not None:
            self._handing_on.stop()
            self._handing_on = None
        if not self._results:
            return
        results, self._results = self._results, {}
        for batch_id, queued in results.items():
            seq = self._last_seq[batch_id]
            events = []
            for data, row in queued:
                seq += 1
                events.append(Event(batch_id, seq, "result", data, row=row))
            self._last_seq[batch_id] = seq
            self._hand_on(batch_id, events)

    def _hand_on(self, batch_id: str, events: list[Event]) -> None:
        """Give a batch's new events to the store and to the taps; viewers get them once committed."""
        self._sink.extend(events)
        deliver(self._taps, events)

    def _committed(self, events: list[Event]) -> None:
        """Store observer: hand committed events to their batch's viewers and the all-batches viewers (not results)."""
        if not (self._listeners or self._global):
            return
        by_batch: dict[str, list[Event]] = {}
        for event in events:  # one commit holds runs of several batches, each in seq order
            by_batch.setdefault(event.batch_id, []).append(event)
        for batch_id, batch_events in by_batch.items():
            listeners = self._listeners.get(batch_id)
            if listeners:
                deliver(listeners, batch_events)
            if self._global:
                changes = [event for event in batch_events if event.type != "result"]
                if changes:
                    deliver(self._global, changes)

    def tap(self, listener: Listener) -> None:
        """Call `listener` with the events of every batch as they are numbered, committed or not (metrics)."""
        self._taps.append(listener)

    def subscribe(self, batch_id: str | None, listener: Listener) -> Callable[[], None]:
        """Call `listener` with the newly committed events of a batch (or of every batch, but no results, when None)."""
        bucket = self._global if batch_id is None else self._listeners.setdefault(batch_id, [])
        bucket.append(listener)

        def unsubscribe() -> None:
            if listener in bucket:
                bucket.remove(listener)
            if batch_id is not None and not bucket:
                self._listeners.pop(batch_id, None)

        return unsubscribe


def deliver(listeners: list[Listener], events: list[Event]) -> None:
    """Hand events to each listener; a broken viewer must never stop a batch, nor the other viewers."""
    for listener in tuple(listeners):  # a listener may unsubscribe itself meanwhile
        try:
            listener(events)
        except Exception:  # noqa: BLE001 - a viewer's fault is logged, not raised into the engine or the follower
            log.exception(
                "event listener failed on batch %s seq %s-%s", events[0].batch_id, events[0].seq, events[-1].seq
            )
