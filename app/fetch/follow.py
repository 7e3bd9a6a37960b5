"""One URL, hop by hop: the redirect, retry and credential policy every client shares.

A transport makes one exchange; this module decides what happens between them: each redirect target
passes the URL check (its address is checked when the transport resolves it), credentials never
follow a redirect to another origin, and connection errors are retried with a backoff. It also says what
the final response means: ok when the batch accepts its status, else a `status` error saying why.
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
from .errors import DeadlineExceeded, FetchError

RETRY_BACKOFF = 0.2  # first retry waits this long, doubling each time
LOOP_STEP_CHARS = 80  # each URL a redirect loop's message names is cut to this many characters
LOOP_STEPS = 6  # a longer loop's message names its first steps and its last
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
) -> Mapping[str, str]:
    """Fetch result.url hop by hop until a final response or a limit, filling in `result`, and return the final
    response's headers; FetchError or guard.GuardError when the URL ends without a response. `started` is the
    fetch's perf_counter start.

    When the deadline passes mid-hop, result.timings keeps the phases that hop had completed.
    """
    url = result.url  # checked at submission; each redirect target is checked below
    headers: Mapping[str, str] = options.headers  # never mutated: a cross-origin hop gets a filtered copy
    while True:
        hop_started = time.perf_counter()
        try:
            hop = attempt(transport, url, headers, options, result, sleep)
        except DeadlineExceeded as exc:
            if exc.phases is not None:
                result.timings = {**exc.phases, "redirect": round((hop_started - started) * 1000, 3)}
            raise
        location = hop.location
        if location is None:
            break
        result.redirects.append({"url": url, "status": hop.status})
        if len(result.redirects) > options.max_redirects:
            raise too_many_redirects(result, location, options.max_redirects, max_url_length)
        url = guard.check_url(urljoin(url, location.strip()), max_url_length)
        if origin(url) != origin(result.url):
            # Like browsers and requests: credentials meant for one host never follow a redirect to another.
            headers = {k: v for k, v in headers.items() if k.lower() not in SENSITIVE_HEADERS}
    redirect_ms = round((hop_started - started) * 1000, 3)
    result.final_url = url
    result.status_code = hop.status
    result.ok = options.accepts(hop.status)
    if not result.ok:
        result.error = {
            "kind": ErrorKind.STATUS.value,
            "message": f"{hop.status} is not an accepted status ({options.accept_status_shown})",
        }
    result.bytes = hop.bytes
    result.content_type = hop.headers.get("Content-Type")
    result.timings = dict(hop.timings)
    result.timings["redirect"] = redirect_ms
    result.timings["ttfb"] = round(
        redirect_ms + sum(hop.timings.get(k) or 0 for k in ("dns", "connect", "tls", "wait")), 3
    )
    return hop.headers


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


def too_many_redirects(result: Result, location: str, limit: int, max_url_length: int) -> FetchError:
    """The error of a URL past its redirect limit: the loop it went round, else where the last redirect pointed."""
    chain = [hop["url"] for hop in result.redirects]
    try:
        # Written as the chain's URLs are, to compare; a target the check refuses is in no chain.
        target = guard.check_url(urljoin(chain[-1], location.strip()), max_url_length)
    except guard.GuardError:
        target = ""
    if target not in chain:
        return FetchError(
            ErrorKind.TOO_MANY_REDIRECTS, f"more than {limit} redirects; the last pointed to {location[:300]}"
        )
    loop = chain[len(chain) - 1 - chain[::-1].index(target) :]  # from the target's last visit: the shortest loop
    first = min(loop, key=chain.index)  # told from the step the chain reached first: /a -> /b -> /a
    turn = loop.index(first)
    return FetchError(
        ErrorKind.TOO_MANY_REDIRECTS, f"redirect loop: {loop_text(loop[turn:] + loop[:turn], result.url)}"
    )


def loop_text(loop: list[str], start: str) -> str:
    """A redirect loop as `/a -> /b -> /a`: paths when every step is on the origin of `start`, else whole URLs."""
    home = origin(start)
    if all(origin(url) == home for url in loop):
        steps = [urlsplit(url)._replace(scheme="", netloc="").geturl() or "/" for url in loop]
    else:
        steps = list(loop)
    steps = [step if len(step) <= LOOP_STEP_CHARS else step[: LOOP_STEP_CHARS - 3] + "..." for step in steps]
    if len(steps) == 1:
        return f"{steps[0]} redirects to itself"
    if len(steps) > LOOP_STEPS:
        steps = [*steps[: LOOP_STEPS - 2], "...", steps[-1]]
    return " -> ".join([*steps, steps[0]])


def origin(url: str) -> tuple[str, str]:
    """Scheme and host:port of a URL, to tell a cross-origin redirect."""
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.netloc or "").lower()
