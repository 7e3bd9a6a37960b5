"""Serving: gevent's WSGIServer with the websocket handler, logging, and a graceful stop on signals."""
from __future__ import annotations

import logging
import signal
import sys

import gevent
import gevent.event
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler

from .config import Config

log = logging.getLogger("greenbatch")


def configure_logging(config: Config) -> None:
    """Log to stderr at the configured level."""
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(app, config: Config) -> int:
    """Serve until SIGTERM or SIGINT, then stop accepting, let fetches finish, flush the store; exit 0."""
    server = WSGIServer((config.host, config.port), app, handler_class=WebSocketHandler,
                        log=logging.getLogger("greenbatch.access"), error_log=logging.getLogger("greenbatch.error"))
    server.start()
    host, port = server.address[:2]
    # Tests and scripts read this line to learn the port when GREENBATCH_PORT=0.
    print(f"greenbatch listening on http://{host}:{port}/", flush=True)
    stopped = gevent.event.Event()

    def stop(signum: int) -> None:
        log.info("received %s: stopping (grace %.0f s)", signal.Signals(signum).name, config.shutdown_grace)
        stopped.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop, signum)
    stopped.wait()
    server.stop(timeout=1)
    app.extensions["greenbatch"].close(config.shutdown_grace)
    log.info("stopped cleanly")
    return 0
