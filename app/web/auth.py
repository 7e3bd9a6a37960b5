"""Who may use the server, and browser safety: API tokens (reread on SIGHUP), the login session, a limit
on invalid tokens per client, CSRF and Origin checks, the websocket gate, and the security headers.

Authentication is on when any API token is configured (GREENBATCH_API_TOKENS, GREENBATCH_TOKEN_FILE).
Without tokens the server is open: quietly when bound to loopback (it then answers only loopback Host
names, which defeats DNS rebinding), with a loud warning when bound anywhere else.

Behind a reverse proxy (GREENBATCH_PROXY_HOPS), X-Forwarded-* headers count only when the peer is one of
GREENBATCH_TRUSTED_PROXIES; anyone else's are dropped. A logout ends its session on the server too
(EndedSessions), so a copy of the cookie stops working with it.

Contract for browser code: requests that change something (POST, PUT, PATCH, DELETE) and are signed in
by the session cookie must send `X-Requested-With: greenbatch`; classic forms (login, logout) send the
hidden `csrf_token` field instead. Any such request whose Origin is not this server's host is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import os
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadData
from werkzeug.http import parse_cookie
from werkzeug.middleware.proxy_fix import ProxyFix

from ..core.config import Config, ConfigError, env_name
from .errors import Refusal, error_response, refusal_response, wants_json

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

EXTENSION = "greenbatch.auth"
FAILURES_EXTENSION = "greenbatch.auth_failures"
PROXIES_EXTENSION = "greenbatch.trusted_proxies"
CSRF_HEADER = "X-Requested-With"
CSRF_HEADER_VALUE = "greenbatch"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes answer without credentials
OPEN_ENDPOINTS = frozenset({"static", "auth.login", "auth.logout"})
MIN_TOKEN_LENGTH = 16
SESSION_LIFETIME = timedelta(days=7)
ENDED_SESSIONS_FILE = "ended_sessions"  # in the data folder
MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"

# No inline script or style anywhere. connect-src 'self' already covers ws:// and wss:// to this
# host (CSP Level 3, checked with Chromium in tests/test_auth.py), so no blanket ws: wss: sources.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
# same-origin, not no-referrer: under no-referrer browsers send `Origin: null` on our own POSTs,
# which the Origin check would then refuse.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

EXPOSED_WARNING = """
*********************************************************************************
WARNING: greenbatch is listening on %s with NO authentication.
  Anyone who can reach this port can submit batches, and this server will fetch
  whatever URLs they send from inside your network: internal admin pages, cloud
  metadata endpoints, anything it can reach.
  Require a token: set GREENBATCH_API_TOKENS=<token>[,<token>...] or
  GREENBATCH_TOKEN_FILE=/path/to/file (one token per line). Make a token with
    %s
  Or keep it private: bind to 127.0.0.1 (GREENBATCH_HOST).
*********************************************************************************"""

NO_CREDENTIALS = (
    "this server requires an API token: send the header 'Authorization: Bearer <token>' "
    "(tokens are set by GREENBATCH_API_TOKENS or GREENBATCH_TOKEN_FILE), or sign in at /login"
)
BAD_TOKEN = (
    "the token sent is not one this server accepts; compare it with GREENBATCH_API_TOKENS "
    "or GREENBATCH_TOKEN_FILE on the server"
)
CSRF_MISSING = (
    f"a request signed in by the login cookie must send the header '{CSRF_HEADER}: {CSRF_HEADER_VALUE}' "
    "to change anything (this blocks cross-site forms); API clients send "
    "'Authorization: Bearer <token>' instead"
)


# -- decisions that need no request ----------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether `host` (a bind address or Host-header name) only reaches this machine: 127.0.0.0/8, ::1, localhost."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposed_without_auth(host: str, tokens: tuple[str, ...]) -> bool:
    """Whether anyone who can reach the port may use the server: bound beyond loopback with no token."""
    return not tokens and not is_loopback(host)


def safe_next(value: str | None) -> str:
    """A local path to return to after login; anything that could lead off this site becomes "/"."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):  # browsers drop tabs and newlines: "/\t/evil"
        return "/"
    parts = urlsplit(value)
    return "/" if parts.scheme or parts.netloc else value


def origin_key(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) origin with the default port filled in, or None ("null", junk)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def split_host(host: str) -> tuple[str, int | None]:
    """(name, port) of a Host header: "example.com:8080", "[::1]:8000", "localhost"; ("", None) when malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return "", None
        port = rest[1:]
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:
        name, port = host, ""
    if not port:
        return name.rstrip("."), None
    # isascii: str.isdigit alone accepts "²" and "٣", which int() refuses or reads as another number;
    # five digits at most, so int() never meets a string longer than it converts.
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        return "", None
    return name.rstrip("."), int(port)


def load_tokens(config: Config) -> tuple[str, ...]:
    """Every API token from GREENBATCH_API_TOKENS and GREENBATCH_TOKEN_FILE; ConfigError names a bad one by place."""
    tokens = []
    for number, item in enumerate(config.api_tokens.split(","), 1):
        if item.strip():
            tokens.append(_checked_token(item.strip(), f"{env_name('api_tokens')}: token #{number}"))
    if config.token_file:
        variable = env_name("token_file")
        try:
            with open(config.token_file, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise ConfigError(f"{variable}={config.token_file!r} cannot be read: {reason}") from None
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                tokens.append(_checked_token(line, f"{variable}: line {number}"))
    return tuple(dict.fromkeys(tokens))


def _checked_token(token: str, where: str) -> str:
    """The token if it is long and plain enough to be typed and sent in a header; else a ConfigError."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{where} is {len(token)} characters; use at least {MIN_TOKEN_LENGTH} (make one with: {MAKE_TOKEN})"
        )
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise ConfigError(f"{where} may only hold printable ASCII without spaces")
    return token


def parse_origins(text: str) -> frozenset[tuple[str, str, int]]:
    """GREENBATCH_ALLOWED_ORIGINS as origin keys; ConfigError names an entry that is not scheme://host[:port]."""
    keys = set()
    for item in text.split(","):
        if item.strip():
            key = origin_key(item)
            if key is None:
                raise ConfigError(
                    f"{env_name('allowed_origins')}: {item.strip()!r} is not an origin "
                    "like https://greenbatch.example.com or http://10.0.0.5:8000"
                )
            keys.add(key)
    return frozenset(keys)


def parse_proxies(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """GREENBATCH_TRUSTED_PROXIES as networks; ConfigError names an entry that is not an IP address or CIDR."""
    networks = []
    for item in text.split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip()))
            except ValueError as exc:
                raise ConfigError(
                    f"{env_name('trusted_proxies')}: {item.strip()!r} is not an IP address or CIDR "
                    f"like 127.0.0.1, ::1 or 10.0.0.0/24 ({exc})"
                ) from None
    return tuple(networks)


def load_secret_key(config: Config) -> str:
    """GREENBATCH_SECRET_KEY, else the key kept in the data folder, made (mode 0600) on first start."""
    if config.secret_key:
        if len(config.secret_key) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"{env_name('secret_key')} is {len(config.secret_key)} characters; "
                f"use at least {MIN_TOKEN_LENGTH} (make one with: {MAKE_TOKEN})"
            )
        return config.secret_key
    os.makedirs(config.data_dir, exist_ok=True)
    path = os.path.join(config.data_dir, "secret_key")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, encoding="ascii") as handle:
            key = handle.read().strip()
        if len(key) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"{path} holds no usable key; delete it and a new one is made (everyone signed in must sign in again)"
            ) from None
        if os.stat(path).st_mode & 0o077:
            log.warning("%s can be read by other users, who could forge login cookies: chmod 600 it", path)
        return key
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    log.info("made a new key for login cookies in %s", path)
    return key


# -- the rules of one server ---------------------------------------------------------------


@dataclass(frozen=True)
class Guard:
    """The access rules of one server, built once from its settings."""

    tokens: tuple[str, ...]
    secret: bytes
    allowed_origins: frozenset[tuple[str, str, int]]
    loopback_names_only: bool  # open and bound to loopback: refuse other Host names (DNS rebinding)
    ended: EndedSessions

    @property
    def enabled(self) -> bool:
        """Whether requests need a token or a login."""
        return bool(self.tokens)

    def token_ok(self, presented: str) -> bool:
        """Whether `presented` is one of the tokens, compared in constant time."""
        candidate = presented.encode("utf-8", "replace")
        found = False
        for token in self.tokens:
            found |= hmac.compare_digest(candidate, token.encode("ascii"))
        return found

    def session_mark(self, token: str) -> str:
        """What a login keeps in the cookie: a keyed hash of its token, so removing the token ends the session."""
        return hmac.new(self.secret, b"greenbatch login:" + token.encode("ascii"), hashlib.sha256).hexdigest()

    def session_ok(self, data: Mapping[str, Any]) -> bool:
        """Whether session data comes from a login with a token that is still configured, not ended by a logout."""
        mark = data.get("auth")
        return (
            isinstance(mark, str)
            and any(hmac.compare_digest(mark, self.session_mark(t)) for t in self.tokens)
            and not self.session_ended(data)
        )

    def session_ended(self, data: Mapping[str, Any]) -> bool:
        """Whether session data is from a login that has ended: logged out (this copy of the cookie or another)."""
        return "auth" in data and self.ended.ended(data.get("sid"), data.get("since"))

    def identify(
        self,
        environ: Mapping[str, Any],
        session_data: Mapping[str, Any],
        allow_query: bool,
        failures: FailedTokens | None = None,
        client: str = "-",
    ) -> str:
        """How a request proves itself: "bearer", "cookie", "bad_token" (a token that is not valid), "none",
        or "throttled": `client` sent too many bad tokens lately, so this one is not even checked."""
        token = bearer_token(environ)
        if token is None and allow_query:
            token = (parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).get("token") or [None])[0]
        if token is None:
            return "cookie" if self.session_ok(session_data) else "none"
        if failures is not None and failures.wait(client):
            return "throttled"
        if self.token_ok(token):
            return "bearer"
        if failures is not None:
            failures.failed(client)
        return "bad_token"

    def host_problem(self, environ: Mapping[str, Any]) -> str | None:
        """Why an open loopback server will not answer this Host name, or None."""
        host = environ.get("HTTP_HOST")
        if not self.loopback_names_only or not host:
            return None
        name, _ = split_host(host)
        if is_loopback(name) or any(name == key[1] for key in self.allowed_origins):
            return None
        return (
            f"this server runs without API tokens on loopback, so it only answers requests for localhost "
            f"or 127.0.0.1, not {host[:200]!r} (a guard against DNS rebinding); to use another name, set "
            "GREENBATCH_API_TOKENS or add that name's origin to GREENBATCH_ALLOWED_ORIGINS"
        )

    def origin_problem(self, environ: Mapping[str, Any]) -> str | None:
        """Why the request's Origin may not act here, or None: no Origin, this server's host, or an allowed origin."""
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            return None
        key = origin_key(origin)
        host = environ.get("HTTP_HOST", "")
        if key is not None and (key in self.allowed_origins or same_host(key, host)):
            return None
        return (
            f"requests from origin {origin[:200]!r} may not act on this server (its host is {host[:200]!r}); "
            "if a proxy rewrites the Host header, pass it through (nginx: proxy_set_header Host $host) "
            "or add the origin to GREENBATCH_ALLOWED_ORIGINS"
        )


def same_host(key: tuple[str, str, int], host_header: str) -> bool:
    """Whether an origin names the host and port the request was sent to."""
    scheme, name, port = key
    host_name, host_port = split_host(host_header)
    return name == host_name and port == (host_port or (443 if scheme == "https" else 80))


class FailedTokens:
    """Invalid tokens per client address: after `limit` of them within `window` seconds, that address's
    tokens are refused unchecked (429) until the oldest of them is `window` seconds old.

    Tokens have 16+ characters, so guessing one is hopeless anyway; this stops a script from trying (the
    login form, bearer headers and websocket tokens all count). A signed-in cookie is not a guess and keeps
    working. Only greenlets of one process use it, never at the same time: no lock.
    """

    MAX_CLIENTS = 10_000  # addresses remembered; those quiet longest are forgotten first

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()  # client -> its latest failure times

    def wait(self, client: str) -> int:
        """Whole seconds before `client` may have a token checked again; 0: now."""
        if not self._failures:
            return 0  # nobody has failed lately: the common case, without parsing the address
        key = self.key(client)
        times = self._failures.get(key)
        if times is None:
            return 0
        now = self._clock()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0
        return max(1, math.ceil(times[0] + self.window - now)) if len(times) >= self.limit else 0

    def failed(self, client: str) -> None:
        """Count one invalid token from `client`."""
        if not self.limit:
            return
        key = self.key(client)
        times = self._failures.pop(key, None) or deque(maxlen=self.limit)  # only the last `limit` matter
        times.append(self._clock())
        self._failures[key] = times
        while len(self._failures) > self.MAX_CLIENTS:
            self._failures.popitem(last=False)

    def problem(self, client: str) -> str:
        """What a throttled client is told."""
        return (
            f"{self.limit} invalid tokens came from {self.key(client)} within {self.window:g} s, so its tokens "
            f"are not checked for now; try again in {self.wait(client)} s (GREENBATCH_AUTH_FAILURES)"
        )

    @staticmethod
    def key(client: str) -> str:
        """What is counted: an IPv4 address, or an IPv6 address's /64 (one host commonly holds a whole /64)."""
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return client  # not an address (a unix socket's "-"): counted as it is
        if address.version == 6:
            if address.ipv4_mapped:
                return str(address.ipv4_mapped)
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
        return str(address)


class EndedSessions:
    """Login sessions ended by a logout, kept in <data dir>/ended_sessions until every copy of their cookie
    has expired, so a copied cookie stops working at the logout, across restarts too.

    A login's cookie carries a random session id and its sign-in time. Each logout appends a line
    `<time> <session id>`; lines older than a cookie's lifetime are dropped when the file is read (a cookie
    is re-signed only while its session is valid, so none outlives its logout by more than that). Past
    LIMIT remembered sessions, every session signed in so far ends at once instead (a line `<time> *`):
    the file stays small, and no ended session ever works again.
    """

    LIMIT = 10_000
    EVERYONE = "*"

    def __init__(self, path: str, lifetime: float, clock: Callable[[], float] = time.time):
        self.path = path
        self.lifetime = lifetime
        self._clock = clock
        self._ended: dict[str, float] = {}  # session id -> when it ended
        self._cutoff = 0.0  # sessions signed in before this time have all ended
        self._load()

    def ended(self, session_id: Any, since: Any) -> bool:
        """Whether the session `session_id`, signed in at `since`, has ended; a cookie without them predates
        session ids, and ends too (its holder signs in again once)."""
        if not isinstance(session_id, str) or not isinstance(since, (int, float)):
            return True
        return since < self._cutoff or session_id in self._ended

    def end(self, session_id: str) -> None:
        """End a session now, for this process at once and in the file for later starts."""
        now = self._clock()
        if len(self._ended) >= self.LIMIT:
            self._forget_expired(now)
        if len(self._ended) < self.LIMIT:
            self._ended[session_id] = now
            self._write([(now, session_id)], "a")
            return
        log.warning(
            "%d sessions were ended by logout within %.0f days: every session signed in until now ends too "
            "(everyone signs in again), so %s stays small",
            self.LIMIT,
            self.lifetime / 86400,
            self.path,
        )
        self._ended.clear()
        self._cutoff = now
        self._write([(now, self.EVERYONE)], "w")

    def _forget_expired(self, now: float) -> None:
        """Drop sessions whose cookies have all expired."""
        for sid in [sid for sid, when in self._ended.items() if when + self.lifetime < now]:
            del self._ended[sid]

    def _load(self) -> None:
        """Read the file; rewrite it without expired or unreadable lines."""
        try:
            with open(self.path, encoding="ascii") as handle:
                lines = handle.read().splitlines()
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not ASCII text"
            raise ConfigError(
                f"{self.path} cannot be read: {reason}; it lists the login sessions ended by logout "
                "(fix it rather than delete it: deleting it lets those cookies work again "
                "until they expire)"
            ) from None
        now, kept, damaged = self._clock(), 0, 0
        for line in lines:
            stamp, _, session_id = line.partition(" ")
            try:
                when = float(stamp)
            except ValueError:
                when = None
            if when is None or not session_id:
                damaged += 1  # a line cut short by a crash mid-write
            elif when + self.lifetime >= now:
                kept += 1
                if session_id == self.EVERYONE:
                    self._cutoff = max(self._cutoff, when)
                else:
                    self._ended[session_id] = when
        if damaged:
            log.warning("%s: skipped %d unreadable line(s)", self.path, damaged)
        if kept < len(lines):
            rows = [(when, sid) for sid, when in self._ended.items()]
            self._write(rows + ([(self._cutoff, self.EVERYONE)] if self._cutoff else []), "w")

    def _write(self, rows: Iterable[tuple[float, str]], mode: str) -> None:
        """Append rows to the file ("a"), or replace it with them ("w", through a temporary file)."""
        target = self.path if mode == "a" else self.path + ".tmp"
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(target, mode, encoding="ascii") as handle:
                handle.writelines(f"{when:.3f} {sid}\n" for when, sid in rows)
            if mode == "w":
                os.replace(target, self.path)
        except OSError as exc:
            log.error(
                "could not write %s (%s): sessions ended by logout stay ended until this process stops, "
                "but not after a restart; free space or fix permissions in the data folder",
                self.path,
                exc.strerror,
            )


class TrustedProxies:
    """Who may tell us, in X-Forwarded-* headers, the client's address, scheme, host and path prefix: a peer
    in GREENBATCH_TRUSTED_PROXIES, for GREENBATCH_PROXY_HOPS proxies. Anyone else's such headers are ignored,
    so a client reaching the port directly cannot pose as another address (and use up its invalid tokens)
    nor fake https, the host or the prefix."""

    def __init__(self, hops: int, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], setting: str):
        self.hops = hops
        self.networks = networks
        self.setting = setting
        self._warned = False

    @classmethod
    def from_config(cls, config: Config) -> TrustedProxies:
        """The rule set by GREENBATCH_PROXY_HOPS and GREENBATCH_TRUSTED_PROXIES (ConfigError for a bad entry)."""
        return cls(config.proxy_hops, parse_proxies(config.trusted_proxies), config.trusted_proxies)

    def trusts(self, environ: Mapping[str, Any]) -> bool:
        """Whether the request's peer is a trusted proxy (never while no proxy hops are configured)."""
        if not self.hops:
            return False
        try:
            peer = ipaddress.ip_address(environ.get("REMOTE_ADDR", ""))
        except ValueError:
            return False  # not an address (a unix socket): not a proxy we know
        if peer.version == 6 and peer.ipv4_mapped:
            peer = peer.ipv4_mapped  # an IPv4 peer on a dual-stack socket
        return any(peer in network for network in self.networks)

    def client(self, environ: Mapping[str, Any]) -> str:
        """The client's address: behind a trusted proxy the Nth X-Forwarded-For entry from the right, as
        ProxyFix reads it; else the peer's own."""
        if self.trusts(environ):
            forwarded = [part.strip() for part in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
            if len(forwarded) >= self.hops:
                return forwarded[-self.hops]
        elif self.hops:
            self._warn_once(environ)
        return environ.get("REMOTE_ADDR", "-")

    def middleware(self, wsgi_app: Callable) -> Callable:
        """`wsgi_app` behind ProxyFix for requests from a trusted proxy; others' X-Forwarded-* headers are dropped."""
        n = self.hops
        fixed = ProxyFix(wsgi_app, x_for=n, x_proto=n, x_host=n, x_prefix=n)

        def screened(environ: dict, start_response: Callable) -> Any:
            if self.trusts(environ):
                return fixed(environ, start_response)
            self._warn_once(environ)
            for key in [key for key in environ if key.startswith("HTTP_X_FORWARDED_")]:
                del environ[key]
            return wsgi_app(environ, start_response)

        return screened

    def _warn_once(self, environ: Mapping[str, Any]) -> None:
        """The first time an untrusted peer sends X-Forwarded-* headers, say whose were ignored and why."""
        if self._warned or not any(key.startswith("HTTP_X_FORWARDED_") for key in environ):
            return
        self._warned = True
        peer = environ.get("REMOTE_ADDR", "-")
        log.warning(
            "ignored the X-Forwarded-* headers of a request from %s: it is not a trusted proxy "
            "(GREENBATCH_TRUSTED_PROXIES=%s), so its requests count as coming from %s itself. If %s is your "
            "reverse proxy, add it to GREENBATCH_TRUSTED_PROXIES; if clients reach this port directly, bind "
            "greenbatch to loopback (GREENBATCH_HOST=127.0.0.1) behind the proxy. (Said once per process.)",
            peer,
            self.setting,
            peer,
            peer,
        )


def client_address(environ: Mapping[str, Any], app: Any) -> str:
    """The client's address as `app` sees it: the peer's, or the forwarded one from a trusted proxy (the
    websocket handler asks before the app's ProxyFix has run). An app without our rules trusts no proxy."""
    proxies: TrustedProxies | None = getattr(app, "extensions", {}).get(PROXIES_EXTENSION)
    return proxies.client(environ) if proxies is not None else environ.get("REMOTE_ADDR", "-")


def bearer_token(environ: Mapping[str, Any]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def guard_of(app: Flask) -> Guard:
    """The app's access rules."""
    return app.extensions[EXTENSION]


def proxies_of(app: Flask) -> TrustedProxies:
    """The app's rule for trusting X-Forwarded-* headers."""
    return app.extensions[PROXIES_EXTENSION]


def failures_of(app: Flask) -> FailedTokens:
    """The app's count of invalid tokens per client address."""
    return app.extensions[FAILURES_EXTENSION]


# -- websockets ----------------------------------------------------------------------------


def websocket_gate(app: Flask) -> Callable[[dict], Refusal | None]:
    """The gate the websocket handler asks before its 101: the same access decision as HTTP; None upgrades.

    Besides the header and the cookie, it takes `?token=` for clients that cannot set headers; that
    token then shows in proxy logs and browser history, so prefer the header (our access log redacts it).
    """
    failures = failures_of(app)

    def gate(environ: dict) -> Refusal | None:
        decision = decide(
            guard_of(app),
            failures,
            environ,
            _cookie_session(app, environ),  # SIGHUP may replace the guard
            client_address(environ, app),
            changing=False,
            websocket=True,
            needs_credentials=True,
            allow_query=True,
        )
        return decision if isinstance(decision, Refusal) else None

    return gate


def _cookie_session(app: Flask, environ: Mapping[str, Any]) -> Mapping[str, Any]:
    """The session cookie's data, decoded outside a request context as Flask would, or {}."""
    value = request_cookie(environ, app.config["SESSION_COOKIE_NAME"])
    serializer = app.session_interface.get_signing_serializer(app)
    if not value or serializer is None:
        return {}
    try:
        return serializer.loads(value, max_age=int(app.permanent_session_lifetime.total_seconds()))
    except BadData:  # tampered, expired, or signed with another key
        return {}


def request_cookie(environ: Mapping[str, Any], name: str) -> str | None:
    """One cookie from the request's Cookie header."""
    return parse_cookie(environ.get("HTTP_COOKIE", "")).get(name)


# -- every request -------------------------------------------------------------------------


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, scoped to the path the app is mounted at, and Secure over https."""

    def get_cookie_path(self, app: Flask) -> str:
        """The app's path prefix (SCRIPT_NAME behind a proxy), so apps beside it on the host never see the cookie."""
        return request.script_root or "/"

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure whenever the request came over https."""
        return request.is_secure or super().get_cookie_secure(app)

    def open_session(self, app: Flask, request: Any) -> Any:
        """The cookie's session; one whose login has ended starts over empty, and the browser is told to drop it."""
        data = super().open_session(app, request)
        if data is not None and guard_of(app).session_ended(data):
            data.clear()  # never re-signed: no copy of its cookie outlives the logout by more than a lifetime
        return data


def decide(
    guard: Guard,
    failures: FailedTokens,
    environ: Mapping[str, Any],
    session_data: Mapping[str, Any],
    client: str,
    *,
    changing: bool,
    websocket: bool,
    needs_credentials: bool,
    allow_query: bool,
) -> Refusal | str:
    """The one access decision, for HTTP requests and websocket upgrades alike: a Refusal, or how the request
    got in ("open": no credentials needed, "bearer", or "cookie")."""
    problem = guard.host_problem(environ)
    if problem:
        return Refusal(403, "host_not_allowed", problem)
    if changing or websocket:
        problem = guard.origin_problem(environ)
        if problem:
            return Refusal(403, "cross_origin_request", problem)
    if not guard.enabled or not needs_credentials:
        return "open"
    verdict = guard.identify(environ, session_data, allow_query=allow_query, failures=failures, client=client)
    if verdict == "throttled":
        return Refusal(
            429, "too_many_invalid_tokens", failures.problem(client), (("Retry-After", str(failures.wait(client))),)
        )
    if verdict == "none":
        return Refusal(401, "unauthorized", NO_CREDENTIALS, (("WWW-Authenticate", 'Bearer realm="greenbatch"'),))
    if verdict == "bad_token":
        return Refusal(
            401, "invalid_token", BAD_TOKEN, (("WWW-Authenticate", 'Bearer realm="greenbatch", error="invalid_token"'),)
        )
    return verdict


def check_request() -> Response | None:
    """Refuse a request that comes from the wrong place or without valid credentials; None lets it through."""
    environ = request.environ
    changing = request.method in STATE_CHANGING
    decision = decide(
        guard_of_current(),
        failures_of(current_app),
        environ,
        session,
        request.remote_addr or "-",
        changing=changing,
        websocket=environ.get("HTTP_UPGRADE", "").lower() == "websocket",
        needs_credentials=not (request.path in OPEN_PATHS or request.endpoint in OPEN_ENDPOINTS),
        allow_query=request.path.startswith("/ws/"),
    )
    if isinstance(decision, Refusal):
        if decision.status == 401 and request.method in ("GET", "HEAD") and not wants_json():
            query = environ.get("QUERY_STRING", "")
            return redirect(url_for("auth.login", next=request.path + ("?" + query if query else "")))
        return refusal_response(decision)
    if decision == "cookie" and changing and request.headers.get(CSRF_HEADER) != CSRF_HEADER_VALUE:
        return error_response(403, "csrf_header_missing", CSRF_MISSING)
    return None


def _retry_after(response: Response, failures: FailedTokens, client: str) -> Response:
    """A 429 answer to a client sending too many invalid tokens, told when to come back."""
    response.headers["Retry-After"] = str(failures.wait(client))
    return response


def add_security_headers(response: Response) -> Response:
    """The headers every response carries; API and login answers are never stored by caches."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/api/") or request.blueprint == "auth":
        response.headers["Cache-Control"] = "no-store"
    return response


def guard_of_current() -> Guard:
    """The current app's access rules."""
    return guard_of(current_app)


def csrf_token() -> str:
    """The session's form token, for the hidden `csrf_token` field of classic forms (login, logout)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _csrf_ok(presented: str | None) -> bool:
    """Whether a form carried this session's token."""
    expected = session.get("csrf")
    return bool(presented and expected) and hmac.compare_digest(presented.encode(), expected.encode())


# -- login and logout ----------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The sign-in form (GET) and its check (POST): a valid token sets the session cookie."""
    guard = guard_of_current()
    next_path = safe_next(request.values.get("next"))
    if not guard.enabled or guard.session_ok(session):
        return redirect(request.script_root + next_path, 303)
    if request.method == "GET":
        return _login_page(next_path)
    if not _csrf_ok(request.form.get("csrf_token")):
        return _login_page(
            next_path, "This form expired, or your browser blocked its cookie. Reload the page and try again.", 400
        )
    token = request.form.get("token", "").strip()  # pasted tokens often bring a newline
    client, failures = request.remote_addr or "-", failures_of(current_app)
    wait = failures.wait(client)
    if wait:
        log.warning("login refused for %s: too many invalid tokens lately", client)
        later = f"{wait} seconds" if wait < 90 else f"{math.ceil(wait / 60)} minutes"
        return _retry_after(
            make_response(
                _login_page(next_path, f"Too many invalid tokens came from your address. Try again in {later}.", 429)
            ),
            failures,
            client,
        )
    if not guard.token_ok(token):
        failures.failed(client)
        log.warning("login refused for %s: the token typed is not one of the configured API tokens", client)
        return _login_page(next_path, "That token is not valid.", 401)
    session.clear()
    session.permanent = True
    session["auth"] = guard.session_mark(token)
    session["sid"] = secrets.token_urlsafe(16)  # what a logout ends, for every copy of this cookie
    session["since"] = time.time()
    session["csrf"] = secrets.token_urlsafe(32)
    log.info("login from %s", request.remote_addr)
    return redirect(request.script_root + next_path, 303)


def _login_page(next_path: str, error: str = "", status: int = 200):
    """The sign-in form; `next_path` (app-relative) is where a successful login goes."""
    return render_template("login.html", next=next_path, error=error), status


@bp.post("/logout")
def logout():
    """End the session (a form with `csrf_token`, or a script sending the CSRF header) and go to the login:
    in the browser, and on the server, so copies of the cookie stop working too."""
    guard = guard_of_current()
    if guard.enabled:
        if not (_csrf_ok(request.form.get("csrf_token")) or request.headers.get(CSRF_HEADER) == CSRF_HEADER_VALUE):
            return error_response(
                403,
                "csrf_token_missing",
                f"logout needs the form's csrf_token field or the header '{CSRF_HEADER}: {CSRF_HEADER_VALUE}'",
            )
        session_id = session.get("sid")
        if isinstance(session_id, str):
            guard.ended.end(session_id)
            log.info("logout from %s", request.remote_addr)
        session.clear()
    return redirect(url_for("auth.login"), 303)


# -- wiring --------------------------------------------------------------------------------


def init_app(app: Flask) -> Guard:
    """Read tokens and keys, configure the session cookie, and check every request and response."""
    config: Config = app.config["GREENBATCH"]
    tokens = load_tokens(config)
    app.secret_key = load_secret_key(config)
    ended = EndedSessions(os.path.join(config.data_dir, ENDED_SESSIONS_FILE), SESSION_LIFETIME.total_seconds())
    guard = Guard(
        tokens=tokens,
        secret=app.secret_key.encode(),
        allowed_origins=parse_origins(config.allowed_origins),
        loopback_names_only=not tokens and is_loopback(config.host),
        ended=ended,
    )
    app.extensions[EXTENSION] = guard
    app.extensions[PROXIES_EXTENSION] = TrustedProxies.from_config(config)
    app.extensions[FAILURES_EXTENSION] = FailedTokens(config.auth_failures, config.auth_failure_window)
    app.config.update(
        SESSION_COOKIE_NAME="greenbatch_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    app.session_interface = SessionInterface()
    app.before_request(check_request)
    app.after_request(add_security_headers)
    app.jinja_env.globals.update(csrf_token=csrf_token, auth_enabled=guard.enabled)
    app.register_blueprint(bp)
    announce(config, guard)
    return guard


def reload_tokens(app: Flask) -> bool:
    """Read the API tokens again (SIGHUP), so a token file's changes apply without a restart; True if they do.

    Sessions signed in with a token that is gone end with it. A reload changes which tokens are valid,
    never whether tokens are needed: a set that cannot be read, or is empty, leaves the old one in use,
    and a server started without tokens stays open (restart it with tokens to close it).
    """
    guard, config = guard_of(app), app.config["GREENBATCH"]
    if not guard.enabled:
        log.warning(
            "tokens not reloaded: this server started without API tokens and stays open; "
            "restart it with GREENBATCH_API_TOKENS or GREENBATCH_TOKEN_FILE set to require them"
        )
        return False
    try:
        tokens = load_tokens(config)
    except ConfigError as exc:
        log.error("tokens not reloaded, the %d in use stay valid: %s", len(guard.tokens), exc)
        return False
    if not tokens:
        log.error(
            "tokens not reloaded, the %d in use stay valid: the new set is empty, and a reload never "
            "turns authentication off",
            len(guard.tokens),
        )
        return False
    app.extensions[EXTENSION] = replace(guard, tokens=tokens)
    kept = len(set(tokens) & set(guard.tokens))
    log.info(
        "tokens reloaded: %d API token(s) in use, %d new, %d removed",
        len(tokens),
        len(tokens) - kept,
        len(guard.tokens) - kept,
    )
    return True


def announce(config: Config, guard: Guard) -> None:
    """Say at start who can use the server; shout if that is anyone who can reach the port."""
    if config.proxy_hops:
        log.info(
            "trusting X-Forwarded-* headers from %d proxy hop(s), the nearest connecting from %s "
            "(GREENBATCH_TRUSTED_PROXIES)",
            config.proxy_hops,
            config.trusted_proxies,
        )
    if guard.enabled:
        log.info("authentication is on: %d API token(s); the dashboard signs in at /login", len(guard.tokens))
    elif exposed_without_auth(config.host, guard.tokens):
        log.warning(EXPOSED_WARNING, config.host, MAKE_TOKEN)
    else:
        log.info("no API tokens are set: serving clients on this machine (%s) without authentication", config.host)
