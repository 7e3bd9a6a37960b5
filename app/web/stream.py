"""The event stream: websockets that show one batch, or every batch, live.

`/ws/batches/<id>?after=<seq>` sends, as JSON text messages:

- `{"type": "snapshot", "batch": <batch>}` first (the batch as the API shows it);
- `{"type": "events", "events": [<event>, ...]}`: every event with seq > after (default 0), stored ones
  first, then live ones as they are committed (a seq a viewer saw survives any crash), in seq order with
  no gap and no repeat; at most one such message per tick of
  a 50 ms clock, holding whatever arrived meanwhile (the one carrying the batch's final event goes at once);
  the final `batch` event carries the batch's counts, stats and `verdict`, as the batch JSON has them;
- `{"type": "end", "batch": <batch>}` once the batch is final and its last event was sent, then a
  normal close (1000). A viewer of a finished batch gets snapshot, replay, end, close.

`/ws/batches` sends `{"type": "snapshot", "batches": [<batch>, ...]}` (the 50 newest), then `events`
messages with every batch's `batch` and `progress` events newer than the snapshot; it never ends.

Both send `{"type": "ping"}` every GREENBATCH_WS_HEARTBEAT seconds. A viewer that falls more than
GREENBATCH_WS_QUEUE_EVENTS events behind is closed with 4000 "resync": it reconnects with
?after=<the last seq it processed> and loses nothing. An unknown batch gets
`{"type": "error", "error": {"code": "not_found", ...}}` and close 4404; an `after` that is not a
whole number >= 0 gets code "invalid_after" and close 4400.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import gevent
from flask import Blueprint, request
from gevent.event import Event as Signal

from ..core.jsonutil import compact_json
from ..core.lru import LRU
from ..core.results import FINAL_STATUSES
from ..runs.events import Event
from ..serve.websocket import WebSocketConnection, text_frame
from .errors import envelope
from .services import services
from .views import batch_json

bp = Blueprint("stream", __name__, url_prefix="/ws")

FRAME_INTERVAL = 0.05  # seconds between `events` messages on one connection (20 a second at most)
REPLAY_PAGE = 1000  # stored events read per query while replaying
LIST_SIZE = 50  # batches in the list snapshot
END_WAIT = 30.0  # seconds the `end` message waits for the final state to be committed
SHARED_FRAMES = 16  # `events` frames kept for the other viewers of the same batch (see events_frame)
HEARTBEAT = json.dumps({"type": "ping"})
_CLOSED = ("", 204)  # what a websocket view returns; the handler ignores it


class Viewer:
    """One websocket viewer: a bounded queue the bus fills, and a paced sender of `events` messages."""

    def __init__(self, connection: WebSocketConnection, limit: int, until_final: bool = False):
        self.connection = connection
        self.limit = limit
        self.until_final = until_final  # a one-batch view ends with the batch's final `batch` event
        self.queue: deque[Event] = deque()
        self.arrived = Signal()
        self.final_arrived = Signal()  # the batch's final event is queued: send without waiting for the frame
        self.overflowed = Signal()
        self.sent: dict[str, int] = {}  # batch id -> newest seq the client has (sent, or in its snapshot)
        self.final_seq: int | None = None  # for a one-batch view: the seq of the batch's final event, once known
        self._next_frame = 0.0

    def listen(self, events: list[Event]) -> None:
        """The bus listener: queue the events, or give up on this viewer when it is too far behind. Never blocks."""
        if self.overflowed.is_set():
            return
        if len(self.queue) + len(events) > self.limit:
            self.queue.clear()  # the viewer resyncs from the store; free the memory now
            self.overflowed.set()
        else:
            self.queue.extend(events)
            # A batch's final event is its last: it ends the list it comes in.
            if self.until_final and _is_final(events[-1]):
                self.final_arrived.set()
        self.arrived.set()

    @property
    def ended(self) -> bool:
        """Whether the client has every event up to the batch's final one."""
        return self.final_seq is not None and max(self.sent.values(), default=0) >= self.final_seq

    def fresh(self, events: Iterable[Event]) -> list[Event]:
        """The events the client does not have yet, in order (none past the final one), marked as sent."""
        if self.until_final:
            return self._fresh_of_one_batch(list(events))
        out = []
        sent = self.sent
        for event in events:
            batch_id, seq = event.batch_id, event.seq
            if seq <= sent.get(batch_id, 0):
                continue
            out.append(event)
            sent[batch_id] = seq
        return out

    def _fresh_of_one_batch(self, events: list[Event]) -> list[Event]:
        """fresh() for a one-batch view, whose every list (a stored page, the live queue of committed events) is
        in seq order: what it already has is a head to skip, what follows the final event a tail."""
        if not events:
            return events
        batch_id = events[0].batch_id
        sent = self.sent.get(batch_id, 0)
        start, end = 0, len(events)
        while start < end and events[start].seq <= sent:
            start += 1
        if self.final_seq is not None:
            while end > start and events[end - 1].seq > self.final_seq:
                end -= 1
        out = events[start:end]
        if out:
            self.sent[batch_id] = out[-1].seq
            if self.final_seq is None and _is_final(out[-1]):  # a batch's final event is its last
                self.final_seq = out[-1].seq
        return out

    def send(self, events: list[Event]) -> bool:
        """Send one `events` message when its turn comes; False when the connection is over (or resyncs)."""
        if not events:
            return not self.connection.closed
        if not self._wait_turn():
            return False
        self._send_now(events)
        return True

    def _send_now(self, events: list[Event]) -> None:
        """Queue one `events` message and start the next frame's wait."""
        if self.until_final:
            self.connection.send_frame(events_frame(events))
        else:
            self.connection.send_text(events_message(events))
        # Frames go out on one clock for every viewer, so the viewers of a batch send the same runs of
        # events at the same moments and share each frame.
        self._next_frame = (math.floor(time.monotonic() / FRAME_INTERVAL) + 1) * FRAME_INTERVAL

    def pump(self) -> None:
        """Send live events as they come, coalesced, until the batch ends or the connection does."""
        while not self.ended:
            if not self.queue:
                self.arrived.clear()
                gevent.wait([self.arrived, self.connection.done], count=1)
            if not self._wait_turn():
                return
            events, self.queue = self.queue, deque()
            fresh = self.fresh(events)
            if fresh:
                self._send_now(fresh)

    def _wait_turn(self) -> bool:
        """Wait until a message may go: 50 ms after the last one (the final event need not), and the sender idle.

        False once the connection is over (or resyncs).
        """
        stop = [self.connection.done, self.overflowed]
        delay = self._next_frame - time.monotonic()
        if delay > 0 and not self.final_arrived.is_set():
            gevent.wait([*stop, self.final_arrived], timeout=delay, count=1)
        while not (self.connection.writable.is_set() or self.connection.closed or self.overflowed.is_set()):
            gevent.wait([self.connection.writable, *stop], count=1)
        if self.overflowed.is_set():
            self.connection.close(4000, "resync")
        return not self.connection.closed


@bp.route("/batches/<batch_id>", websocket=True)
def batch_ws(batch_id: str):
    """One batch live: snapshot, every event after `after` (stored, then live), end and close."""
    connection = _connection()
    after = _after()
    if after is None:
        _fail(connection, 4400, "invalid_after", "after must be a whole number >= 0: the last seq you processed")
        return _CLOSED
    svc = services()
    viewer = Viewer(connection, svc.config.ws_queue_events, until_final=True)
    # Viewers get committed events only (app/runs/events.py): every event is either committed before this
    # subscription, and so in any stored read that starts after `mark`, or delivered to the viewer's queue.
    unsubscribe = svc.bus.subscribe(batch_id, viewer.listen)
    try:
        mark = svc.store.read_mark()
        # A row read a moment ago will do: the events come from the replay and the bus, both from
        # `mark` on, and a batch the engine holds shows its live state in the snapshot anyway.
        view = svc.reader.get(batch_id, recent=True)
        if view is None:
            _fail(connection, 4404, "not_found", f"no batch {batch_id!r}; it may have been deleted")
            return _CLOSED
        snapshot = batch_json(view)
        connection.send_text(compact_json({"type": "snapshot", "batch": snapshot}))
        viewer.sent[batch_id] = after
        if view.final:
            viewer.final_seq = view.last_seq  # final means committed: nothing after this seq will come
        if _replay(viewer, batch_id, after, mark):
            viewer.pump()
        if viewer.ended and not connection.closed:
            connection.send_text(compact_json({"type": "end", "batch": _final_batch(batch_id, snapshot)}))
            connection.close(1000, "batch finished")
    finally:
        unsubscribe()
    return _CLOSED


@bp.route("/batches", websocket=True)
def batches_ws():
    """Every batch live: a snapshot of the newest, then every batch's state and progress events."""
    connection = _connection()
    svc = services()
    viewer = Viewer(connection, svc.config.ws_queue_events)
    unsubscribe = svc.bus.subscribe(None, viewer.listen)
    try:
        batches = [batch_json(view, listed=True) for view in svc.reader.page(LIST_SIZE)]
        connection.send_text(compact_json({"type": "snapshot", "batches": batches}))
        for batch in batches:
            viewer.sent[batch["id"]] = batch["last_seq"]
        viewer.pump()
    finally:
        unsubscribe()
    return _CLOSED


def _is_final(event: Event) -> bool:
    """Whether an event is a batch's last: its `batch` event with a final status."""
    return event.type == "batch" and event.data.get("status") in FINAL_STATUSES


def events_message(events: list[Event]) -> str:
    """An `events` message: the events' own JSON joined, byte for byte what json.dumps of the whole would give."""
    return '{"type":"events","events":[' + ",".join([event.json for event in events]) + "]}"


_frames: LRU[tuple[str, int, int], bytes] = LRU(SHARED_FRAMES)


def events_frame(events: list[Event]) -> bytes:
    """The `events` frame for one batch's events in seq order, built once for all the viewers that send it.

    An event never changes once numbered, so a run of consecutive seqs of one batch is the same message
    for every viewer: a batch's viewers share one encoding of it, however many they are.
    """
    first, last = events[0], events[-1]
    if last.seq - first.seq + 1 != len(events):  # not consecutive: this viewer's own message
        return text_frame(events_message(events))
    key = (first.batch_id, first.seq, last.seq)
    frame = _frames.get(key)
    return frame if frame is not None else _frames.put(key, text_frame(events_message(events)))


def _replay(viewer: Viewer, batch_id: str, after: int, mark: int) -> bool:
    """Send the stored events after `after` page by page; False if the connection ended."""
    store = services().store
    cursor = after
    while not viewer.ended:
        # Stored events keep the text the store committed: replay sends it on without decoding or encoding.
        page = store.stored_events(batch_id, cursor, REPLAY_PAGE, mark)
        if not viewer.send(viewer.fresh(page)):
            return False
        if len(page) < REPLAY_PAGE:
            return True
        cursor = page[-1].seq
    return True


def _final_batch(batch_id: str, snapshot: dict[str, Any]) -> dict[str, Any]:
    """The batch as the API shows it once final (the engine shows `done` only after its last event is committed)."""
    view = services().reader.settled(batch_id, END_WAIT)
    return snapshot if view is None else batch_json(view)  # None: deleted meanwhile


def _connection() -> WebSocketConnection:
    """The upgraded connection, with our heartbeat message switched on."""
    connection = request.environ.get("wsgi.websocket")
    if not isinstance(connection, WebSocketConnection):
        raise RuntimeError(
            "websocket routes need app.serve.handler.Handler (python wsgi.py, or gunicorn "
            "-k app.worker.Worker); "
            f"the server gave {type(connection).__name__}"
        )
    connection.heartbeat_message = HEARTBEAT
    return connection


def _after() -> int | None:
    """The `after` query parameter (default 0), or None when it is not a whole number >= 0."""
    raw = request.args.get("after", "0").strip()
    return int(raw) if raw.isascii() and raw.isdigit() else None


def _fail(connection: WebSocketConnection, code: int, error: str, message: str) -> None:
    """Send an error message in the API's envelope, then close with `code`."""
    connection.send_text(compact_json({"type": "error", **envelope(error, message)}))
    connection.close(code, error)
