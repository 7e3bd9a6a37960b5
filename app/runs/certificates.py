"""A batch's certificate inventory: one row per (host, certificate) its results met, read from the stored
results' captured `tls` (the final response's and each redirect hop's)."""

from __future__ import annotations

import bisect
import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..fetch import tls
from .store import Store

EXPIRING_DAYS = 30  # what "expiring within 30 days" counts: certificates with at most this many days left
LISTED_URLS = 5  # URLs a row names (`urls` counts them all)
# Read per result: the URLs its hops went to and what each hop's TLS was (json_extract, in either store).
_PATHS = (("$.index", "$.url", "$.final_url", "$.tls", "$.redirects"),)


class CertificateTable:
    """A batch's certificate inventory, its stored results counted one at a time (in any order), so a read costs
    what its certificates cost."""

    def __init__(self) -> None:
        """No result yet."""
        self._rows: dict[tuple[str, str], dict[str, Any]] = {}
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
            elif first < row["first"]:
                row["info"], row["first"] = info, first  # a row shows what the lowest URL index met first
            if key not in counted:  # a URL whose redirects stay on the host counts once
                counted.add(key)
                row["urls"] += 1
                bisect.insort(row["examples"], (index, url))
                del row["examples"][LISTED_URLS:]

    def rows(self, now: datetime.datetime) -> list[dict[str, Any]]:
        """Every (host, certificate), soonest expiry first; days_left counts from `now`."""
        listed = []
        for (host, fingerprint), row in self._rows.items():
            info = row["info"]
            days_left = tls.days_left(info["not_after"], now)
            entry = {
                "host": host,
                "issuer": info.get("issuer"),
                "subject": info.get("subject"),
                "sans": info.get("sans", []),
                "not_before": info.get("not_before"),
                "not_after": info["not_after"],
                "days_left": days_left,
                "fingerprint": fingerprint,
                "name_match": info.get("name_match"),
                "chain_valid": info.get("chain_valid"),
                "urls": row["urls"],
                "url_examples": [url for _, url in row["examples"]],  # the first LISTED_URLS by URL index
            }
            listed.append(((days_left, host, row["first"]), entry))
        listed.sort(key=lambda keyed: keyed[0])
        return [entry for _, entry in listed]


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
