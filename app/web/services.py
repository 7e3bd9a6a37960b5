"""The process's services as the Flask app holds them: built at start, found by every view."""

from __future__ import annotations

from flask import Flask, current_app

from ..core.config import Config
from ..runs.datadir import DataDirLock
from ..runs.services import Services, start

EXTENSION = "greenbatch"


def init_app(app: Flask, config: Config, lock: DataDirLock) -> Services:
    """Build the services, resume what an earlier process left unfinished, and attach them to the app."""
    # Before the server accepts anything, so resumed batches keep their place ahead of new ones.
    built = start(config, lock)
    app.extensions[EXTENSION] = built
    return built


def services() -> Services:
    """The current app's services."""
    return current_app.extensions[EXTENSION]
