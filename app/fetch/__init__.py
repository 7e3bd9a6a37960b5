"""One URL over the network: the transport contract, both clients, the SSRF guard and the follow policy.

make_transport is how the rest of greenbatch gets a transport: it takes the guard's resolver, so no
client can be built that resolves names without the policy.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.options import BatchOptions
from .base import USER_AGENT, Transport
from .fast_client import FastTransport
from .guard import GuardedResolver
from .requests_client import RequestsTransport

TransportFactory = Callable[[BatchOptions, GuardedResolver], Transport]

# One transport per value of the `client` option (core.options.CLIENTS); both keep the same guarantees and take
# the same arguments.
_CLASSES: dict[str, Callable[..., Transport]] = {"requests": RequestsTransport, "fast": FastTransport}


def _factory(cls: Callable[..., Transport]) -> Callable[..., Transport]:
    """A transport of `cls` for a batch's options, resolving through `resolver`."""

    def make(options: BatchOptions, resolver: GuardedResolver, agent: str = USER_AGENT) -> Transport:
        return cls(
            pool_size=options.concurrency,
            resolver=resolver,
            capture=options.capture,
            tls_verify=options.tls_verify,
            user_agent=agent,
        )

    return make


TRANSPORTS: dict[str, Callable[..., Transport]] = {name: _factory(cls) for name, cls in _CLASSES.items()}


def make_transport(options: BatchOptions, resolver: GuardedResolver, user_agent: str = USER_AGENT) -> Transport:
    """The transport of the client the batch chose, pooled to its concurrency, resolving through the guard;
    `user_agent` is sent when the batch's headers set none (GREENBATCH_USER_AGENT)."""
    if not isinstance(resolver, GuardedResolver):
        raise TypeError(f"transports resolve through the SSRF guard (guard.GuardedResolver), not {resolver!r}")
    return TRANSPORTS[options.client](options, resolver, user_agent)
