"""Settings: one typed object built from GREENBATCH_* variables, validated once at start."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PREFIX = "GREENBATCH_"
MiB = 1024 * 1024


class ConfigError(ValueError):
    """A setting has a value greenbatch cannot use; the message names the variable."""


def _setting(
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
    secret: bool = False,
) -> Any:
    """Declare a setting with its default, its documentation and its bounds; secrets stay out of repr()."""
    return field(default=default, repr=not secret, metadata={"doc": doc, "low": low, "high": high, "choices": choices})


@dataclass(frozen=True)
class Config:
    """Every setting greenbatch reads, with its default; README's table is generated from this."""

    host: str = _setting("127.0.0.1", "Address the server binds to.")
    port: int = _setting(8000, "Port the server listens on.", low=0, high=65535)
    data_dir: str = _setting("./data", "Folder for the SQLite database (created if missing).")
    log_level: str = _setting("info", "Log level.", choices=("debug", "info", "warning", "error"))
    log_format: str = _setting(
        "text",
        "Log line format: `text`, or `json` for one JSON object per line (access lines included).",
        choices=("text", "json"),
    )
    proxy_hops: int = _setting(
        0,
        "Reverse proxies in front of the server whose X-Forwarded-For, -Proto, -Host and "
        "-Prefix headers are trusted; 0 trusts none (see Operations).",
        low=0,
        high=10,
    )
    trusted_proxies: str = _setting(
        "127.0.0.1,::1",
        "Comma-separated IPs or CIDRs the nearest proxy connects from; "
        "with GREENBATCH_PROXY_HOPS set, X-Forwarded-* headers from any other peer are "
        "ignored. The default fits a proxy on the same host.",
    )

    max_request_bytes: int = _setting(
        128 * MiB,
        "Largest API request body accepted (413 above); the default fits 1,000,000 URLs of 125 characters as JSON.",
        low=1024,
    )
    max_urls: int = _setting(1_000_000, "Most URLs in one batch (413 above).", low=1)
    max_url_length: int = _setting(2048, "Longest URL accepted.", low=16, high=65536)
    max_diff_urls: int = _setting(
        200_000,
        "Most URLs in either batch of a diff (413 above): a diff holds both batches in memory (~200 MB a million).",
        low=1,
    )
    min_schedule_interval: float = _setting(
        60.0, "Shortest interval between two scheduled runs of a watch list (seconds; 400 below it).", low=1
    )
    max_keep_runs: int = _setting(100, "Most runs a watch list may keep (`keep_runs`; 400 above it).", low=2)
    max_lists: int = _setting(1000, "Most watch lists the server holds (409 past it).", low=1)
    default_concurrency: int = _setting(20, "Concurrency of a batch that does not set one.", low=1)
    max_concurrency: int = _setting(1000, "Highest concurrency a batch may ask for.", low=1)
    max_inflight: int = _setting(2000, "Server-wide cap on fetches in flight across all batches.", low=1)
    max_running_batches: int = _setting(4, "Batches that run at once; later ones wait, in order.", low=1)
    default_timeout: float = _setting(30.0, "Per-URL total deadline (seconds) when a batch sets none.", low=0.1)
    max_timeout: float = _setting(300.0, "Longest per-URL deadline a batch may ask for (seconds).", low=0.1)
    default_connect_timeout: float = _setting(10.0, "Connect timeout (seconds) when a batch sets none.", low=0.1)
    default_max_redirects: int = _setting(5, "Redirects followed per URL when a batch sets none.", low=0)
    max_redirects: int = _setting(20, "Most redirects a batch may ask to follow.", low=0)
    default_max_bytes: int = _setting(10 * MiB, "Decoded body bytes read per URL when a batch sets none.", low=0)
    max_body_bytes: int = _setting(100 * MiB, "Largest per-URL body cap a batch may ask for.", low=0)
    max_retries: int = _setting(5, "Most retries on connection errors a batch may ask for.", low=0)
    max_per_host_interval: float = _setting(
        60.0, "Longest `per_host_interval` (seconds between two request starts to one host) a batch may ask for.", low=0
    )
    max_retry_after: float = _setting(
        3600.0,
        "Longest `max_retry_after` a batch may ask for: the most seconds a `Retry-After` may pause a host before "
        "its URL ends `rate_limited` instead.",
        low=0,
    )
    user_agent: str = _setting(
        "",
        "User-Agent sent when a batch sets none in `headers`; empty sends `greenbatch/<version> (+<project URL>)`.",
    )
    source_timeout: float = _setting(
        60.0,
        "Seconds to read a batch's source (a sitemap and the sitemaps it names, or a page) before giving up with a 400.",
        low=1,
        high=3600,
    )
    source_max_sitemaps: int = _setting(
        100, "Most sitemaps read for one source (an index and the sitemaps it names).", low=1, high=50_000
    )
    source_max_reads: int = _setting(
        2,
        "Sources read at once by this process (previews, batches and watch-list runs from a source); beyond them a "
        "preview or a submit answers 503 `busy` with Retry-After, and a scheduled run waits its turn (up to "
        "GREENBATCH_SOURCE_TIMEOUT; then it is skipped, its reason saying it waited for a read slot).",
        low=1,
        high=64,
    )

    allow_private: bool = _setting(False, "Allow fetching private, loopback and link-local addresses (see Security).")
    allow_targets: str = _setting(
        "", "Comma-separated hosts, IPs or CIDRs (each may add :port) allowed despite the guard."
    )
    deny_targets: str = _setting("", "Comma-separated hosts, IPs or CIDRs (each may add :port) always denied.")
    ca_bundle: str = _setting(
        "",
        "A PEM file of extra CA certificates (internal sites) trusted besides certifi's by both HTTP clients; "
        "checked at start.",
    )
    explain_blocked: bool = _setting(
        False,
        "When on, `blocked` and `dns` errors in results name the address, the "
        "rule that denied it and the resolver's error; leave off on servers anyone "
        "untrusted can submit to (the debug log has the detail either way).",
    )
    public_url: str = _setting(
        "",
        "The server's address as its users open it (e.g. `https://greenbatch.example.com`), for the links in "
        "notifications; needed behind a proxy. Empty: the submitting request's host, else no link.",
    )
    notify_timeout: float = _setting(
        5.0, "Seconds one try of a notification may take, from connect to answer.", low=0.1, high=60
    )
    notify_retry_delay: float = _setting(
        1.0,
        "Seconds before a failed notification is tried again; the third and last try waits 4 times that.",
        low=0.01,
        high=3600,
    )
    shutdown_grace: float = _setting(10.0, "Seconds in-flight fetches get to finish on SIGTERM/SIGINT.", low=0)
    header_timeout: float = _setting(
        10.0,
        "Seconds a client has to send a request's line and headers, counted from "
        "the connection's start (on a kept-alive connection, from the request's first "
        "byte); a slower client gets 408 and is disconnected.",
        low=0.1,
        high=3600,
    )
    keepalive_timeout: float = _setting(
        60.0,
        "Seconds a kept-alive connection may wait for its next request before the server closes it.",
        low=0.1,
        high=86400,
    )
    max_connections: int = _setting(
        1000,
        "Client connections served at once, websockets included; more wait in the "
        "listen queue until one closes (under gunicorn: the smaller of this and "
        "--worker-connections).",
        low=2,
    )

    api_tokens: str = _setting(
        "",
        "Comma-separated API tokens (16+ characters each). With any token set (here or in "
        "GREENBATCH_TOKEN_FILE), every API call, page and websocket needs one.",
        secret=True,
    )
    token_file: str = _setting(
        "", "File of API tokens, one per line ('#' starts a comment); read at start and again on SIGHUP."
    )
    secret_key: str = _setting(
        "",
        "Key that signs login cookies; if unset, one is generated once and kept in <data dir>/secret_key (mode 0600).",
        secret=True,
    )
    allowed_origins: str = _setting(
        "",
        "Comma-separated extra origins (scheme://host[:port]) allowed to post and open "
        "websockets, besides the server's own host.",
    )
    auth_failures: int = _setting(
        10,
        "Invalid tokens (login form, API, websocket) one client address may send within "
        "GREENBATCH_AUTH_FAILURE_WINDOW; past that its tokens get 429 unchecked until the "
        "oldest failure ages out. Signed-in browsers are not affected; 0 turns this off.",
        low=0,
    )
    auth_failure_window: float = _setting(
        300.0, "Seconds over which GREENBATCH_AUTH_FAILURES counts.", low=1, high=86400
    )

    flush_interval: float = _setting(0.1, "Seconds between store flushes of buffered events.", low=0.001, high=10)
    flush_rows: int = _setting(500, "Buffered events that trigger an early store flush.", low=1)
    integrity_check_interval: float = _setting(
        3600.0,
        "Seconds between integrity checks of the database (SQLite's "
        "quick_check, on a reader thread: about 1 s of CPU per GB); the first "
        "runs at start; 0 turns them off. Damage found makes /readyz answer 503.",
        low=0,
    )

    ws_heartbeat: float = _setting(
        20.0,
        'Seconds between websocket heartbeats: a {"type": "ping"} message and a '
        "protocol ping that browsers answer on their own.",
        low=0.05,
        high=3600,
    )
    ws_idle_timeout: float = _setting(
        300.0,
        "Seconds a websocket may go without any message or pong from the client "
        "before it is closed (1001); must exceed GREENBATCH_WS_HEARTBEAT.",
        low=0.1,
    )
    ws_max_message: int = _setting(
        65536,
        "Largest message (bytes) a websocket client may send; a frame declaring "
        "more is refused before it is read, closing with 1009.",
        low=125,
        high=64 * MiB,
    )
    ws_queue_events: int = _setting(
        20_000,
        "Events held for one websocket viewer that is not keeping up; beyond this "
        'it is closed with 4000 "resync" and reconnects with ?after=<last seq>.',
        low=1,
    )
    ws_max_per_client: int = _setting(
        50,
        "Open websockets per client address; more are refused with 429 before the "
        "upgrade (behind GREENBATCH_PROXY_HOPS proxies the address comes from X-Forwarded-For).",
        low=1,
    )
    ws_max: int = _setting(
        500,
        "Open websockets on the whole server; more are refused with 503 before the upgrade. "
        "Must be below GREENBATCH_MAX_CONNECTIONS, so plain requests still get through.",
        low=1,
    )

    # Cluster mode (docs/deploy.md): on when both of these are set, off (one process, SQLite) when neither is.
    database_url: str = _setting(
        "",
        "Cluster mode: the PostgreSQL store, e.g. `postgresql://greenbatch@db/greenbatch` or "
        "`postgresql:///greenbatch?host=/run/postgresql`; set together with GREENBATCH_REDIS_URL.",
        secret=True,
    )
    redis_url: str = _setting(
        "",
        "Cluster mode: the Redis for the work queue and live events, e.g. `redis://cache:6379/0` or "
        "`unix:///run/redis/redis.sock`; set together with GREENBATCH_DATABASE_URL.",
        secret=True,
    )
    cluster_heartbeat_timeout: float = _setting(
        15.0,
        "Cluster mode: seconds a silent worker is considered dead; its chunks then go to another worker.",
        low=1,
        high=3600,
    )
    cluster_chunk_min: int = _setting(64, "Cluster mode: fewest URLs in a chunk (the unit a worker takes).", low=1)
    cluster_chunk_max: int = _setting(1000, "Cluster mode: most URLs in a chunk.", low=1)
    cluster_slots: int = _setting(
        8,
        "Cluster mode: chunks the workers run at once (worker processes x threads, all machines); a batch "
        "is cut into about 4 chunks a slot, within the chunk sizes, so every slot gets work.",
        low=1,
    )

    def __post_init__(self) -> None:
        """Check bounds and choices of every field, naming the variable at fault."""
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            name = env_name(f.name)
            if meta.get("low") is not None and value < meta["low"]:
                raise ConfigError(f"{name}={value} is below the minimum {meta['low']}")
            if meta.get("high") is not None and value > meta["high"]:
                raise ConfigError(f"{name}={value} is above the maximum {meta['high']}")
            if meta.get("choices") and value not in meta["choices"]:
                raise ConfigError(f"{name}={value!r} is not one of {', '.join(meta['choices'])}")
        pairs = [
            ("default_concurrency", "max_concurrency"),
            ("default_timeout", "max_timeout"),
            ("default_max_redirects", "max_redirects"),
            ("default_max_bytes", "max_body_bytes"),
        ]
        for default, cap in pairs:
            if getattr(self, default) > getattr(self, cap):
                raise ConfigError(f"{env_name(default)} must not exceed {env_name(cap)}")
        if self.ws_max >= self.max_connections:
            raise ConfigError(
                f"{env_name('ws_max')} ({self.ws_max}) must be below {env_name('max_connections')} "
                f"({self.max_connections}): websockets holding every connection would lock out "
                "the API and the pages"
            )
        if bool(self.database_url) != bool(self.redis_url):
            given, missing = ("database_url", "redis_url") if self.database_url else ("redis_url", "database_url")
            raise ConfigError(
                f"cluster mode needs both {env_name('database_url')} and {env_name('redis_url')}: "
                f"{env_name(given)} is set but {env_name(missing)} is not (unset both for the one-process default)"
            )
        if self.cluster_chunk_min > self.cluster_chunk_max:
            raise ConfigError(f"{env_name('cluster_chunk_min')} must not exceed {env_name('cluster_chunk_max')}")
        if self.ws_idle_timeout <= self.ws_heartbeat:
            raise ConfigError(
                f"{env_name('ws_idle_timeout')} must exceed {env_name('ws_heartbeat')}: clients answer "
                "heartbeats, so a shorter idle timeout would drop every quiet viewer"
            )

    @property
    def cluster(self) -> bool:
        """Whether this process runs in cluster mode (PostgreSQL and Redis) rather than alone on SQLite."""
        return bool(self.database_url and self.redis_url)

    @property
    def db_path(self) -> str:
        """Path of the SQLite database file."""
        return os.path.join(self.data_dir, "greenbatch.db")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build the config from GREENBATCH_* variables, then apply explicit overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is not None and raw.strip() != "":
                values[f.name] = _parse(f, raw.strip())
        values.update(overrides)
        return cls(**values)


def env_name(field_name: str) -> str:
    """The environment variable that sets a field."""
    return PREFIX + field_name.upper()


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    """Turn one variable's text into the field's type, or say which variable is wrong."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "bool":
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected 1/0, true/false, yes/no or on/off")
        if kind == "int":
            return int(raw.replace("_", ""))
        if kind == "float":
            return float(raw)
        return raw
    except ValueError as exc:
        raise ConfigError(f"{env_name(f.name)}={raw!r} is not a valid {kind}: {exc}") from None


def settings_table() -> list[tuple[str, Any, str]]:
    """(variable, default, description) rows, for README and --help."""
    return [(env_name(f.name), f.default, f.metadata["doc"]) for f in dataclasses.fields(Config)]


def markdown_table() -> str:
    """The settings as a Markdown table (README's copy is checked against this by the tests)."""
    lines = ["| Variable | Default | What it does |", "| --- | --- | --- |"]
    for name, default, doc in settings_table():
        shown = "(empty)" if default == "" else default
        lines.append(f"| `{name}` | `{shown}` | {doc} |")
    return "\n".join(lines)


README_TABLE = re.compile(r"(<!-- settings-table:start -->\n).*?(<!-- settings-table:end -->)", re.S)


def update_readme(path: str) -> None:
    """Rewrite the settings table between README's markers (`make readme`)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = README_TABLE.sub(lambda m: m.group(1) + markdown_table() + "\n" + m.group(2), text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
