"""Fetch errors: a hop that ended without a usable response, by kind, with what its submitter may read."""

from __future__ import annotations

from ..core.results import ErrorKind


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
