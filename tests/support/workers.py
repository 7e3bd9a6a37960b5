"""Cluster workers for the tests: `python -m app.cluster worker` in a subprocess, its log in a file, stopped by pid.

Dramatiq's CLI is a parent process that forks the worker processes and restarts nothing: `pid` is the
parent's, `child_pid()` the (one) process that runs chunks, the one to SIGKILL or SIGSTOP to play a crash.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
READY = "Worker process is ready for action."  # Dramatiq logs it once a worker process consumes
START_TIMEOUT = 30.0


class ClusterWorker:
    """One `python -m app.cluster worker --processes 1 --threads T` with its own log file."""

    def __init__(self, env: dict[str, str], log: Path, threads: int = 2):
        self.env = {**os.environ, **env}
        self.log = log
        self.threads = threads
        self.proc: subprocess.Popen | None = None

    def start(self) -> ClusterWorker:
        """Start the worker; return at once (see wait_ready)."""
        args = [sys.executable, "-m", "app.cluster", "worker", "--processes", "1", "--threads", str(self.threads)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        """The Dramatiq parent's pid."""
        assert self.proc is not None
        return self.proc.pid

    def text(self) -> str:
        """Everything the worker logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self) -> ClusterWorker:
        """Wait until the worker process consumes, or fail with its log."""
        deadline = time.monotonic() + START_TIMEOUT
        while READY not in self.text():
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"cluster worker did not start (exit {self.proc.returncode}):\n{self.text()[-3000:]}"
                )
            time.sleep(0.05)
        return self

    def child_pid(self) -> int:
        """The pid of the process that runs the chunks (the parent's only child)."""
        children = psutil.Process(self.pid).children()
        assert len(children) == 1, f"expected one worker process under {self.pid}, found {children}"
        return children[0].pid

    def signal_child(self, sig: int) -> None:
        """Send a signal to the chunk-running process."""
        os.kill(self.child_pid(), sig)

    def stop(self, timeout: float = 40.0) -> bool:
        """SIGTERM the parent (it stops its child), SIGKILL both if they linger; True if they stopped by themselves."""
        return stop_workers([self], timeout)


def stop_workers(workers: list[ClusterWorker], timeout: float = 40.0) -> bool:
    """Stop workers together (SIGTERM to each parent, then wait); True if every one stopped by itself."""
    children: list[psutil.Process] = []
    for worker in workers:
        if worker.proc is None or worker.proc.poll() is not None:
            continue
        try:
            children += psutil.Process(worker.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        for child in children:  # a stopped child would never act on the SIGTERM its parent forwards
            try:
                os.kill(child.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        try:
            worker.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    clean = True
    deadline = time.monotonic() + timeout
    for worker in workers:  # one SIGTERM only: Dramatiq takes a second one as "exit now"
        if worker.proc is None:
            continue
        try:
            worker.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()
            clean = False
    deadline = time.monotonic() + 5
    while alive := [child for child in children if _alive(child)]:
        if time.monotonic() > deadline:
            for child in alive:
                os.kill(child.pid, signal.SIGKILL)
            return False
        time.sleep(0.05)
    return clean


def _alive(process: psutil.Process) -> bool:
    """Whether a process still runs (an exited one whose parent is gone may linger as a zombie nobody reaps)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
