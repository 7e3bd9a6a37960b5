"""Batch options: one table-driven parser checked against the server's limits, and the one way to rebuild stored options."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from . import verdict
from .checks import BODY_SOURCES, READS_BODY, Check, needs_body, parse_checks
from .config import Config

# HEAD,GET: HEAD first, then GET for a URL whose HEAD answers one of head_fallback_statuses.
METHODS = ("GET", "HEAD", "HEAD,GET")
# HTTP clients a batch may choose (app/fetch maps each to its transport); the first is the default.
CLIENTS = ("fast", "requests")
_STATUS_RANGE = re.compile(r"^\s*([0-9]{3})\s*(?:-\s*([0-9]{3})\s*)?$")  # ASCII digits: \d takes "٣٠١" too
_STATUS_CLASS = re.compile(r"^\s*([1-5])[xX]{2}\s*$")  # 2xx: every status from 200 to 299
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Options are stored and shown with their batch: each is capped so one batch cannot weigh megabytes.
MAX_ACCEPT_STATUS_CHARS = 2000  # checked before parsing, so refusing a huge value costs nothing
MAX_ACCEPT_RANGES = 100
SHOWN_ACCEPT_STATUS_CHARS = 40  # a status failure's message names the accepted statuses, this long at most
MAX_HEADERS = 50
MAX_HEADER_NAME = 100
MAX_HEADER_VALUE = 8192
MAX_HEADERS_TOTAL = 16 * 1024  # names and values of one batch's headers together
MAX_STATUS_LIST = 20  # statuses in retry_statuses or head_fallback_statuses
DEFAULT_RETRY_STATUSES = (429, 503)
DEFAULT_HEAD_FALLBACK_STATUSES = (405, 501)
DEFAULT_MAX_RETRY_AFTER = 60.0
# Headers the HTTP client owns: Host comes from the URL (a batch choosing it could reach another virtual host
# behind an allowed name), the rest frame the message or manage the connection.
CLIENT_HEADERS = (
    "Host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Upgrade",
    "TE",
    "Trailer",
    "Keep-Alive",
    "Proxy-Connection",
)
_CLIENT_HEADERS = frozenset(name.lower() for name in CLIENT_HEADERS)
# C0 controls but tab, DEL and C1 controls (0x85 NEL among them): some parsers split lines at them.
_HEADER_VALUE_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
MAX_CAPTURE_HEADERS = 20  # response headers one batch may keep per hop: each value is up to 1 KiB in every row
# Notifications (app/runs/notify.py delivers them): each target is one delivery per finished batch.
NOTIFY_TYPES = ("webhook", "slack")
NOTIFY_ON = ("always", "change", "failure")
MAX_NOTIFY_TARGETS = 10
MAX_SECRET_CHARS = 256
MIN_SECRET_CHARS = 8
MAX_CONSECUTIVE_FAILURES = 50  # runs looked back along parent_id to judge it
SHOWN_SECRET_CHARS = 4  # the end of a secret the API and the pages show, after "..."


class ValidationError(ValueError):
    """Bad input from a client; `details` lists each problem with the field (and URL index) at fault."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.details = details or []


@dataclass(frozen=True)
class BatchOptions:
    """How one batch fetches its URLs; every field has a server default."""

    concurrency: int
    timeout: float
    connect_timeout: float
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    max_redirects: int = 5
    max_bytes: int = 10 * 1024 * 1024
    retries: int = 0
    accept_status: str = "200-399"
    per_host: int = 0
    client: str = CLIENTS[0]
    per_host_interval: float = 0.0
    retry_statuses: list[int] = field(default_factory=lambda: list(DEFAULT_RETRY_STATUSES))
    respect_retry_after: bool = True
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER
    head_fallback_statuses: list[int] = field(default_factory=lambda: list(DEFAULT_HEAD_FALLBACK_STATUSES))
    # What each hop records of the server (remote_ip, http_version, server, the listed headers, tls with "tls"):
    # None captures nothing, and the per-URL path does no extra work.
    capture: dict[str, Any] | None = None
    tls_verify: bool = True  # False: a certificate's problems are recorded, and do not fail the row
    # What a result means (app/core/verdict.py): each is left out of to_dict() while unset, so a batch that sets
    # none stores and shows what it did before them.
    expect: dict[str, Any] | None = None
    url_match: str = "exact"
    warn_as: dict[str, str] | None = None
    thresholds: dict[str, float] | None = None
    base_url: str | None = None
    target_base_url: str | None = None
    checks: list[dict[str, Any]] | None = None  # app/core/checks.py, as given
    # Per-row expectations, meta and checks, by URL index (from `urls` objects or a CSV's columns); never given
    # by a client. Stored apart from the options (Store.row_specs), which every listing of batches reads.
    rows: dict[int, dict[str, Any]] | None = None
    # Who hears when the batch ends, and when: each left out of to_dict() while unset, like the verdict's.
    notify: list[dict[str, str]] | None = None
    notify_on: str = "always"
    consecutive_failures: int | None = None
    # The base URL of the request that submitted a batch that notifies (dashboard_url without
    # GREENBATCH_PUBLIC_URL): stored with the options like `rows`, never given by a client nor shown.
    origin: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready data, as stored and shown: the verdict's options only when set, never `rows`."""
        data = asdict(replace(self, rows=None) if self.rows else self)  # asdict would copy every row
        del data["rows"]
        for key, unset in _UNSET.items():
            if data[key] == unset:
                del data[key]
        return data

    def shown(self) -> dict[str, Any]:
        """The options as a batch shows them: notification secrets cut short."""
        return redacted(self.to_dict())

    def row_specs(self) -> dict[str, dict[str, Any]] | None:
        """The per-row sidecar as JSON-ready data (URL indexes as text), as Store.create_batch stores it."""
        return None if self.rows is None else {str(index): row for index, row in self.rows.items()}

    @cached_property
    def judged(self) -> bool:
        """Whether any verdict option is set (else a result's evaluation takes the short path)."""
        return bool(self.expect or self.rows or self.url_match != "exact" or self.warn_as or self.checks)

    @cached_property
    def batch_checks(self) -> tuple[Check, ...]:
        """The batch's checks, compiled once."""
        return parse_checks(self.checks, "options.checks")[0] if self.checks else ()

    @cached_property
    def first_method(self) -> str:
        """The method of a URL's first request: HEAD,GET asks with GET when a check reads the body or its size."""
        if self.method != "HEAD,GET":
            return self.method
        checks = [check.source for check in self.batch_checks]
        checks += [check.get("source") for row in (self.rows or {}).values() for check in row.get("checks") or ()]
        return "GET" if any(source in READS_BODY for source in checks) else "HEAD"

    @cached_property
    def needs_body(self) -> bool:
        """Whether a check reads the body, so fetches keep it (up to max_bytes)."""
        if needs_body(self.batch_checks):
            return True
        return any(
            check.get("source") in BODY_SOURCES
            for row in (self.rows or {}).values()
            for check in row.get("checks") or ()
        )

    def row_checks(self, index: int) -> tuple[Check, ...]:
        """URL `index`'s checks: the batch's, then its row's own (numbered on from the batch's)."""
        row = self.rows.get(index) if self.rows else None
        own = row.get("checks") if row else None
        if not own:
            return self.batch_checks
        return self.batch_checks + parse_checks(own, f"urls[{index}].checks")[0]

    def row_expect(self, index: int) -> dict[str, Any] | None:
        """URL `index`'s effective expectations (final_url absolute), or None when it has none."""
        row = self.rows.get(index) if self.rows else None
        expect = verdict.effective_expect(self.expect, row.get("expect") if row else None)
        if expect and "final_url" in expect:
            base = self.target_base_url or self.base_url
            expect["final_url"] = verdict.resolved(expect["final_url"], base)
        return expect

    def row_meta(self, index: int) -> dict[str, Any] | None:
        """URL `index`'s meta columns, in input order, or None."""
        row = self.rows.get(index) if self.rows else None
        return row.get("meta") if row else None

    def accepts(self, status: int) -> bool:
        """Whether a final HTTP status counts as ok for this batch."""
        return any(low <= status <= high for low, high in self._accept_ranges)

    @cached_property
    def accept_status_shown(self) -> str:
        """accept_status as a failed result's message shows it: past 40 characters, cut after a whole range."""
        text = self.accept_status
        if len(text) <= SHOWN_ACCEPT_STATUS_CHARS:
            return text
        return text[: text.rfind(",", 0, SHOWN_ACCEPT_STATUS_CHARS) + 1] + "..."

    @cached_property
    def paced(self) -> bool:
        """Whether the batch's requests go through per-host gates: a cap, an interval, or statuses it retries.

        A batch with none of these takes the plain fetch path, whose CPU per URL they must not raise.
        """
        return bool(self.per_host or self.per_host_interval or (self.retries and self.retry_statuses))

    @cached_property
    def _accept_ranges(self) -> tuple[tuple[int, int], ...]:
        """accept_status parsed once per batch, not once per URL (not a field: to_dict and == ignore it)."""
        return tuple(parse_status_ranges(self.accept_status))

    @classmethod
    def defaults(cls, config: Config) -> BatchOptions:
        """The options a batch gets when it sets none."""
        return cls(
            concurrency=config.default_concurrency,
            timeout=config.default_timeout,
            connect_timeout=config.default_connect_timeout,
            max_redirects=config.default_max_redirects,
            max_bytes=config.default_max_bytes,
            max_retry_after=min(DEFAULT_MAX_RETRY_AFTER, config.max_retry_after),
        )

    @classmethod
    def parse(cls, raw: Any, config: Config) -> BatchOptions:
        """Validate client-supplied options against the server's limits; unknown keys are errors."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ValidationError("options must be an object", [{"field": "options", "message": "must be an object"}])
        base = cls.defaults(config).to_dict()
        problems: list[dict[str, Any]] = []
        limits = {
            "concurrency": (int, 1, config.max_concurrency),
            "timeout": (float, 0.1, config.max_timeout),
            "connect_timeout": (float, 0.1, config.max_timeout),
            "max_redirects": (int, 0, config.max_redirects),
            "max_bytes": (int, 0, config.max_body_bytes),
            "retries": (int, 0, config.max_retries),
            "per_host": (int, 0, config.max_concurrency),
            "per_host_interval": (float, 0, config.max_per_host_interval),
            "max_retry_after": (float, 0, config.max_retry_after),
        }
        for key, value in raw.items():
            where = f"options.{key}"
            if key in limits:
                kind, low, high = limits[key]
                number = _number(value, kind)
                if number is None:
                    problems.append(
                        {"field": where, "message": f"must be {'an integer' if kind is int else 'a number'}"}
                    )
                elif not low <= number <= high:
                    problems.append({"field": where, "message": f"must be between {low} and {high} (server limit)"})
                else:
                    base[key] = number
            elif key == "method":
                method = value.upper().replace(" ", "") if isinstance(value, str) else None
                if method not in METHODS:
                    problems.append({"field": where, "message": "must be GET, HEAD or HEAD,GET"})
                else:
                    base[key] = method
            elif key == "headers":
                message = (
                    "must be an object of header names to strings"
                    if not isinstance(value, dict)
                    else header_problem(list(value.items()))
                )
                if message:
                    problems.append({"field": where, "message": message})
                else:
                    base[key] = dict(value)
            elif key == "client":
                if value not in CLIENTS:
                    problems.append({"field": where, "message": f"must be one of {', '.join(CLIENTS)}"})
                else:
                    base[key] = value
            elif key in ("retry_statuses", "head_fallback_statuses"):
                statuses = _status_list(value)
                if statuses is None:
                    problems.append(
                        {
                            "field": where,
                            "message": f"must be a list of at most {MAX_STATUS_LIST} statuses (100-599), "
                            "or the same as text: '429,503'",
                        }
                    )
                else:
                    base[key] = statuses
            elif key == "capture":
                capture, message = _capture(value)
                if message:
                    problems.append({"field": where, "message": message})
                else:
                    base[key] = capture
            elif key in ("respect_retry_after", "tls_verify"):
                flag = _flag(value)
                if flag is None:
                    problems.append({"field": where, "message": "must be true or false"})
                else:
                    base[key] = flag
            elif key == "accept_status":
                message = _accept_status_problem(value)
                if message:
                    problems.append({"field": where, "message": message})
                else:
                    base[key] = format_status_ranges(parse_status_ranges(value))
            elif key in _VERDICT_PARSERS:
                parsed, message = _VERDICT_PARSERS[key](value, config)
                if message:
                    problems.append({"field": where, "message": message})
                else:
                    base[key] = parsed
            elif key == "checks":
                parsed_checks, check_problems = parse_checks(value, where)
                problems.extend(check_problems)
                base[key] = [check.to_dict() for check in parsed_checks] or None
            elif key == "rows":
                parsed_rows, row_problems = parse_rows(value, config)
                problems.extend(row_problems)
                base[key] = parsed_rows
            elif key == "origin":
                base[key] = value if isinstance(value, str) else None
            elif key in ("notify", "webhook"):
                continue  # below, together: the webhook sugar adds one entry to notify's
            elif key == "notify_on":
                if value not in NOTIFY_ON:
                    problems.append({"field": where, "message": f"must be one of {', '.join(NOTIFY_ON)}"})
                else:
                    base[key] = value
            elif key == "consecutive_failures":
                number = _number(value, int) if value is not None else None
                if value is not None and (number is None or not 1 <= number <= MAX_CONSECUTIVE_FAILURES):
                    message = f"must be an integer from 1 to {MAX_CONSECUTIVE_FAILURES} (server limit), or null"
                    problems.append({"field": where, "message": message})
                else:
                    base[key] = number
            else:
                problems.append({"field": where, "message": "is not a known option"})
        if "notify" in raw or "webhook" in raw:
            targets, notify_problems = parse_notify(raw.get("notify"), raw.get("webhook"), config)
            problems.extend(notify_problems)
            base["notify"] = targets
        problems.extend(head_problems(base.get("method"), base.get("checks"), base.get("rows")))
        for i, check in enumerate(base.get("checks") or ()):
            if check["source"] == "cert.days_left" and not (base.get("capture") or {}).get("tls"):
                message = 'reads the certificate: cert.days_left needs the capture option {"tls": true}'
                problems.append({"field": f"options.checks[{i}].source", "message": message})
        if problems:
            raise ValidationError("invalid options", problems)
        return cls(**base)


def head_problems(
    method: str | None, checks: list[dict[str, Any]] | None, rows: dict[int, dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """The body, json and size checks of a HEAD batch, each a problem: a HEAD answer has no body to read, so
    `contains` would fail every row and `not_contains` pass without reading a byte. (HEAD,GET asks with GET.)"""
    if method != "HEAD":
        return []
    given = [(f"options.checks[{i}]", check) for i, check in enumerate(checks or ())]
    for index, row in sorted((rows or {}).items()):
        given += [(f"urls[{index}].checks[{i}]", check) for i, check in enumerate(row.get("checks") or ())]
    message = "reads the body, which a HEAD answer has none of: use method GET or HEAD,GET"
    return [{"field": f"{where}.source", "message": message} for where, check in given if check["source"] in READS_BODY]


def _number(value: Any, kind: type[int] | type[float]) -> float | int | None:
    """Accept JSON numbers and numeric strings (query strings are text); reject bools and the rest."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value) if kind is float else int(value)
        except ValueError:
            return None
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind is int and not isinstance(value, int):
        return None
    if kind is float and not isinstance(value, (int, float)):
        return None
    try:
        return kind(value)
    except OverflowError:  # an integer too large for a float (1 and 400 zeros) is no number an option takes
        return None


def _status_list(value: Any) -> list[int] | None:
    """A list of HTTP statuses from JSON ([429, 503]) or a query string ('429,503'), sorted; None when invalid."""
    if isinstance(value, str):
        items: list[Any] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        items = value
    else:
        return None
    statuses = [_number(item, int) for item in items]
    if len(statuses) > MAX_STATUS_LIST or any(s is None or not 100 <= s <= 599 for s in statuses):
        return None
    return sorted({int(s) for s in statuses if s is not None})


def _flag(value: Any) -> bool | None:
    """A JSON boolean, or its query-string text (true/false, 1/0); None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
        return value.lower() in ("true", "1")
    return None


def _capture(value: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The capture option as stored ({"tls": bool, "headers": [lowercase names]}), or what is wrong with it."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        return None, 'must be an object like {"tls": true, "headers": ["cache-control"]}, or null'
    unknown = sorted(set(value) - {"tls", "headers"})
    if unknown:
        return None, f"has unknown key {unknown[0]!r} (only tls and headers)"
    tls = _flag(value.get("tls", False))
    if tls is None:
        return None, "tls must be true or false"
    names = value.get("headers", [])
    if not isinstance(names, list) or len(names) > MAX_CAPTURE_HEADERS:
        return None, f"headers must be a list of at most {MAX_CAPTURE_HEADERS} header names"
    kept: list[str] = []
    for name in names:
        if not isinstance(name, str) or not _HEADER_NAME.match(name) or len(name) > MAX_HEADER_NAME:
            return None, f"header name {_shown(name)!r} is not a token of at most {MAX_HEADER_NAME} characters"
        if name.lower() not in kept:
            kept.append(name.lower())
    return {"tls": tls, "headers": kept}, None


def header_problem(pairs: list[tuple[str, Any]]) -> str | None:
    """Say what is wrong with a batch's headers as (name, value) pairs, or None when they are fine."""
    if len(pairs) > MAX_HEADERS:
        return f"at most {MAX_HEADERS} headers, not {len(pairs)}"
    seen: dict[str, str] = {}
    total = 0
    for name, text in pairs:
        if not isinstance(name, str) or not _HEADER_NAME.match(name) or len(name) > MAX_HEADER_NAME:
            return (
                f"header name {_shown(name)!r} is not a token (letters, digits, !#$%&'*+-.^_`|~) of at most "
                f"{MAX_HEADER_NAME} characters"
            )
        if name.lower() in _CLIENT_HEADERS:
            return (
                f"header {name!r} is set by the HTTP client, never by a batch ({', '.join(CLIENT_HEADERS)} "
                "are the client's)"
            )
        # One line per name: clients disagree on whether 'X-A' and 'x-a' make one header line or two.
        if name.lower() in seen:
            return f"header {name!r} is given twice ({seen[name.lower()]!r} and {name!r}); names ignore case"
        seen[name.lower()] = name
        if not isinstance(text, str) or len(text) > MAX_HEADER_VALUE:
            return f"header {name!r} must be a string of at most {MAX_HEADER_VALUE} characters"
        control = _HEADER_VALUE_CONTROL.search(text)
        if control:
            return (
                f"header {name!r} has the control character U+{ord(control.group()):04X} in its value "
                "(only tab is allowed)"
            )
        if text != text.strip(" \t"):
            return f"header {name!r} has a value that starts or ends with whitespace; trim it"
        try:
            text.encode("latin-1")  # what HTTP/1.1 header values can carry on the wire
        except UnicodeEncodeError:
            return f"header {name!r} has characters outside Latin-1; percent-encode or RFC 2047-encode them"
        total += len(name) + len(text)
    if total > MAX_HEADERS_TOTAL:
        return f"headers take {total} characters (names and values); the limit is {MAX_HEADERS_TOTAL}"
    return None


def _shown(value: Any) -> str:
    """A client's value, cut short for an error message."""
    text = value if isinstance(value, str) else repr(value)
    return text[:100] + ("..." if len(text) > 100 else "")


def _accept_status_problem(value: Any) -> str | None:
    """Say what is wrong with an accept_status value, or None when it is fine."""
    if not isinstance(value, str):
        return "must be a string like '200-399', '2xx,3xx' or '200,301-302'"
    if len(value) > MAX_ACCEPT_STATUS_CHARS:  # before parsing: a megabyte is refused without reading it
        return f"must be at most {MAX_ACCEPT_STATUS_CHARS} characters, not {len(value)}"
    ranges = parse_status_ranges(value)
    if not ranges:
        return "must look like '200-399', '2xx,3xx' or '200,301-302' (statuses 100-599)"
    if len(ranges) > MAX_ACCEPT_RANGES:
        return f"at most {MAX_ACCEPT_RANGES} statuses or ranges, not {len(ranges)}"
    return None


def parse_status_ranges(text: str) -> list[tuple[int, int]]:
    """Parse '200-399,418' or '2xx,3xx' into ranges; an empty list means the text is invalid."""
    ranges = []
    for part in text.split(","):
        status_class = _STATUS_CLASS.match(part)
        if status_class:
            low = int(status_class.group(1)) * 100
            ranges.append((low, low + 99))
            continue
        match = _STATUS_RANGE.match(part)
        if not match:
            return []
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not 100 <= low <= high <= 599:
            return []
        ranges.append((low, high))
    return ranges


def format_status_ranges(ranges: list[tuple[int, int]]) -> str:
    """Ranges as accept_status text, merged and sorted: [(404, 404), (200, 299), (250, 310)] -> '200-310,404'."""
    merged: list[list[int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in merged)


# The verdict options' values while unset: to_dict() leaves them out then.
_UNSET: dict[str, Any] = {
    "expect": None,
    "url_match": "exact",
    "warn_as": None,
    "thresholds": None,
    "base_url": None,
    "target_base_url": None,
    "checks": None,
    "notify": None,
    "notify_on": "always",
    "consecutive_failures": None,
    "origin": None,
}
THRESHOLDS = ("failed_rate", "warn_rate", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ok")
MAX_THRESHOLD_MS = 3_600_000
MAX_META_COLUMNS = 50  # distinct meta columns in a batch (each one a column of its CSV export), so in any row
MAX_META_CHARS = 2000  # one meta value, as text
MAX_EXPECT_URL = 8192


def parse_expect(value: Any, config: Config) -> tuple[dict[str, Any] | None, str | None]:
    """An `expect` object checked field by field: (the value, None) or (None, what is wrong, naming the field)."""
    if not isinstance(value, dict):
        return None, "must be an object with any of status, final_url, final_status, max_hops"
    parsed: dict[str, Any] = {}
    for key, given in value.items():
        if key in ("status", "final_status"):
            if isinstance(given, int) and not isinstance(given, bool):
                if not 100 <= given <= 999:
                    return None, f"{key} must be a status from 100 to 999, not {given}"
            elif not isinstance(given, str) or _accept_status_problem(given):
                return None, f"{key} must be a status (301) or a list like '301,308' or '2xx'"
            parsed[key] = given
        elif key == "final_url":
            if not isinstance(given, str) or not given.strip() or len(given) > MAX_EXPECT_URL:
                return None, f"final_url must be a URL or a path of at most {MAX_EXPECT_URL} characters"
            parsed[key] = given.strip()
        elif key == "max_hops":
            number = _number(given, int)
            if number is None or not 0 <= number <= config.max_redirects:
                return None, f"max_hops must be an integer from 0 to {config.max_redirects} (server limit)"
            parsed[key] = number
        elif given is not None:
            return None, f"{key} is not an expectation (status, final_url, final_status, max_hops)"
    return parsed or None, None


def _parse_url_match(value: Any, config: Config) -> tuple[Any, str | None]:
    """url_match: one of verdict.URL_MATCHES."""
    if value not in verdict.URL_MATCHES:
        return None, f"must be one of {', '.join(verdict.URL_MATCHES)}"
    return value, None


def _parse_warn_as(value: Any, config: Config) -> tuple[Any, str | None]:
    """warn_as: warning kind -> warn, failed or ok."""
    if not isinstance(value, dict):
        return None, "must be an object of warning kinds to warn, failed or ok"
    for kind, given in value.items():
        if kind not in verdict.WARNING_KINDS:
            return None, f"{kind!r} is not a warning kind ({', '.join(verdict.WARNING_KINDS)})"
        if given not in verdict.WARN_AS_CHOICES:
            return None, f"{kind} must map to warn, failed or ok, not {_shown(given)!r}"
    return dict(value), None


def _parse_thresholds(value: Any, config: Config) -> tuple[Any, str | None]:
    """thresholds: rates in [0, 1], percentiles in ms, min_ok a count."""
    if not isinstance(value, dict):
        return None, f"must be an object with any of {', '.join(THRESHOLDS)}"
    parsed: dict[str, float] = {}
    for key, given in value.items():
        if key not in THRESHOLDS:
            return None, f"{key!r} is not a threshold ({', '.join(THRESHOLDS)})"
        if key == "min_ok":
            number = _number(given, int)
            if number is None or not 0 <= number <= config.max_urls:
                return None, f"min_ok must be an integer from 0 to {config.max_urls}"
        elif key.endswith("_rate"):
            number = _number(given, float)
            if number is None or not 0 <= number <= 1:
                return None, f"{key} must be a fraction from 0 to 1"
        else:
            number = _number(given, float)
            if number is None or not 0 <= number <= MAX_THRESHOLD_MS:
                return None, f"{key} must be milliseconds from 0 to {MAX_THRESHOLD_MS}"
        parsed[key] = number
    return parsed, None


def _parse_base(value: Any, config: Config) -> tuple[Any, str | None]:
    """base_url, target_base_url: an absolute http(s) URL."""
    if not isinstance(value, str) or len(value) > config.max_url_length:
        return None, f"must be an http or https URL of at most {config.max_url_length} characters"
    try:
        parts = urlsplit(value)
        valid = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError as exc:  # a bracket left open ("Invalid IPv6 URL")
        return None, f"is not a valid URL ({exc})"
    if not valid:
        return None, "must be an absolute http or https URL, like https://example.com"
    return value, None


_VERDICT_PARSERS = {
    "expect": parse_expect,
    "url_match": _parse_url_match,
    "warn_as": _parse_warn_as,
    "thresholds": _parse_thresholds,
    "base_url": _parse_base,
    "target_base_url": _parse_base,
}


def parse_rows(value: Any, config: Config) -> tuple[dict[int, dict[str, Any]] | None, list[dict[str, Any]]]:
    """The stored per-row sidecar ({"index": {"expect", "meta"}}) read back."""
    if value is None:
        return None, []
    if not isinstance(value, dict):
        return None, [{"field": "options.rows", "message": "must be an object"}]
    rows: dict[int, dict[str, Any]] = {}
    for key, row in value.items():
        if not isinstance(key, str | int) or not str(key).isdigit() or not isinstance(row, dict):
            return None, [{"field": "options.rows", "message": "must map URL indexes to objects"}]
        rows[int(key)] = row
    return rows, []


def parse_notify(notify: Any, webhook: Any, config: Config) -> tuple[list[dict[str, str]] | None, list[dict[str, Any]]]:
    """The notify targets (the webhook sugar's last) and the problems, each naming its entry and field."""
    problems: list[dict[str, Any]] = []
    entries: list[tuple[str, Any]] = []
    if notify is not None:
        if not isinstance(notify, list):
            message = 'must be a list of {"type": "webhook", "url", "secret"} or {"type": "slack", "url"}'
            return None, [{"field": "options.notify", "message": message}]
        entries = [(f"options.notify[{i}]", entry) for i, entry in enumerate(notify)]
    if webhook is not None:
        if not isinstance(webhook, dict):
            return None, [{"field": "options.webhook", "message": 'must be an object {"url", "secret"}'}]
        entries.append(("options.webhook", {"type": "webhook", **webhook}))
    if len(entries) > MAX_NOTIFY_TARGETS:
        message = f"at most {MAX_NOTIFY_TARGETS} targets (notify and webhook together), not {len(entries)}"
        return None, [{"field": "options.notify", "message": message}]
    targets = []
    for where, entry in entries:
        target, problem = _notify_target(entry, where, config)
        if problem:
            problems.append(problem)
        elif target:
            targets.append(target)
    return targets or None, problems


def _notify_target(entry: Any, where: str, config: Config) -> tuple[dict[str, str] | None, dict[str, Any] | None]:
    """One notify entry as stored, or the problem naming its field (where.url, where.secret, ...)."""
    if not isinstance(entry, dict):
        return None, {"field": where, "message": 'must be an object {"type", "url"} (and "secret" for a webhook)'}
    kind = entry.get("type")
    if kind not in NOTIFY_TYPES:
        return None, {"field": f"{where}.type", "message": f"must be one of {', '.join(NOTIFY_TYPES)}"}
    allowed = {"type", "url", "secret"} if kind == "webhook" else {"type", "url"}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        return None, {"field": f"{where}.{unknown[0]}", "message": f"is not a field of a {kind} target"}
    url = entry.get("url")
    if not isinstance(url, str) or not url or len(url) > config.max_url_length:
        message = f"must be an http or https URL of at most {config.max_url_length} characters"
        return None, {"field": f"{where}.url", "message": message}
    try:
        parts = urlsplit(url)
        valid = parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError as exc:  # a bracket left open ("Invalid IPv6 URL"), a port out of range
        return None, {"field": f"{where}.url", "message": f"is not a valid URL ({exc})"}
    if not valid:
        return None, {"field": f"{where}.url", "message": "must be an absolute http or https URL"}
    if kind == "slack":
        return {"type": kind, "url": url}, None
    secret = entry.get("secret")
    if isinstance(secret, str) and secret.startswith("..."):  # as the API shows it: it would sign with "...abcd"
        message = "is a secret as the API shows it (cut short); give the secret itself"
        return None, {"field": f"{where}.secret", "message": message}
    if not isinstance(secret, str) or not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
        message = f"must be a string of {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters (it signs each delivery)"
        return None, {"field": f"{where}.secret", "message": message}
    return {"type": kind, "url": url, "secret": secret}, None


def shown_secret(secret: str) -> str:
    """A secret as the API and the pages show it: its last few characters, and those only of a long one."""
    return "..." + secret[-SHOWN_SECRET_CHARS:] if len(secret) >= 4 * SHOWN_SECRET_CHARS else "..."


def shown_target_url(url: str, kind: str = "webhook") -> str:
    """A notify URL as the API, the pages and the logs show it, the same for every type: scheme://host[:port]
    and only the last few characters of its path (Slack's, Discord's, Zapier's or Teams' path is its secret,
    whatever type it was given as); never user info or query."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:  # stored before its URL was checked: nothing of it is shown
        return "..."
    if ":" in host:
        host = f"[{host}]"
    authority = host if port is None else f"{host}:{port}"
    path = "/..." + parts.path[-SHOWN_SECRET_CHARS:] if len(parts.path) > 1 else "/"
    return f"{parts.scheme}://{authority}{path}"


def redacted(options: dict[str, Any]) -> dict[str, Any]:
    """Stored options as anyone may see them: each notify target's secret cut short, its URL without secrets
    (and no origin)."""
    if "origin" in options:
        options = {key: value for key, value in options.items() if key != "origin"}
    if not options.get("notify"):
        return options
    shown = []
    for target in options["notify"]:
        entry = {**target, "url": shown_target_url(target.get("url") or "", target.get("type") or "webhook")}
        if "secret" in target:
            entry["secret"] = shown_secret(target["secret"] or "")
        shown.append(entry)
    return {**options, "notify": shown}
