"""The long-lived parts of one process (store, event bus, engine), built once from the config; no Flask here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.config import Config, ConfigError, env_name
from ..fetch import guard
from .control import BatchControl, EventFeed
from .datadir import DataDirLock, lock_data_dir
from .engine import Engine
from .events import EventBus
from .notify import Notifier
from .reader import BatchReader
from .store import SQLiteStore, Store, StoreError, StoreOpenError

if TYPE_CHECKING:
    from .schedule import Scheduler

log = logging.getLogger("greenbatch")


@dataclass
class Services:
    """What a request handler may use: the reader to see a batch, the store to read results, the engine to act,
    the bus to watch."""

    config: Config
    store: Store
    bus: EventFeed
    engine: BatchControl
    reader: BatchReader
    lock: DataDirLock | None  # held until the process exits, not released by close(); none in cluster mode
    notifier: Notifier | None = None  # sends the outbox's notifications once started
    scheduler: Scheduler | None = None  # the watch lists' (a server's; none where nothing serves the API)

    def close(self, grace: float = 5.0) -> None:
        """Stop scheduling, let in-flight fetches finish within `grace` (the engine's), then commit and close the
        store."""
        if self.scheduler is not None:
            self.scheduler.stop()
        self.engine.shutdown(grace)
        if self.notifier is not None:
            self.notifier.stop()
        self.store.close()


def fetch_policy(config: Config) -> guard.Policy:
    """The fetch policy the settings give, logged; ConfigError naming the variable and the entry at fault."""
    try:
        policy = guard.Policy.from_settings(config.allow_private, config.allow_targets, config.deny_targets)
    except ValueError as exc:  # the message names the variable and the entry
        raise ConfigError(str(exc)) from None
    # What a newcomer checking a local server needs to see first: whether 127.0.0.1:8081 will be fetched.
    log.info("fetch policy: %s", policy.describe())
    return policy


def build(config: Config, lock: DataDirLock | None = None) -> Services:
    """Wire the store, the bus and the engine for one process; ConfigError when a setting is unusable, the
    folder is taken or the database is unusable."""
    policy = fetch_policy(config)
    if lock is None:
        lock = lock_data_dir(config.data_dir)  # before the store opens: another server may be writing to it
    try:
        store = SQLiteStore(
            config.db_path, config.flush_interval, config.flush_rows, check_every=config.integrity_check_interval
        )
    except StoreOpenError as exc:
        raise ConfigError(f"{exc}, or set {env_name('data_dir')}") from None
    bus = EventBus(store)
    engine = Engine(config, store, bus, policy)
    return Services(config, store, bus, engine, BatchReader(store, engine), lock, Notifier(config, store, policy))


def start(config: Config, lock: DataDirLock | None = None) -> Services:
    """Build the services and queue the batches an earlier process left unfinished; ConfigError when unusable."""
    built = build(config, lock)
    try:
        built.engine.resume_unfinished()
    except StoreError as exc:  # the batches it reads are damaged, or the disk fails
        raise ConfigError(
            f"the database {config.db_path} is damaged or cannot be read ({exc.__cause__ or exc}); "
            f"move it away to start afresh, or set {env_name('data_dir')}"
        ) from None
    if built.notifier is not None:
        # This process alone sends (it holds the data folder): a killed one's claims are let go, and what it left
        # pending goes out now.
        built.store.release_deliveries()
        built.notifier.start()
    return built
