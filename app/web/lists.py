"""Watch lists in the API: /api/v1/lists, a list of URLs run as a new batch on a schedule (app/runs/schedule.py),
each run compared with the one before it."""

from __future__ import annotations

import secrets
import time
from typing import Any

from flask import Blueprint, Response, current_app, request, url_for
from gevent import get_hub

from ..core.clock import iso_at, now_iso
from ..core.lru import LRU
from ..core.options import BatchOptions, ValidationError, redacted
from ..core.sources import Source
from ..fetch.sources import BUSY_RETRY_AFTER
from ..runs.diff import compare
from ..runs.reader import BatchView
from ..runs.schedule import Schedule, Scheduler
from ..runs.store import StoreError
from ..runs.store.base import ListRecord
from .api import (
    MAX_NAME,
    _batch_or_404,
    _derived_name,
    _int_arg,
    _json_body,
    _refuse_if_store_fails,
    _source,
    _validate_urls,
    guarded_notify,
)
from .errors import ApiError, error_response
from .services import services
from .views import batch_json, delivery_json, listed_options, shown_options

bp = Blueprint("lists", __name__, url_prefix="/api/v1")

FIELDS = ("name", "urls", "source", "from_batch", "options", "schedule", "notify", "notify_on", "consecutive_failures")
FIELDS += ("keep_runs", "paused")
DEFAULT_KEEP_RUNS = 30
NOTIFY_FIELDS = ("notify", "notify_on", "consecutive_failures")  # passed into the options of each run
# A batch's options that are not copied into a list saved from it: whom it notified (the list's own notify fields
# say whom its runs notify; a PATCH of them must be the whole truth) and the server's record of its request.
NOT_COPIED = ("rows", "notify", "webhook", "notify_on", "consecutive_failures", "origin")
RECENT_RUNS = 12  # runs a list shows in GET /lists (the sparkline's)
MAX_RUNS_LIMIT = 50  # runs GET /lists/<id>/runs answers at once: each may compare two runs
LISTS_PAGE = 50  # lists in a page of GET /lists unless `limit` says
MAX_LISTS_PAGE = 200
# Diff summaries of two ended runs: they never change, so a list's runs page compares each pair once.
_SUMMARIES: LRU[tuple[str, str], dict[str, int]] = LRU(256)


@bp.errorhandler(StoreError)
def store_error(exc: StoreError):
    """A read or write the store failed: 503 in the API's envelope, never a 500."""
    return error_response(503, "store_unavailable", str(exc))


def _scheduler() -> Scheduler:
    """This process's scheduler (every server has one)."""
    scheduler = services().scheduler
    assert scheduler is not None
    return scheduler


def _invalid(field: str, message: str, code: str = "invalid_list") -> ApiError:
    """The 400 for one field of a list's body."""
    return ApiError(400, code, f"{field} {message}", [{"field": field, "message": message}])


def _list_or_404(list_id: str) -> ListRecord:
    """The list, or a 404 that names it."""
    record = services().store.get_list(list_id)
    if record is None:
        raise ApiError(404, "not_found", f"no watch list with id {list_id!r}")
    return record


# -- reading a list's body -------------------------------------------------------------------


def _body() -> dict[str, Any]:
    """The JSON object of a list's body, every field a known one."""
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the watch list as application/json")
    body = _json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise ApiError(
            400,
            "invalid_body",
            f"unknown field(s): {', '.join(unknown)}",
            [{"field": name, "message": "is not a known field"} for name in unknown],
        )
    return body


def _options(raw: Any) -> dict[str, Any]:
    """Options checked as a submission's are (BatchOptions.parse), kept as given: server defaults stay the server's."""
    if isinstance(raw, dict) and "rows" in raw:
        raise _invalid("options.rows", "is not a known option", "invalid_options")
    for name in (*NOTIFY_FIELDS, "webhook", "origin"):
        if isinstance(raw, dict) and name in raw:
            raise _invalid(
                f"options.{name}", f'is a field of the list: give "{name}" beside "options"', "invalid_options"
            )
    try:
        BatchOptions.parse(raw, current_app.config["GREENBATCH"])
    except ValidationError as exc:
        raise ApiError(400, "invalid_options", str(exc), exc.details) from None
    return dict(raw or {})


def _schedule(raw: Any) -> dict[str, str]:
    """A schedule checked against GREENBATCH_MIN_SCHEDULE_INTERVAL."""
    try:
        Schedule.parse(raw, current_app.config["GREENBATCH"].min_schedule_interval)
    except ValidationError as exc:
        raise ApiError(400, "invalid_schedule", str(exc), exc.details) from None
    return dict(raw)


def _keep_runs(raw: Any) -> int:
    """keep_runs: 2 (a run and the one it is compared with) to GREENBATCH_MAX_KEEP_RUNS."""
    high = current_app.config["GREENBATCH"].max_keep_runs
    if isinstance(raw, bool) or not isinstance(raw, int) or not 2 <= raw <= high:
        raise _invalid("keep_runs", f"must be an integer between 2 and {high} (GREENBATCH_MAX_KEEP_RUNS)")
    return raw


def _notify_fields(body: dict[str, Any]) -> dict[str, Any]:
    """notify, notify_on and consecutive_failures, checked as a batch's options are (the same parse, the same
    guard: a target the fetch policy refuses is a 400 with its reason), as the list stores them."""
    given = {name: body[name] for name in NOTIFY_FIELDS if name in body}
    raw = {name: value for name, value in given.items() if value is not None}
    try:
        options = guarded_notify(BatchOptions.parse(raw, current_app.config["GREENBATCH"]), raw)
    except ValidationError as exc:
        raise _notify_error(ApiError(400, "invalid_notify", str(exc), exc.details)) from None
    except ApiError as exc:
        raise _notify_error(exc) from None
    fields: dict[str, Any] = {}
    if "notify" in given:
        fields["notify"] = options.notify or []
    if "notify_on" in given:
        fields["notify_on"] = given["notify_on"]
    if "consecutive_failures" in given:
        fields["consecutive_failures"] = options.consecutive_failures
    return fields


def _notify_error(exc: ApiError) -> ApiError:
    """A batch option's error about notify as a list's: its fields named without "options."."""
    details = [
        {**detail, "field": str(detail.get("field", "")).removeprefix("options.")} for detail in exc.details or []
    ]
    message = exc.message.removeprefix("options.") if details else exc.message
    return ApiError(400, "invalid_notify", message, details)


def _name(raw: Any) -> str:
    """A list's name: a string of at most MAX_NAME characters."""
    if not isinstance(raw, str) or len(raw) > MAX_NAME:
        raise _invalid("name", f"must be a string of at most {MAX_NAME} characters")
    return raw.strip()


def _urls(raw: Any) -> list[str]:
    """URLs checked as a submission's are: the same limits, the same fetch policy."""
    return list(_validate_urls(raw))


def _list_name(changes: dict[str, Any]) -> str:
    """A new list's name when none is given: its source's, or one from its URLs."""
    source = changes.get("source")
    if source:
        return Source(**source).default_name()[:MAX_NAME]
    return _derived_name(changes["urls"])


def _changes(body: dict[str, Any], creating: bool) -> dict[str, Any]:
    """The stored fields a body gives, each checked; `from_batch` gives the batch's URLs (and options)."""
    changes: dict[str, Any] = {}
    given = [name for name in ("urls", "source", "from_batch") if name in body]
    if len(given) > 1:
        raise _invalid(given[1], f'conflicts with "{given[0]}": give one of urls, source and from_batch')
    if "from_batch" in body:
        if not creating:
            raise _invalid("from_batch", 'is for a new list: give "urls" or "source" to change what a list watches')
        batch = services().reader.get(str(body["from_batch"]))
        if batch is None:
            raise _invalid("from_batch", f"names no batch ({body['from_batch']!r})")
        # A batch read from a sitemap or a page gives its source, read again at each run; otherwise its URLs, and
        # each URL's expectations, meta and checks by index, passed into every run as a rerun's are.
        changes["urls"] = [] if batch.source else list(services().store.urls(batch.id))
        changes["source"] = batch.source or None
        changes["row_specs"] = None if batch.source else services().store.row_specs(batch.id)
        if "options" not in body:
            changes["options"] = {key: value for key, value in batch.options.items() if key not in NOT_COPIED}
        changes["name"] = batch.name
    if "urls" in body:
        changes["urls"] = _urls(body["urls"])
        changes["source"] = None
        changes["row_specs"] = None  # they were the old URLs', index by index
    if "source" in body:
        # Checked as a submission's source is, without reading it: each run reads it (/sources/preview shows it).
        changes["source"] = _source(body["source"]).to_dict()
        changes["urls"] = []
        changes["row_specs"] = None
    if "options" in body:
        changes["options"] = _options(body["options"])
    if "name" in body:
        changes["name"] = _name(body["name"])
    if "schedule" in body:
        changes["schedule"] = _schedule(body["schedule"])
    changes.update(_notify_fields(body))
    if "keep_runs" in body:
        changes["keep_runs"] = _keep_runs(body["keep_runs"])
    if "paused" in body:
        if not isinstance(body["paused"], bool):
            raise _invalid("paused", "must be true or false")
        changes["paused"] = body["paused"]
    return changes


def _check_consecutive(consecutive_failures: int | None, keep_runs: int) -> None:
    """consecutive_failures counts runs that keep_runs keeps: more could never be seen, so never notify."""
    if consecutive_failures is not None and consecutive_failures > keep_runs:
        message = (
            f"is {consecutive_failures}, more than keep_runs ({keep_runs}): a URL failing that many runs in a row "
            "is never seen, the older runs are deleted; lower it or raise keep_runs"
        )
        raise ApiError(
            400,
            "invalid_list",
            f"consecutive_failures {message}",
            [{"field": "consecutive_failures", "message": message}, {"field": "keep_runs", "message": message}],
        )


# -- showing a list --------------------------------------------------------------------------


def _when(at: float | None) -> str | None:
    """An epoch time as the API writes times."""
    return None if at is None else iso_at(at)


def list_json(record: ListRecord, full: bool = True) -> dict[str, Any]:
    """A list as the API and the pages show it; `full` adds its URLs (not in GET /lists)."""
    shown = {
        "id": record.id,
        "name": record.name,
        "url_count": None if record.source else record.url_count,
        "source": record.source,
        "options": shown_options(record.options) if full else listed_options(record.options),
        "schedule": record.schedule,
        "notify": redacted({"notify": record.notify}).get("notify") or [],
        "notify_on": record.notify_on,
        "consecutive_failures": record.consecutive_failures,
        "keep_runs": record.keep_runs,
        "paused": record.paused,
        "created_at": record.created_at,
        "next_run_at": _when(record.next_run_at),
        "last_run_at": _when(record.last_run_at),
        "runs_started": record.runs,
        "skipped": _skipped(record),
        "links": {
            "self": url_for("lists.get_list", list_id=record.id),
            "runs": url_for("lists.list_runs", list_id=record.id),
            "run": url_for("lists.run_list", list_id=record.id),
            "deliveries": url_for("lists.list_deliveries", list_id=record.id),
            "page": url_for("pages.watch_list", list_id=record.id),
        },
    }
    if full:
        shown["urls"] = record.urls
    return shown


def _skipped(record: ListRecord) -> dict[str, Any]:
    """The runs of a list that did not start: how many, the last one's time and why."""
    return {
        "count": record.skipped,
        "last_at": _when(record.last_skipped_at),
        "last_reason": record.last_skipped_reason,
    }


def _recent(record: ListRecord, limit: int) -> list[BatchView]:
    """The list's last runs, newest first, as they stand now."""
    reader = services().reader
    views = [reader.get(batch_id) for batch_id in services().store.list_runs(record.id, limit)]
    return [view for view in views if view is not None]


def _run_brief(view: BatchView) -> dict[str, Any]:
    """A run as a list's summary shows it: enough for a verdict and a point of the sparkline."""
    shown = batch_json(view, listed=True)
    return {key: shown[key] for key in ("id", "name", "status", "created_at", "counts", "verdict")}


def _diff_summary(view: BatchView) -> dict[str, int] | None:
    """What changed from the run before (its parent) to this run; None without one, while this run is still going
    (its page's diff moves live; this list is polled), or past GREENBATCH_MAX_DIFF_URLS."""
    if not view.final or services().engine.is_live(view.id):
        return None
    base = services().reader.get(view.parent_id) if view.parent_id else None
    if base is None:
        return None
    limit = current_app.config["GREENBATCH"].max_diff_urls
    if max(base.counts["total"], view.counts["total"]) > limit:
        return None
    asked = (base.id, view.id)
    kept = _SUMMARIES.get(asked)
    if kept is not None:
        return kept
    engine, store = services().engine, services().store
    ended = all(one.final and not engine.is_live(one.id) for one in (base, view))
    rows = store.diff_rows(base.id), store.diff_rows(view.id)
    summary = get_hub().threadpool.apply(compare, (*rows, "url", 2.0, ())).summary
    if ended:
        _SUMMARIES.put(asked, summary)
    return summary


# -- routes ----------------------------------------------------------------------------------


@bp.post("/lists")
def create_list():
    """Save a watch list: {"name", "urls" | "from_batch", "options", "schedule", "notify", "notify_on",
    "consecutive_failures", "keep_runs"}; it first runs at its schedule's first slot."""
    _refuse_if_store_fails()
    config = current_app.config["GREENBATCH"]
    body = _body()
    if not {"urls", "source", "from_batch"} & set(body):
        raise _invalid(
            "urls", 'is required (or "source": a sitemap or page to read at each run, or "from_batch": a batch)'
        )
    if "schedule" not in body:
        raise _invalid("schedule", 'is required: {"every": "6h"} or {"cron": "0 3 * * *"}', "invalid_schedule")
    changes = _changes(body, creating=True)
    store = services().store
    if store.count_lists() >= config.max_lists:
        raise ApiError(
            409,
            "too_many_lists",
            f"the server holds {config.max_lists} watch lists already (GREENBATCH_MAX_LISTS); delete one first",
        )
    keep_runs = changes.get("keep_runs", min(DEFAULT_KEEP_RUNS, config.max_keep_runs))
    _check_consecutive(changes.get("consecutive_failures"), keep_runs)
    paused = changes.get("paused", False)
    now = time.time()
    record = ListRecord(
        id=secrets.token_hex(6),
        name=changes.get("name") or _list_name(changes),
        urls=changes["urls"],
        source=changes.get("source"),
        options=changes.get("options", {}),
        schedule=changes["schedule"],
        notify=changes.get("notify", []),
        notify_on=changes.get("notify_on"),
        consecutive_failures=changes.get("consecutive_failures"),
        keep_runs=keep_runs,
        paused=paused,
        created_at=now_iso(),
        next_run_at=None if paused else Schedule.parse(changes["schedule"], 0).first_after(now),
        last_run_at=None,
        runs=0,
        skipped=0,
        last_skipped_at=None,
        row_specs=changes.get("row_specs"),
        url_count=len(changes["urls"]),
    )
    store.create_list(record)
    _scheduler().wake()
    response = current_app.json.response(list_json(record))
    response.status_code = 201
    response.headers["Location"] = url_for("lists.get_list", list_id=record.id)
    return response


@bp.get("/lists")
def all_lists():
    """The watch lists, oldest first, a page at a time (`limit`, `cursor`), without their URLs; each with its last
    runs (newest first) for a verdict and a sparkline, and its last notification."""
    limit = _int_arg("limit", LISTS_PAGE, 1, MAX_LISTS_PAGE)
    store = services().store
    records = store.page_lists(limit + 1, _list_cursor(request.args.get("cursor")))
    page = records[:limit]
    recent = services().reader.recent_list_runs([record.id for record in page], RECENT_RUNS)
    last = store.last_list_deliveries([record.id for record in page if record.notify])
    shown = []
    for record in page:
        one = list_json(record, full=False)
        one["recent_runs"] = [_run_brief(view) for view in recent[record.id]]
        one["last_delivery"] = delivery_json(last[record.id]) if record.id in last else None
        shown.append(one)
    last_shown = page[-1] if len(records) > limit else None
    return {"lists": shown, "next_cursor": f"{last_shown.created_at}_{last_shown.id}" if last_shown else None}


def _list_cursor(raw: str | None) -> tuple[str, str] | None:
    """A `cursor` of GET /lists (next_cursor of the page before) as (created_at, id); a 400 when it is not one."""
    if raw is None:
        return None
    created_at, _, list_id = raw.rpartition("_")
    if not created_at or not list_id or len(raw) > 100:
        raise _invalid("cursor", "must be the next_cursor of the page before", "invalid_parameter")
    return created_at, list_id


@bp.get("/lists/<list_id>")
def get_list(list_id: str):
    """One watch list, with its URLs."""
    return list_json(_list_or_404(list_id))


@bp.patch("/lists/<list_id>")
def change_list(list_id: str):
    """Change some of a list's fields; a new schedule (or a resume) counts its next run from now."""
    record = _list_or_404(list_id)
    changes = _changes(_body(), creating=False)
    _check_consecutive(
        changes.get("consecutive_failures", record.consecutive_failures), changes.get("keep_runs", record.keep_runs)
    )
    if ("urls" in changes or "source" in changes) and record.options.get("rows"):
        # Per-URL expectations and meta were the old list's, index by index.
        changes["options"] = {k: v for k, v in changes.get("options", record.options).items() if k != "rows"}
    paused = changes.get("paused", record.paused)
    if paused:
        changes["next_run_at"] = None
    elif "schedule" in changes or record.paused:
        changes["next_run_at"] = Schedule.parse(changes.get("schedule", record.schedule), 0).first_after(time.time())
    if not services().store.change_list(list_id, changes):
        raise ApiError(404, "not_found", f"no watch list with id {list_id!r}")
    changed = _list_or_404(list_id)
    if changed.keep_runs < record.keep_runs:  # a lower keep_runs holds now, not after the next run
        _scheduler().prune(changed)
    _scheduler().wake()
    return list_json(changed)


@bp.delete("/lists/<list_id>")
def delete_list(list_id: str):
    """Delete a watch list; its runs stay, as batches of no list."""
    if not services().store.delete_list(list_id):
        raise ApiError(404, "not_found", f"no watch list with id {list_id!r}")
    _scheduler().wake()
    return Response(status=204)


@bp.post("/lists/<list_id>/run")
def run_list(list_id: str):
    """Run a list now (its schedule is unchanged); 409 while its previous run is still going."""
    record = _list_or_404(list_id)
    _refuse_if_store_fails()
    record.options = {**record.options, "origin": request.url_root.rstrip("/")}  # its dashboard_url, as a rerun's
    outcome = _scheduler().run(record)
    if outcome.batch_id is None:
        if outcome.code == "busy":  # the server's load, not the list's fault: nothing is noted on the list
            raise ApiError(
                503,
                "busy",
                f"watch list {list_id} was not run: {outcome.message}",
                headers=(("Retry-After", str(BUSY_RETRY_AFTER)),),
            )
        if outcome.skipped != "overlap":  # the list's own failure: shown with the list, as a scheduled one is
            services().store.note_skipped(record.id, time.time(), outcome.message)
        code = {"overlap": "still_running", "source": outcome.code}.get(outcome.skipped or "", "invalid_options")
        raise ApiError(409, code, f"watch list {list_id} was not run: {outcome.message}")
    response = current_app.json.response(batch_json(_batch_or_404(outcome.batch_id)))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_batch", batch_id=outcome.batch_id)
    return response


@bp.get("/lists/<list_id>/runs")
def list_runs(list_id: str):
    """A list's runs, newest first, each with its verdict and what changed from the run before (`limit`)."""
    record = _list_or_404(list_id)
    limit = _int_arg("limit", 20, 1, MAX_RUNS_LIMIT)
    runs = []
    for view in _recent(record, limit):
        shown = batch_json(view, listed=True)
        shown["diff_summary"] = _diff_summary(view)
        runs.append(shown)
    return {
        "list_id": record.id,
        "runs": runs,
        "skipped": _skipped(record),
    }


@bp.get("/lists/<list_id>/deliveries")
def list_deliveries(list_id: str):
    """The notifications of a list's runs, newest first (`limit`), each with its status and tries."""
    record = _list_or_404(list_id)
    limit = _int_arg("limit", 100, 1, 1000)
    found = services().store.list_deliveries(record.id, limit)
    return {"list_id": record.id, "deliveries": [delivery_json(delivery) for delivery in found]}
