"""JSON API v1: submit, list, inspect, cancel, rerun and delete batches; read results and events."""

from __future__ import annotations

import csv
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

from ..core.memory import release_freed_memory
from ..core.options import BatchOptions, ValidationError, header_problem
from ..core.results import ERROR_KINDS, FINAL_STATUSES
from ..core.urllist import UrlList, UrlListBuilder, read_json_object
from ..fetch import guard
from ..runs.hosts import HOST_FIELDS, host_table
from ..runs.reader import BatchView
from ..runs.store import StoreError
from ..runs.store.base import EVENT_TYPES, MAX_SEARCH, OUTCOMES, RESULT_SORTS, ResultQuery
from . import exports, openapi
from .errors import ApiError, error_response
from .services import services
from .views import batch_json

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


# -- reading input ---------------------------------------------------------------------------


BODY_BLOCK = 1024 * 1024  # bytes of a text body read and decoded at once: a body is never held whole
CSV_ROWS = 10_000  # rows of a CSV body read at once


def _json_body() -> Any:
    """Parse the request body as JSON, answering 400 for anything that is not (never a 500)."""
    return _parsed_json(_json_text(request.get_data(cache=True)))


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


def _submission_json(raw: bytearray) -> Any:
    """A JSON submission's body parsed, its "urls" as a UrlList read a window at a time when it is an array of
    strings (a million URLs are never all held as a str each); `raw` is emptied once decoded."""
    text = _json_text(raw)
    raw.clear()  # one copy of the body at a time
    body = read_json_object(text, "urls")
    if body is None:
        return _parsed_json(text)  # anything else, and every error, as json.loads reads it
    del text  # the URLs' text is joined into one only once the body's is let go
    body["urls"] = body["urls"].build()
    return body


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
    """A UTF-8 text body read a block at a time, as texts that each end at a line feed (the last may not)."""
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
        try:
            yield data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(400, "invalid_body", f"request body is not UTF-8 (byte {offset + exc.start})") from None
        offset += len(data)
        pending = [block[cut:]] if cut < len(block) else []
        if not block:
            return


def _text_urls(is_csv: bool) -> UrlList:
    """URLs from a text body: one per line (or the first CSV column); blanks and '#' lines skipped.

    Past GREENBATCH_MAX_URLS the lines are only counted, for the 413 that names how many there were.
    """
    keep = current_app.config["GREENBATCH"].max_urls
    urls = UrlListBuilder()  # each block's URLs joined as they come: a million lines are never a str each at once
    count = 0
    first = True
    for values in _csv_firsts() if is_csv else map(str.splitlines, _body_texts()):
        kept = [url for url in map(str.strip, values) if url and url[0] != "#"]
        if is_csv and first and kept:
            first = False
            if "://" not in kept[0]:
                del kept[0]  # a header row such as "url"
        count += len(kept)
        urls.add(kept[: max(0, keep - len(urls))])
    _check_count(count)
    return urls.build()


def _csv_firsts() -> Iterator[list[str]]:
    """The first column of a CSV body's rows ("" for a blank row), a list at a time."""
    # One reader over the whole body: a quoted field may span lines, and so the blocks they were read in.
    rows = csv.reader(itertools.chain.from_iterable(map(io.StringIO, _body_texts())))
    try:
        while firsts := [row[0] if row else "" for row in itertools.islice(rows, CSV_ROWS)]:
            yield firsts
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


def _submission() -> tuple[Any, dict[str, Any], str]:
    """(urls, raw options, name) from a JSON or text body."""
    mimetype = request.mimetype
    if mimetype == "application/json":
        body = _submission_json(_body_bytes())
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_body", 'JSON body must be an object with a "urls" list')
        unknown = sorted(set(body) - {"urls", "name", "options"})
        if unknown:
            raise ApiError(
                400,
                "invalid_body",
                f"unknown field(s): {', '.join(unknown)}",
                [{"field": k, "message": "is not a known field"} for k in unknown],
            )
        return body.get("urls"), body.get("options"), body.get("name")
    if mimetype in ("text/plain", "text/csv"):
        return _text_urls(mimetype == "text/csv"), _options_from_query(), request.args.get("name")
    raise ApiError(
        415,
        "unsupported_media_type",
        f"send application/json, text/plain or text/csv, not {mimetype or 'no Content-Type'}",
    )


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


def _submit(urls: Sequence[str], options: BatchOptions, name: str, parent_id: str | None = None) -> str:
    """engine.submit, answering 503 when the store cannot write the new batch."""
    try:
        return services().engine.submit(urls, options, name, parent_id=parent_id)
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
    urls, raw_options, name = _submission()
    checked = _validate_urls(urls)
    del urls
    try:
        options = BatchOptions.parse(raw_options, config)
    except ValidationError as exc:
        raise ApiError(400, "invalid_options", str(exc), exc.details) from None
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
    """Run a batch's URLs again as a new batch; {"only": "failed"} takes only those that did not end ok."""
    batch = _batch_or_404(batch_id)
    _refuse_if_store_fails()
    only = None
    if request.get_data(cache=True).strip():
        body = _json_body()
        only = body.get("only") if isinstance(body, dict) else None
        unknown = sorted(set(body) - {"only"}) if isinstance(body, dict) else []
        if not isinstance(body, dict) or only not in (None, "all", "failed") or unknown:
            details = [{"field": k, "message": "is not a known field"} for k in unknown] or [
                {"field": "only", "message": 'must be "all" or "failed"'}
            ]
            raise ApiError(400, "invalid_body", 'body must be {} or {"only": "all" | "failed"}', details)
    store = services().store
    if only == "failed":
        if batch.status not in FINAL_STATUSES:
            raise ApiError(
                409, "still_running", f"batch {batch_id} is {batch.status}; rerun its failed URLs once it ends"
            )
        urls = [r["url"] for r in store.iter_results(batch_id, outcome="not_ok")]
        if not urls:
            raise ApiError(409, "nothing_failed", f"every URL of batch {batch_id} ended ok; there is nothing to rerun")
        name = f"failed of {batch.name}"
    else:
        urls = store.urls(batch_id)
        name = f"rerun of {batch.name}"
    try:
        options = BatchOptions.parse(batch.options, current_app.config["GREENBATCH"])
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
    new_id = _submit(urls, options, name[:200], parent_id=batch_id)
    return _created(new_id)


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
        return exports.download(store, batch.id, fmt, outcome)
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


# Parameters of a page of results that a download does not take.
PAGE_ONLY = ("sort", "order", "offset", "after", "from_index", "limit", "status", "error", "q")


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
        q=q or None,
        sort=sort,
        descending=descending,
        offset=_int_arg("offset", 0, 0, 2**31),
        limit=_int_arg("limit", 100, 1, 1000),
        start=start,
        locate="after" not in has,  # those who page by `after` never read the offset: do not count it
    )


def _known_total(batch: BatchView, query: ResultQuery) -> int | None:
    """How many results match, from the batch's counts, when one of them says (one filter at most, no search)."""
    counts, stats = batch.counts, batch.stats or {}
    given = [query.outcome is not None, query.status is not None, query.error is not None, bool(query.q)]
    if sum(given) > 1 or query.q or query.outcome == "stopped":
        return None
    if query.outcome == "not_ok":
        return int(counts["failed"] + counts["cancelled"])
    if query.outcome is not None:
        return int(counts[query.outcome])
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
    store = services().store
    table = host_table(store.iter_results(batch.id), services().engine.hosts_live(batch.id))
    if fmt == "json":
        return {"batch_id": batch.id, "hosts": table}
    text = io.StringIO()
    writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(HOST_FIELDS)
    for host in table:
        writer.writerow(["" if host[name] is None else host[name] for name in HOST_FIELDS])
    response = Response(text.getvalue(), content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="greenbatch-{batch.id}-hosts.csv"'
    return response


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
