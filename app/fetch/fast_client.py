"""The fast transport: HTTP/1.1 on gevent sockets, responses parsed by geventhttpclient's C parser (llhttp).

Same contract as the requests transport (app/fetch/requests_client.py), at a fraction of its CPU
per URL. Per hop it:

- resolves the host once through the resolver the engine passes in (the SSRF guard), then connects
  to one of the addresses the guard checked, never to the name: the Host header, TLS SNI and the
  certificate check stay on the URL's hostname;
- keeps connections alive per origin, at most `pool_size` idle (the batch's concurrency), checks an
  idle one is still open before reusing it, and retries a GET/HEAD once on a fresh connection
  when a reused one turns out to have been closed by the server;
- measures dns, connect and tls on a new connection (null on reuse), then wait and download, and
  notes the phases completed so far on a deadline that cuts the hop short;
- decodes gzip, deflate and br in steps of DECODE_CHUNK bytes, counting decoded bytes against the
  cap as they come, so a compression bomb never inflates in memory;
- maps every failure onto the engine's error kinds, with the messages the requests transport uses;
- reads responses for at most 5 ms of one turn of the gevent loop (_TurnBudget), so the API is served
  between turns however many fetches wake at once.

Greenlet-safe: the pool is changed only between socket operations, which never switch greenlets.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, cast
from urllib.parse import urlsplit

import gevent
import gevent.socket
import gevent.ssl
from gevent import monkey
from gevent.event import AsyncResult
from geventhttpclient.response import HTTPParseError, HTTPResponse
from requests.utils import requote_uri

from . import guard, tls
from .base import USER_AGENT, AddrInfo, Hop, Resolver, body_cap, captured, hop_timings, ms
from .decode import ACCEPT_ENCODING, DECODE_ERRORS, content_decoders, decoded
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

DEFAULT_PORTS = {"http": 80, "https": 443}
RECV_SIZE = 64 * 1024
# What requests sends by default; a batch's own headers replace these (names compared case-insensitively).
BASE_HEADERS = (
    ("User-Agent", USER_AGENT),
    ("Accept-Encoding", ACCEPT_ENCODING),
    ("Accept", "*/*"),
    ("Connection", "keep-alive"),
)
_BASE_BLOCK = "".join(f"{name}: {value}\r\n" for name, value in BASE_HEADERS)
_PLAIN_TARGET = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*")  # needs no percent-encoding
# The unpatched poll(): checking an idle socket must not switch greenlets (nor go through gevent's select).
_poll = monkey.get_original("select", "poll")
_READABLE = 0x001 | 0x002 | 0x008 | 0x010  # POLLIN, POLLPRI, POLLERR, POLLHUP


class _TurnBudget:
    """How long one turn of the gevent loop may spend reading responses, shared by every fetch of the process."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._turn = -1  # libev's iteration count at the turn's first response
        self._started = 0.0

    def share(self) -> None:
        """Give the hub back if this turn has read responses for longer than the budget (a response's head just read)."""
        loop = gevent.get_hub().loop
        if loop.iteration != self._turn:
            self._turn, self._started = loop.iteration, time.perf_counter()
        elif time.perf_counter() - self._started > self.seconds:
            # The rest of the turn's responses are read from the back of the callback queue, which gevent runs
            # for its switch interval a turn: a poll that finds every fetch answered at once (a target catching
            # up after a stall) must not hold the hub, and the requests to the API, for tens of ms.
            gevent.sleep(0)


_TURN = _TurnBudget(0.005)  # gevent's switch interval: what a turn gives its callbacks


class _Target(NamedTuple):
    """Where one URL goes: its origin (the pool key), the name to resolve and verify, and what to send."""

    scheme: str
    host: str  # no brackets: what the resolver, SNI and the certificate check get
    port: int
    netloc: str  # as in the URL, for messages
    host_header: str  # with the port when it is not the scheme's default
    path: str  # origin-form request target: path and query, percent-encoded as requests would

    @property
    def origin(self) -> tuple[str, str, int]:
        """The key connections are pooled under."""
        return self.scheme, self.host, self.port


def _target(url: str) -> _Target:
    """Split a URL the guard has checked into what one exchange needs."""
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname
    if scheme not in DEFAULT_PORTS or not host:
        raise FetchError("invalid_url", f"{url} cannot be fetched: only http:// and https:// URLs with a host")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise FetchError("invalid_url", f"{url} cannot be fetched: {exc}") from None
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == DEFAULT_PORTS[scheme] else f"{shown}:{port}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if not _PLAIN_TARGET.fullmatch(path):
        path = requote_uri(path)
    return _Target(scheme, host, port, parts.netloc, host_header, path)


def _base_headers(user_agent: str) -> tuple[tuple[str, str], ...]:
    """BASE_HEADERS with the server's User-Agent."""
    return tuple((name, user_agent if name == "User-Agent" else value) for name, value in BASE_HEADERS)


def _request_head(
    method: str,
    target: _Target,
    headers: Mapping[str, str],
    base: tuple[tuple[str, str], ...] = BASE_HEADERS,
    block: str = _BASE_BLOCK,
) -> bytes:
    """The request line and headers: ours (`base`, as one `block` of lines) first unless the batch sets the same
    name, then the batch's."""
    if not headers:
        return f"{method} {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n{block}\r\n".encode("latin-1")
    for name, value in headers.items():
        # BatchOptions refuses these already; this keeps any other path from injecting header lines.
        if ":" in name or any(c in name or c in value for c in "\r\n\0"):
            raise FetchError("other", f"request header {name[:100]!r} has a line break or NUL, or ':' in its name")
    lines = [f"{method} {target.path} HTTP/1.1"]
    given = {name.lower() for name in headers}
    if "host" not in given:
        lines.append(f"Host: {target.host_header}")
    lines += [f"{name}: {value}" for name, value in base if name.lower() not in given]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise FetchError(
            "other",
            "a request header has characters outside Latin-1, which HTTP/1.1 cannot carry; percent-encode the value",
        ) from None


def _tls(check: str = "all") -> ssl.SSLContext:
    """The process's TLS context for `check` ("all", "chain" or "none": tls.shared_context)."""
    return tls.shared_context(check)


class _Headers(dict[str, str]):
    """Response headers by lowercase name; a repeated field's values joined with ', ' (as requests does)."""

    def add(self, name: str, value: str) -> None:
        """Called by the parser for each header line."""
        key = name.lower()
        old = dict.get(self, key)
        dict.__setitem__(self, key, value if old is None else f"{old}, {value}")

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        """A header by any capitalisation of its name."""
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


class _Closed(Exception):
    """The server closed the connection before sending a byte of response."""


class _Response(HTTPResponse):
    """One response read from one socket by the C parser; body bytes wait in a buffer until taken or dropped."""

    def __init__(self, method: str):
        # geventhttpclient's stubs want a subclass of its Headers; the parser only calls add() and clear().
        super().__init__(method=method, headers_type=_Headers)  # type: ignore[arg-type]

    if TYPE_CHECKING:
        # The parser keeps the headers in the headers_type given above: _Headers, one str per name.
        def info(self) -> _Headers: ...  # type: ignore[override]
        def get(self, key: str, default: str | None = None) -> str | None: ...

    def read_head(self, sock: socket.socket) -> None:
        """Read until the final (non-1xx) response's headers are parsed; _Closed if nothing came at all."""
        first = True
        while not self.headers_complete or self.get_code() < 200:
            data = sock.recv(RECV_SIZE)
            if not data:
                if first:
                    raise _Closed()
                raise HTTPParseError("the connection closed before the end of the response headers")
            first = False
            self.feed(data)

    def read_more(self, sock: socket.socket) -> bool:
        """Feed the next bytes of the body to the parser; False once the response is complete."""
        if self.message_complete:
            return False
        data = sock.recv(RECV_SIZE)
        self.feed(data)  # b"" ends an EOF-delimited body, or raises "Incomplete response"
        if not data and not self.message_complete:
            raise HTTPParseError("the connection closed before the end of the body")
        return True

    def take(self) -> bytes:
        """The body bytes parsed so far and not yet taken (at most one read's worth)."""
        data = bytes(self._body_buffer)
        del self._body_buffer[:]
        return data

    def drop(self) -> int:
        """Forget the body bytes parsed so far and say how many there were (no copy)."""
        count = len(self._body_buffer)
        del self._body_buffer[:]
        return count

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry another request."""
        return not self.should_close()


class FastTransport:
    """The fast transport: one per batch, its keep-alive pool holding at most `pool_size` idle connections."""

    def __init__(
        self,
        pool_size: int,
        resolver: Resolver,
        capture: Mapping[str, Any] | None = None,
        tls_verify: bool = True,
        user_agent: str = USER_AGENT,
    ):
        self._resolver = resolver
        self._base = _base_headers(user_agent)
        self._block = "".join(f"{name}: {value}\r\n" for name, value in self._base)
        self._capture = capture
        self._tls_verify = tls_verify
        # With tls_verify off: each TLS connection's (chain_valid, problem), as its handshake found them.
        self._verdicts: weakref.WeakKeyDictionary[socket.socket, tuple[bool, str | None]] = weakref.WeakKeyDictionary()
        self._max_idle = max(1, pool_size)
        # origin -> idle sockets, least recently used first
        self._idle: OrderedDict[tuple[str, str, int], list[socket.socket]] = OrderedDict()
        self._idle_count = 0
        # Lookups in flight, shared by their waiters: the addresses, or _RETRY.
        self._resolving: dict[tuple[str, int], AsyncResult[object]] = {}
        self._closed = False

    # -- one hop -----------------------------------------------------------------------------

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
        target = _target(url)
        head = _request_head(method, target, headers, self._base, self._block)
        started = time.perf_counter()
        sock = self._reuse(target.origin)
        timings: dict[str, float | None] | None = None
        if sock is None:
            sock, timings = self._connect(target, connect_timeout, read_timeout)
        response = _Response(method)
        # Mid-exchange (an error, the deadline, a cancel) the connection is closed, never reused.
        try:
            try:
                self._exchange(sock, head, response, target, stale_retry=timings is None)
            except _Stale:
                sock, timings = self._connect(target, connect_timeout, read_timeout)
                response = _Response(method)
                self._exchange(sock, head, response, target, stale_retry=False)
            _TURN.share()
        except DeadlineExceeded as exc:
            sock.close()
            if exc.phases is None:  # else a reconnect after a stale connection noted its own
                exc.phases = dict(REUSED if timings is None else timings)
            raise
        except BaseException:
            sock.close()
            raise
        first_byte = time.perf_counter()
        kept: list[bytes] | None = [] if keep_body else None
        try:
            size = self._read_body(sock, response, url, max_bytes, kept)
        except DeadlineExceeded as exc:
            sock.close()
            phases = hop_timings(timings, started, first_byte, first_byte)
            del phases["download"]  # the phase in progress
            exc.phases = phases
            raise
        except BaseException:
            sock.close()
            raise
        done = time.perf_counter()
        seen = None if self._capture is None else self._seen(sock, response, target)
        if response.reusable:
            self._checkin(target.origin, sock)
        else:
            sock.close()
        return Hop(
            status=response.status_code,
            headers=response.info(),
            bytes=size,
            timings=hop_timings(timings, started, first_byte, done),
            seen=seen,
            body=None if kept is None else b"".join(kept),
        )

    def _seen(self, sock: socket.socket, response: _Response, target: _Target) -> dict[str, Any]:
        """What the batch's capture option records of this exchange."""
        capture = cast("Mapping[str, Any]", self._capture)
        try:
            remote_ip = sock.getpeername()[0]
        except OSError:
            remote_ip = None
        described = None
        if capture["tls"] and isinstance(sock, ssl.SSLSocket):
            chain_valid, problem = self._verdicts.get(sock, (True, None))
            described = tls.describe(sock, target.host, chain_valid, problem, tls.now_utc())
        return captured(
            response.info(), capture["headers"], remote_ip, response.get_http_version(), described, capture["tls"]
        )

    def _exchange(
        self, sock: socket.socket, head: bytes, response: _Response, target: _Target, stale_retry: bool
    ) -> None:
        """Send the request and read the response headers, mapping failures onto error kinds."""
        try:
            sock.sendall(head)
            response.read_head(sock)
        except _Closed:
            sock.close()
            if stale_retry:
                raise _Stale() from None
            raise FetchError(
                "other", f"{target.netloc} closed the connection before a response", retryable=True
            ) from None
        except TimeoutError:
            raise FetchError("read_timeout", f"{target.netloc} sent no response within the read timeout") from None
        except HTTPParseError as exc:
            raise FetchError("other", f"{target.netloc} sent a response that is not valid HTTP/1.1: {exc}") from None
        except OSError as exc:
            sock.close()
            if stale_retry and not response.message_begun:
                raise _Stale() from None
            if is_reset(exc):
                raise reset_before_response(target.netloc) from None
            raise FetchError("other", f"request to {target.netloc} failed: {exc}") from None

    @staticmethod
    def _read_body(
        sock: socket.socket, response: _Response, url: str, max_bytes: int, kept: list[bytes] | None = None
    ) -> int:
        """Count the decoded body as it streams (into `kept` too, when given); past the cap, stop (the caller drops
        the connection)."""
        cap = body_cap(response.status_code, response.info(), max_bytes)
        decoders = content_decoders(response.get("Content-Encoding"))
        size = 0
        try:
            while True:
                if decoders:
                    for piece in decoded(response.take(), decoders):
                        size += len(piece)
                        if size > cap:
                            break
                        if kept is not None:
                            kept.append(piece)
                elif kept is not None:
                    data = response.take()
                    size += len(data)
                    kept.append(data)
                else:
                    size += response.drop()
                if size > cap:
                    raise too_large(cap, url)
                if not response.read_more(sock):
                    return size
        except TimeoutError:
            raise body_read_timeout(url) from None
        except DECODE_ERRORS as exc:
            raise undecodable(url, exc) from None
        except (HTTPParseError, OSError) as exc:
            raise broken_body(url, exc) from None

    # -- connections -------------------------------------------------------------------------

    def _connect(
        self, target: _Target, connect_timeout: float, read_timeout: float
    ) -> tuple[socket.socket, dict[str, float | None]]:
        """A new connection to an address the guard checked, with its dns, connect and tls timings."""
        started = time.perf_counter()
        timings: dict[str, float | None] = {}  # filled as each phase completes: a deadline keeps what is done
        try:
            try:
                addresses = self._resolve(target.host, target.port)
            except guard.GuardError as exc:
                raise FetchError(exc.kind, str(exc), detail=exc.detail) from None
            except OSError as exc:  # socket.gaierror, or any other failure to resolve
                raise unresolved(target.host, exc) from None
            resolved = time.perf_counter()
            timings["dns"] = ms(resolved - started)
            sock = _open(addresses, target, connect_timeout)
            connected = time.perf_counter()
            timings["connect"] = ms(connected - resolved)
            if target.scheme == "https":
                sock = self._secure(sock, addresses, target, connect_timeout)
                timings["tls"] = ms(time.perf_counter() - connected)
            else:
                timings["tls"] = None
        except DeadlineExceeded as exc:
            exc.phases = timings
            raise
        sock.settimeout(read_timeout)
        return sock, timings

    def _secure(
        self, sock: socket.socket, addresses: list[AddrInfo], target: _Target, connect_timeout: float
    ) -> socket.socket:
        """The TLS handshake; with tls_verify off, a certificate that fails the check is noted, not refused."""
        if self._tls_verify:
            return _handshake(sock, target, _tls())
        try:
            secured = _handshake(sock, target, _tls("chain"))
            self._verdicts[secured] = (True, None)
            return secured
        except _Unverified as exc:
            # The check failed: take the certificate on a new connection that checks nothing, and say why.
            secured = _handshake(_open(addresses, target, connect_timeout), target, _tls("none"))
            self._verdicts[secured] = (False, exc.problem)
            return secured

    def _resolve(self, host: str, port: int) -> list[AddrInfo]:
        """The guard's checked addresses for host:port; connections opening at the same moment share one lookup.

        At the start of a batch every slot opens a connection at once: a thousand lookups of one name
        through gevent's resolver threads cost seconds. Nothing is cached once the lookup returns.
        """
        key = (host, port)
        pending = self._resolving.get(key)
        if pending is not None:
            outcome = pending.get()
            if outcome is not _RETRY:
                # The same answer the lookup in flight got (or its dns/guard error, raised).
                return cast("list[AddrInfo]", outcome)
        pending = self._resolving[key] = AsyncResult()
        try:
            addresses = self._resolver(host, port)
        except (OSError, guard.GuardError) as exc:
            pending.set_exception(exc)
            raise
        except BaseException:
            pending.set(_RETRY)  # our deadline or cancel, not theirs: each waiter looks up on its own
            raise
        finally:
            if self._resolving.get(key) is pending:
                del self._resolving[key]
        pending.set(addresses)
        return addresses

    def _reuse(self, origin: tuple[str, str, int]) -> socket.socket | None:
        """The most recently used idle connection to an origin that the server has not closed, if any."""
        idle = self._idle.get(origin)
        while idle:
            sock = idle.pop()
            self._idle_count -= 1
            if _still_open(sock):
                return sock
            sock.close()
        return None

    def _checkin(self, origin: tuple[str, str, int], sock: socket.socket) -> None:
        """Keep a connection for reuse; past `pool_size` idle ones, close the least recently used."""
        if self._closed:
            sock.close()
            return
        while self._idle_count >= self._max_idle:
            oldest_origin, oldest = next(iter(self._idle.items()))
            if oldest:
                oldest.pop(0).close()
                self._idle_count -= 1
            if not oldest:
                del self._idle[oldest_origin]
        self._idle.setdefault(origin, []).append(sock)
        self._idle.move_to_end(origin)
        self._idle_count += 1

    def close(self) -> None:
        """Close every idle connection; connections still in use close when their exchange ends."""
        self._closed = True
        for idle in self._idle.values():
            for sock in idle:
                sock.close()
        self._idle.clear()
        self._idle_count = 0


_RETRY = object()  # a shared lookup ended by its own greenlet's deadline or cancel


class _Stale(Exception):
    """A reused connection was already closed by the server: the request goes again on a new one."""


def _open(addresses: list[AddrInfo], target: _Target, timeout: float) -> socket.socket:
    """Connect to a checked address (guard.connect), in our error kinds."""
    try:
        # gevent's socket even in an unpatched process; TCP_NODELAY: one small request per write, no Nagle wait.
        return guard.connect(
            addresses, timeout, [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], make_socket=gevent.socket.socket
        )
    except TimeoutError:
        raise FetchError("connect_timeout", f"connecting to {target.netloc} timed out", retryable=True) from None
    except ConnectionRefusedError:
        raise FetchError("refused", f"connection refused by {target.netloc}", retryable=True) from None
    except OSError as exc:
        raise FetchError("other", f"could not connect to {target.netloc}: {exc}", retryable=True) from None


class _Unverified(FetchError):
    """The server's certificate failed the check (with tls_verify off, a problem to record)."""

    def __init__(self, message: str, problem: str):
        super().__init__("tls", message)
        self.problem = problem


def _handshake(sock: socket.socket, target: _Target, context: ssl.SSLContext) -> socket.socket:
    """TLS over a connected socket: SNI and the certificate check on the URL's hostname, not the address."""
    try:
        return context.wrap_socket(sock, server_hostname=target.host)
    except TimeoutError:
        sock.close()
        raise FetchError("connect_timeout", f"TLS handshake with {target.netloc} timed out", retryable=True) from None
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise _Unverified(f"TLS handshake with {target.netloc} failed: {exc}", exc.verify_message) from None
    except ssl.SSLError as exc:  # includes certificate errors
        sock.close()
        raise FetchError("tls", f"TLS handshake with {target.netloc} failed: {exc}") from None
    except OSError as exc:
        sock.close()
        if is_reset(exc):
            raise reset_before_response(target.netloc) from None
        raise FetchError("other", f"TLS handshake with {target.netloc} failed: {exc}", retryable=True) from None
    except BaseException:
        sock.close()
        raise


def _still_open(sock: socket.socket) -> bool:
    """An idle keep-alive connection has nothing to read; if it has, the server closed it (or misbehaved)."""
    try:
        poller = _poll()
        poller.register(sock.fileno(), _READABLE)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False
