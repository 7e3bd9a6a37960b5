"""One URL, hop by hop: the redirect, retry and credential policy every client shares.

A transport makes one exchange; this module decides what happens between them: each redirect target
passes the URL check (its address is checked when the transport resolves it), credentials never
follow a redirect to another origin, and connection errors are retried with a backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from urllib.parse import urljoin, urlsplit

import gevent

from ..core.options import BatchOptions
from ..core.results import ErrorKind, Result
from . import guard
from .base import Hop, Transport
from .errors import FetchError

RETRY_BACKOFF = 0.2  # first retry waits this long, doubling each time
# Request headers that carry credentials: dropped when a redirect leaves the batch's origin (README, Options).
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
        "private-token",
        "x-csrf-token",
        "x-xsrf-token",
        "x-amz-security-token",
    }
)


def follow(
    transport: Transport,
    result: Result,
    options: BatchOptions,
    started: float,
    max_url_length: int,
    sleep: Callable[[float], None] = gevent.sleep,
) -> None:
    """Fetch result.url hop by hop until a final response or a limit, filling in `result`; FetchError or
    guard.GuardError when the URL ends without a response. `started` is the fetch's perf_counter start."""
    url = result.url  # checked at submission; each redirect target is checked below
    headers: Mapping[str, str] = options.headers  # never mutated: a cross-origin hop gets a filtered copy
    while True:
        hop_started = time.perf_counter()
        hop = attempt(transport, url, headers, options, result, sleep)
        location = hop.location
        if location is None:
            break
        result.redirects.append({"url": url, "status": hop.status})
        if len(result.redirects) > options.max_redirects:
            raise FetchError(
                ErrorKind.TOO_MANY_REDIRECTS,
                f"more than {options.max_redirects} redirects; the last pointed to {location[:300]}",
            )
        url = guard.check_url(urljoin(url, location.strip()), max_url_length)
        if origin(url) != origin(result.url):
            # Like browsers and requests: credentials meant for one host never follow a redirect to another.
            headers = {k: v for k, v in headers.items() if k.lower() not in SENSITIVE_HEADERS}
    redirect_ms = round((hop_started - started) * 1000, 3)
    result.final_url = url
    result.status_code = hop.status
    result.ok = options.accepts(hop.status)
    result.bytes = hop.bytes
    result.content_type = hop.headers.get("Content-Type")
    result.timings = dict(hop.timings)
    result.timings["redirect"] = redirect_ms
    result.timings["ttfb"] = round(
        redirect_ms + sum(hop.timings.get(k) or 0 for k in ("dns", "connect", "tls", "wait")), 3
    )


def attempt(
    transport: Transport,
    url: str,
    headers: Mapping[str, str],
    options: BatchOptions,
    result: Result,
    sleep: Callable[[float], None] = gevent.sleep,
) -> Hop:
    """One hop, retried on connection errors (options.retries times at most), backing off between tries."""
    tries = 0
    while True:
        tries += 1
        # Attempts count tries of the URL (1 + retries used), not the hops of its redirect chain.
        result.attempts = max(result.attempts, tries)
        try:
            return transport.fetch(
                url,
                method=options.method,
                headers=headers,
                connect_timeout=options.connect_timeout,
                read_timeout=options.timeout,
                max_bytes=options.max_bytes,
            )
        except FetchError as exc:
            if not exc.retryable or tries > options.retries:
                raise
            sleep(RETRY_BACKOFF * 2 ** (tries - 1))


def origin(url: str) -> tuple[str, str]:
    """Scheme and host:port of a URL, to tell a cross-origin redirect."""
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.netloc or "").lower()
