"""The process's services as the Flask app holds them: built at start, found by every view."""

from __future__ import annotations

from flask import Flask, current_app

from ..core.config import Config
from ..runs.datadir import DataDirLock
from ..runs.schedule import Scheduler
from ..runs.services import Services, start

EXTENSION = "greenbatch"


def init_app(app: Flask, config: Config, lock: DataDirLock | None) -> Services:
    """Build the services (one process on SQLite, or cluster mode), resume what an earlier process left
    unfinished, and attach them to the app."""
    if config.cluster:
        # Imported only here: the default mode never imports psycopg, redis or dramatiq.
        from ..cluster.services import start as start_cluster

        built = start_cluster(config)
    else:
        # Before the server accepts anything, so resumed batches keep their place ahead of new ones.
        built = start(config, lock)
    # Every web process schedules: in cluster mode each slot is claimed by one of them (Scheduler.run_due).
    built.scheduler = Scheduler(config, built.store, built.engine)
    built.scheduler.start()
    app.extensions[EXTENSION] = built
    return built


def services() -> Services:
    """The current app's services."""
    return current_app.extensions[EXTENSION]
