"""Who may use the server, and browser safety, one job per module; `init_app` wires them into the app:

- tokens: which API tokens are accepted (read again on SIGHUP), and where a request sends one
- throttle: how many invalid tokens a client may send before its tokens go unchecked (429)
- origin: which Host names and Origins the server answers (DNS rebinding, cross-site requests)
- proxies: whose X-Forwarded-* headers count, and so each request's client address
- session: the login cookie, its key, the sessions a logout ended, and the CSRF rule
- headers: the security headers every response carries
- access: the one access decision, for HTTP requests and websocket upgrades alike
- login: the sign-in and sign-out pages

Authentication is on when any API token is configured (GREENBATCH_API_TOKENS, GREENBATCH_TOKEN_FILE).
Without tokens the server is open: quietly when bound to loopback (it then answers only loopback Host
names, which defeats DNS rebinding), with a loud warning when bound anywhere else.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

from flask import Flask

from ...core.config import Config
from . import session
from .access import EXTENSION, AccessRules, check_request, rules_of, websocket_gate
from .headers import CONTENT_SECURITY_POLICY, add_security_headers
from .login import bp, safe_next
from .origin import is_loopback, origin_key, parse_origins, same_host, split_host
from .proxies import PROXIES_EXTENSION, TrustedProxies, client_address, parse_proxies, proxies_of
from .session import ENDED_SESSIONS_FILE, SESSION_LIFETIME, EndedSessions, csrf_token, load_secret_key
from .throttle import FAILURES_EXTENSION, FailedTokens
from .tokens import MAKE_TOKEN, load_tokens, reread

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "EndedSessions",
    "FailedTokens",
    "AccessRules",
    "TrustedProxies",
    "announce",
    "client_address",
    "exposed_without_auth",
    "init_app",
    "is_loopback",
    "load_secret_key",
    "load_tokens",
    "origin_key",
    "parse_origins",
    "parse_proxies",
    "proxies_of",
    "reload_tokens",
    "safe_next",
    "same_host",
    "split_host",
    "websocket_gate",
]

log = logging.getLogger(__name__)

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


def init_app(app: Flask) -> AccessRules:
    """Read tokens and keys, configure the session cookie, and check every request and response."""
    config: Config = app.config["GREENBATCH"]
    tokens = load_tokens(config)
    app.secret_key = load_secret_key(config)
    ended = EndedSessions(os.path.join(config.data_dir, ENDED_SESSIONS_FILE), SESSION_LIFETIME.total_seconds())
    rules = AccessRules(
        tokens=tokens,
        secret=app.secret_key.encode(),
        allowed_origins=parse_origins(config.allowed_origins),
        loopback_names_only=not tokens and is_loopback(config.host),
        ended=ended,
    )
    app.extensions[EXTENSION] = rules
    app.extensions[PROXIES_EXTENSION] = TrustedProxies.from_config(config)
    app.extensions[FAILURES_EXTENSION] = FailedTokens(config.auth_failures, config.auth_failure_window)
    session.init_app(app, ended)
    app.before_request(check_request)
    app.after_request(add_security_headers)
    app.jinja_env.globals.update(csrf_token=csrf_token, auth_enabled=rules.enabled)
    app.register_blueprint(bp)
    announce(config, rules)
    return rules


def reload_tokens(app: Flask) -> bool:
    """Read the API tokens again (SIGHUP), so a token file's changes apply without a restart; True if they do.

    Sessions signed in with a token that is gone end with it; `tokens.reread` says when the set in use stays.
    """
    rules = rules_of(app)
    tokens = reread(rules.tokens, app.config["GREENBATCH"])
    if tokens is None:
        return False
    app.extensions[EXTENSION] = replace(rules, tokens=tokens)
    return True


def exposed_without_auth(host: str, tokens: tuple[str, ...]) -> bool:
    """Whether anyone who can reach the port may use the server: bound beyond loopback with no token."""
    return not tokens and not is_loopback(host)


def announce(config: Config, rules: AccessRules) -> None:
    """Say at start who can use the server; shout if that is anyone who can reach the port."""
    if config.proxy_hops:
        log.info(
            "trusting X-Forwarded-* headers from %d proxy hop(s), the nearest connecting from %s "
            "(GREENBATCH_TRUSTED_PROXIES)",
            config.proxy_hops,
            config.trusted_proxies,
        )
    if rules.enabled:
        log.info("authentication is on: %d API token(s); the dashboard signs in at /login", len(rules.tokens))
    elif exposed_without_auth(config.host, rules.tokens):
        log.warning(EXPOSED_WARNING, config.host, MAKE_TOKEN)
    else:
        log.info("no API tokens are set: serving clients on this machine (%s) without authentication", config.host)
