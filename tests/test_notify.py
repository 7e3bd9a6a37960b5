"""Notifications: notify targets checked when a batch is submitted (each entry's fields, the SSRF guard), their
secrets never shown back in full, and deliveries a local receiver verifies."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.server import GreenbatchServer, error_of

SECRET = "s3cret-for-the-receiver-7781"


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every request (and every connection) and answers the statuses
    queued in `answers` (then 200)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.answers: list[int] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.arrived:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    receiver.arrived.notify_all()
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

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver():
    """A receiver the server may post to."""
    instance = Receiver()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def unreachable():
    """A receiver on a loopback port the server is not allowed to reach."""
    instance = Receiver()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def notify_server(tmp_path_factory, target, receiver):
    """One server allowed to reach the target and the receiver, and no other loopback port."""
    env = {"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{target.port},127.0.0.1:{receiver.port}"}
    instance = GreenbatchServer(tmp_path_factory.mktemp("notify"), env).start()
    yield instance
    instance.stop()


def submitted(server: GreenbatchServer, urls: list[str], **options: Any):
    """The answer to a JSON submission with these options."""
    return server.request("POST", "/api/v1/batches", json={"urls": urls, "options": options})


# -- options ---------------------------------------------------------------------------------


def test_notify_options_are_stored_with_secrets_shown_only_by_their_last_characters(notify_server, target, receiver):
    slack = f"http://127.0.0.1:{receiver.port}/services/T000/B000/XXXXsecretpath"
    options = {
        "notify": [{"type": "webhook", "url": receiver.url("/hook?token=q1w2e3"), "secret": SECRET}],
        "webhook": {"url": receiver.url("/second"), "secret": "another-secret-99"},
        "notify_on": "change",
        "consecutive_failures": 2,
    }
    created = submitted(notify_server, [target.url("/ok")], **options, concurrency=1)
    assert created.status_code == 201, created.text
    batch = created.json()
    assert batch["options"]["notify"] == [
        {"type": "webhook", "url": receiver.url("/hook"), "secret": "...7781"},
        {"type": "webhook", "url": receiver.url("/second"), "secret": "...t-99"},
    ]
    assert (batch["options"]["notify_on"], batch["options"]["consecutive_failures"]) == ("change", 2)
    listed = notify_server.request("GET", "/api/v1/batches").json()["batches"]
    page = notify_server.request("GET", f"/batches/{batch['id']}").text
    rerun = notify_server.request("POST", f"/api/v1/batches/{batch['id']}/rerun")
    assert rerun.status_code == 201, rerun.text
    for shown in (json.dumps(listed), page, rerun.text):
        assert SECRET not in shown and "another-secret-99" not in shown and "q1w2e3" not in shown
    assert rerun.json()["options"]["notify"] == batch["options"]["notify"]

    created = submitted(notify_server, [target.url("/ok")], notify=[{"type": "slack", "url": slack}])
    assert created.json()["options"]["notify"] == [
        {"type": "slack", "url": f"http://127.0.0.1:{receiver.port}/...path"}
    ]


def test_a_batch_without_notify_options_shows_none_of_them(notify_server, target):
    batch = notify_server.submit([target.url("/ok")])
    assert not {"notify", "notify_on", "consecutive_failures"} & set(batch["options"])


@pytest.mark.parametrize(
    "options, field, message",
    [
        ({"notify": {"url": "http://x.test/"}}, "options.notify", "must be a list"),
        ({"notify": [{"type": "email", "url": "http://x.test/"}]}, "options.notify[0].type", "webhook, slack"),
        ({"notify": [{"type": "slack", "url": "http://x.test/"}, {"type": "slack"}]}, "options.notify[1].url", "URL"),
        ({"notify": [{"type": "webhook", "url": "ftp://x.test/", "secret": SECRET}]}, "options.notify[0].url", "http"),
        ({"notify": [{"type": "webhook", "url": "http://x.test/"}]}, "options.notify[0].secret", "8 to 256"),
        (
            {"notify": [{"type": "webhook", "url": "http://x.test/", "secret": "...7781"}]},
            "options.notify[0].secret",
            "cut short",
        ),
        (
            {"notify": [{"type": "slack", "url": "http://x.test/", "secret": SECRET}]},
            "options.notify[0].secret",
            "not a field",
        ),
        ({"notify": [{"type": "slack", "url": "http://x.test/"}] * 11}, "options.notify", "at most 10"),
        ({"webhook": {"url": "http://x.test/"}}, "options.webhook.secret", "8 to 256"),
        ({"notify_on": "sometimes"}, "options.notify_on", "always, change, failure"),
        ({"consecutive_failures": 0}, "options.consecutive_failures", "from 1 to 50"),
        ({"consecutive_failures": 51}, "options.consecutive_failures", "server limit"),
    ],
)
def test_a_bad_notify_option_answers_400_naming_the_entry_and_its_field(notify_server, target, options, field, message):
    error = error_of(submitted(notify_server, [target.url("/ok")], **options))
    assert error["code"] == "invalid_options"
    assert [detail["field"] for detail in error["details"]] == [field]
    assert message in error["details"][0]["message"]


def test_a_webhook_to_a_denied_address_is_refused_with_the_guards_reason_and_never_sent(
    notify_server, target, unreachable
):
    metadata = {"type": "webhook", "url": "http://169.254.169.254/latest", "secret": SECRET}
    error = error_of(submitted(notify_server, [target.url("/ok")], notify=[metadata]))
    assert error["details"][0]["field"] == "options.notify[0].url"
    assert "169.254.169.254 is a private or reserved address" in error["details"][0]["message"]

    loopback = {"url": unreachable.url(), "secret": SECRET}
    answer = submitted(notify_server, [target.url("/ok")], webhook=loopback)
    error = error_of(answer)
    assert answer.status_code == 400
    assert error["details"][0]["field"] == "options.webhook.url"
    assert f"127.0.0.1:{unreachable.port}" in error["message"], error
    assert unreachable.connections == 0
