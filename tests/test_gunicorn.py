"""gunicorn with our worker class serves the API, the pages and the live stream, and stops cleanly."""

from __future__ import annotations

import json
import signal
import socket
import struct
import time

import pytest
import requests

from tests.support.gunicorn import GUNICORN, running_gunicorn

websocket = pytest.importorskip("websocket")
pytestmark = pytest.mark.skipif(GUNICORN is None, reason="gunicorn is not installed (requirements-dev.txt)")


@pytest.fixture
def gunicorn(tmp_path, target_env):
    """gunicorn with our worker and default settings."""
    with running_gunicorn(tmp_path, target_env) as started:
        yield started


def test_gunicorn_with_our_worker_streams_a_batch_and_exits_zero_on_sigterm(gunicorn, target):
    proc, base = gunicorn
    assert "text/html" in requests.get(base + "/", timeout=5).headers["Content-Type"]
    batch = requests.post(
        base + "/api/v1/batches",
        json={"urls": [target.url("/delay/50")] * 20, "options": {"concurrency": 4}},
        timeout=5,
    ).json()
    ws = websocket.create_connection(f"ws{base[4:]}/ws/batches/{batch['id']}?after=0", origin=base, timeout=20)
    types, results = [], 0
    try:
        while not types or types[-1] != "end":
            message = json.loads(ws.recv())
            types.append(message["type"])
            results += sum(e["type"] == "result" for e in message.get("events", []))
    finally:
        ws.close()
    assert types[0] == "snapshot" and results == 20

    foreign = websocket.WebSocket()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        foreign.connect(f"ws{base[4:]}/ws/batches/{batch['id']}", origin="http://evil.example")
    foreign.close()
    assert refused.value.status_code == 403, "the hardened handler checks Origin before the upgrade"

    viewer = websocket.create_connection(f"ws{base[4:]}/ws/batches", origin=base, timeout=20)
    json.loads(viewer.recv())  # snapshot; the list stream never ends on its own
    proc.send_signal(signal.SIGTERM)
    while True:
        opcode, frame = viewer.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
    assert struct.unpack("!H", frame.data[:2])[0] == 1001, "viewers are told the server is going away"
    assert proc.wait(20) == 0
    viewer.shutdown()


def test_under_gunicorn_a_client_trickling_its_headers_gets_408_after_the_header_timeout(tmp_path, target_env):
    with running_gunicorn(tmp_path, {**target_env, "GREENBATCH_HEADER_TIMEOUT": "1"}) as (proc, base):
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=15) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and never the rest
            started, received = time.monotonic(), b""
            while chunk := sock.recv(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 10


def test_under_gunicorn_greenbatch_max_connections_caps_the_worker_connections(tmp_path, target_env):
    psutil = pytest.importorskip("psutil")
    env = {**target_env, "GREENBATCH_MAX_CONNECTIONS": "20", "GREENBATCH_WS_MAX": "5", "GREENBATCH_HEADER_TIMEOUT": "5"}
    with running_gunicorn(tmp_path, env) as (proc, base):
        worker = psutil.Process(proc.pid).children()[0]
        before = worker.num_fds()
        silent = [socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) for _ in range(60)]
        try:
            time.sleep(1)
            assert worker.num_fds() <= before + 20 + 5, "gunicorn's 1,000 worker connections were not lowered"
        finally:
            for sock in silent:
                sock.close()
