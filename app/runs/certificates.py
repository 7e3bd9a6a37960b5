"""A batch's certificate inventory: one row per (host, certificate) its results met, read from the stored
results' captured `tls` (the final response's and each redirect hop's)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..fetch import tls
from .store import Store

EXPIRING_DAYS = 30  # what "expiring within 30 days" counts: certificates with at most this many days left
LISTED_URLS = 5  # URLs a row names (`urls` counts them all)
# Read per result: the URLs its hops went to and what each hop's TLS was (json_extract, in either store).
_PATHS = (("$.index", "$.url", "$.final_url", "$.tls", "$.redirects"),)


def certificates(store: Store, batch_id: str, now: datetime.datetime) -> list[dict[str, Any]]:
    """Every (host, certificate) of a batch's stored results, soonest expiry first; days_left counts from `now`."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for index, url, host, info in _hops(store, batch_id):
        key = (host, info["fingerprint"])
        row = rows.get(key)
        if row is None:
            row = rows[key] = {
                "host": host,
                "issuer": info.get("issuer"),
                "subject": info.get("subject"),
                "sans": info.get("sans", []),
                "not_before": info.get("not_before"),
                "not_after": info["not_after"],
                "days_left": tls.days_left(info["not_after"], now),
                "fingerprint": info["fingerprint"],
                "name_match": info.get("name_match"),
                "chain_valid": info.get("chain_valid"),
                "urls": 0,
                "url_examples": [],
                "_last": -1,
            }
        if row["_last"] != index:  # a URL whose redirects stay on the host counts once
            row["_last"] = index
            row["urls"] += 1
            if len(row["url_examples"]) < LISTED_URLS:
                row["url_examples"].append(url)
    listed = sorted(rows.values(), key=lambda row: (row["days_left"], row["host"]))
    for row in listed:
        del row["_last"]
    return listed


def expiring(rows: list[dict[str, Any]], days: int = EXPIRING_DAYS) -> int:
    """How many certificate rows have at most `days` days left (the expired included)."""
    return sum(1 for row in rows if row["days_left"] <= days)


def _hops(store: Store, batch_id: str) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    """(result index, its URL, a hop's host, that hop's tls) for every hop that captured a certificate."""
    for (page,) in store.result_pages(batch_id, extract=_PATHS):
        for line in page.split(b"\n"):
            try:
                index, url, final_url, final_tls, redirects = orjson.loads(line)
            except (orjson.JSONDecodeError, ValueError, TypeError):
                continue  # a result stored before capture existed, or unreadable: it names no certificate
            for hop in redirects or ():
                info = hop.get("tls") if isinstance(hop, dict) else None
                if info and info.get("fingerprint"):
                    yield index, url, _host(hop.get("url") or url), info
            if isinstance(final_tls, dict) and final_tls.get("fingerprint"):
                yield index, url, _host(final_url or url), final_tls


def _host(url: str) -> str:
    """A URL's host as the inventory names it: lowercase, with its port unless it is 443."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    shown = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        port = None
    return shown if port in (None, 443) else f"{shown}:{port}"
