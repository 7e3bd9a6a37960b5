"""SSRF guard: URL syntax checks, address rules and a resolve-once helper that every transport pins to.

How a transport uses it, for every hop including each redirect:

    url = check_url(raw)                                   # InvalidUrl on bad syntax
    infos = resolve(host, port, policy)                    # Blocked if ANY address is denied
    connect to infos[i][4] (the sockaddr) directly         # never hand the hostname to the socket layer

Resolving once and connecting to the address we checked is what defeats DNS rebinding; a transport
that lets its HTTP library resolve the name again has no protection at all.

Rules, in order (check_address):
  1. A GREENBATCH_DENY_TARGETS entry that matches always blocks (even an explicitly allowed address):
     an address or range in any of its IPv4, IPv4-mapped or embedding forms, a hostname by the URL's
     host and by every address it resolves to (DeniedNames, looked up again every DENY_REFRESH s).
  2. An address no default rule denies is allowed (see denial_reason).
  3. GREENBATCH_ALLOW_PRIVATE lifts loopback, RFC 1918, link-local, CGNAT, ULA and site-local.
  4. A GREENBATCH_ALLOW_TARGETS entry (address, CIDR or the URL's hostname; port-scoped when it names
     a port) lifts any default denial, except that cloud metadata addresses (169.254.169.254,
     168.63.129.16, ...) are lifted only by an entry naming that exact address: neither
     ALLOW_PRIVATE, nor a CIDR like 169.254.0.0/16, nor a hostname entry lets them through.
IPv6 forms that embed an IPv4 address (mapped, compatible, 6to4, NAT64, Teredo) are judged by the
IPv4 inside, because that is where the packets end up.

Hosts that need no lookup (an address in any form libc reads, localhost) are judged at submit as well
(Policy.literal_refusals), so a batch is refused with the restart that allows them rather than stored to
end blocked; other names and every redirect hop are judged only here, at fetch time.

A refusal's message (str) tells whoever submitted the URL only what they typed; its `detail` names
the address and the rule, for the log and for servers with GREENBATCH_EXPLAIN_BLOCKED on.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import socket
import string
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast
from urllib.parse import urlsplit

import idna

from ..core.results import ErrorKind
from .base import AddrInfo

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# socket.getaddrinfo, or a stand-in with its signature (tests, and the deny-list's lookups).
GetAddrInfo = Callable[..., Iterable[AddrInfo]]

ALLOW_VAR = "GREENBATCH_ALLOW_TARGETS"
DENY_VAR = "GREENBATCH_DENY_TARGETS"
PRIVATE_VAR = "GREENBATCH_ALLOW_PRIVATE"
SCHEMES = ("http", "https")
MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63
DENY_REFRESH = 300.0  # seconds between lookups of the hostnames in GREENBATCH_DENY_TARGETS (README, Security)
HUB_SLICE = 0.005  # seconds of URL checks after which check_url lets other greenlets run (_take_turns)
# How long a turn sleeps: under gevent, any sleep but 0 makes the loop poll sockets and timers, where
# sleep(0) only runs greenlets that are ready already (a request waiting on its socket is not).
TURN = 1e-6
# URLs all_unchanged joins and matches at once: a million-URL list is not copied whole into one text, and
# other greenlets run between slices.
JOINED_URLS = 10_000

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ACE_PREFIX = "xn--"  # what every A-label (an IDNA-encoded label) starts with
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
# Unicode categories that make a URL look different from what it fetches: spaces, line and
# paragraph separators, control and format characters (zero-width joiners, bidi overrides), surrogates.
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cs"})
# The code points of those categories in Unicode 14.0.0 (Python 3.11), as (first, last) ranges, so that
# no start pays for reading them off unicodedata. Another Unicode version
# reads them afresh (_invisible_ranges); tests/test_guard.py holds this table to unicodedata.
_INVISIBLE_UNICODE = "14.0.0"
_INVISIBLE_RANGES = (
    (0x0000, 0x0020),
    (0x007F, 0x00A0),
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x1680, 0x1680),
    (0x180E, 0x180E),
    (0x2000, 0x200F),
    (0x2028, 0x202F),
    (0x205F, 0x2064),
    (0x2066, 0x206F),
    (0x3000, 0x3000),
    (0xD800, 0xDFFF),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x13438),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)
# Printable ASCII except space and backslash: a URL made only of these has nothing _bad_character refuses.
_PLAIN_CHARS = r"[!-\[\]-~]*"


def _ranges_of(categories: frozenset[str]) -> tuple[tuple[int, int], ...]:
    """The (first, last) ranges of the code points whose Unicode category is one of `categories`."""
    ranges: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code)) in categories:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return tuple((first, last) for first, last in ranges)


def _invisible_ranges() -> tuple[tuple[int, int], ...]:
    """_INVISIBLE_CATEGORIES' ranges in this Python's Unicode version (the table when it is the table's)."""
    if unicodedata.unidata_version == _INVISIBLE_UNICODE:
        return _INVISIBLE_RANGES
    return _ranges_of(_INVISIBLE_CATEGORIES)


def _character_class(ranges: Iterable[tuple[int, int]], low: int, high: int) -> str:
    """A regular expression class of the parts of `ranges` between code points low and high."""
    parts = [(max(first, low), min(last, high)) for first, last in ranges if first <= high and last >= low]
    return "".join(f"\\U{first:08x}-\\U{last:08x}" for first, last in parts)


# Every character _bad_character refuses, found at regex speed: backslash and the invisible categories
# (space, CR, LF and the other controls are among them). Those past U+FFFF have a pattern of their own,
# searched only in text that has such characters: in one class with the others, which sre looks up in a
# table, they would slow every search.
_BAD_BMP = re.compile("[\\\\" + _character_class(_invisible_ranges(), 0, 0xFFFF) + "]")
_BAD_ASTRAL = re.compile("[" + _character_class(_invisible_ranges(), 0x10000, sys.maxunicode) + "]")
_ASTRAL = re.compile("[\\U00010000-\\U0010ffff]")
# "http(s)://authority" where the authority has no brackets and ends at /, ?, # or the end: the parts
# urlsplit would find, at regex speed (urlsplit costs more per distinct URL). Everything else is urlsplit's.
_HTTP_AUTHORITY = re.compile(r"([Hh][Tt][Tt][Pp][Ss]?)://([^/?#\[\]]*)(?=[/?#]|\Z)")
# URLs that check_url returns unchanged when their authority is, one per line: lower-case http(s),
# host[:port] of lower-case letters, digits, dots and hyphens, then printable ASCII (no backslash).
# Possessive (no part ever needs to give back what it took): sre keeps no state per line, where a plain `*`
# keeps ~700 bytes a line.
_PLAIN_URL_LINES = re.compile(r"(?:https?+://[a-z0-9.-]++(?::[0-9]++)?+(?:[/?#]" + _PLAIN_CHARS + r"+)?+\n)*+")
# Lines of URLs as check_url writes them: the scheme://authority of each run of lines that share it (a batch's
# URLs come in runs of one host, and a str per run costs less than a str per line).
_CHECKED_RUNS = re.compile(r"^(https?://[^/?#\n]*+)[^\n]*+(?:\n\1(?=[/?#\n]|\Z)[^\n]*+)*+", re.MULTILINE)
_busy = 0.0  # seconds check_url has worked since it last let other greenlets run


class GuardError(Exception):
    """Base of every refusal by the guard; `kind` is the engine's error kind.

    str() is the message anyone who submitted the URL may read; `detail`, when set, is the full reason
    (the address, the rule) for the log and for servers that explain refusals (GREENBATCH_EXPLAIN_BLOCKED).
    """

    kind: str = ErrorKind.OTHER.value

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail


class InvalidUrl(GuardError):
    """The URL is malformed or uses something we never fetch; the message says what."""

    kind = ErrorKind.INVALID_URL.value


class Blocked(GuardError):
    """The URL is well-formed but points somewhere the policy forbids; `detail` names the address and the rule."""

    kind = ErrorKind.BLOCKED.value


# ---------------------------------------------------------------------------------------------
# Default deny rules
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Why an address is denied by default, and what may lift the denial."""

    reason: str
    lift: str  # "private": ALLOW_PRIVATE or any allow entry; "entry": any allow entry; "exact": only an entry naming the address


def _rules(*rows: tuple[str, str, str]) -> tuple[tuple[IPNetwork, Verdict], ...]:
    """Compile (cidr, reason, lift) rows into networks."""
    return tuple((ipaddress.ip_network(cidr), Verdict(reason, lift)) for cidr, reason, lift in rows)


_METADATA = "a cloud metadata endpoint"
# First match wins, so single addresses come before the ranges that contain them.
_RULES = _rules(
    ("169.254.169.254/32", f"{_METADATA} (AWS, GCP, Azure, Oracle, OpenStack)", "exact"),
    ("169.254.170.2/32", f"{_METADATA} (AWS ECS task credentials)", "exact"),
    ("169.254.170.23/32", f"{_METADATA} (AWS EKS Pod Identity)", "exact"),
    ("168.63.129.16/32", f"{_METADATA} (Azure wire server)", "exact"),
    ("100.100.100.200/32", f"{_METADATA} (Alibaba Cloud)", "exact"),
    ("fd00:ec2::254/128", f"{_METADATA} (AWS, IPv6)", "exact"),
    ("fd00:ec2::23/128", f"{_METADATA} (AWS EKS Pod Identity, IPv6)", "exact"),
    ("0.0.0.0/8", "'this network' (0.0.0.0 reaches loopback on Linux)", "entry"),
    ("127.0.0.0/8", "loopback", "private"),
    ("10.0.0.0/8", "private (RFC 1918)", "private"),
    ("172.16.0.0/12", "private (RFC 1918)", "private"),
    ("192.168.0.0/16", "private (RFC 1918)", "private"),
    ("100.64.0.0/10", "carrier-grade NAT shared space (RFC 6598)", "private"),
    ("169.254.0.0/16", "link-local (where cloud metadata services live)", "private"),
    ("192.0.0.0/24", "reserved for IETF protocol assignments", "entry"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)", "entry"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)", "entry"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)", "entry"),
    ("192.88.99.0/24", "the deprecated 6to4 relay anycast", "entry"),
    ("198.18.0.0/15", "reserved for benchmarking", "entry"),
    ("224.0.0.0/4", "multicast", "entry"),
    ("255.255.255.255/32", "broadcast", "entry"),
    ("240.0.0.0/4", "reserved (240.0.0.0/4)", "entry"),
    ("::1/128", "loopback", "private"),
    ("::/128", "unspecified", "entry"),
    ("fc00::/7", "unique local (private IPv6)", "private"),
    ("fe80::/10", "link-local", "private"),
    ("fec0::/10", "site-local (deprecated private IPv6)", "private"),
    ("ff00::/8", "multicast", "entry"),
    ("2001:db8::/32", "documentation", "entry"),
    ("3fff::/20", "documentation", "entry"),
    ("100::/64", "discard-only", "entry"),
)

_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_SIXTOFOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
# RFC 6052 section 2.2: where the IPv4 sits for each NAT64 prefix length (byte 8, the u-octet, is skipped).
_NAT64_LAYOUTS = {48: ((6, 8), (9, 11)), 56: ((7, 8), (9, 12)), 64: ((9, 13),), 96: ((12, 16),)}


def _local_nat64_ipv4s(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 a 64:ff9b:1::/48 address may carry: the operator picks the prefix length, we don't know it."""
    packed, found = ip.packed, []
    for length, spans in _NAT64_LAYOUTS.items():
        end = spans[-1][1]
        if length != 96 and (packed[8] or any(packed[end:])):
            continue  # u-octet and suffix must be zero for this layout, so it is not this layout
        found.append(ipaddress.IPv4Address(b"".join(packed[a:b] for a, b in spans)))
    return found


def embedded_ipv4(ip: IPAddress) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, with what carries them; empty if none."""
    if ip.version != 6:
        return []
    value = int(ip)
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if ip in _MAPPED:
        return [("an IPv4-mapped address of", low32)]
    if ip in _TRANSLATED:
        return [("an IPv4-translated address of", low32)]
    if ip in _COMPATIBLE and value > 1:  # :: and ::1 are their own thing, not IPv4 carriers
        return [("an IPv4-compatible address of", low32)]
    if ip in _SIXTOFOUR:
        return [("a 6to4 address embedding", cast(ipaddress.IPv4Address, ip.sixtofour))]  # set inside 2002::/16
    if ip in _TEREDO:
        # Set inside 2001::/32; ipaddress already undoes the client's XOR with 0xffffffff.
        server, client = cast("tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]", ip.teredo)
        return [("a Teredo address whose client is", client), ("a Teredo address whose server is", server)]
    if ip in _NAT64:
        return [("a NAT64 address of", low32)]
    if ip in _NAT64_LOCAL:
        return [("a local-use NAT64 address embedding", v4) for v4 in _local_nat64_ipv4s(ip)]
    return []


def _is_special(ip: IPAddress) -> bool:
    """Python's own idea of non-public space, the floor under our explicit table."""
    return (
        ip.is_private
        or ip.is_reserved
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or not ip.is_global
    )


def judge(ip: IPAddress) -> Verdict | None:
    """The default rule that denies an address, or None when it is allowed."""
    carried = embedded_ipv4(ip)
    if carried:
        # Judged only by the IPv4 inside: Python calls 64:ff9b::8.8.8.8 "reserved", yet NAT64 on an
        # IPv6-only network synthesises exactly such addresses for every public IPv4 site.
        for label, v4 in carried:
            inner = judge(v4)
            if inner is not None:
                return Verdict(f"{label} {v4}, which is {inner.reason}", inner.lift)
        return None
    for network, verdict in _RULES:
        if ip in network:
            return verdict
    if _is_special(ip):
        return Verdict("a special-purpose address that is not publicly routable", "entry")
    return None


def denial_reason(ip: IPAddress | str) -> str | None:
    """Why the default rules deny an address (e.g. "loopback"), or None when they allow it."""
    verdict = judge(_parse_ip(ip))
    return verdict.reason if verdict else None


def _parse_ip(ip: IPAddress | str) -> IPAddress:
    """An ipaddress object from text, with any IPv6 zone (%eth0) dropped: it does not change the range."""
    if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ip
    return ipaddress.ip_address(str(ip).split("%", 1)[0])


# ---------------------------------------------------------------------------------------------
# Hostnames
# ---------------------------------------------------------------------------------------------


def ascii_host(host: str) -> str:
    """The host lowercased and IDNA 2008 encoded (strict, no UTS 46 mapping); ValueError says why not."""
    if not host:
        raise ValueError("the host is empty")
    trailing_dot = host.endswith(".")
    name = host[:-1] if trailing_dot else host
    if name.isascii():
        _check_host_length(host, len(name), exact=True)  # ASCII labels keep their length
        labels = name.lower().split(".")  # str.lower() of ASCII text folds ASCII only
    else:
        labels = name.split(".")
        # IDNA costs microseconds per character, so a host that cannot fit is refused before any label is
        # encoded: ASCII labels keep their length, the others become "xn--" and at least a character each.
        shortest = len(name) + len(_ACE_PREFIX) * sum(not label.isascii() for label in labels)
        _check_host_length(host, shortest, exact=False)
        # Only ASCII is case-folded; Unicode folding is a UTS 46 mapping.
        labels = [label.translate(_ASCII_LOWER) for label in labels]
    encoded = ".".join([_ascii_label(label, host) for label in labels])
    _check_host_length(host, len(encoded), exact=True)
    return encoded + ("." if trailing_dot else "")


def _check_host_length(host: str, length: int, exact: bool) -> None:
    """Refuse a host longer than DNS allows (`exact`: length is its encoded length, not a lower bound)."""
    if length > MAX_HOST_LENGTH:
        size = f"{length} characters long" if exact else f"at least {length} characters long once IDNA-encoded"
        raise ValueError(f"host {host!r} is {size}; DNS allows {MAX_HOST_LENGTH}")


def _ascii_label(label: str, host: str) -> str:
    """One label checked (ASCII) or encoded to an A-label (Unicode, or an existing xn-- label)."""
    if not label:
        raise ValueError(f"host {host!r} has an empty label (two dots in a row, or a leading dot)")
    if label.isascii() and not label.startswith(_ACE_PREFIX):
        # Plain ASCII is checked as letters-digits-hyphens only, not by IDNA: IDNA also forbids "--" in
        # positions 3-4, which real hosts such as r3---sn-abc.googlevideo.com use.
        if not _LABEL.match(label):
            raise ValueError(
                f"host {host!r} has characters not allowed in a hostname (only letters, "
                f"digits, '-' and '.'; no leading or trailing '-'; at most 63 per label)"
            )
        return label
    # An A-label has at most 63 characters: "xn--", then at least one per character of the U-label.
    if len(label) > (MAX_LABEL_LENGTH if label.isascii() else MAX_LABEL_LENGTH - len(_ACE_PREFIX)):
        raise _not_idna(host, "Label too long")
    try:
        # strict=True: only "." separates labels, so "。" and "．" are refused rather than treated as dots.
        return idna.encode(label, strict=True, uts46=False).decode("ascii")
    except idna.IDNAError as exc:
        raise _not_idna(host, exc) from None


def _not_idna(host: str, why: object) -> ValueError:
    """The refusal of a host IDNA 2008 does not accept, saying why."""
    return ValueError(
        f"host {host!r} is not a valid internationalised name under IDNA 2008 ({why}); "
        f"full-width or look-alike characters are refused, not normalised"
    )


def _normal_host(host: str | None) -> str | None:
    """A host as we compare it with hostname entries: lowercase, no brackets, no trailing dot."""
    if not host:
        return None
    return host.strip("[]").rstrip(".").translate(_ASCII_LOWER)


# ---------------------------------------------------------------------------------------------
# URL syntax
# ---------------------------------------------------------------------------------------------


def check_url(url: str, max_length: int = 2048) -> str:
    """The URL, host IDNA-encoded, if it is safe to try; InvalidUrl says why it is not."""
    started = time.perf_counter()
    try:
        return _checked_url(url, max_length)
    finally:
        _take_turns(time.perf_counter() - started)


def _take_turns(spent: float) -> None:
    """Count `spent` seconds of checking, and after each HUB_SLICE of it let other greenlets run.

    A request of 10,000 URLs with long internationalised hosts costs seconds of IDNA in pure Python;
    once gevent has patched time.sleep, other requests and fetches run in between.
    """
    global _busy
    _busy += spent
    if _busy >= HUB_SLICE:
        _busy = 0.0
        time.sleep(TURN)


def _checked_url(url: str, max_length: int) -> str:
    """check_url's work."""
    if not isinstance(url, str) or not url:
        raise InvalidUrl("the URL is empty")
    if len(url) > max_length:
        raise InvalidUrl(f"the URL is {len(url)} characters long; the limit is {max_length}")
    bad = _bad_character(url)
    if bad:
        raise InvalidUrl(f"the URL contains {bad}; encode it or remove it")
    scheme, netloc, rest = _split_authority(url)
    host, port = _split_netloc(netloc)
    return f"{scheme}://{_authority(host, port)}{rest}"


def all_unchanged(urls: Sequence[Any], max_length: int = 2048) -> bool:
    """Whether check_url accepts every URL of a list and returns each as it is: one pattern over the list.

    The common batch (lower-case http(s), plain host[:port], printable ASCII) is checked by one regular
    expression over each JOINED_URLS of the list joined and each distinct host once, instead of check_url per
    URL. False says nothing about any URL: check each one then, for its own answer.
    """
    authorities: set[str] = set()
    for start in range(0, len(urls), JOINED_URLS):
        started = time.perf_counter()
        part = urls[start : start + JOINED_URLS]
        try:
            if not all(map(str.isascii, part)):
                return False  # the pattern takes ASCII only, and joining other text costs more than it saves
            joined = "\n".join(part) + "\n"
        except TypeError:
            return False  # something that is not a string
        if joined.count("\n") != len(part) or not _PLAIN_URL_LINES.fullmatch(joined):
            return False  # a line break inside a URL, or anything the pattern does not know
        if max(map(len, part), default=0) > max_length:
            return False
        authorities.update(key.partition("://")[2] for key in _CHECKED_RUNS.findall(joined))
        _take_turns(time.perf_counter() - started)
    return all(_unchanged_authority(authority) for authority in authorities)


def _unchanged_authority(authority: str) -> bool:
    """Whether check_url accepts an authority and writes it back the same (taking turns as check_url does)."""
    started = time.perf_counter()
    try:
        host, port = _split_netloc(authority)
    except InvalidUrl:
        return False
    finally:
        _take_turns(time.perf_counter() - started)
    return authority == _authority(host, port)


def _authority(host: str, port: int | None) -> str:
    """host[:port] as check_url writes it."""
    return host if port is None else f"{host}:{port}"


def _split_authority(url: str) -> tuple[str, str, str]:
    """(lower-case scheme, authority, the rest) of a URL _bad_character accepted; InvalidUrl if not http(s)://."""
    match = _HTTP_AUTHORITY.match(url)
    if match and match.group(2).isascii():
        return match.group(1).lower(), match.group(2), url[match.end() :]
    return _split_authority_slowly(url)


def _split_authority_slowly(url: str) -> tuple[str, str, str]:
    """_split_authority through urlsplit: every URL the fast pattern does not take (and its reference in tests)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidUrl(f"the URL cannot be parsed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = f"{parts.scheme}:" if parts.scheme else "none"
        raise InvalidUrl(f"only http:// and https:// URLs are fetched (scheme: {shown})")
    after_scheme = len(parts.scheme) + 1
    if not url.startswith("//", after_scheme):
        raise InvalidUrl(f"the URL must continue with '//' and a host after '{parts.scheme}:'")
    start = after_scheme + 2
    return scheme, url[start : start + len(parts.netloc)], url[start + len(parts.netloc) :]


def _bad_character(url: str) -> str | None:
    """A description of the first character we refuse anywhere in a URL, or None."""
    if url.isprintable() and " " not in url and "\\" not in url:
        return None  # the common case: of the invisible categories, only the space is printable
    found = _BAD_BMP.search(url)
    if not url.isascii():
        end = found.start() if found else len(url)
        astral = _ASTRAL.search(url, 0, end)
        if astral:
            found = _BAD_ASTRAL.search(url, astral.start(), end) or found
    return _described(found.group()) if found else None


def _described(ch: str) -> str:
    """What a character _BAD_BMP or _BAD_ASTRAL matched is, for the refusal's message."""
    if ch == "\\":
        return "a backslash (parsers disagree on it: some read it as '/')"
    if ch in "\r\n":
        return "a line break (CR or LF), which could inject headers"
    if ch == " ":
        return "a space"
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return f"the control character U+{ord(ch):04X}"
    if 0xD800 <= ord(ch) <= 0xDFFF:
        return f"a lone surrogate U+{ord(ch):04X} (text that is not valid Unicode)"
    return f"the invisible or space-like character U+{ord(ch):04X}"


@functools.lru_cache(maxsize=1024)
def _split_netloc(netloc: str) -> tuple[str, int | None]:
    """The (ASCII host, port or None) of a URL authority; InvalidUrl when it is not plain host[:port].

    A pure function of its text, so it is cached: a batch's URLs share a few hosts, and IDNA and the
    label checks were most of check_url's cost. Refusals raise and are never cached.
    """
    if "@" in netloc:
        raise InvalidUrl(
            "the URL has a user name or password before '@'; credentials in URLs are refused "
            "(they also hide the real host: http://good.example@evil.example/)"
        )
    if netloc.startswith("["):
        close = netloc.find("]")
        if close < 0:
            raise InvalidUrl("the URL's IPv6 address is missing its closing ']'")
        host, after = _ipv6_literal(netloc[1:close]), netloc[close + 1 :]
        if after and not after.startswith(":"):
            raise InvalidUrl(f"unexpected text {after!r} after the IPv6 address")
        port_text = after[1:] if after else None
    else:
        name, colon, port_text = netloc.partition(":")
        port_text = port_text if colon else None
        if port_text is not None and ":" in port_text:
            raise InvalidUrl(
                "the host has more than one ':'; an IPv6 address must be in brackets, like http://[2001:db8::1]:8080/"
            )
        try:
            host = ascii_host(name)
        except ValueError as exc:
            raise InvalidUrl(str(exc)) from None
    return host, _url_port(port_text)


def _ipv6_literal(text: str) -> str:
    """A bracketed IPv6 host, normalised; zone IDs are refused since they pick an interface."""
    if "%" in text:
        raise InvalidUrl(f"the IPv6 address [{text}] has a zone ID (%...); zone IDs are refused")
    try:
        ipaddress.IPv6Address(text)
        return f"[{text.lower()}]"  # as written: Python would print ::ffff:127.0.0.1 as ::ffff:7f00:1
    except ValueError:
        raise InvalidUrl(f"[{text}] is not a valid IPv6 address") from None


def _url_port(text: str | None) -> int | None:
    """The port written in a URL, or None when none is written."""
    if text is None:
        return None
    try:
        return parse_port(text)
    except ValueError as exc:
        raise InvalidUrl(str(exc)) from None


def parse_port(text: str) -> int:
    """A TCP port from ASCII digits, 1 to 65535; ValueError says what is wrong."""
    if not text:
        raise ValueError("the port is empty after ':'")
    # isascii: str.isdigit alone accepts "８０" and other non-ASCII digits.
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"the port {text!r} is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"the port {port} is outside 1-65535")
    return port


# ---------------------------------------------------------------------------------------------
# Policy
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One allow or deny entry: a network or a hostname, limited to one port when `port` is set."""

    text: str
    network: IPNetwork | None = None
    hostname: str | None = None
    port: int | None = None

    @property
    def names_one_address(self) -> bool:
        """True when the entry is a single address (not a range, not a hostname)."""
        return self.network is not None and self.network.num_addresses == 1

    def matches(self, ip: IPAddress, host: str | None, *, deny: bool = False) -> bool:
        """Whether the entry covers this address or host, ignoring the port."""
        if self.hostname is not None:
            return host == self.hostname
        network = cast(IPNetwork, self.network)  # an entry without a hostname has a network (parse_target)
        return any(candidate in network for candidate in _match_candidates(ip, deny))


def _match_candidates(ip: IPAddress, deny: bool) -> list[IPAddress]:
    """Addresses an entry is compared with: deny entries also catch every embedded IPv4 and its mapped
    form (be broad), allow entries only the IPv4-mapped one, which is the very same IPv4 socket (be narrow)."""
    if deny:
        return _deny_candidates(ip)
    mapped = getattr(ip, "ipv4_mapped", None)
    return [ip, mapped] if mapped else [ip]


def _deny_candidates(ip: IPAddress) -> list[IPAddress]:
    """The address, each IPv4 it embeds, and each such IPv4 written IPv4-mapped: a deny entry or a denied
    name's address in any of these forms catches it (so ::ffff:10.0.0.1 in the list denies 10.0.0.1)."""
    ipv4s = [ip] if ip.version == 4 else [v4 for _, v4 in embedded_ipv4(ip)]
    mapped = [ipaddress.IPv6Address(int(_MAPPED.network_address) | int(v4)) for v4 in ipv4s]
    return [ip, *(v4 for v4 in ipv4s if v4 != ip), *mapped]


def parse_target(text: str) -> Target:
    """One entry: CIDR, IP or hostname, optionally with :port ([v6]:port); ValueError names the entry."""
    entry = text.strip()
    try:
        return _parse_target(entry)
    except ValueError as exc:
        raise ValueError(f"entry {entry!r}: {exc}") from None


def _parse_target(entry: str) -> Target:
    """parse_target without the entry named in errors."""
    if not entry:
        raise ValueError("empty entry")
    if entry.startswith("["):
        inside, close, after = entry[1:].partition("]")
        if not close:
            raise ValueError("missing the closing ']'")
        if after and not after.startswith(":"):
            raise ValueError("after ']' only ':port' may follow (write a range as [fd00::/8]:443)")
        port = parse_port(after[1:]) if after else None
        network = _target_network(inside)
        if network is None or network.version != 6:
            raise ValueError("only IPv6 addresses go in brackets")
        return Target(entry, network=network, port=port)
    if entry.count(":") >= 2:  # a bare IPv6 address or range cannot carry a port: "::1:8080" is an address
        network = _target_network(entry)
        if network is None:
            raise ValueError("not a valid IPv6 address or range (an IPv6 with a port is written [::1]:8080)")
        return Target(entry, network=network)
    name, colon, port_text = entry.partition(":")
    port = parse_port(port_text) if colon else None
    network = _target_network(name)
    if network is not None:
        return Target(entry, network=network, port=port)
    if "/" in name:
        raise ValueError("not a valid CIDR range")
    hostname = ascii_host(name).rstrip(".")
    if hostname.rsplit(".", 1)[-1].isdigit():
        # "127.1" or "0x7f.1" would silently become a hostname entry; no real hostname ends in digits.
        raise ValueError("looks like an IP address but is not dotted-quad IPv4 or IPv6")
    return Target(entry, hostname=hostname, port=port)


def _target_network(text: str) -> IPNetwork | None:
    """The network an entry names, None if it is not an address at all; ValueError on a bad range."""
    if "%" in text:
        raise ValueError("zone IDs (%...) are not allowed")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "/" in text and _looks_like_ip(text.split("/", 1)[0]):
            raise ValueError(f"not a valid CIDR range ({exc})") from None
        return None


def _looks_like_ip(text: str) -> bool:
    """Whether text parses as an IP address, so a bad range after it is a typo, not a hostname."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def parse_targets(text: str, variable: str) -> tuple[Target, ...]:
    """A comma-separated list of entries; empty items are skipped; ValueError names variable and entry."""
    targets = []
    for item in (text or "").split(","):
        if item.strip():
            try:
                targets.append(parse_target(item))
            except ValueError as exc:
                raise ValueError(f"{variable}: {exc}") from None
    return tuple(targets)


def _in_background(work: Callable[[], None]) -> None:
    """Run work in a thread of its own (a greenlet once gevent has patched threading)."""
    threading.Thread(target=work, name="deny-list lookup", daemon=True).start()


class DeniedNames:
    """The addresses that GREENBATCH_DENY_TARGETS' hostname entries resolve to, denied in every form.

    Without them a denied name is reached by its address, or by another name for it. They are looked up
    when the policy is built and again once DENY_REFRESH seconds have passed: the check that finds them
    due starts the lookup in the background and goes on with the addresses it has. A name that does not
    resolve keeps the addresses it had, and the log says so.
    """

    def __init__(
        self,
        entries: tuple[Target, ...],
        getaddrinfo: GetAddrInfo | None = None,
        interval: float = DENY_REFRESH,
        clock: Callable[[], float] = time.monotonic,
        start: Callable[[Callable[[], None]], None] = _in_background,
    ):
        self.entries = entries
        self._getaddrinfo = getaddrinfo
        self._interval, self._clock, self._start = interval, clock, start
        self._addresses: dict[str, frozenset[IPAddress]] = {}
        self._due = 0.0
        self._looking = False
        self.refresh()

    def refresh(self) -> None:
        """Look every name up now; a name that does not resolve keeps the addresses it had."""
        lookup: GetAddrInfo = self._getaddrinfo or socket.getaddrinfo  # at call time: gevent's resolver once patched
        found = dict(self._addresses)
        try:
            # Every entry here is a hostname entry (Policy.from_settings picks them).
            for name in dict.fromkeys(cast(str, entry.hostname) for entry in self.entries):
                try:
                    addresses = _addresses_of(name, lookup)
                except (OSError, UnicodeError) as exc:
                    kept = len(found.get(name, ()))
                    log.warning(
                        "%s: %s could not be looked up (%s); %s until it resolves (next try in %g s)",
                        DENY_VAR,
                        name,
                        exc,
                        f"its {kept} known addresses stay denied" if kept else "only the name itself is denied",
                        self._interval,
                    )
                    continue
                if addresses != found.get(name):
                    log.info(
                        "%s: %s resolves to %s, denied too (looked up again every %g s)",
                        DENY_VAR,
                        name,
                        ", ".join(sorted(map(show_address, addresses))),
                        self._interval,
                    )
                found[name] = addresses
            self._addresses = found
        finally:
            self._due = self._clock() + self._interval
            self._looking = False

    def addresses(self, name: str) -> frozenset[IPAddress]:
        """The addresses a denied name resolved to when last looked up (empty if it never did)."""
        return self._addresses.get(name, frozenset())

    def entry_for(self, ip: IPAddress, port: int) -> Target | None:
        """The hostname entry covering this port whose name resolves to this address, if any."""
        if not self._looking and self._clock() >= self._due:
            self._looking = True
            self._start(self.refresh)
        if not self._addresses:
            return None
        candidates = _deny_candidates(ip)
        for entry in self.entries:
            known = self._addresses.get(cast(str, entry.hostname))
            if known and entry.port in (None, port) and any(candidate in known for candidate in candidates):
                return entry
        return None


def _addresses_of(name: str, lookup: GetAddrInfo) -> frozenset[IPAddress]:
    """Every IP address a name resolves to; OSError (socket.gaierror) when it resolves to none."""
    infos = lookup(name, None, type=socket.SOCK_STREAM)
    found = frozenset(_parse_ip(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6))
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, "no IP address")
    return found


DEFAULT_PORTS = {"http": 80, "https": 443}
# scheme://host[:port] of a URL as check_url returns it (lower-case scheme, nothing before the host).
_CHECKED_AUTHORITY = re.compile(r"(https?)://([^/?#]*)")
# What a host that may need no lookup starts with: a digit (an IPv4 address in any form libc reads) or '['.
_LITERAL_STARTS = frozenset("0123456789[")
_AUTHORITY_ENDS = frozenset(("", "/", "?", "#"))
_LOOPBACK_ADDRESSES: tuple[IPAddress, ...] = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


def _run_keys(urls: Sequence[str | None]) -> set[str] | None:
    """The scheme://authority of every URL (as check_url returned it) of a list, found by one pattern over its
    runs of one host; None when the list holds something else (None, a line break), for a test of each URL."""
    try:
        joined = "\n".join(urls)  # type: ignore[arg-type]  # a TypeError says there is a None
    except TypeError:
        return None
    if joined.count("\n") != len(urls) - 1:
        return None
    return set(_CHECKED_RUNS.findall(joined))


def _may_be_literal(url: str) -> bool:
    """Whether a checked URL's host may be an address or localhost: a test of one character and a substring."""
    start = url.find("//") + 2
    return url[start : start + 1] in _LITERAL_STARTS or "localhost" in url


def _numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address libc's resolver reads in a host (127.0.0.1, 2130706433, 0x7f.1, 127.1), or None.

    getaddrinfo parses numeric hosts with inet_aton before any lookup, so socket.inet_aton, the same
    parser, says which address a fetch would connect to. Every part of such a host starts with a digit
    (0x7f too), and no top-level domain does.
    """
    if not host.rpartition(".")[2][:1].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


@dataclass(frozen=True)
class Policy:
    """Which addresses may be fetched: the default rules, ALLOW_PRIVATE, and allow/deny entries."""

    allow_private: bool = False
    allow: tuple[Target, ...] = ()
    deny: tuple[Target, ...] = ()
    denied_names: DeniedNames | None = field(default=None, compare=False)  # the deny entries' hostnames' addresses

    @classmethod
    def from_settings(
        cls, allow_private: bool, allow_targets: str, deny_targets: str, getaddrinfo: GetAddrInfo | None = None
    ) -> Policy:
        """Build from the GREENBATCH_ALLOW_PRIVATE, _ALLOW_TARGETS and _DENY_TARGETS settings.

        Hostname deny entries are looked up here (through `getaddrinfo`, socket's by default), so that
        their addresses are denied too; see DeniedNames.
        """
        deny = parse_targets(deny_targets, DENY_VAR)
        by_name = tuple(entry for entry in deny if entry.hostname is not None)
        return cls(
            allow_private=bool(allow_private),
            allow=parse_targets(allow_targets, ALLOW_VAR),
            deny=deny,
            denied_names=DeniedNames(by_name, getaddrinfo) if by_name else None,
        )

    def describe(self) -> str:
        """The policy in one line, for the start-up log: what may be fetched besides public addresses."""
        parts = ["public and private addresses" if self.allow_private else "public addresses only"]
        if self.allow:
            parts.append("also allowed: " + ", ".join(entry.text for entry in self.allow))
        elif not self.allow_private:
            parts.append(f"to fetch a server on this machine, start with {ALLOW_VAR}=127.0.0.1:<its port>")
        if self.deny:
            parts.append("always denied: " + ", ".join(entry.text for entry in self.deny))
        return "; ".join(parts)

    def check_address(self, ip: str | IPAddress, port: int, host: str | None = None) -> None:
        """Return if connecting to ip:port (for the URL's host) is allowed; raise Blocked naming the rule."""
        try:
            addr = _parse_ip(ip)
        except ValueError:
            raise Blocked(
                "the host resolved to something that is not an IP address, so it cannot be checked",
                f"{ip!r} is not an IP address, so it cannot be checked",
            ) from None
        name = _normal_host(host)
        if self.deny:
            self._check_deny_list(addr, port, name)
        verdict = judge(addr)
        if verdict is None:
            return
        if verdict.lift == "private" and self.allow_private:
            return
        other_ports = []
        for entry in self.allow:
            if not entry.matches(addr, name):
                continue
            if verdict.lift == "exact" and not entry.names_one_address:
                continue
            if entry.port in (None, port):
                return
            other_ports.append(str(entry.port))
        # Named only here: an allowed address (every connection) never pays for the message.
        raise Blocked(
            _not_fetched(addr, name, port, verdict),
            f"{_subject(addr, name)} is {verdict.reason}{_why_denied(verdict, port, other_ports)}",
        )

    def refuses_literal(self, url: str) -> str | None:
        """Why this policy blocks a URL check_url returned whose host needs no lookup, or None (see literal_refusals)."""
        refused = self.literal_refusals([url])
        return refused[0][1] if refused else None

    def literal_refusals(self, urls: Sequence[str | None]) -> list[tuple[int, str]]:
        """(index, why) of each URL (as check_url returned it; None is skipped) that this policy blocks whatever
        DNS says: its host is an IP address in any form libc reads (2130706433 too), or localhost or a name
        under .localhost whose every loopback address is blocked. Other names are judged when fetched.

        Each distinct scheme://host:port is judged once. A slice of JOINED_URLS whose hosts are all let through
        costs one pattern over it; only a slice with a refused host is gone through URL by URL.
        """
        found: list[tuple[int, str]] = []
        judged: dict[str, str | None] = {}
        for start in range(0, len(urls), JOINED_URLS):
            started = time.perf_counter()
            part = urls[start : start + JOINED_URLS]
            keys = _run_keys(part)
            if keys is None or any(self._key_refusal(key, judged) for key in keys):
                found += self._refusals_one_by_one(part, start, judged)
            _take_turns(time.perf_counter() - started)
        return found

    def _refusals_one_by_one(
        self, urls: Sequence[str | None], first: int, judged: dict[str, str | None]
    ) -> list[tuple[int, str]]:
        """literal_refusals of some URLs, the first of them at index `first`, testing each URL."""
        found: list[tuple[int, str]] = []
        # The last scheme://authority judged and its verdict: a batch's URLs come in runs of one host.
        key, cut, why = "", 0, None
        for index, url in enumerate(urls, first):
            if url is None:
                continue
            if not (url.startswith(key) and url[cut : cut + 1] in _AUTHORITY_ENDS):
                if not _may_be_literal(url):
                    continue
                match = _CHECKED_AUTHORITY.match(url)
                if match is None:
                    continue
                key = match.group(0)
                cut = len(key)
                why = self._key_refusal(key, judged)
            if why is not None:
                found.append((index, why))
        return found

    def _key_refusal(self, key: str, judged: dict[str, str | None]) -> str | None:
        """literal_refusals' verdict on one scheme://authority, judged once (and taking turns as check_url does)."""
        if key not in judged:
            started = time.perf_counter()
            match = _CHECKED_AUTHORITY.fullmatch(key)
            judged[key] = (
                self._literal_refusal(match.group(1), match.group(2)) if match and _may_be_literal(key) else None
            )
            _take_turns(time.perf_counter() - started)
        return judged[key]

    def _literal_refusal(self, scheme: str, authority: str) -> str | None:
        """literal_refusals' verdict on one scheme and authority."""
        try:
            host, written_port = _split_netloc(authority)
        except InvalidUrl:
            return None  # not what check_url returns: the fetch will say
        port = written_port or DEFAULT_PORTS[scheme]
        if host.startswith("["):
            return self._address_refusal(ipaddress.IPv6Address(host[1:-1]), port, host[1:-1])
        name = host.rstrip(".")
        if name == "localhost" or name.endswith(".localhost"):
            return self._localhost_refusal(name, port)
        addr = _numeric_ipv4(host)
        return self._address_refusal(addr, port, host) if addr is not None else None

    def _address_refusal(self, addr: IPAddress, port: int, host: str) -> str | None:
        """Why a URL whose host is `host`, an address, is blocked on this port (and what lets it through), or None."""
        try:
            self.check_address(addr, port, host)
            return None
        except Blocked:
            pass
        name = _normal_host(host)
        denied = self._deny_refusal([addr], port, name)
        if denied:
            return denied
        verdict = cast(Verdict, judge(addr))  # blocked and not by the deny-list: a default rule denies it
        shown = show_address(addr)
        subject = shown if _same_address(host, addr) else f"{host} (that is {shown})"
        why = f"{subject} is {verdict.reason}; this server does not fetch it"
        other_ports = [
            str(entry.port)
            for entry in self.allow
            if entry.matches(addr, name)
            and (verdict.lift != "exact" or entry.names_one_address)
            and entry.port not in (None, port)
        ]
        if other_ports:
            why += f" on port {port} ({ALLOW_VAR} allows it only on port {', '.join(other_ports)})"
        if verdict.lift == "exact":
            return why  # only an entry naming this very address lifts it: not advice to hand whoever submits
        v4 = getattr(addr, "ipv4_mapped", None) or addr  # an IPv4-mapped address is its IPv4's socket
        entry = f"[{v4}]:{port}" if v4.version == 6 else f"{v4}:{port}"
        return why + self._restart_hint(entry, [addr], port, host)

    def _localhost_refusal(self, name: str, port: int) -> str | None:
        """Why localhost (or a name under .localhost) is blocked on this port, or None when either loopback
        address is allowed: which one the name resolves to is the resolver's to say, at fetch time."""
        addresses = _LOOPBACK_ADDRESSES
        for addr in addresses:
            try:
                self.check_address(addr, port, name)
                return None
            except Blocked:
                pass
        denied = self._deny_refusal(addresses, port, name)
        if denied:
            return denied
        why = f"{name} is this machine (loopback, 127.0.0.1 or ::1); this server does not fetch it"
        return why + self._restart_hint(f"{name}:{port}", addresses, port, name)

    def _deny_refusal(self, addresses: Iterable[IPAddress], port: int, name: str | None) -> str | None:
        """The deny-list's refusal of any of these addresses for this host, or None."""
        for addr in addresses:
            try:
                self._check_deny_list(addr, port, name)
            except Blocked as refusal:
                return str(refusal)
        return None

    def _restart_hint(self, entry: str, addresses: Iterable[IPAddress], port: int, host: str) -> str:
        """ "; restart with GREENBATCH_ALLOW_TARGETS=<today's entries and this one>", when that lets every address
        through for this host; else ""."""
        value = ",".join([*(existing.text for existing in self.allow), entry])
        try:
            widened = replace(self, allow=(*self.allow, parse_target(entry)))
            for addr in addresses:
                widened.check_address(addr, port, host)
        except (ValueError, Blocked):
            return ""
        return f"; restart with {ALLOW_VAR}={value}"

    def _check_deny_list(self, addr: IPAddress, port: int, name: str | None) -> None:
        """Raise Blocked when a deny entry covers the address, the URL's host, or an address of a denied name."""
        entry: Target | None
        for entry in self.deny:
            if entry.matches(addr, name, deny=True) and entry.port in (None, port):
                raise _on_deny_list(addr, port, name, entry, f"{entry.text!r} in {DENY_VAR}")
        entry = self.denied_names.entry_for(addr, port) if self.denied_names else None
        if entry is not None:
            raise _on_deny_list(addr, port, name, entry, f"{entry.text!r} in {DENY_VAR}, a name that resolves to it")


def _on_deny_list(addr: IPAddress, port: int, name: str | None, entry: Target, rule: str) -> Blocked:
    """The refusal of an address or host a deny entry covers."""
    public = (
        f"{name} resolves to an address on this server's deny-list ({DENY_VAR})"
        if name and not _same_address(name, addr) and name != entry.hostname
        else f"{name or show_address(addr)} is on this server's deny-list ({DENY_VAR})"
    )
    return Blocked(public, f"{_subject(addr, name)} on port {port} matches {rule} (the deny-list always wins)")


def _not_fetched(addr: IPAddress, name: str | None, port: int, verdict: Verdict) -> str:
    """A default denial as anyone who submits may read it: no address unless the user typed it, no rule."""
    literal = not name or _same_address(name, addr)
    shown = show_address(addr) if literal else cast(str, name)  # not literal: there is a name
    what = "is" if literal else "resolves to"
    hint = _allow_hint(shown, port, verdict)
    return f"{shown} {what} a private or reserved address, which this server does not fetch{hint}"


def _allow_hint(host: str, port: int, verdict: Verdict) -> str:
    """How an operator lets the host through on this port, when one allow entry would (a valid one)."""
    if verdict.lift == "exact":
        return ""  # only an entry naming the address itself would, and the address is not ours to tell
    entry = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        parse_target(entry)
    except ValueError:
        return ""  # e.g. 2130706433: a host no entry can name
    return f" (an operator can allow it with {ALLOW_VAR}={entry})"


def _subject(addr: IPAddress, host: str | None) -> str:
    """How a detailed message names the target: the address, and the hostname that led there if any."""
    shown = show_address(addr)
    if host and not _same_address(host, addr):
        return f"{host} resolves to {shown}, which"
    return shown


def show_address(addr: IPAddress) -> str:
    """An address as a person expects to read it: IPv4-mapped ones keep their dotted quad."""
    mapped = getattr(addr, "ipv4_mapped", None)
    return f"::ffff:{mapped}" if mapped else str(addr)


def _same_address(host: str, addr: IPAddress) -> bool:
    """Whether the URL's host is this address written literally (so "resolves to" would be noise)."""
    try:
        return _parse_ip(host) == addr
    except ValueError:
        return False


def _why_denied(verdict: Verdict, port: int, other_ports: list[str]) -> str:
    """The parenthesis telling the reader which setting would change the outcome."""
    if other_ports:
        return f" ({ALLOW_VAR} allows it only on port {', '.join(other_ports)}, not {port})"
    if verdict.lift == "exact":
        return f" (denied even with {PRIVATE_VAR}; only a {ALLOW_VAR} entry naming this exact address lets it through)"
    return f" (denied by default; see {ALLOW_VAR})"


# ---------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------


def resolve(host: str, port: int, policy: Policy, getaddrinfo: GetAddrInfo | None = None) -> list[AddrInfo]:
    """Resolve once, check every address, and return the addrinfo tuples the caller must connect to."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not name.isascii():
        # socket.getaddrinfo would apply Python's IDNA 2003 codec, which maps "１２７.０.０.１" to 127.0.0.1.
        raise InvalidUrl(f"host {host!r} is not ASCII; pass the host returned by check_url")
    # Looked up at call time, not bound as a default, so gevent's monkey-patched resolver is the one used.
    lookup: GetAddrInfo = getaddrinfo or socket.getaddrinfo
    infos = list(lookup(name, port, type=socket.SOCK_STREAM))  # gaierror propagates as is
    if not infos:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} resolved to no addresses")
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise Blocked(
                f"{host} did not resolve to an IP address", f"{host} resolved to a non-IP address (family {family!r})"
            )
        # Every address, not just the first: a transport may fall back to the second one.
        policy.check_address(sockaddr[0], port, host=name)
    return infos


class GuardedResolver:
    """The resolver every transport must use: resolve() under one policy (app/fetch make_transport insists on it)."""

    def __init__(self, policy: Policy, getaddrinfo: GetAddrInfo | None = None):
        self.policy = policy
        self._getaddrinfo = getaddrinfo

    def __call__(self, host: str, port: int) -> list[AddrInfo]:
        """The checked addrinfo tuples of host:port; Blocked or socket.gaierror when there are none to use."""
        return resolve(host, port, self.policy, self._getaddrinfo)


def connect(
    infos: list[AddrInfo],
    timeout: float | None,
    socket_options: Iterable[tuple[int, int, int | bytes]] = (),
    make_socket: Callable[..., socket.socket] | None = None,
) -> socket.socket:
    """Connect to the first of the addresses resolve() checked that answers; never resolve the name again.

    Raises TimeoutError when an address does not answer in time, else the last OSError (each transport
    maps these onto its own errors).
    """
    make = make_socket or socket.socket  # at call time: gevent's patched socket when patched
    last: OSError | None = None
    for family, type_, proto, _canon, sockaddr in infos:
        sock = make(family, type_, proto)
        try:
            for option in socket_options:
                sock.setsockopt(*option)
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except TimeoutError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last = exc
        except BaseException:
            sock.close()
            raise
    raise last if last is not None else OSError(f"no address to connect to in {infos!r}")
