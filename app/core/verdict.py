"""What a result means: the one evaluator that gives every row its outcome, the rules that decided it, and its warnings.

Pure: it reads a finished fetch (status, hops, final URL, the last response's headers) and the batch's and the
row's expectations, and does no I/O. The engine and the cluster runner both call evaluate() (app/runs/engine.py,
Fetching), so the page, the API, exports, /metrics and the CLI show one answer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

from .checks import Check, partly_searched
from .checks import run as run_checks
from .results import Result

OUTCOMES = ("ok", "warn", "failed", "cancelled")
URL_MATCHES = ("exact", "ignore_trailing_slash", "ignore_query", "path_only")
WARNING_KINDS = (
    "bot_challenge",
    "rate_limited",
    "temporary_redirect",
    "long_chain",
    "https_downgrade",
    "redirect_to_root",
    "partial_check",
)
WARN_AS_CHOICES = ("warn", "failed", "ok")
EXPECT_FIELDS = ("status", "final_url", "final_status", "max_hops")
# Kinds whose response is not the site's own answer (a bot wall, a rate limit): the row's rules are not applied.
BLOCKING_KINDS = frozenset({"bot_challenge", "rate_limited"})
TEMPORARY_REDIRECTS = frozenset({302, 303, 307})
LONG_CHAIN = 3  # more redirects than this is a long chain
BOT_STATUS = 999  # what LinkedIn and others answer a client they take for a bot
# A kept HTML body of these statuses is searched for a known challenge page, in its first CHALLENGE_BYTES only.
CHALLENGE_STATUSES = frozenset({200, 403, 429, 503})
CHALLENGE_BYTES = 16 * 1024
# Each vendor's challenge page and the strings that give it away (Cloudflare's in challenge_page()).
_CHALLENGE_MARKS = (
    ("DataDome", (b"captcha-delivery.com",)),
    ("PerimeterX", (b"_pxAppId", b"px-captcha")),
    ("Akamai", (b"/_sec/cp_challenge/",)),
)
ACTUAL_CHARS = 200  # a reason's `actual` is shown as text, this long at most
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SEVERITY = {"ok": 0, "warn": 1, "failed": 2}
_WARNING_EXPECTED = {
    "bot_challenge": "the site's own response",
    "rate_limited": "a response without rate limiting",
    "temporary_redirect": "permanent redirects (301, 308)",
    "long_chain": f"at most {LONG_CHAIN} redirects",
    "https_downgrade": "https on every hop",
    "redirect_to_root": "a page other than the site's root",
    "partial_check": "the whole body searched (raise the check's max_bytes)",
}

Verdict = tuple[str, list[dict[str, Any]], list[dict[str, str]]]  # outcome, reasons, warnings


def evaluate(
    result: Result,
    headers: Mapping[str, str] | None,
    accept: Any,
    expect: Mapping[str, Any] | None = None,
    url_match: str = "exact",
    warn_as: Mapping[str, str] | None = None,
    checks: Sequence[Check] = (),
    body: bytes | None = None,
    between: Callable[[], None] | None = None,
) -> Verdict:
    """A finished fetch's outcome, the reasons that decided it, and its warnings.

    result: a finished fetch (its status_code, final_url, url, redirects, error); headers: the last response's;
    accept: what has accepts(status), accept_status_shown (BatchOptions); expect: the row's effective
    expectations (final_url already absolute), which, when given, decide instead of accept_status; between: called
    between two checks (checks.run).
    """
    if not expect and not checks and plainly_ok(result, headers):
        return "ok", [], []
    error = result.error
    status = result.status_code
    if error is not None and error.get("kind") == "cancelled":
        return "cancelled", [], []
    if status is None:  # no response: the fetch's error decided
        kind, message = (error or {}).get("kind", "other"), (error or {}).get("message", "")
        return "failed", [_reason("error", "a response", f"{kind}: {message}")], []
    redirects = result.redirects
    warnings, hops = _warnings(result, headers, status, redirects, expect, body)
    if checks and body and not any(warning["kind"] in BLOCKING_KINDS for warning in warnings):
        # A not_contains that held on the first max_bytes only: the text may lie past them; the row says so.
        for evidence in partly_searched(checks, 0, body, result.content_type):
            warnings.append({"kind": "partial_check", "evidence": evidence})
            hops.append(len(redirects))
    kinds = warn_as or {}
    severity = 0
    reasons: list[dict[str, Any]] = []
    blocked = False
    for i, warning in enumerate(warnings):
        kind = warning["kind"]
        given = kinds.get(kind, "warn")
        blocked = blocked or kind in BLOCKING_KINDS
        if given != "ok":
            severity = max(severity, _SEVERITY[given])
            reasons.append(_reason(kind, _WARNING_EXPECTED[kind], warning["evidence"], hops[i]))
    if not blocked:
        failures = _rule_failures(result, status, redirects, accept, expect, url_match)
        if checks:
            tls = result.captured.get("tls") if result.captured else None
            failures += run_checks(
                checks, 0, body, headers, result.timings, result.bytes, result.content_type, tls, between
            )
        if failures:
            severity = 2
            reasons[:0] = failures  # the rules that failed come before the warnings
    return ("ok", "warn", "failed")[severity], reasons, warnings


def plainly_ok(result: Result, headers: Mapping[str, str] | None) -> bool:
    """Whether a fetch without expectations or checks is ok with nothing to say: an accepted answer without
    redirects that nothing could make warn or fail (the common case, decided without evaluate()'s work)."""
    status = result.status_code
    return (
        result.ok  # what follow() made of accept_status (the rule _rule_failures applies otherwise)
        and not result.redirects
        and status is not None
        and status != 429
        and status != BOT_STATUS
        and (headers is None or headers.get("cf-mitigated") is None)
    )


def _rule_failures(
    result: Result,
    status: int,
    redirects: Any,
    accept: Any,
    expect: Mapping[str, Any] | None,
    url_match: str,
) -> list[dict[str, Any]]:
    """The reasons of each rule the response breaks: the row's expectations when it has any, else accept_status."""
    last = len(redirects)
    if not expect:
        if accept.accepts(status):
            return []
        return [_reason("accept_status", accept.accept_status_shown, str(status), last)]
    failures = []
    first = redirects[0]["status"] if redirects else status
    wanted = expect.get("status")
    if wanted is not None and not status_matches(wanted, first):
        failures.append(_reason("expect.status", str(wanted), str(first), 0))
    wanted = expect.get("final_url")
    final_url = result.final_url or ""
    if wanted is not None and url_key(final_url, url_match) != url_key(wanted, url_match):
        failures.append(_reason("expect.final_url", wanted, final_url, last))
    wanted = expect.get("final_status")
    if wanted is not None and not status_matches(wanted, status):
        failures.append(_reason("expect.final_status", str(wanted), str(status), last))
    wanted = expect.get("max_hops")
    if wanted is not None and last > wanted:
        failures.append(_reason("expect.max_hops", str(wanted), str(last), wanted))
    return failures


def _warnings(
    result: Result,
    headers: Mapping[str, str] | None,
    status: int,
    redirects: Any,
    expect: Mapping[str, Any] | None,
    body: bytes | None = None,
) -> tuple[list[dict[str, str]], list[int | None]]:
    """The evidence-based warnings of a response, and the hop each points at (None: the whole chain).

    body: the last response's body when the fetch kept it for a check (never fetched for a warning alone)."""
    warnings: list[dict[str, str]] = []
    hops: list[int | None] = []
    last = len(redirects)
    mitigated = headers.get("cf-mitigated") if headers is not None else None
    if mitigated is not None and mitigated.strip().lower() == "challenge":
        warnings.append({"kind": "bot_challenge", "evidence": f"cf-mitigated: {mitigated.strip()}"})
        hops.append(last)
    elif status == BOT_STATUS:
        warnings.append({"kind": "bot_challenge", "evidence": f"status {BOT_STATUS}"})
        hops.append(last)
    elif body and status in CHALLENGE_STATUSES and "html" in (result.content_type or "").lower():
        page = challenge_page(body)
        if page is not None:
            warnings.append({"kind": "bot_challenge", "evidence": page})
            hops.append(last)
    if status == 429:
        retry = headers.get("retry-after") if headers is not None else None
        evidence = "status 429" + (f", retry-after: {retry.strip()[:40]}" if retry else "")
        warnings.append({"kind": "rate_limited", "evidence": evidence})
        hops.append(last)
    if not redirects:
        return warnings, hops
    for i, hop in enumerate(redirects):
        if hop["status"] in TEMPORARY_REDIRECTS:
            warnings.append({"kind": "temporary_redirect", "evidence": f"{hop['status']} at hop {i}"})
            hops.append(i)
            break
    if last > LONG_CHAIN:
        warnings.append({"kind": "long_chain", "evidence": f"{last} redirects"})
        hops.append(None)
    final_url = result.final_url or ""
    for i, hop in enumerate(redirects):
        target = redirects[i + 1]["url"] if i + 1 < last else final_url
        if hop["url"][:6].lower() == "https:" and target[:5].lower() == "http:":
            warnings.append({"kind": "https_downgrade", "evidence": _cut(f"{hop['url']} -> {target}")})
            hops.append(i)
            break
    if _lands_on_root(result.url, final_url) and not (expect and expect.get("final_url")):
        warnings.append({"kind": "redirect_to_root", "evidence": _cut(f"{result.url} -> {final_url}")})
        hops.append(last)
    return warnings, hops


def challenge_page(body: bytes) -> str | None:
    """The evidence that an HTML body is a known bot-challenge interstitial (in its first CHALLENGE_BYTES), or None."""
    head = body[:CHALLENGE_BYTES].lower()
    if b"<title>just a moment...</title>" in head:  # Cloudflare's title alone is any site's to use: with its script
        for mark in (b"_cf_chl_opt", b"/cdn-cgi/challenge-platform/"):
            if mark in head:
                return f"Cloudflare challenge page: <title>Just a moment...</title> and {mark.decode()}"
    for vendor, marks in _CHALLENGE_MARKS:
        for mark in marks:
            if mark.lower() in head:
                return f"{vendor} challenge page: {mark.decode()}"
    return None


def _lands_on_root(url: str, final_url: str) -> bool:
    """Whether a URL with a path was redirected to the root of its own site (www. or not)."""
    start, end = urlsplit(url), urlsplit(final_url)
    if start.path in ("", "/") or end.path not in ("", "/") or end.query:
        return False
    return _site(start.hostname) == _site(end.hostname)


def _site(host: str | None) -> str:
    """A host without a leading www., for telling whether two URLs are on one site."""
    host = (host or "").lower()
    return host[4:] if host.startswith("www.") else host


def _reason(rule: str, expected: str, actual: str, hop: int | None = None) -> dict[str, Any]:
    """One reason as results show it; `actual` cut to ACTUAL_CHARS."""
    reason: dict[str, Any] = {"rule": rule, "expected": expected, "actual": _cut(actual)}
    if hop is not None:
        reason["hop"] = hop
    return reason


def _cut(text: str) -> str:
    """Text cut to ACTUAL_CHARS characters, marked when cut."""
    return text if len(text) <= ACTUAL_CHARS else text[: ACTUAL_CHARS - 3] + "..."


def status_matches(spec: int | str, status: int) -> bool:
    """Whether a status meets an expectation: an int, or a spec like accept_status ('301,308', '2xx')."""
    if isinstance(spec, int):
        return status == spec
    return any(low <= status <= high for low, high in _status_ranges(spec))


@functools.lru_cache(maxsize=256)
def _status_ranges(spec: str) -> tuple[tuple[int, int], ...]:
    """A status spec parsed once (rows of a batch share a few specs)."""
    from .options import parse_status_ranges  # options imports this module: read its parser when first needed

    return tuple(parse_status_ranges(spec))


def url_key(url: str, mode: str) -> tuple[str, ...]:
    """What two URLs must share to match under url_match `mode`: scheme and host ignore case, default ports drop."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    path = parts.path or "/"
    if mode == "path_only":
        return (path,)
    if mode == "ignore_trailing_slash":
        path = path.rstrip("/") or "/"
    query = "" if mode == "ignore_query" else parts.query
    return scheme, netloc, path, query


def resolved(url: str, base: str | None) -> str:
    """A URL or a path (`/old-post`) against a base URL; a path without a base stays as given."""
    if base and not urlsplit(url).scheme:
        return urljoin(base, url)
    return url


def effective_expect(batch: Mapping[str, Any] | None, row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A row's expectations: the batch's defaults with the row's own fields winning; None when there are none."""
    if not batch and not row:
        return None
    merged = {**(batch or {}), **(row or {})}
    return {key: merged[key] for key in EXPECT_FIELDS if merged.get(key) is not None} or None


def batch_verdict(
    counts: Mapping[str, int], stats: Mapping[str, Any], thresholds: Mapping[str, float] | None
) -> dict[str, Any]:
    """An ended batch's verdict: {"pass", "violations": [{"threshold", "limit", "actual"}]}.

    Rates are over the results that ran (ok, warn and failed; never the cancelled); a percentile the batch has no
    latency for breaks its threshold (nothing shows it was met). Without thresholds, it passes when no row failed.
    A batch with cancelled rows never passes: the violation {"threshold": "cancelled", "limit": 0} says how many.
    """
    violations: list[dict[str, Any]] = []
    cancelled = counts.get("cancelled", 0)
    if cancelled:  # rows that never ran proved nothing: the page, notifications and the CLI's exit code fail alike
        violations.append({"threshold": "cancelled", "limit": 0, "actual": cancelled})
    if not thresholds:
        return {"pass": counts.get("failed", 0) == 0 and not violations, "violations": violations}
    ran = counts.get("ok", 0) + counts.get("failed", 0)
    for name, limit in thresholds.items():
        actual: float | int | None
        if name == "min_ok":
            actual = counts.get("ok", 0)
            broken = actual < limit
        elif name in ("failed_rate", "warn_rate"):
            actual = round(counts.get(name[: -len("_rate")], 0) / ran, 4) if ran else 0.0
            broken = actual > limit
        else:
            actual = stats.get(name)
            broken = actual is None or actual > limit
        if broken:
            violations.append({"threshold": name, "limit": limit, "actual": actual})
    return {"pass": not violations, "violations": violations}
