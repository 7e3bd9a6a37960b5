"""Which hosts and origins this server answers: a request that changes something, and every websocket, may
come only from a page of this server's own host or of an origin in GREENBATCH_ALLOWED_ORIGINS; an open server
bound to loopback answers only loopback Host names (or those allowed origins), which defeats DNS rebinding.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ...core.config import ConfigError, env_name

OriginKey = tuple[str, str, int]  # (scheme, host, port), the default port filled in


def is_loopback(host: str) -> bool:
    """Whether `host` (a bind address or Host-header name) only reaches this machine: 127.0.0.0/8, ::1, localhost."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def origin_key(origin: str) -> OriginKey | None:
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


def same_host(key: OriginKey, host_header: str) -> bool:
    """Whether an origin names the host and port the request was sent to."""
    scheme, name, port = key
    host_name, host_port = split_host(host_header)
    return name == host_name and port == (host_port or (443 if scheme == "https" else 80))


def parse_origins(text: str) -> frozenset[OriginKey]:
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


def host_problem(
    environ: Mapping[str, Any], allowed_origins: frozenset[OriginKey], loopback_names_only: bool
) -> str | None:
    """Why an open loopback server will not answer this Host name, or None."""
    host = environ.get("HTTP_HOST")
    if not loopback_names_only or not host:
        return None
    name, _ = split_host(host)
    if is_loopback(name) or any(name == key[1] for key in allowed_origins):
        return None
    return (
        f"this server runs without API tokens on loopback, so it only answers requests for localhost "
        f"or 127.0.0.1, not {host[:200]!r} (a guard against DNS rebinding); to use another name, set "
        "GREENBATCH_API_TOKENS or add that name's origin to GREENBATCH_ALLOWED_ORIGINS"
    )


def origin_problem(environ: Mapping[str, Any], allowed_origins: frozenset[OriginKey]) -> str | None:
    """Why the request's Origin may not act here, or None: no Origin, this server's host, or an allowed origin."""
    origin = environ.get("HTTP_ORIGIN")
    if origin is None:
        return None
    key = origin_key(origin)
    host = environ.get("HTTP_HOST", "")
    if key is not None and (key in allowed_origins or same_host(key, host)):
        return None
    return (
        f"requests from origin {origin[:200]!r} may not act on this server (its host is {host[:200]!r}); "
        "if a proxy rewrites the Host header, pass it through (nginx: proxy_set_header Host $host) "
        "or add the origin to GREENBATCH_ALLOWED_ORIGINS"
    )
