"""The login cookie: the key that signs it, what a login keeps in it, which sessions a logout has ended (on
the server too, so a copy of the cookie stops working with it), the cookie's scope, and the CSRF rule.

Contract for browser code: requests that change something (POST, PUT, PATCH, DELETE) and are signed in
by the session cookie must send `X-Requested-With: greenbatch`; classic forms (login, logout) send the
hidden `csrf_token` field instead.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from flask import Flask, request, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadData
from werkzeug.http import parse_cookie

from ...core.config import Config, ConfigError, env_name
from .tokens import MAKE_TOKEN, MIN_TOKEN_LENGTH

log = logging.getLogger(__name__)

CSRF_HEADER = "X-Requested-With"
CSRF_HEADER_VALUE = "greenbatch"
SESSION_LIFETIME = timedelta(days=7)
ENDED_SESSIONS_FILE = "ended_sessions"  # in the data folder


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
    key = secrets.token_hex(32)
    # Written aside, then linked in place: web processes starting together (gunicorn -w N in cluster mode)
    # each either place the whole key or read the one placed, never a file still being written.
    fd, aside = tempfile.mkstemp(prefix=".secret_key.", dir=config.data_dir)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key + "\n")
        os.link(aside, path)
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
    finally:
        os.unlink(aside)
    log.info("made a new key for login cookies in %s", path)
    return key


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


# -- what a login keeps in the cookie ---------------------------------------------------------


def login_mark(secret: bytes, token: str) -> str:
    """What a login keeps in the cookie: a keyed hash of its token, so removing the token ends the session."""
    return hmac.new(secret, b"greenbatch login:" + token.encode("ascii"), hashlib.sha256).hexdigest()


def signed_in(data: Mapping[str, Any], secret: bytes, tokens: tuple[str, ...], ended: EndedSessions) -> bool:
    """Whether session data comes from a login with a token that is still configured, not ended by a logout."""
    mark = data.get("auth")
    return (
        isinstance(mark, str)
        and any(hmac.compare_digest(mark, login_mark(secret, t)) for t in tokens)
        and not logged_out(data, ended)
    )


def logged_out(data: Mapping[str, Any], ended: EndedSessions) -> bool:
    """Whether session data is from a login that has ended: logged out (this copy of the cookie or another)."""
    return "auth" in data and ended.ended(data.get("sid"), data.get("since"))


# -- the cookie ---------------------------------------------------------------------------------


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, scoped to the path the app is mounted at, and Secure over https."""

    def __init__(self, ended: EndedSessions):
        self.ended = ended

    def get_cookie_path(self, app: Flask) -> str:
        """The app's path prefix (SCRIPT_NAME behind a proxy), so apps beside it on the host never see the cookie."""
        return request.script_root or "/"

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure whenever the request came over https."""
        return request.is_secure or super().get_cookie_secure(app)

    def open_session(self, app: Flask, request: Any) -> Any:
        """The cookie's session; one whose login has ended starts over empty, and the browser is told to drop it."""
        data = super().open_session(app, request)
        if data is not None and logged_out(data, self.ended):
            data.clear()  # never re-signed: no copy of its cookie outlives the logout by more than a lifetime
        return data


def init_app(app: Flask, ended: EndedSessions) -> None:
    """Keep the login in a signed, HttpOnly, SameSite=Lax cookie that lives a week, forgetting ended sessions."""
    app.config.update(
        SESSION_COOKIE_NAME="greenbatch_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    app.session_interface = SessionInterface(ended)


def cookie_session(app: Flask, environ: Mapping[str, Any]) -> Mapping[str, Any]:
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


# -- CSRF ---------------------------------------------------------------------------------------


def csrf_token() -> str:
    """The session's form token, for the hidden `csrf_token` field of classic forms (login, logout)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def csrf_ok(presented: str | None) -> bool:
    """Whether a form carried this session's token."""
    expected = session.get("csrf")
    return bool(presented and expected) and hmac.compare_digest(presented.encode(), expected.encode())


def csrf_header_sent() -> bool:
    """Whether the request carries the CSRF header, which a cross-site form cannot send."""
    return request.headers.get(CSRF_HEADER) == CSRF_HEADER_VALUE
