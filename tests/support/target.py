"""Real HTTP target server for greenbatch's tests and benchmarks, plus a start_target() helper."""

# Patch (and import gevent) only when run as the server: test processes import
# start_target() from here and must not be monkey-patched as a side effect.
if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

    import gevent
    import gevent.event
    import gevent.lock
    import gevent.server

import argparse
import ipaddress
import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from urllib.parse import parse_qs, urlsplit

SCRIPT = os.path.abspath(__file__)

MAX_LINE = 65536  # longest request line / header line accepted
MAX_HEADERS = 100
IDLE_TIMEOUT = 120.0  # seconds a connection may sit idle (or a send may block) before we drop it
CHUNK = 64 * 1024
# Byte i of every /bytes body is i % 256, so clients can verify content, not just length.
PATTERN = bytes(range(256)) * (CHUNK // 256)
ENDLESS_FRAME = b"%x\r\n" % CHUNK + bytes(CHUNK) + b"\r\n"
BOMB_SIZE = 200 * 1024 * 1024
MAX_GZIP_SIZE = 1024 * 1024 * 1024

REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    410: "Gone",
    413: "Content Too Large",
    414: "URI Too Long",
    418: "I'm a teapot",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

# Server-wide state; set up by main().
HITS = Counter()
BASE_URL = "http://127.0.0.1:0"
QUIET = False
_GZIP_CACHE = {}
_GZIP_LOCK = None


class BadRequest(Exception):
    """A request we refuse to serve; carries the status to answer with."""

    def __init__(self, status=400, message="bad request"):
        super().__init__(message)
        self.status = status


class Close(Exception):
    """Raised by handlers that want the connection dropped without (further) response."""


def _clean(text):
    """Strip CR/LF so caller-supplied header text cannot break the response framing."""
    return text.replace("\r", "").replace("\n", "")


class Request:
    """One parsed request plus the methods handlers use to answer it on the raw socket."""

    def __init__(self, sock, method, target, version, headers):
        self.sock = sock
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # list of (name, value) in arrival order
        parts = urlsplit(target)  # also copes with absolute-form targets (proxy style)
        self.path = parts.path or "/"
        self.query = parts.query
        self.params = parse_qs(parts.query, keep_blank_values=True)
        conn = self.header("connection").lower()
        if version == "HTTP/1.0":
            self.keep_alive = "keep-alive" in conn
        else:
            self.keep_alive = "close" not in conn
        self.chunk_ok = version != "HTTP/1.0"
        self.status = None

    def header(self, name, default=""):
        """Return the first header with this name (case-insensitive)."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return default

    def arg(self, name, default=None):
        """Return the first query value for name, or default."""
        values = self.params.get(name)
        return values[0] if values else default

    def num(self, name, default, kind=int, lo=0, hi=None):
        """Parse a numeric query parameter, rejecting junk and out-of-range values with 400."""
        raw = self.arg(name)
        return default if raw is None else _number(raw, kind, lo, hi, name)

    def start(self, status, headers=(), length=None, chunked=False, reason=None):
        """Send the status line and headers of a streamed body; return whether it is chunked."""
        if chunked and not self.chunk_ok:
            # HTTP/1.0 has no chunked encoding: fall back to a close-delimited body.
            chunked, self.keep_alive = False, False
        if not chunked and length is None and status not in (204, 304) and self.method != "HEAD":
            self.keep_alive = False  # no framing, so only EOF can end the body
        self._send_head(status, headers, length, chunked, reason)
        return chunked

    def respond(self, status, body=b"", ctype="text/plain", headers=(), reason=None):
        """Send a complete response; HEAD and 204/304 get headers only."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers = list(headers)
        if status in (204, 304):
            body, length = b"", None  # RFC 9110: no body, and 204 must not carry Content-Length
        else:
            headers.insert(0, ("Content-Type", ctype))
            length = len(body)
        # Headers and body in one sendall keep the hot /ok path to a single syscall.
        self._send_head(status, headers, length, False, reason, b"" if self.method == "HEAD" else body)

    def _send_head(self, status, headers, length, chunked, reason, body=b""):
        """Write the status line, headers (plus framing ones) and an optional body."""
        self.status = status
        lines = ["HTTP/1.1 %d %s" % (status, _clean(reason or REASONS.get(status, "Unknown")))]
        lines += ["%s: %s" % (name, _clean(str(value))) for name, value in headers]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        elif length is not None:
            lines.append("Content-Length: %d" % length)
        if not self.keep_alive:
            lines.append("Connection: close")
        elif self.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        # Reason phrases and ctype overrides may be non-ASCII: their UTF-8 bytes go on the wire.
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body)
        log(self)

    def write_chunk(self, data, chunked):
        """Send one piece of a streamed body, framed if chunked."""
        if chunked:
            self.sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            self.sock.sendall(data)

    def end_chunks(self, chunked):
        """Terminate a chunked body."""
        if chunked:
            self.sock.sendall(b"0\r\n\r\n")


def _number(raw, kind, lo, hi, name):
    """Convert raw to kind within [lo, hi] or raise BadRequest."""
    try:
        value = kind(raw)
    except ValueError:
        raise BadRequest(400, "bad %s: %r" % (name, raw)) from None
    if value != value or value < lo or (hi is not None and value > hi):  # also rejects NaN
        raise BadRequest(400, "%s out of range: %r" % (name, raw))
    return value


def log(req):
    """One stderr line per response unless --quiet; stdout carries only the READY line."""
    if not QUIET:
        sys.stderr.write("%s %s %s\n" % (req.method, req.target, req.status))


# ---------------------------------------------------------------- request parsing


def read_request(sock, rfile):
    """Read request line, headers and any body; return a Request, or None on clean EOF."""
    line = rfile.readline(MAX_LINE + 1)
    while line in (b"\r\n", b"\n"):  # RFC 9112 says to ignore stray CRLFs between requests
        line = rfile.readline(MAX_LINE + 1)
    if not line:
        return None
    if len(line) > MAX_LINE:
        raise BadRequest(414, "request line too long")
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(400, "malformed request line")
    headers = []
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if not line:
            return None  # client went away mid-headers
        if line in (b"\r\n", b"\n"):
            break
        if len(line) > MAX_LINE or len(headers) >= MAX_HEADERS:
            raise BadRequest(431, "headers too large")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, "malformed header line")
        headers.append((name, value.strip()))
    req = Request(sock, parts[0], parts[1], parts[2], headers)
    drain_body(req, rfile)
    return req


def drain_body(req, rfile):
    """Discard the request body so the next request on the connection parses cleanly."""
    if req.header("transfer-encoding"):
        # Rare from our clients, but unread bytes would turn our close into an RST.
        while True:
            size_line = rfile.readline(MAX_LINE)
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                raise BadRequest(400, "bad chunk size") from None
            if size == 0:
                break
            _read_exact(rfile, size + 2)
        while rfile.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return
    length = req.header("content-length")
    if length:
        _read_exact(rfile, _number(length, int, 0, None, "content-length"))


def _read_exact(rfile, n):
    """Read and throw away n bytes."""
    while n > 0:
        got = rfile.read(min(n, CHUNK))
        if not got:
            raise Close()
        n -= len(got)


# ---------------------------------------------------------------- endpoints


def h_ok(req, m):
    """Plain liveness answer."""
    req.respond(200, b"ok\n")


def h_status(req, m):
    """Any final status; ?reason= sets the reason phrase verbatim (minus CR/LF)."""
    code = int(m.group(1))
    if not 200 <= code <= 599:
        raise BadRequest(400, "status must be 200-599")  # a 1xx would leave clients waiting
    reason = req.arg("reason") or REASONS.get(code, "Unknown")
    req.respond(code, "%d %s\n" % (code, reason), reason=reason)


def h_delay(req, m):
    """Sleep, then answer; ?status= and ?bytes= shape the answer."""
    ms = _number(m.group(1), float, 0, 3600_000, "delay")
    status = req.num("status", 200, lo=200, hi=599)
    size = req.num("bytes", None, lo=0, hi=64 * 1024 * 1024)
    gevent.sleep(ms / 1000.0)
    if size is None:
        req.respond(status, b"ok\n")
    else:
        req.respond(status, _pattern(size), ctype="application/octet-stream")


def h_repeat(req, m):
    """n copies of ?text= (default "a"), between ?head= and ?tail=, as ?ctype= (default text/plain): a body that
    makes a catastrophic pattern or a walking JSONPath slow (/repeat/500000?head=[&text=2,&tail=2 is a JSON array)."""
    n = int(m.group(1))
    body = (req.arg("head", "") + req.arg("text", "a") * n + req.arg("tail", "")).encode()
    req.respond(200, body, ctype=_clean(req.arg("ctype", "text/plain")))


def h_bytes(req, m):
    """n bytes of the i % 256 pattern, streamed; ?chunked=1 and ?delay=<ms> optional."""
    n = int(m.group(1))
    chunked = req.arg("chunked", "0") not in ("0", "", "false")
    delay = req.num("delay", 0, float, hi=3600_000)
    if delay:
        gevent.sleep(delay / 1000.0)
    if not chunked and n <= CHUNK:
        # Head and body in one write, as real servers send small responses (and one recv for the client).
        req.respond(200, PATTERN[:n], ctype="application/octet-stream")
        return
    headers = [("Content-Type", "application/octet-stream")]
    chunked = req.start(200, headers, length=None if chunked else n, chunked=chunked)
    if req.method == "HEAD":
        return
    sent = 0
    while sent < n:
        piece = PATTERN[: min(CHUNK, n - sent)]
        req.write_chunk(piece, chunked)
        sent += len(piece)
    req.end_chunks(chunked)


HTML = (
    b'<!doctype html>\n<html><head><title>Target &amp; "quotes"</title></head>\n'
    b"<body><h1>Hello <em>target</em></h1>\n"
    b"<p>He said \"hi\" & 'bye' &lt;ok&gt;</p>\n"
    b'<script>alert("xss");</script>\n</body></html>\n'
)


def h_html(req, m):
    """A small HTML page with markup worth escaping; ?ctype= overrides Content-Type verbatim."""
    req.respond(200, HTML, ctype=req.arg("ctype", "text/html; charset=utf-8"))


REDIRECT_CODES = (301, 302, 303, 307, 308)


def h_redirect(req, m):
    """A chain of n redirects ending in 200 "done"; query (status/absolute) carries along."""
    n = int(m.group(1))
    if n == 0:
        req.respond(200, b"done")
        return
    status = req.num("status", 302)
    if status not in REDIRECT_CODES:
        raise BadRequest(400, "status must be one of %s" % (REDIRECT_CODES,))
    location = "/redirect/%d" % (n - 1) + ("?" + req.query if req.query else "")
    if req.arg("absolute", "0") not in ("0", "", "false"):
        location = BASE_URL + location
    req.respond(status, "redirecting to %s\n" % location, headers=[("Location", location)])


def h_redirect_to(req, m):
    """Redirect to any URL at all (denied hosts, odd schemes) for SSRF/validation tests."""
    url = req.arg("url")
    if url is None:
        raise BadRequest(400, "url parameter required")
    status = req.num("status", 302, lo=300, hi=399)
    req.respond(status, b"redirecting\n", headers=[("Location", url)])


def h_page(req, m):
    """/page/<anything>: a 200 page, the landing place of planted redirects (/redirect-to?url=/page/x)."""
    req.respond(200, "page %s\n" % m.group(1), ctype="text/html")


def h_product(req, m):
    """/product/<id>: a shop's product as JSON (?stock= sets its stock, 3 by default)."""
    stock = req.num("stock", 3, lo=0, hi=10**6)
    body = {"id": int(m.group(1)), "name": "Lamp", "price": 12.5, "stock": stock, "tags": ["home"]}
    req.respond(200, json.dumps(body), ctype="application/json", headers=[("X-Shop", "demo")])


def h_shop(req, m):
    """/shop/<id>: a product page, with "Add to cart" unless ?sold_out=1."""
    sold_out = req.arg("sold_out", "0") not in ("0", "")
    button = "Sold out" if sold_out else "Add to cart"
    req.respond(200, "<html><h1>Lamp %s</h1><button>%s</button></html>\n" % (m.group(1), button), ctype="text/html")


def h_challenge(req, m):
    """A bot wall as Cloudflare answers one: 403 with cf-mitigated: challenge."""
    req.respond(403, b"<title>Just a moment...</title>\n", ctype="text/html", headers=[("cf-mitigated", "challenge")])


CHALLENGE_PAGES = {
    # vendor: (status, the page's HTML), as each vendor's interstitial gives itself away
    "cloudflare": (
        403,
        "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body><script>"
        "window._cf_chl_opt={cvId: '3'};</script></body></html>",
    ),
    "datadome": (403, '<html><body><script src="https://ct.captcha-delivery.com/c.js"></script></body></html>'),
    "perimeterx": (403, '<html><body><div id="px-captcha"></div><script>window._pxAppId="PX1"</script></body></html>'),
    "akamai": (200, '<html><body><script src="/_sec/cp_challenge/sec-4-4.js"></script></body></html>'),
    # Cloudflare's title without its challenge script: a site's own page that happens to say it
    "title-only": (200, "<html><head><title>Just a moment...</title></head><body>Loading</body></html>"),
}


def h_challenge_page(req, m):
    """/challenge-page/<vendor>: a bot-challenge interstitial known by its body alone (no telling header)."""
    status, html = CHALLENGE_PAGES[m.group(1)]
    req.respond(status, html, ctype="text/html; charset=utf-8")


def h_bot_status(req, m):
    """Status 999, what LinkedIn answers a client it takes for a bot."""
    req.respond(999, b"request denied\n", reason="Request denied")


def h_deep(req, m):
    """/deep/<path>: a deep URL that a migration sent to the site's root (301 to /)."""
    req.respond(301, b"moved\n", headers=[("Location", "/")])


def h_loop(req, m):
    """Redirect to itself forever."""
    req.respond(302, b"loop\n", headers=[("Location", "/loop")])


def h_loop_pair(req, m):
    """/loop-a redirects to /loop-b and /loop-b back to /loop-a: a loop of two."""
    other = "/loop-b" if m.group(1) == "a" else "/loop-a"
    req.respond(302, b"loop\n", headers=[("Location", other)])


def h_trickle(req, m):
    """Promise N bytes, then dribble one every S seconds (a slow but never-idle body)."""
    n = req.num("bytes", 100, hi=1_000_000)
    interval = req.num("interval", 0.5, float, hi=3600)
    req.start(200, [("Content-Type", "application/octet-stream")], length=n)
    if req.method == "HEAD":
        return
    for _ in range(n):
        gevent.sleep(interval)
        req.sock.sendall(b".")


def h_slow_headers(req, m):
    """Say nothing for ?delay= ms (default 5000) after reading the request, then answer."""
    gevent.sleep(req.num("delay", 5000, float, hi=3600_000) / 1000.0)
    req.respond(200, b"ok\n")


def h_endless(req, m):
    """A chunked body of zeros that never ends; paced only by how fast the client reads."""
    chunked = req.start(200, [("Content-Type", "application/octet-stream")], chunked=True)
    if req.method == "HEAD":
        return
    frame = ENDLESS_FRAME if chunked else bytes(CHUNK)
    while True:
        req.sock.sendall(frame)


def h_gzip(req, m):
    """gzip-encoded body that inflates to ?size= (default 1024) zero bytes."""
    size = req.num("size", 1024, hi=MAX_GZIP_SIZE)
    _send_gzip(req, gzipped_zeros(size))


def h_gzip_bomb(req, m):
    """~200 KiB on the wire that inflates to 200 MiB."""
    _send_gzip(req, gzipped_zeros(BOMB_SIZE))


def _send_gzip(req, body):
    """Send a precompressed body, whatever the client's Accept-Encoding says."""
    req.respond(200, body, ctype="application/octet-stream", headers=[("Content-Encoding", "gzip")])


def h_reset(req, m):
    """Abort with a TCP RST: SO_LINGER on with a zero timeout makes close() reset."""
    _reset(req)


def _reset(req):
    """Reset the connection (RST) without a byte of response."""
    req.status = "RST"
    log(req)
    req.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raise Close()


def h_close(req, m):
    """Close cleanly (FIN) without sending a byte of response."""
    req.status = "FIN"
    log(req)
    raise Close()


def h_headers(req, m):
    """The request headers as JSON (repeated names joined with ', ')."""
    _send_json(req, _header_dict(req))


def h_echo(req, m):
    """Method, raw path, raw query, parsed args and headers as JSON."""
    _send_json(
        req,
        {
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "args": req.params,
            "headers": _header_dict(req),
        },
    )


def _header_dict(req):
    """Headers as a dict keyed by the names as sent."""
    out = {}
    for name, value in req.headers:
        out[name] = out[name] + ", " + value if name in out else value
    return out


def h_changes(req, m):
    """An answer that changes from one hit of the path to the next: ?answers=200,500,redirect names the answer
    of each hit in turn (a status code, or `redirect`: 302 to /ok), the last repeated after; ?delay=ms before each."""
    answers = (req.arg("answers") or "200").split(",")
    answer = answers[min(HITS[req.path], len(answers)) - 1]
    gevent.sleep(req.num("delay", 0, lo=0, hi=60_000) / 1000.0)
    if answer == "redirect":
        req.respond(302, b"moved\n", headers=[("Location", "/ok")])
    else:
        req.respond(_number(answer, int, 200, 599, "answer"), b"changes\n")


def h_hits(req, m):
    """Per-path request counts; ?reset=1 returns the counts and then clears them."""
    body = dict(HITS)
    if req.arg("reset", "0") not in ("0", "", "false"):
        HITS.clear()
    _send_json(req, body)


# /paced/<key>/...: each request's start and end (time.time()), by key, for tests that check pacing.
PACED_LOG = {}
PACED_ARRIVALS = {}  # key -> start times of the last second, for ?rate=


def h_paced(req, m):
    """A host with manners to check: logs each request's start and end under <key> (read at /__paced?key=).

    ?rate=N: more than N requests in any second (all arrivals counted) get 429 with Retry-After: ?retry_after=
    (default 1) seconds. ?head=<status>: HEAD gets that status. ?delay=<ms> before answering. ?redirect=<url>:
    302 to that URL (after the rate check). ?jitter=<ms>: each request arrives up to that much later (a random
    share of it), so requests sent together arrive in any order, as over a network. ?fail=N: the first N requests
    to the path are reset (RST) before a response. ?close=1: answers close their connection (none is reused).
    """
    key = m.group(1)
    jitter = req.num("jitter", 0, float, hi=1000)
    if jitter:
        gevent.sleep(random.random() * jitter / 1000.0)  # before it counts as arrived: a burst arrives in any order
    entry = {
        "method": req.method,
        "path": req.path,
        "user_agent": req.header("user-agent"),
        "start": time.time(),
        "end": None,
        "status": None,
    }
    PACED_LOG.setdefault(key, []).append(entry)
    arrivals = PACED_ARRIVALS.setdefault(key, [])
    arrivals.append(entry["start"])
    while arrivals and arrivals[0] <= entry["start"] - 1.0:
        arrivals.pop(0)
    rate = req.num("rate", None, hi=100_000)
    head = req.num("head", None, lo=200, hi=599)
    delay = req.num("delay", 0, float, hi=60_000)
    if req.arg("close", "0") not in ("0", "", "false"):
        req.keep_alive = False
    try:
        if HITS[req.path] <= req.num("fail", 0, hi=1000):
            _reset(req)
        if rate is not None and len(arrivals) > rate:
            retry_after = req.arg("retry_after", "1")
            req.respond(429, b"slow down\n", headers=[("Retry-After", _clean(retry_after))])
        elif head is not None and req.method == "HEAD":
            req.respond(head)
        elif req.arg("redirect"):
            req.respond(302, b"moved\n", headers=[("Location", _clean(req.arg("redirect")))])
        else:
            if delay:
                gevent.sleep(delay / 1000.0)
            req.respond(200, b"ok\n")
    finally:
        entry["end"], entry["status"] = time.time(), req.status


def h_paced_log(req, m):
    """The log of /paced/<key>/... requests: ?key= (required); ?reset=1 clears it after answering."""
    key = req.arg("key", "")
    _send_json(req, PACED_LOG.get(key, []))
    if req.arg("reset", "0") not in ("0", "", "false"):
        PACED_LOG.pop(key, None)
        PACED_ARRIVALS.pop(key, None)


# /hold/<key>/...: answers held until the test releases them, so "while the batch runs" is a state it controls.
HOLDS = {}  # key -> Hold


class Hold:
    """The requests held under one key, oldest first, and whether the key was opened for good."""

    def __init__(self):
        self.waiting = []  # one gevent Event per request held, set to answer it
        self.opened = False


def h_hold(req, m):
    """Answer once the test releases the request (/__release?key=): at once when the key was opened for good;
    ?max= seconds (default 60) at most, so no request is held past a test that forgot it; ?status= (200)."""
    hold = HOLDS.setdefault(m.group(1), Hold())
    status = req.num("status", 200, lo=200, hi=599)
    released = True
    if not hold.opened:
        mine = gevent.event.Event()
        hold.waiting.append(mine)
        try:
            released = mine.wait(req.num("max", 60, float, hi=600))
        finally:
            if mine in hold.waiting:
                hold.waiting.remove(mine)
    req.respond(status, b"released\n" if released else b"held past max\n")


def h_release(req, m):
    """Answer held /hold/<key>/... requests: ?key= (required); ?count=N the N held longest, the key still holding
    the others and later ones; without it every one held now and later (the key is opened for good). How many
    were answered."""
    key = req.arg("key", "")
    if not key:
        raise BadRequest(400, "key is required")
    hold = HOLDS.setdefault(key, Hold())
    count = req.num("count", None, lo=1, hi=100_000)
    if count is None:
        hold.opened = True
        count = len(hold.waiting)
    answered, hold.waiting = hold.waiting[:count], hold.waiting[count:]
    for event in answered:
        event.set()
    _send_json(req, {"released": len(answered)})


def h_held(req, m):
    """How many /hold/<key>/... requests are held now: ?key=."""
    hold = HOLDS.get(req.arg("key", ""))
    _send_json(req, {"held": len(hold.waiting) if hold else 0})


def _send_json(req, obj):
    """Serialize obj and send it as application/json."""
    req.respond(200, json.dumps(obj, indent=None) + "\n", ctype="application/json")


# ---------------------------------------------------------------- sources: sitemaps and pages of links

SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
SITEMAP_BOMB_SIZE = 100 * 1024 * 1024  # blank space inside <urlset>: well-formed XML past the 50 MB cap


def _sitemap_body(req, start, count, pad):
    """A urlset of /page/<i> for i in [start, start + count), each entry padded with `pad` spaces, in pieces."""
    yield ('<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="%s">\n' % SITEMAP_NS).encode()
    lastmod = req.arg("lastmod", "0") not in ("0", "", "false")
    tail = "/" + "x" * req.num("long", 0, hi=100_000) if req.arg("long") else ""  # ?long=: URLs that much longer
    block = []
    for i in range(start, start + count):
        extra = "<lastmod>2026-11-%02d</lastmod>" % (i % 28 + 1) if lastmod else ""
        block.append("<url><loc>%s/page/%d%s</loc>%s%s</url>\n" % (BASE_URL, i, tail, extra, " " * pad))
        if len(block) == 256:
            yield "".join(block).encode()
            block = []
    yield ("".join(block) + "</urlset>\n").encode()


def _send_document(req, pieces, gz, ctype):
    """A streamed, chunked body; gz=True sends it gzipped as a file (a .gz, with no Content-Encoding)."""
    if gz:
        comp = zlib.compressobj(6, zlib.DEFLATED, 31)
        pieces = [comp.compress(piece) for piece in pieces] + [comp.flush()]
        ctype = "application/gzip"
    chunked = req.start(200, [("Content-Type", ctype)], chunked=True)
    if req.method == "HEAD":
        return
    for piece in pieces:
        if piece:
            req.write_chunk(piece, chunked)
    req.end_chunks(chunked)


def h_sitemap_urls(req, m):
    """A urlset: ?n= URLs from ?start=, ?pad= spaces in each entry (to make a big file), ?lastmod=1, ?long= more
    characters in each URL; .gz: gzipped."""
    count = req.num("n", 10, hi=1_000_000)
    start = req.num("start", 0, hi=10_000_000)
    pad = req.num("pad", 0, hi=1_000_000)
    _send_document(req, _sitemap_body(req, start, count, pad), m.group(1) == ".gz", "application/xml")


def h_sitemap_turns(req, m):
    """A sitemap that changes from one hit of its path to the next: ?turns=0:1:2,1:2:3,s500 names each hit's answer
    in turn (a urlset of /page/<tag>/<i> for the numbers, or `s<code>`: that status), the last repeated after."""
    turns = (req.arg("turns") or "0").split(",")
    turn = turns[min(HITS[req.path], len(turns)) - 1]
    if turn.startswith("s"):
        req.respond(_number(turn[1:], int, 200, 599, "turns"), b"no sitemap this time\n")
        return
    lines = ['<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="%s">\n' % SITEMAP_NS]
    for number in turn.split(":"):
        lines.append(
            "<url><loc>%s/page/%s/%d</loc></url>\n" % (BASE_URL, m.group(1), _number(number, int, 0, 10**6, "turns"))
        )
    lines.append("</urlset>\n")
    _send_document(req, ["".join(lines).encode()], False, "application/xml")


def h_sitemap_index(req, m):
    """A sitemapindex of ?parts= gzipped urlsets sharing ?n= URLs; ?depth=2 or 3 nests indexes that deep."""
    parts = req.num("parts", 2, lo=1, hi=100_000)
    count = req.num("n", 10, hi=1_000_000)
    depth = req.num("depth", 1, lo=1, hi=10)
    offset = req.num("start", 0, hi=10_000_000)
    per = -(-count // parts)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>\n<sitemapindex xmlns="%s">\n' % SITEMAP_NS]
    for i in range(parts):
        start, size = offset + i * per, max(0, min(per, count - i * per))
        if depth > 1:
            loc = "%s/sitemap/index.xml?parts=1&n=%d&start=%d&depth=%d" % (BASE_URL, size, start, depth - 1)
        else:
            loc = "%s/sitemap/urls.xml.gz?n=%d&start=%d&lastmod=1" % (BASE_URL, size, start)
        lines.append("<sitemap><loc>%s</loc></sitemap>\n" % loc.replace("&", "&amp;"))
    lines.append("</sitemapindex>\n")
    _send_document(req, ["".join(lines).encode()], m.group(1) == ".gz", "application/xml")


def h_sitemap_self(req, m):
    """A sitemapindex naming itself (this very URL) ?n= times, then a urlset of ?urls= URLs once."""
    count = req.num("n", 1, hi=1_000_000)
    own = ("%s%s" % (BASE_URL, req.target)).replace("&", "&amp;")
    entry = "<sitemap><loc>%s</loc></sitemap>\n" % own
    tail = "<sitemap><loc>%s/sitemap/urls.xml?n=%d</loc></sitemap>\n</sitemapindex>\n" % (
        BASE_URL,
        req.num("urls", 3, hi=1000),
    )
    pieces = [('<?xml version="1.0" encoding="UTF-8"?>\n<sitemapindex xmlns="%s">\n' % SITEMAP_NS).encode()]
    pieces += [(entry * 256).encode()] * (count // 256) + [(entry * (count % 256) + tail).encode()]
    _send_document(req, pieces, False, "application/xml")


def h_sitemap_attributes(req, m):
    """A urlset whose root element has ?n= attributes, then one URL."""
    attributes = b"".join(b'a%d="" ' % i for i in range(req.num("n", 10, hi=10_000_000)))
    body = b'<?xml version="1.0"?>\n<urlset xmlns="%s" %s>' % (SITEMAP_NS.encode(), attributes)
    req.respond(200, body + b"<url><loc>%s/page/0</loc></url></urlset>\n" % BASE_URL.encode(), ctype="application/xml")


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE urlset [\n<!ENTITY lol "lol">\n'
    + "".join('<!ENTITY lol%d "%s">\n' % (i, ("&lol%s;" % ("" if i == 1 else i - 1)) * 10) for i in range(1, 10))
    + ']>\n<urlset xmlns="%s"><url><loc>&lol9;</loc></url></urlset>\n' % SITEMAP_NS
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?>\n<!DOCTYPE urlset [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    '<urlset xmlns="%s"><url><loc>http://example.com/&xxe;</loc></url></urlset>\n' % SITEMAP_NS
)


def h_sitemap_bomb(req, m):
    """An XML bomb (billion laughs) or an external entity, as a sitemap."""
    req.respond(200, BILLION_LAUGHS if m.group(1) == "bomb" else EXTERNAL_ENTITY, ctype="application/xml")


def _compress_blank_sitemap(size):
    """A gzip file of a urlset holding `size` spaces: tiny on the wire, well-formed, huge once inflated."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [comp.compress(b'<?xml version="1.0"?><urlset xmlns="' + SITEMAP_NS.encode() + b'">')]
    block = b" " * (1024 * 1024)
    for _ in range(size // len(block)):
        parts.append(comp.compress(block))
    parts.append(comp.compress(b"</urlset>") + comp.flush())
    return b"".join(parts)


def h_sitemap_gzip_bomb(req, m):
    """A sitemap.xml.gz of ~100 KiB that inflates to 100 MiB of well-formed XML."""
    with _GZIP_LOCK:
        body = _GZIP_CACHE.get("sitemap-bomb")
        if body is None:
            body = _GZIP_CACHE["sitemap-bomb"] = gevent.get_hub().threadpool.apply(
                _compress_blank_sitemap, (SITEMAP_BOMB_SIZE,)
            )
    req.respond(200, body, ctype="application/gzip")


def h_links(req, m):
    """A page of ?n= links: a[href], link[href], img[src] and script[src], relative to a <base>, with fragments,
    repeats, a link to another origin and a mailto: among them. Link i is /page/<i>. ?script= puts an inline
    script of about that many bytes before them."""
    count = req.num("n", 10, hi=100_000)
    script = req.num("script", 0, hi=10_000_000)  # ?script=: an inline script that long in the head
    head = [
        "<!doctype html><html><head><title>links</title>",
        "<script>%s</script>" % ("var a = b < c;\n" * (script // 15)) if script else "",
        '<base href="%s/page/">' % BASE_URL,
        '<link rel="stylesheet" href="0">',
        "</head><body>",
        '<a href="mailto:someone@example.com">mail</a>',
        '<a href="http://other.invalid/elsewhere">elsewhere</a>',
    ]
    body = []
    for i in range(1, count):
        kind = i % 4
        if kind == 0:
            body.append('<img src="%d" alt="">' % i)
        elif kind == 1:
            body.append('<script src="%d"></script>' % i)
        else:
            body.append('<p><a href="%d#part">link %d</a> <a href="/page/%d">again</a></p>' % (i, i, i))
    html = "\n".join(head + body + ["</body></html>\n"]).encode()
    req.respond(200, html, ctype="text/html; charset=utf-8")


def h_open_tag(req, m):
    """A page that ends inside one start tag: `<a ` then ?n= attributes `b=c ` and no `>`."""
    req.respond(200, b"<html><body><a " + b"b=c " * req.num("n", 1000, hi=10_000_000), ctype="text/html")


ROUTES = [
    (re.compile(pattern), handler)
    for pattern, handler in [
        (r"/|/ok", h_ok),
        (r"/status/(\d{3})", h_status),
        (r"/delay/(\d+(?:\.\d+)?)", h_delay),
        (r"/bytes/(\d{1,15})", h_bytes),
        (r"/repeat/(\d{1,7})", h_repeat),
        (r"/html", h_html),
        (r"/redirect/(\d{1,6})", h_redirect),
        (r"/redirect-to", h_redirect_to),
        (r"/page/(.*)", h_page),
        (r"/challenge", h_challenge),
        (r"/challenge-page/(cloudflare|datadome|perimeterx|akamai|title-only)", h_challenge_page),
        (r"/product/(\d{1,9})", h_product),
        (r"/shop/(\d{1,9})", h_shop),
        (r"/bot-status", h_bot_status),
        (r"/deep/.+", h_deep),
        (r"/loop", h_loop),
        (r"/loop-([ab])", h_loop_pair),
        (r"/trickle", h_trickle),
        (r"/slow-headers", h_slow_headers),
        (r"/endless", h_endless),
        (r"/gzip", h_gzip),
        (r"/gzip-bomb", h_gzip_bomb),
        (r"/reset", h_reset),
        (r"/close", h_close),
        (r"/headers", h_headers),
        (r"/echo", h_echo),
        (r"/changes/[\w/-]+", h_changes),
        (r"/__hits", h_hits),
        (r"/paced/([\w-]+)(?:/.*)?", h_paced),
        (r"/__paced", h_paced_log),
        (r"/hold/([\w-]+)(?:/.*)?", h_hold),
        (r"/__release", h_release),
        (r"/__held", h_held),
        (r"/sitemap/urls\.xml(\.gz)?", h_sitemap_urls),
        (r"/sitemap/index\.xml(\.gz)?", h_sitemap_index),
        (r"/sitemap/turns/(\w+)\.xml", h_sitemap_turns),
        (r"/sitemap/self\.xml", h_sitemap_self),
        (r"/sitemap/attributes\.xml", h_sitemap_attributes),
        (r"/sitemap/(bomb|external-entity)\.xml", h_sitemap_bomb),
        (r"/sitemap/gzip-bomb\.xml\.gz", h_sitemap_gzip_bomb),
        (r"/links", h_links),
        (r"/open-tag", h_open_tag),
        (r"/page/.*", h_ok),
    ]
]


def _pattern(n):
    """The first n bytes of the /bytes pattern (for small in-memory bodies)."""
    return (PATTERN * (n // CHUNK + 1))[:n]


def _compress_zeros(size):
    """gzip size zero bytes at level 9, fed in 1 MiB blocks to keep memory flat."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31 = gzip container, mtime 0
    block = memoryview(bytes(1024 * 1024))
    parts = []
    for offset in range(0, size, len(block)):
        parts.append(comp.compress(block[: min(len(block), size - offset)]))
    parts.append(comp.flush())
    return b"".join(parts)


def gzipped_zeros(size):
    """Compressed zeros for size, computed once (in a thread for big sizes) and cached."""
    with _GZIP_LOCK:  # the first concurrent requests all wait for one compression
        body = _GZIP_CACHE.get(size)
        if body is None:
            if size > 4 * 1024 * 1024:
                # zlib drops the GIL, so the hub keeps serving while 200 MiB compresses (~1 s).
                body = gevent.get_hub().threadpool.apply(_compress_zeros, (size,))
            else:
                body = _compress_zeros(size)
            if len(_GZIP_CACHE) >= 32:
                _GZIP_CACHE.pop(next(iter(_GZIP_CACHE)))
            _GZIP_CACHE[size] = body
        return body


# ---------------------------------------------------------------- connection loop


def dispatch(req):
    """Count the hit and run the matching handler (404 if none)."""
    if req.path != "/__hits":
        HITS[req.path] += 1  # counted before handling, so slow/aborted requests show up too
    for pattern, handler in ROUTES:
        match = pattern.fullmatch(req.path)
        if match:
            handler(req, match)
            return
    req.respond(404, "not found: %s\n" % req.path)


def handle_connection(sock, address):
    """Serve requests on one connection until close, error or the client leaves."""
    sock.settimeout(IDLE_TIMEOUT)
    rfile = sock.makefile("rb")
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small responses: no Nagle wait
        while True:
            req = None
            try:
                req = read_request(sock, rfile)
                if req is None:
                    break
                dispatch(req)
            except BadRequest as exc:
                if req is None:  # unparseable request: answer as HTTP/1.1 and hang up
                    req = Request(sock, "GET", "/", "HTTP/1.1", [])
                    req.target = "<bad request>"
                req.keep_alive = False
                if req.status is None:  # nothing sent yet, so we can still answer
                    req.respond(exc.status, "%s\n" % exc)
                break
            if not req.keep_alive:
                break
    except (Close, OSError):
        pass  # resets, timeouts and deliberate closes are all part of the job
    finally:
        # The makefile holds a reference; both must close before the fd really does.
        rfile.close()
        sock.close()


# ---------------------------------------------------------------- process entry point


def _host_for_url(host):
    """Bracket IPv6 literals for use in a URL."""
    return "[%s]" % host if ":" in host else host


def _loopback(host):
    """True if host is a loopback literal (we never listen anywhere else)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv=None):
    """Parse arguments, serve until SIGTERM/SIGINT, return the exit status (script use only)."""
    global BASE_URL, QUIET, _GZIP_LOCK
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--backlog", type=int, default=2048, help="listen() backlog")
    parser.add_argument("--quiet", action="store_true", help="no per-request log on stderr")
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="exit when the parent process dies (used by start_target)"
    )
    args = parser.parse_args(argv)
    if not _loopback(args.host):
        parser.error("--host must be a loopback address, got %r" % args.host)

    QUIET = args.quiet
    _GZIP_LOCK = gevent.lock.Semaphore()
    server = gevent.server.StreamServer((args.host, args.port), handle_connection, backlog=args.backlog)
    server.start()
    port = server.address[1]
    BASE_URL = "http://%s:%d" % (_host_for_url(args.host), port)

    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    if args.exit_with_parent:
        # A killed pytest/benchmark would otherwise leave us orphaned and listening forever.
        parent = os.getppid()

        def watch_parent():
            while os.getppid() == parent:
                gevent.sleep(1.0)
            stop.set()

        gevent.spawn(watch_parent)

    sys.stdout.write("READY %d\n" % port)
    sys.stdout.flush()
    stop.wait()
    server.close()  # handlers still running (endless, trickle) die with the process
    return 0


# ---------------------------------------------------------------- helper for tests


class TargetProcess:
    """A target server running as a subprocess; stop() it (or use it as a context manager)."""

    def __init__(self, proc, host, port):
        self.proc = proc
        self.pid = proc.pid
        self.host = host
        self.port = port
        self.base_url = "http://%s:%d" % (_host_for_url(host), port)

    def url(self, path="/"):
        """Absolute URL for path on this server."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def hits(self, reset=False):
        """The server's /__hits counts (optionally clearing them)."""
        import urllib.request

        with urllib.request.urlopen(self.url("/__hits" + ("?reset=1" if reset else "")), timeout=10) as resp:
            return json.loads(resp.read())

    def paced_log(self, key):
        """The target's own log of /paced/<key>/... requests: [{"method", "path", "user_agent", "start", "end",
        "status"}]."""
        import urllib.request

        with urllib.request.urlopen(self.url("/__paced?key=" + key), timeout=10) as resp:
            return json.loads(resp.read())

    def held(self, key):
        """How many /hold/<key>/... requests the target holds now."""
        import urllib.request

        with urllib.request.urlopen(self.url("/__held?key=" + key), timeout=10) as resp:
            return json.loads(resp.read())["held"]

    def release(self, key, count=None):
        """Answer the `count` /hold/<key>/... requests held longest; without `count`, every one held now and
        later. How many were answered."""
        import urllib.request

        query = "key=" + key + ("" if count is None else f"&count={count}")
        with urllib.request.urlopen(self.url("/__release?" + query), timeout=10) as resp:
            return json.loads(resp.read())["released"]

    def release_when_held(self, key, count, held=None, within=20.0):
        """Answer the `count` /hold/<key>/... requests held longest, once the target holds `held` (default `count`)
        of them, waiting `within` seconds at most."""
        deadline = time.monotonic() + within
        while self.held(key) < (count if held is None else held):
            assert time.monotonic() < deadline, f"{held or count} requests held under {key} within {within:g} s"
            time.sleep(0.02)
        assert self.release(key, count=count) == count

    def stop(self, timeout=5.0):
        """SIGTERM the server by pid, SIGKILL if it lingers; return its exit code."""
        from tests.support.processes import stop_process  # here: this file also runs as a script, outside the package

        stop_process(self.proc, signal.SIGTERM, timeout)
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return "<TargetProcess pid=%d %s>" % (self.pid, self.base_url)


def start_target(host="127.0.0.1", port=0, quiet=True, backlog=None, extra_args=(), timeout=15.0, python=None):
    """Start tests/support/target.py in a subprocess, wait for READY and return a TargetProcess."""
    cmd = [python or sys.executable, SCRIPT, "--host", host, "--port", str(port), "--exit-with-parent"]
    if quiet:
        cmd.append("--quiet")
    if backlog is not None:
        cmd += ["--backlog", str(backlog)]
    cmd += list(extra_args)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    # Raw select + os.read rather than readline(): a wedged child must not hang the caller.
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        ready = select.select([fd], [], [], remaining)[0] if remaining > 0 else []
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            why = "timed out" if not ready else "exited with %s" % proc.returncode
            raise RuntimeError("target server %s before READY (output %r)" % (why, buf))
        buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise RuntimeError("unexpected target output: %r" % line)
    return TargetProcess(proc, host, int(line.split()[1]))


if __name__ == "__main__":
    sys.exit(main())
