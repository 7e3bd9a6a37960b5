"""SSRF attacks end to end: the real server is handed hostile URLs, and listeners on denied addresses
prove that no connection was even attempted.

Every packet these tests cause stays on loopback. In the host's namespaces only IP literals and
"localhost" (from /etc/hosts) are ever resolved; names such as rebind.test are resolved only by a
server whose resolv.conf points at the fake DNS server below, and non-loopback addresses are fetched
only by a server inside a network namespace that has nothing but loopback.

An address (or localhost) typed in a batch needs no DNS, so the server refuses it at submit with a 400 that
says how to allow it; the fetch-time guard is reached by redirects from the allowed target to the denied
address (and by names, through the fake DNS server). The servers here explain their refusals
(GREENBATCH_EXPLAIN_BLOCKED), so each test can assert which rule refused a URL; section 6 checks what a
server that does not explain them tells whoever submitted it.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from app.core.options import CLIENTS
from tests.support.server import GreenbatchServer, kind_of
from tests.support.target import start_target

EXPLAIN = "GREENBATCH_EXPLAIN_BLOCKED"
PROBE = "/ssrf-probe"  # the target counts hits on every path, even a 404, so a leak to it shows
DNS_ADDRESS = "127.0.0.153"  # the fake DNS server: loopback, port 53 (resolv.conf cannot name a port)
CLONE_NEWNET = 0x40000000


# ---------------------------------------------------------------------------------------------
# Helpers: listeners that count, namespaces, a fake DNS server
# ---------------------------------------------------------------------------------------------


class CountingListener:
    """A plain TCP listener on a denied address; connections() counts every connection that reached it.

    Nothing accepts while a test runs: the kernel completes handshakes into the backlog, and
    connections() drains it, so a connection is counted even if its client has already given up.
    """

    def __init__(self, host: str, port: int = 0):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.host, self.port = host, self.sock.getsockname()[1]
        self._count = 0

    def connections(self) -> int:
        """Connections that reached this listener so far."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return self._count
            conn.close()
            self._count += 1

    def close(self) -> None:
        self.sock.close()


def ipv6_loopback_available() -> bool:
    """Whether ::1 exists here (it is missing on hosts that disable IPv6)."""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def teredo(client: str, server: str = "192.0.2.1") -> str:
    """The Teredo address of a client IPv4 (stored XORed with 0xffffffff, as on the wire)."""
    value = (
        (0x2001 << 112) | (int(ipaddress.IPv4Address(server)) << 64) | (int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF)
    )
    return str(ipaddress.IPv6Address(value))


def probe_hits(target) -> int:
    """How many requests for PROBE reached the target (the target counts hits by path)."""
    return target.hits().get(PROBE, 0)


_libc = ctypes.CDLL(None, use_errno=True)


class LoopbackOnlyNamespace:
    """A worker thread inside a fresh network namespace that has only `lo`.

    Network namespaces belong to threads, and child processes inherit the one of the thread that
    starts them, so every process this thread starts and every socket it opens lives in there: a
    packet to 169.254.169.254 has no route and never leaves, whatever the guard decides.
    """

    def __init__(self):
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns")
        try:
            self.run(self._enter)
        except BaseException:
            self._worker.shutdown()
            raise
        self.id = self.run(os.readlink, "/proc/thread-self/ns/net")

    @staticmethod
    def _enter() -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"unshare(CLONE_NEWNET): {os.strerror(error)}")
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True)
        links = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True, text=True).stdout
        names = [line.split(":")[1].strip() for line in links.splitlines()]
        if names != ["lo"]:
            raise RuntimeError(f"the new network namespace has interfaces besides lo: {names}")

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call fn inside the namespace and return what it returns."""
        return self._worker.submit(fn, *args, **kwargs).result()

    def holds(self, pid: int) -> bool:
        """Whether a process lives in this namespace."""
        return os.readlink(f"/proc/{pid}/ns/net") == self.id

    def close(self) -> None:
        self._worker.shutdown()


class NamespacedServer(GreenbatchServer):
    """A greenbatch server started, and talked to, from inside a LoopbackOnlyNamespace."""

    def __init__(self, netns: LoopbackOnlyNamespace, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.netns = netns

    def start(self, timeout: float = 20) -> NamespacedServer:
        self.netns.run(super().start, timeout)
        return self

    def request(self, method: str, path: str, **kwargs: Any):
        return self.netns.run(super().request, method, path, **kwargs)


class FakeDns:
    """A UDP DNS server on DNS_ADDRESS:53 that answers A queries from a script, with a TTL of 0.

    answer(name, first, then...) makes the first A query for name get `first`, the next `then`,
    and so on, the last answer repeating: an attacker's rebinding DNS. AAAA queries get no answers.
    """

    def __init__(self, address: str = DNS_ADDRESS):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((address, 53))
        except OSError:
            self.sock.close()  # port 53 taken (another run's fake DNS): the caller skips
            raise
        self.sock.settimeout(0.2)
        self._scripts: dict[str, list[list[str]]] = {}
        self._asked: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def answer(self, name: str, *rounds: list[str]) -> None:
        """Script the A answers for name, and forget how often it was asked."""
        self._scripts[name] = list(rounds)
        self._asked[name] = 0

    def a_queries(self, name: str) -> int:
        """A queries received for name since answer() scripted it."""
        return self._asked.get(name, 0)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, peer = self.sock.recvfrom(512)
                self.sock.sendto(self._reply(query), peer)
            except (TimeoutError, IndexError, struct.error):
                continue

    def _reply(self, query: bytes) -> bytes:
        end, labels = 12, []
        while query[end]:
            labels.append(query[end + 1 : end + 1 + query[end]].decode("ascii").lower())
            end += 1 + query[end]
        (qtype,) = struct.unpack("!H", query[end + 1 : end + 3])
        name, question = ".".join(labels), query[12 : end + 5]
        addresses: list[str] = []
        if qtype == 1 and name in self._scripts:
            rounds, asked = self._scripts[name], self._asked[name]
            addresses = rounds[min(asked, len(rounds) - 1)]
            self._asked[name] = asked + 1
        rcode = 0 if name in self._scripts else 3  # NXDOMAIN for anything not scripted
        header = query[:2] + struct.pack("!HHHHH", 0x8180 | rcode, 1, len(addresses), 0, 0)
        records = b"".join(
            b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + ipaddress.IPv4Address(a).packed for a in addresses
        )
        return header + question + records

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _namespace_problem(tools: tuple[str, ...], *probe: str) -> str | None:
    """Why namespaces cannot be used here (a tool missing, not root), or None when the probe runs."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (.ci/run installs iproute2)"
    probe_run = subprocess.run(probe, capture_output=True, text=True)
    if probe_run.returncode != 0:
        return f"{' '.join(probe[:2])} is not permitted here: {probe_run.stderr.strip()}"
    return None


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target_env(target_env) -> dict[str, str]:
    """conftest's settings, with refusals explained: the tests below assert the rule that refused each URL."""
    return {**target_env, EXPLAIN: "1"}


@pytest.fixture(scope="module")
def listeners(target):
    """Listeners on denied addresses: 127.0.0.1 on a port not allowed, 127.0.0.2 on the target's port,
    and (with IPv6) ::1 on another port and on the target's port."""
    found = {"denied": CountingListener("127.0.0.1"), "target": CountingListener("127.0.0.2", target.port)}
    if ipv6_loopback_available():
        found["denied6"] = CountingListener("::1")
        found["target6"] = CountingListener("::1", target.port)
    yield found
    for listener in found.values():
        listener.close()


@pytest.fixture(scope="module")
def ports(listeners, target) -> dict[str, int]:
    """The ports URL templates aim at: {denied}, {denied6} and {target}."""
    denied6 = listeners.get("denied6", listeners["denied"])
    return {"denied": listeners["denied"].port, "denied6": denied6.port, "target": target.port}


def assert_nothing_reached(listeners, target, before_probe_hits: int = 0) -> None:
    """No denied listener saw a connection and the target saw no PROBE request."""
    assert {name: listener.connections() for name, listener in listeners.items()} == dict.fromkeys(listeners, 0)
    assert probe_hits(target) == before_probe_hits


# ---------------------------------------------------------------------------------------------
# 1. Inputs refused at submit, and denied addresses in every spelling, typed or redirected to
# ---------------------------------------------------------------------------------------------

# (id, URL, what the 400's message for that index says)
REFUSED_AT_SUBMIT = [
    ("file-scheme", "file:///etc/passwd", "scheme: file:"),
    ("gopher-scheme", "gopher://127.0.0.1:6379/_INFO", "scheme: gopher:"),
    ("dict-scheme", "dict://127.0.0.1:11211/stat", "scheme: dict:"),
    ("ftp-scheme", "ftp://127.0.0.1/", "scheme: ftp:"),
    ("javascript-scheme", "javascript:alert(document.domain)", "scheme: javascript:"),
    ("data-scheme", "data:text/plain,hi", "scheme: data:"),
    ("no-scheme", "127.0.0.1/ok", "scheme: none"),
    ("backslashes-for-slashes", "http:\\\\127.0.0.1\\ok", "backslash"),
    ("backslash-before-at", "http://127.0.0.1:{target}\\@127.0.0.2/", "backslash"),
    ("crlf-header-injection", "http://127.0.0.1:{target}/ok\r\nX-Injected: 1", "line break"),
    ("lone-line-feed", "http://127.0.0.1:{target}/ok\nHost: 127.0.0.2", "line break"),
    ("nul-byte", "http://127.0.0.1:{target}/ok\x00", "control character U+0000"),
    ("tab-in-host", "http://127.0.0.1\t:{target}/ok", "control character U+0009"),
    ("delete-character", "http://127.0.0.1:{target}/ok\x7f", "control character U+007F"),
    ("space", "http://127.0.0.1 :{target}/ok", "a space"),
    ("zero-width-space-in-host", "http://127.0.0.1\u200b/", "invisible or space-like character U+200B"),
    ("right-to-left-override", "http://\u202e1.0.0.721/", "invisible or space-like character U+202E"),
    ("userinfo", "http://user@127.0.0.1:{target}/ok", "user name or password"),
    ("userinfo-hiding-the-real-host", "http://127.0.0.1:{target}@127.0.0.2/", "user name or password"),
    ("over-2048-characters", "http://127.0.0.1:{target}/" + "a" * 2048, "the limit is 2048"),
    ("full-width-digits-host", "http://１２７.０.０.１/", "full-width or look-alike characters are refused"),
    ("ideographic-full-stops", "http://127。0。0。1/", "full-width or look-alike characters are refused"),
    ("full-width-port", "http://127.0.0.1:８０/", "is not a number"),
    ("percent-encoded-host", "http://%31%32%37.0.0.1/", "characters not allowed in a hostname"),
    ("ipv6-zone-id", "http://[fe80::1%25lo]/", "zone ID"),
    ("unbracketed-ipv6", "http://::1/", "must be in brackets"),
    ("missing-slashes", "http:127.0.0.1/", "must continue with '//'"),
    ("port-out-of-range", "http://127.0.0.1:65536/", "outside 1-65535"),
]


@pytest.mark.parametrize("url, why", [case[1:] for case in REFUSED_AT_SUBMIT], ids=[c[0] for c in REFUSED_AT_SUBMIT])
def test_malformed_or_non_http_urls_are_refused_at_submit_naming_their_index(server, target, ports, url, why):
    response = server.request("POST", "/api/v1/batches", json={"urls": [target.url("/ok"), url.format(**ports)]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_urls" and "#1" in error["message"]
    assert [(d["index"], d["field"]) for d in error["details"]] == [(1, "urls[1]")]
    assert why in error["details"][0]["message"]


NOT_FETCHED = "; this server does not fetch it"
ONLY_ON_TARGET = " on port {denied} (GREENBATCH_ALLOW_TARGETS allows it only on port {target})"


def restart(entry: str) -> str:
    """The end of a submit-time refusal: the restart that adds `entry` to the allow-list the servers here have."""
    return "; restart with GREENBATCH_ALLOW_TARGETS=127.0.0.1:{target}," + entry


# (id, URL, what the blocked result's message says when a redirect leads there, what the 400 says when the
# URL is submitted). {denied}: a loopback port nothing allows; {target}: the target's port, allowed only on
# 127.0.0.1; {denied6}: the [::1] listener's port. Only spellings Linux routes to loopback are here; IPv6
# forms that merely embed 127.0.0.1 (6to4, NAT64, Teredo, ...) would leave by the default route if the
# guard failed, so they run in part 4.
DENIED_FORMS = [
    (
        "loopback-on-a-port-not-allowed",
        "http://127.0.0.1:{denied}",
        "127.0.0.1 is loopback (GREENBATCH_ALLOW_TARGETS allows it only on port",
        "127.0.0.1 is loopback" + NOT_FETCHED + ONLY_ON_TARGET + restart("127.0.0.1:{denied}"),
    ),
    (
        "loopback-on-the-default-port",
        "http://127.0.0.1",
        "127.0.0.1 is loopback",
        "127.0.0.1 is loopback" + NOT_FETCHED + ONLY_ON_TARGET.replace("{denied}", "80") + restart("127.0.0.1:80"),
    ),
    (
        "https-to-loopback",
        "https://127.0.0.1:{denied}",
        "127.0.0.1 is loopback",
        "127.0.0.1 is loopback" + NOT_FETCHED + ONLY_ON_TARGET + restart("127.0.0.1:{denied}"),
    ),
    (
        "localhost",
        "http://localhost:{denied}",
        "localhost resolves to",
        "localhost is this machine (loopback, 127.0.0.1 or ::1)" + NOT_FETCHED + restart("localhost:{denied}"),
    ),
    (
        "localhost-in-capitals",
        "http://LOCALHOST:{denied}",
        "localhost resolves to",
        "localhost is this machine (loopback, 127.0.0.1 or ::1)" + NOT_FETCHED + restart("localhost:{denied}"),
    ),
    *(
        (
            case,
            f"http://{host}:{{denied}}",
            f"{host} resolves to 127.0.0.1, which is loopback",
            f"{host} (that is 127.0.0.1) is loopback" + NOT_FETCHED + ONLY_ON_TARGET + restart("127.0.0.1:{denied}"),
        )
        for case, host in [
            ("short-form-127.1", "127.1"),
            ("three-part-127.0.1", "127.0.1"),
            ("decimal-integer", "2130706433"),
            ("hex-parts", "0x7f.1"),
            ("hex-integer", "0x7f000001"),
            ("octal-first-part", "0177.0.0.1"),
            ("zero-padded-octal", "127.000.000.001"),
            ("octal-integer", "017700000001"),
        ]
    ),
    (
        "this-network-on-the-target-port",
        "http://0.0.0.0:{target}",
        "0.0.0.0 is 'this network'",
        "0.0.0.0 is 'this network' (0.0.0.0 reaches loopback on Linux)" + NOT_FETCHED + restart("0.0.0.0:{target}"),
    ),
    (
        "zero-on-the-target-port",
        "http://0:{target}",
        "0 resolves to 0.0.0.0, which is 'this network'",
        "0 (that is 0.0.0.0) is 'this network' (0.0.0.0 reaches loopback on Linux)"
        + NOT_FETCHED
        + restart("0.0.0.0:{target}"),
    ),
    (
        "second-loopback-address-on-the-target-port",
        "http://127.0.0.2:{target}",
        "127.0.0.2 is loopback",
        "127.0.0.2 is loopback" + NOT_FETCHED + restart("127.0.0.2:{target}"),
    ),
    (
        "ipv4-mapped",
        "http://[::ffff:127.0.0.1]:{denied}",
        "IPv4-mapped address of 127.0.0.1, which is loopback",
        "::ffff:127.0.0.1 is an IPv4-mapped address of 127.0.0.1, which is loopback"
        + NOT_FETCHED
        + ONLY_ON_TARGET
        + restart("127.0.0.1:{denied}"),
    ),
    (
        "ipv4-mapped-in-hex",
        "http://[::ffff:7f00:1]:{denied}",
        "IPv4-mapped address of 127.0.0.1, which is loopback",
        "::ffff:127.0.0.1 is an IPv4-mapped address of 127.0.0.1, which is loopback"
        + NOT_FETCHED
        + ONLY_ON_TARGET
        + restart("127.0.0.1:{denied}"),
    ),
    (
        "ipv4-mapped-second-loopback-on-the-target-port",
        "http://[::ffff:127.0.0.2]:{target}",
        "IPv4-mapped address of 127.0.0.2",
        "::ffff:127.0.0.2 is an IPv4-mapped address of 127.0.0.2, which is loopback"
        + NOT_FETCHED
        + restart("127.0.0.2:{target}"),
    ),
    (
        "ipv6-loopback",
        "http://[::1]:{denied6}",
        "::1 is loopback",
        "::1 is loopback" + NOT_FETCHED + restart("[::1]:{denied6}"),
    ),
    (
        "ipv6-loopback-written-out",
        "http://[0:0:0:0:0:0:0:1]:{denied6}",
        "::1 is loopback",
        "::1 is loopback" + NOT_FETCHED + restart("[::1]:{denied6}"),
    ),
    (
        "ipv6-loopback-on-the-target-port",
        "http://[::1]:{target}",
        "::1 is loopback",
        "::1 is loopback" + NOT_FETCHED + restart("[::1]:{target}"),
    ),
    (
        "ipv6-unspecified-on-the-target-port",
        "http://[::]:{target}",
        ":: is unspecified",
        ":: is unspecified" + NOT_FETCHED + restart("[::]:{target}"),
    ),
]


def batch_ids(server) -> list[str]:
    """The ids of the server's newest batches."""
    return [batch["id"] for batch in server.request("GET", "/api/v1/batches", params={"limit": 200}).json()["batches"]]


@pytest.fixture(scope="module")
def refused_at_submit(server, target, ports, listeners) -> tuple[dict[str, Any], int]:
    """One batch of the allowed target, then every denied form as typed: (the 400's error, the target's PROBE
    hits before it)."""
    before = probe_hits(target)
    urls = [target.url("/ok")] + [template.format(**ports) + PROBE for _, template, _, _ in DENIED_FORMS]
    stored = batch_ids(server)
    response = server.request("POST", "/api/v1/batches", json={"urls": urls})
    assert response.status_code == 400, response.text
    assert batch_ids(server) == stored  # not one of them, nor the good URL, was stored
    return response.json()["error"], before


def test_a_batch_with_denied_addresses_is_refused_whole_naming_each_by_index(refused_at_submit):
    error, _ = refused_at_submit
    count = len(DENIED_FORMS)
    assert error["code"] == "invalid_urls"
    assert error["message"].startswith(f"{count} of {count + 1} URLs cannot be fetched; the first is #1: 127.0.0.1 ")
    assert [(d["index"], d["field"]) for d in error["details"]] == [(i, f"urls[{i}]") for i in range(1, count + 1)]


@pytest.mark.parametrize("case, message", [(c[0], c[3]) for c in DENIED_FORMS], ids=[c[0] for c in DENIED_FORMS])
def test_a_denied_address_in_any_spelling_is_refused_at_submit_with_the_restart_that_allows_it(
    refused_at_submit, ports, case, message
):
    error, _ = refused_at_submit
    index = [c[0] for c in DENIED_FORMS].index(case) + 1
    detail = error["details"][index - 1]
    assert detail["url"] == DENIED_FORMS[index - 1][1].format(**ports) + PROBE
    assert detail["message"] == message.format(**ports)


def test_a_refusal_at_submit_sends_nothing_anywhere(refused_at_submit, listeners, target):
    _, probe_hits_before = refused_at_submit
    assert_nothing_reached(listeners, target, probe_hits_before)


@pytest.mark.parametrize(
    "template",
    ["http://127.0.0.1:{closed}/", "http://localhost:{closed}/", "http://[::ffff:127.0.0.1]:{closed}/"],
    ids=["ipv4", "localhost", "ipv4-mapped"],
)
def test_the_restart_a_refusal_names_lets_the_url_through(server, make_server, target, closed_port, template):
    url = template.format(closed=closed_port)
    refusal = server.request("POST", "/api/v1/batches", json={"urls": [url]})
    assert refusal.status_code == 400, refusal.text
    allow = re.search(r"restart with GREENBATCH_ALLOW_TARGETS=(\S+)$", refusal.json()["error"]["message"]).group(1)
    assert allow.startswith(f"127.0.0.1:{target.port},")

    allowed = make_server(env={"GREENBATCH_ALLOW_TARGETS": allow})
    result = allowed.fetch_one(url, timeout=5)
    assert kind_of(result) != "blocked", result  # fetched: nothing listens there, so the connection is refused


def test_a_text_body_is_refused_the_same_way_numbering_urls_not_lines(server, target, ports):
    body = f"# my servers\n{target.url('/ok')}\n\nhttp://127.0.0.1:{ports['denied']}/\n"
    response = server.request("POST", "/api/v1/batches", data=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"].startswith("1 of 2 URLs cannot be fetched; the first is #1: 127.0.0.1 is loopback")
    assert [(d["index"], d["url"]) for d in error["details"]] == [(1, f"http://127.0.0.1:{ports['denied']}/")]


@pytest.mark.browser
def test_the_editor_marks_a_typed_loopback_line_with_the_restart_that_allows_it(page, server, target, ports):
    from tests.support.server import ARTIFACTS

    expect = pytest.importorskip("playwright.sync_api").expect
    denied = f"http://127.0.0.1:{ports['denied']}/"
    stored = batch_ids(server)
    page.goto(server.url("/"))
    page.fill("#urls", f"# my server\n{target.url('/ok')}\n{denied}\n")
    page.click("#submit")
    problem = page.locator("#url-errors li[data-line='3']")  # the third line of the text: URL #1 of the list
    expect(problem).to_contain_text(f"restart with GREENBATCH_ALLOW_TARGETS=127.0.0.1:{target.port},127.0.0.1:")
    expect(page.locator("#gutter .bad")).to_have_text("3")
    fits = "el => el.scrollWidth <= el.clientWidth && el.scrollHeight > 0"
    assert problem.evaluate(fits), "the reason is shown whole, restart hint included, not cut off"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "submit-refuses-loopback.png"))
    assert batch_ids(server) == stored


def test_a_rerun_is_judged_when_fetched_as_resumed_batches_are(make_server, target, tmp_path):
    folder = tmp_path / "rerun"
    first = make_server(data_dir=folder)
    batch = first.submit([target.url("/ok")])
    first.wait(batch["id"])
    first.stop()
    # The same data folder, now without the target on the allow-list: the stored URL is not refused again.
    second = make_server(env={"GREENBATCH_ALLOW_TARGETS": ""}, data_dir=folder)
    rerun = second.request("POST", f"/api/v1/batches/{batch['id']}/rerun")
    assert rerun.status_code == 201, rerun.text
    second.wait(rerun.json()["id"])
    [result] = second.results(rerun.json()["id"])
    assert kind_of(result) == "blocked" and "127.0.0.1 is loopback" in result["error"]["message"], result


@pytest.fixture(scope="module")
def denied_batch(server, target, ports, listeners) -> tuple[dict[str, dict[str, Any]], int]:
    """One batch: the allowed target, then a redirect from it to every denied form. Returns (results by case
    id, with the target's under "allowed"; the target's PROBE hits before the batch)."""
    before = probe_hits(target)
    urls = [target.url("/ok")] + [
        redirect_to(target, template.format(**ports) + PROBE) for _, template, _, _ in DENIED_FORMS
    ]
    results = server.run_batch(urls, timeout=5, connect_timeout=2)
    by_case = {"allowed": results[0], **{case[0]: results[i] for i, case in enumerate(DENIED_FORMS, start=1)}}
    return by_case, before


def test_the_allowed_target_itself_is_fetched(denied_batch):
    allowed = denied_batch[0]["allowed"]
    assert allowed["status_code"] == 200 and allowed["error"] is None


@pytest.mark.parametrize("case, why", [(c[0], c[2]) for c in DENIED_FORMS], ids=[c[0] for c in DENIED_FORMS])
def test_a_redirect_to_a_denied_address_in_any_spelling_ends_blocked_with_the_reason(denied_batch, case, why):
    result = denied_batch[0][case]
    assert kind_of(result) == "blocked", result
    assert why in result["error"]["message"]
    assert result["status_code"] is None and len(result["redirects"]) == 1  # the hop that led there


def test_no_connection_reaches_a_denied_listener_whatever_the_spelling(denied_batch, listeners, target):
    # With IPv6 loopback missing there are no [::1] listeners; those forms are still asserted blocked.
    _, probe_hits_before = denied_batch
    assert_nothing_reached(listeners, target, probe_hits_before)


# ---------------------------------------------------------------------------------------------
# 2. Redirects to denied addresses
# ---------------------------------------------------------------------------------------------

REDIRECTS = [
    ("302-to-loopback-on-a-denied-port", 302, "http://127.0.0.1:{denied}", "127.0.0.1 is loopback"),
    ("301-to-a-decimal-loopback", 301, "http://2130706433:{denied}", "2130706433 resolves to 127.0.0.1"),
    ("307-to-an-ipv4-mapped-loopback", 307, "http://[::ffff:127.0.0.1]:{denied}", "IPv4-mapped address of 127.0.0.1"),
    ("308-to-a-protocol-relative-url", 308, "//127.0.0.2:{target}", "127.0.0.2 is loopback"),
    ("303-to-ipv6-loopback", 303, "http://[::1]:{denied6}", "::1 is loopback"),
    ("302-to-this-network-on-the-target-port", 302, "http://0.0.0.0:{target}", "'this network'"),
]


def redirect_to(target, location: str, status: int = 302) -> str:
    """A target URL answering `status` with Location: location."""
    return target.url(f"/redirect-to?status={status}&url={quote(location, safe='')}")


@pytest.mark.parametrize("status, location, why", [c[1:] for c in REDIRECTS], ids=[c[0] for c in REDIRECTS])
def test_a_redirect_to_a_denied_address_is_blocked_and_the_hop_recorded(
    server, target, ports, listeners, status, location, why
):
    before = probe_hits(target)
    start = redirect_to(target, location.format(**ports) + PROBE, status)
    result = server.fetch_one(start, timeout=5)
    assert kind_of(result) == "blocked", result
    assert why in result["error"]["message"]
    assert result["redirects"] == [{"url": start, "status": status}]
    assert_nothing_reached(listeners, target, before)


def test_every_hop_of_a_redirect_chain_is_checked(server, target, ports, listeners):
    before = probe_hits(target)
    second = redirect_to(target, f"http://127.0.0.1:{ports['denied']}{PROBE}")
    start = redirect_to(target, second, 307)
    result = server.fetch_one(start, timeout=5)
    assert kind_of(result) == "blocked" and "127.0.0.1 is loopback" in result["error"]["message"]
    assert result["redirects"] == [{"url": start, "status": 307}, {"url": second, "status": 302}]
    assert_nothing_reached(listeners, target, before)


# Every header a batch may send that carries a credential, with a value to tell it by.
CREDENTIALS = {
    name: f"secret-{name.lower()}"
    for name in (
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "X-Api-Key",
        "Api-Key",
        "X-Auth-Token",
        "X-Access-Token",
        "Private-Token",
        "X-Csrf-Token",
        "X-Xsrf-Token",
        "X-Amz-Security-Token",
    )
}


@pytest.mark.parametrize("client", CLIENTS)
def test_credential_headers_do_not_follow_a_redirect_to_another_origin(make_server, target, client):
    # Both hops end at a target's /headers, whose JSON echo of the request headers is all the body: its size
    # grows by what the hop was sent. The other origin is a second target on another port.
    other = start_target()
    try:
        server = make_server(env={"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{target.port},127.0.0.1:{other.port}"})
        urls = [redirect_to(target, target.url("/headers")), redirect_to(target, other.url("/headers"))]
        plain = {"X-Probe": "plain"}
        bare = server.run_batch(urls, headers=plain, client=client)
        sent = server.run_batch(urls, headers={**plain, **CREDENTIALS}, client=client)
    finally:
        other.stop()
    for results in (bare, sent):
        assert [(r["status_code"], len(r["redirects"])) for r in results.values()] == [(200, 1), (200, 1)], results
    same_origin, other_origin = (sent[i]["bytes"] - bare[i]["bytes"] for i in (0, 1))
    assert same_origin >= sum(map(len, CREDENTIALS.values()))  # they were sent where they belong
    assert other_origin == 0  # and not one of them reached the other origin


def test_a_redirect_to_a_file_url_ends_invalid_url_and_reads_nothing(server, target):
    start = redirect_to(target, "file:///etc/passwd")
    result = server.fetch_one(start, timeout=5)
    assert kind_of(result) == "invalid_url" and "scheme: file:" in result["error"]["message"]
    assert result["redirects"] == [{"url": start, "status": 302}]


# ---------------------------------------------------------------------------------------------
# 3. DNS rebinding and multi-answer names, through a DNS server we control
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_dns(tmp_path_factory):
    """The fake DNS server, when this host lets us make mount namespaces and bind port 53."""
    folder = tmp_path_factory.mktemp("mount-probe")
    (folder / "a").write_text("a")
    (folder / "b").write_text("b")
    problem = _namespace_problem(
        ("unshare", "mount"), "unshare", "--mount", "mount", "--bind", str(folder / "a"), str(folder / "b")
    )
    if problem:
        pytest.skip(f"DNS tests need a mount namespace for the server's resolv.conf: {problem}")
    try:
        dns = FakeDns()
    except OSError as exc:
        pytest.skip(f"DNS tests need to listen on {DNS_ADDRESS}:53 (root): {exc}")
    yield dns
    dns.close()


def start_dns_server(folder: Path, env: dict[str, str]) -> GreenbatchServer:
    """A server in its own mount namespace whose resolver asks only the fake DNS server.

    nsswitch.conf is replaced too, so no resolver plugin (systemd-resolved, mDNS) forwards a
    lookup off this machine.
    """
    resolv, nsswitch = folder / "resolv.conf", folder / "nsswitch.conf"
    resolv.write_text(f"nameserver {DNS_ADDRESS}\noptions attempts:1 timeout:2\n")
    nsswitch.write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    script = 'mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/nsswitch.conf && shift 2 && exec "$@"'
    prefix = ["unshare", "--mount", "sh", "-c", script, "sh", str(resolv), str(nsswitch)]
    return GreenbatchServer(folder / "data", env, prefix=prefix).start()


@pytest.fixture(scope="module")
def dns_server(fake_dns, tmp_path_factory, target_env):
    """A server whose resolver asks only the fake DNS server (start_dns_server)."""
    server = start_dns_server(tmp_path_factory.mktemp("dns"), target_env)
    yield server
    server.stop()


def test_a_name_answering_an_allowed_then_a_denied_address_is_blocked(dns_server, fake_dns, target, listeners):
    fake_dns.answer("multi.test", ["127.0.0.1", "127.0.0.2"])
    before = probe_hits(target)
    result = dns_server.fetch_one(f"http://multi.test:{target.port}{PROBE}", timeout=5)
    assert kind_of(result) == "blocked", result
    assert "multi.test resolves to 127.0.0.2, which is loopback" in result["error"]["message"]
    assert fake_dns.a_queries("multi.test") == 1
    assert_nothing_reached(listeners, target, before)


def test_a_rebinding_name_is_fetched_from_the_address_that_was_checked(dns_server, fake_dns, target, listeners):
    # First answer: the allowed target. Every later answer: 127.0.0.2, where a listener waits on the
    # target's port. A transport that looked the name up again to connect would land there.
    fake_dns.answer("rebind.test", ["127.0.0.1"], ["127.0.0.2"])
    before = probe_hits(target)
    first = dns_server.fetch_one(f"http://rebind.test:{target.port}{PROBE}", timeout=5)
    assert first["status_code"] == 404 and kind_of(first) == "status", first  # the target answered
    assert probe_hits(target) == before + 1
    assert fake_dns.a_queries("rebind.test") == 1  # resolved once, connected to what was checked

    second = dns_server.fetch_one(f"http://rebind.test:{target.port}{PROBE}", timeout=5)
    assert kind_of(second) == "blocked", second
    assert "rebind.test resolves to 127.0.0.2, which is loopback" in second["error"]["message"]
    assert_nothing_reached(listeners, target, before + 1)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_name_that_does_not_resolve_ends_as_dns_naming_the_host_and_the_resolvers_error(dns_server, fake_dns, client):
    # Here, not in test_engine: only this server's resolver is ours, so the query never leaves the machine.
    result = dns_server.fetch_one("http://no-such-host.invalid/", timeout=5, client=client)
    assert kind_of(result) == "dns", result
    assert result["error"]["message"].startswith("could not resolve no-such-host.invalid: "), result


def test_a_denied_name_is_denied_by_every_other_name_for_its_address(fake_dns, tmp_path, target_env, target, listeners):
    # The deny entry's name is looked up when the server starts; alias.test is another name for the address.
    fake_dns.answer("denied.test", ["127.0.0.1"])
    fake_dns.answer("alias.test", ["127.0.0.1"])
    server = start_dns_server(tmp_path, {**target_env, "GREENBATCH_DENY_TARGETS": "denied.test"})
    try:
        before = probe_hits(target)
        by_alias = server.fetch_one(f"http://alias.test:{target.port}{PROBE}", timeout=5)
        # The address itself needs no lookup: it is refused at submit, by the deny-list.
        by_address = server.request("POST", "/api/v1/batches", json={"urls": [target.url(PROBE)]})
    finally:
        server.stop()
    assert fake_dns.a_queries("denied.test") == 1
    why = "matches 'denied.test' in GREENBATCH_DENY_TARGETS, a name that resolves to it"
    assert kind_of(by_alias) == "blocked" and why in by_alias["error"]["message"], by_alias
    assert by_address.status_code == 400, by_address.text
    [detail] = by_address.json()["error"]["details"]
    assert detail["message"] == "127.0.0.1 is on this server's deny-list (GREENBATCH_DENY_TARGETS)"
    assert_nothing_reached(listeners, target, before)


# ---------------------------------------------------------------------------------------------
# 4. Non-loopback denied addresses, from a server whose namespace has no route anywhere
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def netns():
    """A network namespace with only loopback, for fetches that must never leave this machine."""
    problem = _namespace_problem(("unshare", "ip"), "unshare", "--net", "true")
    if problem:
        pytest.skip(f"non-loopback attacks run only inside a network namespace: {problem}")
    try:
        namespace = LoopbackOnlyNamespace()
    except OSError as exc:
        pytest.skip(f"non-loopback attacks run only inside a network namespace: {exc}")
    yield namespace
    namespace.close()


@pytest.fixture(scope="module")
def netns_target(netns):
    """A target inside the namespace, on 127.0.0.1."""
    process = netns.run(start_target)
    assert netns.holds(process.pid)
    yield process
    process.stop()


def start_in_netns(netns, folder: Path, env: dict[str, str]) -> NamespacedServer:
    """A server started inside the namespace (checked, so no test ever runs one outside it)."""
    server = NamespacedServer(netns, folder, env).start()
    assert netns.holds(server.proc.pid), "the server is not inside the loopback-only namespace"
    return server


@pytest.fixture(scope="module")
def netns_server(netns, netns_target, tmp_path_factory):
    """A server in the namespace that may reach only the namespace's target."""
    server = start_in_netns(
        netns,
        tmp_path_factory.mktemp("netns"),
        {"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{netns_target.port}", EXPLAIN: "1"},
    )
    yield server
    server.stop()


METADATA = "a cloud metadata endpoint"
NON_LOOPBACK = [
    # IPv6 forms carrying 127.0.0.1: judged as loopback, but Linux would route them off the machine.
    ("ipv4-compatible-loopback", "http://[::127.0.0.1]/", "IPv4-compatible address of 127.0.0.1, which is loopback"),
    (
        "ipv4-translated-loopback",
        "http://[::ffff:0:127.0.0.1]/",
        "IPv4-translated address of 127.0.0.1, which is loopback",
    ),
    ("6to4-loopback", "http://[2002:7f00:1::]/", "6to4 address embedding 127.0.0.1, which is loopback"),
    ("nat64-loopback", "http://[64:ff9b::7f00:1]/", "NAT64 address of 127.0.0.1, which is loopback"),
    ("nat64-loopback-dotted", "http://[64:ff9b::127.0.0.1]/", "NAT64 address of 127.0.0.1, which is loopback"),
    ("local-use-nat64-loopback", "http://[64:ff9b:1:7f00:0:100::]/", "local-use NAT64 address embedding 127.0.0.1"),
    (
        "teredo-loopback",
        f"http://[{teredo('127.0.0.1')}]/",
        "Teredo address whose client is 127.0.0.1, which is loopback",
    ),
    # Cloud metadata in every spelling, then the private and special ranges.
    ("cloud-metadata", "http://169.254.169.254/latest/meta-data/", f"169.254.169.254 is {METADATA}"),
    ("cloud-metadata-decimal", "http://2852039166/", f"resolves to 169.254.169.254, which is {METADATA}"),
    ("cloud-metadata-hex", "http://0xa9fea9fe/", f"resolves to 169.254.169.254, which is {METADATA}"),
    ("cloud-metadata-octal", "http://0251.0376.0251.0376/", f"resolves to 169.254.169.254, which is {METADATA}"),
    ("cloud-metadata-short-form", "http://169.254.43518/", f"resolves to 169.254.169.254, which is {METADATA}"),
    ("cloud-metadata-ipv4-mapped", "http://[::ffff:169.254.169.254]/", "IPv4-mapped address of 169.254.169.254"),
    ("cloud-metadata-nat64", "http://[64:ff9b::a9fe:a9fe]/", "NAT64 address of 169.254.169.254"),
    ("cloud-metadata-6to4", "http://[2002:a9fe:a9fe::]/", "6to4 address embedding 169.254.169.254"),
    (
        "cloud-metadata-teredo",
        f"http://[{teredo('169.254.169.254')}]/",
        "Teredo address whose client is 169.254.169.254",
    ),
    ("aws-metadata-ipv6", "http://[fd00:ec2::254]/", f"{METADATA} (AWS, IPv6)"),
    ("aws-ecs-credentials", "http://169.254.170.2/v2/credentials", f"{METADATA} (AWS ECS task credentials)"),
    ("azure-wire-server", "http://168.63.129.16/", f"{METADATA} (Azure wire server)"),
    ("alibaba-metadata", "http://100.100.100.200/", f"{METADATA} (Alibaba Cloud)"),
    ("carrier-grade-nat", "http://100.64.0.1/", "carrier-grade NAT"),
    ("rfc1918-10", "http://10.0.0.1/", "private (RFC 1918)"),
    ("rfc1918-172.16", "http://172.16.0.1/", "private (RFC 1918)"),
    ("rfc1918-192.168", "http://192.168.0.1/", "private (RFC 1918)"),
    ("link-local", "http://169.254.1.1/", "link-local"),
    ("unique-local-ipv6", "http://[fd00::1]/", "unique local"),
    ("link-local-ipv6", "http://[fe80::1]/", "link-local"),
    ("multicast", "http://224.0.0.1/", "multicast"),
    ("broadcast", "http://255.255.255.255/", "broadcast"),
    ("documentation-range", "http://192.0.2.1/", "documentation"),
]


def test_non_loopback_denied_addresses_are_refused_at_submit_and_metadata_gets_no_restart_hint(netns_server):
    # Submitted to the namespaced server all the same: were one accepted, its fetch would have nowhere to go.
    response = netns_server.request("POST", "/api/v1/batches", json={"urls": [url for _, url, _ in NON_LOOPBACK]})
    assert response.status_code == 400, response.text
    details = response.json()["error"]["details"]
    assert [d["index"] for d in details] == list(range(len(NON_LOOPBACK)))
    for (case, _, _), detail in zip(NON_LOOPBACK, details):
        if METADATA in detail["message"]:  # only an entry naming that very address lifts it: no advice to give
            assert "restart" not in detail["message"], (case, detail)
        else:
            assert "; restart with GREENBATCH_ALLOW_TARGETS=" in detail["message"], (case, detail)


@pytest.fixture(scope="module")
def non_loopback_results(netns_server, netns_target) -> dict[str, dict[str, Any]]:
    """One batch in the namespace: its target first, then a redirect from it to every non-loopback denied address."""
    urls = [netns_target.url("/ok")] + [redirect_to(netns_target, url) for _, url, _ in NON_LOOPBACK]
    results = netns_server.run_batch(urls, timeout=5, connect_timeout=2)
    return {"allowed": results[0], **{case[0]: results[i] for i, case in enumerate(NON_LOOPBACK, start=1)}}


def test_the_namespace_target_is_fetched_so_the_server_works_in_there(non_loopback_results):
    assert non_loopback_results["allowed"]["status_code"] == 200


@pytest.mark.parametrize("case, why", [(c[0], c[2]) for c in NON_LOOPBACK], ids=[c[0] for c in NON_LOOPBACK])
def test_a_redirect_to_a_non_loopback_denied_address_ends_blocked_before_any_connect(non_loopback_results, case, why):
    # blocked, not refused/connect_timeout/other: the guard stopped it before a socket tried to connect.
    result = non_loopback_results[case]
    assert kind_of(result) == "blocked", result
    assert why in result["error"]["message"]
    assert len(result["redirects"]) == 1


# ---------------------------------------------------------------------------------------------
# 5. Settings: the deny-list wins, ALLOW_PRIVATE never opens metadata
# ---------------------------------------------------------------------------------------------


DENY_LIST = "on this server's deny-list (GREENBATCH_DENY_TARGETS)"


@pytest.fixture(scope="module")
def relay():
    """A second target, on 127.0.0.2, that no deny entry here covers: its redirects lead to denied addresses."""
    process = start_target(host="127.0.0.2")
    yield process
    process.stop()


def with_relay(target, relay, **env: str) -> dict[str, str]:
    """Settings allowing the target and the relay, plus `env`."""
    return {"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{target.port},127.0.0.2:{relay.port}", **env}


def test_deny_targets_wins_over_allow_targets(make_server, target, relay):
    server = make_server(env=with_relay(target, relay, GREENBATCH_DENY_TARGETS=f"127.0.0.1:{target.port}"))
    before = probe_hits(target)
    denied = [target.url(PROBE), f"http://[::ffff:127.0.0.1]:{target.port}{PROBE}"]
    refusal = server.request("POST", "/api/v1/batches", json={"urls": denied})
    assert refusal.status_code == 400, refusal.text
    assert [d["message"] for d in refusal.json()["error"]["details"]] == [
        f"127.0.0.1 is {DENY_LIST}",
        f"::ffff:127.0.0.1 is {DENY_LIST}",
    ]
    results = server.run_batch([redirect_to(relay, url) for url in denied], timeout=5)
    assert sorted(results) == [0, 1]
    for result in results.values():
        assert kind_of(result) == "blocked", result
        assert "GREENBATCH_DENY_TARGETS (the deny-list always wins)" in result["error"]["message"]
    assert probe_hits(target) == before


@pytest.mark.parametrize(
    "deny, why",
    [
        ("localhost", "matches 'localhost' in GREENBATCH_DENY_TARGETS, a name that resolves to it"),
        ("::ffff:127.0.0.1", "matches '::ffff:127.0.0.1' in GREENBATCH_DENY_TARGETS"),
        ("[::ffff:127.0.0.1]:{port}", "matches '[::ffff:127.0.0.1]:{port}' in GREENBATCH_DENY_TARGETS"),
    ],
    ids=[
        "hostname-entry-denies-its-address",
        "ipv4-mapped-entry-denies-the-plain-address",
        "ipv4-mapped-entry-with-a-port",
    ],
)
def test_a_deny_entry_denies_the_address_however_the_url_writes_it(make_server, target, relay, listeners, deny, why):
    # The target's own address is allowed on its port; the deny entry names it another way.
    server = make_server(env=with_relay(target, relay, GREENBATCH_DENY_TARGETS=deny.format(port=target.port)))
    before = probe_hits(target)
    urls = [
        target.url(PROBE),
        f"http://[::ffff:127.0.0.1]:{target.port}{PROBE}",
        f"http://localhost:{target.port}{PROBE}",
    ]
    refusal = server.request("POST", "/api/v1/batches", json={"urls": urls})
    assert refusal.status_code == 400, refusal.text
    details = refusal.json()["error"]["details"]
    assert [d["index"] for d in details] == [0, 1, 2] and all(DENY_LIST in d["message"] for d in details), details
    for client in CLIENTS:
        results = server.run_batch([redirect_to(relay, url) for url in urls], timeout=5, client=client)
        for result in results.values():
            assert kind_of(result) == "blocked", (client, result)
        assert why.format(port=target.port) in results[0]["error"]["message"], results[0]
    assert_nothing_reached(listeners, target, before)


def test_allow_private_opens_loopback_but_never_cloud_metadata(netns, netns_target, tmp_path_factory):
    # A second target on 127.0.0.2 with the first one's port, and no ALLOW_TARGETS at all.
    second = netns.run(start_target, host="127.0.0.2", port=netns_target.port)
    server = start_in_netns(netns, tmp_path_factory.mktemp("private"), {"GREENBATCH_ALLOW_PRIVATE": "1", EXPLAIN: "1"})
    metadata = ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/"]
    try:
        refusal = server.request("POST", "/api/v1/batches", json={"urls": [second.url("/ok"), *metadata]})
        results = server.run_batch(
            [second.url("/ok"), *(redirect_to(second, url) for url in metadata), "http://10.0.0.1/"],
            timeout=5,
            connect_timeout=2,
        )
    finally:
        server.stop()
        second.stop()
    assert refusal.status_code == 400, refusal.text
    assert [(d["index"], METADATA in d["message"]) for d in refusal.json()["error"]["details"]] == [
        (1, True),
        (2, True),
    ]
    assert results[0]["status_code"] == 200
    for metadata in (results[1], results[2]):
        assert kind_of(metadata) == "blocked", metadata
        assert "denied even with GREENBATCH_ALLOW_PRIVATE" in metadata["error"]["message"]
    # RFC 1918 is lifted, so the connect is tried: only the namespace stops it (and proves it would).
    assert kind_of(results[3]) == "other" and "unreachable" in results[3]["error"]["message"], results[3]


# ---------------------------------------------------------------------------------------------
# 6. What a refusal tells whoever submitted the URL
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory, target_env):
    """A server with refusals unexplained, as by default, logging at debug level."""
    server = GreenbatchServer(
        tmp_path_factory.mktemp("quiet"), {**target_env, EXPLAIN: "0", "GREENBATCH_LOG_LEVEL": "debug"}
    ).start()
    yield server
    server.stop()


def test_a_blocked_url_names_neither_the_address_a_name_resolves_to_nor_the_rule(quiet_server, target, ports):
    # Reached by redirects: typed in a batch, an address or localhost is refused at submit (part 1).
    denied = ports["denied"]
    not_fetched = "a private or reserved address, which this server does not fetch"
    results = quiet_server.run_batch(
        [
            redirect_to(target, f"http://localhost:{denied}/"),
            redirect_to(target, f"http://127.0.0.1:{denied}/"),
            redirect_to(target, f"http://[::1]:{denied}/"),
        ],
        timeout=5,
    )
    assert [(kind_of(r), r["error"]["message"]) for r in results.values()] == [
        (
            "blocked",
            f"localhost resolves to {not_fetched} (an operator can allow it with "
            f"GREENBATCH_ALLOW_TARGETS=localhost:{denied})",
        ),
        (
            "blocked",
            f"127.0.0.1 is {not_fetched} (an operator can allow it with GREENBATCH_ALLOW_TARGETS=127.0.0.1:{denied})",
        ),
        (
            "blocked",
            f"::1 is {not_fetched} (an operator can allow it with GREENBATCH_ALLOW_TARGETS=[::1]:{denied})",
        ),
    ]


def test_an_address_typed_in_a_batch_is_refused_naming_its_rule_as_anyone_may_know_it(quiet_server, target, ports):
    # Which ranges are loopback or private is no secret of this network; the address was the submitter's own.
    response = quiet_server.request("POST", "/api/v1/batches", json={"urls": [f"http://127.0.0.1:{ports['denied']}/"]})
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["message"].startswith("127.0.0.1 is loopback; ")


def test_the_server_log_keeps_the_address_and_the_rule_of_each_refusal(quiet_server, target, ports):
    batch = quiet_server.submit([redirect_to(target, f"http://localhost:{ports['denied']}/")])
    quiet_server.wait(batch["id"])
    assert re.search(
        f"batch {batch['id']} URL 0: localhost resolves to (127.0.0.1|::1), which is loopback", quiet_server.log()
    )


@pytest.mark.parametrize("client", CLIENTS)
def test_a_name_that_does_not_resolve_says_only_that(fake_dns, tmp_path, target_env, client):
    # The resolver's words (no such name, no address for a name that exists, a server failure) would
    # tell internal names apart.
    server = start_dns_server(tmp_path, {**target_env, EXPLAIN: "0"})
    try:
        result = server.fetch_one("http://no-such-host.invalid/", timeout=5, client=client)
    finally:
        server.stop()
    assert kind_of(result) == "dns" and result["error"]["message"] == "could not resolve no-such-host.invalid"
