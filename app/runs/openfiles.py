"""The open-file limit fitted to the caps, before anything opens a socket: a process short of descriptors
loses URLs to "Too many open files" instead of waiting for a slot."""

from __future__ import annotations

import dataclasses
import logging
import resource

from ..core.config import Config, ConfigError

log = logging.getLogger("greenbatch")
# Descriptors besides fetches and client connections: listener, store (database, WAL, readers),
# log files, the gevent loop, DNS lookups. An idle server holds about 20.
FD_RESERVE = 64


def fit_open_files(config: Config) -> Config:
    """The config, with caps the open-file limit can hold: raise the soft limit when the hard one allows it,
    else lower GREENBATCH_MAX_INFLIGHT, _MAX_CONNECTIONS and _WS_MAX to fit, and say so in the log.

    Every fetch in flight and every client connection holds a descriptor; past the limit, fetches fail
    with "Too many open files" and the server stops accepting.
    """
    needed = config.max_inflight + config.max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return config
    limit = _raise_open_files(needed, hard)
    if limit >= needed:
        log.info(
            "raised the open-file limit from %d to %d: GREENBATCH_MAX_INFLIGHT=%d and "
            "GREENBATCH_MAX_CONNECTIONS=%d need about %d",
            soft,
            limit,
            config.max_inflight,
            config.max_connections,
            needed,
        )
        return config
    room = limit - FD_RESERVE
    if room < 3:
        raise ConfigError(
            f"the open-file limit is {limit}: greenbatch needs at least {FD_RESERVE + 3} "
            f"(raise it with `ulimit -n` or LimitNOFILE= in the systemd unit)"
        )
    total = config.max_inflight + config.max_connections
    inflight = max(1, min(room - 2, room * config.max_inflight // total))
    connections = room - inflight
    ws_max = max(1, min(config.ws_max, connections * config.ws_max // config.max_connections, connections - 1))
    fitted = dataclasses.replace(config, max_inflight=inflight, max_connections=connections, ws_max=ws_max)
    log.warning(
        "the open-file limit is %d, below the %d that GREENBATCH_MAX_INFLIGHT=%d and "
        "GREENBATCH_MAX_CONNECTIONS=%d need; running with GREENBATCH_MAX_INFLIGHT=%d, "
        "GREENBATCH_MAX_CONNECTIONS=%d and GREENBATCH_WS_MAX=%d instead. Raise the limit (`ulimit -n %d`, "
        "or LimitNOFILE=%d in the systemd unit) or set those caps lower yourself",
        limit,
        needed,
        config.max_inflight,
        config.max_connections,
        inflight,
        connections,
        ws_max,
        needed,
        needed,
    )
    return fitted


def _raise_open_files(wanted: int, hard: int) -> int:
    """Raise the soft open-file limit to the hard one, or to `wanted` if the kernel refuses that; the limit now."""
    tries = (wanted,) if hard == resource.RLIM_INFINITY else (hard, min(wanted, hard))
    for soft in tries:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            return soft
        except (ValueError, OSError):  # above the kernel's nr_open
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
