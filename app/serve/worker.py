"""gunicorn worker: `gunicorn -k app.worker.Worker -w 1 wsgi:app` serves greenbatch with our hardened websocket handler.

One worker per instance in the default mode: a batch lives in the process that runs it (its pool, its
live viewers, its event numbering), so a second worker would split batches and viewers between
processes (the data folder's lock stops it). In cluster mode (docs/deploy.md) batches live in
PostgreSQL and workers fetch them, so `-w N` runs N web processes (without --preload: each process
patches gevent and opens its own connections).
"""

from __future__ import annotations

import sys

import gevent
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIServer

from ..runs.collector import tune_gc
from .handler import close_all
from .server import Handler, configure_logging, log, prepare


class Server(PyWSGIServer):
    """gunicorn's pywsgi server, carrying the websocket gate, limits and metrics hook as ours does."""

    started: list[Server] = []  # this worker process's servers, for closing their websockets on quit

    def __init__(self, *args, application=None, **kwargs):
        super().__init__(*args, application=application, **kwargs)
        prepare(self, application)
        Server.started.append(self)


class Worker(GeventPyWSGIWorker):
    """gunicorn's gevent worker with greenbatch's handler, logging and graceful shutdown."""

    server_class = Server
    wsgi_handler = Handler

    def run(self) -> None:
        """Serve; on quit, close websockets with 1001 and flush the store before the process exits.

        Connections are capped by gunicorn's --worker-connections, lowered to GREENBATCH_MAX_CONNECTIONS
        (which create_app fitted to the open-file limit); the header and keep-alive timeouts are our
        handler's, as under `python wsgi.py` (gunicorn's --keep-alive does not apply to pywsgi workers).
        """
        config = self.wsgi.config["GREENBATCH"]
        configure_logging(config)
        if config.cluster and self.cfg.preload_app:
            # The app's connections and greenlets were made in the master: forked, they serve no one.
            log.error(
                "cluster mode cannot run with gunicorn --preload: drop --preload (each worker builds its own app)"
            )
            sys.exit(3)  # gunicorn's "worker failed to boot": it stops rather than start the worker again
        self.worker_connections = min(self.worker_connections, config.max_connections)
        if config.ws_max >= self.worker_connections:
            log.warning(
                "GREENBATCH_WS_MAX=%d is not below the %d connections this worker serves "
                "(--worker-connections): open websockets can lock out the API and the pages; "
                "lower GREENBATCH_WS_MAX",
                config.ws_max,
                self.worker_connections,
            )
        tune_gc()
        watcher = gevent.spawn(self._close_websockets_when_quitting)
        try:
            super().run()
        finally:
            watcher.kill()
            self.wsgi.extensions["greenbatch"].close(config.shutdown_grace)

    def _close_websockets_when_quitting(self) -> None:
        """gunicorn waits for open connections until graceful_timeout; live viewers never end on their own."""
        while self.alive:
            gevent.sleep(0.2)
        for server in Server.started:
            close_all(server)
