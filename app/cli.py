"""Command line client: submit files of URLs to a greenbatch server, follow batches, fetch their results.

    greenbatch submit urls.txt|redirects.csv [--follow] [--output FILE] [--format csv|ndjson|junit] [options]
    greenbatch follow ID | status ID | results ID [--failed] | cancel ID | list
    (or `python -m app.cli ...` from the checkout; every command takes --server URL and --token T)

It talks to the JSON API over HTTP with requests and never imports the server's code (no Flask, no gevent,
no monkey patching). Every number it prints comes from the API, so it agrees with the dashboard.

A CSV file whose first row is a header the server recognises (url or source/old/from, expected_status,
expected_final_url or target/new/to/destination, expected_final_status, max_hops; other columns are meta) is
sent as it is, as text/csv, so each row carries its expectations.

Exit status: 0 when the command did its job (with --follow or follow: when the batch's verdict passes, which
without thresholds means no URL failed); 1 when the verdict fails, any URL was cancelled, or (--fail-on warn) any
URL ended warn; 2 for a usage error, a refused request, or a server that cannot be reached or is not greenbatch;
130 when Ctrl-C stopped it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import shlex
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import quote, urljoin

import click
import requests

DEFAULT_SERVER = "http://127.0.0.1:8000"
FINAL_STATUSES = ("done", "cancelled", "failed")
POLL_INTERVAL = 0.5  # seconds between polls of a followed batch
PLAIN_EVERY = 2.0  # seconds between progress lines when stderr is not a terminal
REQUEST_TIMEOUT = 30.0  # seconds one API call may take
POLL_GIVE_UP = 30.0  # seconds of failed polls before the CLI stops following
BAR_WIDTH = 30
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# The API's option fields as the flags that set them, so a server's complaint names what the user typed.
FLAG_OF_FIELD = {
    "headers": "-H/--header",
    "header": "-H/--header",
    "name": "--name",
    "thresholds": "--threshold",
    "warn_as": "--warn-as",
}
# A CSV column's name (any case, spaces around ignored) -> what the server reads it as; any other is meta. The
# server's table (app/core/rowspec.py CSV_COLUMNS) decides: this one only tells whether a file has such a header.
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
THRESHOLDS = ("failed_rate", "warn_rate", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ok")
WARNING_KINDS = (
    "bot_challenge",
    "rate_limited",
    "temporary_redirect",
    "long_chain",
    "https_downgrade",
    "redirect_to_root",
    "partial_check",
)
QUERY_JSON_OPTIONS = ("expect", "warn_as", "thresholds", "checks", "capture")  # options a query string carries as JSON


class CliError(Exception):
    """A problem the user must fix (exit 2); the message says what and how."""


class ServerError(CliError):
    """An error answer in greenbatch's envelope: {"error": {"code", "message", "details"}}."""

    def __init__(self, status: int, code: str, message: str, details: list[Any]):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details

    def __str__(self) -> str:
        lines = [f"the server answered {self.status}: {self.message}"]
        for detail in self.details[:10]:
            if isinstance(detail, dict) and detail.get("message") and detail["message"] not in self.message:
                lines.append(f"  {flag_of(str(detail.get('field', '')))} {detail['message']}".rstrip())
        if len(self.details) > 10:
            lines.append(f"  ... and {len(self.details) - 10} more")
        if self.status == 401:
            lines.append("Pass --token TOKEN or set GREENBATCH_TOKEN.")
        return "\n".join(lines)


def flag_of(field_name: str) -> str:
    """An API field as the command line flag that sets it: options.max_redirects -> --max-redirects."""
    if field_name.startswith("options."):
        field_name = field_name.removeprefix("options.")
        return FLAG_OF_FIELD.get(field_name, "--" + field_name.replace("_", "-"))
    return FLAG_OF_FIELD.get(field_name, field_name)


# -- talking to the server -------------------------------------------------------------------


class Client:
    """The greenbatch JSON API at one base URL, with an optional bearer token."""

    def __init__(self, server: str, token: str | None):
        if "://" not in server:
            server = "http://" + server
        self.base = server.rstrip("/")
        self.server = self.base + "/"
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "greenbatch-cli"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(
        self, method: str, path: str, expect: tuple[str, ...] = ("application/json",), **kwargs: Any
    ) -> requests.Response:
        """One call (path relative to the server, or a batch's link); errors become CliError in plain words."""
        url = urljoin(self.server, path)
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        try:
            # greenbatch's API never redirects: a redirect means --server points somewhere else.
            response = self.session.request(method, url, allow_redirects=False, **kwargs)
        except requests.ConnectionError as exc:
            raise CliError(
                f"the server is not reachable at {self.base} ({_reason(exc)}). Start one with `make run` in the "
                "greenbatch checkout, or pass --server URL (or set GREENBATCH_SERVER)."
            ) from None
        except requests.Timeout:
            raise CliError(f"greenbatch at {self.base} did not answer within {REQUEST_TIMEOUT:g} s") from None
        except requests.RequestException as exc:
            raise CliError(f"request to {url} failed: {exc}") from None
        kind = response.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if response.status_code >= 300:
            raise self._error(response, kind)
        if kind not in expect:
            raise self._stranger(response, kind)
        return response

    def json(
        self, method: str, path: str, keys: Iterable[str] = ("id", "status", "counts", "links"), **kwargs: Any
    ) -> dict[str, Any]:
        """A call whose answer is a JSON object holding `keys`; anything else is not greenbatch talking."""
        response = self.call(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise self._stranger(response, "application/json") from None
        if not isinstance(body, dict) or not set(keys) <= set(body):
            raise self._stranger(response, "application/json")
        return body

    def _error(self, response: requests.Response, kind: str) -> CliError:
        """An error answer: the server's own words when it is greenbatch's envelope."""
        try:
            error = response.json()["error"]
            return ServerError(response.status_code, error["code"], error["message"], list(error.get("details") or []))
        except (ValueError, KeyError, TypeError):
            return self._stranger(response, kind)

    def _stranger(self, response: requests.Response, kind: str) -> CliError:
        """What --server answered when it does not speak greenbatch's API (never its body: it may be a page)."""
        answered = f"{response.status_code} {kind or 'without a Content-Type'}"
        if response.is_redirect:
            answered = f"{response.status_code}, a redirect to {response.headers.get('Location', '?')}"
        hint = ""
        if response.status_code in (502, 503, 504):
            hint = "; a proxy in front of greenbatch may not reach it"
        return CliError(f"{self.base} does not look like a greenbatch server (it answered {answered}){hint}")

    def submit(self, urls: list[str], name: str | None, options: dict[str, Any]) -> dict[str, Any]:
        """POST the URLs as JSON and return the new batch."""
        body: dict[str, Any] = {"urls": urls, "options": options}
        if name is not None:
            body["name"] = name
        return self.json("POST", "api/v1/batches", json=body)

    def submit_csv(self, text: str, name: str | None, options: dict[str, Any]) -> dict[str, Any]:
        """POST a CSV with a header as it is (text/csv), the options in the query string, and return the new batch."""
        params: list[tuple[str, str]] = [] if name is None else [("name", name)]
        for key, value in options.items():
            if key == "headers":
                params += [("header", f"{header}: {text}") for header, text in value.items()]
            elif key in QUERY_JSON_OPTIONS:
                params.append((key, json.dumps(value)))
            else:
                params.append((key, str(value)))
        return self.json(
            "POST",
            "api/v1/batches",
            params=params,
            data=text.encode("utf-8"),
            headers={"Content-Type": "text/csv; charset=utf-8"},
        )

    def batch(self, batch_id: str) -> dict[str, Any]:
        """The batch as the server shows it now."""
        return self.json("GET", f"api/v1/batches/{quote(batch_id, safe='')}")

    def batches(self, limit: int) -> dict[str, Any]:
        """The newest batches, newest first."""
        return self.json("GET", "api/v1/batches", keys=("batches",), params={"limit": limit})

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """Cancel a queued or running batch; the answer is the batch once it has settled."""
        return self.json("POST", f"api/v1/batches/{quote(batch_id, safe='')}/cancel")

    def download(self, batch: dict[str, Any], fmt: str, failed_only: bool, out: BinaryIO) -> None:
        """Stream the batch's results (all, or those that did not end ok) in `fmt` (csv or ndjson) into `out`."""
        params = {"outcome": "not_ok"} if failed_only else {}
        expect = ("text/csv",) if fmt == "csv" else ("application/x-ndjson",)
        response = self.call("GET", batch["links"][fmt], expect=expect, params=params, stream=True)
        written = 0
        with response:
            try:
                for chunk in response.iter_content(64 * 1024):
                    out.write(chunk)
                    written += len(chunk)
            except requests.RequestException:
                raise CliError(
                    f"the results of batch {batch['id']} broke off after {written} bytes (the server stopped or "
                    "could not read its store); what was written is incomplete: fetch them again"
                ) from None

    def diff(self, base: str, batch_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """A page of what changed from `base` to the batch."""
        path = f"api/v1/batches/{quote(batch_id, safe='')}/diff"
        return self.json("GET", path, keys=("summary", "changes", "next_after"), params={"base": base, **params})

    def results(self, batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every result of the batch, in index order, read from its NDJSON export as it streams."""
        response = self.call("GET", batch["links"]["ndjson"], expect=("application/x-ndjson",), stream=True)
        with response:
            try:
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
            except (requests.RequestException, ValueError):
                raise CliError(
                    f"the results of batch {batch['id']} broke off (the server stopped or could not read its store); "
                    "fetch them again"
                ) from None

    def page_url(self, batch_id: str) -> str:
        """The batch's page on the dashboard."""
        return f"{self.server}batches/{quote(batch_id, safe='')}"


def _reason(exc: Exception) -> str:
    """The innermost reason of a connection error, without urllib3's noise."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if marker in text:
            return marker.lower()
    return text[:200]


# -- the file of URLs ------------------------------------------------------------------------


@dataclass
class UrlList:
    """The URLs of a file, each with the line it came from (blank lines and '#' comments are skipped)."""

    label: str
    urls: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    csv_text: str | None = None  # a CSV with a recognised header: sent as it is, so rows keep their expectations

    def add(self, url: str, line: int) -> None:
        """Keep a line's URL unless the line is blank or a comment, as the server and the dashboard do."""
        url = url.strip()
        if url and not url.startswith("#"):
            self.urls.append(url)
            self.lines.append(line)


def read_urls(source: str, as_csv: bool) -> UrlList:
    """The URLs of a file (or of standard input for "-"): one per line, or a CSV file's first column."""
    label = "standard input" if source == "-" else source
    try:
        if source == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as handle:
                raw = handle.read()
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror}") from None
    if b"\x00" in raw:
        raise CliError(f"{label} looks like a binary file (it holds NUL bytes), not a list of URLs")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CliError(f"{label} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    found = UrlList(label)
    if as_csv:
        reader = csv.reader(io.StringIO(text, newline=""))
        start = 1
        column = 0
        try:
            for row in reader:
                if start == 1 and (header := csv_header(row)) is not None:
                    found.csv_text, column = text, header.index("url")
                    start = reader.line_num + 1
                    continue
                found.add(row[column] if len(row) > column else "", start)
                start = reader.line_num + 1
        except csv.Error as exc:  # e.g. a quote never closed
            raise CliError(f"{label} cannot be read as CSV (line {reader.line_num}): {exc}") from None
        if found.csv_text is None and found.urls and "://" not in found.urls[0]:  # a header row such as "url"
            del found.urls[0], found.lines[0]
    else:
        for number, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
            found.add(line, number)
    if not found.urls:
        raise CliError(f"{label} has no URLs (blank lines and lines starting with # are skipped)")
    return found


def csv_header(row: list[str]) -> list[str] | None:
    """What each column of a CSV's first row holds, when the server reads it as a header: one url column, no
    column twice (any other column is meta)."""
    roles = [CSV_COLUMNS.get(name.strip().lower(), "meta:" + name.strip()) for name in row]
    if roles.count("url") != 1 or len(set(roles)) != len(roles):
        return None
    return roles


def refused_lines(urls: UrlList, error: ServerError) -> list[str]:
    """`urls.txt line 7: <why>` for each URL the server refused, by its line in the file (none if not that error)."""
    if error.code != "invalid_urls":
        return []
    details = [d for d in error.details if isinstance(d, dict) and isinstance(d.get("index"), int)]
    if not details or not all(0 <= d["index"] < len(urls.lines) for d in details):
        return []
    lines = [
        f"{urls.label} line {urls.lines[d['index']]}: {d.get('message', 'refused')} ({d.get('url')})" for d in details
    ]
    counted = re.match(r"(\d+) of \d+ URLs", error.message)  # the server lists its first 100 problems
    if counted and int(counted.group(1)) > len(details):
        lines.append(f"... and {int(counted.group(1)) - len(details)} more")
    return lines


# -- showing progress ------------------------------------------------------------------------


class Progress:
    """Live progress on stderr: click's bar redrawn in place on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, batch: dict[str, Any]):
        self.is_tty = sys.stderr.isatty()
        self._last_plain = 0.0
        self._last_line = ""
        self.bar: Any = None
        if self.is_tty:
            self.bar = click.progressbar(
                length=max(batch["counts"]["total"], 1),
                file=sys.stderr,
                bar_template="[%(bar)s]  %(info)s",
                show_pos=True,
                show_percent=False,
                show_eta=False,
                fill_char="#",
                empty_char=".",
                width=BAR_WIDTH,
                item_show_func=lambda text: text,
            )

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)  # ends the line and shows the cursor again, also on Ctrl-C

    def show(self, batch: dict[str, Any], trouble: str = "") -> None:
        """Draw the batch's progress, with what is wrong with the server, if anything."""
        text = progress_text(batch) + (f"  ({trouble})" if trouble else "")
        if self.bar is not None:
            step = max(0, finished(batch) - self.bar.pos)
            self.bar.update(step, text)
            if not step:
                self.bar.render_progress()  # the counts or the rate changed; update() redraws only on a step
            return
        line = f"batch {batch['id']} {batch['status']}: {finished(batch)}/{batch['counts']['total']}  {text}"
        final = batch["status"] in FINAL_STATUSES
        if line != self._last_line and (final or time.monotonic() - self._last_plain >= PLAIN_EVERY):
            click.echo(line, err=True)
            self._last_plain = time.monotonic()
            self._last_line = line


def finished(batch: dict[str, Any]) -> int:
    """URLs that have ended, however they ended."""
    counts = batch["counts"]
    return int(counts["ok"] + counts["failed"] + counts["cancelled"])


def progress_text(batch: dict[str, Any]) -> str:
    """`ok 500  failed 12  85.3 URLs/s  about 6 s left`: what the bar does not show."""
    counts = batch["counts"]
    parts = [f"ok {counts['ok']}", f"failed {counts['failed']}"]
    if counts.get("warn"):  # ok counts them too
        parts[0] += f" ({counts['warn']} warn)"
    if counts["cancelled"]:
        parts.append(f"cancelled {counts['cancelled']}")
    rate = batch["stats"].get("urls_per_s")
    if rate:
        parts.append(f"{rate:g} URLs/s")
        seconds_left = (counts["total"] - finished(batch)) / rate
        if seconds_left >= 1 and batch["status"] not in FINAL_STATUSES:
            parts.append(f"about {seconds_left:.0f} s left")
    return "  ".join(parts)


def summary_lines(batch: dict[str, Any]) -> list[str]:
    """The batch in a few lines: counts, latency percentiles and throughput, errors by kind, statuses."""
    counts, stats = batch["counts"], batch["stats"]
    took = _seconds_between(batch.get("started_at"), batch.get("finished_at"))
    head = f"batch {batch['id']}" + (f" ({batch['name']})" if batch.get("name") else "") + f" {batch['status']}"
    if took is not None:
        head += f" in {took:.1f} s"
    total, ok, failed, warn = counts["total"], counts["ok"], counts["failed"], counts.get("warn", 0)
    oks = f"{ok} ok ({warn} warn)" if warn else f"{ok} ok"  # ok counts the warn rows too
    if batch["status"] == "cancelled":
        head += f": {total} URLs, {ok + failed} fetched ({oks}, {failed} failed), {counts['cancelled']} cancelled"
    elif batch["status"] in FINAL_STATUSES:
        head += f": {total} URLs, {oks}, {failed} failed" + (
            f", {counts['cancelled']} cancelled" if counts["cancelled"] else ""
        )
    else:
        head += (
            f": {finished(batch)} of {total} URLs done, {oks}, {failed} failed, "
            f"{counts.get('running', 0)} running, {counts.get('pending', 0)} pending"
        )
    lines = [head]
    verdict = verdict_line(batch)
    if verdict:
        lines.append(verdict)
    if stats.get("p50_ms") is not None:
        latency = ", ".join(f"{p} {_ms(stats.get(p + '_ms'))}" for p in ("p50", "p90", "p99"))
        rate = stats.get("urls_per_s")
        lines.append(f"latency {latency}" + (f"; {rate:g} URLs/s" if rate else ""))
    if stats.get("by_reason"):
        lines.append("by reason: " + ", ".join(f"{rule} {n}" for rule, n in _by_count(stats["by_reason"])))
    if stats.get("by_warning"):
        lines.append("warnings: " + ", ".join(f"{kind} {n}" for kind, n in _by_count(stats["by_warning"])))
    if stats.get("by_error"):
        lines.append("errors: " + ", ".join(f"{kind} {n}" for kind, n in _by_count(stats["by_error"])))
    if stats.get("by_status"):
        lines.append("statuses: " + ", ".join(f"{code} {n}" for code, n in _by_count(stats["by_status"])))
    return lines


def verdict_line(batch: dict[str, Any]) -> str:
    """`verdict: FAIL (failed_rate 3.33% > 1%; p95_ms 812 ms > 500 ms)`, or "" while the batch runs."""
    verdict = batch.get("verdict")
    if not verdict:
        thresholds = batch.get("options", {}).get("thresholds")
        if not thresholds or batch["status"] in FINAL_STATUSES:
            return ""
        return "verdict when the batch ends, on " + ", ".join(threshold_text(k, v) for k, v in thresholds.items())
    misses = [
        f"{v['threshold']} {threshold_value(v['threshold'], v.get('actual'))}"
        f" {'<' if v['threshold'] == 'min_ok' else '>'} {threshold_value(v['threshold'], v.get('limit'))}"
        for v in verdict.get("violations") or []
    ]
    word = "PASS" if verdict.get("pass") else "FAIL"
    return f"verdict: {word}" + (f" ({'; '.join(misses)})" if misses else "")


def threshold_value(name: str, value: Any) -> str:
    """A threshold's value in its unit: a rate as a percentage, a time in ms, a count."""
    if not isinstance(value, (int, float)):
        return str(value)
    if name.endswith("_rate"):
        return f"{round(100 * value, 2):g}%"
    if name.endswith("_ms"):
        return f"{value:g} ms"
    return f"{value:g}"


def threshold_text(name: str, limit: Any) -> str:
    """`failed_rate <= 1%`, `min_ok >= 990`."""
    return f"{name} {'>=' if name == 'min_ok' else '<='} {threshold_value(name, limit)}"


def reason_words(reason: dict[str, Any]) -> str:
    """A reason as the dashboard says it: `302 where 301 was expected`, `lands on X instead of Y`."""
    rule, expected, actual = reason.get("rule", ""), reason.get("expected"), reason.get("actual")
    if rule == "expect.final_url":
        return f"lands on {actual} instead of {expected}"
    if rule == "expect.status":
        return f"{actual} where {expected} was expected"
    if rule == "expect.final_status":
        return f"ends on {actual} where {expected} was expected"
    if rule == "expect.max_hops":
        return f"{actual} hop{'' if str(actual) == '1' else 's'}, at most {expected} expected"
    if rule == "accept_status":
        return f"{actual} is not {expected} (accept_status)"
    if rule == "error":
        return f"no response ({actual})"
    if rule in WARNING_KINDS:
        return f"{rule.replace('_', ' ')} ({actual})"
    return f"{rule}: {actual} (expected {expected})"  # check[N]: `expected` says the check in words


def _by_count(table: dict[str, int]) -> Iterable[tuple[str, int]]:
    """Entries, most frequent first."""
    return sorted(table.items(), key=lambda item: (-item[1], item[0]))


def _ms(value: float | None) -> str:
    """A latency for people."""
    return "-" if value is None else f"{value:g} ms"


def _seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds between two of the API's timestamps."""
    if not start or not end:
        return None
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


# -- following a batch -----------------------------------------------------------------------


def program() -> str:
    """How to run this CLI again: `greenbatch` when that is on PATH, else the path it ran from, or python -m app.cli."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) != "greenbatch":
        return "python -m app.cli"
    found = shutil.which("greenbatch")
    if found and os.path.exists(script) and os.path.samefile(found, script):
        return "greenbatch"
    relative = os.path.relpath(script)
    return shlex.quote(script if relative.startswith("..") else relative)


def reattach_command(
    client: Client, batch_id: str, fmt: str | None, output: str | None, typed_token: bool, fail_on_warn: bool = False
) -> str:
    """The command that follows this batch again, with the same output; a typed --token is left as a placeholder."""
    words = ["follow", batch_id, "--server", client.base]
    if fmt:
        words += ["--format", fmt]
    if output:
        words += ["--output", output]
    if fail_on_warn:
        words += ["--fail-on", "warn"]
    command = program() + " " + shlex.join(words)
    return command + (" --token TOKEN" if typed_token else "")


def wait_for_end(client: Client, batch: dict[str, Any], reattach: str) -> dict[str, Any]:
    """Poll the batch until it is final, showing progress; ride out a server that blips for up to POLL_GIVE_UP s."""
    failing_since: float | None = None
    with Progress(batch) as progress:
        while True:
            trouble = ""
            if failing_since is not None:
                trouble = f"no answer from the server for {time.monotonic() - failing_since:.0f} s; retrying"
            progress.show(batch, trouble)
            if batch["status"] in FINAL_STATUSES:
                return batch
            time.sleep(POLL_INTERVAL)
            try:
                batch = client.batch(batch["id"])
                failing_since = None
            except CliError as exc:
                if isinstance(exc, ServerError) and exc.status < 500:
                    raise  # the server answered and refused (the batch is gone, the token expired): waiting won't help
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > POLL_GIVE_UP:
                    raise CliError(f"{exc}\nThe batch may still be running; re-attach with:\n  {reattach}") from None


def follow_and_save(
    client: Client,
    batch: dict[str, Any],
    fmt: str | None,
    output: str | None,
    typed_token: bool,
    news: str = "",
    fail_on_warn: bool = False,
) -> int:
    """Print `news`, follow a batch to its end, print its summary and write its results; Ctrl-C says how to re-attach."""
    reattach = reattach_command(client, batch["id"], fmt, output, typed_token, fail_on_warn)
    try:
        if news:  # inside the try: a Ctrl-C right after it is announced still says how to re-attach
            click.echo(news, err=True)
        batch = wait_for_end(client, batch, reattach)
        for line in summary_lines(batch):
            click.echo(line, err=True)
        save_results(client, batch, fmt or "csv", output, failed_only=False, fail_on_warn=fail_on_warn)
    except KeyboardInterrupt:
        where = "has ended" if batch["status"] in FINAL_STATUSES else "goes on running on the server"
        click.echo(f"stopped following; batch {batch['id']} {where}. Re-attach with:\n  {reattach}", err=True)
        return EXIT_INTERRUPTED
    return exit_status(batch, fail_on_warn)


def exit_status(batch: dict[str, Any], fail_on_warn: bool) -> int:
    """0 when the batch's verdict passes (the server decides: none failed without thresholds, none cancelled)
    and no URL was cancelled (a server from before cancelled rows failed the verdict passed them); warn rows
    pass unless `fail_on_warn`. A server without verdicts: 0 when every URL ended ok."""
    counts = batch["counts"]
    verdict = batch.get("verdict")
    if not isinstance(verdict, dict):
        passed = counts["ok"] == counts["total"]
    else:
        passed = bool(verdict.get("pass")) and not counts.get("cancelled")
    if fail_on_warn and counts.get("warn"):
        passed = False
    return EXIT_OK if passed else EXIT_FAILED


def save_results(
    client: Client,
    batch: dict[str, Any],
    fmt: str,
    output: str | None,
    failed_only: bool,
    fail_on_warn: bool = False,
) -> None:
    """Write the results to `output` (complete or not at all: through a .part file) or to standard output."""

    def write(out: BinaryIO) -> None:
        if fmt == "junit":
            write_junit(client, batch, out, failed_only, fail_on_warn)
        else:
            client.download(batch, fmt, failed_only, out)

    if not output:
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    partial = output + ".part"
    try:
        with open(partial, "wb") as out:
            write(out)
        os.replace(partial, output)
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror}") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    click.echo(f"results written to {output} ({fmt})", err=True)


# -- JUnit XML -------------------------------------------------------------------------------

# Characters XML 1.0 cannot hold, lone surrogates among them (they cannot even be written as UTF-8).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(value: Any) -> str:
    """Text a target sent, made fit for XML: characters XML cannot hold become U+FFFD."""
    return _NOT_XML.sub("\ufffd", "" if value is None else str(value))


def outcome_of(result: dict[str, Any]) -> str:
    """A result's outcome: the server's, or (a server before outcomes) from `ok` and the error."""
    if result.get("outcome"):
        return str(result["outcome"])
    if result.get("ok"):
        return "ok"
    error = result.get("error") or {}
    return "cancelled" if error.get("kind") == "cancelled" else "failed"


def junit_case(result: dict[str, Any], suite: str, fail_on_warn: bool) -> ET.Element:
    """One URL as a JUnit test case: a failure carries its reasons in words, a cancelled URL is skipped."""
    seconds = ((result.get("timings") or {}).get("total") or 0) / 1000
    case = ET.Element("testcase", classname=_xml_text(suite), name=_xml_text(result["url"]), time=f"{seconds:.3f}")
    outcome = outcome_of(result)
    reasons = result.get("reasons") or []
    error = result.get("error") or {}
    words = [reason_words(reason) for reason in reasons]
    if not words and error.get("message"):
        words = [f"{error.get('kind')}: {error['message']}"]
    if outcome == "failed" or (outcome == "warn" and fail_on_warn):
        rule = reasons[0].get("rule") if reasons else error.get("kind", "failed")
        failure = ET.SubElement(case, "failure", message=_xml_text("; ".join(words) or outcome), type=_xml_text(rule))
        facts = [f"{reason.get('rule')}: {text}" for reason, text in zip(reasons, words)] or words
        facts += [f"status: {result.get('status_code')}", f"final URL: {result.get('final_url')}"]
        failure.text = _xml_text("\n".join(facts))
    elif outcome == "cancelled":
        ET.SubElement(case, "skipped", message="cancelled before it ended")
    elif outcome == "warn":
        ET.SubElement(case, "system-out").text = _xml_text("warn: " + "; ".join(words))
    return case


def write_junit(client: Client, batch: dict[str, Any], out: BinaryIO, failed_only: bool, fail_on_warn: bool) -> None:
    """The batch as JUnit XML for CI: one test suite, one test case per URL in index order."""
    counts = batch["counts"]
    suite = batch.get("name") or batch["id"]
    failures = counts["failed"] + (counts.get("warn", 0) if fail_on_warn else 0)
    took = _seconds_between(batch.get("started_at"), batch.get("finished_at")) or 0
    head = ET.Element(
        "testsuite",
        name=_xml_text(suite),
        tests=str(counts["total"]),
        failures=str(failures),
        errors="0",
        skipped=str(counts["cancelled"]),
        time=f"{took:.3f}",
    )
    opening = ET.tostring(head, encoding="unicode").replace(" />", ">")
    out.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n{opening}\n'.encode())
    for result in client.results(batch):
        case = junit_case(result, suite, fail_on_warn)
        if failed_only and case.find("failure") is None:
            continue
        out.write(ET.tostring(case, encoding="unicode").encode("utf-8") + b"\n")
    out.write(b"</testsuite>\n</testsuites>\n")


# -- the command line ------------------------------------------------------------------------


class Number(click.ParamType[Any]):
    """A whole number or a number of seconds with a floor, refused in plain words."""

    def __init__(self, whole: bool, floor: float, floor_allowed: bool = True):
        self.whole, self.floor, self.floor_allowed = whole, floor, floor_allowed
        self.name = "N" if whole else "SECONDS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        flag = max(param.opts, key=len) if param is not None else "the value"
        text = str(value).strip()
        try:
            number = int(text) if self.whole else float(text)
        except ValueError:
            kind = "a whole number" if self.whole else "a number of seconds"
            raise click.UsageError(f"{flag} must be {kind}, not {value!r}", ctx) from None
        if number != number or number in (float("inf"), float("-inf")):
            raise click.UsageError(f"{flag} must be a finite number of seconds, not {value!r}", ctx)
        if number < self.floor or (number == self.floor and not self.floor_allowed):
            bound = f"at least {self.floor:g}" if self.floor_allowed else f"above {self.floor:g}"
            raise click.UsageError(f"{flag} must be {bound}, not {value!r}", ctx)
        return number


def whole(floor: int) -> Number:
    """A whole number of at least `floor`."""
    return Number(True, floor)


SECONDS = Number(False, 0, floor_allowed=False)


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--server and --token, which every command takes."""
    command = click.option(
        "--token",
        envvar="GREENBATCH_TOKEN",
        metavar="TOKEN",
        help="API token, when the server requires one (or set GREENBATCH_TOKEN).",
    )(command)
    return click.option(
        "--server",
        envvar="GREENBATCH_SERVER",
        default=DEFAULT_SERVER,
        show_default=True,
        metavar="URL",
        help="The greenbatch server (or set GREENBATCH_SERVER).",
    )(command)


def output_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--format and --output, for the commands that write results."""
    command = click.option(
        "--output", "-o", metavar="FILE", help="Write the results to FILE (whole, or not at all) instead of stdout."
    )(command)
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["csv", "ndjson", "junit"]),
        help="Results format (default csv); junit: JUnit XML for CI, one test case per URL, failures with their reasons.",
    )(command)


def verdict_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--fail-on, for the commands whose exit status is the batch's verdict."""
    return click.option(
        "--fail-on",
        type=click.Choice(["failed", "warn"]),
        default="failed",
        show_default=True,
        help="What makes the exit status 1 besides a failed verdict: warn fails on any URL that ended warn too.",
    )(command)


def typed_token() -> bool:
    """Whether --token was typed on the command line (then a re-attach command cannot show it)."""
    return click.get_current_context().get_parameter_source("token") == click.core.ParameterSource.COMMANDLINE


def batch_options(**given: Any) -> dict[str, Any]:
    """The API's options from the flags the user gave (the server applies its defaults to the rest)."""
    structured = ("headers", "no_redirects", "thresholds", "warn_as", "capture_tls", "capture_headers", "no_tls_verify")
    options = {key: value for key, value in given.items() if value is not None and key not in structured}
    if given["thresholds"]:
        options["thresholds"] = parse_thresholds(given["thresholds"])
    if given["warn_as"]:
        options["warn_as"] = parse_pairs(given["warn_as"], "--warn-as", WARNING_KINDS, ("warn", "failed", "ok"))
    if given["no_redirects"]:
        if given["max_redirects"]:
            raise click.UsageError("--no-redirects and --max-redirects contradict each other; give one")
        options["max_redirects"] = 0
    if given["headers"]:
        options["headers"] = parse_headers(given["headers"])
    if given["capture_tls"] or given["capture_headers"]:
        options["capture"] = {"tls": bool(given["capture_tls"]), "headers": list(given["capture_headers"])}
    if given["no_tls_verify"]:
        options["tls_verify"] = False
    return options


def parse_pairs(items: Iterable[str], flag: str, names: tuple[str, ...], values: tuple[str, ...]) -> dict[str, str]:
    """NAME=VALUE items, each name one of `names` and each value one of `values`."""
    pairs: dict[str, str] = {}
    for item in items:
        name, equals, value = (part.strip() for part in item.partition("="))
        if not equals or name not in names or value not in values:
            raise click.UsageError(
                f"{flag} {item!r} must be NAME=VALUE with NAME one of {', '.join(names)} and VALUE one of "
                f"{', '.join(values)}"
            )
        pairs[name] = value
    return pairs


def parse_thresholds(items: Iterable[str]) -> dict[str, float]:
    """--threshold NAME=VALUE items: rates as fractions or percentages (0.01 or 1%), times in ms, min_ok a count."""
    thresholds: dict[str, float] = {}
    for item in items:
        name, equals, raw = (part.strip() for part in item.partition("="))
        if not equals or name not in THRESHOLDS:
            raise click.UsageError(f"--threshold {item!r} must be NAME=VALUE with NAME one of {', '.join(THRESHOLDS)}")
        text = raw.removesuffix("%") if name.endswith("_rate") else raw
        try:
            value = int(text) if name == "min_ok" else float(text)
        except ValueError:
            kind = "a whole number" if name == "min_ok" else "a number"
            raise click.UsageError(f"--threshold {name} must be {kind}, not {raw!r}") from None
        thresholds[name] = value / 100 if raw.endswith("%") and name.endswith("_rate") else value
    return thresholds


def parse_headers(items: Iterable[str]) -> dict[str, str]:
    """-H 'Name: value' items as a headers object (the server checks names and values)."""
    headers: dict[str, str] = {}
    for item in items:
        name, colon, value = item.partition(":")
        name, value = name.strip(" \t"), value.strip(" \t")
        if not colon or not name:
            raise click.UsageError(f"-H {item!r} must be written 'Name: value'")
        repeated = [known for known in headers if known.lower() == name.lower()]
        if repeated:
            raise click.UsageError(f"-H gives the header {name!r} twice ({repeated[0]!r} first); give each once")
        headers[name] = value
    return headers


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    help="Submit files of URLs to a greenbatch server, follow the batches and fetch their results.\n\n"
    "Exit status: 0 when the command did its job (for submit --follow and follow: the batch's verdict passes, "
    "which without --threshold means no URL failed), 1 when the verdict fails, any URL was cancelled or (with "
    "--fail-on warn) any URL ended warn, 2 for a usage error, a refused request or a server that cannot be "
    "reached, 130 when Ctrl-C stopped it.",
)
def cli() -> None:
    """The greenbatch command line."""


@cli.command(
    short_help="Submit a file of URLs as a batch.",
    help="Submit the URLs in FILE (one per line; blank lines and # comments skipped; a .csv file's first column) "
    "as a batch; FILE - reads standard input. A CSV whose header names a url column (or source, old, from) is "
    "sent as it is, with each row's expected_status, expected_final_url (or target, new, to, destination), "
    "expected_final_status and max_hops; other columns come back in exports. Without --follow, print the batch "
    "id. Options the batch does not set take the server's defaults.",
)
@click.argument("file")
@click.option("--follow", is_flag=True, help="Show live progress until the batch ends, print a summary, write results.")
@output_options
@click.option("--name", help="Name of the batch (default: FILE's name).")
@click.option("--csv", "as_csv", is_flag=True, help="Read FILE as CSV (automatic for .csv files).")
@click.option("--concurrency", type=whole(1), help="Fetches in flight for this batch.")
@click.option("--per-host", type=whole(0), help="Most fetches in flight to one host (0: no cap).")
@click.option("--per-host-interval", type=SECONDS, help="Seconds at least between two request starts to one host.")
@click.option("--timeout", type=SECONDS, help="Total deadline per URL, redirects and retries included.")
@click.option("--connect-timeout", type=SECONDS, help="Time to open one connection.")
@click.option(
    "--method",
    type=click.Choice(["GET", "HEAD", "HEAD,GET"], case_sensitive=False),
    help="HTTP method (default GET); HEAD,GET asks with GET where HEAD answers a --head-fallback-statuses status.",
)
@click.option("--head-fallback-statuses", metavar="CODES", help="With HEAD,GET: the HEAD answers that GET follows.")
@click.option("--max-redirects", type=whole(0), help="Redirects followed per URL.")
@click.option("--no-redirects", is_flag=True, help="Follow no redirects (the same as --max-redirects 0).")
@click.option("--retries", type=whole(0), help="Retries on connection errors and on --retry-statuses.")
@click.option("--retry-statuses", metavar="CODES", help="Statuses retried when --retries > 0 (default 429,503).")
@click.option(
    "--respect-retry-after/--ignore-retry-after",
    default=None,
    help="Whether a retried status's Retry-After pauses its host (default: respect it).",
)
@click.option("--max-retry-after", type=SECONDS, help="Longest Retry-After obeyed; longer ends the URL rate_limited.")
@click.option("--accept-status", metavar="CODES", help="Statuses that count as ok, e.g. 200-299,404.")
@click.option("-H", "--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="A request header; repeat it.")
@click.option("--max-bytes", type=whole(0), help="Cap on decoded body bytes per URL.")
@click.option("--client", type=click.Choice(["fast", "requests"]), help="The HTTP client the server uses.")
@click.option("--capture-tls", is_flag=True, help="Record each server's TLS connection and certificate.")
@click.option(
    "--capture-header", "capture_headers", multiple=True, metavar="NAME", help="A response header to record; repeat it."
)
@click.option("--no-tls-verify", is_flag=True, help="Fetch despite certificate problems (recorded, not failed).")
@click.option(
    "--url-match",
    type=click.Choice(["exact", "ignore_trailing_slash", "ignore_query", "path_only"]),
    help="How expected_final_url compares with where a URL lands (default exact).",
)
@click.option("--base-url", metavar="URL", help="Rows may give paths (/old-post), resolved against URL.")
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    metavar="NAME=VALUE",
    help=f"The verdict fails past it; repeat it. NAME: {', '.join(THRESHOLDS)} (e.g. failed_rate=1%, p95_ms=800).",
)
@click.option(
    "--warn-as",
    "warn_as",
    multiple=True,
    metavar="KIND=warn|failed|ok",
    help="What a warning kind makes a URL, e.g. temporary_redirect=failed; repeat it.",
)
@verdict_options
@connection_options
def submit(
    file: str,
    follow: bool,
    fmt: str | None,
    output: str | None,
    name: str | None,
    as_csv: bool,
    fail_on: str,
    server: str,
    token: str | None,
    **given: Any,
) -> int:
    """Submit a file of URLs; with --follow wait, summarize and write the results."""
    if not follow and (output or fmt):
        raise click.UsageError("--output and --format need --follow: results exist once the batch has run")
    options = batch_options(**given)
    urls = read_urls(file, as_csv or file.lower().endswith(".csv"))
    if name is None and file != "-":
        name = os.path.basename(file)
    client = Client(server, token)
    try:
        if urls.csv_text is not None:
            batch = client.submit_csv(urls.csv_text, name, options)
        else:
            batch = client.submit(urls.urls, name, options)
    except ServerError as exc:
        lines = refused_lines(urls, exc)
        if not lines:
            raise CliError(f"{exc}\nnothing was submitted") from None
        for line in lines:
            click.echo(line, err=True)
        raise CliError("nothing was submitted; fix those lines and submit again") from None
    news = f"batch {batch['id']} queued: {batch['counts']['total']} URLs; watch it at {client.page_url(batch['id'])}"
    if follow:
        return follow_and_save(client, batch, fmt, output, typed_token(), news, fail_on == "warn")
    click.echo(news, err=True)
    click.echo(batch["id"])
    return EXIT_OK


@cli.command(
    short_help="Follow a batch to its end, then write its results.",
    help="Follow a batch until it ends (live progress on stderr), print its summary and write its results, as "
    "submit --follow does. Ctrl-C stops following, not the batch.",
)
@click.argument("batch_id", metavar="ID")
@output_options
@verdict_options
@connection_options
def follow(batch_id: str, fmt: str | None, output: str | None, fail_on: str, server: str, token: str | None) -> int:
    """Follow a batch to its end."""
    client = Client(server, token)
    return follow_and_save(client, client.batch(batch_id), fmt, output, typed_token(), "", fail_on == "warn")


@cli.command(
    short_help="Show a batch's counts and statistics.",
    help="Print a batch's status, counts, latency percentiles, errors by kind and statuses.",
)
@click.argument("batch_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the batch as the API's JSON instead.")
@connection_options
def status(batch_id: str, as_json: bool, server: str, token: str | None) -> int:
    """Show one batch."""
    client = Client(server, token)
    batch = client.batch(batch_id)
    if as_json:
        click.echo(_json_text(batch))
    else:
        click.echo("\n".join(summary_lines(batch)))
    return EXIT_OK


@cli.command(
    short_help="Write a batch's results as CSV or NDJSON.",
    help="Write a batch's results (so far, if it still runs) as CSV or NDJSON, to stdout or --output.",
)
@click.argument("batch_id", metavar="ID")
@click.option("--failed", is_flag=True, help="Only the URLs that did not end ok.")
@output_options
@connection_options
def results(batch_id: str, failed: bool, fmt: str | None, output: str | None, server: str, token: str | None) -> int:
    """Download a batch's results."""
    client = Client(server, token)
    batch = client.batch(batch_id)
    if batch["status"] not in FINAL_STATUSES:
        click.echo(f"batch {batch_id} is {batch['status']}: these are the results so far", err=True)
    save_results(client, batch, fmt or "csv", output, failed_only=failed)
    return EXIT_OK


@cli.command(
    short_help="Cancel a queued or running batch.",
    help="Cancel a queued or running batch: queued URLs end cancelled, in-flight fetches stop.",
)
@click.argument("batch_id", metavar="ID")
@connection_options
def cancel(batch_id: str, server: str, token: str | None) -> int:
    """Cancel a batch."""
    batch = Client(server, token).cancel(batch_id)
    click.echo("\n".join(summary_lines(batch)))
    return EXIT_OK


@cli.command(name="list", help="List the newest batches, newest first.")
@click.option("--limit", type=whole(1), default=20, show_default=True, help="How many (at most 200).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead.")
@connection_options
def list_batches(limit: int, as_json: bool, server: str, token: str | None) -> int:
    """List batches."""
    page = Client(server, token).batches(limit)
    if as_json:
        click.echo(_json_text(page))
        return EXIT_OK
    if not page["batches"]:
        click.echo(f"no batches yet; submit one with: {program()} submit urls.txt", err=True)
        return EXIT_OK
    rows: list[tuple[str, ...]] = [("ID", "STATUS", "URLS", "OK", "FAILED", "CREATED (UTC)", "NAME")]
    for batch in page["batches"]:
        counts = batch["counts"]
        created = (batch.get("created_at") or "")[:16].replace("T", " ")
        cells = (batch["id"], batch["status"], counts["total"], counts["ok"], counts["failed"], created, batch["name"])
        rows.append(tuple(str(cell) for cell in cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:  # numbers to the right, the name last and unpadded
        shown = [cell.rjust(w) if i in (2, 3, 4) else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        click.echo("  ".join([*shown, row[-1]]).rstrip())
    if page.get("next_cursor") is not None:
        click.echo("(older batches not shown; --limit goes up to 200)", err=True)
    return EXIT_OK


DIFF_PAGE = 1000  # changes read per request


@cli.command(
    short_help="Show what changed between two batches.",
    help="Compare batch ID with BASE: how many URLs newly failed, were fixed, changed status or final URL, got "
    "slower or faster, were added or removed, then each change as before -> after. Exit status 1 when a kind "
    "listed in --fail-on is above 0 (for CI: --fail-on newly_failed,final_url_changed).",
)
@click.argument("base", metavar="BASE")
@click.argument("batch_id", metavar="ID")
@click.option(
    "--key",
    type=click.Choice(["url", "path"]),
    default="url",
    show_default=True,
    help="Align URLs by the whole URL, or by path and query (staging against production).",
)
@click.option("--slower", type=float, metavar="FACTOR", help="Times the time must change for slower/faster (2).")
@click.option("--fail-on", "fail_on", metavar="KINDS", default="", help="Comma-separated kinds that make it exit 1.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary and every change as the API's JSON.")
@connection_options
def diff(
    base: str,
    batch_id: str,
    key: str,
    slower: float | None,
    fail_on: str,
    as_json: bool,
    server: str,
    token: str | None,
) -> int:
    """Compare two batches."""
    client = Client(server, token)
    params: dict[str, Any] = {"key": key, "limit": DIFF_PAGE}
    if slower is not None:
        params["slower"] = slower
    page = client.diff(base, batch_id, params)
    summary = page["summary"]
    failing = [kind for kind in fail_on.split(",") if kind]
    unknown = [kind for kind in failing if kind not in summary]
    if unknown:
        raise click.UsageError(f"--fail-on {','.join(unknown)}: the kinds are {', '.join(summary)}")
    changes = list(page["changes"])
    while page["next_after"] is not None:
        page = client.diff(base, batch_id, {**params, "after": page["next_after"]})
        changes += page["changes"]
    if as_json:
        click.echo(_json_text({**page, "changes": changes}))
    else:
        for line in diff_lines(summary, changes):
            click.echo(line)
    over = [kind for kind in failing if summary[kind]]
    if over:
        click.echo(f"failing: {', '.join(f'{kind} {summary[kind]}' for kind in over)}", err=True)
        return EXIT_FAILED
    return EXIT_OK


def diff_lines(summary: dict[str, int], changes: list[dict[str, Any]]) -> list[str]:
    """A diff for people: each kind's count, then each change as before -> after."""
    width = max(map(len, summary))
    lines = [f"{kind.ljust(width)}  {count:>7}" for kind, count in summary.items()]
    for change in changes:
        lines.append(f"{change['kind']}  {change['key']}  {_side(change['before'])} -> {_side(change['after'])}")
    return lines


def _side(side: dict[str, Any] | None) -> str:
    """One side of a change in a few words: outcome, status, time and final URL."""
    if side is None:
        return "(absent)"
    if side["outcome"] is None:
        return "(no result yet)"
    status = side["status_code"] if side["status_code"] is not None else "-"
    return f"{side['outcome']} {status} {_ms(side['total_ms'])} {side['final_url'] or ''}".rstrip()


def _json_text(value: Any) -> str:
    """JSON for people and for jq."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit status; every error is one plain message, never a traceback."""
    name = program()
    try:
        return int(cli.main(args=argv, prog_name=name, standalone_mode=False) or 0)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return EXIT_USAGE
    except click.UsageError as exc:
        click.echo(f"greenbatch: {exc.format_message()}", err=True)
        if exc.ctx is not None:
            click.echo(f"See {exc.ctx.command_path} --help.", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"greenbatch: {exc.format_message()}", err=True)
        return EXIT_USAGE
    except CliError as exc:
        click.echo(f"greenbatch: {exc}", err=True)
        return EXIT_USAGE
    except click.Abort:  # Ctrl-C outside a follow (which says how to re-attach itself)
        click.echo("greenbatch: interrupted", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `greenbatch results ID | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
