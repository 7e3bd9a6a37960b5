"""Checks that tests/support/target.py serves every endpoint the suite and benchmarks rely on."""

import gzip
import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.target import SCRIPT, start_target


@pytest.fixture(scope="module")
def target():
    """One server for the whole module; starting one costs ~0.15 s."""
    server = start_target()
    yield server
    assert server.stop() == 0


def get(target, path, method="GET", headers=None, timeout=10):
    """One request on a fresh http.client connection; returns (response, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp, resp.read()
    finally:
        conn.close()


def raw(target, data, timeout=5):
    """Send raw bytes and read until the server closes; returns everything received."""
    with socket.create_connection(("127.0.0.1", target.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_ok_and_root(target):
    for path in ("/", "/ok"):
        with urllib.request.urlopen(target.url(path), timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/plain"
            assert resp.headers["Content-Length"] == "3"
            assert resp.read() == b"ok\n"


def test_not_found(target):
    resp, body = get(target, "/no/such/thing")
    assert resp.status == 404 and b"not found" in body


def test_status_and_reason(target):
    resp, body = get(target, "/status/418")
    assert (resp.status, resp.reason, body) == (418, "I'm a teapot", b"418 I'm a teapot\n")
    resp, _ = get(target, "/status/503?reason=%3Cscript%3E%22x%22")
    assert (resp.status, resp.reason) == (503, '<script>"x"')
    resp, _ = get(target, "/status/200?reason=a%0D%0AX-Injected:%201")
    assert resp.reason == "aX-Injected: 1" and resp.getheader("X-Injected") is None
    for code in (204, 304):
        resp, body = get(target, "/status/%d" % code)
        assert resp.status == code and body == b"" and resp.getheader("Content-Length") is None
    assert get(target, "/status/199")[0].status == 400


def test_delay(target):
    start = time.monotonic()
    resp, body = get(target, "/delay/200")
    assert time.monotonic() - start >= 0.19
    assert (resp.status, body) == (200, b"ok\n")
    resp, body = get(target, "/delay/0?status=201&bytes=300")
    assert resp.status == 201 and body == bytes(i % 256 for i in range(300))


def test_bytes_plain_chunked_and_delayed(target):
    resp, body = get(target, "/bytes/200000")
    assert resp.getheader("Content-Length") == "200000"
    assert resp.getheader("Content-Type") == "application/octet-stream"
    assert body == bytes(i % 256 for i in range(200000))
    resp, body = get(target, "/bytes/100000?chunked=1")
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert resp.getheader("Content-Length") is None and len(body) == 100000
    assert get(target, "/bytes/0")[1] == b""
    start = time.monotonic()
    assert len(get(target, "/bytes/10?delay=150")[1]) == 10
    assert time.monotonic() - start >= 0.14


def test_html_and_ctype_override(target):
    resp, body = get(target, "/html")
    assert resp.getheader("Content-Type") == "text/html; charset=utf-8"
    assert b"<script>" in body and b'"quotes"' in body
    resp, _ = get(target, "/html?ctype=text/html;%20x=%22%3Cb%3E%22")
    assert resp.getheader("Content-Type") == 'text/html; x="<b>"'


def test_redirect_chain(target):
    with urllib.request.urlopen(target.url("/redirect/3"), timeout=5) as resp:
        assert resp.url == target.url("/redirect/0")
        assert resp.read() == b"done"
    resp, _ = get(target, "/redirect/2?status=307")
    assert resp.status == 307 and resp.getheader("Location") == "/redirect/1?status=307"
    resp, _ = get(target, "/redirect/1?absolute=1&status=308")
    assert resp.status == 308
    assert resp.getheader("Location") == target.url("/redirect/0?absolute=1&status=308")
    assert get(target, "/redirect/1?status=200")[0].status == 400


def test_redirect_to_and_loop(target):
    resp, _ = get(target, "/redirect-to?url=http%3A%2F%2F169.254.169.254%2Flatest&status=301")
    assert resp.status == 301 and resp.getheader("Location") == "http://169.254.169.254/latest"
    resp, _ = get(target, "/redirect-to?url=file%3A%2F%2F%2Fetc%2Fpasswd")
    assert resp.status == 302 and resp.getheader("Location") == "file:///etc/passwd"
    resp, _ = get(target, "/loop")
    assert resp.status == 302 and resp.getheader("Location") == "/loop"
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(target.url("/loop"), timeout=5)


def test_trickle(target):
    start = time.monotonic()
    resp, body = get(target, "/trickle?bytes=4&interval=0.05")
    assert resp.getheader("Content-Length") == "4" and body == b"...."
    assert time.monotonic() - start >= 0.19
    # A read timeout shorter than the interval fires mid-body even though headers arrived.
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=0.2)
    conn.request("GET", "/trickle?bytes=3&interval=1")
    resp = conn.getresponse()
    with pytest.raises(socket.timeout):
        resp.read()
    conn.close()


def test_slow_headers(target):
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=0.2)
    conn.request("GET", "/slow-headers?delay=1000")
    with pytest.raises(socket.timeout):
        conn.getresponse()
    conn.close()
    resp, body = get(target, "/slow-headers?delay=100")
    assert (resp.status, body) == (200, b"ok\n")


def test_endless(target):
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=5)
    conn.request("GET", "/endless")
    resp = conn.getresponse()
    assert resp.getheader("Transfer-Encoding") == "chunked"
    total = 0
    while total < 4 * 1024 * 1024:
        total += len(resp.read(256 * 1024))
    conn.close()
    assert total >= 4 * 1024 * 1024


def test_gzip(target):
    resp, body = get(target, "/gzip?size=12345")
    assert resp.getheader("Content-Encoding") == "gzip"
    assert int(resp.getheader("Content-Length")) == len(body) < 12345
    assert gzip.decompress(body) == bytes(12345)


def test_gzip_bomb(target):
    resp, body = get(target, "/gzip-bomb", timeout=30)
    assert resp.getheader("Content-Encoding") == "gzip"
    assert 150_000 < len(body) < 300_000
    decomp, total = zlib.decompressobj(31), 0
    while body:  # bounded chunks so the test itself never holds 200 MiB
        total += len(decomp.decompress(body, 1 << 20))
        body = decomp.unconsumed_tail
    assert total == 200 * 1024 * 1024


def test_reset_and_close(target):
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=5)
    conn.request("GET", "/reset")
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        conn.getresponse()
    conn.close()
    # Raw recv makes the RST itself visible, not just "no response".
    with socket.create_connection(("127.0.0.1", target.port), timeout=5) as sock:
        sock.sendall(b"GET /reset HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=5)
    conn.request("GET", "/close")
    with pytest.raises(http.client.RemoteDisconnected):
        conn.getresponse()
    conn.close()
    assert raw(target, b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n") == b""


def test_head_and_keep_alive(target):
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=5)
    conn.request("HEAD", "/bytes/5000")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Length") == "5000"
    assert resp.read() == b""
    sock = conn.sock
    # If HEAD had leaked a body, this response on the same socket would be garbage.
    conn.request("GET", "/ok")
    resp = conn.getresponse()
    assert resp.read() == b"ok\n" and conn.sock is sock
    conn.request("POST", "/echo", body=b"x" * 1000)
    assert json.loads(conn.getresponse().read())["method"] == "POST"
    assert conn.sock is sock
    conn.close()


def test_connection_close_and_http10(target):
    out = raw(target, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in out
    assert out.endswith(b"\r\n\r\nok\n")
    out = raw(target, b"GET /ok HTTP/1.0\r\n\r\n")
    assert out.endswith(b"\r\n\r\nok\n")
    # Pipelined HTTP/1.1 requests are answered in order on one connection.
    pipelined = b"GET /ok HTTP/1.1\r\n\r\nGET /status/201 HTTP/1.1\r\nConnection: close\r\n\r\n"
    out = raw(target, pipelined)
    assert out.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 201 Created" in out
    assert raw(target, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_headers_and_echo(target):
    resp, body = get(target, "/headers", headers={"X-Thing": "<b>1</b>"})
    assert resp.getheader("Content-Type") == "application/json"
    assert json.loads(body)["X-Thing"] == "<b>1</b>"
    resp, body = get(target, "/echo?a=1&a=2&b=%20", headers={"X-Y": "z"})
    data = json.loads(body)
    assert data["method"] == "GET" and data["path"] == "/echo"
    assert data["query"] == "a=1&a=2&b=%20" and data["args"] == {"a": ["1", "2"], "b": [" "]}
    assert data["headers"]["X-Y"] == "z"


def test_hits(target):
    target.hits(reset=True)
    get(target, "/ok")
    get(target, "/ok?x=1")
    get(target, "/bytes/3")
    get(target, "/__hits")
    assert target.hits() == {"/ok": 2, "/bytes/3": 1}
    assert target.hits(reset=True) == {"/ok": 2, "/bytes/3": 1}
    assert target.hits() == {}


def test_hold_answers_only_once_the_test_releases_its_key(target):
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(get, target, f"/hold/h1?n={n}&status=201") for n in range(2)]
        deadline = time.monotonic() + 10
        while target.held("h1") < 2:
            assert time.monotonic() < deadline, "both requests held"
            time.sleep(0.01)
        assert not any(future.done() for future in held)
        assert target.release("h1") == 2
        assert [(resp.status, body) for resp, body in (future.result(10) for future in held)] == [
            (201, b"released\n")
        ] * 2
    assert get(target, "/hold/h1")[1] == b"released\n", "a released key holds nothing that comes later"
    assert target.held("h1") == 0
    with ThreadPoolExecutor(3) as pool:
        held = []
        for n in range(3):  # one after another: the first two are the two held longest
            held.append(pool.submit(get, target, f"/hold/h3?n={n}"))
            while target.held("h3") < n + 1:
                assert time.monotonic() < deadline + 10, f"request {n} held"
                time.sleep(0.01)
        assert target.release("h3", count=2) == 2
        assert [future.result(10)[1] for future in held[:2]] == [b"released\n"] * 2, "the two held longest"
        assert target.held("h3") == 1 and not held[2].done(), "a counted release leaves the key holding"
        assert target.release("h3") == 1 and held[2].result(10)[1] == b"released\n"
    resp, body = get(target, "/hold/h2?max=0.05")
    assert (resp.status, body) == (200, b"held past max\n")
    assert get(target, "/__release")[0].status == 400


def test_stop_is_prompt_and_clean():
    server = start_target()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/endless")  # a handler that never finishes must not block exit
    conn.getresponse().read(1000)
    start = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - start < 2
    conn.close()


def test_import_does_not_load_gevent():
    # Importing the helper must not drag gevent (let alone monkey-patching) into test processes.
    code = "import sys, runpy; runpy.run_path(%r, run_name='x'); print('gevent' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code % SCRIPT], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
