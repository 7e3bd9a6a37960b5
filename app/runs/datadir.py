"""One process per data directory: an exclusive lock on it, taken before the store opens and held until exit.

Two servers on one folder would both resume its unfinished batches and write results over each other's
(a quick restart during the shutdown grace does the same), so the second one refuses to start, naming
the process that holds the folder. The kernel releases the lock when its holder exits, however it exits.
"""

from __future__ import annotations

import fcntl
import os

from ..core.config import ConfigError, env_name

LOCK_FILE = "greenbatch.lock"


class DataDirLock:
    """The held lock: its open file, closed only when the process ends."""

    def __init__(self, fd: int, path: str):
        self.fd = fd
        self.path = path


def lock_data_dir(data_dir: str) -> DataDirLock:
    """Take the folder's lock, or ConfigError naming the pid that holds it."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(
            f"{data_dir} is in use by pid {holder} (another greenbatch?); stop it first, or give this server "
            f"its own folder with {env_name('data_dir')}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return DataDirLock(fd, path)
