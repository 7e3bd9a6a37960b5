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
def running_gunicorn(tmp_path, env: dict[str, str], *options: str):
    """`gunicorn -k app.worker.Worker -w 1 wsgi:app` on a free loopback port, with these settings and options
    (a later `-w N` among them wins)."""
    port = free_port()
    log = open(tmp_path / "gunicorn.log", "wb")
    env = {**os.environ, **env, "GREENBATCH_DATA_DIR": str(tmp_path / "data")}
    assert GUNICORN is not None, "gunicorn is not installed (requirements-dev.txt)"
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
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:  # refused, or queued behind workers still booting
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "gunicorn.log").read_text())
            time.sleep(0.1)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
