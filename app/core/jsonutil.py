"""JSON text as greenbatch writes it: compact, UTF-8, and never refused."""

from __future__ import annotations

import json
from typing import Any

import orjson

_STDLIB_COMPACT = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def compact_json(value: Any) -> str:
    """Compact JSON text of events, store rows and websocket messages (orjson, for its speed).

    Non-ASCII stays raw UTF-8 and NaN becomes null. What orjson refuses (a lone surrogate in an error
    message, an integer beyond 64 bits) falls back to the standard library, so an event is never lost.
    """
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError: allowing keys that are not strings costs more, so only then
        pass
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return _STDLIB_COMPACT(value)
