"""The dashboard pages: the submit form with the batch list, and one batch's live view.

Templates hand every server URL to the page scripts through data-* attributes built with url_for,
so a path prefix (SCRIPT_NAME behind a proxy) works and no script assembles URLs from `location`.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request, url_for

from . import openapi
from .services import services
from .views import batch_json

bp = Blueprint("pages", __name__)

# Page scripts swap this for a real batch id in URL templates (batch ids are hex, so it never collides).
ID_PLACEHOLDER = "__id__"


def ws_url(endpoint: str, **values: str) -> str:
    """The ws:// or wss:// URL of a websocket route, or "" when no such route is registered (pages poll then)."""
    if endpoint not in current_app.view_functions:
        return ""
    url = url_for(endpoint, _external=True, **values)
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url


@bp.get("/")
def index():
    """Submit a batch; below, every batch with live progress."""
    config = current_app.config["GREENBATCH"]
    urls = {
        "api-batches": url_for("api.create_batch"),
        "api-preview": url_for("api.preview_source"),
        "api-batch": url_for("api.get_batch", batch_id=ID_PLACEHOLDER),
        "batch-page": url_for("pages.batch", batch_id=ID_PLACEHOLDER),
        "ws-url": ws_url("stream.batches_ws"),
    }
    return render_template("index.html", urls=urls, settings=config)


@bp.get("/batches/<batch_id>")
def batch(batch_id: str):
    """One batch: progress, throughput, latency, breakdowns and its results, live while it runs."""
    view = services().reader.get(batch_id)
    if view is None:
        return render_template("404.html", what=f"No batch with id {batch_id}."), 404
    shown = batch_json(view)
    urls = {
        "batch-id": view.id,
        "api-batch": url_for("api.get_batch", batch_id=view.id),
        "api-events": url_for("api.events", batch_id=view.id),
        "api-cancel": url_for("api.cancel_batch", batch_id=view.id),
        "api-rerun": url_for("api.rerun_batch", batch_id=view.id),
        "batch-page": url_for("pages.batch", batch_id=ID_PLACEHOLDER),
        "index-page": url_for("pages.index"),
        "ws-url": ws_url("stream.batch_ws", batch_id=view.id),
    }
    return render_template("batch.html", batch=shown, urls=urls)


@bp.get("/lists")
def lists():
    """Every watch list: its last verdict, failures per run, its next run; and a form for a new one, prefilled
    from a batch (?from_batch=<id>: "Save as watch list" on its page)."""
    from_batch = request.args.get("from_batch")
    source = services().reader.get(from_batch) if from_batch else None
    urls = {
        "api-lists": url_for("lists.all_lists"),
        "api-preview": url_for("api.preview_source"),
        "list-page": url_for("pages.watch_list", list_id=ID_PLACEHOLDER),
        "batch-page": url_for("pages.batch", batch_id=ID_PLACEHOLDER),
    }
    return render_template("lists.html", urls=urls, source=source, settings=current_app.config["GREENBATCH"])


@bp.get("/lists/<list_id>")
def watch_list(list_id: str):
    """One watch list: its schedule and its runs, each with what changed from the run before."""
    record = services().store.get_list(list_id)
    if record is None:
        return render_template("404.html", what=f"No watch list with id {list_id}."), 404
    urls = {
        "api-list": url_for("lists.get_list", list_id=list_id),
        "api-runs": url_for("lists.list_runs", list_id=list_id),
        "api-run": url_for("lists.run_list", list_id=list_id),
        "batch-page": url_for("pages.batch", batch_id=ID_PLACEHOLDER),
        "lists-page": url_for("pages.lists"),
    }
    return render_template("list.html", name=record.name, urls=urls)


@bp.get("/api")
def api_docs():
    """The JSON API for people: each endpoint with what it does, from the OpenAPI description, and a link to it."""
    document = openapi.document(current_app.config["GREENBATCH"], request.script_root or "/")
    endpoints = [
        {"method": method.upper(), "path": request.script_root + path, "summary": operation["summary"]}
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]
    links = {"openapi": url_for("openapi.description"), "index": url_for("api.index")}
    return render_template("api.html", endpoints=endpoints, links=links, info=document["info"])
