"""Command line client: submit a file of URLs to a greenbatch server, follow it, save the results.

    python -m app.cli submit urls.txt [--server URL] [--token T] [--follow]
                                      [--format csv|ndjson] [--output FILE]
                                      [--concurrency N] [--timeout S] [--name NAME]

It talks to the JSON API over HTTP with requests and never imports the server's code (no gevent, no
monkey patching). Every number it prints comes from the API, so it agrees with the dashboard.

Exit status: 0 when the batch was submitted (without --follow) or every URL ended ok; 1 when any URL
failed or was cancelled; 2 for a usage error, a refused batch, or a server that cannot be reached.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Iterable
from typing import Any, BinaryIO, NoReturn, TextIO
from urllib.parse import urljoin

import requests

DEFAULT_SERVER = "http://127.0.0.1:8000"
FINAL_STATUSES = ("done", "cancelled", "failed")
POLL_INTERVAL = 0.5  # seconds between polls of a followed batch
PLAIN_EVERY = 2.0  # seconds between progress lines when stderr is not a terminal
REQUEST_TIMEOUT = 30.0  # seconds one API call may take
POLL_GIVE_UP = 30.0  # seconds of failed polls before the CLI stops following
BAR_WIDTH = 30
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A problem the user must fix (exit 2); the message says what and how."""


# -- talking to the server -------------------------------------------------------------------


class Client:
    """The greenbatch JSON API at one base URL, with an optional bearer token."""

    def __init__(self, server: str, token: str | None):
        self.server = server.rstrip("/") + "/"
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "greenbatch-cli"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One call; connection problems and error answers become CliError with the server's message."""
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.ConnectionError as exc:
            raise CliError(
                f"cannot reach greenbatch at {self.server} ({_reason(exc)}); is the server running? "
                "Pass --server URL or set GREENBATCH_SERVER."
            ) from None
        except requests.Timeout:
            raise CliError(f"greenbatch at {self.server} did not answer within {REQUEST_TIMEOUT:g} s") from None
        except requests.RequestException as exc:
            raise CliError(f"request to {url} failed: {exc}") from None
        if response.status_code >= 400:
            raise CliError(_error_text(response))
        return response

    def submit(
        self, text: str, is_csv: bool, name: str | None, concurrency: int | None, timeout: float | None
    ) -> dict[str, Any]:
        """POST the URLs as text (the server parses lines, comments and CSV) and return the new batch."""
        params = {
            k: v for k, v in (("name", name), ("concurrency", concurrency), ("timeout", timeout)) if v is not None
        }
        content_type = "text/csv" if is_csv else "text/plain"
        response = self.request(
            "POST",
            self.server + "api/v1/batches",
            params=params,
            data=text.encode("utf-8"),
            headers={"Content-Type": f"{content_type}; charset=utf-8"},
        )
        return response.json()

    def batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch as the server shows it now."""
        return self.request("GET", self.link(batch, "self")).json()

    def download(self, batch: dict[str, Any], fmt: str, out: BinaryIO) -> None:
        """Stream every result of the batch in `fmt` (csv or ndjson) into `out`."""
        response = self.request("GET", self.link(batch, fmt), stream=True)
        with response:
            for chunk in response.iter_content(64 * 1024):
                out.write(chunk)

    def link(self, batch: dict[str, Any], name: str) -> str:
        """An absolute URL for one of the batch's links (they carry the proxy's path prefix, if any)."""
        return urljoin(self.server, batch["links"][name])


def _reason(exc: Exception) -> str:
    """The innermost reason of a connection error, without urllib3's noise."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if marker in text:
            return marker.lower()
    return text[:200]


def _error_text(response: requests.Response) -> str:
    """What an error answer says: the envelope's message and each detail, or the status line."""
    try:
        error = response.json()["error"]
        message, details = error["message"], error.get("details") or []
    except (ValueError, KeyError, TypeError):
        return f"the server answered {response.status_code} {response.reason}: {response.text[:300]}"
    lines = [f"the server refused ({response.status_code}): {message}"]
    for detail in details[:10]:
        where = detail.get("field", "")
        shown = f" {detail['url']!r}" if "url" in detail else ""
        lines.append(f"  {where}{shown}: {detail.get('message', '')}")
    if len(details) > 10:
        lines.append(f"  ... and {len(details) - 10} more")
    if response.status_code == 401:
        lines.append("Pass --token TOKEN or set GREENBATCH_TOKEN.")
    return "\n".join(lines)


# -- showing progress ------------------------------------------------------------------------


class Progress:
    """A live progress line on a terminal (redrawn in place), or a plain line every few seconds otherwise."""

    def __init__(self, stream: TextIO, is_tty: bool):
        self.stream = stream
        self.is_tty = is_tty
        self._last_plain = 0.0
        self._last_line = ""

    def show(self, batch: dict[str, Any]) -> None:
        """Draw the batch's progress."""
        line = progress_line(batch, bar=self.is_tty)
        if self.is_tty:
            self.stream.write("\r\x1b[K" + line)
            self.stream.flush()
        elif line != self._last_line and time.monotonic() - self._last_plain >= PLAIN_EVERY:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_plain = time.monotonic()
            self._last_line = line

    def end(self, batch: dict[str, Any]) -> None:
        """The final progress line, then move on."""
        line = progress_line(batch, bar=self.is_tty)
        if self.is_tty:
            self.stream.write("\r\x1b[K" + line + "\n")
        elif line != self._last_line:
            self.stream.write(line + "\n")
        self.stream.flush()


def progress_line(batch: dict[str, Any], bar: bool) -> str:
    """`[#####.....] 512/1000  ok 500  failed 12  85.3 URLs/s`, the bar only for terminals."""
    counts = batch["counts"]
    finished = counts["ok"] + counts["failed"] + counts["cancelled"]
    total = counts["total"] or 1
    rate = batch["stats"].get("urls_per_s")
    parts = [f"{finished}/{counts['total']}", f"ok {counts['ok']}", f"failed {counts['failed']}"]
    if counts["cancelled"]:
        parts.append(f"cancelled {counts['cancelled']}")
    parts.append(f"{rate:g} URLs/s" if rate is not None else "- URLs/s")
    text = "  ".join(parts)
    if bar:
        filled = BAR_WIDTH * finished // total
        return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {text}"
    return f"batch {batch['id']} {batch['status']}: {text}"


def summary_lines(batch: dict[str, Any]) -> list[str]:
    """The final summary: counts, latency percentiles and throughput, errors by kind, statuses."""
    counts, stats = batch["counts"], batch["stats"]
    took = _seconds_between(batch.get("started_at"), batch.get("finished_at"))
    lines = [
        f"batch {batch['id']} ({batch['name']}) {batch['status']}"
        + (f" in {took:.1f} s" if took is not None else "")
        + f": {counts['total']} URLs, {counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['cancelled']} cancelled"
    ]
    latency = ", ".join(f"{p} {_ms(stats.get(p + '_ms'))}" for p in ("p50", "p90", "p99"))
    rate = stats.get("urls_per_s")
    lines.append(f"latency {latency}" + (f"; {rate:g} URLs/s" if rate is not None else ""))
    if stats.get("by_error"):
        lines.append("errors: " + ", ".join(f"{kind} {n}" for kind, n in _by_count(stats["by_error"])))
    if stats.get("by_status"):
        lines.append("statuses: " + ", ".join(f"{code} {n}" for code, n in _by_count(stats["by_status"])))
    return lines


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
    parse = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731 - Python 3.10 lacks "Z"
    return (parse(end) - parse(start)).total_seconds()


# -- the submit command ----------------------------------------------------------------------


def follow(client: Client, batch: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Poll the batch until it is final, showing progress; survive a server that blips for a while."""
    failing_since: float | None = None
    while batch["status"] not in FINAL_STATUSES:
        progress.show(batch)
        time.sleep(POLL_INTERVAL)
        try:
            batch = client.batch(batch)
            failing_since = None
        except CliError:
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > POLL_GIVE_UP:
                raise
    progress.end(batch)
    return batch


def read_urls(source: str) -> str:
    """The text of the URL file, or of standard input for "-"."""
    if source == "-":
        return sys.stdin.read()
    try:
        with open(source, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"{source} is not UTF-8 text") from None


def submit(args: argparse.Namespace) -> int:
    """Submit, and with --follow wait, summarize and write the results; returns the exit status."""
    if not args.follow and (args.output or args.format):
        raise CliError("--output and --format need --follow: results exist once the batch has run")
    client = Client(args.server, args.token)
    text = read_urls(args.file)
    is_csv = args.file.lower().endswith(".csv")
    batch = client.submit(text, is_csv, args.name, args.concurrency, args.timeout)
    print(
        f"batch {batch['id']} queued: {batch['counts']['total']} URLs ({client.link(batch, 'self')})", file=sys.stderr
    )
    if not args.follow:
        print(batch["id"])
        return EXIT_OK
    progress = Progress(sys.stderr, sys.stderr.isatty())
    try:
        batch = follow(client, batch, progress)
    except KeyboardInterrupt:
        print(f"\nstopped following; batch {batch['id']} goes on running on the server", file=sys.stderr)
        return 130
    for line in summary_lines(batch):
        print(line, file=sys.stderr)
    fmt = args.format or "csv"
    if args.output:
        with open(args.output, "wb") as out:
            client.download(batch, fmt, out)
        print(f"results written to {args.output} ({fmt})", file=sys.stderr)
    else:
        client.download(batch, fmt, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    counts = batch["counts"]
    return EXIT_OK if counts["ok"] == counts["total"] else EXIT_FAILED


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(prog="python -m app.cli", description="greenbatch command line client.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub = commands.add_parser(
        "submit",
        help="submit a file of URLs as a batch",
        description="Submit URLs (one per line; '#' lines and blanks skipped; a .csv file's "
        "first column) as a batch. Exit 0 when every URL ended ok, 1 when any "
        "did not (with --follow), 2 on errors.",
    )
    sub.add_argument("file", help="file of URLs, or - for standard input")
    sub.add_argument(
        "--server",
        default=os.environ.get("GREENBATCH_SERVER") or DEFAULT_SERVER,
        help=f"greenbatch base URL (GREENBATCH_SERVER, default {DEFAULT_SERVER})",
    )
    sub.add_argument("--token", default=os.environ.get("GREENBATCH_TOKEN") or None, help="API token (GREENBATCH_TOKEN)")
    sub.add_argument(
        "--follow", action="store_true", help="wait for the batch, show progress on stderr, then write the results"
    )
    sub.add_argument("--format", choices=("csv", "ndjson"), help="results format with --follow (default csv)")
    sub.add_argument("--output", metavar="FILE", help="write the results here instead of standard output")
    sub.add_argument("--concurrency", type=_positive_int, metavar="N", help="fetches in flight for this batch")
    sub.add_argument("--timeout", type=_positive_float, metavar="S", help="total deadline per URL, in seconds")
    sub.add_argument("--name", help="a name for the batch")
    sub.set_defaults(run=submit)
    return top


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def fail(message: str) -> NoReturn:
    """Print an error for the user and exit 2."""
    print(f"greenbatch: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors the user can fix exit 2 with a message (argparse exits 2 on bad usage)."""
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except CliError as exc:
        fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
