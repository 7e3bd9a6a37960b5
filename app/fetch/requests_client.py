"""The requests client: one hop over requests/urllib3, implementing app/fetch/base.py's Transport.

It connects only to addresses the guard has resolved and checked (the Host
header, TLS SNI and certificate check stay on the URL's name), measures dns, connect and tls
on each new connection, and notes the phases completed so far on a deadline that cuts the hop short.
"""

from __future__ import annotations

import errno
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from . import guard, tls
from .base import DECODE_CHUNK, USER_AGENT, AddrInfo, Hop, Resolver, body_cap, captured, hop_timings, ms
from .errors import (
    REUSED,
    DeadlineExceeded,
    FetchError,
    body_read_timeout,
    broken_body,
    is_reset,
    reset_before_response,
    too_large,
    undecodable,
    unresolved,
)

# Timings of the connection opened by the current greenlet's request (greenlet-local once patched),
# filled as each phase completes. A response with no body hands its connection back before we could
# ask it, so it reports here; None while the request has opened no connection (it reuses one).
_fresh = threading.local()

# The mixin goes before urllib3's HTTPConnection in a class's bases and uses its host, port, timeout, ...
if TYPE_CHECKING:
    _ConnectionBase = HTTPConnection
else:
    _ConnectionBase = object


class _PinnedConnectionMixin(_ConnectionBase):
    """Resolve through the guard once, connect to a checked address, and time dns and connect."""

    resolver: Resolver  # set per transport by _pool_classes: the guard's resolver

    def _new_conn(self) -> socket.socket:
        started = time.perf_counter()
        timings: dict[str, float | None] = {}
        _fresh.timings = timings
        try:
            addresses = self.resolver(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        resolved = time.perf_counter()
        timings["dns"] = ms(resolved - started)
        sock = self._connect_first(addresses)
        timings["connect"] = ms(time.perf_counter() - resolved)
        if not isinstance(self, HTTPSConnection):
            timings["tls"] = None  # plain http: no handshake follows
        return sock

    def _connect_first(self, addresses: list[AddrInfo]) -> socket.socket:
        """Connect to a checked address (guard.connect), in urllib3's exceptions."""
        try:
            return guard.connect(addresses, self.timeout, self.socket_options or ())
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                self, f"connection to {self.host} timed out (connect timeout {self.timeout} s)"
            ) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"failed to connect to {self.host}: {exc}") from exc


class _PinnedHTTPConnection(_PinnedConnectionMixin, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedConnectionMixin, HTTPSConnection):
    def connect(self) -> None:
        started = time.perf_counter()
        super().connect()
        timings = getattr(_fresh, "timings", None)
        if timings is not None:
            spent = ms(time.perf_counter() - started)
            timings["tls"] = max(0.0, spent - timings["dns"] - timings["connect"])


class _HTTPSPool(HTTPSConnectionPool):
    def _validate_conn(self, conn: Any) -> None:
        """urllib3's, without its warning on an unverified connection: only a batch's tls_verify false makes one,
        and its results record each certificate's problems instead."""
        HTTPConnectionPool._validate_conn(self, conn)
        if conn.is_closed:
            conn.connect()


def _pool_classes(resolver: Resolver) -> dict[str, type]:
    """Connection pools whose connections resolve through `resolver` (one pair per transport)."""
    http_conn = type("GuardedHTTPConnection", (_PinnedHTTPConnection,), {"resolver": staticmethod(resolver)})
    https_conn = type("GuardedHTTPSConnection", (_PinnedHTTPSConnection,), {"resolver": staticmethod(resolver)})
    return {
        "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("GuardedHTTPSPool", (_HTTPSPool,), {"ConnectionCls": https_conn}),
    }


class _GuardedAdapter(HTTPAdapter):
    """requests' adapter with pools whose connections are pinned to checked addresses."""

    def __init__(self, resolver: Resolver, pool_size: int, ssl_context: ssl.SSLContext | None = None):
        self._resolver = resolver
        self._ssl_context = ssl_context
        # pool_size connections per host: requests' default of 10 makes a batch at concurrency 200
        # open and throw away hundreds of extra connections.
        super().__init__(pool_connections=min(max(pool_size, 10), 100), pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._ssl_context is not None:
            kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._resolver)


class RequestsTransport:
    """The requests transport: one Session per batch, its pool sized to the batch's concurrency."""

    def __init__(
        self,
        pool_size: int,
        resolver: Resolver,
        capture: Mapping[str, Any] | None = None,
        tls_verify: bool = True,
        user_agent: str = USER_AGENT,
    ):
        self.session = requests.Session()
        # trust_env off: environment proxies must not redirect fetches, and reading them costs on every request.
        self.session.trust_env = False
        self.session.headers["User-Agent"] = user_agent
        self._capture = capture
        self._tls_verify = tls_verify
        context = None
        if tls_verify and tls.ca_bundle():
            context = tls.make_context(ssl.create_default_context)  # certifi's CAs and GREENBATCH_CA_BUNDLE's
        self.adapter = _GuardedAdapter(resolver, pool_size, context)
        self.session.mount("http://", self.adapter)
        self.session.mount("https://", self.adapter)

    def fetch(
        self,
        url: str,
        *,
        method: str,
        headers: Mapping[str, str],
        connect_timeout: float,
        read_timeout: float,
        max_bytes: int,
        keep_body: bool = False,
    ) -> Hop:
        """Send one request and read its body up to `max_bytes` decoded bytes (kept in the Hop with keep_body)."""
        _fresh.timings = None
        started = time.perf_counter()
        try:
            # The adapter, not session.request: even with allow_redirects=False, Session.send reads a
            # redirect's whole body into memory (decoded), so a 302 carrying a gzip bomb would inflate.
            prepared = self.session.prepare_request(requests.Request(method, url, headers=dict(headers)))
            response = self.adapter.send(
                prepared, stream=True, timeout=(connect_timeout, read_timeout), verify=self._tls_verify
            )
        except guard.GuardError as exc:
            raise FetchError(exc.kind, str(exc), detail=exc.detail) from None
        except requests.RequestException as exc:
            raise _classify(exc, url) from None
        except DeadlineExceeded as exc:
            exc.phases = dict(REUSED if _fresh.timings is None else _fresh.timings)
            raise
        first_byte = time.perf_counter()
        raw: urllib3.HTTPResponse = response.raw
        connecting, _fresh.timings = _fresh.timings, None  # None: a reused connection
        # Before the body is read: reading it to the end hands the connection back to the pool.
        seen = None if self._capture is None else self._seen(response, raw, url)
        kept: list[bytes] | None = [] if keep_body else None
        try:
            size = self._read_body(response, raw, url, method, max_bytes, kept)
        except DeadlineExceeded as exc:
            phases = hop_timings(connecting, started, first_byte, first_byte)
            del phases["download"]  # the phase in progress
            exc.phases = phases
            raise
        return Hop(
            status=response.status_code,
            headers=response.headers,
            bytes=size,
            timings=hop_timings(connecting, started, first_byte, time.perf_counter()),
            seen=seen,
            body=None if kept is None else b"".join(kept),
        )

    def _seen(self, response: requests.Response, raw: urllib3.HTTPResponse, url: str) -> dict[str, Any]:
        """What the batch's capture option records of this exchange (chain_valid is null with tls_verify off:
        urllib3 does not say why a chain it was not asked to check would fail)."""
        capture = cast("Mapping[str, Any]", self._capture)
        connection = raw.connection
        sock = getattr(connection, "sock", None)
        try:
            remote_ip = sock.getpeername()[0] if sock is not None else None
        except OSError:
            remote_ip = None
        described = None
        if capture["tls"] and isinstance(sock, ssl.SSLSocket):
            host = urllib3.util.parse_url(url).host or ""
            chain_valid = True if self._tls_verify else None
            described = tls.describe(sock, host.strip("[]"), chain_valid, None, tls.now_utc())
        version = {10: "HTTP/1.0", 11: "HTTP/1.1"}.get(raw.version, f"HTTP/{raw.version / 10:g}")
        return captured(response.headers, capture["headers"], remote_ip, version, described, capture["tls"])

    @staticmethod
    def _read_body(
        response: requests.Response,
        raw: urllib3.HTTPResponse,
        url: str,
        method: str,
        max_bytes: int,
        kept: list[bytes] | None = None,
    ) -> int:
        """Count the decoded body as it streams (into `kept` too, when given); stop past the cap and drop the
        connection."""
        if method == "HEAD":
            raw.release_conn()
            return 0
        cap = body_cap(response.status_code, response.headers, max_bytes)
        size = 0
        try:
            for chunk in raw.stream(DECODE_CHUNK, decode_content=True):
                size += len(chunk)
                if size > cap:
                    raw.close()
                    raw.release_conn()
                    raise too_large(cap, url)
                if kept is not None:
                    kept.append(chunk)
        except ReadTimeoutError:
            raw.close()
            raise body_read_timeout(url) from None
        except DecodeError as exc:
            raw.close()
            raise undecodable(url, exc) from None
        except (ProtocolError, OSError) as exc:
            raw.close()
            raise broken_body(url, _root(exc)) from None
        raw.release_conn()
        return size

    def close(self) -> None:
        """Close every pooled connection."""
        self.session.close()


def _classify(exc: requests.RequestException, url: str) -> FetchError:
    """Map requests' exceptions onto our error kinds, with a message a person can act on."""
    root = _root(exc)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return FetchError("read_timeout", f"{_host(url)} sent no response within the read timeout")
    if isinstance(exc, requests.exceptions.SSLError):
        return FetchError("tls", f"TLS handshake with {_host(url)} failed: {root}")
    if isinstance(
        exc,
        (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidHeader,
        ),
    ):
        return FetchError("invalid_url", f"{url} cannot be fetched: {root}")
    if _find(exc, NameResolutionError) or isinstance(root, socket.gaierror):
        return unresolved(urllib3.util.parse_url(url).host or url, root)
    # Before the timeout check: urllib3's NewConnectionError subclasses ConnectTimeoutError.
    if (
        isinstance(root, ConnectionRefusedError)
        or getattr(root, "errno", None) == errno.ECONNREFUSED
        or (_find(exc, NewConnectionError) and "refused" in str(root).lower())
    ):
        return FetchError("refused", f"connection refused by {_host(url)}", retryable=True)
    if isinstance(exc, requests.exceptions.ConnectTimeout) or isinstance(root, socket.timeout):
        return FetchError("connect_timeout", f"connecting to {_host(url)} timed out", retryable=True)
    if is_reset(root):
        return reset_before_response(_host(url))
    if _find(exc, NewConnectionError):
        return FetchError("other", f"could not connect to {_host(url)}: {root}", retryable=True)
    return FetchError("other", f"request to {_host(url)} failed: {root}")


def _root(exc: BaseException) -> BaseException:
    """The innermost cause or context of an exception (requests and urllib3 wrap several deep)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = (
            exc.__cause__
            or exc.__context__
            or (exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None)
        )
        if inner is None:
            reason = getattr(exc, "reason", None)
            inner = reason if isinstance(reason, BaseException) else None
        if inner is None:
            return exc
        exc = inner
    return exc


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of a type anywhere in a chain."""
    seen = set()
    stack: list[object] = [exc]  # causes, contexts, reasons: whatever is not an exception is skipped
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        stack.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
        stack.extend(a for a in current.args if isinstance(a, BaseException))
    return None


def _host(url: str) -> str:
    """The host:port part of a URL, for messages."""
    return urllib3.util.parse_url(url).netloc or url
