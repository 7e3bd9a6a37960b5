"""A web process's services in cluster mode: PostgreSQL as the store, the ledger, Dramatiq's broker, the Follower
and the janitor, in place of SQLite, the engine and its bus."""

from __future__ import annotations

import logging

from ..core.config import Config, ConfigError
from ..runs.notify import Notifier
from ..runs.reader import BatchReader
from ..runs.services import Services, fetch_policy
from ..runs.store import StoreOpenError
from .patched import require_patched

log = logging.getLogger("greenbatch")


def start(config: Config) -> Services:
    """Check the process is patched, open PostgreSQL (bringing its schema up to date) and wire the cluster's
    parts; ConfigError when PostgreSQL cannot be used."""
    require_patched()
    # Only now, patched: psycopg (and redis) must never be imported before gevent has patched.
    import redis

    from ..runs.store.postgres import PostgresStore
    from .broker import make_broker
    from .control import ClusterControl
    from .heads import Heads
    from .ledger import Ledger

    policy = fetch_policy(config)
    try:
        store = PostgresStore(config.database_url, config.flush_interval, config.flush_rows)  # migrates first
    except StoreOpenError as exc:  # the message names the database (never its password) and what to check
        raise ConfigError(str(exc)) from None
    ledger = Ledger(config.database_url)
    broker = make_broker(config)
    client = redis.Redis.from_url(
        config.redis_url, decode_responses=True, protocol=2, socket_connect_timeout=1, socket_timeout=10
    )
    control = ClusterControl(config, policy, store, ledger, broker, client, Heads(config.database_url))
    control.start()
    log.info("cluster mode: batches in PostgreSQL, work and live events through Redis; workers fetch")
    # Every web process sends: each claims its deliveries (FOR UPDATE SKIP LOCKED) under a claim token and a lease
    # longer than a try; a sender that dies mid-try leaves it to be tried again (at least once, by delivery_id).
    notifier = Notifier(config, store, policy).start()
    return Services(config, store, control.follower, control, BatchReader(store, control), None, notifier)
