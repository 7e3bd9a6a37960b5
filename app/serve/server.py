"""Serving: gevent's WSGIServer with our handler (app/serve/handler.py), a connection cap, logging, and a
graceful stop on signals."""

from __future__ import annotations

import errno
import logging
import signal
import socket

import gevent
import gevent.event
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from ..core.config import Config, ConfigError, env_name
from ..runs.collector import tune_gc
from ..web import auth, ops
from . import logs
from .handler import Handler, HandlerSettings, HttpTimeouts, close_all
from .websocket import WebSocketLimits

log = logging.getLogger("greenbatch")
LISTEN_BACKLOG = 1024  # connections the kernel holds while the connection cap keeps the accept loop waiting


def configure_logging(config: Config) -> None:
    """Log to stderr in the configured format and level (app/serve/logs.py; access lines never show a `?token=`)."""
    logs.configure(config)
    logs.route_gevent_errors()


def prepare(server, app) -> None:
    """Give a pywsgi server (ours or gunicorn's) what our handler reads from it: gate, limits and timeouts."""
    config = app.config["GREENBATCH"]
    settings = server.greenbatch = HandlerSettings(
        gate=auth.websocket_gate(app),  # Origin, Host and credentials, checked before the 101
        ws_limits=WebSocketLimits.from_config(config),
        http=HttpTimeouts.from_config(config),
    )
    ops.count_websockets(app, lambda: len(settings.ws_connections))


def listen(config: Config) -> socket.socket:
    """The listening socket, bound before anything else starts; ConfigError when the address cannot be had."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"{config.host}:{config.port} is in use (another greenbatch?); use {env_name('port')}={config.port + 1}"
            ) from None
        raise ConfigError(
            f"cannot listen on {config.host}:{config.port} ({exc.strerror}); check {env_name('host')} and "
            f"{env_name('port')}"
        ) from None
    return sock


def serve(app, listener: socket.socket | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then stop accepting, let fetches finish, flush the store; exit 0. A second
    signal stops the fetches at once. `listener` is listen()'s socket (bound before the app was built).

    SIGHUP reads the API tokens again (auth.reload_tokens). The caps come from the app's config, which
    create_app fitted to the open-file limit.
    """
    config = app.config["GREENBATCH"]
    # A full pool stops the accept loop: further clients wait in the listen queue, not in our descriptors.
    server = WSGIServer(
        listener or (config.host, config.port),
        app,
        handler_class=Handler,
        spawn=Pool(config.max_connections),
        log=logging.getLogger(logs.ACCESS_LOGGER),
        error_log=logging.getLogger("greenbatch.error"),
    )
    prepare(server, app)
    tune_gc()
    server.start()
    host, port = server.address[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    # Tests and scripts read this line (on stdout, whatever the log level) to learn the port when GREENBATCH_PORT=0.
    logs.announce(config, f"greenbatch listening on {url}", url=url)
    stopped = gevent.event.Event()

    def stop(signum: int) -> None:
        name = signal.Signals(signum).name
        if stopped.is_set():
            # A second Ctrl-C: the person wants out now; what was in flight runs again on the next start.
            log.warning("received %s again: stopping now; URLs that were in flight resume on the next start", name)
            app.extensions["greenbatch"].engine.stop_now()
            return
        log.info("received %s: stopping (grace %.0f s; send it again to stop at once)", name, config.shutdown_grace)
        stopped.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop, signum)
    gevent.signal_handler(signal.SIGHUP, auth.reload_tokens, app)  # a changed GREENBATCH_TOKEN_FILE, no restart
    stopped.wait()
    close_all(server)  # viewers get 1001 and reconnect, rather than a dropped connection
    server.stop(timeout=1)
    app.extensions["greenbatch"].close(config.shutdown_grace)
    log.info("stopped cleanly")
    return 0
