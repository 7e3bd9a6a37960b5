"""How many invalid tokens a client may send: past GREENBATCH_AUTH_FAILURES within
GREENBATCH_AUTH_FAILURE_WINDOW, its tokens are refused unchecked (429 with Retry-After) until the oldest
of them is a window old. Counted per IPv4 address or IPv6 /64.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from flask import Flask

FAILURES_EXTENSION = "greenbatch.auth_failures"


class FailedTokens:
    """Invalid tokens per client address: after `limit` of them within `window` seconds, that address's
    tokens are refused unchecked (429) until the oldest of them is `window` seconds old.

    Tokens have 16+ characters, so guessing one is hopeless anyway; this stops a script from trying (the
    login form, bearer headers and websocket tokens all count). A signed-in cookie is not a guess and keeps
    working. Only greenlets of one process use it, never at the same time: no lock.
    """

    MAX_CLIENTS = 10_000  # addresses remembered; those quiet longest are forgotten first

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()  # client -> its latest failure times

    def wait(self, client: str) -> int:
        """Whole seconds before `client` may have a token checked again; 0: now."""
        if not self._failures:
            return 0  # nobody has failed lately: the common case, without parsing the address
        key = self.key(client)
        times = self._failures.get(key)
        if times is None:
            return 0
        now = self._clock()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0
        return max(1, math.ceil(times[0] + self.window - now)) if len(times) >= self.limit else 0

    def failed(self, client: str) -> None:
        """Count one invalid token from `client`."""
        if not self.limit:
            return
        key = self.key(client)
        times = self._failures.pop(key, None) or deque(maxlen=self.limit)  # only the last `limit` matter
        times.append(self._clock())
        self._failures[key] = times
        while len(self._failures) > self.MAX_CLIENTS:
            self._failures.popitem(last=False)

    def problem(self, client: str) -> str:
        """What a throttled client is told."""
        return (
            f"{self.limit} invalid tokens came from {self.key(client)} within {self.window:g} s, so its tokens "
            f"are not checked for now; try again in {self.wait(client)} s (GREENBATCH_AUTH_FAILURES)"
        )

    @staticmethod
    def key(client: str) -> str:
        """What is counted: an IPv4 address, or an IPv6 address's /64 (one host commonly holds a whole /64)."""
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return client  # not an address (a unix socket's "-"): counted as it is
        if address.version == 6:
            if address.ipv4_mapped:
                return str(address.ipv4_mapped)
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
        return str(address)


def failures_of(app: Flask) -> FailedTokens:
    """The app's count of invalid tokens per client address."""
    return app.extensions[FAILURES_EXTENSION]
