"""The garbage collector's settings for a process that fetches: the server's and a cluster worker's."""

from __future__ import annotations

import gc

GC_THRESHOLD = 20_000  # allocations between young-generation collections (CPython's default: 700)


def tune_gc() -> None:
    """Freeze what start-up built and collect young objects less often; call once the process is built.

    Every URL allocates a few dozen container objects (result, timings, event, greenlet, response), so
    CPython's default threshold would collect every few dozen URLs; start-up objects (Flask, Jinja,
    gevent, Dramatiq) are frozen so no collection traverses them again. Reference counting still frees
    everything that is not in a cycle at once.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
