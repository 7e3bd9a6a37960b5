"""One JSON error envelope for the whole API: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the API answers with its status, a stable code, a message and details."""

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, headers: tuple[tuple[str, str], ...] = ()
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers  # sent with the answer (a 503's Retry-After)


class Refusal(NamedTuple):
    """A request refused before it reaches a view: status, error code, message and the headers the answer carries."""

    status: int
    code: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()


def envelope(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The one error body: HTTP answers, websocket refusals before the upgrade and websocket error messages."""
    return {"error": {"code": code, "message": message, "details": details or []}}


def error_response(status: int, code: str, message: str, details: Any = None):
    """Build the JSON error response."""
    response = jsonify(envelope(code, message, details))
    response.status_code = status
    return response


def refusal_response(refusal: Refusal, details: Any = None):
    """A Refusal as an HTTP answer."""
    response = error_response(refusal.status, refusal.code, refusal.message, details)
    for name, value in refusal.headers:
        response.headers[name] = value
    return response


# Paths only programs use: they get JSON errors (a 401, never a redirect to the login page).
MACHINE_PATHS = ("/api/", "/ws/", "/metrics", "/healthz", "/readyz")


def wants_json() -> bool:
    """API, websocket, metrics and probe paths always answer JSON; pages answer what the browser accepts."""
    return request.path.startswith(MACHINE_PATHS) or not request.accept_mimetypes.accept_html


def init_app(app: Flask) -> None:
    """Register the handlers that turn every error into the envelope."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return refusal_response(Refusal(exc.status, exc.code, exc.message, exc.headers), exc.details)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if not wants_json():
            if exc.code == 404:  # the dashboard's own page, with its header and a way back
                return render_template("404.html", what=f"Nothing lives at {request.path}."), 404
            return exc
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"request body is larger than {limit} bytes (GREENBATCH_MAX_REQUEST_BYTES)"
        response = error_response(exc.code or 500, code, message)
        if exc.code == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server hit an unexpected error; it is logged")
