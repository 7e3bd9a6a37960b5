"""What the web asks of batches in cluster mode: submit and cancel go through PostgreSQL, the work through Dramatiq.

The web process runs no fetch: a submit stores the batch and its chunks in one transaction, then sends one
message per chunk; a cancel records the end in PostgreSQL and tells the workers through Redis. What
`Engine` knows ahead of its store (live counts, in-flight URLs) lives in the workers here: the store's
row is the batch as it stands.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import gevent
import psycopg
import redis

from ..core.clock import now_iso
from ..core.config import Config
from ..core.options import BatchOptions
from ..core.results import FINAL_STATUSES
from ..fetch import guard
from ..runs.engine import InFlight, LiveState
from ..runs.hosts import Counters, HostLive
from ..runs.store import Store, StoreError
from .broker import dispatch
from .heads import Heads
from .janitor import Janitor
from .ledger import Ledger, plan_chunks
from .runner import cancel_key
from .streams import Follower, announce

if TYPE_CHECKING:
    from dramatiq.brokers.redis import RedisBroker
    from redis import Redis

log = logging.getLogger(__name__)

CANCEL_KEY_TTL = 24 * 3600  # seconds the key stays: past any chunk still running then
# Seconds (at least) a sent chunk with no sign of life waits before the janitor sends it again. A dead
# worker's chunks are Dramatiq's to requeue (after the heartbeat timeout) and a Redis that lost its keys
# is the janitor's epoch check: this catches the rest (a message dead-lettered after its retries). Longer
# than a chunk may sit in the queue behind others, where sending it again would only queue a copy.
SILENT_MIN = 300.0


class ClusterControl:
    """The Engine's part for the web in cluster mode (app.runs.control.BatchControl): submit, cancel, report."""

    def __init__(
        self,
        config: Config,
        policy: guard.Policy,
        store: Store,
        ledger: Ledger,
        broker: RedisBroker,
        client: Redis,
        heads: Heads,
    ):
        self.config = config
        self.policy = policy
        self.store = store
        self.ledger = ledger
        self.broker = broker  # app.cluster.broker.make_broker's
        self.client = client  # decoding responses over RESP2, as the Follower reads them
        self.heads = heads
        self.counters = Counters()  # stays at zero: the workers fetch, and pause their hosts
        self.follower = Follower(client, store, heads)  # the web's event bus
        silent_after = max(SILENT_MIN, 4 * config.cluster_heartbeat_timeout)
        self.janitor = Janitor(config.database_url, ledger, client, self.send, self.cancel, silent_after)

    def start(self) -> None:
        """Start following live events, and sweeping when this process becomes the janitor."""
        self.follower.start()
        self.janitor.start()

    def submit(
        self,
        urls: Sequence[str],
        options: BatchOptions,
        name: str = "",
        parent_id: str | None = None,
        source: dict[str, Any] | None = None,
        list_id: str | None = None,
        batch_id: str | None = None,
    ) -> str:
        """Store a new batch and its chunks in one transaction, announce it, send its chunks; its id.

        Once stored the batch is safe: chunks a failed send (Redis away, the process killed) leaves
        unsent are sent by the janitor (app/cluster/janitor.py).
        """
        batch_id = batch_id or secrets.token_hex(6)  # a watch list's run claims its id first
        created = now_iso()
        name = name or f"{len(urls)} URL{'s' if len(urls) != 1 else ''}"
        config = self.config
        # Grouping a million URLs by host is seconds of CPU: on the hub's thread pool, so that this process
        # keeps serving its viewers meanwhile (the interpreter hands the hub a turn every few ms).
        chunks = gevent.get_hub().threadpool.apply(
            plan_chunks, (urls, config.cluster_slots, config.cluster_chunk_min, config.cluster_chunk_max)
        )
        with _database():
            events = self.ledger.create_batch(
                batch_id,
                name,
                options.to_dict(),
                urls,
                created,
                parent_id,
                chunks,
                source=source,
                row_specs=options.row_specs(),
                list_id=list_id,
            )
        announce(self.client, events)
        self.send(batch_id, list(range(len(chunks))))
        log.info(
            "batch %s queued: %d URLs in %d chunks, concurrency %d a chunk",
            batch_id,
            len(urls),
            len(chunks),
            options.concurrency,
            extra={"batch_id": batch_id, "status": "queued", "urls": len(urls)},
        )
        return batch_id

    def send(self, batch_id: str, nos: list[int]) -> bool:
        """Send chunks to the workers, then record them sent; False (and left for the janitor) when Redis fails."""
        try:
            dispatch(self.broker, batch_id, nos)
        except redis.RedisError as exc:
            log.warning(
                "batch %s: %d chunks not sent (%s); the janitor sends them once Redis answers",
                batch_id,
                len(nos),
                exc,
                extra={"batch_id": batch_id},
            )
            return False
        try:
            self.ledger.mark_sent(batch_id, nos)
        except psycopg.Error as exc:
            # Sent but not marked: the janitor sends them once more, and a chunk's second run finds it done.
            log.warning("batch %s: %d chunks sent but not marked sent (%s)", batch_id, len(nos), exc)
        return True

    def cancel(self, batch_id: str) -> bool:
        """Cancel a queued or running batch: its end is committed now, the workers stop within a second; False
        when it has ended already (or is gone)."""
        with _database():
            events = self.ledger.cancel(batch_id)
        if events is None:
            return False
        try:
            self.client.set(cancel_key(batch_id), "1", ex=CANCEL_KEY_TTL)
        except redis.RedisError as exc:
            # The ledger refuses the batch's results from now on, so the workers' fetches only waste time.
            log.warning(
                "batch %s is cancelled, but Redis could not tell the workers (%s): they finish the chunks they hold",
                batch_id,
                exc,
                extra={"batch_id": batch_id},
            )
        announce(self.client, events)
        log.info("batch %s cancelled", batch_id, extra={"batch_id": batch_id, "status": "cancelled"})
        return True

    def live(self, batch_id: str) -> LiveState | None:
        """None: the stored row (with its tally) is the batch as it stands."""
        return None

    def is_live(self, batch_id: str) -> bool:
        """Whether the batch is queued or running (delete waits for its end)."""
        record = self.store.get_batch(batch_id)
        return record is not None and record.status not in FINAL_STATUSES

    def running_urls(self, batch_id: str, limit: int = 0) -> tuple[list[InFlight], int]:
        """None listed: the URLs in flight are the workers'."""
        return [], 0

    def hosts_live(self, batch_id: str) -> dict[str, HostLive]:
        """None: what is in flight and which host is paused is the workers' (the hosts table reads stored results)."""
        return {}

    def inflight(self) -> int:
        """0: a web process fetches nothing."""
        return 0

    def wait_released(self, batch_id: str, timeout: float) -> None:
        """At once: a batch's final state is committed with its final event."""

    def resume_unfinished(self) -> int:
        """0: the janitor sends the chunks of unfinished batches again."""
        return 0

    def stop_now(self) -> None:
        """Nothing runs here to stop."""

    def shutdown(self, grace: float = 5.0) -> None:
        """Stop the janitor and the follower, and close the connections (the store is closed after)."""
        self.janitor.stop()
        self.follower.stop()
        self.heads.close()
        self.ledger.close()
        self.broker.close()
        self.client.close()


@contextmanager
def _database() -> Iterator[None]:
    """PostgreSQL's refusals as StoreError, which the API answers with 503 store_unavailable, never a 500."""
    try:
        yield
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL did not take it ({type(exc).__name__}: {exc})") from exc
