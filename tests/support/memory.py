"""Memory of a server process, read from /proc: what the body-cap tests measure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def rss(pid: int) -> int:
    """The process's resident memory now, in bytes."""
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss_during(pid: int, action: Callable[[], Any]) -> tuple[int, Any]:
    """The highest resident memory of a process while action runs, and action's return value.

    The kernel's own high-water mark (VmHWM) is reset first by writing 5 to clear_refs, so a spike
    between two samples cannot be missed.
    """
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError as exc:
        pytest.skip(f"cannot reset the peak RSS of the server (/proc/{pid}/clear_refs): {exc}")
    value = action()
    return _status_kib(pid, "VmHWM") * 1024, value


def _status_kib(pid: int, field: str) -> int:
    """One kB figure from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} line in /proc/{pid}/status")
