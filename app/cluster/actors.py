"""The cluster worker's actor, run_chunk: `python -m app.cluster worker` or `dramatiq-gevent app.cluster.actors`.

Dramatiq's gevent worker runs each "thread" as a greenlet, so `--threads T` is how many chunks a process
runs at once; each chunk fetches at its batch's concurrency. This module builds the process's Runner when
the worker boots and stops the chunks when the worker is told to stop.
"""

from gevent import monkey

if not monkey.is_module_patched("socket"):
    # psycopg picks its wait function when imported, redis and Dramatiq their sockets and threads: patched
    # afterwards, every PostgreSQL query would block the whole process.
    raise RuntimeError(
        "app.cluster.actors needs gevent's patched standard library: start workers with `python -m app.cluster "
        "worker` or `dramatiq-gevent app.cluster.actors`, not plain `dramatiq`"
    )

# Everything below must see the patched standard library.

import logging

import dramatiq
import psycopg.waiting
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware
from dramatiq.worker import Worker

from ..core.config import Config
from ..core.options import ValidationError
from ..runs.collector import tune_gc
from .broker import ACTOR, QUEUE, dispatch, make_broker
from .ledger import Ledger
from .runner import Runner

log = logging.getLogger(__name__)

# A cooperative wait, not libpq's blocking one: what "patched before psycopg" buys (psycopg/waiting.py).
if psycopg.waiting.wait is getattr(psycopg.waiting, "wait_c", None):
    raise RuntimeError("psycopg was imported before gevent patched the standard library; see app/cluster/__main__.py")

config = Config.from_env()
WORKER_TIMEOUT_MS = 100  # longest wait of a free thread for its next chunk (see before_worker_boot)


class ChunkWorker(Middleware):
    """The worker process's own setup: its Runner, Dramatiq's worker settings, a stop that sends chunks again."""

    def __init__(self) -> None:
        self.runner: Runner | None = None

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Worker) -> None:
        """Build the Runner before the consumers start; hold one chunk beyond those running."""
        # Prefetch: one chunk waits here beyond those running (Dramatiq's default is twice the threads). A
        # thread ending its chunk (its last commit, chunk_done, the ack) takes it at once, instead of idling
        # until the consumer's next poll and the claim after it; and threads that took their chunks together
        # no longer end them together, so the others keep fetching through one's gap. Without it a worker
        # idled ~40 % of a CPU-bound batch in those gaps (bench/NOTES.md, section 15). The cost: a batch's
        # last chunk may wait here behind a running one while another worker idles, and a dead worker's
        # waiting chunk goes back on the queue after the heartbeat timeout, as its running ones do.
        worker.queue_prefetch = worker.worker_threads + 1
        # With the prefetch full, the consumer polls Redis with a backoff growing to the worker timeout (1 s by
        # default): a thread that ends its chunk would wait up to that long for the next one. A tenth of a
        # second keeps that gap small beside a chunk's run, for two cheap polls a tenth of a second when idle.
        worker.worker_timeout = WORKER_TIMEOUT_MS
        assert isinstance(broker, RedisBroker)  # make_broker's
        # A connection for each thread's claims and chunk_done, one for the writer, one for the touches.
        ledger = Ledger(config.database_url, max_connections=worker.worker_threads + 2)
        self.runner = Runner(config, ledger, broker.client, chunks_at_once=worker.worker_threads)
        tune_gc()  # as the server does: the fetch path's allocations would otherwise collect every few dozen URLs

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Worker) -> None:
        """SIGTERM: chunks running here finish their fetches in flight, commit, and are sent again for the rest."""
        if self.runner is not None:
            self.runner.stop()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Worker) -> None:
        """Commit what is left and stop the loops."""
        if self.runner is not None:
            self.runner.close()


chunk_worker = ChunkWorker()
broker = make_broker(config, [chunk_worker])
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name=ACTOR, queue_name=QUEUE, broker=broker, throws=(ValidationError,))
def run_chunk(batch_id: str, no: int) -> None:
    """Run chunk `no` of a batch; the message is acked when this returns, after its results are committed."""
    runner = chunk_worker.runner
    if runner is None:
        raise RuntimeError("run_chunk runs inside a worker (python -m app.cluster worker), which builds its runner")
    if not runner.run_chunk(batch_id, no):
        # Stopped before the end: the rest goes back on the queue now, rather than after a heartbeat timeout.
        dispatch(broker, batch_id, [no])
