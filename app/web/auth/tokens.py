"""Which API tokens this server accepts: read from GREENBATCH_API_TOKENS and GREENBATCH_TOKEN_FILE at start
and again on SIGHUP, compared in constant time, and taken from the request's bearer header (or, where allowed,
its `?token=` parameter). Any configured token turns authentication on.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from ...core.config import Config, ConfigError, env_name

log = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 16
MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


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


def reread(current: tuple[str, ...], config: Config) -> tuple[str, ...] | None:
    """The API tokens read again (SIGHUP), or None when the set in use stays (the log says why).

    A reload changes which tokens are valid, never whether tokens are needed: a set that cannot be read,
    or is empty, leaves the old one in use, and a server started without tokens stays open (restart it
    with tokens to close it).
    """
    if not current:
        log.warning(
            "tokens not reloaded: this server started without API tokens and stays open; "
            "restart it with GREENBATCH_API_TOKENS or GREENBATCH_TOKEN_FILE set to require them"
        )
        return None
    try:
        tokens = load_tokens(config)
    except ConfigError as exc:
        log.error("tokens not reloaded, the %d in use stay valid: %s", len(current), exc)
        return None
    if not tokens:
        log.error(
            "tokens not reloaded, the %d in use stay valid: the new set is empty, and a reload never "
            "turns authentication off",
            len(current),
        )
        return None
    kept = len(set(tokens) & set(current))
    log.info(
        "tokens reloaded: %d API token(s) in use, %d new, %d removed",
        len(tokens),
        len(tokens) - kept,
        len(current) - kept,
    )
    return tokens


def token_in(presented: str, tokens: tuple[str, ...]) -> bool:
    """Whether `presented` is one of `tokens`, compared in constant time."""
    candidate = presented.encode("utf-8", "replace")
    found = False
    for token in tokens:
        found |= hmac.compare_digest(candidate, token.encode("ascii"))
    return found


def bearer_token(environ: Mapping[str, Any]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def presented_token(environ: Mapping[str, Any], allow_query: bool) -> str | None:
    """The token a request sends: its bearer header, else (where `allow_query`) its `?token=`; None for neither."""
    token = bearer_token(environ)
    if token is None and allow_query:
        token = (parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).get("token") or [None])[0]
    return token
