"""A batch's certificate inventory: one row per (host, certificate) its results met, read from the stored
results' captured `tls` (the final response's and each redirect hop's)."""

from __future__ import annotations

import bisect
import datetime
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..fetch import tls
from .store import Store

EXPIRING_DAYS = 30  # what "expiring within 30 days" counts: certificates with at most this many days left
LISTED_URLS = 5  # URLs a row names (`urls` counts them all)
# Read per result: the URLs its hops went to and what each hop's TLS was (json_extract, in either store).
_PATHS = (("$.index", "$.url", "$.final_url", "$.tls", "$.redirects"),)
# A row's place in the inventory: soonest expiry first (ISO 8601 UTC texts sort as their times), then by host and
# fingerprint, which name one row, so a page's last row is where the next begins however the rows change.
Key = tuple[str, str, str]


@dataclass(frozen=True)
class CertificatePage:
    """Some rows of an inventory, in its order, with what is said of all of them."""

    rows: list[dict[str, Any]]
    count: int  # rows in the whole inventory
    expiring: int  # of those, rows with at most EXPIRING_DAYS days left (the expired included)
    next: Key | None  # the last row's key when more rows follow; None on the last page


class CertificateTable:
    """A batch's certificate inventory, its stored results counted one at a time (in any order), so a read costs
    what its certificates cost."""

    def __init__(self) -> None:
        """No result yet."""
        self._rows: dict[tuple[str, str], dict[str, Any]] = {}
        self._order: list[Key] | None = []  # every row's key in order; None once a new row makes it stale
        self.seq = 0  # the stored events counted: those numbered up to this one

    def add(self, result: dict[str, Any]) -> None:
        """Count the certificates of one stored result's hops (its redirects', then its final response's)."""
        index, url = result.get("index"), result.get("url")
        if not isinstance(index, int) or not isinstance(url, str):
            return  # an unreadable result names no certificate
        hops = [hop for hop in result.get("redirects") or () if isinstance(hop, dict)]
        seen = [(hop.get("url") or url, hop.get("tls")) for hop in hops]
        seen.append((result.get("final_url") or url, result.get("tls")))
        counted = set()
        for position, (hop_url, info) in enumerate(seen):
            if not isinstance(info, dict) or not info.get("fingerprint"):
                continue
            key = (_host(hop_url), info["fingerprint"])
            row = self._rows.get(key)
            first = (index, position)
            if row is None:
                row = self._rows[key] = {"info": info, "first": first, "urls": 0, "examples": []}
                self._order = None
            elif first < row["first"]:
                row["info"], row["first"] = info, first  # a row shows what the lowest URL index met first
            if key not in counted:  # a URL whose redirects stay on the host counts once
                counted.add(key)
                row["urls"] += 1
                bisect.insort(row["examples"], (index, url))
                del row["examples"][LISTED_URLS:]

    def rows(self, now: datetime.datetime) -> list[dict[str, Any]]:
        """Every (host, certificate), soonest expiry first; days_left counts from `now`."""
        return self.page(now).rows

    def page(self, now: datetime.datetime, limit: int | None = None, after: Key | None = None) -> CertificatePage:
        """At most `limit` rows (all without one) that follow the row `after` (a page's `next`) in the
        inventory's order; days_left counts from `now`."""
        order = self._sorted()
        start = bisect.bisect_right(order, after) if after is not None else 0
        end = len(order) if limit is None else min(len(order), start + limit)
        rows = [self._entry(key, now) for key in order[start:end]]
        # days_left only grows along the order: the expiring rows are those before the first with more days.
        soon = bisect.bisect_right(order, EXPIRING_DAYS, key=lambda key: tls.days_left(key[0], now))
        return CertificatePage(rows, len(order), soon, order[end - 1] if start < end < len(order) else None)

    def _sorted(self) -> list[Key]:
        """Every row's key in the inventory's order (sorted again only after a new row came)."""
        if self._order is None:
            self._order = sorted((row["info"]["not_after"], host, fp) for (host, fp), row in self._rows.items())
        return self._order

    def _entry(self, key: Key, now: datetime.datetime) -> dict[str, Any]:
        """The row a key names, as the inventory lists it."""
        _, host, fingerprint = key
        row = self._rows[(host, fingerprint)]
        info = row["info"]
        return {
            "host": host,
            "issuer": info.get("issuer"),
            "subject": info.get("subject"),
            "sans": info.get("sans", []),
            "sans_omitted": info.get("sans_omitted", 0),
            "not_before": info.get("not_before"),
            "not_after": info["not_after"],
            "days_left": tls.days_left(info["not_after"], now),
            "fingerprint": fingerprint,
            "name_match": info.get("name_match"),
            "chain_valid": info.get("chain_valid"),
            "urls": row["urls"],
            "url_examples": [url for _, url in row["examples"]],  # the first LISTED_URLS by URL index
        }


def certificates(store: Store, batch_id: str, now: datetime.datetime) -> list[dict[str, Any]]:
    """Every (host, certificate) of a batch's stored results, soonest expiry first; days_left counts from `now`."""
    table = CertificateTable()
    for (page,) in store.result_pages(batch_id, extract=_PATHS):
        for line in page.split(b"\n"):
            try:
                index, url, final_url, final_tls, redirects = orjson.loads(line)
            except (orjson.JSONDecodeError, ValueError, TypeError):
                continue  # a result stored before capture existed, or unreadable: it names no certificate
            table.add({"index": index, "url": url, "final_url": final_url, "tls": final_tls, "redirects": redirects})
    return table.rows(now)


def expiring(rows: list[dict[str, Any]], days: int = EXPIRING_DAYS) -> int:
    """How many certificate rows have at most `days` days left (the expired included)."""
    return sum(1 for row in rows if row["days_left"] <= days)


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
