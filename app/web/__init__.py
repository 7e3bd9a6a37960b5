"""The Flask app: its factory and the blueprints of the API, the pages, the stream and the probes."""

from __future__ import annotations

import os

from flask import Flask

from ..core.config import Config
from ..runs.datadir import lock_data_dir
from ..runs.openfiles import fit_open_files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def create_app(config: Config | None = None) -> Flask:
    """Build the app: settings from GREENBATCH_* (or `config`), services, error envelope, routes."""
    from . import api, auth, errors, lists, openapi, ops, pages, services, stream

    # Before the engine is built: its in-flight cap and the connection cap must fit the open-file limit.
    config = fit_open_files(config or Config.from_env())
    # First of all: nothing of the data folder (keys, sessions, the store) is touched while another server holds it.
    # In cluster mode the store is PostgreSQL and any number of web processes share the folder's key.
    lock = None if config.cluster else lock_data_dir(config.data_dir)
    app = Flask(__name__, template_folder=os.path.join(ROOT, "templates"), static_folder=os.path.join(ROOT, "static"))
    app.config.update(GREENBATCH=config, MAX_CONTENT_LENGTH=config.max_request_bytes)
    app.json.sort_keys = False
    errors.init_app(app)
    auth.init_app(app)
    built = services.init_app(app, config, lock)
    ops.init_app(app, built)
    from . import diffs  # noqa: F401 - its routes are the API blueprint's, added on import

    app.register_blueprint(api.bp)
    app.register_blueprint(lists.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(stream.bp)
    if config.proxy_hops:
        # X-Forwarded-For/-Proto/-Host/-Prefix from a trusted proxy give url_for, cookies and logs the client
        # address, https, public host and path prefix; any other peer's are dropped (GREENBATCH_TRUSTED_PROXIES).
        app.wsgi_app = auth.proxies_of(app).middleware(app.wsgi_app)  # type: ignore[method-assign]
    return app
