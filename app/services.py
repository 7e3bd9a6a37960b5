"""The long-lived parts of one server (store, event bus, engine), built once and shared by the views."""
from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from . import guard
from .config import Config, ConfigError, env_name
from .engine import Engine
from .events import EventBus
from .store import SQLiteStore, Store, StoreError, StoreOpenError


@dataclass
class Services:
    """What a request handler may use: the store to read, the engine to act, the bus to watch."""

    config: Config
    store: Store
    bus: EventBus
    engine: Engine

    def close(self, grace: float = 5.0) -> None:
        """Let in-flight fetches finish within `grace`, then commit and close the store."""
        self.engine.shutdown(grace)
        self.store.close()


def build(config: Config) -> Services:
    """Wire the store, the bus and the engine for one server process; ConfigError when the database is unusable."""
    try:
        store = SQLiteStore(config.db_path, config.flush_interval, config.flush_rows,
                            check_every=config.integrity_check_interval)
    except StoreOpenError as exc:
        raise ConfigError(f"{exc}, or set {env_name('data_dir')}") from None
    bus = EventBus(store)
    policy = guard.Policy.from_settings(config.allow_private, config.allow_targets, config.deny_targets)
    engine = Engine(config, store, bus, policy)
    return Services(config, store, bus, engine)


def init_app(app: Flask, config: Config) -> Services:
    """Build the services, queue the batches an earlier process left unfinished, and attach them to the app."""
    built = build(config)
    app.extensions["greenbatch"] = built
    # Before the server accepts anything, so resumed batches keep their place ahead of new ones.
    try:
        built.engine.resume_unfinished()
    except StoreError as exc:  # the batches it reads are damaged, or the disk fails
        raise ConfigError(f"the database {config.db_path} is damaged or cannot be read ({exc.__cause__ or exc}); "
                          f"move it away to start afresh, or set {env_name('data_dir')}") from None
    return built


def services() -> Services:
    """The current app's services."""
    return current_app.extensions["greenbatch"]
