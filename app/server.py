"""Serving: gevent's WSGIServer with the websocket handler, request timeouts, a connection cap, the
open-file limit fitted to the caps, logging, and a graceful stop on signals."""
from __future__ import annotations

import dataclasses
import gc
import json
import logging
import resource
import signal
import socket
from dataclasses import dataclass

import gevent
import gevent.event
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from . import auth, logs, ops
from .config import Config, ConfigError
from .websocket import WebSocketHandler, WebSocketLimits, close_all

log = logging.getLogger("greenbatch")
GC_THRESHOLD = 20_000  # allocations between young-generation collections (CPython's default: 700)
# Descriptors besides fetches and client connections: listener, store (database, WAL, readers),
# log files, the gevent loop, DNS lookups. An idle server holds about 20.
FD_RESERVE = 64


def configure_logging(config: Config) -> None:
    """Log to stderr in the configured format and level (app/logs.py; access lines never show a `?token=`)."""
    logs.configure(config)
    logs.route_gevent_errors()


@dataclass(frozen=True)
class HttpTimeouts:
    """How long a client may take to start and to send a request; the server carries one as `server.http_timeouts`."""

    header: float = 10.0     # request line and headers, from the connection's start or the request's first byte
    keepalive: float = 60.0  # between the end of a response and the next request's first byte

    @classmethod
    def from_config(cls, config: Config) -> "HttpTimeouts":
        """The timeouts set by GREENBATCH_HEADER_TIMEOUT and GREENBATCH_KEEPALIVE_TIMEOUT."""
        return cls(config.header_timeout, config.keepalive_timeout)


def _request_timeout_response(seconds: float) -> bytes:
    """A whole 408 response in the API's error envelope, sent as the connection closes."""
    message = (f"the request line and headers did not arrive within {seconds:g} s (GREENBATCH_HEADER_TIMEOUT); "
               "send them at once")
    body = json.dumps({"error": {"code": "request_timeout", "message": message, "details": []}}).encode("utf-8")
    head = (f"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("latin-1") + body


class Handler(WebSocketHandler):
    """The websocket handler, with request timeouts, TCP_NODELAY and one access line per request (app/logs.py)."""

    kept_alive = False  # whether this connection has answered a request already
    _header_timer: gevent.Timeout | None = None

    def handle(self):
        """Serve one connection; responses leave in several writes, so each is sent at once (TCP_NODELAY).

        With Nagle's algorithm a response's last write waits for the ACK of its first, which a client
        on a kept-alive connection delays by up to 40 ms.
        """
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (gunicorn can listen on a Unix socket)
            pass
        super().handle()

    def handle_one_request(self):
        """Wait for a request, read its line and headers in time, then answer it; None closes the connection.

        A new connection has GREENBATCH_HEADER_TIMEOUT from its start for its first request's line and
        headers; a kept-alive one may wait GREENBATCH_KEEPALIVE_TIMEOUT for its next request, which then has
        GREENBATCH_HEADER_TIMEOUT from its first byte. A client silent until then is disconnected; one caught
        mid-request gets 408 first. The application's own time is not limited here.
        """
        timeouts: HttpTimeouts = getattr(self.server, "http_timeouts", None) or HttpTimeouts()
        self.command = self.path = self.environ = None  # a timed-out request's access line must not show the last one
        timer = gevent.Timeout.start_new(timeouts.keepalive if self.kept_alive else timeouts.header)
        begun = False
        try:
            if not self._request_begins():
                return None
            begun = True
            if self.kept_alive:
                timer.close()
                timer = gevent.Timeout.start_new(timeouts.header)
            self._header_timer = timer
            result = super().handle_one_request()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            if not begun:
                return None
            response = _request_timeout_response(timeouts.header)
            self.response_length = len(response)
            return "408", response
        finally:
            timer.close()
        self.kept_alive = True
        return result

    def read_request(self, raw_requestline):
        """Parse the request line and headers, then stop the header timer: the app's time is not the client's."""
        try:
            return super().read_request(raw_requestline)
        finally:
            if self._header_timer is not None:
                self._header_timer.close()

    def _request_begins(self) -> bool:
        """Wait for the next request's first byte (a pipelined one is there already); False if the peer closed."""
        if self.rfile.closed:
            return False
        try:
            return bool(self.rfile.peek(1))
        except OSError:
            return False

    def log_request(self):
        """Method, path (tokens hidden), status, bytes, time and client, as text or JSON."""
        logs.log_access(self)


def tune_gc() -> None:
    """Freeze what start-up built and collect young objects less often; call once the app is built.

    Every URL allocates a few dozen container objects (result, timings, event, greenlet, response), so
    at CPython's default threshold a 5,000-URL batch triggered ~150 collections, ~10 % of the server's
    CPU (bench/NOTES.md). Start-up objects (~47,000: Flask, Jinja, gevent) are frozen and never
    traversed again. Reference counting still frees everything that is not in a cycle at once.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


def fit_open_files(config: Config) -> Config:
    """The config, with caps the open-file limit can hold: raise the soft limit when the hard one allows it,
    else lower GREENBATCH_MAX_INFLIGHT, _MAX_CONNECTIONS and _WS_MAX to fit, and say so in the log.

    Every fetch in flight and every client connection holds a descriptor; past the limit, fetches fail
    with "Too many open files" and the server stops accepting.
    """
    needed = config.max_inflight + config.max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return config
    limit = _raise_open_files(needed, hard)
    if limit >= needed:
        log.info("raised the open-file limit from %d to %d: GREENBATCH_MAX_INFLIGHT=%d and "
                 "GREENBATCH_MAX_CONNECTIONS=%d need about %d", soft, limit, config.max_inflight,
                 config.max_connections, needed)
        return config
    room = limit - FD_RESERVE
    if room < 3:
        raise ConfigError(f"the open-file limit is {limit}: greenbatch needs at least {FD_RESERVE + 3} "
                          f"(raise it with `ulimit -n` or LimitNOFILE= in the systemd unit)")
    total = config.max_inflight + config.max_connections
    inflight = max(1, min(room - 2, room * config.max_inflight // total))
    connections = room - inflight
    ws_max = max(1, min(config.ws_max, connections * config.ws_max // config.max_connections, connections - 1))
    fitted = dataclasses.replace(config, max_inflight=inflight, max_connections=connections, ws_max=ws_max)
    log.warning("the open-file limit is %d, below the %d that GREENBATCH_MAX_INFLIGHT=%d and "
                "GREENBATCH_MAX_CONNECTIONS=%d need; running with GREENBATCH_MAX_INFLIGHT=%d, "
                "GREENBATCH_MAX_CONNECTIONS=%d and GREENBATCH_WS_MAX=%d instead. Raise the limit (`ulimit -n %d`, "
                "or LimitNOFILE=%d in the systemd unit) or set those caps lower yourself",
                limit, needed, config.max_inflight, config.max_connections, inflight, connections, ws_max,
                needed, needed)
    return fitted


def _raise_open_files(wanted: int, hard: int) -> int:
    """Raise the soft open-file limit to the hard one, or to `wanted` if the kernel refuses that; the limit now."""
    tries = (wanted,) if hard == resource.RLIM_INFINITY else (hard, min(wanted, hard))
    for soft in tries:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            return soft
        except (ValueError, OSError):  # above the kernel's nr_open
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def prepare(server, app) -> None:
    """Give a pywsgi server (ours or gunicorn's) what our handler reads from it: gate, limits and timeouts."""
    server.http_timeouts = HttpTimeouts.from_config(app.config["GREENBATCH"])
    server.ws_gate = auth.websocket_gate(app)  # Origin, Host and credentials, checked before the 101
    server.ws_limits = WebSocketLimits.from_config(app.config["GREENBATCH"])
    # The handler keeps the upgraded websockets on the server (server.ws_connections); /metrics counts them.
    ops.count_websockets(app, lambda: len(getattr(server, "ws_connections", ())))


def serve(app, config: Config) -> int:
    """Serve until SIGTERM or SIGINT, then stop accepting, let fetches finish, flush the store; exit 0.

    SIGHUP reads the API tokens again (auth.reload_tokens). The caps come from the app's config, which
    create_app fitted to the open-file limit.
    """
    config = app.config["GREENBATCH"]
    # A full pool stops the accept loop: further clients wait in the listen queue, not in our descriptors.
    server = WSGIServer((config.host, config.port), app, handler_class=Handler, spawn=Pool(config.max_connections),
                        log=logging.getLogger(logs.ACCESS_LOGGER), error_log=logging.getLogger("greenbatch.error"))
    prepare(server, app)
    tune_gc()
    server.start()
    host, port = server.address[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    # Tests and scripts read this line (on stdout, whatever the log level) to learn the port when GREENBATCH_PORT=0.
    logs.announce(config, f"greenbatch listening on {url}", url=url)
    stopped = gevent.event.Event()

    def stop(signum: int) -> None:
        log.info("received %s: stopping (grace %.0f s)", signal.Signals(signum).name, config.shutdown_grace)
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
