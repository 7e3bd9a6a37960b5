"""The clock: the one timestamp format greenbatch emits."""

from __future__ import annotations

import datetime as dt
import time

_second_text: tuple[int, str] = (-1, "")  # (whole second, "YYYY-MM-DDTHH:MM:SS") formatted last


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds, the one timestamp format we emit."""
    # Three stamps per URL: the date and time are formatted once per second, only the milliseconds each time.
    global _second_text
    now = time.time()
    second = int(now)
    if second != _second_text[0]:
        _second_text = (second, dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second_text[1]}.{int((now - second) * 1000):03d}Z"


def iso_at(timestamp: float) -> str:
    """A time.time() value in the format of now_iso()."""
    second = int(timestamp)
    text = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{int((timestamp - second) * 1000):03d}Z"
