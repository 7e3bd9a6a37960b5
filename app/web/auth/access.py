"""Who may use the server: the one access decision, `decide`, that HTTP requests (`check_request`) and
websocket upgrades (`websocket_gate`) both get, so one client gets the same answer through either door.

In order: the Host name (an open loopback server), then the Origin (for changes and websockets), then
credentials (a valid bearer token, a `?token=` on websockets, or the login cookie), unless the path needs
none. Cookie-signed changes over HTTP must also carry the CSRF header.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, redirect, request, session, url_for

from ..errors import Refusal, error_response, refusal_response, wants_json
from . import origin
from .origin import OriginKey
from .proxies import client_address
from .session import (
    CSRF_HEADER,
    CSRF_HEADER_VALUE,
    EndedSessions,
    cookie_session,
    csrf_header_sent,
    logged_out,
    login_mark,
    signed_in,
)
from .throttle import FailedTokens, failures_of
from .tokens import presented_token, token_in

EXTENSION = "greenbatch.auth"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes answer without credentials
OPEN_ENDPOINTS = frozenset({"static", "auth.login", "auth.logout"})

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


@dataclass(frozen=True)
class AccessRules:
    """The access rules of one server, built once from its settings."""

    tokens: tuple[str, ...]
    secret: bytes
    allowed_origins: frozenset[OriginKey]
    loopback_names_only: bool  # open and bound to loopback: refuse other Host names (DNS rebinding)
    ended: EndedSessions

    @property
    def enabled(self) -> bool:
        """Whether requests need a token or a login."""
        return bool(self.tokens)

    def token_ok(self, presented: str) -> bool:
        """Whether `presented` is one of the tokens, compared in constant time."""
        return token_in(presented, self.tokens)

    def session_mark(self, token: str) -> str:
        """What a login keeps in the cookie: a keyed hash of its token, so removing the token ends the session."""
        return login_mark(self.secret, token)

    def session_ok(self, data: Mapping[str, Any]) -> bool:
        """Whether session data comes from a login with a token that is still configured, not ended by a logout."""
        return signed_in(data, self.secret, self.tokens, self.ended)

    def session_ended(self, data: Mapping[str, Any]) -> bool:
        """Whether session data is from a login that has ended: logged out (this copy of the cookie or another)."""
        return logged_out(data, self.ended)

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
        token = presented_token(environ, allow_query)
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
        return origin.host_problem(environ, self.allowed_origins, self.loopback_names_only)

    def origin_problem(self, environ: Mapping[str, Any]) -> str | None:
        """Why the request's Origin may not act here, or None: no Origin, this server's host, or an allowed origin."""
        return origin.origin_problem(environ, self.allowed_origins)


def rules_of(app: Flask) -> AccessRules:
    """The app's access rules."""
    return app.extensions[EXTENSION]


def rules_of_current() -> AccessRules:
    """The current app's access rules."""
    return rules_of(current_app)


def decide(
    rules: AccessRules,
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
    problem = rules.host_problem(environ)
    if problem:
        return Refusal(403, "host_not_allowed", problem)
    if changing or websocket:
        problem = rules.origin_problem(environ)
        if problem:
            return Refusal(403, "cross_origin_request", problem)
    if not rules.enabled or not needs_credentials:
        return "open"
    verdict = rules.identify(environ, session_data, allow_query=allow_query, failures=failures, client=client)
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
        rules_of_current(),
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
    if decision == "cookie" and changing and not csrf_header_sent():
        return error_response(403, "csrf_header_missing", CSRF_MISSING)
    return None


def websocket_gate(app: Flask) -> Callable[[dict], Refusal | None]:
    """The gate the websocket handler asks before its 101: the same access decision as HTTP; None upgrades.

    Besides the header and the cookie, it takes `?token=` for clients that cannot set headers; that
    token then shows in proxy logs and browser history, so prefer the header (our access log redacts it).
    """
    failures = failures_of(app)

    def gate(environ: dict) -> Refusal | None:
        decision = decide(
            rules_of(app),  # asked on every upgrade: SIGHUP may replace the rules
            failures,
            environ,
            cookie_session(app, environ),
            client_address(environ, app),
            changing=False,
            websocket=True,
            needs_credentials=True,
            allow_query=True,
        )
        return decision if isinstance(decision, Refusal) else None

    return gate
