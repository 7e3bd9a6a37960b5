"""Live events across processes: Redis Stream entries announce committed seq ranges; PostgreSQL holds the events.

Whoever commits a batch's events (a worker's writer, a web process's submit or cancel) announces them with
`announce`: an entry `{first, last}` on `gb:events:<batch_id>`, and for `batch`/`progress` events one on
`gb:batches` too. An entry carries seqs only, never an event: a web process's Follower reads the events
themselves from PostgreSQL, so an entry lost with Redis costs delay, never an event.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import redis

from ..runs.events import Event

if TYPE_CHECKING:
    from redis import Redis
    from redis.typing import EncodableT, FieldT

log = logging.getLogger(__name__)

EVENTS_KEY = "gb:events:"  # + batch id: one entry per committed run of the batch's events
BATCHES_KEY = "gb:batches"  # one entry per committed run holding a `batch` or `progress` event, of any batch
STREAM_MAXLEN = 10_000  # entries a stream keeps (about: Redis trims whole nodes); older ones are in PostgreSQL


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
        log.warning(
            "could not announce events of batch %s on Redis (%s); viewers get them within a second from PostgreSQL",
            ", ".join(runs),
            exc,
        )
        return False
    return True
