"""Fetch errors: a hop that ended without a usable response, by kind, with what its submitter may read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..core.results import ErrorKind

# A hop's phases in the order they happen; a deadline names the first one a hop had not completed.
PHASES = ("dns", "connect", "tls", "wait", "download")
REUSED = {"dns": None, "connect": None, "tls": None}  # the phases of a hop on a kept-alive connection
# What had not happened yet when the deadline passed during each phase.
_MISSING = {
    "dns": "no address for the host",
    "connect": "no connection",
    "tls": "no TLS handshake",
    "wait": "no first byte",
    "download": "the body still coming",
}


class FetchError(Exception):
    """A hop that ended without a usable response; `kind` is an ErrorKind's value.

    str() is the message anyone who submitted the URL may read; `detail`, when set, is the full reason
    (the address and rule of a blocked hop, the resolver's error) for the log and for servers that
    explain refusals (GREENBATCH_EXPLAIN_BLOCKED).
    """

    def __init__(self, kind: ErrorKind | str, message: str, retryable: bool = False, detail: str | None = None):
        super().__init__(message)
        self.kind: str = ErrorKind(kind).value  # a kind nobody documents is a bug here, not a new kind in results
        self.retryable = retryable
        self.detail = detail


def too_large(cap: int, url: str) -> FetchError:
    """The body passed its cap."""
    return FetchError(
        "too_large", f"body passed the cap of {cap} decoded bytes at {url}; raise options.max_bytes to read more"
    )


def body_read_timeout(url: str) -> FetchError:
    """The body stopped coming for longer than the read timeout."""
    return FetchError("read_timeout", f"no data from {url} within the read timeout")


def undecodable(url: str, exc: BaseException) -> FetchError:
    """The body's content encoding did not decode."""
    return FetchError("other", f"could not decode the body of {url}: {exc}")


def broken_body(url: str, exc: BaseException) -> FetchError:
    """The connection failed while the body was coming."""
    return FetchError("other", f"connection broken while reading {url}: {exc}")


def unresolved(host: str, exc: BaseException) -> FetchError:
    """A name that did not resolve: the resolver's words only in `detail`, since they tell internal names apart."""
    return FetchError("dns", f"could not resolve {host}", retryable=True, detail=f"could not resolve {host}: {exc}")


def reset_before_response(host: str) -> FetchError:
    """The peer reset the connection before it answered; worth a retry."""
    return FetchError("other", f"connection reset by {host} before a response", retryable=True)


def is_reset(exc: BaseException) -> bool:
    """Whether an error is the peer resetting the connection."""
    return isinstance(exc, (ConnectionResetError, BrokenPipeError)) or "reset" in str(exc).lower()


@dataclass(frozen=True)
class Resume:
    """Where a URL sent back to its host's queue goes on: the hop it was at, with that hop's headers and method, and
    the tries its HEAD made before a HEAD,GET batch asked with GET."""

    url: str
    headers: Mapping[str, str]
    method: str
    head_tries: int = 0


class RetryLater(Exception):
    """A URL's host cannot take its next request now (a Retry-After pause, or a redirect to a host that is full
    or paused): the engine queues it again behind that host.

    Raised by the engine's hop gate, so the URL waits in the host's queue, holding neither a fetcher nor its
    deadline; follow() sets `resume`, the hop it goes on at.
    """

    resume: Resume | None = None


class DeadlineExceeded(Exception):
    """A URL's total time budget ran out: raised into its fetch by the engine's gevent.Timeout.

    `phases` are what the hop in progress had completed (dns, connect, tls and wait in ms; REUSED on a
    kept-alive connection), noted by the transport on the way out; None when no hop was in progress.
    """

    phases: dict[str, float | None] | None = None


def deadline_message(deadline: float, phases: Mapping[str, float | None] | None, hop_ms: float, redirects: int) -> str:
    """What a URL whose deadline passed was waiting for, for how long, and the phases its last hop had completed.

    `hop_ms` is the time since that hop started; `redirects` the hops before it.
    """
    if phases is None:
        return f"no complete response within the {deadline:g} s deadline"
    stage = next((phase for phase in PHASES if phase not in phases), "download")
    notes = ["reused connection"] if phases.get("dns", 0.0) is None else []
    done = [f"{phase} {_ms(value)} ms" for phase in PHASES if (value := phases.get(phase)) is not None]
    if done:
        notes.append(", ".join(done) + " done")
    if redirects:
        notes.append(f"{redirects} redirect{'s' if redirects != 1 else ''} before")
    waited = (hop_ms - sum(value or 0.0 for value in phases.values())) / 1000
    shown = f"{waited:.1f}" if waited >= 0.1 else f"{max(waited, 0.0):.2g}"
    return f"the {deadline:g} s deadline passed with {_MISSING[stage]} after {shown} s" + (
        f" ({'; '.join(notes)})" if notes else ""
    )


def _ms(value: float) -> str:
    """Milliseconds for a message: two significant digits below 10, whole numbers above."""
    return f"{value:.2g}" if value < 10 else f"{value:.0f}"
