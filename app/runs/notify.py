"""Notifications when a batch ends: the guard's check of each target when it is saved, and the sender that
delivers the outbox's rows (store/outbox.py): the payload, notify_on's decision, the signed webhook or the Slack
text, sent through the guard again, pinned to the checked address; no Flask here.

A webhook's request: POST of the JSON payload with Content-Type application/json, X-Greenbatch-Event
(batch.finished), X-Greenbatch-Delivery (the payload's delivery_id), X-Greenbatch-Timestamp (unix seconds) and
X-Greenbatch-Signature: sha256=<hex HMAC-SHA256, keyed with the target's secret, of "<timestamp>.<raw body>">.

Delivery is at least once: a sender may die (or lose its lease) after the receiver got a try and before the try
was recorded, and the next sender tries again. Every try of one delivery carries the same delivery_id, signed, so
a receiver drops the ones it has seen.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import time
from collections import OrderedDict
from typing import Any, cast
from urllib.parse import urlsplit

import gevent
from gevent.event import AsyncResult
from gevent.event import Event as Signal
from gevent.pool import Pool

from ..core.clock import now_iso
from ..core.config import Config
from ..core.options import NOTIFY_ON, shown_target_url
from ..core.results import FINAL_STATUSES
from ..core.verdict import batch_verdict
from ..fetch import guard, tls
from ..fetch.errors import FetchError, unresolved
from .diff import KINDS, compare
from .events import Event
from .store import Store, StoreError
from .store.base import BatchRecord
from .store.outbox import Delivery

log = logging.getLogger(__name__)

EVENT = "batch.finished"
TRIES = 3  # a delivery's tries, the second GREENBATCH_NOTIFY_RETRY_DELAY s after the first, the third 4x that after
RETRY_FACTOR = 4
POLL = 1.0  # seconds between looks for due deliveries (a batch ending in this process wakes the sender at once)
SENDERS = 10  # deliveries sent at once; a claim takes no more than the senders free to start them now
PREPARE_LIMIT = 30.0  # seconds a batch's payload and notify_on decision may take to make (its diff, its history)
LEASE_MARGIN = 30.0  # seconds of a lease beyond a prepare and a try: the store's writes on a busy hub
PREPARED_KEPT = 64  # batches whose prepared payload a sender keeps, so each batch is prepared once, not per target
MAX_ANSWER_BYTES = 64 * 1024  # of a receiver's answer read (and dropped): a huge answer costs nothing more
MAX_ERROR_CHARS = 300  # of an error kept with a try
CHECK_LIMIT = 10.0  # seconds a save's notify targets may take to resolve, all of them together
# What "change" ignores: rows that stayed as they were, or got faster (rows still pending never reach a sender).
QUIET_KINDS = ("unchanged", "faster")


def target_refusal(
    url: str, policy: guard.Policy, max_length: int, explain: bool = False, getaddrinfo: Any = None
) -> tuple[str | None, str | None]:
    """(the URL as the guard checked it, None), or (None, why the guard refuses to send to it).

    A notify target is a fetch the user controls: its host is resolved and every address judged like a batch's
    URLs, so a webhook to a metadata or private address is refused when saved, not only when sent. The reason
    follows the engine's rules: the address, the rule and the resolver's words only where `explain`
    (GREENBATCH_EXPLAIN_BLOCKED) says so.
    """
    try:
        checked = guard.check_url(url, max_length)
    except guard.InvalidUrl as exc:
        return None, str(exc)
    parts = urlsplit(checked)
    host = parts.hostname or ""
    try:
        guard.resolve(host, _port(parts.scheme, parts.port), policy, getaddrinfo)
    except guard.GuardError as exc:
        return None, _said(exc, explain)
    except (OSError, UnicodeError) as exc:
        return None, _said(unresolved(host, exc), explain)
    return checked, None


def target_refusals(
    urls: list[str],
    policy: guard.Policy,
    max_length: int,
    explain: bool = False,
    limit: float = CHECK_LIMIT,
    getaddrinfo: Any = None,
) -> list[tuple[str | None, str | None]]:
    """target_refusal() of each URL, all resolved at once and within `limit` seconds together (a save waits for
    them): a host not judged by then is refused as not checked."""
    checks = [gevent.spawn(target_refusal, url, policy, max_length, explain, getaddrinfo) for url in urls]
    gevent.joinall(checks, timeout=limit)
    found: list[tuple[str | None, str | None]] = []
    for url, check in zip(urls, checks, strict=True):
        if check.ready():
            found.append(check.get())
        else:
            check.kill(block=False)
            found.append((None, f"{_host_of(url)} could not be checked within {limit:g} s; try again"))
    return found


def _said(exc: guard.GuardError | FetchError, explain: bool) -> str:
    """A refusal as the engine words it: its detail only on a server that explains refusals."""
    return exc.detail if explain and exc.detail else str(exc)


def _host_of(url: str) -> str:
    """A URL's host as typed (a refusal names it)."""
    try:
        return urlsplit(url).hostname or url
    except ValueError:
        return url


def _port(scheme: str, port: int | None) -> int:
    """A URL's port, its scheme's default when it names none."""
    return port or (443 if scheme == "https" else 80)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """X-Greenbatch-Signature's value: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>" keyed with the secret>."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def post(url: str, body: bytes, headers: dict[str, str], policy: guard.Policy, timeout: float) -> int:
    """POST `body` to `url`, connected to an address the guard checked now (never resolved again); the status.

    Raises guard.GuardError, OSError or http.client.HTTPException; a redirect is an answer like any other,
    never followed.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = _port(parts.scheme, parts.port)
    # The whole try, not each read: a receiver trickling its answer a byte at a time cannot hold a sender longer.
    with gevent.Timeout(timeout, TimeoutError(f"no answer within {timeout:g} s")):
        infos = guard.resolve(host, port, policy)
        sock = guard.connect(infos, timeout)
        return _posted(sock, parts, host, port, body, headers, timeout)


def _posted(
    sock: socket.socket,
    parts: Any,
    host: str,
    port: int,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
) -> int:
    """post()'s request on a connected socket (closed after): the answer's status, its body read and dropped."""
    try:
        if parts.scheme == "https":
            sock = tls.shared_context().wrap_socket(sock, server_hostname=host)
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        connection.sock = sock
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", target, body=body, headers=headers)
        answer = connection.getresponse()
        answer.read(MAX_ANSWER_BYTES)
        return answer.status
    finally:
        sock.close()


def should_send(
    options: dict[str, Any], verdict: dict[str, Any], diff_summary: dict[str, int] | None, failing: int | None
) -> str | None:
    """None when a finished batch's notification goes out, else why not (notify_on, consecutive_failures).

    change: the diff against the previous run (parent_id) shows any kind but unchanged or faster; a first run
    (no previous one) is a change. failure: the verdict fails or some URL newly failed. consecutive_failures N:
    besides, `failing` (URLs failed in this run and its N-1 predecessors) is above 0.
    """
    notify_on = options.get("notify_on", NOTIFY_ON[0])
    if notify_on == "change" and diff_summary is not None:
        if not any(count for kind, count in diff_summary.items() if kind not in QUIET_KINDS):
            return "notify_on is change, and nothing changed since the previous run"
    if notify_on == "failure" and verdict.get("pass") and not (diff_summary or {}).get("newly_failed"):
        return "notify_on is failure, and the verdict passes with no URL newly failed"
    runs = options.get("consecutive_failures")
    if runs and not failing:
        return f"consecutive_failures is {runs}, and no URL failed in {runs} runs in a row"
    return None


class Notifier:
    """Sends the outbox's due deliveries from a greenlet on the hub: claimed, prepared once per batch (payload,
    decision), tried up to TRIES times, every try recorded under the sender's claim."""

    def __init__(self, config: Config, store: Store, policy: guard.Policy, poll: float = POLL):
        self.config = config
        self.store = store
        self.policy = policy
        self.poll = poll
        # A claim is one try of each delivery: held long enough to prepare it, try it and record the try, so
        # no other sender claims it again while this one still may send it.
        self.lease = PREPARE_LIMIT + config.notify_timeout + LEASE_MARGIN
        self._due = Signal()
        self._greenlet: gevent.Greenlet[[], None] | None = None
        self._pool = Pool(SENDERS)
        self._prepared: OrderedDict[str, AsyncResult[tuple[dict[str, Any], str | None]]] = OrderedDict()
        self._next_retry = float("inf")  # when the soonest retry this process scheduled comes due (time.time())
        store.observe_commits(self._committed)

    def start(self) -> Notifier:
        """Begin sending: what an earlier process left pending goes out first."""
        self._greenlet = gevent.spawn(self._loop)
        return self

    def stop(self) -> None:
        """Stop sending; deliveries in flight end where they are (their lease lets the next start retry them)."""
        if self._greenlet is not None:
            self._greenlet.kill()
        self._pool.kill(timeout=1)

    def _committed(self, events: list[Event]) -> None:
        """Wake the sender when a batch's final event is stored (its deliveries are then in the outbox)."""
        if any(event.type == "batch" and event.data.get("status") in FINAL_STATUSES for event in events):
            self._due.set()

    def _loop(self) -> None:
        """Send what is due, then wait for a batch to end, a retry to come due, or the next look."""
        while True:
            try:
                self.send_due()
            except StoreError as exc:
                log.warning("notifications: the outbox cannot be read (%s); trying again in %.0f s", exc, self.poll)
            except Exception:
                log.exception("notifications: the sender failed; it goes on in %.0f s", self.poll)
            self._due.wait(min(self.poll, max(0.0, self._next_retry - time.time())))
            self._due.clear()

    def send_due(self) -> int:
        """Claim and send every delivery due now; how many were handled."""
        handled = 0
        self._next_retry = float("inf")
        while True:
            self._pool.wait_available()
            # Only as many as start now: a claimed delivery waiting for a sender would spend its lease waiting.
            claims = self.store.claim_deliveries(self.lease, self._pool.free_count())
            if not claims:
                self._pool.join()
                return handled
            for delivery in claims:
                self._pool.spawn(self._handle, delivery)
            handled += len(claims)

    def _handle(self, delivery: Delivery) -> None:
        """_deliver(delivery); an error it did not expect is logged and counted as a try, never lost."""
        try:
            self._deliver(delivery)
        except Exception as exc:
            log.exception(
                "batch %s: notification %d failed in the sender; counted as a try",
                delivery.batch_id,
                delivery.id,
                extra={"batch_id": delivery.batch_id},
            )
            error = f"the sender failed: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            try:
                self._record_try(delivery, None, error, None, None)
            except Exception:
                log.exception("batch %s: notification %d: its try cannot be recorded", delivery.batch_id, delivery.id)

    def _deliver(self, delivery: Delivery) -> None:
        """Prepare a claimed delivery if it is new, then try it once; its row says what happened."""
        record = self.store.get_batch(delivery.batch_id)
        targets = (record.options.get("notify") or []) if record else []
        if record is None or delivery.target >= len(targets):
            self.store.record_delivery(delivery, "failed", delivery.tries, time.time(), note="its batch is gone")
            return
        payload = delivery.payload
        if payload is None:
            payload, skip = self._prepared_once(record)
            if skip is not None:
                self.store.record_delivery(delivery, "skipped", [], time.time(), payload, skip)
                log.info("batch %s: notification %d not sent: %s", record.id, delivery.id, skip)
                return
        self._try(delivery, targets[delivery.target], payload)

    def _prepared_once(self, record: BatchRecord) -> tuple[dict[str, Any], str | None]:
        """prepare(record), made once for all of a batch's targets (the others wait for it), within PREPARE_LIMIT."""
        made = self._prepared.get(record.id)
        if made is None:
            made = self._prepared[record.id] = AsyncResult()
            while len(self._prepared) > PREPARED_KEPT:
                self._prepared.popitem(last=False)
            try:
                with gevent.Timeout(PREPARE_LIMIT, TimeoutError(f"not prepared within {PREPARE_LIMIT:g} s")):
                    made.set(self.prepare(record))
            except Exception as exc:
                self._prepared.pop(record.id, None)  # the next try prepares it again
                made.set_exception(exc)
                raise
        made.wait(PREPARE_LIMIT)
        if not made.ready():
            raise TimeoutError(f"not prepared within {PREPARE_LIMIT:g} s")
        return cast("tuple[dict[str, Any], str | None]", made.get(block=False))

    def prepare(self, record: BatchRecord) -> tuple[dict[str, Any], str | None]:
        """A finished batch's payload, and why it is not sent (None: it is)."""
        summary = record.summary or {}
        counts, stats = summary.get("counts") or {}, summary.get("stats") or {}
        verdict = batch_verdict(counts, stats, record.options.get("thresholds"))
        diff_summary = self._diff_summary(record)
        runs = record.options.get("consecutive_failures")
        failing = self._failing(record, runs) if runs else None
        payload = {
            "event": EVENT,
            "batch_id": record.id,
            "list_id": record.list_id,
            "name": record.name,
            "parent_id": record.parent_id,
            "status": record.status,
            "verdict": verdict,
            "counts": counts,
            "stats": stats,
            "diff_summary": diff_summary,
            "dashboard_url": self._dashboard_url(record),
        }
        if failing is not None:
            payload["consecutive_failures"] = {"runs": runs, "urls": failing}
        return payload, should_send(record.options, verdict, diff_summary, failing)

    def _diff_summary(self, record: BatchRecord) -> dict[str, int] | None:
        """The diff's counts against the batch's parent_id (None without one, or when either is too large)."""
        base = self.store.get_batch(record.parent_id) if record.parent_id else None
        if base is None or max(base.total, record.total) > self.config.max_diff_urls:
            return None
        rows = self.store.diff_rows(base.id), self.store.diff_rows(record.id)
        found = gevent.get_hub().threadpool.apply(compare, (*rows, "url", 2.0, ()))  # CPU off the hub
        return {kind: found.summary[kind] for kind in KINDS}

    def _failing(self, record: BatchRecord, runs: int) -> int:
        """How many URLs failed in this batch and each of its runs-1 predecessors by parent_id (by URL)."""
        failed: set[str] | None = None
        current: BatchRecord | None = record
        for _ in range(runs):
            if current is None or current.total > self.config.max_diff_urls:
                return 0
            these = {row.url for row in self.store.diff_rows(current.id) if row.outcome == "failed"}
            failed = these if failed is None else failed & these
            if not failed:
                return 0
            current = self.store.get_batch(current.parent_id) if current.parent_id else None
        return len(failed or ())

    def _dashboard_url(self, record: BatchRecord) -> str | None:
        """The batch page's absolute URL: GREENBATCH_PUBLIC_URL's, else the submitting request's host's."""
        base = self.config.public_url or record.options.get("origin") or ""
        return f"{base.rstrip('/')}/batches/{record.id}" if base else None

    def _try(self, delivery: Delivery, target: dict[str, str], payload: dict[str, Any]) -> None:
        """One try of a delivery, recorded: sent on a 2xx, else due again after its backoff, failed after TRIES."""
        body, headers = self.request(target, payload, delivery.delivery_id)
        started = time.monotonic()
        status, error = None, None
        try:
            status = post(target["url"], body, headers, self.policy, self.config.notify_timeout)
            if not 200 <= status < 300:
                error = f"the receiver answered {status}" + (
                    " (redirects are not followed)" if 300 <= status < 400 else ""
                )
        except guard.GuardError as exc:
            error = f"blocked by the guard: {exc}"
        except (TimeoutError, OSError, ssl.SSLError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS] or type(exc).__name__
        self._record_try(delivery, status, error, round((time.monotonic() - started) * 1000, 1), payload)

    def _record_try(
        self,
        delivery: Delivery,
        status: int | None,
        error: str | None,
        ms: float | None,
        payload: dict[str, Any] | None,
    ) -> None:
        """A try's outcome on its delivery: sent without an error, else due again after its backoff, failed after
        TRIES; written only while the claim is still this sender's."""
        tries = [*delivery.tries, {"at": now_iso(), "status_code": status, "error": error, "ms": ms}]
        if error is None:
            state, due = "sent", time.time()
        elif len(tries) >= TRIES:
            state, due = "failed", time.time()
        else:
            state, due = "pending", time.time() + self.config.notify_retry_delay * RETRY_FACTOR ** (len(tries) - 1)
        shown = shown_target_url(delivery.url)
        if not self.store.record_delivery(delivery, state, tries, due, payload):
            log.warning(
                "batch %s: notification to %s, try %d: its lease ended before it was recorded; the sender now"
                " holding it tries again (the receiver may get it twice, with the same delivery id)",
                delivery.batch_id,
                shown,
                len(tries),
                extra={"batch_id": delivery.batch_id},
            )
            return
        if state == "pending":
            self._next_retry = min(self._next_retry, due)
        if error is None:
            log.info(
                "batch %s: notification sent to %s", delivery.batch_id, shown, extra={"batch_id": delivery.batch_id}
            )
        else:
            log.warning(
                "batch %s: notification to %s, try %d of %d: %s%s",
                delivery.batch_id,
                shown,
                len(tries),
                TRIES,
                error,
                "; giving up" if state == "failed" else "",
                extra={"batch_id": delivery.batch_id},
            )

    def request(
        self, target: dict[str, str], payload: dict[str, Any], delivery_id: str
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of a try: the signed payload (with its delivery id) for a webhook, a short text
        for Slack."""
        if target.get("type") == "slack":
            body = json.dumps({"text": slack_text(payload)}).encode()
            return body, {"Content-Type": "application/json", "X-Greenbatch-Delivery": delivery_id}
        body = json.dumps({**payload, "delivery_id": delivery_id}, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        return body, {
            "Content-Type": "application/json",
            "User-Agent": "greenbatch",
            "X-Greenbatch-Event": EVENT,
            "X-Greenbatch-Delivery": delivery_id,
            "X-Greenbatch-Timestamp": timestamp,
            "X-Greenbatch-Signature": signature(target.get("secret") or "", timestamp, body),
        }


def slack_text(payload: dict[str, Any]) -> str:
    """A finished batch in a few lines for Slack: verdict, counts, what changed, the link."""
    counts = payload.get("counts") or {}
    verdict = "passed" if (payload.get("verdict") or {}).get("pass") else "FAILED"
    name = slack_escaped(str(payload.get("name") or payload["batch_id"]))
    lines = [
        f"greenbatch: batch {name} {payload.get('status')}, verdict {verdict}",
        ", ".join(f"{counts.get(key, 0)} {key}" for key in ("ok", "warn", "failed", "cancelled")),
    ]
    changed = {
        kind: count for kind, count in (payload.get("diff_summary") or {}).items() if count and kind != "unchanged"
    }
    if changed:
        lines.append(
            "since the previous run: "
            + ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in changed.items())
        )
    if payload.get("dashboard_url"):
        lines.append(f"<{slack_escaped(payload['dashboard_url'])}|open the batch>")
    return "\n".join(lines)


def slack_escaped(text: str) -> str:
    """Text Slack shows as it is: &, < and > escaped as Slack documents, so a name like <!channel> or
    <https://x|log in> neither pings anyone nor makes a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
