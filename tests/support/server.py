"""The greenbatch server as the tests (and bench/) run it: `python wsgi.py` in a subprocess, and helpers
to read its answers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.support.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WITHOUT_CLUSTER = (
    Path(__file__).resolve().parent / "without_cluster"
)  # its sitecustomize blocks redis, psycopg, dramatiq
# Matches the text line and the JSON one (GREENBATCH_LOG_FORMAT=json): the URL ends at "/", a quote or a space.
_LISTENING = re.compile(r'greenbatch listening on (http://[^\s"/]+)')


class GreenbatchServer:
    """A greenbatch server process started by `python wsgi.py`, as in production."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        log_name: str = "server.log",
        args: list[str] | None = None,
        prefix: list[str] | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / log_name
        self.env = {
            **os.environ,
            "GREENBATCH_DATA_DIR": str(self.data_dir),
            "GREENBATCH_PORT": "0",
            "GREENBATCH_FLUSH_INTERVAL": "0.05",
            **(env or {}),
        }
        if not self.env.get("GREENBATCH_DATABASE_URL"):
            # The one-process default must run without the cluster's libraries: they are made unimportable.
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(WITHOUT_CLUSTER), self.env.get("PYTHONPATH")]))
        self.args = args or []
        self.prefix = prefix or []  # a command the server runs under, e.g. ["unshare", "--mount", ...]
        self.proc: subprocess.Popen | None = None
        self.base_url = ""
        self.session = requests.Session()
        self.session.trust_env = False

    def start(self, timeout: float = 20) -> GreenbatchServer:
        """Start the process and wait until it says where it listens."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = open(self.log_path, "ab")
        command = [*self.prefix, sys.executable, str(ROOT / "wsgi.py"), *self.args]
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Only what this start wrote: a restart appends to the same log.
            match = _LISTENING.search(self.log_path.read_bytes()[offset:].decode(errors="replace"))
            if match and self.proc.poll() is None:
                self.base_url = match.group(1)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        self._log.close()
        raise RuntimeError(f"greenbatch did not start (exit {self.proc.returncode}):\n{self.log()}")

    def log(self) -> str:
        """Everything the server printed."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 10) -> str:
        """The log once it holds `text` (an access line is written just after its answer has left)."""
        deadline = time.monotonic() + timeout
        while text not in self.log() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert text in self.log(), f"{text!r} not in the server log:\n{self.log()[-2000:]}"
        return self.log()

    def url(self, path: str) -> str:
        """An absolute URL on this server."""
        return self.base_url + path

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """An HTTP request to this server."""
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url(path), **kwargs)

    def submit(self, urls: list[str], **options: Any) -> dict[str, Any]:
        """POST a JSON batch and return the created batch (asserting 201)."""
        response = self.request("POST", "/api/v1/batches", json={"urls": urls, "options": options})
        assert response.status_code == 201, response.text
        return response.json()

    def batch(self, batch_id: str) -> dict[str, Any]:
        """GET one batch."""
        response = self.request("GET", f"/api/v1/batches/{batch_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, batch_id: str, timeout: float = 30, statuses=("done", "cancelled", "failed")) -> dict[str, Any]:
        """Poll a batch until it reaches one of `statuses`."""
        deadline = time.monotonic() + timeout
        while True:
            batch = self.batch(batch_id)
            if batch["status"] in statuses:
                return batch
            if time.monotonic() > deadline:
                raise AssertionError(f"batch {batch_id} still {batch['status']} after {timeout} s: {batch['counts']}")
            time.sleep(0.05)

    def run_batch(self, urls: list[str], **options: Any) -> dict[int, dict[str, Any]]:
        """Submit a batch with these options, wait (up to 60 s) for its end and return its results by URL index."""
        batch = self.submit(urls, **options)
        self.wait(batch["id"], timeout=60)
        return {result["index"]: result for result in self.results(batch["id"])}

    def fetch_one(self, url: str, **options: Any) -> dict[str, Any]:
        """The result of a one-URL batch."""
        return self.run_batch([url], **options)[0]

    def results(self, batch_id: str, **params: Any) -> list[dict[str, Any]]:
        """Every result of a batch, following pages."""
        found, after = [], -1
        while True:
            page = self.request(
                "GET", f"/api/v1/batches/{batch_id}/results", params={"after": after, "limit": 1000, **params}
            ).json()
            found += page["results"]
            if page["next_after"] is None:
                return found
            after = page["next_after"]

    def signal(self, signum: int) -> None:
        """Send a signal to the server process."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, wait, SIGKILL if it hangs; returns the exit code."""
        if self.proc is None:
            return None
        try:
            if not stop_process(self.proc, signal.SIGTERM, timeout):
                raise AssertionError(f"greenbatch did not stop within {timeout} s of SIGTERM:\n{self.log()[-3000:]}")
            return self.proc.returncode
        finally:
            self._log.close()
            self.session.close()  # its pooled sockets would otherwise be collected unclosed (ResourceWarning)

    def kill(self) -> None:
        """SIGKILL: the crash a durable store must survive."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        self.session.close()


def error_of(response: requests.Response) -> dict[str, Any]:
    """The error envelope of a response, asserting it is JSON in the API's shape."""
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:200]
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
    return body["error"]


def kind_of(result: dict[str, Any]) -> str | None:
    """A result's error kind, None when the fetch got a response the batch accepts."""
    return result["error"]["kind"] if result["error"] else None


CHROMIUM = "/usr/bin/chromium"  # Debian's; `playwright install` cannot download browsers here
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
