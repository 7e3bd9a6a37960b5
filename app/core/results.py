"""What a batch produces: one result per URL, the error kinds that end a fetch, and batch statuses."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .clock import now_iso


class ErrorKind(StrEnum):
    """Why a URL ended without an accepted response; the value is what results, exports and metrics show."""

    STATUS = "status"  # a response came, with a status outside the batch's accept_status
    DNS = "dns"
    REFUSED = "refused"
    CONNECT_TIMEOUT = "connect_timeout"
    READ_TIMEOUT = "read_timeout"
    DEADLINE = "deadline"
    TLS = "tls"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    TOO_LARGE = "too_large"
    INVALID_URL = "invalid_url"
    BLOCKED = "blocked"
    RATE_LIMITED = "rate_limited"  # a Retry-After longer than the batch's max_retry_after
    CANCELLED = "cancelled"
    MISMATCH = "mismatch"  # a response came, but the row's expectations, or a warning counted as failed, decided
    OTHER = "other"


ERROR_KINDS = tuple(kind.value for kind in ErrorKind)
BATCH_STATUSES = ("queued", "running", "done", "cancelled", "failed")
FINAL_STATUSES = frozenset({"done", "cancelled", "failed"})


@dataclass
class Result:
    """The one final outcome of one URL in a batch."""

    index: int
    url: str
    final_url: str | None = None
    status_code: int | None = None
    ok: bool = False
    error: dict[str, str] | None = None
    bytes: int = 0
    content_type: str | None = None
    redirects: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    timings: dict[str, float | None] = field(default_factory=dict)
    method: str | None = None  # the method of the final answer, for HEAD,GET batches only
    refused: int = 0  # answers with a retry status (429, 503) the URL retried after; shown only when some
    retried: int = field(default=0, repr=False)  # tries made before the URL went back to its host's queue (not shown)
    # What the batch's capture option recorded of the final response (remote_ip, http_version, server, headers,
    # tls): shown as fields of the result; None when the batch captures nothing.
    captured: dict[str, Any] | None = None
    # What the result means (app/core/verdict.py): "ok", "warn", "failed" or "cancelled", the rules that decided
    # it, and the warnings its response gave; the row's effective expectations and meta, when it has any.
    outcome: str = "failed"
    reasons: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    expect: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (what dataclasses.asdict gives, without its deep copy)."""
        error = self.error
        data = {
            "index": self.index,
            "url": self.url,
            "final_url": self.final_url,
            "status_code": self.status_code,
            "ok": self.ok,
            "error": None if error is None else dict(error),
            "bytes": self.bytes,
            "content_type": self.content_type,
            "redirects": [dict(hop) for hop in self.redirects],
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "timings": dict(self.timings),
            "outcome": self.outcome,
            "reasons": self.reasons,
            "warnings": self.warnings,
        }
        if self.method is not None:
            data["method"] = self.method
        if self.refused:
            data["refused"] = self.refused
        if self.captured is not None:
            data.update(self.captured)
        if self.expect is not None:
            data["expect"] = self.expect
        if self.meta is not None:
            data["meta"] = self.meta
        return data


def failed_result(index: int, url: str, kind: ErrorKind, message: str) -> Result:
    """A result for a URL that ended without a response (cancelled, invalid, ...)."""
    stamp = now_iso()
    cancelled = kind == ErrorKind.CANCELLED
    return Result(
        outcome="cancelled" if cancelled else "failed",
        reasons=[]
        if cancelled
        else [{"rule": "error", "expected": "a response", "actual": f"{kind}: {message}"[:200]}],
        index=index,
        url=url,
        error={"kind": ErrorKind(kind).value, "message": message},
        started_at=stamp,
        finished_at=stamp,
        timings={"total": 0.0, "ttfb": None},
    )
