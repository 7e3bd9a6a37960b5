"""The OpenAPI 3.1 description of the JSON API, served at /api/v1/openapi.json.

Built in Python from the server's own settings (so limits such as the most URLs in a batch are the
ones this server enforces), with each operation's summary taken from its view's docstring.
tests/test_openapi.py checks that every route under /api/v1 is here with its methods, and runs
schemathesis against a live server to check that answers match these schemas.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from flask import Blueprint, current_app, request

from ..core import verdict
from ..core.checks import DEFAULT_CHECK_BYTES, MAX_CHECK_BYTES, REGEX_TIMEOUT
from ..core.checks import MAX_CHECKS as CHECKS_MAX
from ..core.checks import OPS as CHECK_OPS
from ..core.config import Config
from ..core.options import (
    CLIENT_HEADERS,
    CLIENTS,
    DEFAULT_HEAD_FALLBACK_STATUSES,
    DEFAULT_RETRY_STATUSES,
    MAX_ACCEPT_RANGES,
    MAX_ACCEPT_STATUS_CHARS,
    MAX_CAPTURE_HEADERS,
    MAX_CONSECUTIVE_FAILURES,
    MAX_HEADER_NAME,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_HEADERS_TOTAL,
    MAX_NOTIFY_TARGETS,
    MAX_SECRET_CHARS,
    MAX_STATUS_LIST,
    MAX_THRESHOLD_MS,
    METHODS,
    MIN_SECRET_CHARS,
    NOTIFY_ON,
    BatchOptions,
)
from ..core.results import BATCH_STATUSES, ERROR_KINDS
from ..core.sources import MAX_PATTERN, SOURCE_TYPES
from ..core.urllist import MAX_REMAP
from ..runs.certificates import LISTED_URLS
from ..runs.diff import DEFAULT_FACTOR, LISTED_BY_DEFAULT, MAX_FACTOR, PENDING
from ..runs.diff import KEYS as DIFF_KEYS
from ..runs.diff import KINDS as DIFF_KINDS
from ..runs.engine import MAX_RUNNING_LISTED
from ..runs.hosts import HOST_FIELDS
from ..runs.store.base import MAX_SEARCH, OUTCOMES, RESULT_SORTS
from ..runs.store.outbox import DELIVERY_STATES
from .exports import FORMATS

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")

API = "/api/v1"
API_VERSION = "1"
JSON = "application/json"
TIMESTAMP = {"type": "string", "format": "date-time", "description": "UTC, ISO 8601 with milliseconds."}
# A header value: no control character but tab, and no space or tab at either end.
VALUE_PATTERN = r"^([^\x00-\x20\x7f-\x9f]([^\x00-\x08\x0a-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f])?)?$"
ID_PARAM = {
    "name": "batch_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The batch id (12 hex digits).",
}


def ref(name: str) -> dict[str, str]:
    """A reference to a schema under components."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A response with a JSON body."""
    return {"description": description, "content": {JSON: {"schema": schema}}}


def error(description: str) -> dict[str, Any]:
    """A response with the error envelope."""
    return json_body(ref("Error"), description)


def busy(description: str) -> dict[str, Any]:
    """A 503 with the error envelope and a Retry-After."""
    return {
        **error(description),
        "headers": {
            "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before trying again."}
        },
    }


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


# -- schemas ---------------------------------------------------------------------------------

BATCH_LINKS = {
    "self": "This batch in JSON.",
    "page": "The batch's live page in the dashboard.",
    "results": "Its results, a page at a time.",
    "events": "Its event log (what the live page replays).",
    "csv": "Every result as a CSV download.",
    "ndjson": "Every result as NDJSON (one JSON object a line).",
    "json": "Every result as one JSON array.",
}


# A batch's capture option as submitted and as stored (app/core/options.py).
CAPTURE = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "properties": {
        "tls": {"type": "boolean", "description": "Record the TLS connection and the server's certificate."},
        "headers": {
            "type": "array",
            "maxItems": MAX_CAPTURE_HEADERS,
            "items": {"type": "string", "pattern": "^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$", "maxLength": MAX_HEADER_NAME},
            "description": "Response headers to record (names stored lowercase), each value cut to 1 KiB.",
        },
    },
    "description": "What each hop records of the server: remote_ip, http_version, server and the listed headers "
    "(and tls with tls true). Null (the default) records nothing.",
}
TLS_INFO = {
    "type": ["object", "null"],
    "description": "Over https, with capture.tls: the connection and the server's certificate (null over http).",
    "properties": {
        "version": {"type": ["string", "null"]},
        "cipher": {"type": ["string", "null"]},
        "issuer": {"type": "string"},
        "subject": {"type": "string"},
        "sans": {
            "type": "array",
            "items": {"type": "string", "maxLength": 253},
            "description": "DNS names (each cut at 253 characters), then IP addresses, at most 4,096 characters of "
            "them: IP addresses first, then DNS names in the certificate's order; the name that matched the host "
            "is always kept.",
        },
        "sans_omitted": {"type": "integer", "minimum": 0, "description": "The SANs past 4,096 characters, left out."},
        "not_before": {"type": "string", "format": "date-time"},
        "not_after": {"type": "string", "format": "date-time"},
        "days_left": {
            "type": "integer",
            "description": "Whole days from the fetch to not_after; negative once expired.",
        },
        "name_match": {"type": "boolean", "description": "Whether the certificate names the URL's host."},
        "chain_valid": {
            "type": ["boolean", "null"],
            "description": "Whether the chain verified against the trusted CAs; null when it was not checked "
            "(tls_verify false with the requests client).",
        },
        "fingerprint": {"type": "string", "description": "SHA-256 of the certificate (DER), hex."},
        "problems": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Why the certificate would not verify (only with tls_verify false can a fetched one have any).",
        },
    },
}
CAPTURED = {
    "remote_ip": {"type": ["string", "null"], "description": "With capture: the address spoken to."},
    "http_version": {"type": ["string", "null"], "description": "With capture: the protocol the server answered in."},
    "server": {"type": ["string", "null"], "description": "With capture: the Server header (at most 1 KiB)."},
    "headers": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "With capture: the listed headers the response had, by lowercase name (values at most 1 KiB).",
    },
    "tls": TLS_INFO,
}


STATUS_SPEC = {
    "type": ["integer", "string"],
    "examples": [301, "301,308", "2xx"],
    "description": "A status, or statuses and ranges like accept_status's.",
}
EXPECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "status": {**STATUS_SPEC, "description": "The FIRST response's status. " + STATUS_SPEC["description"]},
        "final_url": {
            "type": "string",
            "description": "Where the last hop lands (a path resolves against target_base_url, else base_url).",
        },
        "final_status": {**STATUS_SPEC, "description": "The LAST response's status. " + STATUS_SPEC["description"]},
        "max_hops": {"type": "integer", "minimum": 0, "description": "Most redirects followed."},
    },
}


def verdict_options(config: Config) -> dict[str, Any]:
    """The options that say what a result means (app/core/verdict.py), as a request gives them."""
    base = {"type": "string", "maxLength": config.max_url_length, "format": "uri"}
    return {
        "expect": {
            **EXPECT_SCHEMA,
            "description": "Expectations of every row; a row's own (a `urls` object's, a CSV's columns) win. A row "
            "with expectations is decided by them, not by accept_status.",
        },
        "url_match": {
            "type": "string",
            "enum": list(verdict.URL_MATCHES),
            "description": "How final_url is compared; scheme and host ignore case, default ports are dropped.",
        },
        "warn_as": {
            "type": "object",
            "propertyNames": {"enum": list(verdict.WARNING_KINDS)},
            "additionalProperties": {"enum": list(verdict.WARN_AS_CHOICES)},
            "description": "The outcome each warning kind gives a row (warn when not named).",
        },
        "thresholds": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "failed_rate": {"type": "number", "minimum": 0, "maximum": 1, "description": "At most."},
                "warn_rate": {"type": "number", "minimum": 0, "maximum": 1, "description": "At most."},
                **{
                    f"p{p}_ms": {"type": "number", "minimum": 0, "maximum": MAX_THRESHOLD_MS, "description": "At most."}
                    for p in (50, 90, 95, 99)
                },
                "min_ok": {"type": "integer", "minimum": 0, "description": "At least this many ok (warn counts)."},
            },
            "description": "What the batch's verdict requires.",
        },
        "checks": {
            "type": "array",
            "maxItems": CHECKS_MAX,
            "description": "Checks on each response (a row's own `checks` add to them, numbered on: check[i]). "
            "A check that cannot be evaluated (the body is not JSON, a header is missing) fails; regular "
            f"expressions run at most {int(REGEX_TIMEOUT * 1000)} ms a search.",
            "items": {
                "type": "object",
                "required": ["source", "op"],
                "additionalProperties": False,
                "properties": {
                    "source": {"type": "string", "enum": list(CHECK_OPS)},
                    "op": {
                        "type": "string",
                        "description": "; ".join(f"{source}: {', '.join(ops)}" for source, ops in CHECK_OPS.items()),
                    },
                    "value": {
                        "description": "Text, a regular expression (matches), a number (time.* in ms, "
                        "size in bytes, json < >) or any JSON value (json == !=)."
                    },
                    "path": {"type": "string", "description": "A JSONPath (RFC 9535), for source json."},
                    "name": {"type": "string", "description": "A header name, for source header."},
                    "max_bytes": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_CHECK_BYTES,
                        "default": DEFAULT_CHECK_BYTES,
                        "description": "Sources body and json: a body check searches this many bytes of the body "
                        "at most; a json check fails, unparsed, on a longer body.",
                    },
                },
            },
        },
        "base_url": {**base, "description": "Rows may give paths (/old-post), resolved against it."},
        "target_base_url": {
            **base,
            "description": "What an expected final_url path resolves against (default: base_url).",
        },
    }


def notify_options(config: Config, shown: bool) -> dict[str, Any]:
    """The notification options (app/runs/notify.py), as a request gives them or (`shown`) as a batch shows them."""
    url = {"type": "string", "maxLength": config.max_url_length, "format": "uri"}
    secret = (
        {"type": "string", "description": 'Cut short: "..." and its last 4 characters (none of a short one).'}
        if shown
        else {
            "type": "string",
            "minLength": MIN_SECRET_CHARS,
            "maxLength": MAX_SECRET_CHARS,
            "description": "Signs each delivery (X-Greenbatch-Signature); never shown back in full.",
        }
    )
    shown_url = (
        "Its scheme, host and port and the last 4 characters of its path (a Slack, Discord, Zapier or Teams URL's "
        "path is its secret), whatever its type; never user info or query."
        if shown
        else ""
    )
    target = {
        "oneOf": [
            {
                "type": "object",
                "required": ["type", "url", "secret"],
                "additionalProperties": False,
                "properties": {
                    "type": {"const": "webhook"},
                    "url": {**url, "description": "Receives a signed POST of the batch.finished payload. " + shown_url},
                    "secret": secret,
                },
            },
            {
                "type": "object",
                "required": ["type", "url"],
                "additionalProperties": False,
                "properties": {
                    "type": {"const": "slack"},
                    "url": {**url, "description": "A Slack-compatible incoming webhook. " + shown_url},
                },
            },
        ]
    }
    return {
        "notify": {
            "type": "array",
            "maxItems": MAX_NOTIFY_TARGETS,
            "items": target,
            "description": "Who is told when the batch ends. Each URL passes the SSRF guard when submitted (400 "
            "with the guard's reason) and again when sent.",
        },
        "notify_on": {
            "type": "string",
            "enum": list(NOTIFY_ON),
            "default": "always",
            "description": "change: the diff against parent_id has any kind but unchanged or faster; failure: the "
            "verdict fails or a URL newly failed. Without a parent_id every run is a change.",
        },
        "consecutive_failures": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": MAX_CONSECUTIVE_FAILURES,
            "description": "Notify only when some URL failed in this many runs in a row (this batch and its "
            "parent_id ancestors, URLs aligned by url).",
        },
    }


def schemas(config: Config) -> dict[str, Any]:
    """Every schema of the API; request limits are this server's settings."""
    number_or_null = {"type": ["number", "null"]}
    options = {
        "type": "object",
        "description": "The options a batch runs with, defaults filled in.",
        "required": [
            "concurrency",
            "timeout",
            "connect_timeout",
            "method",
            "headers",
            "max_redirects",
            "max_bytes",
            "retries",
            "accept_status",
            "per_host",
        ],
        "properties": {
            "concurrency": {"type": "integer"},
            "timeout": {"type": "number"},
            "connect_timeout": {"type": "number"},
            "method": {"type": "string", "enum": list(METHODS)},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "max_redirects": {"type": "integer"},
            "max_bytes": {"type": "integer"},
            "retries": {"type": "integer"},
            "accept_status": {"type": "string"},
            "per_host": {"type": "integer"},
            "client": {"type": "string", "description": "Absent on batches stored before clients could be chosen."},
            # Absent on batches stored before polite batches (issue 18), like client.
            "per_host_interval": {"type": "number"},
            "retry_statuses": {"type": "array", "items": {"type": "integer"}},
            "respect_retry_after": {"type": "boolean"},
            "max_retry_after": {"type": "number"},
            "head_fallback_statuses": {"type": "array", "items": {"type": "integer"}},
            "capture": {**CAPTURE, "description": "Absent on batches stored before capture existed."},
            "tls_verify": {"type": "boolean", "description": "Absent on batches stored before it existed (true)."},
            **{
                name: {**schema, "description": "Present only when the batch set it. " + schema.get("description", "")}
                for name, schema in (verdict_options(config) | notify_options(config, shown=True)).items()
            },
        },
    }
    # Lists carry many batches: header values (up to 16 KiB a batch) stay on GET /batches/{id}.
    listed_options = {
        **options,
        "description": "The options a batch runs with, as lists show them: `header_names` instead of `headers`.",
        "required": [*(name for name in options["required"] if name != "headers"), "header_names"],
        "properties": {
            **{k: v for k, v in options["properties"].items() if k != "headers"},
            "header_names": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Names of the headers the batch sends; GET /api/v1/batches/{batch_id} has their values.",
            },
        },
    }
    batch = {
        "type": "object",
        "required": [
            "id",
            "name",
            "status",
            "created_at",
            "started_at",
            "finished_at",
            "parent_id",
            "list_id",
            "source",
            "options",
            "counts",
            "stats",
            "verdict",
            "last_seq",
            "links",
        ],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "status": {"type": "string", "enum": list(BATCH_STATUSES)},
            "created_at": TIMESTAMP,
            "started_at": nullable(TIMESTAMP),
            "finished_at": nullable(TIMESTAMP),
            "parent_id": {
                "type": ["string", "null"],
                "description": "The batch this one reruns, or the previous run of its watch list.",
            },
            "list_id": {"type": ["string", "null"], "description": "The watch list this batch is a run of."},
            "source": nullable(ref("Source")),
            "options": ref("Options"),
            "counts": ref("Counts"),
            "stats": ref("Stats"),
            "verdict": nullable(
                {
                    "type": "object",
                    "required": ["pass", "violations"],
                    "description": "Null while the batch runs. With thresholds, it passes when none is broken; "
                    "without, when no row failed. A batch with cancelled rows never passes (a violation with "
                    'threshold "cancelled", limit 0 and actual the number of cancelled rows).',
                    "properties": {
                        "pass": {"type": "boolean"},
                        "violations": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["threshold", "limit", "actual"],
                                "properties": {
                                    "threshold": {"type": "string", "examples": ["failed_rate", "p95_ms"]},
                                    "limit": {"type": "number"},
                                    "actual": {"type": ["number", "null"]},
                                },
                            },
                        },
                    },
                }
            ),
            "last_seq": {"type": "integer", "description": "Newest event number; pass it as `after` to follow."},
            "links": {
                "type": "object",
                "required": list(BATCH_LINKS),
                "properties": {name: {"type": "string", "description": what} for name, what in BATCH_LINKS.items()},
                "description": "Paths of this batch's resources (with the proxy's path prefix).",
            },
        },
    }
    listed_batch = {
        **batch,
        "description": "A batch as lists show it: its options without header values.",
        "properties": {**batch["properties"], "options": ref("ListedOptions")},
    }
    return {
        "Error": {
            "type": "object",
            "description": "Every API error: a stable `code`, a message for people, and details naming each field "
            "at fault (and a URL by its `index`).",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string", "examples": ["invalid_urls", "not_found"]},
                        "message": {"type": "string"},
                        "details": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "field": {"type": "string", "examples": ["urls[3]", "options.timeout"]},
                                    "index": {
                                        "type": "integer",
                                        "description": "A URL's position in the submitted list, from 0.",
                                    },
                                    "url": {},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                }
            },
        },
        "ApiIndex": {
            "type": "object",
            "required": ["name", "version", "links"],
            "properties": {
                "name": {"type": "string", "const": "greenbatch"},
                "version": {"type": "string", "description": "The API's version (the 1 of /api/v1)."},
                "links": {
                    "type": "object",
                    "required": ["batches", "openapi", "docs", "healthz"],
                    "properties": {
                        "batches": {"type": "string", "description": "Submit (POST) and list (GET) batches."},
                        "openapi": {"type": "string", "description": "This description."},
                        "docs": {"type": "string", "description": "The API's page for people."},
                        "healthz": {"type": "string", "description": "Liveness probe."},
                    },
                },
            },
        },
        "NewBatch": {
            "type": "object",
            "description": "The URLs as a list (`urls`), or where to read them (`source`): one of the two.",
            "oneOf": [{"required": ["urls"]}, {"required": ["source"]}],
            "additionalProperties": False,
            "properties": {
                "source": ref("SourceInput"),
                "urls": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": config.max_urls,
                    "items": {
                        "oneOf": [
                            {"type": "string", "maxLength": config.max_url_length},
                            {
                                "type": "object",
                                "required": ["url"],
                                "additionalProperties": False,
                                "properties": {
                                    "url": {"type": "string", "maxLength": config.max_url_length},
                                    "expect": EXPECT_SCHEMA,
                                    "meta": {
                                        "type": "object",
                                        "maxProperties": 50,
                                        "description": "Kept and shown with the result. A batch has at most 50 "
                                        "distinct meta keys over all its items (400 past them).",
                                    },
                                    "checks": {
                                        "type": "array",
                                        "description": "This row's checks, after the batch's (see options.checks).",
                                    },
                                },
                            },
                        ]
                    },
                    "description": "http(s) URLs (or paths, with options.base_url), each a string or an object "
                    "with the row's own expectations and meta; each must pass the URL checks, and an address or "
                    "localhost host this server's fetch policy would block is refused too, or the batch is "
                    "refused, naming every bad URL by its index (from 0).",
                },
                "name": nullable(
                    {
                        "type": "string",
                        "maxLength": 200,
                        "description": "Without one, the batch is named for its first URL's host "
                        '("example.com and 2 other hosts").',
                    }
                ),
                "options": nullable(ref("OptionsInput")),
            },
        },
        "OptionsInput": {
            "type": "object",
            "additionalProperties": False,
            "description": "Any subset of the options; the rest take the server's defaults.",
            "properties": {
                "concurrency": {"type": "integer", "minimum": 1, "maximum": config.max_concurrency},
                "timeout": {
                    "type": "number",
                    "minimum": 0.1,
                    "maximum": config.max_timeout,
                    "description": "Total deadline per URL (seconds), all hops and retries included.",
                },
                "connect_timeout": {"type": "number", "minimum": 0.1, "maximum": config.max_timeout},
                "method": {
                    "type": "string",
                    "enum": list(METHODS),
                    "description": "HEAD refuses body, json and size checks (400); HEAD,GET asks with GET when the "
                    "batch has one.",
                },
                "headers": {
                    "type": "object",
                    "maxProperties": MAX_HEADERS,
                    "propertyNames": {"pattern": r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$", "maxLength": MAX_HEADER_NAME},
                    "additionalProperties": {"type": "string", "maxLength": MAX_HEADER_VALUE, "pattern": VALUE_PATTERN},
                    "description": f"Sent with every request. At most {MAX_HEADERS_TOTAL} characters of names "
                    "and values together; values without control characters (tab aside) or "
                    "spaces at either end; one header per name, case ignored; never "
                    f"{', '.join(CLIENT_HEADERS)} (the client sets those).",
                },
                "max_redirects": {"type": "integer", "minimum": 0, "maximum": config.max_redirects},
                "max_bytes": {"type": "integer", "minimum": 0, "maximum": config.max_body_bytes},
                "retries": {"type": "integer", "minimum": 0, "maximum": config.max_retries},
                "accept_status": {
                    "type": "string",
                    "maxLength": MAX_ACCEPT_STATUS_CHARS,
                    "examples": ["200-399", "200-299,404", "2xx,3xx"],
                    "description": f"Statuses (100-599), ranges and classes (2xx) that count as ok, at most "
                    f"{MAX_ACCEPT_RANGES}; stored merged and sorted "
                    "('404,200-299,250-310' becomes '200-310,404').",
                },
                "per_host": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": config.max_concurrency,
                    "description": "Most fetches in flight to one host; 0 for no cap.",
                },
                "client": {"type": "string", "enum": list(CLIENTS), "description": "The HTTP client that fetches."},
                "per_host_interval": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": config.max_per_host_interval,
                    "description": "Seconds at least between the starts of two requests to one host (every hop "
                    "and retry counts); 0 for none.",
                },
                "retry_statuses": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 100, "maximum": 599},
                    "maxItems": MAX_STATUS_LIST,
                    "default": list(DEFAULT_RETRY_STATUSES),
                    "description": "Statuses retried like connection errors when `retries` > 0 (also '429,503').",
                },
                "respect_retry_after": {
                    "type": "boolean",
                    "default": True,
                    "description": "A retried status with Retry-After pauses its host that long (not counted "
                    "against `timeout`).",
                },
                "max_retry_after": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": config.max_retry_after,
                    "description": "Longest Retry-After obeyed (seconds); a longer one ends the URL `rate_limited`.",
                },
                "head_fallback_statuses": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 100, "maximum": 599},
                    "maxItems": MAX_STATUS_LIST,
                    "default": list(DEFAULT_HEAD_FALLBACK_STATUSES),
                    "description": "With method HEAD,GET: HEAD answers that send the URL again with GET.",
                },
                "capture": CAPTURE,
                "tls_verify": {
                    "type": "boolean",
                    "default": True,
                    "description": "False: a certificate that does not verify is fetched anyway, its problems "
                    "recorded in tls.problems (with capture.tls), and does not fail the row.",
                },
                **verdict_options(config),
                **notify_options(config, shown=False),
                "webhook": {
                    "type": "object",
                    "required": ["url", "secret"],
                    "additionalProperties": False,
                    "properties": {
                        "url": {"type": "string", "maxLength": config.max_url_length, "format": "uri"},
                        "secret": {"type": "string", "minLength": MIN_SECRET_CHARS, "maxLength": MAX_SECRET_CHARS},
                    },
                    "description": "One more webhook target: the same as a notify entry of type webhook.",
                },
            },
        },
        "Options": options,
        "ListedOptions": listed_options,
        **source_schemas(config),
        **list_schemas(config),
        "Counts": {
            "type": "object",
            "description": "Results by outcome; `ok` counts the results whose `ok` is true (outcome ok or warn), "
            "`warn` those of them that warned.",
            "required": ["total", "pending", "running", "ok", "failed", "cancelled"],
            "properties": {
                **{
                    k: {"type": "integer", "minimum": 0}
                    for k in ("total", "pending", "running", "ok", "failed", "cancelled", "warn")
                },
                "waiting": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "URLs held back by their host's pause (Retry-After or backoff) or the pace its refusals "
                    "taught (not in pending); absent on "
                    "batches stored before it was counted.",
                },
            },
        },
        "Stats": {
            "type": "object",
            "description": "Latency in milliseconds over results that reached the network (null before any).",
            "required": [
                "p50_ms",
                "p90_ms",
                "p99_ms",
                "min_ms",
                "max_ms",
                "mean_ms",
                "by_status",
                "by_error",
                "bytes",
                "histogram",
            ],
            "properties": {
                **{k: number_or_null for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "mean_ms")},
                "by_status": {
                    "type": "object",
                    "additionalProperties": {"type": "integer"},
                    "description": "Results by HTTP status code.",
                },
                "by_error": {
                    "type": "object",
                    "additionalProperties": {"type": "integer"},
                    "description": "Results by error kind.",
                },
                "by_reason": {
                    "type": "object",
                    "additionalProperties": {"type": "integer"},
                    "description": "Results by each rule among their reasons (accept_status, expect.final_url, "
                    "a warning kind, ...).",
                },
                "by_warning": {
                    "type": "object",
                    "additionalProperties": {"type": "integer"},
                    "description": "Results by each kind among their warnings (those warn_as maps to ok too).",
                },
                "bytes": {"type": "integer", "description": "Decoded body bytes over all results."},
                "histogram": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["le_ms", "count"],
                        "properties": {"le_ms": number_or_null, "count": {"type": "integer"}},
                        "description": "Results at most `le_ms` slow (and slower than the bucket before); "
                        "`le_ms` null is the overflow bucket.",
                    },
                },
                "urls_per_s": number_or_null,
            },
        },
        "Batch": batch,
        "ListedBatch": listed_batch,
        "BatchList": {
            "type": "object",
            "required": ["batches", "next_cursor"],
            "properties": {
                "batches": {"type": "array", "items": ref("ListedBatch")},
                "next_cursor": {
                    "type": ["integer", "null"],
                    "description": "Pass as `cursor` for the next page; null on the last.",
                },
            },
        },
        "Result": {
            "type": "object",
            "required": [
                "index",
                "url",
                "final_url",
                "status_code",
                "ok",
                "error",
                "bytes",
                "content_type",
                "redirects",
                "attempts",
                "started_at",
                "finished_at",
                "timings",
            ],
            "properties": {
                "index": {"type": "integer", "description": "Position of the URL in the batch, from 0."},
                "url": {"type": "string"},
                "final_url": {"type": ["string", "null"], "description": "Where the redirects ended."},
                "status_code": {"type": ["integer", "null"]},
                "ok": {"type": "boolean"},
                "error": nullable(
                    {
                        "type": "object",
                        "required": ["kind", "message"],
                        "properties": {
                            "kind": {"type": "string", "enum": list(ERROR_KINDS)},
                            "message": {"type": "string"},
                        },
                    }
                ),
                "bytes": {"type": "integer", "description": "Decoded body bytes read."},
                "content_type": {"type": ["string", "null"]},
                "redirects": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["url", "status"],
                        "properties": {"url": {"type": "string"}, "status": {"type": "integer"}, **CAPTURED},
                    },
                },
                "attempts": {
                    "type": "integer",
                    "description": "Requests made for the URL's answer: 1, plus each retry, plus the GET after a HEAD.",
                },
                "method": {
                    "type": "string",
                    "enum": ["HEAD", "GET"],
                    "description": "The method of the final answer; only in batches with method HEAD,GET.",
                },
                "refused": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Answers with one of the batch's retry_statuses (429, 503) that the URL retried "
                    "after; absent when none.",
                },
                "started_at": nullable(TIMESTAMP),
                "finished_at": nullable(TIMESTAMP),
                "timings": {
                    "type": "object",
                    "additionalProperties": number_or_null,
                    "description": "Milliseconds: total, ttfb, redirect, dns, connect, tls, wait, download "
                    "(null when the step did not happen).",
                },
                "outcome": {
                    "type": "string",
                    "enum": list(verdict.OUTCOMES),
                    "description": "What the result means; `ok` is true for ok and warn. Absent on results stored "
                    "before outcomes.",
                },
                "reasons": {
                    "type": "array",
                    "description": "The rules that decided the outcome (none when ok).",
                    "items": {
                        "type": "object",
                        "required": ["rule", "expected", "actual"],
                        "properties": {
                            "rule": {
                                "type": "string",
                                "examples": ["accept_status", "expect.final_url", "expect.status", "error"],
                                "description": "accept_status, expect.status, expect.final_url, expect.final_status, "
                                "expect.max_hops, error (no response), or a warning kind.",
                            },
                            "expected": {"type": "string"},
                            "actual": {"type": "string", "maxLength": verdict.ACTUAL_CHARS},
                            "hop": {
                                "type": "integer",
                                "description": "Where it diverged: an index into `redirects`, or their count for "
                                "the final response.",
                            },
                        },
                    },
                },
                "warnings": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["kind", "evidence"],
                        "properties": {
                            "kind": {"type": "string", "enum": list(verdict.WARNING_KINDS)},
                            "evidence": {"type": "string", "description": "The header, status or hop that showed it."},
                        },
                    },
                },
                "expect": {
                    **EXPECT_SCHEMA,
                    "description": "The row's effective expectations (the batch's, its own fields winning; "
                    "final_url absolute); absent when it has none.",
                },
                "meta": {
                    "type": "object",
                    "description": "The row's other CSV columns (or its `meta`), in input order; absent when none.",
                },
                **CAPTURED,
            },
        },
        "DeliveryList": {
            "type": "object",
            "required": ["batch_id", "deliveries"],
            "properties": {
                "batch_id": {"type": "string"},
                "deliveries": {
                    "type": "array",
                    "description": "One per notify target, written when the batch ended (none before), in the "
                    "targets' order.",
                    "items": ref("Delivery"),
                },
            },
        },
        "Delivery": {
            "type": "object",
            "required": ["id", "batch_id", "target", "type", "url", "status", "attempts", "tries"],
            "properties": {
                "id": {"type": "integer"},
                "batch_id": {"type": "string"},
                "target": {"type": "integer", "description": "Its entry's index in options.notify."},
                "type": {"type": "string", "enum": ["webhook", "slack"]},
                "url": {"type": "string", "description": "Without user info or query (a Slack path cut short)."},
                "status": {
                    "type": "string",
                    "enum": list(DELIVERY_STATES),
                    "description": "pending (due, or waiting for its next try), sent (a 2xx answer), failed (3 tries "
                    "without one), skipped (notify_on or consecutive_failures said no: see note).",
                },
                "attempts": {"type": "integer", "maximum": 3},
                "last_status_code": {"type": ["integer", "null"]},
                "last_error": {"type": ["string", "null"]},
                "note": {"type": ["string", "null"], "description": "Why it was skipped."},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "next_try_at": {"type": ["string", "null"], "format": "date-time"},
                "tries": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "at": {"type": "string", "format": "date-time"},
                            "status_code": {"type": ["integer", "null"]},
                            "error": {"type": ["string", "null"]},
                            "ms": {"type": "number"},
                        },
                    },
                },
            },
        },
        "NotificationPayload": {
            "type": "object",
            "description": "What a webhook receives when a batch ends: a POST of this JSON with the headers "
            "Content-Type: application/json, X-Greenbatch-Event: batch.finished, X-Greenbatch-Delivery: <delivery_id>, "
            "X-Greenbatch-Timestamp: <unix seconds> and X-Greenbatch-Signature: sha256=<hex HMAC-SHA256, keyed with "
            'the target\'s secret, of the timestamp, a ".", and the raw body>. Check the signature over the raw bytes '
            "before parsing, and refuse an old timestamp (replays). Delivery is at least once: drop a delivery_id "
            "already seen.",
            "required": [
                "event",
                "batch_id",
                "list_id",
                "status",
                "verdict",
                "counts",
                "stats",
                "diff_summary",
                "dashboard_url",
                "delivery_id",
            ],
            "properties": {
                "event": {"const": "batch.finished"},
                "batch_id": {"type": "string"},
                "list_id": {"type": ["string", "null"], "description": "The watch list that ran it, if any."},
                "name": {"type": "string"},
                "parent_id": {"type": ["string", "null"], "description": "The previous run the diff is against."},
                "status": {"type": "string", "enum": ["done", "cancelled", "failed"]},
                "verdict": {
                    "type": "object",
                    "required": ["pass", "violations"],
                    "description": "As the batch's verdict (see Batch).",
                },
                "counts": ref("Counts"),
                "stats": ref("Stats"),
                "diff_summary": {
                    "type": ["object", "null"],
                    "description": "The diff's counts per kind against parent_id; null without one.",
                    "additionalProperties": {"type": "integer"},
                },
                "dashboard_url": {
                    "type": ["string", "null"],
                    "format": "uri",
                    "description": "The batch page: GREENBATCH_PUBLIC_URL's, else the submitting request's host's; "
                    "null when neither is known.",
                },
                "delivery_id": {
                    "type": "string",
                    "description": "<batch_id>-<target index>: the same at every try of this delivery, so a "
                    "receiver that got it twice (a sender died before recording a try) drops the second.",
                },
                "consecutive_failures": {
                    "type": "object",
                    "description": "With options.consecutive_failures: runs looked at, URLs failed in each.",
                    "properties": {"runs": {"type": "integer"}, "urls": {"type": "integer"}},
                },
            },
        },
        "CertificateList": {
            "type": "object",
            "required": ["batch_id", "certificates", "count", "expiring_within_days", "expiring", "next_cursor"],
            "properties": {
                "batch_id": {"type": "string"},
                "certificates": {
                    "type": "array",
                    "description": "One per (host, certificate) the stored results met, final responses and "
                    "redirect hops alike; soonest expiry first (then by host and fingerprint), a page at a time.",
                    "items": {
                        "type": "object",
                        "required": ["host", "issuer", "subject", "not_after", "days_left", "fingerprint", "urls"],
                        "properties": {
                            "host": {"type": "string", "description": "As in the URLs, with its port unless 443."},
                            "issuer": {"type": ["string", "null"]},
                            "subject": {"type": ["string", "null"]},
                            "sans": {"type": "array", "items": {"type": "string"}},
                            "sans_omitted": {"type": "integer", "description": "SANs left out of `sans`."},
                            "not_before": {"type": ["string", "null"], "format": "date-time"},
                            "not_after": {"type": "string", "format": "date-time"},
                            "days_left": {
                                "type": "integer",
                                "description": "Whole days from now; negative once expired.",
                            },
                            "fingerprint": {"type": "string"},
                            "name_match": {"type": ["boolean", "null"]},
                            "chain_valid": {"type": ["boolean", "null"]},
                            "urls": {"type": "integer", "description": "The batch's URLs that met it."},
                            "url_examples": {"type": "array", "items": {"type": "string"}, "maxItems": LISTED_URLS},
                        },
                    },
                },
                "count": {"type": "integer", "description": "Rows of the whole inventory (every page)."},
                "expiring_within_days": {"type": "integer"},
                "expiring": {
                    "type": "integer",
                    "description": "Certificates with at most expiring_within_days days left, the expired included.",
                },
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "Pass as `cursor` for the next page; null on the last.",
                },
            },
        },
        "ChangeSide": {
            "type": "object",
            "description": "What a diff compares of a URL's result in one batch (all null while it has none).",
            "required": ["status_code", "final_url", "outcome", "total_ms"],
            "properties": {
                "status_code": {"type": ["integer", "null"]},
                "final_url": {"type": ["string", "null"]},
                "outcome": {
                    "type": ["string", "null"],
                    "description": "ok, warn, failed or cancelled; null: no result yet.",
                },
                "total_ms": number_or_null,
            },
        },
        "Change": {
            "type": "object",
            "required": ["key", "index", "base_index", "kind", "before", "after"],
            "properties": {
                "key": {"type": "string", "description": "The URL, or with key=path its path and query (lower case)."},
                "index": {"type": ["integer", "null"], "description": "Its URL index in the batch; null: removed."},
                "base_index": {"type": ["integer", "null"], "description": "Its URL index in the base; null: added."},
                "kind": {"type": "string", "enum": [*DIFF_KINDS, PENDING]},
                "before": nullable(ref("ChangeSide")),
                "after": nullable(ref("ChangeSide")),
            },
        },
        "Diff": {
            "type": "object",
            "required": ["base", "batch", "key", "slower", "summary", "changes", "total", "next_after"],
            "properties": {
                "base": {"type": "string"},
                "batch": {"type": "string"},
                "key": {"type": "string", "enum": list(DIFF_KEYS)},
                "slower": {"type": "number"},
                "summary": {
                    "type": "object",
                    "description": "How many rows of each kind; each row counts once, under the first kind that "
                    "holds in this order. pending: aligned with a URL that has no result yet in one of the batches.",
                    "required": [*DIFF_KINDS, PENDING],
                    "properties": {kind: {"type": "integer"} for kind in (*DIFF_KINDS, PENDING)},
                },
                "changes": {"type": "array", "items": ref("Change")},
                "total": {"type": "integer", "description": "Changes of the kinds asked for, over every page."},
                "next_after": {
                    "type": ["integer", "null"],
                    "description": "Pass as `after` for the next page; null on the last.",
                },
                "base_final": {"type": "boolean", "description": "The base has ended: its side no longer changes."},
                "batch_final": {"type": "boolean", "description": "The batch has ended: the diff no longer changes."},
            },
        },
        "ResultPage": {
            "type": "object",
            "required": [
                "batch_id",
                "results",
                "total",
                "total_exact",
                "offset",
                "limit",
                "sort",
                "order",
                "next_offset",
                "next_after",
                "last_seq",
            ],
            "properties": {
                "batch_id": {"type": "string"},
                "results": {"type": "array", "items": ref("Result")},
                "total": {
                    "type": "integer",
                    "description": "Results that match the filters; at least this many when total_exact is false.",
                },
                "total_exact": {
                    "type": "boolean",
                    "description": "False when counting (or, with q, reading) stopped at its time limit: total is a "
                    "lower bound, and with q this page may hold fewer results than match.",
                },
                "offset": {
                    "type": ["integer", "null"],
                    "description": "Where this page starts among the matching results (null with after).",
                },
                "limit": {"type": "integer"},
                "sort": {"type": "string", "enum": list(RESULT_SORTS)},
                "order": {"type": "string", "enum": ["asc", "desc"]},
                "next_offset": {
                    "type": ["integer", "null"],
                    "description": "Pass as `offset` for the next page; null on the last.",
                },
                "next_after": {
                    "type": ["integer", "null"],
                    "description": "In ascending index order, pass as `after` for the next page; null on the last.",
                },
                "last_seq": {
                    "type": "integer",
                    "description": "The page holds the matching results stored up to this seq (until_seq's, when "
                    "given) and no later one: follow the websocket or the events from here, and pass it as "
                    "until_seq for the next pages.",
                },
            },
        },
        "HostList": {
            "type": "object",
            "required": ["batch_id", "hosts"],
            "properties": {
                "batch_id": {"type": "string"},
                "hosts": {
                    "type": "array",
                    "description": "The most refused first, then the slowest (p50).",
                    "items": {
                        "type": "object",
                        "required": list(HOST_FIELDS),
                        "properties": {
                            "host": {"type": "string"},
                            "in_flight": {"type": "integer", "description": "0 in cluster mode (the workers')."},
                            "done": {
                                "type": "integer",
                                "description": "URLs of the host with a result, cancelled ones aside (ok + failed).",
                            },
                            "ok": {"type": "integer"},
                            "failed": {"type": "integer"},
                            "p50_ms": {"type": ["number", "null"], "description": "Median total time (nearest rank)."},
                            "refused": {
                                "type": "integer",
                                "description": "429 and 503 answers, retried ones "
                                "included while the batch runs in this process.",
                            },
                            "paused_until": nullable(TIMESTAMP),
                            "pause_reason": {
                                "type": "string",
                                "description": "e.g. `429 Retry-After: 30` or `429 answers: paced at "
                                "one request every 2.4 s` (paused_until is then its next start); empty when its "
                                "refusals do not hold the host back.",
                            },
                        },
                    },
                },
            },
        },
        "RunningList": {
            "type": "object",
            "required": ["batch_id", "running", "count"],
            "properties": {
                "batch_id": {"type": "string"},
                "running": {
                    "type": "array",
                    "maxItems": MAX_RUNNING_LISTED,
                    "items": {
                        "type": "object",
                        "required": ["index", "url", "started_at", "elapsed_ms"],
                        "properties": {
                            "index": {"type": "integer", "description": "Position of the URL in the batch."},
                            "url": {"type": "string"},
                            "started_at": TIMESTAMP,
                            "elapsed_ms": {"type": "number", "description": "Time in flight so far."},
                        },
                    },
                    "description": f"Oldest first, at most {MAX_RUNNING_LISTED}; empty once the batch has ended.",
                },
                "count": {"type": "integer", "minimum": 0, "description": "URLs in flight, listed or not."},
            },
        },
        "Event": {
            "type": "object",
            "required": ["seq", "type", "batch_id", "at", "data"],
            "description": "One numbered fact about a batch. `batch`: a status change (`data.status`, and counts, "
            "stats and the batch's `verdict` once final); `result`: one URL's Result; `progress`: counts and stats "
            "while running.",
            "properties": {
                "seq": {"type": "integer", "minimum": 1},
                "type": {"type": "string", "enum": ["batch", "result", "progress"]},
                "batch_id": {"type": "string"},
                "at": TIMESTAMP,
                "data": {"type": "object"},
            },
        },
        "EventPage": {
            "type": "object",
            "required": ["batch_id", "status", "events", "last_seq", "more"],
            "properties": {
                "batch_id": {"type": "string"},
                "status": {"type": "string", "enum": list(BATCH_STATUSES)},
                "events": {"type": "array", "items": ref("Event")},
                "last_seq": {"type": "integer", "description": "Pass as `after` for the next poll."},
                "more": {"type": "boolean", "description": "True when the page was full: ask again right away."},
            },
        },
    }


# -- operations ------------------------------------------------------------------------------


def source_schemas(config: Config) -> dict[str, Any]:
    """The schemas of sources: as sent, as a batch records it, and a preview."""
    pattern = {"type": ["string", "null"], "maxLength": MAX_PATTERN}
    fields_ = {
        "type": {"type": "string", "enum": list(SOURCE_TYPES)},
        "url": {"type": "string", "maxLength": config.max_url_length},
        "include": {**pattern, "description": "RE2 regular expression: only URLs it finds a match in are taken."},
        "exclude": {**pattern, "description": "RE2 regular expression: URLs it finds a match in are left out."},
        "max_urls": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": config.max_urls,
            "description": "Take the first N URLs; without it, a source of more than GREENBATCH_MAX_URLS is a 400.",
        },
        "same_origin": {
            "type": "boolean",
            "default": True,
            "description": "page_links only: take only links on the page's own scheme, host and port.",
        },
    }
    counts = ["sitemaps_read", "pages_read", "found", "unique", "excluded", "invalid", "kept"]
    return {
        "SourceInput": {
            "type": "object",
            "required": ["type", "url"],
            "additionalProperties": False,
            "description": "A sitemap (urlset, or a sitemapindex nested at most 3 levels; plain or gzipped) or the "
            "links on a page (a[href], link[href], img[src], script[src]). Read through the fetch policy, within "
            "GREENBATCH_SOURCE_TIMEOUT; a document type declaration (entities, external entities) is refused, and "
            "so is a sitemap over 50,000 URLs or 50 MB uncompressed.",
            "properties": fields_,
        },
        "Source": {
            "type": "object",
            "required": ["type", "url", "include", "exclude", "max_urls"],
            "description": "Where the batch's URLs came from.",
            "properties": fields_,
        },
        "SourcePreview": {
            "type": "object",
            "required": ["source", "counts", "urls", "complete", "max_urls", "over_limit", "message", "would_take"],
            "properties": {
                "source": ref("Source"),
                "counts": {
                    "type": "object",
                    "required": counts,
                    "properties": {name: {"type": "integer", "minimum": 0} for name in counts},
                    "description": "Documents read; URL entries found (repeats included); unique fetchable URLs; "
                    "those include, exclude or same_origin left out; entries that are not fetchable URLs; the "
                    "URLs a batch would take.",
                },
                "urls": {
                    "type": "array",
                    "maxItems": 50,
                    "items": {
                        "type": "object",
                        "required": ["url", "meta"],
                        "properties": {
                            "url": {"type": "string"},
                            "meta": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                                "description": "`lastmod` from a sitemap, `found_on` for a page's links.",
                            },
                        },
                    },
                },
                "complete": {
                    "type": "boolean",
                    "description": "Whether the source was read to its end (false past the limit, or with sitemaps"
                    " left unread).",
                },
                "max_urls": {"type": "integer", "description": "GREENBATCH_MAX_URLS."},
                "over_limit": {
                    "type": "boolean",
                    "description": "More URLs than a batch may hold, and no max_urls: a batch would be refused.",
                },
                "message": {
                    "type": ["string", "null"],
                    "description": "Why a batch from this source would be refused, and what to do: over_limit, or an"
                    " index naming more sitemaps than GREENBATCH_SOURCE_MAX_SITEMAPS whose read ones gave too few URLs"
                    " (the batch answers 400 too_many_sitemaps).",
                },
                "would_take": {"type": "integer", "description": "URLs a batch from this source would hold."},
            },
        },
    }


def operations(config: Config) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(path, method, endpoint, operation) for every route of the API."""
    # Every option but headers (those come as repeated `header`) and rows (made from `urls` items or a CSV's
    # columns, never given), named as BatchOptions names them.
    text_options = [
        query(f.name, {"type": "string"}, "Option for a text/plain or text/csv body (as in options).")
        for f in fields(BatchOptions)
        if f.name not in ("headers", "rows")
    ]
    create = {
        "parameters": [
            query("name", {"type": "string", "maxLength": 200}, "Batch name, for a text/plain or text/csv body."),
            *text_options,
            {
                **query(
                    "header",
                    {"type": "array", "items": {"type": "string"}},
                    "`Name: value`, repeatable; headers for a text/plain or text/csv body, under the "
                    "rules of options.headers (a name given twice, or an item without a colon, is a 400).",
                ),
                "style": "form",
                "explode": True,
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": ref("NewBatch")},
                "text/plain": {
                    "schema": {"type": "string"},
                    "description": "One URL per line; blank lines and lines starting with # are skipped.",
                },
                "text/csv": {
                    "schema": {"type": "string"},
                    "description": "URLs in the first column; a header row is skipped.",
                },
            },
        },
        "responses": {
            "201": {
                **json_body(ref("Batch"), "The batch, queued."),
                "headers": {"Location": {"schema": {"type": "string"}, "description": "Path of the new batch."}},
            },
            "400": error(
                "The body, a URL (named by its index, from 0), the name or an option is wrong; or a URL's "
                "host is an address (or localhost) the fetch policy blocks, and the message says how to allow it; "
                "or the source cannot be read (as the preview says), or has more than GREENBATCH_MAX_URLS URLs "
                "without max_urls."
            ),
            "413": error(f"The body is over GREENBATCH_MAX_REQUEST_BYTES, or it has more than {config.max_urls} URLs."),
            "415": error("The body is not application/json, text/plain or text/csv."),
            "503": busy(
                "The store cannot write now; or, with a source, busy: "
                f"{config.source_max_reads} sources are being read already (GREENBATCH_SOURCE_MAX_READS)."
            ),
        },
    }
    listing = {
        "parameters": [
            query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Page size."),
            query("cursor", {"type": "integer", "minimum": 0}, "`next_cursor` of the previous page."),
        ],
        "responses": {
            "200": json_body(ref("BatchList"), "Batches, newest first, with header names but not their values."),
            "400": error("A parameter is out of range."),
        },
    }
    one = {
        "parameters": [ID_PARAM],
        "responses": {"200": json_body(ref("Batch"), "The batch."), "404": error("No such batch.")},
    }
    cancel = {
        "parameters": [ID_PARAM],
        "responses": {
            "200": json_body(ref("Batch"), "The batch, cancelled."),
            "404": error("No such batch."),
            "409": error("The batch has already finished."),
        },
    }
    rerun = {
        "parameters": [ID_PARAM],
        "requestBody": {
            "required": False,
            "content": {
                JSON: {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "only": {"type": "string", "enum": ["all", "failed"], "default": "all"},
                            "remap": {
                                "type": "array",
                                "maxItems": MAX_REMAP,
                                "description": "Prefix rewrites of every URL (and of expected_final_url where "
                                "present): the first rule whose `from` starts a URL replaces that start with `to`. "
                                "The rewritten URLs are checked as a submission's are.",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["from", "to"],
                                    "properties": {
                                        "from": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},
                                        "to": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},
                                    },
                                },
                            },
                        },
                    }
                }
            },
        },
        "responses": {
            "201": {
                **json_body(ref("Batch"), "The new batch, queued."),
                "headers": {"Location": {"schema": {"type": "string"}}},
            },
            "400": error(
                'The body is not {} or {"only": "all" | "failed", "remap": [...]}, or a remapped URL '
                "cannot be fetched (code invalid_urls)."
            ),
            "404": error("No such batch."),
            "409": error(
                "Rerunning failed URLs of a batch that still runs, or none failed; or the "
                "batch's stored options exceed a limit lowered since (code invalid_options)."
            ),
        },
    }
    delete = {
        "parameters": [ID_PARAM],
        "responses": {
            "204": {"description": "Deleted, with its results and events."},
            "404": error("No such batch."),
            "409": error("The batch still runs: cancel it first."),
        },
    }
    results = {
        "parameters": [
            ID_PARAM,
            query(
                "sort",
                {"type": "string", "enum": list(RESULT_SORTS), "default": "index"},
                "Order by URL index, status code, latency or size; results without a value (no response, or "
                "never reached the network) go last either way, ties by index in the same direction.",
            ),
            query("order", {"type": "string", "enum": ["asc", "desc"], "default": "asc"}, "The sort's direction."),
            query(
                "offset",
                {"type": "integer", "minimum": 0, "maximum": 2**31, "default": 0},
                "Skip this many matching results (at most the total). With one of after and from_index, not both.",
            ),
            query(
                "after",
                {"type": "integer", "minimum": -1, "maximum": 2**31, "default": -1},
                "Ascending index order only: results with an index above this (`next_after` of the previous page).",
            ),
            query(
                "from_index",
                {"type": "integer", "minimum": 0, "maximum": 2**31},
                "Index order only: the page starts at the first matching result at this URL index or after it "
                "(before it, descending); `offset` in the answer says where that is.",
            ),
            query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Page size."),
            query(
                "until_seq",
                {"type": "integer", "minimum": 0, "maximum": 2**62},
                "Only results stored up to this event: pass the first page's `last_seq` with each next page of a "
                "running batch, so results that arrive meanwhile move no row from one page to another.",
            ),
            query(
                "outcome",
                {"type": "string", "enum": list(OUTCOMES)},
                "ok, warn, failed or cancelled as the batch's counts have them (ok holds the warned, whose `ok` is "
                "true); not_ok: failed or cancelled; stopped: cancelled while in flight.",
            ),
            query("status", {"type": "integer", "minimum": 100, "maximum": 599}, "Only results with this status code."),
            query("error", {"type": "string", "enum": list(ERROR_KINDS)}, "Only results that failed this way."),
            query(
                "reason",
                {"type": "string", "examples": ["expect.final_url", "check[2]", "bot_challenge"]},
                "Only results with this rule among their reasons (stats.by_reason counts them).",
            ),
            query(
                "q",
                {"type": "string", "maxLength": MAX_SEARCH},
                "Only results whose URL or final URL contains this text (ASCII letters in either case).",
            ),
            query(
                "format",
                {"type": "string", "enum": list(FORMATS)},
                "Download every result, or those of one outcome (no other parameter applies): csv, ndjson (one "
                "Result a line) or json (one array of Results). Without it, a page.",
            ),
        ],
        "responses": {
            "200": {
                "description": "A page of results, or every result as a download.",
                "content": {
                    JSON: {
                        "schema": {"anyOf": [ref("ResultPage"), {"type": "array", "items": ref("Result")}]},
                        "description": "A ResultPage; with format=json, an array of every Result.",
                    },
                    "text/csv": {
                        "schema": {"type": "string"},
                        "description": "A header row, then one row per Result; ok is true or false.",
                    },
                    "application/x-ndjson": {"schema": {"type": "string"}, "description": "One Result per line."},
                },
            },
            "400": error("A parameter is wrong."),
            "404": error("No such batch."),
        },
    }
    diff = {
        "parameters": [
            ID_PARAM,
            query(
                "base",
                {"type": "string"},
                "The batch to compare with; default: the batch this one was rerun from.",
            ),
            query(
                "key",
                {"type": "string", "enum": list(DIFF_KEYS), "default": "url"},
                "How rows align: by URL, or by path and query (scheme, host, trailing slash and case ignored, "
                "final URLs compared the same way), so staging lines up with production.",
            ),
            query(
                "slower",
                {"type": "number", "exclusiveMinimum": 1, "maximum": MAX_FACTOR, "default": DEFAULT_FACTOR},
                "slower and faster: the total time changed by at least this factor, and by at least 100 ms.",
            ),
            query(
                "kind",
                {"type": "string"},
                "Only changes of these kinds, comma-separated; default: every kind but unchanged ("
                + ", ".join(LISTED_BY_DEFAULT)
                + ").",
            ),
            query("after", {"type": "integer", "minimum": -1}, "`next_after` of the previous page."),
            query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Page size."),
            query(
                "format",
                {"type": "string", "enum": ["csv", "ndjson"]},
                "Download every change of the kinds asked for: csv (before_ and after_ columns) or ndjson (one "
                "Change a line). Without it, a page.",
            ),
        ],
        "responses": {
            "200": {
                "description": "What changed from the base to this batch, or every change as a download.",
                "content": {
                    JSON: {"schema": ref("Diff")},
                    "text/csv": {"schema": {"type": "string"}, "description": "A header row, then one row per change."},
                    "application/x-ndjson": {"schema": {"type": "string"}, "description": "One Change per line."},
                },
            },
            "400": error("A parameter is wrong, or no base was given for a batch that was not rerun from another."),
            "404": error("No such batch, or no such base."),
            "413": error("One of the batches has more URLs than GREENBATCH_MAX_DIFF_URLS (code diff_too_large)."),
        },
    }
    events = {
        "parameters": [
            ID_PARAM,
            query("after", {"type": "integer", "minimum": 0, "default": 0}, "Events with a seq above this."),
            query("limit", {"type": "integer", "minimum": 1, "maximum": 5000, "default": 1000}, "Page size."),
            query(
                "type",
                {"type": "string", "pattern": "^(batch|progress|result)(,(batch|progress|result))*$"},
                "Only events of these types, comma-separated (batch,progress: a batch's history without its "
                "results). Default: every type.",
            ),
        ],
        "responses": {
            "200": json_body(ref("EventPage"), "Stored events, in order."),
            "400": error("A parameter is wrong."),
            "404": error("No such batch."),
        },
    }
    hosts = {
        "parameters": [
            ID_PARAM,
            query("format", {"type": "string", "enum": ["json", "csv"], "default": "json"}, "csv: a download."),
        ],
        "responses": {
            "200": {
                "description": "Per host: in flight, done, ok, failed, median, refusals and pause.",
                "content": {
                    "application/json": {"schema": ref("HostList")},
                    "text/csv": {"schema": {"type": "string"}, "description": "The same columns, one host a line."},
                },
            },
            "400": error("A parameter is wrong."),
            "404": error("No such batch."),
        },
    }
    running = {
        "parameters": [ID_PARAM],
        "responses": {
            "200": json_body(ref("RunningList"), "The URLs in flight, with how long each has been."),
            "404": error("No such batch."),
        },
    }
    certificates = {
        "parameters": [
            ID_PARAM,
            query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Page size."),
            query("cursor", {"type": "string"}, "`next_cursor` of the previous page."),
        ],
        "responses": {
            "200": json_body(ref("CertificateList"), "The batch's certificate inventory (empty without capture.tls)."),
            "400": error("A parameter is out of range, or the cursor is not a next_cursor."),
            "404": error("No such batch."),
        },
    }
    deliveries = {
        "parameters": [ID_PARAM],
        "responses": {
            "200": json_body(
                ref("DeliveryList"),
                "The batch's notifications and each try (the payload sent is NotificationPayload).",
            ),
            "404": error("No such batch."),
        },
    }
    preview = {
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": {
                        "type": "object",
                        "required": ["source"],
                        "additionalProperties": False,
                        "properties": {"source": ref("SourceInput")},
                    }
                }
            },
        },
        "responses": {
            "200": json_body(ref("SourcePreview"), "What a batch from this source would hold; nothing started."),
            "400": error(
                "The source is wrong, refused by the fetch policy, unreadable, too large, an XML document with a "
                "DTD, nested too deep, or holds a tag too long to parse: the message names the problem."
            ),
            "503": busy(
                f"busy: {config.source_max_reads} sources are being read already (GREENBATCH_SOURCE_MAX_READS)."
            ),
        },
    }
    description = {"responses": {"200": json_body({"type": "object"}, "This document.")}}
    index = {"responses": {"200": json_body(ref("ApiIndex"), "The API's name, version and links.")}}
    batch = API + "/batches/{batch_id}"
    return [
        (API, "get", "api.index", index),
        (API + "/batches", "post", "api.create_batch", create),
        (API + "/batches", "get", "api.list_batches", listing),
        (batch, "get", "api.get_batch", one),
        (batch, "delete", "api.delete_batch", delete),
        (batch + "/cancel", "post", "api.cancel_batch", cancel),
        (batch + "/rerun", "post", "api.rerun_batch", rerun),
        (batch + "/results", "get", "api.results", results),
        (batch + "/diff", "get", "api.diff", diff),
        (batch + "/running", "get", "api.running", running),
        (batch + "/hosts", "get", "api.hosts", hosts),
        (batch + "/certificates", "get", "api.certificates", certificates),
        (batch + "/deliveries", "get", "api.deliveries", deliveries),
        (batch + "/events", "get", "api.events", events),
        (API + "/sources/preview", "post", "api.preview_source", preview),
        *list_operations(),
        (API + "/openapi.json", "get", "openapi.description", description),
    ]


def list_schemas(config: Config) -> dict[str, Any]:
    """The watch lists' schemas (app/web/lists.py)."""
    schedule = {
        "oneOf": [
            {
                "type": "object",
                "required": ["every"],
                "additionalProperties": False,
                "properties": {
                    "every": {
                        "type": "string",
                        "pattern": r"^\s*\d{1,7}\s*[smhd]\s*$",
                        "description": f"A number and a unit (s, m, h, d), at least {config.min_schedule_interval:g} s "
                        "(GREENBATCH_MIN_SCHEDULE_INTERVAL); the first run is one interval after saving.",
                    }
                },
            },
            {
                "type": "object",
                "required": ["cron"],
                "additionalProperties": False,
                "properties": {
                    "cron": {
                        "type": "string",
                        "maxLength": 200,
                        "description": "Five fields, in UTC, such as 0 3 * * *; its runs at least "
                        "GREENBATCH_MIN_SCHEDULE_INTERVAL apart.",
                    }
                },
            },
        ]
    }
    notify = {
        "type": "array",
        "maxItems": 10,
        "items": {
            "type": "object",
            "required": ["type", "url"],
            "properties": {
                "type": {"type": "string", "enum": ["webhook", "slack"]},
                "url": {"type": "string"},
                "secret": {"type": "string", "description": "Shown back as its last 4 characters at most."},
            },
        },
    }
    fields = {
        "name": {"type": "string", "maxLength": 200, "description": "Each run is named <name> #<n>."},
        "urls": {
            "type": "array",
            "minItems": 1,
            "maxItems": config.max_urls,
            "items": {"type": "string", "maxLength": config.max_url_length},
            "description": "http(s) URLs, under the same rules as a batch's.",
        },
        "source": {
            **ref("SourceInput"),
            "description": "Instead of urls: a sitemap or page read again at each run (as a batch's source), so "
            "each run's diff shows the URLs added and removed. Checked when saved, read only by the runs.",
        },
        "options": nullable(ref("OptionsInput")),
        "schedule": schedule,
        "notify": notify,
        "notify_on": nullable({"type": "string", "enum": ["always", "change", "failure"]}),
        "consecutive_failures": nullable(
            {"type": "integer", "minimum": 1, "maximum": 100, "description": "At most keep_runs (400 above it)."}
        ),
        "keep_runs": {
            "type": "integer",
            "minimum": 2,
            "maximum": config.max_keep_runs,
            "default": min(30, config.max_keep_runs),
            "description": "Runs kept; older ones are deleted after each run, and at once when it is lowered "
            "(GREENBATCH_MAX_KEEP_RUNS).",
        },
        "paused": {"type": "boolean", "description": "A paused list runs only when asked (POST .../run)."},
    }
    skipped = {
        "type": "object",
        "required": ["count", "last_at", "last_reason"],
        "description": "Runs that did not start: a scheduled one while the run before was still going, or any "
        "whose source could not be read (or whose options no longer pass).",
        "properties": {
            "count": {"type": "integer"},
            "last_at": nullable(TIMESTAMP),
            "last_reason": nullable({"type": "string", "description": "Why the last one did not start."}),
        },
    }
    watch_list = {
        "type": "object",
        "required": [
            "id",
            "name",
            "url_count",
            "options",
            "schedule",
            "notify",
            "notify_on",
            "consecutive_failures",
            "keep_runs",
            "paused",
            "created_at",
            "next_run_at",
            "last_run_at",
            "runs_started",
            "skipped",
            "links",
        ],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "url_count": nullable({"type": "integer", "description": "null for a list of a source."}),
            "source": nullable(ref("Source")),
            "urls": {
                "type": "array",
                "items": {"type": "string"},
                "description": "In GET /lists/{list_id} only; empty for a list of a source.",
            },
            "options": {"type": "object", "description": "As given when saved; server defaults fill in the rest."},
            "schedule": schedule,
            "notify": notify,
            "notify_on": fields["notify_on"],
            "consecutive_failures": fields["consecutive_failures"],
            "keep_runs": {"type": "integer"},
            "paused": {"type": "boolean"},
            "created_at": TIMESTAMP,
            "next_run_at": nullable(TIMESTAMP),
            "last_run_at": nullable(TIMESTAMP),
            "runs_started": {"type": "integer", "description": "Runs started so far (numbers the next)."},
            "skipped": skipped,
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
            "last_delivery": {
                "anyOf": [ref("Delivery"), {"type": "null"}],
                "description": "In GET /lists only: its runs' last notification (null: none yet, or no notify).",
            },
            "recent_runs": {
                "type": "array",
                "description": "In GET /lists only: its last runs, newest first.",
                "items": {
                    "type": "object",
                    "required": ["id", "name", "status", "created_at", "counts", "verdict"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "status": {"type": "string"},
                        "created_at": TIMESTAMP,
                        "counts": ref("Counts"),
                        "verdict": {"anyOf": [{"type": "object"}, {"type": "null"}]},
                    },
                },
            },
        },
    }
    summary = {
        "type": "object",
        "description": "What changed from the run before, as a diff's summary.",
        "properties": {kind: {"type": "integer"} for kind in (*DIFF_KINDS, PENDING)},
    }
    return {
        "NewWatchList": {
            "type": "object",
            "description": "The URLs as a list (`urls`), a sitemap or page to read at each run (`source`), or "
            "those of a batch (`from_batch`: its source when it had one, else its URLs and each URL's expect, meta "
            "and checks; also its options and name unless given, never whom the batch notified); and a schedule. "
            "consecutive_failures may not exceed keep_runs.",
            "required": ["schedule"],
            "additionalProperties": False,
            "properties": {**fields, "from_batch": {"type": "string"}},
        },
        "WatchListChange": {
            "type": "object",
            "description": "The fields to change; a new schedule, or a resume, counts the next run from now.",
            "additionalProperties": False,
            "properties": fields,
        },
        "WatchList": watch_list,
        "WatchListList": {
            "type": "object",
            "required": ["lists", "next_cursor"],
            "properties": {
                "lists": {"type": "array", "items": ref("WatchList")},
                "next_cursor": nullable({"type": "string", "description": "The next page's cursor; null at the end."}),
            },
        },
        "WatchListDeliveries": {
            "type": "object",
            "required": ["list_id", "deliveries"],
            "properties": {"list_id": {"type": "string"}, "deliveries": {"type": "array", "items": ref("Delivery")}},
        },
        "WatchListRuns": {
            "type": "object",
            "required": ["list_id", "runs", "skipped"],
            "properties": {
                "list_id": {"type": "string"},
                "runs": {
                    "type": "array",
                    "description": "Its runs, newest first: batches, each with diff_summary (null for the first, "
                    "for a run still going: its page's diff is live, or past GREENBATCH_MAX_DIFF_URLS).",
                    "items": {
                        "allOf": [ref("ListedBatch")],
                        "properties": {"diff_summary": nullable(summary)},
                    },
                },
                "skipped": skipped,
            },
        },
    }


def list_operations() -> list[tuple[str, str, str, dict[str, Any]]]:
    """The watch lists' routes (app/web/lists.py)."""
    list_id = {
        "name": "list_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The list id (12 hex digits).",
    }
    refused = "A field is wrong (a URL, the options, the schedule, keep_runs...): details name it."
    create = {
        "requestBody": {"required": True, "content": {JSON: {"schema": ref("NewWatchList")}}},
        "responses": {
            "201": {
                **json_body(ref("WatchList"), "The list, saved."),
                "headers": {"Location": {"schema": {"type": "string"}, "description": "Path of the new list."}},
            },
            "400": error(refused),
            "409": error("The server holds GREENBATCH_MAX_LISTS lists already (code too_many_lists)."),
            "415": error("The body is not application/json."),
            "503": error("The store cannot write now."),
        },
    }
    listing = {
        "parameters": [
            query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Lists in the page."),
            query("cursor", {"type": "string"}, "next_cursor of the page before."),
        ],
        "responses": {
            "200": json_body(ref("WatchListList"), "A page of the lists, oldest first, without their URLs."),
            "400": error("A parameter is out of range, or the cursor is not a next_cursor."),
        },
    }
    one = {
        "parameters": [list_id],
        "responses": {"200": json_body(ref("WatchList"), "The list."), "404": error("No such list.")},
    }
    change = {
        "parameters": [list_id],
        "requestBody": {"required": True, "content": {JSON: {"schema": ref("WatchListChange")}}},
        "responses": {
            "200": json_body(ref("WatchList"), "The list, changed."),
            "400": error(refused),
            "404": error("No such list."),
            "415": error("The body is not application/json."),
        },
    }
    delete = {
        "parameters": [list_id],
        "responses": {"204": {"description": "Deleted; its runs stay, as batches."}, "404": error("No such list.")},
    }
    run = {
        "parameters": [list_id],
        "responses": {
            "201": {
                **json_body(ref("Batch"), "The run, a new batch whose parent_id is the list's previous run."),
                "headers": {"Location": {"schema": {"type": "string"}, "description": "Path of the new batch."}},
            },
            "404": error("No such list."),
            "409": error(
                "Its previous run is still going (still_running), its options no longer pass (invalid_options), or "
                "its source could not be read (the source's code, such as source_unreadable or source_timeout; "
                "recorded in skipped)."
            ),
            "503": busy(
                "The store cannot write now; or busy: as many sources as GREENBATCH_SOURCE_MAX_READS are being "
                "read already (not recorded in skipped)."
            ),
        },
    }
    runs = {
        "parameters": [
            list_id,
            query("limit", {"type": "integer", "minimum": 1, "maximum": 50, "default": 20}, "Runs listed."),
        ],
        "responses": {
            "200": json_body(ref("WatchListRuns"), "Its runs, newest first."),
            "400": error("A parameter is out of range."),
            "404": error("No such list."),
        },
    }
    deliveries = {
        "parameters": [
            list_id,
            query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Deliveries listed."),
        ],
        "responses": {
            "200": json_body(ref("WatchListDeliveries"), "Its runs' notifications, newest first."),
            "400": error("A parameter is out of range."),
            "404": error("No such list."),
        },
    }
    path = API + "/lists/{list_id}"
    return [
        (API + "/lists", "post", "lists.create_list", create),
        (API + "/lists", "get", "lists.all_lists", listing),
        (path, "get", "lists.get_list", one),
        (path, "patch", "lists.change_list", change),
        (path, "delete", "lists.delete_list", delete),
        (path + "/run", "post", "lists.run_list", run),
        (path + "/runs", "get", "lists.list_runs", runs),
        (path + "/deliveries", "get", "lists.list_deliveries", deliveries),
    ]


def document(config: Config, server_root: str = "/") -> dict[str, Any]:
    """The whole OpenAPI document; `server_root` is where the app is mounted (the proxy's prefix)."""
    paths: dict[str, dict[str, Any]] = {}
    for path, method, endpoint, operation in operations(config):
        operation = {"operationId": endpoint.split(".", 1)[1], "summary": _summary(endpoint), **operation}
        operation["responses"] = {
            **operation["responses"],
            "default": error(
                "Any other error: 401 without a valid token, 403 from another "
                "origin, 405, 429 after too many invalid tokens from one "
                "address (see Retry-After), 500."
            ),
        }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "greenbatch",
            "version": API_VERSION,
            "description": "Run batches of URL requests. Every error is the JSON envelope in Error.",
        },
        "servers": [{"url": server_root}],
        "security": [{}, {"bearerToken": []}],
        "paths": paths,
        "components": {
            "schemas": schemas(config),
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Needed when the server has tokens (GREENBATCH_API_TOKENS or GREENBATCH_TOKEN_FILE).",
                }
            },
        },
    }


def _summary(endpoint: str) -> str:
    """The first line of the view's docstring: what the route says about itself."""
    view = current_app.view_functions.get(endpoint)
    doc = (view.__doc__ or "").strip() if view is not None else ""
    return doc.splitlines()[0] if doc else ""


@bp.get("/openapi.json")
def description():
    """This API's OpenAPI 3.1 description."""
    return document(current_app.config["GREENBATCH"], request.script_root or "/")
