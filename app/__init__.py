"""greenbatch: run big batches of URL requests and watch them live.

The package is layered (README, "How it works"): app.core (pure data) <- app.fetch (one URL) <- app.runs
(batches over time) <- app.web (Flask) and app.serve (processes and sockets). Importing app itself
imports nothing, so a worker process can use core, fetch and runs without Flask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from .core.config import Config


def create_app(config: Config | None = None) -> Flask:
    """Build the Flask app (app.web's factory): settings from GREENBATCH_* (or `config`), services and routes."""
    from .web import create_app as build

    return build(config)


__all__ = ["create_app"]
