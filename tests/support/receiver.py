"""A webhook receiver for notification tests: a real HTTP server on 127.0.0.1, in a thread of the test process,
that records every request (and counts every connection) and answers as told."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG = 0  # an answer that holds the request, unanswered, until release()


class Receiver:
    """Records each POST as {"path", "headers", "body"}; answers a path with the statuses queued for it in
    `answers[path]` in turn (HANG holds one until release()), then 200."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.answers: dict[str, list[int]] = {}
        self.arrived = threading.Condition()
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.arrived:
                    queued = receiver.answers.get(self.path) or []
                    status = queued.pop(0) if queued else 200
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    receiver.arrived.notify_all()
                if status == HANG:
                    receiver.released.wait(30)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                receiver.connections += 1
                return True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        """A URL on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: str, count: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
        """The requests to `path` once there are `count` of them (AssertionError after `timeout` s)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                found = [r for r in self.requests if r["path"] == path]
                if len(found) >= count or time.monotonic() > deadline:
                    break
                self.arrived.wait(max(0.0, deadline - time.monotonic()))
        assert len(found) >= count, f"{len(found)} requests to {path}, not {count}, within {timeout} s"
        return found

    def release(self) -> None:
        """Let every held request go (unanswered)."""
        self.released.set()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.release()
        self.server.shutdown()
        self.server.server_close()


def verified(request: dict[str, Any], secret: str) -> dict[str, Any]:
    """A webhook request's payload, once its signature is checked as the README tells receivers to."""
    headers = request["headers"]
    timestamp = headers["X-Greenbatch-Timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Greenbatch-Signature"], f"sha256={expected}"), "bad signature"
    assert abs(time.time() - int(timestamp)) < 300, "stale timestamp"
    assert headers["Content-Type"] == "application/json" and headers["X-Greenbatch-Event"] == "batch.finished"
    return json.loads(request["body"])
