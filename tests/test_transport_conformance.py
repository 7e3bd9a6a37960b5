"""Every HTTP client a batch may choose (options.client) keeps the same promises: the same suite, run once
per client against the real server and the real target.

Timings (and null on a reused connection), redirects hop by hop with drained bodies and loops named,
caps on decoded bytes with flat memory, the deadline and the phases it leaves, each error kind, SSRF
pinning (connect only to the address the guard checked; Host, SNI and the certificate stay on the
name), HEAD, the headers sent, keep-alive bounded by the concurrency. No timing assertions: speed
lives in bench/.
"""

from __future__ import annotations

import gzip
import http.server
import re
import socket
import ssl
import subprocess
import threading
import urllib.request
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from app import fetch
from app.core.options import CLIENTS, BatchOptions
from app.fetch.errors import FetchError
from tests.support.memory import peak_rss_during, rss
from tests.support.server import GreenbatchServer, kind_of

MiB = 1024 * 1024
FRESH = ("dns", "connect")  # measured on a new connection, null on a reused one
ALWAYS = ("wait", "download", "ttfb", "total")


# ---------------------------------------------------------------------------------------------
# Helpers: local servers that record what reached them
# ---------------------------------------------------------------------------------------------


class Recorder:
    """An HTTP/1.1 keep-alive server in a thread: it remembers each request's headers and counts connections."""

    def __init__(self):
        self.seen: list[dict[str, str]] = []
        self.connections = 0
        lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with lock:
                    owner.connections += 1

            def do_GET(self):
                owner.seen.append(dict(self.headers))
                self.send_response(200)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"ok\n")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str = "/") -> str:
        """A URL on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class OneAnswer:
    """A TCP server in a thread that answers every request with the same bytes and closes."""

    def __init__(self, answer: bytes):
        self.answer = answer
        self.hung_up = threading.Event()  # set each time a connection is closed
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.recv(65536)
                conn.sendall(self.answer)
            except OSError:
                pass  # the client hung up once it had seen enough
            finally:
                conn.close()
                self.hung_up.set()

    def close(self) -> None:
        self.sock.close()


def free_port() -> socket.socket:
    """A loopback port bound but not listening: connecting to it is refused, and nobody else can take it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


# ---------------------------------------------------------------------------------------------
# Fixtures: one server for the module, allowed the target and our helpers (not the denied listener)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helpers(target):
    """The recorder, a redirect carrying the target's gzip bomb, a refused port and a denied listener."""
    with urllib.request.urlopen(target.url("/gzip-bomb"), timeout=60) as response:
        bomb = response.read()  # 200 KiB of gzip that inflates to 200 MiB (urllib does not decode it)
    recorder = Recorder()
    redirect_bomb = OneAnswer(
        b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n" % len(bomb) + bomb
    )
    refused = free_port()
    denied = socket.create_server(("127.0.0.1", 0))  # listening, on a port the server may not reach
    yield {"recorder": recorder, "redirect_bomb": redirect_bomb, "refused": refused.getsockname()[1], "denied": denied}
    recorder.close()
    redirect_bomb.close()
    refused.close()
    denied.close()


@pytest.fixture(scope="module")
def gb(tmp_path_factory, target, helpers):
    """A greenbatch server of our own (its memory is ours to measure) allowed the target and the helpers."""
    allowed = [target.port, helpers["recorder"].port, helpers["redirect_bomb"].port, helpers["refused"]]
    server = GreenbatchServer(
        tmp_path_factory.mktemp("conformance"),
        {"GREENBATCH_ALLOW_TARGETS": ",".join(f"127.0.0.1:{p}" for p in allowed)},
    ).start()
    yield server
    server.stop()
    server.session.close()  # its kept-alive connection would otherwise be collected, unclosed, in a later test


@pytest.fixture(params=CLIENTS)
def client(request) -> str:
    """Each HTTP client in turn."""
    return request.param


def run(server: GreenbatchServer, urls: list[str], client: str, **options: Any) -> list[dict[str, Any]]:
    """Run a batch with this client to its end; its results in URL order."""
    batch = server.submit(urls, client=client, **options)
    done = server.wait(batch["id"], timeout=60)
    assert done["options"]["client"] == client
    return sorted(server.results(batch["id"]), key=lambda r: r["index"])


# ---------------------------------------------------------------------------------------------
# The option itself
# ---------------------------------------------------------------------------------------------


def test_every_client_the_api_accepts_has_a_transport():
    assert set(CLIENTS) == set(fetch.TRANSPORTS)


def test_an_unknown_client_is_refused_with_400_naming_the_field(gb, target):
    response = gb.request("POST", "/api/v1/batches", json={"urls": [target.url("/ok")], "options": {"client": "curl"}})
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert details[0]["field"] == "options.client" and "fast" in details[0]["message"]


def test_a_batch_that_names_no_client_gets_the_default(gb, target):
    batch = gb.submit([target.url("/ok")])
    assert batch["options"]["client"] == CLIENTS[0]


# ---------------------------------------------------------------------------------------------
# Timings, redirects, HEAD, decoding
# ---------------------------------------------------------------------------------------------


def test_timings_are_measured_and_null_on_a_reused_connection(gb, target, client):
    first, second, third = run(gb, [target.url("/bytes/1500")] * 3, client, concurrency=1)
    for result in (first, second, third):
        assert result["ok"] and result["bytes"] == 1500, result
        assert all(result["timings"][name] is not None for name in ALWAYS), result["timings"]
        assert result["timings"]["tls"] is None  # plain http
    assert all(first["timings"][name] is not None for name in FRESH), first["timings"]
    for reused in (second, third):
        assert all(reused["timings"][name] is None for name in FRESH), reused["timings"]


def test_redirects_are_recorded_hop_by_hop_and_their_bodies_drained_so_the_connection_is_reused(gb, target, client):
    [result] = run(gb, [target.url("/redirect/3")], client)
    assert result["status_code"] == 200 and result["ok"]
    assert [hop["status"] for hop in result["redirects"]] == [302, 302, 302]
    assert [hop["url"] for hop in result["redirects"]] == [target.url(f"/redirect/{n}") for n in (3, 2, 1)]
    assert result["final_url"] == target.url("/redirect/0")
    assert result["timings"]["redirect"] > 0
    assert result["timings"]["connect"] is None  # the last hop rode the first hop's connection


def test_a_redirect_loop_ends_too_many_redirects_naming_the_loop(gb, target, client):
    itself, pair = run(gb, [target.url("/loop"), target.url("/loop-a")], client, max_redirects=2)
    assert kind_of(itself) == "too_many_redirects" and len(itself["redirects"]) == 3
    assert itself["error"]["message"] == "redirect loop: /loop redirects to itself"
    assert kind_of(pair) == "too_many_redirects"
    assert pair["error"]["message"] == "redirect loop: /loop-a -> /loop-b -> /loop-a"


def test_head_reads_no_body(gb, target, client):
    [result] = run(gb, [target.url("/bytes/5000")], client, method="HEAD")
    assert result["status_code"] == 200 and result["bytes"] == 0


def test_gzip_bodies_are_decoded_and_the_decoded_bytes_counted(gb, target, client):
    [result] = run(gb, [target.url("/gzip?size=300000")], client)
    assert result["ok"] and result["bytes"] == 300_000


def _transport(name: str, resolver: Callable[[str, int], list]):
    """A transport of client `name`, as the engine builds one for a batch."""
    options = BatchOptions(concurrency=2, timeout=10, connect_timeout=5, client=name)
    return fetch.TRANSPORTS[name](options, resolver)


def _loopback(host: str, port: int) -> list:
    """A resolver for tests that only fetch 127.0.0.1."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


PAYLOAD = bytes(range(256)) * 400  # 100 KiB


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODED = {
    "deflate-zlib": ("deflate", zlib.compress(PAYLOAD)),
    "deflate-raw": ("deflate", _raw_deflate(PAYLOAD)),
    "gzip-two-members": ("gzip", gzip.compress(PAYLOAD[:1000]) + gzip.compress(PAYLOAD[1000:])),
    "x-gzip": ("x-gzip", gzip.compress(PAYLOAD)),
}
try:
    import brotli

    ENCODED["br"] = ("br", brotli.compress(PAYLOAD))
except ImportError:  # pragma: no cover - brotli comes with geventhttpclient
    pass


@pytest.mark.parametrize("encoding", sorted(ENCODED))
@pytest.mark.parametrize("name", CLIENTS)
def test_every_content_encoding_we_accept_is_decoded_and_counted(name, encoding):
    coding, body = ENCODED[encoding]
    server = OneAnswer(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n" % (coding.encode(), len(body)) + body
    )
    transport = _transport(name, _loopback)
    try:
        hop = transport.fetch(
            f"http://127.0.0.1:{server.port}/",
            method="GET",
            headers={},
            connect_timeout=5,
            read_timeout=5,
            max_bytes=10 * MiB,
        )
    finally:
        transport.close()
        server.close()
    assert hop.status == 200 and hop.bytes == len(PAYLOAD)


@pytest.mark.parametrize("name", CLIENTS)
def test_a_connection_the_server_closed_while_idle_is_not_reused(name):
    server = OneAnswer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # answers, then closes
    transport = _transport(name, _loopback)
    hops = []
    try:
        for _ in range(2):
            server.hung_up.clear()
            hops.append(
                transport.fetch(
                    f"http://127.0.0.1:{server.port}/",
                    method="GET",
                    headers={},
                    connect_timeout=5,
                    read_timeout=5,
                    max_bytes=1024,
                )
            )
            assert server.hung_up.wait(5)  # its FIN is on our side before the next request
    finally:
        transport.close()
        server.close()
    assert [hop.status for hop in hops] == [200, 200]
    assert [hop.connection_reused for hop in hops] == [False, False]


def test_headers_are_sent_with_host_naming_the_port_and_our_user_agent(gb, helpers, client):
    recorder = helpers["recorder"]
    recorder.seen.clear()
    [result] = run(gb, [recorder.url("/probe")], client, headers={"X-Probe": "42"})
    assert result["ok"], result
    [seen] = recorder.seen
    assert seen["X-Probe"] == "42"
    assert seen["Host"] == f"127.0.0.1:{recorder.port}"
    assert seen["User-Agent"].startswith("greenbatch/")
    assert "gzip" in seen["Accept-Encoding"]


def test_connections_are_kept_alive_and_never_more_than_the_concurrency(gb, helpers, client):
    recorder = helpers["recorder"]
    before = recorder.connections
    results = run(gb, [recorder.url(f"/n{i}") for i in range(30)], client, concurrency=3)
    assert all(r["ok"] for r in results)
    assert 1 <= recorder.connections - before <= 3


# ---------------------------------------------------------------------------------------------
# Caps and the deadline
# ---------------------------------------------------------------------------------------------


def test_an_endless_body_and_gzip_bombs_stop_at_the_cap_without_growing_memory(gb, target, helpers, client):
    bomb_redirect = f"http://127.0.0.1:{helpers['redirect_bomb'].port}/"
    urls = [target.url("/endless"), target.url("/gzip-bomb"), target.url("/gzip-bomb"), bomb_redirect]
    run(gb, urls, client, concurrency=4, max_bytes=2 * MiB)  # warm up: pools, codecs, SQLite cache
    pid = gb.proc.pid
    before = rss(pid)
    peak, results = peak_rss_during(pid, lambda: run(gb, urls, client, concurrency=4, max_bytes=2 * MiB))
    assert [kind_of(r) for r in results] == ["too_large"] * 4, results
    assert f"cap of {2 * MiB} decoded bytes" in results[1]["error"]["message"]
    # A redirect's body is drained only up to 64 KiB, whatever max_bytes says.
    assert "cap of 65536 decoded bytes" in results[3]["error"]["message"]
    # Three 200 MiB bombs: inflating even one in memory would add 200 MiB; holding a capped body, 2 MiB.
    assert peak - before < 8 * MiB, f"RSS {before / MiB:.1f} MiB before, peak {peak / MiB:.1f} MiB"


def test_a_trickling_body_ends_at_the_deadline_with_every_phase_before_the_download(gb, target, client):
    [result] = run(gb, [target.url("/trickle?bytes=100&interval=0.2")], client, timeout=1)
    assert kind_of(result) == "deadline", result
    timings = result["timings"]
    assert all(timings[name] is not None for name in (*FRESH, "wait")), timings
    assert timings["ttfb"] is None and "download" not in timings, timings
    assert re.fullmatch(
        r"the 1 s deadline passed with the body still coming after [\d.]+ s "
        r"\(dns [\d.]+ ms, connect [\d.]+ ms, wait [\d.]+ ms done\)",
        result["error"]["message"],
    ), result["error"]


def test_a_deadline_before_the_first_byte_keeps_dns_and_connect_and_says_what_it_waited_for(gb, target, client):
    [result] = run(gb, [target.url("/delay/5000")], client, timeout=0.5)
    assert kind_of(result) == "deadline", result
    timings = result["timings"]
    assert all(timings[name] is not None for name in FRESH), timings
    assert timings["tls"] is None  # plain http
    assert timings["ttfb"] is None and "wait" not in timings, timings
    assert re.fullmatch(
        r"the 0\.5 s deadline passed with no first byte after 0\.\d+ s \(dns [\d.]+ ms, connect [\d.]+ ms done\)",
        result["error"]["message"],
    ), result["error"]


def test_headers_that_never_come_end_at_the_deadline(gb, target, client):
    [result] = run(gb, [target.url("/slow-headers?delay=5000")], client, timeout=0.5)
    assert kind_of(result) in ("deadline", "read_timeout"), result


@pytest.mark.parametrize("name", CLIENTS)
def test_headers_slower_than_the_read_timeout_end_as_read_timeout(target, name):
    # Through the engine the read timeout is the batch's deadline, so either may fire first (above);
    # the transport alone, with no deadline around it, must name the read timeout.
    transport = _transport(name, _loopback)
    try:
        with pytest.raises(FetchError) as failure:
            transport.fetch(
                target.url("/slow-headers?delay=5000"),
                method="GET",
                headers={},
                connect_timeout=5,
                read_timeout=0.5,
                max_bytes=1024,
            )
    finally:
        transport.close()
    assert failure.value.kind == "read_timeout", failure.value


# ---------------------------------------------------------------------------------------------
# Error kinds
# ---------------------------------------------------------------------------------------------


def test_connection_failures_are_named_by_kind(gb, target, helpers, client):
    # The dns kind is tested per client in test_ssrf.py, against a resolver of our own: a name
    # that does not resolve here would send a query off this machine.
    urls = [
        f"http://127.0.0.1:{helpers['refused']}/",
        f"https://127.0.0.1:{target.port}/ok",
        target.url("/reset"),
        target.url("/close"),
    ]
    refused, tls, reset, closed = run(gb, urls, client, timeout=5)
    assert kind_of(refused) == "refused", refused
    assert kind_of(tls) == "tls", tls
    assert kind_of(reset) == "other" and "reset" in reset["error"]["message"], reset
    assert kind_of(closed) == "other", closed


def test_connection_errors_are_retried_and_each_attempt_counted(gb, helpers, client):
    [result] = run(gb, [f"http://127.0.0.1:{helpers['refused']}/"], client, retries=2)
    assert kind_of(result) == "refused" and result["attempts"] == 3


# ---------------------------------------------------------------------------------------------
# SSRF: only addresses the guard checked are ever connected to
# ---------------------------------------------------------------------------------------------


def test_denied_addresses_end_blocked_and_their_listener_sees_no_connection(gb, target, helpers, client):
    denied = helpers["denied"]
    port = denied.getsockname()[1]
    # Typed in a batch, these are refused at submit; a redirect brings each to the transport's guard.
    urls = [
        target.url(f"/redirect-to?url=http://127.0.0.1:{port}/"),
        target.url(f"/redirect-to?url=http://localhost:{port}/"),
        target.url(f"/redirect-to?url=http://[::ffff:127.0.0.1]:{port}/"),
    ]
    for result in run(gb, urls, client):
        assert kind_of(result) == "blocked" and len(result["redirects"]) == 1, result
    denied.settimeout(0)
    with pytest.raises(BlockingIOError):
        denied.accept()  # nothing is waiting in the backlog: not even a TCP handshake got through


def pinned_resolver(name: str, port: int, calls: list) -> Callable[[str, int], list]:
    """A resolver that maps `name` (an unresolvable .invalid name) to 127.0.0.1, as the guard returns it."""

    def resolve(host: str, asked_port: int) -> list:
        calls.append((host, asked_port))
        if host != name:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not {name}")
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))]

    return resolve


@pytest.mark.parametrize("name", CLIENTS)
def test_a_transport_connects_to_the_resolved_address_and_keeps_the_name_in_host(helpers, name):
    recorder = helpers["recorder"]
    recorder.seen.clear()
    calls: list = []
    options = BatchOptions(concurrency=2, timeout=10, connect_timeout=5, client=name)
    transport = fetch.TRANSPORTS[name](options, pinned_resolver("pinned.invalid", recorder.port, calls))
    try:
        for _ in range(3):
            hop = transport.fetch(
                f"http://pinned.invalid:{recorder.port}/pin",
                method="GET",
                headers={},
                connect_timeout=5,
                read_timeout=5,
                max_bytes=1024,
            )
            assert hop.status == 200 and hop.bytes == 3
    finally:
        transport.close()
    # .invalid never resolves: reaching the recorder means the transport used the resolver's address.
    assert calls == [("pinned.invalid", recorder.port)]  # resolved once, then the connection was reused
    assert [seen["Host"] for seen in recorder.seen] == [f"pinned.invalid:{recorder.port}"] * 3


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """A TLS server with a self-signed certificate for pinned.invalid; it records the SNI each client sends."""
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=pinned.invalid",
                "-addext",
                "subjectAltName=DNS:pinned.invalid",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl cannot make a test certificate: {exc}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list = []
    context.sni_callback = lambda sslsock, name, ctx: names.append(name)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1024)
            except (OSError, ssl.SSLError):
                pass  # the client refuses our self-signed certificate, as it should
            finally:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1], names
    listener.close()


@pytest.mark.parametrize("name", CLIENTS)
def test_tls_sends_the_name_as_sni_and_verifies_the_certificate(tls_server, name):
    port, names = tls_server
    names.clear()
    options = BatchOptions(concurrency=1, timeout=10, connect_timeout=5, client=name)
    transport = fetch.TRANSPORTS[name](options, pinned_resolver("pinned.invalid", port, []))
    try:
        with pytest.raises(FetchError) as failure:
            transport.fetch(
                f"https://pinned.invalid:{port}/",
                method="GET",
                headers={},
                connect_timeout=5,
                read_timeout=5,
                max_bytes=1024,
            )
    finally:
        transport.close()
    assert failure.value.kind == "tls"
    assert "certificate" in str(failure.value).lower()  # refused for its (self-signed) certificate
    assert names == ["pinned.invalid"]  # SNI on the URL's name, though the socket went to 127.0.0.1
