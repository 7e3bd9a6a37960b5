"""gunicorn with our worker class in a subprocess, as the tests run it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time

import requests

from tests.support.nginx import free_port
from tests.support.server import ROOT

GUNICORN = shutil.which("gunicorn", path=os.path.dirname(sys.executable)) or shutil.which("gunicorn")


@contextlib.contextmanager
def running_gunicorn(tmp_path, env: dict[str, str], *options: str, tries: int = 3):
    """`gunicorn -k app.worker.Worker -w 1 wsgi:app` on a free loopback port, with these settings and options
    (a later `-w N` among them wins); on another port when one was taken between free_port() and gunicorn's bind
    (up to `tries` ports)."""
    env = {**os.environ, **env, "GREENBATCH_DATA_DIR": str(tmp_path / "data")}
    assert GUNICORN is not None, "gunicorn is not installed (requirements-dev.txt)"
    log_path = tmp_path / "gunicorn.log"
    for _ in range(tries):
        port = free_port()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    GUNICORN,
                    "-k",
                    "app.worker.Worker",
                    "-w",
                    "1",
                    "-b",
                    f"127.0.0.1:{port}",
                    "--graceful-timeout",
                    "10",
                    *options,
                    "wsgi:app",
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        answering = False
        try:
            answering = _answering(proc, base, log_path)
        finally:
            if not answering:
                _kill(proc)  # its port was taken (it would retry the bind for 5 s, then exit), or it failed
        if answering:
            break
    else:
        raise RuntimeError(
            f"gunicorn found each of {tries} free ports taken before it could bind one:\n" + log_path.read_text()
        )
    try:
        yield proc, base
    finally:
        _kill(proc)


def _answering(proc: subprocess.Popen, base: str, log_path) -> bool:
    """Wait (up to 20 s) until the gunicorn started at `base` answers /healthz: True; False when its port was taken."""
    deadline = time.monotonic() + 20
    while True:
        log = log_path.read_text(errors="replace")
        if "Connection in use" in log:
            return False
        # Only once gunicorn says it listens is whoever answers at `base` gunicorn.
        if f"Listening at: {base} " in log:
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    return True
            except requests.RequestException:  # refused, or queued behind workers still booting
                pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log)
        time.sleep(0.1)


def _kill(proc: subprocess.Popen) -> None:
    """Kill gunicorn if it still runs."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
