"""A batch's rows beyond their URLs: `urls` items given as objects, and a CSV's recognised header, read into
per-row expectations and meta (the sidecar BatchOptions.rows keeps by URL index)."""

from __future__ import annotations

from typing import Any

from .checks import parse_checks
from .config import Config
from .options import MAX_META_CHARS, MAX_META_COLUMNS, parse_expect

# A CSV column's name (any case, spaces around ignored) -> what it holds; any other column is meta.
CSV_COLUMNS = {
    "url": "url",
    "source": "url",
    "old": "url",
    "from": "url",
    "expected_status": "status",
    "status": "status",
    "expected_final_url": "final_url",
    "target": "final_url",
    "new": "final_url",
    "to": "final_url",
    "destination": "final_url",
    "expected_final_status": "final_status",
    "max_hops": "max_hops",
}
ITEM_KEYS = ("url", "expect", "meta", "checks")


def item_row(index: int, item: Any, config: Config) -> tuple[Any, dict[str, Any] | None, str | None, str]:
    """One `urls` item: (its URL, its sidecar row or None, what is wrong or None, the field at fault)."""
    where = f"urls[{index}]"
    if isinstance(item, str):
        return item, None, None, where
    if not isinstance(item, dict):
        return item, None, "must be a URL string or an object with url, expect, meta", where
    unknown = [key for key in item if key not in ITEM_KEYS]
    if unknown:
        return None, None, "is not a known field (url, expect, meta, checks)", f"{where}.{unknown[0]}"
    url = item.get("url")
    if not isinstance(url, str):
        return url, None, "must be a URL string", f"{where}.url"
    row: dict[str, Any] = {}
    if item.get("expect") is not None:
        expect, problem = parse_expect(item["expect"], config)
        if problem:
            return url, None, problem, f"{where}.expect"
        if expect:
            row["expect"] = expect
    if item.get("checks") is not None:
        parsed, problems = parse_checks(item["checks"], f"{where}.checks")
        if problems:
            return url, None, problems[0]["message"], problems[0]["field"]
        if parsed:
            row["checks"] = [check.to_dict() for check in parsed]
    if item.get("meta") is not None:
        meta, problem = meta_of(item["meta"])
        if problem:
            return url, None, problem, f"{where}.meta"
        if meta:
            row["meta"] = meta
    return url, row or None, None, where


def meta_of(value: Any) -> tuple[dict[str, Any] | None, str | None]:
    """A row's meta: an object of at most MAX_META_COLUMNS short scalar values, in its order."""
    if not isinstance(value, dict):
        return None, "must be an object of column names to values"
    if len(value) > MAX_META_COLUMNS:
        return None, f"at most {MAX_META_COLUMNS} meta columns, not {len(value)}"
    for key, given in value.items():
        if given is not None and not isinstance(given, str | int | float | bool):
            return None, f"{key!r} must be a string, a number, true, false or null"
        if len(str(key)) > MAX_META_CHARS or (isinstance(given, str) and len(given) > MAX_META_CHARS):
            return None, f"{str(key)[:40]!r} is longer than {MAX_META_CHARS} characters"
    return dict(value), None


def csv_columns(header: list[str]) -> list[str] | None:
    """What each column of a CSV's first row holds (url, status, final_url, ... or meta:<name>), or None when the
    row is not a recognised header (no url column, or a column named twice)."""
    roles = []
    for name in header:
        key = name.strip().lower()
        roles.append(CSV_COLUMNS.get(key, f"meta:{name.strip()}"))
    if roles.count("url") != 1 or len(set(roles)) != len(roles):
        return None
    return roles


def meta_columns_problem(columns: int) -> str:
    """What is wrong with a batch of this many distinct meta columns, or "" (the export has one column each)."""
    if columns <= MAX_META_COLUMNS:
        return ""
    return f"a batch has at most {MAX_META_COLUMNS} distinct meta columns (server limit), not {columns}"


def csv_row(values: list[str], roles: list[str], config: Config) -> tuple[str, dict[str, Any] | None, str]:
    """A CSV row read by its header's roles: (the URL, its sidecar row or None, what is wrong or "")."""
    url = ""
    expect: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for role, value in zip(roles, values):
        value = value.strip()
        if role == "url":
            url = value
        elif role.startswith("meta:"):
            meta[role[5:]] = value
        elif value:
            # ASCII digits only: "²" is a digit to str.isdigit but not to int()
            number = role in ("status", "final_status") and value.isascii() and value.isdigit()
            expect[role] = int(value) if number else value
    for role in roles[len(values) :]:
        if role.startswith("meta:"):
            meta[role[5:]] = ""  # a short row: its missing meta columns are empty, so every row has them all
    row: dict[str, Any] = {}
    if expect:
        parsed, problem = parse_expect(expect, config)
        if problem:
            return url, None, problem
        if parsed:
            row["expect"] = parsed
    if meta:
        if any(len(value) > MAX_META_CHARS for value in meta.values()):
            return url, None, f"a meta value is longer than {MAX_META_CHARS} characters"
        row["meta"] = meta
    return url, row or None, ""
