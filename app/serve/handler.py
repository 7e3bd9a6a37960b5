"""The pywsgi handler greenbatch serves with: HTTP timeouts and TCP_NODELAY on every connection, one access
line per request, and websocket upgrades refused before the 101 (Host, the app's gate, per-client and
server-wide caps) or handed to the app as a WebSocketConnection.
"""

from __future__ import annotations

import json
import logging
import socket
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import gevent
from gevent.pywsgi import WSGIHandler
from geventwebsocket.handler import WebSocketHandler as LibraryHandler

from ..core.config import Config
from ..web.auth.origin import split_host
from ..web.auth.proxies import client_address
from ..web.errors import Refusal, envelope
from . import logs
from .websocket import WebSocketConnection, WebSocketLimits

log = logging.getLogger(__name__)

Gate = Callable[[Mapping[str, Any]], "Refusal | None"]


def _host_problem(environ: Mapping[str, Any]) -> Refusal | None:
    """Refuse (400) an upgrade whose Host header is not a name with an optional port 1-65535."""
    host = environ.get("HTTP_HOST")
    if not host or split_host(host)[0]:
        return None
    return Refusal(
        400, "bad_request", f"the Host header {host[:200]!r} is not a host name with an optional port (1-65535)"
    )


def _upgrade_requested(environ: Mapping[str, Any]) -> bool:
    """Whether a request asks for a websocket."""
    return environ.get("REQUEST_METHOD") == "GET" and environ.get("HTTP_UPGRADE", "").lower() == "websocket"


class WebSocketHandler(LibraryHandler):
    """gevent-websocket's handler with a gate and caps before the 101, and our connection after it."""

    def run_application(self):
        """Plain HTTP goes to the app; upgrades pass the Host check, the gate and the caps first."""
        if not _upgrade_requested(self.environ):
            return WSGIHandler.run_application(self)
        settings = self._settings()
        limits = settings.ws_limits
        refusal = _host_problem(self.environ) or settings.gate(self.environ)
        client = client_address(self.environ, self.application)
        open_counts = settings.ws_open
        if refusal is None and open_counts[client] >= limits.max_per_client:
            refusal = Refusal(
                429,
                "too_many_requests",
                f"{client} already has {open_counts[client]} websockets "
                "open, the limit (GREENBATCH_WS_MAX_PER_CLIENT); close one and retry",
            )
        if refusal is None and sum(open_counts.values()) >= limits.max_open:
            refusal = Refusal(
                503,
                "service_unavailable",
                f"the server already has {limits.max_open} websockets "
                "open, its limit (GREENBATCH_WS_MAX); retry later (pages fall "
                "back to polling meanwhile)",
            )
        if refusal is not None:
            return self._refuse(refusal)
        open_counts[client] += 1
        try:
            return super().run_application()
        finally:
            open_counts[client] -= 1
            if open_counts[client] <= 0:
                del open_counts[client]

    def upgrade_connection(self):
        """Let the library answer the handshake, then hand the app our connection instead of its WebSocket."""
        refused = super().upgrade_connection()
        if getattr(self, "websocket", None) is not None:
            self.environ["wsgi.websocket"] = WebSocketConnection(
                self.websocket, self._settings().ws_limits, client_address(self.environ, self.application)
            )
        return refused

    def run_websocket(self):
        """Run the app on the upgraded connection; close it properly whatever the app did."""
        connection: WebSocketConnection = self.environ["wsgi.websocket"]
        open_connections = self._settings().ws_connections
        open_connections.add(connection)
        connection.start()
        answered: list[str] = []

        def start_response(status: str, headers: list, exc_info: Any = None):
            answered.append(status)
            return lambda data: None

        closing = (1011, "server error")
        try:
            list(self.application(self.environ, start_response))
            closing = _close_for_status(answered[0] if answered else "500")
        except gevent.GreenletExit:
            closing = (1001, "server is shutting down")  # the server stopped and killed this handler
            raise
        finally:
            connection.finish(*closing)
            open_connections.discard(connection)
            self.environ["wsgi.websocket"] = None
            self.websocket = None

    def log_request(self):
        """One access-log line per request, websockets included (logged when they end)."""
        WSGIHandler.log_request(self)

    def _settings(self) -> HandlerSettings:
        """What prepare() gave the server; a server built any other way is a mistake worth saying so."""
        settings = getattr(self.server, "greenbatch", None)
        if not isinstance(settings, HandlerSettings):
            raise RuntimeError(
                "this server has no greenbatch handler settings: serve with app.serve.server.serve() "
                "or gunicorn -k app.worker.Worker, which call app.serve.server.prepare()"
            )
        return settings

    def _refuse(self, refusal: Refusal) -> None:
        """Answer a refusal as HTTP does, in the API's JSON envelope, instead of upgrading."""
        body = json.dumps(envelope(refusal.code, refusal.message)).encode("utf-8")
        self.start_response(
            f"{refusal.status} {HTTPStatus(refusal.status).phrase}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                *refusal.headers,
                ("Connection", "close"),
            ],
        )
        self.write(body)


def close_all(server: Any, code: int = 1001, reason: str = "server is restarting", timeout: float = 2.0) -> None:
    """Close every open websocket of a server (before stopping it) and wait up to `timeout` s for them to end.

    gevent's WSGIServer does not kill its handlers on stop(); without this, viewers would see the
    process exit as a dropped connection (1006) instead of a close they can act on.
    """
    settings = getattr(server, "greenbatch", None)
    connections = list(settings.ws_connections) if isinstance(settings, HandlerSettings) else []
    for connection in connections:
        connection.close(code, reason)
    gevent.wait([connection.finished for connection in connections], timeout=timeout)


def _close_for_status(status: str) -> tuple[int, str]:
    """The close frame for a connection the app left open: 4xxx mirrors an HTTP 4xx (404 -> 4404)."""
    try:
        code = int(status.split(" ", 1)[0])
    except ValueError:
        code = 500
    if 400 <= code < 500:
        return 4000 + code, status
    if code >= 500:
        return 1011, "server error"
    return 1000, ""


@dataclass(frozen=True)
class HttpTimeouts:
    """How long a client may take to start and to send a request."""

    header: float = 10.0  # request line and headers, from the connection's start or the request's first byte
    keepalive: float = 60.0  # between the end of a response and the next request's first byte

    @classmethod
    def from_config(cls, config: Config) -> HttpTimeouts:
        """The timeouts set by GREENBATCH_HEADER_TIMEOUT and GREENBATCH_KEEPALIVE_TIMEOUT."""
        return cls(config.header_timeout, config.keepalive_timeout)


@dataclass
class HandlerSettings:
    """What the handler reads from its server, built once by app.serve.server.prepare() as `server.greenbatch`."""

    gate: Gate  # the app's access decision for upgrades (Origin, Host, credentials)
    ws_limits: WebSocketLimits
    http: HttpTimeouts
    ws_open: Counter[str] = field(default_factory=Counter)  # open websockets per client address
    ws_connections: set[WebSocketConnection] = field(default_factory=set)  # what close_all closes


def _request_timeout_response(seconds: float) -> bytes:
    """A whole 408 response in the API's error envelope, sent as the connection closes."""
    message = (
        f"the request line and headers did not arrive within {seconds:g} s (GREENBATCH_HEADER_TIMEOUT); "
        "send them at once"
    )
    body = json.dumps({"error": {"code": "request_timeout", "message": message, "details": []}}).encode("utf-8")
    head = (
        f"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class Handler(WebSocketHandler):
    """The websocket handler, with request timeouts, TCP_NODELAY and one access line per request (app/serve/logs.py)."""

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
        timeouts = self._settings().http
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
