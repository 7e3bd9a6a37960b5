"""Whose X-Forwarded-* headers count: a peer in GREENBATCH_TRUSTED_PROXIES, for GREENBATCH_PROXY_HOPS proxies;
anyone else's are dropped. So it decides the client address every per-client rule counts by.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from ...core.config import Config, ConfigError, env_name

log = logging.getLogger(__name__)

PROXIES_EXTENSION = "greenbatch.trusted_proxies"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(text: str) -> tuple[Network, ...]:
    """GREENBATCH_TRUSTED_PROXIES as networks; ConfigError names an entry that is not an IP address or CIDR."""
    networks = []
    for item in text.split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip()))
            except ValueError as exc:
                raise ConfigError(
                    f"{env_name('trusted_proxies')}: {item.strip()!r} is not an IP address or CIDR "
                    f"like 127.0.0.1, ::1 or 10.0.0.0/24 ({exc})"
                ) from None
    return tuple(networks)


class TrustedProxies:
    """Who may tell us, in X-Forwarded-* headers, the client's address, scheme, host and path prefix: a peer
    in GREENBATCH_TRUSTED_PROXIES, for GREENBATCH_PROXY_HOPS proxies. Anyone else's such headers are ignored,
    so a client reaching the port directly cannot pose as another address (and use up its invalid tokens)
    nor fake https, the host or the prefix."""

    def __init__(self, hops: int, networks: tuple[Network, ...], setting: str):
        self.hops = hops
        self.networks = networks
        self.setting = setting
        self._warned = False

    @classmethod
    def from_config(cls, config: Config) -> TrustedProxies:
        """The rule set by GREENBATCH_PROXY_HOPS and GREENBATCH_TRUSTED_PROXIES (ConfigError for a bad entry)."""
        return cls(config.proxy_hops, parse_proxies(config.trusted_proxies), config.trusted_proxies)

    def trusts(self, environ: Mapping[str, Any]) -> bool:
        """Whether the request's peer is a trusted proxy (never while no proxy hops are configured)."""
        if not self.hops:
            return False
        try:
            peer = ipaddress.ip_address(environ.get("REMOTE_ADDR", ""))
        except ValueError:
            return False  # not an address (a unix socket): not a proxy we know
        if peer.version == 6 and peer.ipv4_mapped:
            peer = peer.ipv4_mapped  # an IPv4 peer on a dual-stack socket
        return any(peer in network for network in self.networks)

    def client(self, environ: Mapping[str, Any]) -> str:
        """The client's address: behind a trusted proxy the Nth X-Forwarded-For entry from the right, as
        ProxyFix reads it; else the peer's own."""
        if self.trusts(environ):
            forwarded = [part.strip() for part in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
            if len(forwarded) >= self.hops:
                return forwarded[-self.hops]
        elif self.hops:
            self._warn_once(environ)
        return environ.get("REMOTE_ADDR", "-")

    def middleware(self, wsgi_app: Callable) -> Callable:
        """`wsgi_app` behind ProxyFix for requests from a trusted proxy; others' X-Forwarded-* headers are dropped."""
        n = self.hops
        fixed = ProxyFix(wsgi_app, x_for=n, x_proto=n, x_host=n, x_prefix=n)

        def screened(environ: dict, start_response: Callable) -> Any:
            if self.trusts(environ):
                return fixed(environ, start_response)
            self._warn_once(environ)
            for key in [key for key in environ if key.startswith("HTTP_X_FORWARDED_")]:
                del environ[key]
            return wsgi_app(environ, start_response)

        return screened

    def _warn_once(self, environ: Mapping[str, Any]) -> None:
        """The first time an untrusted peer sends X-Forwarded-* headers, say whose were ignored and why."""
        if self._warned or not any(key.startswith("HTTP_X_FORWARDED_") for key in environ):
            return
        self._warned = True
        peer = environ.get("REMOTE_ADDR", "-")
        log.warning(
            "ignored the X-Forwarded-* headers of a request from %s: it is not a trusted proxy "
            "(GREENBATCH_TRUSTED_PROXIES=%s), so its requests count as coming from %s itself. If %s is your "
            "reverse proxy, add it to GREENBATCH_TRUSTED_PROXIES; if clients reach this port directly, bind "
            "greenbatch to loopback (GREENBATCH_HOST=127.0.0.1) behind the proxy. (Said once per process.)",
            peer,
            self.setting,
            peer,
            peer,
        )


def client_address(environ: Mapping[str, Any], app: Any) -> str:
    """The client's address as `app` sees it: the peer's, or the forwarded one from a trusted proxy (the
    websocket handler asks before the app's ProxyFix has run). An app without our rules trusts no proxy."""
    proxies: TrustedProxies | None = getattr(app, "extensions", {}).get(PROXIES_EXTENSION)
    return proxies.client(environ) if proxies is not None else environ.get("REMOTE_ADDR", "-")


def proxies_of(app: Flask) -> TrustedProxies:
    """The app's rule for trusting X-Forwarded-* headers."""
    return app.extensions[PROXIES_EXTENSION]
