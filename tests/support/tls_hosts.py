"""HTTPS hosts for tests of what greenbatch captures: one small server per loopback address (127.0.0.2, .3, ...),
each presenting its own certificate (an IP SAN, an expiry of its own) from a CA the tests make with trustme."""

from __future__ import annotations

import datetime
import http.server
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import trustme

FORMULA = '=HYPERLINK("http://evil.example","<img src=x onerror=alert(1)>")'  # a header a spreadsheet would run
CAPTURED_HEADERS = {"Cache-Control": "max-age=60", "X-Robots-Tag": "noindex", "Server": "tls-host/1.0"}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tls-host/1.0"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        """/redirect answers 302 to /; /long-header sends a 5 KiB header, /formula one a spreadsheet would run;
        anything else 200 with a few headers."""
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"ok"
        self.send_response(200)
        self.send_header("Cache-Control", CAPTURED_HEADERS["Cache-Control"])
        self.send_header("X-Robots-Tag", CAPTURED_HEADERS["X-Robots-Tag"])
        if self.path == "/long-header":
            self.send_header("X-Long", "<b>" + "x" * 5000)
        if self.path == "/formula":
            self.send_header("X-Formula", FORMULA)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
        """Quiet."""


@dataclass
class Host:
    """One HTTPS host: its address, port and the expiry of the certificate it presents."""

    ip: str
    port: int
    not_after: datetime.datetime

    def url(self, path: str = "/") -> str:
        return f"https://{self.ip}:{self.port}{path}"


class TlsHosts:
    """`count` HTTPS servers on 127.0.0.2 (127.0.0.`first`) onwards, host i's certificate expiring `days(i)` days
    from now and naming `names(ip)`."""

    def __init__(self, folder: Path, count: int, days=lambda i: 90 + i, names=lambda ip: [ip], first: int = 2):
        self.ca = trustme.CA()
        self.ca_file = folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.hosts: list[Host] = []
        self._servers: list[http.server.ThreadingHTTPServer] = []
        now = datetime.datetime.now(datetime.UTC)
        for i in range(count):
            ip = f"127.0.{(i + first) // 256}.{(i + first) % 256}"  # 127.0.0.2 onwards
            not_after = (now + datetime.timedelta(days=days(i), hours=12)).replace(microsecond=0)
            cert = self.ca.issue_cert(*names(ip), not_after=not_after)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert.configure_cert(context)
            server = http.server.ThreadingHTTPServer((ip, 0), _Handler)
            server.daemon_threads = True
            server.socket = context.wrap_socket(server.socket, server_side=True)
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
            self._servers.append(server)
            self.hosts.append(Host(ip, server.server_address[1], not_after))

    @property
    def allow(self) -> str:
        """GREENBATCH_ALLOW_TARGETS for exactly these hosts."""
        return ",".join(f"{host.ip}:{host.port}" for host in self.hosts)

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
