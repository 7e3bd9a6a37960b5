"""Real PostgreSQL and Redis servers for the cluster tests: each in a temp folder, on a unix socket only, stopped by pid.

PostgreSQL refuses to run as root, so its processes run as the `postgres` user (Debian's package makes it):
the folder is handed to that user and the server is started with its uid, not through su, so the pid we hold
is the postmaster's own.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.support.processes import stop_process

START_TIMEOUT = 30.0  # seconds a server may take to accept connections


def _pg_bin(name: str) -> str:
    """The path of a PostgreSQL program: on PATH, or in Debian's versioned folder (not on PATH)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL (apt-get install postgresql; .ci/run does)")
    return found


def _as_user(user: str):  # type: ignore[no-untyped-def]
    """A preexec_fn that drops root for `user` (PostgreSQL refuses root) when we are root."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(user)

    def drop() -> None:
        os.setgid(entry.pw_gid)
        os.setgroups([])
        os.setuid(entry.pw_uid)

    return drop


def _wait_for(path: Path, proc: subprocess.Popen, what: str, log: Path) -> None:
    """Wait until `path` (a socket) exists, or fail with the server's log."""
    deadline = time.monotonic() + START_TIMEOUT
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            stop_process(proc, timeout=5)
            raise RuntimeError(f"{what} did not start (exit {proc.returncode}):\n{tail}")
        time.sleep(0.05)


class Postgres:
    """A throwaway PostgreSQL cluster in `folder`, listening only on a unix socket in that folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.data = folder / "data"
        self.socket_dir = folder
        self.log = folder / "postgres.log"
        self.proc: subprocess.Popen | None = None
        self._databases = 0

    def start(self) -> Postgres:
        """initdb (first time) and start the server; returns once it accepts connections."""
        folder_owner = "postgres" if os.geteuid() == 0 else None
        if folder_owner:
            shutil.chown(self.folder, folder_owner, folder_owner)
        if not self.data.exists():
            subprocess.run(
                [_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
                check=True,
                capture_output=True,
                preexec_fn=_as_user("postgres"),
            )
        settings = {
            "listen_addresses": "",
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "200",
            "fsync": "off",  # the tests kill workers and web processes, never PostgreSQL itself
            "full_page_writes": "off",
            "shared_buffers": "64MB",
        }
        args = [_pg_bin("postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_as_user("postgres"))
        _wait_for(self.socket_dir / ".s.PGSQL.5432", self.proc, "PostgreSQL", self.log)
        deadline = time.monotonic() + START_TIMEOUT
        while self.psql("SELECT 1", check=False).returncode != 0:  # the socket shows before it accepts queries
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL does not answer:\n{self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        return self

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for `database` over the unix socket."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def psql(self, sql: str, database: str = "postgres", check: bool = True) -> subprocess.CompletedProcess:
        """Run one SQL command with psql."""
        return subprocess.run(
            [_pg_bin("psql"), "-h", str(self.socket_dir), "-U", "postgres", "-d", database, "-Atqc", sql],
            capture_output=True,
            text=True,
            check=check,
        )

    def new_database(self) -> str:
        """A fresh empty database, and its URL."""
        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back and close connections), by the postmaster's pid."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT, timeout=15)
            self.proc = None


class Redis:
    """A throwaway redis-server listening only on a unix socket in `folder`, no persistence."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.socket = folder / "redis.sock"
        self.log = folder / "redis.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The URL redis-py (and Dramatiq's broker) take for the socket."""
        return f"unix://{self.socket}"

    def start(self) -> Redis:
        """Start the server; returns once its socket exists and it answers PING."""
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server not found: install it (apt-get install redis-server; .ci/run does)")
        if self.socket.exists():
            self.socket.unlink()
        args = [
            server,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.folder),
            "--logfile", str(self.log),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait_for(self.socket, self.proc, "redis-server", self.log)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server by its pid (SIGKILL to lose everything it held)."""
        if self.proc is not None:
            stop_process(self.proc, sig, timeout=10)
            self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same socket: every key is gone (no persistence)."""
        self.stop()
        self.start()
