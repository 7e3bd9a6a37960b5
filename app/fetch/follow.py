"""One URL, hop by hop: the redirect, retry and credential policy every client shares.

A transport makes one exchange; this module decides what happens between them: each redirect target
passes the URL check (its address is checked when the transport resolves it), credentials never
follow a redirect to another origin, and connection errors are retried with a backoff. It also says what
the final response means: ok when the batch accepts its status, else a `status` error saying why.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import gevent

from ..core.options import BatchOptions
from ..core.results import ErrorKind, Result
from . import guard
from .base import Hop, Transport
from .errors import DeadlineExceeded, FetchError, Resume, RetryLater

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


class HopGate(Protocol):
    """Where a paced batch's requests wait their turn at their host (app/runs/hosts.py)."""

    def before_request(self, url: str) -> None:
        """Wait until the host of `url` may take one more request (its cap, interval and pause), then count it;
        RetryLater when the URL must wait in that host's queue instead."""

    def pause(self, url: str, seconds: float, reason: str) -> None:
        """Hold every request to the host of `url` for `seconds` (a Retry-After)."""

    def refused(self, url: str, status: int, retrying: bool) -> None:
        """Note an answer with one of the batch's retry_statuses (and whether the URL tries again)."""

    def no_answer(self, url: str) -> None:
        """Note that the request just started to `url` got no answer (its connection failed): the host took none."""

    def retry_later(self, url: str, after: float = 0.0) -> None:
        """Send the URL back to its host's queue to be tried again after the pause, and not before `after`
        seconds from now (its own backoff) (raises)."""


_KEEP_BODY: dict[bool, dict[str, bool]] = {True: {"keep_body": True}, False: {}}  # fetch()'s extra argument


def follow(
    transport: Transport,
    result: Result,
    options: BatchOptions,
    started: float,
    max_url_length: int,
    sleep: Callable[[float], None] = gevent.sleep,
    gate: HopGate | None = None,
    resume: Resume | None = None,
) -> Hop:
    """Fetch result.url hop by hop until a final response or a limit, filling in `result`, and return the final
    response (its body kept when a check needs it); FetchError or guard.GuardError when the URL ends without a
    response. `started` is the fetch's perf_counter start.

    When the deadline passes mid-hop, result.timings keeps the phases that hop had completed. `gate`, for a
    paced batch, is passed before every request (each hop and each retry); when it sends the URL back to its
    host's queue (RetryLater), the URL goes on later at `resume`, the hop it was at.
    """
    url = result.url  # checked at submission; each redirect target is checked below
    headers: Mapping[str, str] = options.headers  # never mutated: a cross-origin hop gets a filtered copy
    method = options.first_method
    head_tries = 0  # with HEAD,GET, the HEAD's tries: the GET's count on after them in `attempts`
    if resume is not None:
        url, headers, method, head_tries = resume.url, resume.headers, resume.method, resume.head_tries
    while True:
        hop_started = time.perf_counter()
        try:
            hop = attempt(transport, url, headers, options, result, started, sleep, gate, method, head_tries)
        except DeadlineExceeded as exc:
            if exc.phases is not None:
                result.timings = {**exc.phases, "redirect": round((hop_started - started) * 1000, 3)}
            raise
        except RetryLater as exc:
            exc.resume = Resume(url, headers, method, head_tries)
            raise
        result.retried = 0  # a retry budget is per hop: the next hop starts its own
        location = hop.location
        if location is None:
            if method == "HEAD" and options.method == "HEAD,GET":
                if hop.status in options.head_fallback_statuses:
                    # The server will not answer HEAD here: ask the same URL with GET, one more attempt.
                    method = "GET"
                    head_tries = result.attempts
                    result.attempts += 1
                    continue
            break
        if hop.seen is None:
            result.redirects.append({"url": url, "status": hop.status})
        else:
            result.redirects.append({"url": url, "status": hop.status, **hop.seen})
        if len(result.redirects) > options.max_redirects:
            raise too_many_redirects(result, location, options.max_redirects, max_url_length)
        url = guard.check_url(urljoin(url, location.strip()), max_url_length)
        if origin(url) != origin(result.url):
            # Like browsers and requests: credentials meant for one host never follow a redirect to another.
            headers = {k: v for k, v in headers.items() if k.lower() not in SENSITIVE_HEADERS}
    redirect_ms = round((hop_started - started) * 1000, 3)
    if options.method == "HEAD,GET":
        result.method = method
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
    result.captured = hop.seen
    result.timings = dict(hop.timings)
    result.timings["redirect"] = redirect_ms
    result.timings["ttfb"] = round(
        redirect_ms + sum(hop.timings.get(k) or 0 for k in ("dns", "connect", "tls", "wait")), 3
    )
    return hop


def attempt(
    transport: Transport,
    url: str,
    headers: Mapping[str, str],
    options: BatchOptions,
    result: Result,
    started: float,
    sleep: Callable[[float], None] = gevent.sleep,
    gate: HopGate | None = None,
    method: str | None = None,
    head_tries: int = 0,
) -> Hop:
    """One hop, retried on connection errors and on options.retry_statuses (options.retries times at most),
    backing off between tries, or after the host's Retry-After when it sends one (see retry_after); `started` is
    the URL's perf_counter start, from which its deadline (options.timeout) counts, and `head_tries` the tries a
    HEAD,GET batch's HEAD made before this GET (they count in `attempts`, not against its retries)."""
    # A URL sent back to its host's queue goes on counting its tries where it left off.
    tries = result.retried
    while True:
        tries += 1
        if gate is not None:
            try:
                gate.before_request(url)
            except RetryLater:
                result.retried = tries - 1  # this try was never sent: it is made again when the URL goes on
                raise
        # Attempts count tries of the URL sent (1 + retries used), not the hops of its redirect chain.
        result.attempts = max(result.attempts, head_tries + tries)
        try:
            # keep_body is passed only when checks read the body: a transport without their needs takes no such argument
            hop = transport.fetch(
                url,
                method=method or options.method,
                headers=headers,
                connect_timeout=options.connect_timeout,
                read_timeout=options.timeout,
                max_bytes=options.max_bytes,
                **_KEEP_BODY[options.needs_body],
            )
        except FetchError as exc:
            if gate is not None and exc.retryable:
                # A retryable error is a connection that failed before any answer: the host took no request.
                gate.no_answer(url)
            if not exc.retryable or tries > options.retries:
                raise
            backoff = RETRY_BACKOFF * 2 ** (tries - 1)
            # A paced batch backs off in the host's queue, where waiting is not fetch time; else the backoff is.
            if time.perf_counter() + (0.0 if gate is not None else backoff) >= started + options.timeout:
                # The deadline passes before the retry could start: the URL ends with this try's error, not `deadline`.
                raise
            if gate is not None:
                result.retried = tries
                gate.retry_later(url, backoff)  # the URL's own backoff: the host's other URLs go on meanwhile
            sleep(backoff)
            continue
        if not options.retries or hop.status not in options.retry_statuses:
            return hop
        retrying = tries <= options.retries
        try:
            wait = retry_after(hop, options) if options.respect_retry_after else None
        finally:
            if gate is not None:
                gate.refused(url, hop.status, retrying and not sys.exc_info()[0])
        if wait is not None and gate is not None:
            gate.pause(url, wait, f"{hop.status} Retry-After: {hop.headers.get('Retry-After')}")
        if not retrying:
            return hop
        result.refused += 1
        if gate is not None:
            result.retried = tries
            # A paced batch backs off in the host's queue, where waiting is not fetch time. A backoff without a
            # Retry-After is this URL's own: the host's other URLs go on (a Retry-After paused the host above).
            gate.retry_later(url, RETRY_BACKOFF * 2 ** (tries - 1) if wait is None else 0.0)
        sleep(RETRY_BACKOFF * 2 ** (tries - 1) if wait is None else wait)


def retry_after(hop: Hop, options: BatchOptions) -> float | None:
    """The seconds a retried status's Retry-After asks for (delay-seconds or an HTTP date); None without one.

    A wait past options.max_retry_after ends the URL: a `rate_limited` FetchError naming the header's value.
    """
    raw = (hop.headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    if raw.isascii() and raw.isdigit():  # str.isdigit() also takes "²", which float() refuses
        seconds = float(raw)
    else:
        try:
            seconds = parsedate_to_datetime(raw).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None  # unreadable: retried with the usual backoff
        seconds = max(0.0, seconds)
    if seconds > options.max_retry_after:
        raise FetchError(
            ErrorKind.RATE_LIMITED,
            f"{hop.status} with Retry-After: {raw[:100]} ({seconds:.0f} s), longer than the batch's max_retry_after "
            f"of {options.max_retry_after:g} s; raise max_retry_after or try the URL later",
        )
    return seconds


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
