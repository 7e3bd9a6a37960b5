"""Live events across processes: Redis Stream entries announce committed seq ranges; PostgreSQL holds the events.

Whoever commits a batch's events (a worker's writer, a web process's submit or cancel) announces them with
`announce`: an entry `{first, last}` on `gb:events:<batch_id>`, and for `batch`/`progress` events one on
`gb:batches` too. An entry carries seqs only, never an event: a web process's Follower reads the events
themselves from PostgreSQL, so an entry lost with Redis costs delay, never an event.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

import gevent
import redis
from gevent.event import Event as Signal

from ..core.lru import LRU
from ..core.results import FINAL_STATUSES
from ..runs.events import Event, Listener

if TYPE_CHECKING:
    from redis import Redis
    from redis.typing import EncodableT, FieldT, KeyT, StreamIdT

    from ..runs.store import Store
    from .heads import Heads

log = logging.getLogger(__name__)

EVENTS_KEY = "gb:events:"  # + batch id: one entry per committed run of the batch's events
BATCHES_KEY = "gb:batches"  # one entry per committed run holding a `batch` or `progress` event, of any batch
STREAM_MAXLEN = 10_000  # entries a stream keeps (about: Redis trims whole nodes); older ones are in PostgreSQL
BLOCK_MS = 250  # longest XREAD wait: a batch a viewer starts watching is read from this soon after
READ_COUNT = 1000  # entries one XREAD takes from each stream
CHECK_INTERVAL = 1.0  # seconds between checks of where the watched batches stand in PostgreSQL
READ_PAGE = 1000  # events one read from PostgreSQL takes
CHANGE_TYPES = ("batch", "progress")  # what the every-batch feed carries
WARN_EVERY = 60.0  # seconds between two warnings that announcing fails
ENDED_KEPT = 1000  # ended batches the every-batch feed remembers, so none is followed again

_Entry = tuple[str, dict[str, str]]  # a stream entry as a decoding RESP2 client answers it: (id, fields)
_Replies = list[tuple[str, list[_Entry]]]  # XREAD's answer: (stream, entries) per stream with news


_last_warning = -WARN_EVERY  # monotonic time of the last warning that announcing failed


def events_key(batch_id: str) -> str:
    """The stream that announces a batch's committed events."""
    return EVENTS_KEY + batch_id


def announce(client: Redis, events: Iterable[Event]) -> bool:
    """Tell every web process that these events are committed (one pipeline); False when Redis is unreachable.

    `events`: committed events of one or more batches, each batch's in seq order. Never raises for Redis: the
    followers' once-a-second check in PostgreSQL delivers what an unannounced commit holds.
    """
    runs: dict[str, list[int]] = {}  # batch id -> [first, last, first change, last change] (0: none)
    for event in events:
        run = runs.get(event.batch_id)
        if run is None:
            run = runs[event.batch_id] = [event.seq, event.seq, 0, 0]
        run[1] = event.seq
        if event.type != "result":
            run[2] = run[2] or event.seq
            run[3] = event.seq
    if not runs:
        return True
    try:
        with client.pipeline(transaction=False) as pipe:
            for batch_id, (first, last, first_change, last_change) in runs.items():
                seqs: dict[FieldT, EncodableT] = {"first": first, "last": last}
                pipe.xadd(events_key(batch_id), seqs, maxlen=STREAM_MAXLEN)
                if last_change:
                    change: dict[FieldT, EncodableT] = {
                        "batch_id": batch_id,
                        "first": first_change,
                        "last": last_change,
                    }
                    pipe.xadd(BATCHES_KEY, change, maxlen=STREAM_MAXLEN)
            pipe.execute()
    except redis.RedisError as exc:
        global _last_warning
        if time.monotonic() - _last_warning >= WARN_EVERY:  # an outage fails every announce: say so, not each
            _last_warning = time.monotonic()
            log.warning(
                "could not announce events of batch %s on Redis (%s); viewers get them within a second from "
                "PostgreSQL (said once a minute while it lasts)",
                ", ".join(runs),
                exc,
            )
        return False
    return True


class Follower:
    """The event bus of a web process in cluster mode: hands its viewers every committed event, in seq order.

    A reader greenlet reads (XREAD BLOCK) the streams of the batches this process's viewers watch, and
    `gb:batches` while someone watches every batch; an entry says up to which seq a batch's events are
    committed. A keeper greenlet, the only one that hands events on, then reads them from PostgreSQL
    after the last seq handed on. Once a second the keeper also asks PostgreSQL where each watched batch
    stands, so a lost entry, a Redis restart or a deleted stream key delays an event by a second at most
    and never loses one, however long Redis takes to answer.

    As with EventBus, a listener gets the events committed after it subscribed (maybe a few before: viewers
    skip what they have), each batch's in seq order, none twice.
    """

    def __init__(self, client: Redis, store: Store, heads: Heads):
        """`client` decodes responses over RESP2 (redis.Redis.from_url(url, decode_responses=True, protocol=2))."""
        self._client = client
        self._store = store
        self._heads = heads
        self._watches: dict[str, _Watch] = {}
        self._changes = _Changes()  # the every-batch feed (no results)
        self._wanted = Signal()  # set when someone starts watching: the reader has streams to read
        self._news = Signal()  # set when an announcement raised a target: the keeper reads PostgreSQL
        self._redis_down = False
        self._store_down = False
        self._greenlets: list[gevent.Greenlet[[], None]] = []

    # -- the bus's face ------------------------------------------------------------------------

    def subscribe(self, batch_id: str | None, listener: Listener) -> Callable[[], None]:
        """Call `listener` with the newly committed events of a batch (or of every batch, but no results, when None).

        Reads where the batch stands (Redis, then PostgreSQL) before it returns, so nothing committed from
        then on is missed.
        """
        if batch_id is None:
            if not self._changes.listeners:
                self._changes.start(self._last_entry(BATCHES_KEY), self._heads)
            self._changes.listeners.append(listener)
            self._wanted.set()
            return functools.partial(_remove, self._changes.listeners, listener)
        watch = self._watches.get(batch_id)
        if watch is None:
            stream_id = self._last_entry(events_key(batch_id))  # first: entries after it announce later commits
            delivered = self._heads.last_seqs([batch_id]).get(batch_id, 0)
            watch = self._watches.get(batch_id)  # another viewer may have started it while we read
            if watch is None:
                watch = self._watches[batch_id] = _Watch(delivered, stream_id)
        watch.listeners.append(listener)
        self._wanted.set()

        def unsubscribe() -> None:
            _remove(watch.listeners, listener)
            if not watch.listeners and self._watches.get(batch_id) is watch:
                del self._watches[batch_id]

        return unsubscribe

    def tap(self, listener: Listener) -> None:
        """Never called in cluster mode: results are numbered by the workers, which count their own fetches."""

    def last_seq(self, batch_id: str) -> int | None:
        """The newest seq handed on for a batch this process's viewers watch, or None."""
        watch = self._watches.get(batch_id)
        return None if watch is None else watch.delivered

    # -- the greenlets ------------------------------------------------------------------------

    def start(self) -> None:
        """Start following: one greenlet reads Redis, one reads PostgreSQL and hands on."""
        if not self._greenlets:
            self._greenlets = [gevent.spawn(self._read), gevent.spawn(self._keep)]

    def stop(self) -> None:
        """Stop following."""
        gevent.killall(self._greenlets, block=True, timeout=2)
        self._greenlets = []

    def _read(self) -> None:
        """Read announcements while someone watches; wake the keeper when one says something new is committed."""
        while True:
            if not self._watches and not self._changes.listeners:
                self._wanted.clear()
                self._wanted.wait()
                continue
            try:
                if self._read_streams():
                    self._news.set()
            except Exception:  # noqa: BLE001 - a bug here must not end live delivery: the keeper checks anyway
                log.exception("reading the live-event streams failed; trying again in a second")
                gevent.sleep(CHECK_INTERVAL)

    def _keep(self) -> None:
        """Hand on what is new as soon as it is announced, and check PostgreSQL once a second, whatever Redis does."""
        next_check = 0.0
        while True:
            self._news.wait(max(0.0, next_check - time.monotonic()))
            self._news.clear()
            try:
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + CHECK_INTERVAL
                    self._check()
                self._catch_up()
                self._store_recovered()
            except Exception as exc:  # noqa: BLE001 - PostgreSQL away, or a bug: log it, keep following
                self._store_failed(exc)
                gevent.sleep(CHECK_INTERVAL)

    def _read_streams(self) -> bool:
        """Wait (BLOCK_MS at most) for entries on the watched streams; whether one raised a batch's target."""
        streams: dict[KeyT, StreamIdT] = {events_key(batch_id): w.stream_id for batch_id, w in self._watches.items()}
        if self._changes.listeners:
            streams[BATCHES_KEY] = self._changes.stream_id
        try:
            replies = cast(_Replies, self._client.xread(streams, count=READ_COUNT, block=BLOCK_MS))
        except redis.RedisError as exc:
            if not self._redis_down:
                log.warning("Redis is unreachable (%s): live events reach viewers once a second from PostgreSQL", exc)
                self._redis_down = True
            gevent.sleep(CHECK_INTERVAL / 2)
            return False
        if self._redis_down:
            log.info("Redis is back: live events reach viewers as they are committed")
            self._redis_down = False
        news = False
        for name, entries in replies or ():
            if not entries:
                continue
            news = True
            if name == BATCHES_KEY:
                self._changes.stream_id = entries[-1][0]
                for _, fields in entries:
                    self._changes.announced(fields["batch_id"], int(fields["first"]), int(fields["last"]))
                continue
            watch = self._watches.get(name[len(EVENTS_KEY) :])
            if watch is not None:
                watch.stream_id = entries[-1][0]
                watch.target = max(watch.target, max(int(fields["last"]) for _, fields in entries))
        return news

    def _check(self) -> None:
        """Ask PostgreSQL where the watched batches stand: what Redis failed to announce is found here."""
        if self._watches:
            for batch_id, last_seq in self._heads.last_seqs(list(self._watches)).items():
                watch = self._watches.get(batch_id)
                if watch is not None:
                    watch.target = max(watch.target, last_seq)
        if self._changes.listeners:
            self._changes.check(self._heads)

    def _catch_up(self) -> None:
        """Read from PostgreSQL, and hand on, the events after each batch's last handed-on seq up to its target."""
        for batch_id, watch in list(self._watches.items()):
            while watch.target > watch.delivered:
                page = self._store.stored_events(batch_id, watch.delivered, READ_PAGE)
                if not page:
                    break  # deleted meanwhile, or the target came from a newer snapshot than this read's
                watch.delivered = page[-1].seq
                _deliver(watch.listeners, page)
                if len(page) < READ_PAGE:
                    break
        if self._changes.listeners:
            self._changes.catch_up(self._store)

    def _last_entry(self, key: str) -> str:
        """The id of a stream's newest entry ("0-0": none, or Redis unreachable): where reading it starts."""
        try:
            newest = cast(list[_Entry], self._client.xrevrange(key, count=1))
        except redis.RedisError:
            return "0-0"
        return newest[0][0] if newest else "0-0"

    def _store_failed(self, exc: Exception) -> None:
        """Log the first failure of an outage (with its traceback), not one a second."""
        if not self._store_down:
            log.warning("live events are held up: %r; retrying every second", exc, exc_info=exc)
            self._store_down = True

    def _store_recovered(self) -> None:
        """Say once that live events flow again."""
        if self._store_down:
            log.info("live events flow again")
            self._store_down = False


class _Watch:
    """A batch this process's viewers watch: their listeners and how far its events were handed on."""

    __slots__ = ("listeners", "delivered", "target", "stream_id")

    def __init__(self, delivered: int, stream_id: str):
        self.listeners: list[Listener] = []
        self.delivered = (
            delivered  # every event up to this seq was committed before a listener subscribed, or handed on
        )
        self.target = delivered  # the newest seq known to be committed
        self.stream_id = stream_id  # the last stream entry read


class _Changes:
    """The every-batch feed: each batch's `batch` and `progress` events, for the batches list.

    Follows the batches open when the first listener came, and every batch made since; one is dropped once
    its final event is handed on.
    """

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.stream_id = "0-0"
        self.cursors: dict[str, int] = {}  # batch id -> every change event up to this seq handed on
        self.targets: dict[str, int] = {}  # batch id -> the newest seq known to be committed
        self.newest_num = 0  # batches numbered above it were made after the last check
        self.ended: LRU[str, int] = LRU(ENDED_KEPT)  # batch id -> its final seq, for batches handed on to their end

    def start(self, stream_id: str, heads: Heads) -> None:
        """Begin from now: the open batches from their newest seq, any later batch from its first."""
        self.stream_id = stream_id
        moving, self.newest_num = heads.moving(2**62, ())
        self.cursors = {head.id: head.last_seq for head in moving if not head.final}
        self.targets = dict(self.cursors)

    def announced(self, batch_id: str, first: int, last: int) -> None:
        """An entry of gb:batches: the batch's change events up to `last` are committed."""
        if self.ended.get(batch_id) is not None:
            return
        self.cursors.setdefault(batch_id, first - 1)
        self.targets[batch_id] = max(self.targets.get(batch_id, 0), last)

    def check(self, heads: Heads) -> None:
        """Where the followed, open and new batches stand; a followed batch that ended is read one last time."""
        moving, self.newest_num = heads.moving(self.newest_num, list(self.cursors))
        for head in moving:
            if self.ended.get(head.id) is not None:
                continue
            self.cursors.setdefault(head.id, 0)
            self.targets[head.id] = max(self.targets.get(head.id, 0), head.last_seq)
            if head.final and self.cursors[head.id] >= head.last_seq:
                self._forget(head.id)

    def catch_up(self, store: Store) -> None:
        """Read and hand on each batch's change events after its cursor, up to its target."""
        for batch_id, target in list(self.targets.items()):
            cursor = self.cursors.get(batch_id, 0)
            if target <= cursor:
                continue
            stored = store.events(batch_id, cursor, READ_PAGE, CHANGE_TYPES)
            page = [Event(batch_id, row["seq"], row["type"], row["data"], row["at"]) for row in stored]
            # Every change up to the target was committed before this read began: none is left behind it.
            self.cursors[batch_id] = max(target, page[-1].seq if page else 0)
            if page:
                _deliver(self.listeners, page)
                if _final(page[-1]):
                    self._forget(batch_id)

    def _forget(self, batch_id: str) -> None:
        """Stop following an ended batch."""
        self.ended.put(batch_id, self.cursors.get(batch_id, 0))
        self.cursors.pop(batch_id, None)
        self.targets.pop(batch_id, None)


def _final(event: Event) -> bool:
    """Whether an event is its batch's last (a `batch` event with a final status)."""
    return event.type == "batch" and event.data.get("status") in FINAL_STATUSES


def _remove(listeners: list[Listener], listener: Listener) -> None:
    """Drop a listener if it is still there."""
    if listener in listeners:
        listeners.remove(listener)


def _deliver(listeners: list[Listener], events: list[Event]) -> None:
    """Hand events to each listener; a broken viewer must never stop the others."""
    for listener in tuple(listeners):  # a listener may unsubscribe itself meanwhile
        try:
            listener(events)
        except Exception:  # noqa: BLE001 - a viewer's fault is logged, not raised into the follower
            log.exception(
                "event listener failed on batch %s seq %s-%s", events[0].batch_id, events[0].seq, events[-1].seq
            )
