"""Checks on a response (`checks` of a batch or a row): parsed and compiled once per batch, run by the evaluator.

Pure: a check reads what the fetch kept (the decoded body, up to max_bytes, only when a check needs it; the last
response's headers; the timings and size), never the network. Checks run on the hub, so each is bounded: a body
check searches at most its max_bytes of the body (DEFAULT_CHECK_BYTES, at most MAX_CHECK_BYTES), a json check
parses no body longer than that, and regular expressions run under REGEX_TIMEOUT each (the `regex` module stops
a catastrophic pattern). A JSONPath selects at most JSON_WALK_NODES nodes on its way to its first match, and one
with a `..` or a filter (whose visits that count does not see) reads no body longer than JSON_WALK_BYTES. One row's
checks after its first get what is left of CHECK_BUDGET, counted in the time spent inside them: those left when it
is spent fail saying so, and the caller may let other work run between two checks.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import jsonpath_rfc9535
import regex  # type: ignore[import-untyped]  # no stubs; a search's timeout= is what re lacks

from .lru import LRU

OPS = {
    "body": ("contains", "not_contains", "matches"),
    "json": ("==", "!=", "exists", "<", ">"),
    "header": ("present", "absent", "==", "matches"),
    "time.total": ("<", "<="),
    "time.ttfb": ("<", "<="),
    "time.dns": ("<", "<="),
    "time.connect": ("<", "<="),
    "time.tls": ("<", "<="),
    "size": ("<", ">"),
    "content_type": ("==", "matches"),
    # The final response's certificate (with capture.tls): whole days from the fetch to its expiry.
    "cert.days_left": (">", ">=", "<", "<="),
}
BODY_SOURCES = frozenset({"body", "json"})  # checks that need the response's body kept
READS_BODY = BODY_SOURCES | {"size"}  # checks a HEAD answer (no body) cannot answer
NO_VALUE_OPS = frozenset({"exists", "present", "absent"})
MAX_CHECKS = 50  # a batch's, and a row's
MAX_PATTERN = 1000  # characters of a regular expression, a JSONPath or a text to find
REGEX_TIMEOUT = 0.05  # seconds one search may take
# Bytes of the body a body check searches (decoded to text) and a json check parses at most: its max_bytes.
DEFAULT_CHECK_BYTES = 1024 * 1024
MAX_CHECK_BYTES = 4 * 1024 * 1024
SHOWN = 200  # characters of a value a reason shows
CHECK_BUDGET = 0.1  # seconds one row's checks may take together
JSON_WALK_BYTES = 64 * 1024  # the longest body a JSONPath with a `..` or a filter reads
JSON_WALK_NODES = 10_000  # nodes a JSONPath may select on its way to its first match (a few ms each thousand)
WALK_SPEND_EVERY = 1000  # nodes between two looks at the row's budget
CHECK_BUDGET_SPENT = f"check budget spent: this row's checks took more than {int(CHECK_BUDGET * 1000)} ms; not run"


class _Unjudged(Exception):
    """A check that cannot be decided on this response; its message is the reason's `actual`."""


class _Budget(threading.local):
    """The perf_counter time the checks of the row being judged must end by (per thread, or greenlet once
    patched)."""

    until = math.inf


_budget = _Budget()


class _BoundedEnvironment(jsonpath_rfc9535.JSONPathEnvironment):
    """RFC 9535 JSONPath whose descendant walks stop once the row's check budget is spent."""

    @property
    def max_recursion_depth(self) -> int:  # type: ignore[override]  # read-only here: it is where a walk stops
        """The library's depth limit, read at each node a `..` visits; past the row's budget, the walk stops."""
        _spend()
        return jsonpath_rfc9535.JSONPathEnvironment.max_recursion_depth


def _spend() -> None:
    """Before work that costs (decoding a body, parsing or walking JSON): _Unjudged once the row's budget is spent."""
    if time.perf_counter() > _budget.until:
        raise _Unjudged(CHECK_BUDGET_SPENT)


_JSONPATH = _BoundedEnvironment()


@dataclass(frozen=True)
class Check:
    """One check, as given (JSON-ready), with its pattern or query compiled."""

    source: str
    op: str
    value: Any = None
    path: str | None = None
    name: str | None = None
    max_bytes: int | None = None  # body and json checks: DEFAULT_CHECK_BYTES when not given

    def to_dict(self) -> dict[str, Any]:
        """The check as given."""
        data: dict[str, Any] = {"source": self.source, "op": self.op}
        for key in ("path", "name", "max_bytes"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.op not in NO_VALUE_OPS:
            data["value"] = self.value
        return data

    @functools.cached_property
    def pattern(self) -> Any:
        """The compiled regular expression of a `matches` check."""
        return regex.compile(self.value)

    @functools.cached_property
    def query(self) -> Any:
        """The compiled JSONPath of a `json` check."""
        return _JSONPATH.compile(self.path or "$")

    @functools.cached_property
    def walks_unseen(self) -> bool:
        """Whether the JSONPath visits nodes it does not select (a `..` descent, a filter), which JSON_WALK_NODES
        cannot count."""
        return any(
            isinstance(segment, jsonpath_rfc9535.segments.JSONPathRecursiveDescentSegment)
            or any(isinstance(selector, jsonpath_rfc9535.selectors.FilterSelector) for selector in segment.selectors)
            for segment in self.query.segments
        )

    def described(self) -> str:
        """What the check expects, in words."""
        subject = {"json": f"json {self.path}", "header": f"header {self.name}"}.get(self.source, self.source)
        if self.op in NO_VALUE_OPS:
            return f"{subject} {self.op.replace('_', ' ')}"
        return _cut(f"{subject} {self.op.replace('_', ' ')} {json.dumps(self.value)}")


def parse_checks(value: Any, where: str) -> tuple[tuple[Check, ...], list[dict[str, Any]]]:
    """A `checks` list checked item by item: (the checks, []) or ((), problems naming `where[i].field`)."""
    if not isinstance(value, list):
        return (), [{"field": where, "message": "must be a list of checks ({source, op, value, ...})"}]
    if len(value) > MAX_CHECKS:
        return (), [{"field": where, "message": f"at most {MAX_CHECKS} checks, not {len(value)}"}]
    checks = []
    problems = []
    for i, raw in enumerate(value):
        check, field, message = _parse_one(raw)
        if check is None:
            problems.append({"field": f"{where}[{i}]{'.' + field if field else ''}", "message": message})
        else:
            checks.append(check)
    return (tuple(checks), []) if not problems else ((), problems)


def _parse_one(raw: Any) -> tuple[Check | None, str, str]:
    """One check: (it, "", "") or (None, the field at fault, what is wrong)."""
    if not isinstance(raw, dict):
        return None, "", "must be an object with source, op and value"
    unknown = [key for key in raw if key not in ("source", "op", "value", "path", "name", "max_bytes")]
    if unknown:
        return None, unknown[0], "is not a field of a check (source, op, value, path, name, max_bytes)"
    source, op = raw.get("source"), raw.get("op")
    if source not in OPS:
        return None, "source", f"must be one of {', '.join(OPS)}"
    if op not in OPS[source]:
        return None, "op", f"must be one of {', '.join(OPS[source])} for source {source}"
    value, path, name = raw.get("value"), raw.get("path"), raw.get("name")
    if source == "json":
        if not isinstance(path, str) or not path or len(path) > MAX_PATTERN:
            return None, "path", f"must be a JSONPath (RFC 9535) like $.items[0].id, at most {MAX_PATTERN} characters"
        try:
            jsonpath_rfc9535.compile(path)
        except jsonpath_rfc9535.JSONPathError as exc:
            return None, "path", f"is not a valid JSONPath (RFC 9535): {exc}"
    elif path is not None:
        return None, "path", "applies to source json only"
    if source == "header":
        if not isinstance(name, str) or not name or len(name) > 100:
            return None, "name", "must be a header name"
    elif name is not None:
        return None, "name", "applies to source header only"
    max_bytes = raw.get("max_bytes")
    if max_bytes is not None:
        if source not in BODY_SOURCES:
            return None, "max_bytes", "applies to sources body and json only"
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or not 1 <= max_bytes <= MAX_CHECK_BYTES:
            return None, "max_bytes", f"must be an integer from 1 to {MAX_CHECK_BYTES} (server limit)"
    if op in NO_VALUE_OPS:
        value = None
    elif op in ("contains", "not_contains", "matches") or source == "content_type" or source == "header":
        if not isinstance(value, str) or len(value) > MAX_PATTERN:
            return None, "value", f"must be a string of at most {MAX_PATTERN} characters"
        if op == "matches":
            try:
                regex.compile(value)
            except regex.error as exc:
                return None, "value", f"is not a valid regular expression: {exc}"
    elif source == "json":
        if op in ("<", ">") and not _finite(value):
            return None, "value", "must be a number"
        if len(json.dumps(value)) > MAX_PATTERN:
            return None, "value", f"must be a JSON value of at most {MAX_PATTERN} characters"
    elif not _finite(value) or value < 0:
        unit = " (milliseconds)" if source.startswith("time.") else " (days)" if source == "cert.days_left" else ""
        return None, "value", "must be a number, at least 0" + unit
    return Check(source, op, value, path, name, max_bytes), "", ""


def _finite(value: Any) -> TypeGuard[int | float]:
    """Whether a check's value is a JSON number a float holds: not a bool, NaN, infinity or 1 and 400 zeros."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer past a float's range
        return False


def json_equal(found: Any, value: Any) -> bool:
    """JSON equality: as Python's ==, except that true and false are not the numbers 1 and 0, at any depth."""
    if isinstance(found, bool) or isinstance(value, bool):
        return isinstance(found, bool) and isinstance(value, bool) and found == value
    if isinstance(found, list) and isinstance(value, list):
        return len(found) == len(value) and all(map(json_equal, found, value))
    if isinstance(found, dict) and isinstance(value, dict):
        return found.keys() == value.keys() and all(json_equal(found[key], value[key]) for key in found)
    if isinstance(found, list | dict) or isinstance(value, list | dict):
        return False  # an array is never an object, nor a container a scalar
    return bool(found == value)  # 1 == 1.0: JSON has one kind of number


def needs_body(checks: Sequence[Check]) -> bool:
    """Whether any check reads the body (so the fetch must keep it)."""
    return any(check.source in BODY_SOURCES for check in checks)


def run(
    checks: Sequence[Check],
    first: int,
    body: bytes | None,
    headers: Mapping[str, str] | None,
    timings: Mapping[str, float | None],
    size: int,
    content_type: str | None,
    tls: Mapping[str, Any] | None = None,
    between: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """The reasons of the checks that fail (`check[first + i]`), each saying what it expected and found.

    tls: what capture.tls recorded of the final response's connection (None without it, or over http);
    between: called between two checks (the engine lets the hub run). The checks left once they have together
    spent CHECK_BUDGET (their own time, not what ran between them) fail with CHECK_BUDGET_SPENT."""
    reasons = []
    read = _Read(body, content_type)
    spent = 0.0  # seconds inside this row's checks: what `between` lets run elsewhere is not theirs
    for i, check in enumerate(checks):
        if i and between is not None:
            between()
        started = time.perf_counter()
        # The first check runs under its own bounds (max_bytes, REGEX_TIMEOUT, the JSONPath bounds), the others
        # while the row's budget lasts; set before each: `between` may have let another row's checks run.
        _budget.until = started + CHECK_BUDGET - spent if i else math.inf
        try:
            actual = _failure(check, read, headers, timings, size, content_type, tls)
        except _Unjudged as exc:
            actual = str(exc)
        except (jsonpath_rfc9535.JSONPathRecursionError, RecursionError):
            actual = "the JSON is nested too deep for this path"
        except jsonpath_rfc9535.JSONPathError as exc:
            actual = f"the path could not be applied to this JSON: {exc}"
        finally:
            _budget.until = math.inf
            spent += time.perf_counter() - started
        if actual is not None:
            reasons.append({"rule": f"check[{first + i}]", "expected": check.described(), "actual": _cut(actual)})
    return reasons


def partly_searched(checks: Sequence[Check], first: int, body: bytes | None, content_type: str | None) -> list[str]:
    """The evidence of each not_contains body check that holds only for what it read: the body is longer than
    the check's max_bytes, so the text may lie past them (a `contains` that fails says so in its reason)."""
    found = []
    read = _Read(body, content_type)
    for i, check in enumerate(checks):
        limit = check.max_bytes or DEFAULT_CHECK_BYTES
        if check.source == "body" and check.op == "not_contains" and len(read.body) > limit:
            if check.value not in read.text(limit):
                found.append(
                    f"check[{first + i}] {check.described()}: searched its first {limit} of {len(read.body)} bytes"
                    " (the check's max_bytes)"
                )
    return found


class _Read:
    """One response's body as its checks read it: decoded once per limit, parsed as JSON once."""

    def __init__(self, body: bytes | None, content_type: str | None):
        self.body = body or b""
        self.content_type = content_type
        self._texts: dict[int, str] = {}
        self._json: Any = _UNREAD

    def text(self, limit: int) -> str:
        """The body's first `limit` bytes as text."""
        text = self._texts.get(limit)
        if text is None:
            _spend()
            text = self._texts[limit] = _text(self.body[:limit], self.content_type)
        return text

    def cut(self, limit: int) -> str:
        """What a body check that found nothing adds when it searched only the body's first `limit` bytes."""
        if len(self.body) <= limit:
            return ""
        return f" (its first {limit} of {len(self.body)} bytes: the check's max_bytes)"

    def json(self, limit: int) -> Any:
        """The body's JSON value, _NOT_JSON, or _TOO_LONG when the body is longer than `limit` (never parsed)."""
        if len(self.body) > limit:
            return _TOO_LONG
        if self._json is _UNREAD:
            _spend()
            try:
                self._json = json.loads(self.text(len(self.body)))
            except (ValueError, RecursionError):  # a target's [[[[... deeper than json can read is not JSON here
                self._json = _NOT_JSON
        return self._json


def _failure(
    check: Check,
    read: _Read,
    headers: Mapping[str, str] | None,
    timings: Mapping[str, float | None],
    size: int,
    content_type: str | None,
    tls: Mapping[str, Any] | None,
) -> str | None:
    """What the response showed when the check fails, or None when it holds."""
    source, op, value = check.source, check.op, check.value
    if source == "json" and check.walks_unseen and len(read.body) > JSON_WALK_BYTES:
        return f"the body has {len(read.body)} bytes, more than the {JSON_WALK_BYTES} a path with .. or a filter walks"
    if source == "cert.days_left":
        days = tls.get("days_left") if tls else None
        if days is None:
            return "no certificate (the URL ended on http, or capture.tls is off)"
        holds = {">": days > value, ">=": days >= value, "<": days < value, "<=": days <= value}[op]
        return None if holds else f"{days} days left"
    limit = check.max_bytes or DEFAULT_CHECK_BYTES
    if source == "body":
        text = read.text(limit)
        if op == "contains":
            return None if value in text else "not found in the body" + read.cut(limit)
        if op == "not_contains":
            return None if value not in text else "found in the body"
        missed = _matches(check, text, "the body")
        return missed if missed is None or not missed.startswith("no match") else missed + read.cut(limit)
    if source == "json":
        document = read.json(limit)
        if document is _TOO_LONG:
            return f"the body has {len(read.body)} bytes, more than the {limit} a json check parses (its max_bytes)"
        if document is _NOT_JSON:
            return "the body is not JSON"
        nodes = _first_match(check, document)
        if op == "exists":
            return None if nodes else "no match"
        if not nodes:
            return "no match"
        found = nodes[0].value
        if op == "==":
            return None if json_equal(found, value) else json.dumps(found)
        if op == "!=":
            return None if not json_equal(found, value) else json.dumps(found)
        if isinstance(found, bool) or not isinstance(found, int | float):
            return f"{json.dumps(found)[:100]} is not a number"
        return None if (found < value if op == "<" else found > value) else json.dumps(found)
    if source == "header":
        found_header = headers.get(check.name or "") if headers is not None else None
        if op == "present":
            return None if found_header is not None else "absent"
        if op == "absent":
            return None if found_header is None else f"present: {found_header}"
        if found_header is None:
            return "the header is missing"
        if op == "==":
            return None if found_header == value else found_header
        return _matches(check, found_header, "the header")
    if source == "content_type":
        if content_type is None:
            return "no content type"
        if op == "==":
            return None if content_type.split(";")[0].strip().lower() == value.lower() else content_type
        return _matches(check, content_type, "the content type")
    if source == "size":
        return None if (size < value if op == "<" else size > value) else f"{size} bytes"
    measured = timings.get(source[len("time.") :])
    if measured is None:
        return "not measured (a reused connection has no dns, connect or tls)"
    return None if (measured < value if op == "<" else measured <= value) else f"{measured} ms"


_NOT_JSON = object()
_TOO_LONG = object()
_UNREAD = object()

WALKED_TOO_FAR = f"no match in the first {JSON_WALK_NODES} nodes this path selects; narrow it (an index, a slice)"


def _first_match(check: Check, document: Any) -> list[Any]:
    """The first node the check's JSONPath selects (a list of it, or empty): the later ones are never walked to.

    As the query's finditer, with each segment's nodes counted: a `*` or a slice over a long array stops after
    JSON_WALK_NODES, or once the row's budget is spent."""
    nodes: Iterable[Any] = [jsonpath_rfc9535.JSONPathNode(value=document, location=(), parent=None, root=document)]
    counted = itertools.count(1)
    for segment in check.query.segments:
        nodes = _counting(segment.resolve(nodes), counted)
    return list(itertools.islice(nodes, 1))


def _counting(nodes: Iterable[Any], counted: Iterator[int]) -> Iterator[Any]:
    """The nodes, each counted: _Unjudged past JSON_WALK_NODES, or once the row's budget is spent."""
    for node in nodes:
        seen = next(counted)
        if seen > JSON_WALK_NODES:
            raise _Unjudged(WALKED_TOO_FAR)
        if seen % WALK_SPEND_EVERY == 0:
            _spend()
        yield node


MAX_SLOW = 1000
# Patterns that ran out of time in this process, with the length of the text: a later text at least as long fails
# at once, not after a timeout each; a shorter one is searched.
_SLOW: LRU[str, int] = LRU(MAX_SLOW)


def _matches(check: Check, text: str, what: str) -> str | None:
    """A `matches` check on text, searched under REGEX_TIMEOUT (or what is left of the row's budget); a pattern that
    ran out of time on a text is not run again on one as long."""
    slow = f"the pattern took more than {int(REGEX_TIMEOUT * 1000)} ms; simplify it"
    slow_from = _SLOW.get(check.value)
    if slow_from is not None and len(text) >= slow_from:
        return slow
    left = _budget.until - time.perf_counter()
    if left <= 0:
        return CHECK_BUDGET_SPENT
    try:
        found = check.pattern.search(text, timeout=min(REGEX_TIMEOUT, left))
    except TimeoutError:
        if left < REGEX_TIMEOUT:
            return CHECK_BUDGET_SPENT  # cut short by the row's budget: the pattern is not known to be slow
        _SLOW.put(check.value, min(len(text), slow_from or len(text)))
        return slow
    return None if found else f"no match in {what}"


def _text(body: bytes | None, content_type: str | None) -> str:
    """The body as text: in its declared charset, else UTF-8, undecodable bytes replaced."""
    if not body:
        return ""
    charset = "utf-8"
    if content_type and "charset=" in content_type.lower():
        charset = content_type.lower().split("charset=", 1)[1].split(";")[0].strip().strip('"') or "utf-8"
    try:
        return body.decode(charset, "replace")
    except LookupError:
        return body.decode("utf-8", "replace")


def _cut(text: str) -> str:
    """Text cut to SHOWN characters."""
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."
