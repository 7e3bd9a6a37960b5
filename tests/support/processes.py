"""Stopping the processes tests and benchmarks start: ask with a signal, wait, kill if it lingers."""

from __future__ import annotations

import signal
import subprocess


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> bool:
    """Send `sig` (if still running) and wait `timeout` s; SIGKILL if it lingers. True if it stopped by itself."""
    if proc.poll() is not None:
        return True
    try:
        proc.send_signal(sig)
        proc.wait(timeout)
        return True
    except ProcessLookupError:  # it exited between poll() and the signal
        proc.wait()
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False
