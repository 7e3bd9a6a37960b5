"""Processes the benchmark starts and measures: the target, greenbatch servers, and per-process CPU and peak RSS."""

from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.support.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"greenbatch listening on (http://\S+?)/?$", re.M)


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (all its threads)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def reset_peak_rss(pid: int) -> None:
    """Start a new peak-RSS window: writing 5 to clear_refs resets VmHWM to the current RSS (Linux)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux or not allowed: VmHWM then covers the process's whole life


def peak_rss_mib(pid: int | str = "self") -> float:
    """The process's peak resident set size (VmHWM) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Server:
    """A greenbatch server started as in production (`python wsgi.py`), on 127.0.0.1 and a free port."""

    target_port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    base_url: str = ""
    data_dir: str = ""

    def start(self, timeout: float = 30) -> Server:
        """Start the process and wait for its `listening` line."""
        self.data_dir = tempfile.mkdtemp(prefix="gb-bench-")
        log_path = Path(self.data_dir) / "server.log"
        env = {
            **os.environ,
            "GREENBATCH_HOST": "127.0.0.1",
            "GREENBATCH_PORT": "0",
            "GREENBATCH_DATA_DIR": self.data_dir,
            "GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{self.target_port}",
            # 200 viewers come from one address in the fan-out test.
            "GREENBATCH_WS_MAX_PER_CLIENT": "250",
            **self.env,
        }
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "wsgi.py")],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(log_path.read_text(errors="replace"))
            if match:
                self.base_url = match.group(1)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"greenbatch did not start: {log_path.read_text(errors='replace')[-2000:]}")

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        """The server's base URL with the ws scheme."""
        return "ws" + self.base_url[len("http") :]

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log, for error reports."""
        return (Path(self.data_dir) / "server.log").read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM by pid, SIGKILL if it lingers, and remove its data folder."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, 30)
        if getattr(self, "_log", None):
            self._log.close()
        if self.data_dir:
            subprocess.run(["rm", "-rf", self.data_dir], check=False)
