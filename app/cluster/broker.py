"""The work queue: Dramatiq's Redis broker, set for chunks of URLs, and one message per chunk carrying only ids.

Web processes send with `dispatch`; workers (app.cluster.actors) consume. Read with Dramatiq 2.2's
dramatiq/brokers/redis.py and its dispatch.lua, dramatiq/worker.py and the middleware it names.
"""

from __future__ import annotations

from collections.abc import Iterable

from dramatiq import Message
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from dramatiq.middleware import Middleware, Retries

from ..core.config import Config

NAMESPACE = "gb:work"  # Dramatiq's keys: gb:work:chunks (the queue), gb:work:__heartbeats__, gb:work:__acks__.*
QUEUE = "chunks"
ACTOR = "run_chunk"  # app.cluster.actors.run_chunk(batch_id, no)

# A failed chunk (PostgreSQL unreachable, say) is sent again a few times soon, not for a week: Dramatiq's
# Retries default is 20 retries backing off from 15 s to 7 days. Past these, the message is dead-lettered
# and the janitor sends the chunk again from PostgreSQL (chunks left `sent` and silent).
MAX_RETRIES = 3
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 30_000
# Dead-lettered chunk messages carry nothing the chunks table does not: kept a day to look at, not 7.
DEAD_MESSAGE_TTL_MS = 86_400_000


def make_broker(config: Config, middleware: Iterable[Middleware] = ()) -> RedisBroker:
    """The Redis broker on GREENBATCH_REDIS_URL, with Dramatiq's defaults changed for chunk work (see each line)."""
    chain: list[Middleware] = [
        # Retries kept (without it a failed message would be acked as done), bounded as above.
        Retries(max_retries=MAX_RETRIES, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS),
        # No TimeLimit (default: 10 minutes, then an exception inside the actor): a chunk's length depends on
        # its options (1,000 URLs at concurrency 1 with a 300 s timeout is days), every URL already has its
        # own deadline (options.timeout), and an interrupt half-way would only strand the chunk until the
        # janitor. AgeLimit, Callbacks, Pipelines and ShutdownNotifications are unused, so left out.
        *middleware,
    ]
    return RedisBroker(  # type: ignore[no-untyped-call]  # Dramatiq's broker classes are not annotated
        url=config.redis_url,
        namespace=NAMESPACE,
        middleware=chain,
        # Seconds a worker may go without a heartbeat before its unacked chunks go back on the queue: 15 by
        # default (Dramatiq's 60 would leave a dead worker's chunks a minute).
        heartbeat_timeout=int(config.cluster_heartbeat_timeout * 1000),
        # Heartbeats: every broker command of a worker (dispatch.lua) ZADDs its id to __heartbeats__; its
        # delay-queue consumer always has room to prefetch, so it polls (and beats) every worker timeout
        # (0.1 s, app.cluster.actors) even while every thread runs a chunk. Maintenance (requeue the unacked
        # messages of workers silent past the timeout) runs inside a command on the same queue, if the
        # command draws it: by default 1 in 1,000, so a dead worker's chunks could wait minutes while the
        # others poll. Here every command runs it (two ZRANGEBYSCOREs on small sets): the first worker to
        # poll for chunks once the timeout has passed puts the dead one's chunks back, and can take one in
        # the same command.
        maintenance_chance=MAINTENANCE_SCALE,
        dead_message_ttl=DEAD_MESSAGE_TTL_MS,
    )


def chunk_message(batch_id: str, no: int) -> Message[None]:
    """The message that has a worker run chunk `no` of a batch: ids only, the rest is in PostgreSQL."""
    return Message(queue_name=QUEUE, actor_name=ACTOR, args=(batch_id, no), kwargs={}, options={})


def dispatch(broker: RedisBroker, batch_id: str, nos: Iterable[int]) -> None:
    """Put one message per chunk on the queue (the web needs no actor: the message names it)."""
    for no in nos:
        broker.enqueue(chunk_message(batch_id, no))
