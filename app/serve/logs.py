"""Logging for the server: one setup, text or JSON lines (GREENBATCH_LOG_FORMAT), and the access line.

Every line goes to stderr through `logging`: ours, Flask's, gevent's greenlet errors, Python warnings
and one access line per HTTP request (websockets when they end). In JSON each line is one object:
{"ts", "level", "logger", "msg", ...extra}, where extra is whatever the call passed as `extra=`
(the engine passes `batch_id` and `status` on every batch transition; access lines carry `method`,
`path`, `status`, `bytes`, `duration_ms`, `client`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from typing import Any
from urllib.parse import unquote_plus

from ..core.config import Config

ACCESS_LOGGER = "greenbatch.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# Websocket clients may put their token in the query string; it must never reach a log. The gate reads
# the query with parse_qs, which decodes names (`%74oken` is `token`), so names are compared decoded.
SECRET_PARAMETERS = frozenset({"token", "access_token"})


def timestamp(created: float) -> str:
    """A record's time as UTC ISO 8601 with milliseconds, like every timestamp greenbatch emits."""
    stamp = dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line (values JSON cannot hold are written as their str())."""
        entry: dict[str, Any] = {
            "ts": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for GREENBATCH_LOG_FORMAT."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(config: Config) -> None:
    """Send every log line to stderr in the configured format and level (replacing earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(config.log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.log_level.upper())
    logging.captureWarnings(True)


def announce(config: Config, message: str, **fields: Any) -> None:
    """Print a line scripts read on stdout (such as where the server listens), in the log format, at any level."""
    if config.log_format == "json":
        line = json.dumps(
            {"ts": timestamp(time.time()), "level": "info", "logger": "greenbatch", "msg": message, **fields}
        )
    else:
        line = message
    print(line, flush=True)


def route_gevent_errors() -> None:
    """Log errors of greenlets nobody waits for through `logging` rather than gevent's raw stderr prints."""
    import gevent

    hub = gevent.get_hub()
    hub_log = logging.getLogger("gevent.hub")

    def print_exception(context: Any, kind: type, value: BaseException | None, tb: Any) -> None:
        if context is not None and not isinstance(context, str):
            try:
                context = hub.format_context(context)
            except Exception:  # noqa: BLE001 - a broken repr must not hide the error itself
                context = object.__repr__(context)
        hub_log.error(
            "%s failed with %s",
            context or "the gevent hub",
            getattr(kind, "__name__", kind),
            exc_info=(kind, value, tb) if value is not None else None,
        )

    hub.print_exception = print_exception


def redact(target: str) -> str:
    """A request target with the value of every query parameter whose decoded name is `token` hidden."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    fields = query.split("&")  # parse_qs's only separator
    for number, field in enumerate(fields):
        name, equals, _ = field.partition("=")
        # Decoded as parse_qs decodes a name; case and spaces ignored, so anything like a token is hidden.
        if equals and unquote_plus(name).strip().lower() in SECRET_PARAMETERS:
            fields[number] = name + "=[redacted]"
    return path + "?" + "&".join(fields)


def log_access(handler: Any) -> None:
    """One access line for a request a pywsgi handler served (a websocket is logged when it ends).

    The client is REMOTE_ADDR as the app saw it, so for a request through a trusted proxy
    (GREENBATCH_PROXY_HOPS, GREENBATCH_TRUSTED_PROXIES) it is the address from X-Forwarded-For.
    """
    environ = getattr(handler, "environ", None) or {}
    status_text = str(getattr(handler, "_orig_status", None) or getattr(handler, "status", None) or "000")
    try:
        status = int(status_text.split()[0])
    except ValueError:
        status = 0
    started, finished = getattr(handler, "time_start", None), getattr(handler, "time_finish", None)
    duration_ms = round((finished - started) * 1000, 1) if started and finished else None
    client = environ.get("REMOTE_ADDR") or _peer(getattr(handler, "client_address", None))
    method = getattr(handler, "command", None) or environ.get("REQUEST_METHOD") or "-"
    path = redact(getattr(handler, "path", None) or environ.get("PATH_INFO") or "-")
    size = getattr(handler, "response_length", 0) or 0
    level = logging.WARNING if status >= 500 else logging.INFO
    fields = {
        "client": client,
        "method": method,
        "path": path,
        "status": status,
        "bytes": size,
        "duration_ms": duration_ms,
        "user_agent": environ.get("HTTP_USER_AGENT"),
    }
    logging.getLogger(ACCESS_LOGGER).log(
        level,
        '%s "%s %s" %s %s B %s ms',
        client,
        method,
        path,
        status,
        size,
        "-" if duration_ms is None else duration_ms,
        extra=fields,
    )


def _peer(address: Any) -> str:
    """The socket peer's address as text."""
    if isinstance(address, tuple):
        return str(address[0])
    return str(address or "-")
