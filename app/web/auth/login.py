"""The sign-in and sign-out pages (blueprint "auth"): a valid token typed into the form sets the login cookie,
a logout ends it in the browser and on the server, and either goes back only to a path on this site.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, make_response, redirect, render_template, request, session, url_for

from ..errors import error_response
from .access import rules_of_current
from .session import CSRF_HEADER, CSRF_HEADER_VALUE, csrf_header_sent, csrf_ok
from .throttle import FailedTokens, failures_of

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)


def safe_next(value: str | None) -> str:
    """A local path to return to after login; anything that could lead off this site becomes "/"."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):  # browsers drop tabs and newlines: "/\t/evil"
        return "/"
    parts = urlsplit(value)
    return "/" if parts.scheme or parts.netloc else value


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The sign-in form (GET) and its check (POST): a valid token sets the session cookie."""
    rules = rules_of_current()
    next_path = safe_next(request.values.get("next"))
    if not rules.enabled or rules.session_ok(session):
        return redirect(request.script_root + next_path, 303)
    if request.method == "GET":
        return _login_page(next_path)
    if not csrf_ok(request.form.get("csrf_token")):
        return _login_page(
            next_path, "This form expired, or your browser blocked its cookie. Reload the page and try again.", 400
        )
    token = request.form.get("token", "").strip()  # pasted tokens often bring a newline
    client, failures = request.remote_addr or "-", failures_of(current_app)
    wait = failures.wait(client)
    if wait:
        log.warning("login refused for %s: too many invalid tokens lately", client)
        later = f"{wait} seconds" if wait < 90 else f"{math.ceil(wait / 60)} minutes"
        return _retry_after(
            make_response(
                _login_page(next_path, f"Too many invalid tokens came from your address. Try again in {later}.", 429)
            ),
            failures,
            client,
        )
    if not rules.token_ok(token):
        failures.failed(client)
        log.warning("login refused for %s: the token typed is not one of the configured API tokens", client)
        return _login_page(next_path, "That token is not valid.", 401)
    session.clear()
    session.permanent = True
    session["auth"] = rules.session_mark(token)
    session["sid"] = secrets.token_urlsafe(16)  # what a logout ends, for every copy of this cookie
    session["since"] = time.time()
    session["csrf"] = secrets.token_urlsafe(32)
    log.info("login from %s", request.remote_addr)
    return redirect(request.script_root + next_path, 303)


def _login_page(next_path: str, error: str = "", status: int = 200):
    """The sign-in form; `next_path` (app-relative) is where a successful login goes."""
    return render_template("login.html", next=next_path, error=error), status


def _retry_after(response: Response, failures: FailedTokens, client: str) -> Response:
    """A 429 answer to a client sending too many invalid tokens, told when to come back."""
    response.headers["Retry-After"] = str(failures.wait(client))
    return response


@bp.post("/logout")
def logout():
    """End the session (a form with `csrf_token`, or a script sending the CSRF header) and go to the login:
    in the browser, and on the server, so copies of the cookie stop working too."""
    rules = rules_of_current()
    if rules.enabled:
        if not (csrf_ok(request.form.get("csrf_token")) or csrf_header_sent()):
            return error_response(
                403,
                "csrf_token_missing",
                f"logout needs the form's csrf_token field or the header '{CSRF_HEADER}: {CSRF_HEADER_VALUE}'",
            )
        session_id = session.get("sid")
        if isinstance(session_id, str):
            rules.ended.end(session_id)
            log.info("logout from %s", request.remote_addr)
        session.clear()
    return redirect(url_for("auth.login"), 303)
