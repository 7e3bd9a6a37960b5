"""Limits of the server itself: request timeouts, the connection and websocket caps, the open-file limit,
prompt keep-alive answers and a Host header no one can break the websocket gate with."""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import time
from typing import Any

import psutil
import pytest
import websocket

from app.core.config import Config, ConfigError
from tests.support.server import GreenbatchServer

UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
)


def address(server: GreenbatchServer) -> tuple[str, int]:
    """The server's host and port."""
    host, _, port = server.base_url[len("http://") :].rpartition(":")
    return host, int(port)


def open_socket(server: GreenbatchServer, timeout: float = 15) -> socket.socket:
    """A raw TCP connection to the server."""
    return socket.create_connection(address(server), timeout=timeout)


def read_until_closed(sock: socket.socket, limit: float = 15) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took (fails after `limit` s)."""
    started, received = time.monotonic(), b""
    sock.settimeout(limit)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return received, time.monotonic() - started
        received += chunk


def status_of(raw: bytes) -> int:
    """The status code of a raw HTTP response."""
    return int(raw.split(b" ", 2)[1])


def open_files(server: GreenbatchServer) -> int:
    """How many descriptors the server process holds."""
    assert server.proc is not None
    return psutil.Process(server.proc.pid).num_fds()


def get(server: GreenbatchServer, path: str, host: str = "127.0.0.1", extra: str = "") -> bytes:
    """One request on a fresh connection with this Host header (latin-1, as on the wire); the raw response."""
    with open_socket(server) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode("latin-1"))
        return read_until_closed(sock)[0]


@pytest.fixture(scope="module")
def brisk_server(tmp_path_factory, target_env):
    """A server with 1 s to send headers and 3 s between kept-alive requests."""
    env = {**target_env, "GREENBATCH_HEADER_TIMEOUT": "1", "GREENBATCH_KEEPALIVE_TIMEOUT": "3"}
    instance = GreenbatchServer(tmp_path_factory.mktemp("brisk"), env).start()
    yield instance
    instance.stop()


# -- timeouts ------------------------------------------------------------------------------------


def test_a_client_trickling_its_headers_gets_408_and_is_disconnected_after_the_header_timeout(brisk_server):
    with open_socket(brisk_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        sock.settimeout(0.2)
        received = b""
        while time.monotonic() - started < 15:  # a header byte every 0.2 s, never the blank line
            try:
                sock.sendall(b"X")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break  # the server closed while we were still sending
            if not chunk:
                break
            received += chunk
        elapsed = time.monotonic() - started
    assert elapsed < 10, "a client trickling its headers kept its connection"
    assert status_of(received) == 408
    body = json.loads(received.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "request_timeout" and "GREENBATCH_HEADER_TIMEOUT" in body["error"]["message"]


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout_without_an_answer(brisk_server):
    with open_socket(brisk_server) as sock:
        received, elapsed = read_until_closed(sock)
    assert received == b"" and elapsed < 10


def test_a_kept_alive_connection_may_idle_past_the_header_timeout_and_closes_after_the_keepalive_timeout(brisk_server):
    host, port = address(brisk_server)
    connection = http.client.HTTPConnection(host, port, timeout=15)
    try:
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() and connection.sock is not None
        time.sleep(1.8)  # longer than the 1 s header timeout, shorter than the 3 s keep-alive timeout
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        assert response.status == 200 and response.read()
        received, elapsed = read_until_closed(connection.sock)
    finally:
        connection.close()
    assert received == b"" and elapsed < 12, "an idle kept-alive connection stayed open"


def test_a_kept_alive_request_must_send_its_headers_within_the_header_timeout_of_its_first_byte(brisk_server):
    with open_socket(brisk_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while b'"ok"' not in first:
            first += sock.recv(65536)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # and then nothing
        received, elapsed = read_until_closed(sock)
    assert status_of(received) == 408 and elapsed < 10


# -- caps ----------------------------------------------------------------------------------------


def test_silent_clients_cannot_take_more_descriptors_than_the_connection_cap_and_others_get_answers_once_they_time_out(
    make_server,
):
    server = make_server(
        env={"GREENBATCH_MAX_CONNECTIONS": "20", "GREENBATCH_WS_MAX": "5", "GREENBATCH_HEADER_TIMEOUT": "2"}
    )
    get(server, "/healthz")
    before = open_files(server)
    silent = [open_socket(server) for _ in range(60)]
    try:
        most = before
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # the first twenty are held, the rest wait in the listen queue
            most = max(most, open_files(server))
            time.sleep(0.05)
        assert most <= before + 20 + 5, f"the server held {most - before} more descriptors with a cap of 20"
        started = time.monotonic()
        assert status_of(get(server, "/healthz")) == 200
        assert time.monotonic() - started < 20
    finally:
        for sock in silent:
            sock.close()


def test_websockets_past_the_server_wide_cap_get_503_before_the_upgrade_and_plain_requests_still_pass(make_server):
    server = make_server(env={"GREENBATCH_MAX_CONNECTIONS": "20", "GREENBATCH_WS_MAX": "2"})
    url = "ws" + server.base_url[len("http") :] + "/ws/batches"
    viewers = [websocket.create_connection(url, timeout=15) for _ in range(2)]
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, timeout=15)
        assert refused.value.status_code == 503
        error = json.loads(refused.value.resp_body)["error"]
        assert error["code"] == "service_unavailable" and "GREENBATCH_WS_MAX" in error["message"]
        assert server.request("GET", "/api/v1/batches").status_code == 200
    finally:
        for viewer in viewers:
            viewer.close()


def test_a_websocket_cap_not_below_the_connection_cap_is_refused_at_start():
    with pytest.raises(ConfigError, match="GREENBATCH_WS_MAX"):
        Config(max_connections=100, ws_max=100)


# -- the open-file limit -------------------------------------------------------------------------


def test_under_an_open_file_limit_below_the_caps_they_are_lowered_with_a_log_line_and_no_url_is_lost(
    make_server, target
):
    server = make_server(prefix=["prlimit", "--nofile=256:256"])
    log = server.log()
    assert "GREENBATCH_MAX_INFLIGHT" in log and "GREENBATCH_MAX_CONNECTIONS" in log
    assert "ulimit -n" in log and "LimitNOFILE" in log
    results = server.run_batch([target.url(f"/delay/100?n={i}") for i in range(2000)], concurrency=1000)
    failed = [r["error"] for r in results.values() if r["error"]]
    assert len(results) == 2000 and not failed, failed[:3]


def test_a_soft_open_file_limit_below_what_the_caps_need_is_raised_up_to_the_hard_limit(make_server):
    server = make_server(prefix=["prlimit", "--nofile=256:8192"])
    assert server.proc is not None
    assert psutil.Process(server.proc.pid).rlimit(psutil.RLIMIT_NOFILE) == (8192, 8192)
    assert "raised the open-file limit from 256 to 8192" in server.log()


# -- keep-alive latency --------------------------------------------------------------------------


def test_requests_on_a_kept_alive_connection_are_answered_about_as_fast_as_on_a_fresh_one(server):
    host, port = address(server)

    def timed(connection: http.client.HTTPConnection) -> float:
        started = time.perf_counter()
        connection.request("GET", "/api/v1/batches?limit=1")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        return time.perf_counter() - started

    kept = http.client.HTTPConnection(host, port, timeout=15)
    try:
        timed(kept)
        kept_alive = [timed(kept) for _ in range(20)]
    finally:
        kept.close()
    fresh = []
    for _ in range(20):
        connection = http.client.HTTPConnection(host, port, timeout=15)
        try:
            fresh.append(timed(connection))
        finally:
            connection.close()
    kept_median, fresh_median = statistics.median(kept_alive), statistics.median(fresh)
    assert kept_median < 3 * fresh_median + 0.005, (
        f"kept-alive median {kept_median * 1000:.1f} ms against {fresh_median * 1000:.1f} ms on fresh connections"
    )


# -- the Host header at the websocket gate -------------------------------------------------------

MALFORMED_HOSTS = [
    "127.0.0.1:\u00b2",
    "127.0.0.1:\u00b9\u00b2",
    "127.0.0.1:99999",
    "127.0.0.1:0",
    "127.0.0.1:" + "9" * 5000,
    "127.0.0.1:+80",
    "[::1",
    "[::1]x",
    "[::1]:\u00b3",
    ":",
    "[]:80",
]


@pytest.mark.parametrize("host", MALFORMED_HOSTS, ids=repr)
def test_a_malformed_host_header_on_a_websocket_upgrade_gets_400_never_a_server_error(server, host):
    response = get(server, "/ws/batches", host=host, extra=UPGRADE)
    assert status_of(response) == 400, response[:300]
    assert error_in(response)["message"].startswith("the Host header")


@pytest.mark.parametrize("host", MALFORMED_HOSTS[:3], ids=repr)
def test_a_malformed_host_header_on_a_plain_request_is_refused_never_a_server_error(server, host):
    assert status_of(get(server, "/healthz", host=host)) in (400, 403)


def test_no_host_header_made_the_server_log_a_traceback(server):
    for host in MALFORMED_HOSTS:
        get(server, "/ws/batches", host=host, extra=UPGRADE + f"Origin: http://{host}\r\n")
    assert "Traceback" not in server.log()


def error_in(raw: bytes) -> dict[str, Any]:
    """The error envelope of a raw response."""
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"]
