"""greenbatch: run big batches of URL requests and watch them live."""
from __future__ import annotations

import os

from flask import Flask

from .config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def create_app(config: Config | None = None) -> Flask:
    """Build the app: settings from GREENBATCH_* (or `config`), services, error envelope, routes."""
    from . import api, errors, services

    config = config or Config.from_env()
    app = Flask(__name__, template_folder=os.path.join(ROOT, "templates"),
                static_folder=os.path.join(ROOT, "static"))
    app.config.update(GREENBATCH=config, MAX_CONTENT_LENGTH=config.max_request_bytes)
    app.json.sort_keys = False
    errors.init_app(app)
    services.init_app(app, config)
    app.register_blueprint(api.bp)
    return app
