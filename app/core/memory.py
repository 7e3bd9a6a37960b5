"""Memory the process has freed, handed back to the system."""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None under a C library that has none (musl, macOS)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> bool:
    """Give the C allocator's free memory back to the system; False where the C library cannot.

    glibc keeps what is freed for reuse, up to 64 MiB at the top of its heap alone once large blocks have
    come and gone: the temporaries of a large submission (its body, its text, its encoded URL list) would
    stay in the server's RSS, under everything its batch then allocates.
    """
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
