"""The transport contract: how one HTTP exchange (one hop, no redirects) is made, and what every
transport must measure and send. Each client (requests_client, fast_client) implements it; neither
imports the other, and redirects, retries and credentials are app/fetch/follow.py's policy.
"""

from __future__ import annotations

import builtins  # Hop's `bytes` field hides the type in its class
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

VERSION = "0.1.0"  # greenbatch's version, as pyproject.toml has it
PROJECT_URL = "https://github.com/greenbatch"
USER_AGENT = f"greenbatch/{VERSION} (+{PROJECT_URL})"  # sent unless GREENBATCH_USER_AGENT or a batch's headers say
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DECODE_CHUNK = 16 * 1024  # small decode steps keep a compression bomb from inflating much past the cap
REDIRECT_BODY_CAP = 64 * 1024  # redirect bodies are drained (so the connection is reused) up to this much
MAX_CAPTURED_VALUE = 1024  # a captured header's value is target-controlled text: cut to this many characters

# One address as socket.getaddrinfo gives it: (family, type, proto, canonname, sockaddr).
AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]
# host, port -> the addresses to connect to, each checked by the SSRF guard (guard.GuardedResolver).
Resolver = Callable[[str, int], list[AddrInfo]]


@dataclass
class Hop:
    """One HTTP exchange: the response's status and headers, its body size, and where time went."""

    status: int
    headers: Mapping[str, str]
    bytes: int
    timings: dict[str, float | None] = field(default_factory=dict)
    # What a batch's `capture` option asked to record of this exchange (captured()); None when it asked nothing.
    seen: dict[str, Any] | None = None
    body: builtins.bytes | None = None  # the decoded body, kept only when asked (a batch's checks read it)

    @property
    def connection_reused(self) -> bool:
        """Whether a kept-alive connection carried this hop (it had no connect step)."""
        return self.timings.get("connect") is None

    @property
    def location(self) -> str | None:
        """The redirect target, when this hop is a redirect that names one."""
        return self.headers.get("Location") if self.status in REDIRECT_STATUSES else None


class Transport(Protocol):
    """Fetches one hop; one instance per batch, closed when the batch ends."""

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
    ) -> Hop: ...

    def close(self) -> None: ...


def ms(seconds: float) -> float:
    """Seconds to milliseconds, rounded for display."""
    return round(seconds * 1000, 3)


def hop_timings(
    connecting: dict[str, float | None] | None, started: float, first_byte: float, done: float
) -> dict[str, float | None]:
    """dns, connect and tls as measured (all null on a reused connection), then wait and download."""
    timings = {"dns": None, "connect": None, "tls": None, **(connecting or {})}
    spent = (timings["dns"] or 0) + (timings["connect"] or 0) + (timings["tls"] or 0)
    timings["wait"] = round(max(0.0, ms(first_byte - started) - spent), 3)
    timings["download"] = ms(done - first_byte)
    return timings


def captured(
    headers: Mapping[str, str],
    names: Sequence[str],
    remote_ip: str | None,
    http_version: str | None,
    tls: dict[str, Any] | None,
    tls_wanted: bool,
) -> dict[str, Any]:
    """A hop's captured fields: the address spoken to, the protocol, the Server header, the listed headers (each
    value cut to MAX_CAPTURED_VALUE), and `tls` when asked for (null over plain http)."""
    server = headers.get("Server")
    seen: dict[str, Any] = {
        "remote_ip": remote_ip,
        "http_version": http_version,
        "server": None if server is None else server[:MAX_CAPTURED_VALUE],
        "headers": {name: value[:MAX_CAPTURED_VALUE] for name in names if (value := headers.get(name)) is not None},
    }
    if tls_wanted:
        seen["tls"] = tls
    return seen


def body_cap(status: int, headers: Mapping[str, str], max_bytes: int) -> int:
    """Decoded bytes a hop may read: a redirect's body is only drained, up to REDIRECT_BODY_CAP."""
    return min(max_bytes, REDIRECT_BODY_CAP) if status in REDIRECT_STATUSES and "Location" in headers else max_bytes
