"""JSON API v1: submit, list, inspect, cancel, rerun and delete batches; read results and events."""

from __future__ import annotations

import codecs
import csv
import dataclasses
import heapq
import io
import itertools
import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

import idna
from flask import Blueprint, Response, current_app, request, url_for

from ..core import rowspec, verdict
from ..core.memory import release_freed_memory
from ..core.options import MAX_META_CHARS, BatchOptions, ValidationError, head_problems, header_problem
from ..core.results import ERROR_KINDS, FINAL_STATUSES
from ..core.sources import Source
from ..core.urllist import MAX_REMAP, UrlList, UrlListBuilder, read_json_object, remapped
from ..fetch import guard
from ..fetch.sources import (
    Expansion,
    SourceBusy,
    SourceError,
    SourceLimits,
    batch_urls,
    over_limit_message,
    take,
)
from ..fetch.tls import now_utc
from ..runs.certificates import EXPIRING_DAYS
from ..runs.hosts import HOST_FIELDS
from ..runs.notify import target_refusals
from ..runs.reader import BatchView
from ..runs.store import StoreError
from ..runs.store.base import EVENT_TYPES, MAX_SEARCH, OUTCOMES, RESULT_SORTS, ResultQuery
from . import exports, openapi
from .errors import ApiError, error_response
from .services import services
from .views import batch_json, delivery_json

bp = Blueprint("api", __name__, url_prefix="/api/v1")
log = logging.getLogger(__name__)

MAX_DETAILS = 100  # validation problems listed in one answer; the count says how many there were
MAX_NAME = 200  # characters of a batch name
NAMED_HOSTS = 1000  # distinct hosts an unnamed batch's name counts; past it the name says "999+ other hosts"
# Lines of URLs as guard.check_url returns them (lower-case scheme, no user info; IPv6 in brackets): the
# host of each run of lines on one scheme://host.
_HOST_RUNS = re.compile(r"^(https?://(\[[^\]\n]*\]|[^:/?#\n]*))[^\n]*+(?:\n\1(?=[:/?#\n]|\Z)[^\n]*+)*+", re.MULTILINE)
CANCEL_SETTLE = 5.0  # seconds a cancel waits for the batch's final state to be committed before answering
RELEASE_AFTER = 10_000  # URLs of a submission past which the memory it freed is given back to the system
PREVIEW_URLS = 50  # URLs a source's preview lists


# -- reading input ---------------------------------------------------------------------------


BODY_BLOCK = 1024 * 1024  # bytes of a text body read and decoded at once: a body is never held whole
CSV_ROWS = 10_000  # rows of a CSV body read at once
JSON_QUERY_OPTIONS = (
    "expect",
    "warn_as",
    "thresholds",
    "checks",
    "capture",
)  # options a query string gives as JSON text
_RULE = re.compile(r"^[a-z_]+(?:\.[a-z_]+|\[\d{1,4}\])?$")  # accept_status, expect.final_url, check[2], a warning kind


def _json_body() -> Any:
    """Parse the request body as JSON, answering 400 for anything that is not (never a 500) or that holds text
    that is not valid Unicode."""
    text = _json_text(request.get_data(cache=True))
    body = _parsed_json(text)
    _refuse_lone_surrogates(body, _may_hold_surrogates(text))
    return body


# A strict UTF-8 body carries a surrogate (D800-DFFF: a high one D8-DB, a low one DC-DF) only as a \u escape of
# one: JSON text without such an escape holds none.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _may_hold_surrogates(text: str) -> bool:
    """Whether JSON text decoded from strict UTF-8 may hold a lone surrogate: it escapes one (one search, in C)."""
    return _SURROGATE_ESCAPE.search(text) is not None


def _lone_surrogate_field(value: Any, where: str = "") -> str | None:
    """The field of the first text (or object key) in a parsed JSON value that holds a lone surrogate, or None.

    "\\ud800" is valid JSON but no Unicode text: it cannot be written as UTF-8 to an export or as XML."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:  # a loop, not recursion: a body may be nested as deep as the JSON parser allows
        at, item = stack.pop()
        if isinstance(item, str):
            if not _is_unicode(item):
                return at
        elif isinstance(item, dict):
            for key, given in reversed(item.items()):
                if not _is_unicode(key):
                    return at or "body"
                stack.append((f"{at}.{key}" if at else key, given))
        elif isinstance(item, list):
            stack.extend((f"{at}[{i}]", given) for i, given in reversed(list(enumerate(item))))
    return None


def _is_unicode(text: str) -> bool:
    """Whether a str is Unicode text: no lone surrogate, so it can be written as UTF-8."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refuse_lone_surrogates(body: Any, may_hold: bool) -> None:
    """400 naming the first field of a JSON body that holds a lone surrogate, walked only when its text may_hold
    one (_may_hold_surrogates); a submission's URLs themselves are left to guard.check_url, which names them as URLs."""
    if not may_hold:
        return
    field = None
    if isinstance(body, dict):
        field = _lone_surrogate_field({key: given for key, given in body.items() if key != "urls"})
        urls = body.get("urls")
        if field is None and isinstance(urls, list):
            for index, item in enumerate(urls):
                if isinstance(item, dict):
                    rest = {key: given for key, given in item.items() if key != "url"}
                    field = _lone_surrogate_field(rest, f"urls[{index}]")
                    if field is not None:
                        break
    else:
        field = _lone_surrogate_field(body)
    if field is not None:
        message = "holds a lone surrogate (text that is not valid Unicode, like \\ud800): remove it or encode it"
        raise ApiError(400, "invalid_body", f"{field} {message}", [{"field": field, "message": message}])


def _json_text(raw: bytes | bytearray) -> str:
    """A JSON body's bytes as text, or a 400 naming the first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not UTF-8 (byte {exc.start})") from None


def _parsed_json(text: str) -> Any:
    """JSON text parsed, or a 400 saying why it is not JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ApiError(400, "invalid_json", "JSON is nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None


def _submission_json(raw: bytearray) -> tuple[Any, bool]:
    """(A JSON submission's body parsed, whether it may hold a lone surrogate): its "urls" as a UrlList read a window
    at a time when it is an array of strings (a million URLs are never all held as a str each); `raw` is emptied
    once decoded."""
    text = _json_text(raw)
    raw.clear()  # one copy of the body at a time
    may_hold = _may_hold_surrogates(text)
    body = read_json_object(text, "urls")
    if body is None:
        return _parsed_json(text), may_hold  # anything else, and every error, as json.loads reads it
    del text  # the URLs' text is joined into one only once the body's is let go
    body["urls"] = body["urls"].build()
    return body, may_hold


def _body_bytes() -> bytearray:
    """The request body read into one buffer as it arrives (not kept on the request: a submission is read once).

    The buffer grows with what came, never to the length a client announces before sending it.
    """
    stream = request.stream
    body = bytearray()
    while block := stream.read(BODY_BLOCK):  # the stream ends at Content-Length, or answers 413 past the limit
        body += block
    return body


def _body_texts() -> Iterator[str]:
    """A UTF-8 text body (a leading byte order mark dropped) read a block at a time, as texts that each end at a
    line feed (the last may not)."""
    stream = request.stream
    pending: list[bytes] = []  # the start of a line whose end has not come yet
    offset = 0  # bytes of the body before `pending`
    while True:
        block = stream.read(BODY_BLOCK)
        cut = block.rfind(b"\n") + 1
        if block and not cut:
            pending.append(block)
            continue
        # Cut after a line feed: no UTF-8 character has that byte inside it, so each part decodes alone.
        data = b"".join([*pending, block[:cut]]) if pending else block[:cut]
        if not offset and data.startswith(codecs.BOM_UTF8):  # a spreadsheet's "CSV UTF-8": the header is `url`
            data, offset = data[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
        try:
            yield data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(400, "invalid_body", f"request body is not UTF-8 (byte {offset + exc.start})") from None
        offset += len(data)
        pending = [block[cut:]] if cut < len(block) else []
        if not block:
            return


def _text_urls(is_csv: bool) -> tuple[UrlList, dict[int, dict[str, Any]] | None]:
    """URLs from a text body: one per line (or the first CSV column); blanks and '#' lines skipped. A CSV whose
    first row is a recognised header (rowspec.CSV_COLUMNS) gives each row's expectations and meta too.

    Past GREENBATCH_MAX_URLS the lines are only counted, for the 413 that names how many there were.
    """
    config = current_app.config["GREENBATCH"]
    keep = config.max_urls
    urls = UrlListBuilder()  # each block's URLs joined as they come: a million lines are never a str each at once
    rows: dict[int, dict[str, Any]] = {}
    count = 0
    first = True
    roles: list[str] | None = None
    line = 1
    for block in _csv_rows() if is_csv else map(str.splitlines, _body_texts()):
        if is_csv and first and block:
            first = False
            roles = rowspec.csv_columns(block[0])
            if roles is not None or "://" not in (block[0][0] if block[0] else ""):
                del block[0]  # a header row such as "url"
                line += 1
            problem = rowspec.meta_columns_problem(sum(role.startswith("meta:") for role in roles or ()))
            if problem:
                raise ApiError(400, "invalid_body", f"CSV line 1: {problem}", [{"field": "line 1", "message": problem}])
        if roles is None:
            values = [row[0] if row else "" for row in block] if is_csv else block
            kept = [url for url in map(str.strip, values) if url and url[0] != "#"]
            line += len(block)
        else:
            kept = []
            for values in block:
                url, row, problem = rowspec.csv_row(values, roles, config)
                line += 1
                if not url or url[0] == "#":
                    continue
                if problem:  # rows (and so lines, a quoted field aside) are counted from 1, the header's
                    where = f"line {line - 1}"
                    raise ApiError(
                        400, "invalid_body", f"CSV {where}: {problem}", [{"field": where, "message": problem}]
                    )
                if row and len(urls) + len(kept) < keep:
                    rows[len(urls) + len(kept)] = row
                kept.append(url)
        count += len(kept)
        urls.add(kept[: max(0, keep - len(urls))])
    _check_count(count)
    return urls.build(), rows or None


def _csv_rows() -> Iterator[list[list[str]]]:
    """A CSV body's rows, a list at a time."""
    # One reader over the whole body: a quoted field may span lines, and so the blocks they were read in.
    rows = csv.reader(itertools.chain.from_iterable(map(io.StringIO, _body_texts())))
    try:
        while block := list(itertools.islice(rows, CSV_ROWS)):
            yield block
    except csv.Error as exc:  # e.g. a quote never closed makes one field of the rest of the file
        raise ApiError(400, "invalid_body", f"the CSV body cannot be read: {exc}") from None


def _check_count(count: int) -> None:
    """413 when a batch has more URLs than GREENBATCH_MAX_URLS."""
    limit = current_app.config["GREENBATCH"].max_urls
    if count > limit:
        raise ApiError(413, "too_many_urls", f"{count} URLs is more than the limit of {limit} (GREENBATCH_MAX_URLS)")


def _options_from_query() -> dict[str, Any]:
    """Batch options from a query string (for text/plain submissions); `header=Name: value` repeats."""
    options: dict[str, Any] = {}
    for key in request.args:
        if key == "name":
            continue
        if key == "header":
            options["headers"] = _headers_from_query(request.args.getlist("header"))
        elif key in JSON_QUERY_OPTIONS:
            try:
                options[key] = json.loads(request.args.get(key, ""))
            except (ValueError, RecursionError):  # RecursionError: nested deeper than json reads
                message = (
                    f"{key} must be JSON in the query string (nested at most a few hundred deep), like {key}={{...}}"
                )
                raise ApiError(
                    400, "invalid_options", message, [{"field": f"options.{key}", "message": message}]
                ) from None
        else:
            options[key] = request.args.get(key)
    return options


def _headers_from_query(items: list[str]) -> dict[str, str]:
    """`header=Name: value` items as a headers object, under the same rules as JSON headers (and no repeats)."""
    pairs = []
    for item in items:
        name, colon, value = item.partition(":")
        if not colon:
            message = f'header={_shown(item)!r} must be written "Name: value"'
            raise ApiError(400, "invalid_options", message, [{"field": "header", "message": message}])
        # Only the spaces and tabs HTTP allows around a value: other whitespace is a control character to refuse.
        pairs.append((name.strip(" \t"), value.strip(" \t")))
    problem = header_problem(pairs)  # a dict would hide a repeated name: check the pairs
    if problem:
        raise ApiError(400, "invalid_options", problem, [{"field": "header", "message": problem}])
    return dict(pairs)


def _submission() -> tuple[Any, dict[str, Any], str, dict[int, dict[str, Any]] | None, Any]:
    """(urls, raw options, name, per-row sidecar, raw source) from a JSON or text body."""
    mimetype = request.mimetype
    if mimetype == "application/json":
        body, may_hold = _submission_json(_body_bytes())
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_body", 'JSON body must be an object with a "urls" list or a "source"')
        _refuse_lone_surrogates(body, may_hold)
        unknown = sorted(set(body) - {"urls", "name", "options", "source"})
        if unknown:
            raise ApiError(
                400,
                "invalid_body",
                f"unknown field(s): {', '.join(unknown)}",
                [{"field": k, "message": "is not a known field"} for k in unknown],
            )
        if "urls" in body and "source" in body:
            raise ApiError(
                400,
                "invalid_body",
                'give "urls" or "source", not both',
                [{"field": "source", "message": 'conflicts with "urls"'}],
            )
        urls, rows = _split_items(body.get("urls"))
        return urls, body.get("options"), body.get("name"), rows, body.get("source")
    if mimetype in ("text/plain", "text/csv"):
        urls, rows = _text_urls(mimetype == "text/csv")
        return urls, _options_from_query(), request.args.get("name"), rows, None
    raise ApiError(
        415,
        "unsupported_media_type",
        f"send application/json, text/plain or text/csv, not {mimetype or 'no Content-Type'}",
    )


def _split_items(urls: Any) -> tuple[Any, dict[int, dict[str, Any]] | None]:
    """`urls` as URL strings and the sidecar of the items given as objects ({"url", "expect", "meta"})."""
    if not isinstance(urls, list) or not any(isinstance(item, dict) for item in urls):
        return urls, None  # strings only (or not a list, which _validate_urls refuses): as before
    config = current_app.config["GREENBATCH"]
    _check_count(len(urls))
    plain: list[Any] = []
    rows: dict[int, dict[str, Any]] = {}
    problems: list[dict[str, Any]] = []
    columns: set[str] = set()  # the meta columns of the rows so far: the batch's export has one for each
    for index, item in enumerate(urls):
        url, row, problem, where = rowspec.item_row(index, item, config)
        if not problem and row and "meta" in row and not columns.issuperset(row["meta"]):
            columns.update(row["meta"])
            problem, where = rowspec.meta_columns_problem(len(columns)), f"urls[{index}].meta"
        if problem:
            problems.append({"field": where, "index": index, "message": problem})
        elif row:
            rows[index] = row
        plain.append(url)
    if problems:
        raise ApiError(
            400,
            "invalid_urls",
            f"{len(problems)} of {len(urls)} URL items are not valid; the first is {problems[0]['field']}:"
            f" {problems[0]['message']}",
            problems[:MAX_DETAILS],
        )
    return plain, rows or None


def _resolved(url: Any, base: str, index: int) -> Any:
    """A URL or a path against the batch's base_url; 400 naming the URL when it cannot be read as one."""
    if not isinstance(url, str):
        return url  # _validate_urls names it
    try:
        return verdict.resolved(url, base)
    except ValueError as exc:  # urlsplit refuses some texts, e.g. an unclosed [ in the host
        message = f"is not a URL ({exc})"
        raise ApiError(
            400, "invalid_urls", f"urls[{index}] {message}", [{"field": f"urls[{index}]", "message": message}]
        ) from None


def _check_final_url_bases(options: BatchOptions) -> None:
    """400 when an expected final URL is a path and neither target_base_url nor base_url says where it is."""
    if options.target_base_url or options.base_url:
        return
    given = [("options.expect.final_url", (options.expect or {}).get("final_url"))]
    given += [
        (f"urls[{i}].expect.final_url", (row.get("expect") or {}).get("final_url"))
        for i, row in (options.rows or {}).items()
    ]
    problems = [
        {"field": field, "message": "is a path: give options.base_url or options.target_base_url to resolve it"}
        for field, url in given
        if url is not None and "://" not in url
    ]
    if problems:
        raise ApiError(
            400, "invalid_urls", f"an expected final URL is a path ({problems[0]['field']})", problems[:MAX_DETAILS]
        )


def guarded_notify(options: BatchOptions, raw_options: Any) -> BatchOptions:
    """The options with each notify URL as the guard checked it; 400 with the guard's reason for one it refuses."""
    if not options.notify:
        return options
    config = current_app.config["GREENBATCH"]
    given = raw_options.get("notify") if isinstance(raw_options, dict) else None
    fields = [f"options.notify[{i}]" for i in range(len(given or ()))] + ["options.webhook"]
    targets, problems = [], []
    urls = [target["url"] for target in options.notify]
    judged = target_refusals(urls, services().engine.policy, config.max_url_length, config.explain_blocked)
    for where, target, (checked, refusal) in zip(fields, options.notify, judged, strict=False):
        if refusal is not None:
            problems.append({"field": f"{where}.url", "message": f"cannot be sent to: {refusal}"})
        targets.append({**target, "url": checked or target["url"]})
    if problems:
        first = problems[0]
        raise ApiError(400, "invalid_options", f"{first['field']} {first['message']}", problems)
    return dataclasses.replace(options, notify=targets, origin=request.url_root.rstrip("/"))


def _validate_urls(urls: Any) -> Sequence[str]:
    """Check the URL list: a non-empty list of strings within the server's limits, each a fetchable URL."""
    config = current_app.config["GREENBATCH"]
    if not isinstance(urls, list | UrlList):
        raise ApiError(
            400, "invalid_urls", '"urls" must be a list of strings', [{"field": "urls", "message": "must be a list"}]
        )
    if not urls:
        raise ApiError(400, "invalid_urls", "the batch has no URLs", [{"field": "urls", "message": "is empty"}])
    _check_count(len(urls))
    max_length = config.max_url_length
    invalid: list[tuple[int, str]] = []  # (index, why) of the first MAX_DETAILS URLs check_url refuses
    invalid_count = 0
    checked: Sequence[str | None]
    if guard.all_unchanged(urls, max_length):
        checked = urls  # the same strings: no copy of a list that may hold a million
    else:
        fixed: list[str | None] = []
        for index, url in enumerate(urls):
            try:
                fixed.append(_checked_url(url, max_length))
            except guard.InvalidUrl as exc:
                fixed.append(None)
                invalid_count += 1
                if invalid_count <= MAX_DETAILS:
                    invalid.append((index, str(exc)))
        checked = fixed
    # Addresses and localhost need no DNS, so the fetch policy judges them now: nothing is stored that would
    # only end blocked. Other names (and redirect targets) are judged when fetched.
    refused = services().engine.policy.literal_refusals(checked)
    if invalid_count or refused:
        first = itertools.islice(heapq.merge(invalid, refused, key=lambda problem: problem[0]), MAX_DETAILS)
        problems = [_url_problem(index, urls[index], why) for index, why in first]
        raise ApiError(
            400,
            "invalid_urls",
            f"{invalid_count + len(refused)} of {len(urls)} URLs cannot be fetched; the first is"
            f" #{problems[0]['index']}: {problems[0]['message']}",
            problems,
        )
    return cast("Sequence[str]", checked)  # no None left: each stands for a problem


def _url_problem(index: int, url: Any, message: str) -> dict[str, Any]:
    """One refused URL as the error's details name it: by its index (its position in the list, from 0)."""
    return {"field": f"urls[{index}]", "index": index, "url": _shown(url), "message": message}


def _checked_url(url: Any, max_length: int) -> str:
    """The URL as the engine will fetch it, or guard.InvalidUrl saying why it cannot be fetched."""
    if not isinstance(url, str):
        raise guard.InvalidUrl("must be a string")
    return guard.check_url(url, max_length)


def _shown(value: Any) -> Any:
    """A submitted value, shortened and made printable, to echo back in an error."""
    if not isinstance(value, str):
        return value
    return value[:200].encode("utf-8", "backslashreplace").decode("utf-8")


def _name(raw: Any) -> str:
    """A batch name: optional, a string of at most MAX_NAME characters."""
    if raw is None:
        return ""
    if not isinstance(raw, str) or len(raw) > MAX_NAME:
        raise ApiError(
            400,
            "invalid_name",
            '"name" must be a string of at most 200 characters',
            [{"field": "name", "message": "must be a string of at most 200 characters"}],
        )
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_name", '"name" is not valid Unicode') from None
    return raw.strip()


def _derived_name(urls: Sequence[str]) -> str:
    """An unnamed batch's name: its first URL's host, and how many other hosts it has ("a.example and 2 other hosts").

    One pattern finds the runs of URLs on one host in each slice of guard.JOINED_URLS, and other requests
    run between slices; counting stops at NAMED_HOSTS distinct hosts.
    """
    hosts: dict[str, None] = {}  # in order of appearance: the first is the name's
    for start in range(0, len(urls), guard.JOINED_URLS):
        if start:
            time.sleep(guard.TURN)
        for _, host in _HOST_RUNS.findall("\n".join(urls[start : start + guard.JOINED_URLS])):
            hosts[host] = None
            if len(hosts) >= NAMED_HOSTS:
                break
        if len(hosts) >= NAMED_HOSTS:
            break
    if not hosts:
        return ""
    first = next(iter(hosts))
    if first.startswith("xn--") or ".xn--" in first:
        try:
            first = idna.decode(first)  # shown as people write it; stored URLs keep the ASCII form
        except idna.IDNAError:
            pass
    others = len(hosts) - 1
    count = f"{others}+" if len(hosts) >= NAMED_HOSTS else str(others)
    suffix = f" and {count} other host{'' if others == 1 else 's'}" if others else ""
    return first[: MAX_NAME - len(suffix)] + suffix


def _batch_or_404(batch_id: str) -> BatchView:
    """The batch as it stands now, or a 404 that names it."""
    view = services().reader.get(batch_id)
    if view is None:
        raise ApiError(404, "not_found", f"no batch with id {batch_id!r}")
    return view


def _bad_parameter(name: str, message: str, field_message: str) -> ApiError:
    """The 400 for one query parameter the API cannot take: the whole message, and what is wrong with the field."""
    return ApiError(400, "invalid_parameter", message, [{"field": name, "message": field_message}])


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within bounds, or a 400 that names it."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad_parameter(name, f"{name} must be an integer", "must be an integer") from None
    if not low <= value <= high:
        raise _bad_parameter(
            name,
            f"{name} must be between {low} and {high}",
            f"must be between {low} and {high}",
        )
    return value


def _refuse_if_store_fails() -> None:
    """503 before reading a submission while the store cannot keep it: its commits fail, or the file is damaged."""
    fault = services().store.fault()
    if fault is not None:
        raise ApiError(
            503,
            "store_unavailable",
            f"nothing was stored: {fault.message}",
            [{"field": "store", "message": fault.error, "state": fault.state, "since": fault.since}],
        )


def _submit(
    urls: Sequence[str],
    options: BatchOptions,
    name: str,
    parent_id: str | None = None,
    source: dict[str, Any] | None = None,
) -> str:
    """engine.submit, answering 503 when the store cannot write the new batch."""
    try:
        return services().engine.submit(urls, options, name, parent_id=parent_id, source=source)
    except StoreError as exc:
        raise ApiError(503, "store_unavailable", f"nothing was stored: {exc}") from None
    finally:
        if len(urls) > RELEASE_AFTER:
            release_freed_memory()  # a large submission's temporaries, gone now, must not stay in RSS under its run


@bp.errorhandler(StoreError)
def store_error(exc: StoreError):
    """A read the store failed (a damaged file, a failing disk): 503 in the API's envelope, never a 500."""
    return error_response(503, "store_unavailable", str(exc))


def _created(batch_id: str) -> Response:
    """201 with the new batch and its Location."""
    response = current_app.json.response(batch_json(_batch_or_404(batch_id)))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_batch", batch_id=batch_id)
    return response


# -- sources ---------------------------------------------------------------------------------


def _source(raw: Any) -> Source:
    """A client's source, checked: its fields within the server's limits, its URL one the guard would fetch."""
    config = current_app.config["GREENBATCH"]
    try:
        source = Source.parse(raw, config)
    except ValidationError as exc:
        raise ApiError(400, "invalid_source", str(exc), exc.details) from None
    try:
        url = guard.check_url(source.url, config.max_url_length)
    except guard.InvalidUrl as exc:
        message = f"source.url {_shown(source.url)!r} cannot be fetched: {exc}"
        raise ApiError(400, "invalid_source", message, [{"field": "source.url", "message": str(exc)}]) from None
    refusal = services().engine.policy.refuses_literal(url)
    if refusal is not None:
        message = f"source.url {url} cannot be fetched: {refusal}"
        raise ApiError(400, "invalid_source", message, [{"field": "source.url", "message": refusal}])
    return dataclasses.replace(source, url=url)


def _source_error(exc: SourceError) -> ApiError:
    """A source that cannot give a batch its URLs as a 400, the field it names by why; a 503 when the server is
    reading as many sources as it may at once."""
    if isinstance(exc, SourceBusy):
        return ApiError(503, exc.code, str(exc), headers=(("Retry-After", str(exc.retry_after)),))
    field = {"too_many_urls": "source.max_urls", "empty_source": "source"}.get(exc.code, "source.url")
    return ApiError(400, exc.code, str(exc), [{"field": field, "message": str(exc)}])


def _meta_row(meta: dict[str, str]) -> dict[str, str]:
    """A source's meta for a URL as a row's meta columns take it (each value at most MAX_META_CHARS)."""
    return {key: value[:MAX_META_CHARS] for key, value in meta.items()}


def _created_from_source(raw_source: Any, raw_options: Any, raw_name: Any) -> Response:
    """Expand a source into URLs, then submit them as a batch that records its source."""
    config = current_app.config["GREENBATCH"]
    source = _source(raw_source)
    try:
        options = BatchOptions.parse(raw_options, config)
    except ValidationError as exc:
        raise ApiError(400, "invalid_options", str(exc), exc.details) from None
    options = guarded_notify(options, raw_options)
    name = _name(raw_name)
    expansion = Expansion(source, services().engine.policy, SourceLimits.from_config(config))
    try:
        found = batch_urls(expansion, config.max_urls)
    except SourceError as exc:
        raise _source_error(exc) from None
    # Each URL's meta (a sitemap's lastmod, a link's found_on) is its row's meta: stored, and in its result.
    rows = {index: {"meta": _meta_row(meta)} for index, (_, meta) in enumerate(found) if meta}
    if rows:
        options = dataclasses.replace(options, rows=rows)
        problems = head_problems(options.method, None, rows)  # the batch's own checks were judged in parse
        if problems:
            first = problems[0]
            raise ApiError(400, "invalid_urls", f"{first['field']} {first['message']}", problems[:MAX_DETAILS])
    _check_final_url_bases(options)
    urls = UrlList.of(url for url, _ in found)
    del found
    return _created(_submit(urls, options, name or source.default_name()[:MAX_NAME], source=source.to_dict()))


@bp.post("/sources/preview")
def preview_source():
    """Read a source as a batch would, without starting anything: its counts and first PREVIEW_URLS URLs."""
    config = current_app.config["GREENBATCH"]
    body = _json_body() if request.mimetype == "application/json" else None
    if not isinstance(body, dict) or set(body) - {"source"} or "source" not in body:
        raise ApiError(
            400,
            "invalid_body",
            'send a JSON object {"source": {...}}',
            [{"field": "source", "message": "is required, and the only field"}],
        )
    source = _source(body["source"])
    expansion = Expansion(source, services().engine.policy, SourceLimits.from_config(config))
    limit = source.max_urls or config.max_urls
    try:
        found = take(expansion, limit + 1, PREVIEW_URLS)
    except SourceError as exc:
        raise _source_error(exc) from None
    counts = expansion.counts
    over = counts.kept > limit
    # As over_limit is: a 200 saying why a batch would be refused (batch_urls then answers the same 400), and not
    # complete. Sitemaps left unread matter only when the ones read gave fewer URLs than a batch would take.
    short = expansion.cut_short is not None and (source.max_urls is None or counts.kept < limit)
    message = over_limit_message(source, config.max_urls) if over and source.max_urls is None else None
    return {
        "source": source.to_dict(),
        "counts": counts.to_dict(),
        "urls": [{"url": url, "meta": meta} for url, meta in found],
        "complete": not over and expansion.cut_short is None,
        "max_urls": config.max_urls,
        "over_limit": over and source.max_urls is None,
        "message": str(expansion.cut_short) if short else message,
        "would_take": min(counts.kept, limit),
    }


# -- routes ----------------------------------------------------------------------------------


@bp.get("")
def index():
    """What this is and where its parts are: the batches, the OpenAPI description, the API's page, the health probe."""
    return {
        "name": "greenbatch",
        "version": openapi.API_VERSION,
        "links": {
            "batches": url_for("api.list_batches"),
            "openapi": url_for("openapi.description"),
            "docs": url_for("pages.api_docs"),
            "healthz": url_for("ops.healthz"),
        },
    }


@bp.post("/batches")
def create_batch():
    """Submit a batch: JSON {"urls", "name", "options"}, or one URL per line as text/plain or text/csv."""
    config = current_app.config["GREENBATCH"]
    _refuse_if_store_fails()
    urls, raw_options, name, rows, raw_source = _submission()
    if isinstance(raw_options, dict) and "rows" in raw_options:  # the sidecar comes from `urls` items, never here
        raise ApiError(
            400,
            "invalid_options",
            "invalid options",
            [{"field": "options.rows", "message": "is not a known option (give rows as objects in urls)"}],
        )
    if isinstance(raw_options, dict) and "origin" in raw_options:  # the server's own record of the request
        raise ApiError(
            400, "invalid_options", "invalid options", [{"field": "options.origin", "message": "is not a known option"}]
        )
    if raw_source is not None:
        return _created_from_source(raw_source, raw_options, name)
    try:
        options = BatchOptions.parse(raw_options, config)
    except ValidationError as exc:
        raise ApiError(400, "invalid_options", str(exc), exc.details) from None
    options = guarded_notify(options, raw_options)
    if options.base_url and isinstance(urls, list | UrlList):  # rows may give paths (/old-post); else 400 below
        urls = [_resolved(url, options.base_url, index) for index, url in enumerate(urls)]
    checked = _validate_urls(urls)
    del urls
    if rows:
        options = dataclasses.replace(options, rows=rows)
        problems = head_problems(options.method, None, rows)  # the batch's own checks were judged in parse
        if problems:
            first = problems[0]
            raise ApiError(400, "invalid_urls", f"{first['field']} {first['message']}", problems[:MAX_DETAILS])
    _check_final_url_bases(options)
    name = _name(name) or _derived_name(checked)
    # A str each costs ~60 bytes more than its text: a million URLs are stored and held in one buffer instead.
    compact = UrlList.of(checked)
    del checked
    return _created(_submit(compact, options, name))


@bp.get("/batches")
def list_batches():
    """Batches newest first (options without header values); `limit` (1-200, default 50) and `cursor`."""
    limit = _int_arg("limit", 50, 1, 200)
    cursor = _int_arg("cursor", 0, 0, 2**62) or None
    views = services().reader.page(limit + 1, cursor)
    page = views[:limit]
    next_cursor = page[-1].num if len(views) > limit else None
    return {"batches": [batch_json(view, listed=True) for view in page], "next_cursor": next_cursor}


@bp.get("/batches/<batch_id>")
def get_batch(batch_id: str):
    """One batch with its counts and statistics."""
    return batch_json(_batch_or_404(batch_id))


@bp.post("/batches/<batch_id>/cancel")
def cancel_batch(batch_id: str):
    """Cancel a queued or running batch: queued URLs end cancelled, in-flight fetches stop within a second."""
    batch = _batch_or_404(batch_id)
    if batch.status in FINAL_STATUSES or not services().engine.cancel(batch_id):
        raise ApiError(
            409,
            "already_finished",
            f"batch {batch_id} is {batch.status}; only a queued or running batch can be cancelled",
        )
    settled = services().reader.settled(batch_id, CANCEL_SETTLE)
    return batch_json(settled or batch)


@bp.post("/batches/<batch_id>/rerun")
def rerun_batch(batch_id: str):
    """Run a batch's URLs again as a new batch; {"only": "failed"} takes only those that did not end ok, and
    {"remap": [{"from", "to"}]} rewrites each URL's prefix (staging for production)."""
    batch = _batch_or_404(batch_id)
    _refuse_if_store_fails()
    only, remap = None, []
    if request.get_data(cache=True).strip():
        body = _json_body()
        only = body.get("only") if isinstance(body, dict) else None
        unknown = sorted(set(body) - {"only", "remap"}) if isinstance(body, dict) else []
        if not isinstance(body, dict) or only not in (None, "all", "failed") or unknown:
            details = [{"field": k, "message": "is not a known field"} for k in unknown] or [
                {"field": "only", "message": 'must be "all" or "failed"'}
            ]
            raise ApiError(
                400, "invalid_body", 'body must be {} or {"only": "all" | "failed", "remap": [...]}', details
            )
        remap = _remap_rules(body.get("remap"))
    store = services().store
    urls: Sequence[str]
    if only == "failed":
        if batch.status not in FINAL_STATUSES:
            raise ApiError(
                409, "still_running", f"batch {batch_id} is {batch.status}; rerun its failed URLs once it ends"
            )
        failed = [(r["index"], r["url"]) for r in store.iter_results(batch_id, outcome="not_ok")]
        urls = [url for _, url in failed]
        if not urls:
            raise ApiError(409, "nothing_failed", f"every URL of batch {batch_id} ended ok; there is nothing to rerun")
        name = f"failed of {batch.name}"
    else:
        urls = store.urls(batch_id)
        name = f"rerun of {batch.name}"
    raw_options = {**batch.options, "rows": store.row_specs(batch_id)}
    if remap:
        urls = _validate_urls(UrlList.of(remapped(url, remap) for url in urls))
        raw_options = _remapped_options(raw_options, remap)
    try:
        options = BatchOptions.parse(raw_options, current_app.config["GREENBATCH"])
    except ValidationError as exc:  # a limit lowered, or a rule added, since the batch was stored
        first = exc.details[0] if exc.details else {"field": "options", "message": str(exc)}
        raise ApiError(
            409,
            "invalid_options",
            f"batch {batch_id} was stored with options this server no longer accepts ({first['field']} "
            f"{first['message']}); submit its URLs again as a new batch with options within today's "
            "limits",
            exc.details,
        ) from None
    options = guarded_notify(options, raw_options)  # the guard's rules may have changed since it was stored
    if options.rows and only == "failed":  # each URL keeps its row's expectations and meta at its new index
        kept = {new: options.rows[old] for new, (old, _) in enumerate(failed) if old in options.rows}
        options = dataclasses.replace(options, rows=kept or None)
    new_id = _submit(urls, options, name[:200], parent_id=batch_id)
    return _created(new_id)


def _remapped_options(options: dict[str, Any], remap: list[tuple[str, str]]) -> dict[str, Any]:
    """A batch's stored options with each expected final URL (the batch's and each row's) and its bases remapped."""

    def expect_of(expect: Any) -> Any:
        if isinstance(expect, dict) and isinstance(expect.get("final_url"), str):
            return {**expect, "final_url": remapped(expect["final_url"], remap)}
        return expect

    changed = dict(options)
    for key in ("base_url", "target_base_url"):
        if isinstance(changed.get(key), str):
            changed[key] = remapped(changed[key], remap)
    if "expect" in changed:
        changed["expect"] = expect_of(changed["expect"])
    if isinstance(changed.get("rows"), dict):
        changed["rows"] = {
            index: {**row, "expect": expect_of(row["expect"])} if isinstance(row, dict) and "expect" in row else row
            for index, row in changed["rows"].items()
        }
    return changed


def _remap_rules(raw: Any) -> list[tuple[str, str]]:
    """A rerun's remap as (from, to) prefix pairs; a 400 naming the rule that is not a pair of http(s) prefixes."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_REMAP:
        message = f'"remap" must be a list of at most {MAX_REMAP} {{"from", "to"}} objects'
        raise ApiError(400, "invalid_body", message, [{"field": "remap", "message": message}])
    limit = current_app.config["GREENBATCH"].max_url_length
    rules = []
    for n, rule in enumerate(raw):
        ok = isinstance(rule, dict) and set(rule) == {"from", "to"}
        ok = ok and all(
            isinstance(rule[end], str)
            and 0 < len(rule[end]) <= limit
            and rule[end].lower().startswith(("http://", "https://"))
            for end in ("from", "to")
        )
        if not ok:
            message = f'remap[{n}] must be {{"from": prefix, "to": prefix}}, each an http:// or https:// URL prefix'
            raise ApiError(400, "invalid_body", message, [{"field": f"remap[{n}]", "message": message}])
        rules.append((rule["from"], rule["to"]))
    return rules


@bp.delete("/batches/<batch_id>")
def delete_batch(batch_id: str):
    """Delete a finished batch with its results and events."""
    batch = _batch_or_404(batch_id)
    if services().engine.is_live(batch_id):
        raise ApiError(409, "still_running", f"batch {batch_id} is {batch.status}; cancel it before deleting it")
    services().store.delete_batch(batch_id)
    return Response(status=204)


@bp.get("/batches/<batch_id>/results")
def results(batch_id: str):
    """A page of results (filters, sort, order, offset or after, limit) with their total, or a download (`format`)."""
    batch = _batch_or_404(batch_id)
    outcome = _choice_arg("outcome", OUTCOMES)
    fmt = request.args.get("format") or None
    store = services().store
    if fmt in exports.FORMATS:
        paging = sorted(name for name in PAGE_ONLY if request.args.get(name, "") != "")
        if paging:
            raise ApiError(
                400,
                "invalid_parameter",
                f"a download (format={fmt}) holds every result, or those of one outcome; {', '.join(paging)} "
                "apply to pages only",
                [{"field": name, "message": "applies to pages only (without format=)"} for name in paging],
            )
        meta = exports.meta_columns(store.row_specs(batch.id))
        return exports.download(store, batch.id, fmt, outcome, meta, batch.options.get("capture"))
    if fmt is not None:
        formats = ", ".join(exports.FORMATS)
        raise _bad_parameter(
            "format",
            f"format must be one of {formats} (a download of every result), or absent for a page",
            f"must be one of {formats}",
        )
    query = _result_query(outcome)
    page = store.result_page(batch.id, query, total=_known_total(batch, query), dense=_dense(batch))
    if page.total_exact and query.start is None and query.offset > page.total:
        raise _bad_parameter(
            "offset",
            f"offset {query.offset} is past the last of the {page.total} results that match",
            f"must be between 0 and {page.total}",
        )
    shown = page.results
    full = len(shown) == query.limit
    more = full and page.offset is not None and page.offset + len(shown) < page.total
    return {
        "batch_id": batch.id,
        "results": shown,
        "total": page.total,
        "total_exact": page.total_exact,
        "offset": page.offset,
        "limit": query.limit,
        "sort": query.sort,
        "order": "desc" if query.descending else "asc",
        "next_offset": page.offset + len(shown) if more and page.offset is not None else None,
        "next_after": shown[-1]["index"] if full and query.sort == "index" and not query.descending else None,
        "last_seq": page.last_seq,
    }


MAX_CERTIFICATES_PAGE = 1000  # rows of a certificate inventory's page (each lists at most 4 KiB of names)
_CERT_CURSOR = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ_[0-9a-f]{64}")

# Parameters of a page of results that a download does not take.
PAGE_ONLY = ("sort", "order", "offset", "after", "from_index", "limit", "status", "error", "reason", "q", "until_seq")


def _choice_arg(name: str, choices: tuple[str, ...]) -> str | None:
    """A query parameter that is one of `choices`, or None when absent; a 400 that lists them otherwise."""
    value = request.args.get(name) or None
    if value is not None and value not in choices:
        listed = ", ".join(choices)
        raise _bad_parameter(
            name,
            f"{name} must be one of {listed}",
            f"must be one of {listed}",
        )
    return value


def _result_query(outcome: str | None) -> ResultQuery:
    """The page of results the query string asks for; a 400 naming the parameter when it cannot be read."""
    sort = _choice_arg("sort", RESULT_SORTS) or "index"
    descending = _choice_arg("order", ("asc", "desc")) == "desc"
    has = {name for name in ("offset", "after", "from_index") if request.args.get(name, "") != ""}
    if len(has) > 1:
        raise ApiError(
            400,
            "invalid_parameter",
            f"give one of offset, after and from_index, not {' and '.join(sorted(has))}",
            [{"field": name, "message": "conflicts with " + ", ".join(sorted(has - {name}))} for name in sorted(has)],
        )
    start = None
    if "after" in has:
        if sort != "index" or descending:
            raise _bad_parameter(
                "after",
                "after pages in ascending index order only; use offset with another sort or order",
                "only with sort=index and order=asc",
            )
        start = _int_arg("after", -1, -1, 2**31) + 1
    elif "from_index" in has:
        if sort != "index":
            raise _bad_parameter(
                "from_index",
                "from_index starts a page at a URL index, in index order only",
                "only with sort=index",
            )
        start = _int_arg("from_index", 0, 0, 2**31)
    status = _int_arg("status", -1, 100, 599)
    error = _choice_arg("error", ERROR_KINDS)
    reason = request.args.get("reason") or None
    if reason is not None and not _RULE.match(reason):
        raise _bad_parameter(
            "reason",
            "reason must be a rule like accept_status, expect.final_url, check[2] or a warning kind",
            "must be a rule name",
        )
    until_seq = _int_arg("until_seq", -1, 0, 2**62)  # a page before's last_seq: this page as of the same results
    q = request.args.get("q", "")
    if len(q) > MAX_SEARCH:
        raise _bad_parameter(
            "q",
            f"q must be at most {MAX_SEARCH} characters",
            f"must be at most {MAX_SEARCH} characters",
        )
    return ResultQuery(
        outcome=outcome,
        status=None if status == -1 else status,
        error=error,
        reason=reason,
        q=q or None,
        sort=sort,
        descending=descending,
        offset=_int_arg("offset", 0, 0, 2**31),
        limit=_int_arg("limit", 100, 1, 1000),
        start=start,
        locate="after" not in has,  # those who page by `after` never read the offset: do not count it
        until_seq=None if until_seq == -1 else until_seq,
    )


def _known_total(batch: BatchView, query: ResultQuery) -> int | None:
    """How many results match, from the batch's counts, when one of them says (one filter at most, no search)."""
    counts, stats = batch.counts, batch.stats or {}
    given = [
        query.outcome is not None,
        query.status is not None,
        query.error is not None,
        query.reason is not None,
        bool(query.q),
    ]
    if sum(given) > 1 or query.q or query.outcome == "stopped":
        return None
    if query.outcome == "not_ok":
        return int(counts["failed"] + counts["cancelled"])
    if query.outcome is not None:
        return int(counts.get(query.outcome, 0))
    if query.reason is not None:
        return int((stats.get("by_reason") or {}).get(query.reason, 0))
    if query.status is not None:
        return int((stats.get("by_status") or {}).get(str(query.status), 0))
    if query.error is not None:
        return int((stats.get("by_error") or {}).get(query.error, 0))
    return int(counts["ok"] + counts["failed"] + counts["cancelled"])


def _dense(batch: BatchView) -> bool:
    """Whether every URL of the batch has its result stored: it ended, and its counts say each URL did."""
    counts = batch.counts
    return batch.final and counts["ok"] + counts["failed"] + counts["cancelled"] == counts["total"]


@bp.get("/batches/<batch_id>/running")
def running(batch_id: str):
    """The URLs of a batch in flight now, oldest first (at most 500; `count` is all of them)."""
    batch = _batch_or_404(batch_id)
    listed, count = services().engine.running_urls(batch.id)
    return {
        "batch_id": batch.id,
        "running": [
            {"index": u.index, "url": u.url, "started_at": u.started_at, "elapsed_ms": u.elapsed_ms} for u in listed
        ],
        "count": count,
    }


@bp.get("/batches/<batch_id>/hosts")
def hosts(batch_id: str):
    """Per host of a batch: in flight, done, ok, failed, median ms, 429/503 answers and any pause (`format=csv`)."""
    batch = _batch_or_404(batch_id)
    fmt = _choice_arg("format", ("json", "csv")) or "json"
    table = services().reader.hosts(batch.id)
    if fmt == "json":
        return {"batch_id": batch.id, "hosts": table}
    text = io.StringIO()
    writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(HOST_FIELDS)
    for host in table:
        writer.writerow(["" if host[name] is None else host[name] for name in HOST_FIELDS])
    response = Response(exports.utf8(text.getvalue()), content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="greenbatch-{batch.id}-hosts.csv"'
    return response


@bp.get("/batches/<batch_id>/deliveries")
def deliveries(batch_id: str):
    """The batch's notifications: one delivery per notify target once it ended, each with its tries."""
    batch = _batch_or_404(batch_id)
    return {"batch_id": batch.id, "deliveries": [delivery_json(d) for d in services().store.deliveries(batch.id)]}


@bp.get("/batches/<batch_id>/certificates")
def certificates(batch_id: str):
    """The batch's certificate inventory a page at a time (`limit`, `cursor`): one row per (host, certificate) its
    stored results met, soonest expiry first, with how many URLs used it and a few of them; days_left counts
    from now."""
    batch = _batch_or_404(batch_id)
    limit = _int_arg("limit", 100, 1, MAX_CERTIFICATES_PAGE)
    after = _certificate_cursor(request.args.get("cursor"))
    page = services().reader.certificates(batch.id, now_utc(), limit, after)
    return {
        "batch_id": batch.id,
        "certificates": page.rows,
        "count": page.count,
        "expiring_within_days": EXPIRING_DAYS,
        "expiring": page.expiring,
        "next_cursor": f"{page.next[0]}_{page.next[2]}_{page.next[1]}" if page.next else None,
    }


def _certificate_cursor(raw: str | None) -> tuple[str, str, str] | None:
    """A `cursor` of the certificates route (next_cursor of the page before: not_after_fingerprint_host) as the
    row's key; a 400 when it is not one."""
    if not raw:
        return None
    not_after, _, rest = raw.partition("_")
    fingerprint, _, host = rest.partition("_")
    if len(raw) > 400 or not _CERT_CURSOR.fullmatch(f"{not_after}_{fingerprint}") or not host:
        raise _bad_parameter("cursor", "cursor must be the next_cursor of the page before", "not a next_cursor")
    return not_after, host, fingerprint


@bp.get("/batches/<batch_id>/events")
def events(batch_id: str):
    """Stored events after a sequence number (`after`, `limit`, `type`): what clients without websockets poll."""
    batch = _batch_or_404(batch_id)
    after = _int_arg("after", 0, 0, 2**62)
    limit = _int_arg("limit", 1000, 1, 5000)
    types = tuple(t for t in request.args.get("type", "").split(",") if t) or EVENT_TYPES
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        listed = ", ".join(EVENT_TYPES)
        raise _bad_parameter(
            "type",
            f"type must be one or more of {listed}, separated by commas",
            f"{', '.join(unknown)} is not one of {listed}",
        )
    page = services().store.events(batch_id, after, limit, types)
    last = page[-1]["seq"] if page else after
    return {"batch_id": batch_id, "status": batch.status, "events": page, "last_seq": last, "more": len(page) == limit}
