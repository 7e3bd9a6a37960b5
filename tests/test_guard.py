"""The SSRF guard, table by table: URL syntax, default deny rules, policy entries, and resolve-once."""

import ipaddress
import re
import socket
import sys
import time
import unicodedata

import pytest

from app.fetch import guard
from app.fetch.guard import Blocked, InvalidUrl, Policy

P = pytest.param


def _ip4(text):
    return ipaddress.IPv4Address(text)


def _local_nat64_48(v4):
    """64:ff9b:1::/48 with the IPv4 in the RFC 6052 /48 position (bytes 6-7 and 9-10)."""
    b = _ip4(v4).packed
    raw = ipaddress.IPv6Address("64:ff9b:1::").packed[:6] + b[:2] + b"\x00" + b[2:] + b"\x00" * 5
    return str(ipaddress.IPv6Address(raw))


def _teredo(server, client):
    """A Teredo address: server in bits 32-64, client XORed with 0xffffffff in the last 32 bits."""
    value = (0x2001 << 112) | (int(_ip4(server)) << 64) | (int(_ip4(client)) ^ 0xFFFFFFFF)
    return str(ipaddress.IPv6Address(value))


# ---------------------------------------------------------------------------------------------
# check_url
# ---------------------------------------------------------------------------------------------

_ACCEPTED = [
    P("http://example.com/", "http://example.com/", id="plain-http"),
    P(
        "https://example.com:8443/a/b?q=1&r=2#frag",
        "https://example.com:8443/a/b?q=1&r=2#frag",
        id="https-with-port-query-fragment",
    ),
    P("HTTP://Example.COM/Path", "http://example.com/Path", id="scheme-and-host-lowercased-path-kept"),
    P("http://bücher.example/x", "http://xn--bcher-kva.example/x", id="unicode-host-idna-encoded"),
    P("http://xn--bcher-kva.example/", "http://xn--bcher-kva.example/", id="punycode-host-kept"),
    P("http://例え.テスト/", "http://xn--r8jz45g.xn--zckzah/", id="japanese-host-idna-encoded"),
    P("http://[2001:db8::1]:8080/", "http://[2001:db8::1]:8080/", id="bracketed-ipv6-with-port"),
    P("http://[::FFFF:127.0.0.1]/", "http://[::ffff:127.0.0.1]/", id="bracketed-ipv4-mapped-passes-syntax"),
    P("http://2130706433/", "http://2130706433/", id="decimal-ipv4-passes-syntax-blocked-at-resolve"),
    P("http://0x7f.1/", "http://0x7f.1/", id="hex-ipv4-passes-syntax-blocked-at-resolve"),
    P(
        "http://r3---sn-abc.googlevideo.com/",
        "http://r3---sn-abc.googlevideo.com/",
        id="double-hyphen-ascii-label-allowed",
    ),
    P("http://example.com./", "http://example.com./", id="trailing-dot-fqdn"),
    P("http://example.com:080/", "http://example.com:80/", id="port-leading-zero-normalised"),
    P("http://example.com/caf%C3%A9?x=ü", "http://example.com/caf%C3%A9?x=ü", id="unicode-in-query-kept"),
]


@pytest.mark.parametrize("url, expected", _ACCEPTED)
def test_check_url_accepts_well_formed_http_urls(url, expected):
    assert guard.check_url(url) == expected


_REFUSED = [
    P("file:///etc/passwd", "scheme: file:", id="file-scheme"),
    P("gopher://127.0.0.1:6379/_INFO", "scheme: gopher:", id="gopher-scheme"),
    P("dict://127.0.0.1:11211/stat", "scheme: dict:", id="dict-scheme"),
    P("ftp://example.com/", "scheme: ftp:", id="ftp-scheme"),
    P("javascript:alert(1)", "scheme: javascript:", id="javascript-scheme"),
    P("//example.com/", "scheme: none", id="no-scheme-protocol-relative"),
    P("example.com", "scheme: none", id="no-scheme-bare-host"),
    P("http:example.com", "must continue with '//'", id="no-slashes-after-scheme"),
    P("http://example.com\\@127.0.0.1/", "backslash", id="backslash-in-authority"),
    P("http://example.com/a\\b", "backslash", id="backslash-in-path"),
    P("http://example.com/\x00", "control character U+0000", id="nul-byte"),
    P("http://exa\tmple.com/", "control character U+0009", id="tab"),
    P("http://example.com/\r\nX-Injected: 1", "line break", id="crlf-header-injection"),
    P("http://example.com/a\nb", "line break", id="bare-lf"),
    P("http://example.com/a b", "a space", id="space"),
    P("http://example.com/\x7f", "U+007F", id="del-character"),
    P("http://exa\u200bmple.com/", "U+200B", id="zero-width-space"),
    P("http://example.com/\u202e", "U+202E", id="bidi-override"),
    P("http://example.com/\u3000", "U+3000", id="ideographic-space"),
    P("http://user@example.com/", "user name or password", id="userinfo-user"),
    P("http://user:pass@example.com/", "user name or password", id="userinfo-user-password"),
    P("http://example.com@127.0.0.1/", "user name or password", id="userinfo-hiding-real-host"),
    P("http:///path", "host is empty", id="empty-host"),
    P("http://:8080/", "host is empty", id="empty-host-with-port"),
    P("http://example.com:0/", "outside 1-65535", id="port-zero"),
    P("http://example.com:65536/", "outside 1-65535", id="port-too-big"),
    P("http://example.com:http/", "not a number", id="port-not-numeric"),
    P("http://example.com:/", "port is empty", id="port-empty"),
    P("http://example.com:８０/", "not a number", id="port-full-width-digits"),
    P("http://example.com:-1/", "not a number", id="port-negative"),
    P("http://１２７.０.０.１/", "IDNA 2008", id="full-width-digits-host-refused-not-normalised"),
    P("http://ｅｘａｍｐｌｅ.com/", "IDNA 2008", id="full-width-letters-host"),
    P("http://127。0。0。1/", "IDNA 2008", id="ideographic-full-stop-is-not-a-dot"),
    P("http://BÜCHER.example/", "IDNA 2008", id="non-ascii-uppercase-not-case-folded"),
    P("http://xn--abc.example/", "IDNA 2008", id="invalid-punycode-label"),
    P("http://a_b.example/", "not allowed in a hostname", id="underscore-in-host"),
    P("http://%31%32%37.0.0.1/", "not allowed in a hostname", id="percent-encoded-host"),
    P("http://-leading.example/", "not allowed in a hostname", id="label-leading-hyphen"),
    P("http://a..b.example/", "empty label", id="empty-label"),
    P("http://" + "a" * 64 + ".example/", "not allowed in a hostname", id="label-longer-than-63"),
    P("http://" + ("a" * 60 + ".") * 5 + "example/", "DNS allows 253", id="host-longer-than-253"),
    P("http://::1/", "more than one ':'", id="unbracketed-ipv6"),
    P("http://[::1/", "IPv6", id="unclosed-ipv6-bracket"),
    P("http://[::g]/", "IPv6 address", id="invalid-ipv6-literal"),
    P("http://[127.0.0.1]/", "IPv4", id="ipv4-in-brackets"),
    P("http://[fe80::1%25eth0]/", "zone ID", id="ipv6-zone-id"),
    P("http://[v1.fe]/", "not a valid IPv6 address", id="ipvfuture-literal"),
    P("", "empty", id="empty-string"),
]


@pytest.mark.parametrize("url, why", _REFUSED)
def test_check_url_rejects_with_a_reason_a_person_can_act_on(url, why):
    with pytest.raises(InvalidUrl) as caught:
        guard.check_url(url)
    assert why in str(caught.value)
    assert caught.value.kind == "invalid_url"


def test_check_url_rejects_urls_over_the_length_limit_and_accepts_at_the_limit():
    base = "http://example.com/"
    at_limit = base + "a" * (100 - len(base))
    assert guard.check_url(at_limit, max_length=100) == at_limit
    with pytest.raises(InvalidUrl, match="101 characters long; the limit is 100"):
        guard.check_url(at_limit + "a", max_length=100)


def _described_one_by_one(url):
    """The refusal check_url has always given, found by walking the URL character by character: the specification."""
    for ch in url:
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
        if unicodedata.category(ch) in {"Zs", "Zl", "Zp", "Cc", "Cf", "Cs"}:
            return f"the invisible or space-like character U+{ord(ch):04X}"
    return None


def test_every_character_of_unicode_is_refused_or_accepted_as_the_character_walk_did():
    # Blocks where neither finds anything agree on each of their characters; the others are compared one by one.
    disagreements = []
    for start in range(0, sys.maxunicode + 1, 512):
        codes = range(start, min(start + 512, sys.maxunicode + 1))
        block = "".join(map(chr, codes))
        if guard._bad_character(block) is None and _described_one_by_one(block) is None:
            continue
        disagreements += [
            hex(code) for code in codes if guard._bad_character(chr(code)) != _described_one_by_one(chr(code))
        ]
    assert disagreements == []


def test_the_invisible_character_table_is_this_pythons_unicode():
    # If this fails after a Python upgrade, replace _INVISIBLE_RANGES and _INVISIBLE_UNICODE with the new ones.
    assert guard._INVISIBLE_UNICODE == unicodedata.unidata_version
    assert guard._INVISIBLE_RANGES == guard._ranges_of(guard._INVISIBLE_CATEGORIES)


@pytest.mark.parametrize(
    "url",
    [
        P("http://example.com/" + "é" * 2000 + "\u200b\\", id="long-non-ascii-then-two-bad-characters"),
        P("http://example.com/" + "\U0001f600" * 500 + "\U000e0001 \t", id="emoji-then-an-astral-tag-character"),
        P("http://example.com/\ud800x", id="lone-surrogate"),
        P("http://example.com/\x85", id="next-line-control"),
        P("http://exa\ufeffmple.com/ ", id="byte-order-mark"),
    ],
)
def test_a_refusal_names_the_first_bad_character_as_the_walk_did(url):
    with pytest.raises(InvalidUrl) as caught:
        guard.check_url(url, max_length=4096)
    assert str(caught.value) == f"the URL contains {_described_one_by_one(url)}; encode it or remove it"


@pytest.mark.parametrize(
    "host, why",
    [
        P(
            ("ü" * 45 + ".") * 5 + "example",
            "is at least 257 characters long once IDNA-encoded; DNS allows 253",
            id="five-labels-too-long-once-encoded",
        ),
        P("ü" * 2000, "is at least 2004 characters long once IDNA-encoded; DNS allows 253", id="one-2000-letter-label"),
        P("ü" * 60 + ".example", "IDNA 2008 (Label too long)", id="label-whose-a-label-cannot-fit-63"),
        P("xn--" + "a" * 60 + ".example", "IDNA 2008 (Label too long)", id="a-label-over-63"),
    ],
)
def test_a_host_that_cannot_fit_dns_is_refused_before_any_label_is_idna_encoded(monkeypatch, host, why):
    def encode(*args, **kwargs):
        raise AssertionError("IDNA-encoded a host that cannot fit")

    monkeypatch.setattr(guard.idna, "encode", encode)
    with pytest.raises(InvalidUrl) as caught:
        guard.check_url(f"http://{host}/", max_length=4096)
    assert why in str(caught.value)


def test_check_url_lets_other_greenlets_run_after_each_slice_of_its_work(monkeypatch):
    # Under gevent, time.sleep is gevent.sleep: a 10,000-URL submit does not hold every request up.
    turns = []
    monkeypatch.setattr(time, "sleep", turns.append)
    monkeypatch.setattr(guard, "HUB_SLICE", 3600)
    for _ in range(100):
        guard.check_url("http://bücher.example/")
    assert turns == []
    monkeypatch.setattr(guard, "HUB_SLICE", 0)
    guard.check_url("http://bücher.example/")
    with pytest.raises(InvalidUrl):
        guard.check_url("http://bücher.example/\u200b")
    assert turns == [guard.TURN, guard.TURN] and 0 < guard.TURN <= 0.001


def _outcome(split, url):
    try:
        return split(url)
    except InvalidUrl as exc:
        return ("refused", str(exc))


def _url_corpus():
    """Every URL of the tables above, and combinations of the pieces where parsers tend to disagree."""
    schemes = ["http", "https", "HTTP", "hTtPs", "httpx", "ftp", "", "h", "http+unix"]
    separators = ["://", ":/", ":", ":///", "//", "::"]
    authorities = [
        "example.com",
        "EXAMPLE.com:8080",
        "127.0.0.1:35735",
        "[::1]",
        "[::1]:80",
        "[::1",
        "::1]",
        "a]b",
        "user@host",
        "u:p@h:1",
        "",
        ":80",
        "host:",
        "h:0",
        "h:99999",
        "a%41b",
        "xn--bcher-kva.example",
        "bücher.example",
        "１２７.0.0.1",
        "h;x",
        "h,x",
        "h!$&'()*+=x",
    ]
    tails = ["", "/", "/a/b", "?q=1", "#f", "/a?b#c", "?", "#", "?x#y/z", "/[x]", "?a=[b]", "#@evil"]
    for scheme in schemes:
        for separator in separators:
            for authority in authorities:
                for tail in tails:
                    yield scheme + separator + authority + tail


def test_the_fast_authority_split_agrees_with_urlsplit_on_every_url():
    urls = [p.values[0] for p in _ACCEPTED + _REFUSED] + list(_url_corpus())
    checked = 0
    for url in urls:
        if not url or guard._bad_character(url):
            continue  # check_url refuses these before splitting
        assert _outcome(guard._split_authority, url) == _outcome(guard._split_authority_slowly, url), url
        checked += 1
    assert checked > 10_000


def test_a_list_passes_in_one_pattern_only_when_check_url_returns_every_url_unchanged():
    urls = [p.values[0] for p in _ACCEPTED + _REFUSED] + list(_url_corpus())
    passed = 0
    for url in urls:
        if guard.all_unchanged([url]):  # False only costs speed: each URL is then checked on its own
            assert _outcome(guard.check_url, url) == url, url
            passed += 1
    assert passed > 50
    batch = [f"http://127.0.0.1:8080/bytes/1024?i={i}" for i in range(1000)] + ["https://example.com"]
    longest = max(map(len, batch))
    assert guard.all_unchanged(batch) and guard.all_unchanged(batch, max_length=longest)
    assert not guard.all_unchanged(batch, max_length=longest - 1), "one URL over the limit"
    assert not guard.all_unchanged(batch + ["http://Example.com/"]), "check_url lower-cases the host"
    assert not guard.all_unchanged(batch + ["http://example.com:080/"]), "check_url writes the port as 80"
    assert not guard.all_unchanged(["http://a.example/\nhttp://b.example/"]), "a line break inside one URL"
    assert not guard.all_unchanged(batch + [None]) and not guard.all_unchanged(batch + [""])


def test_a_list_longer_than_one_slice_passes_only_when_every_slice_does():
    batch = [f"http://127.0.0.1:8080/bytes/1024?i={i}" for i in range(2 * guard.JOINED_URLS + 5)]
    assert guard.all_unchanged(batch)
    for index in (0, guard.JOINED_URLS, len(batch) - 1):  # the first, a slice's first, the last
        changed = list(batch)
        changed[index] = "http://Example.com/"
        assert not guard.all_unchanged(changed), index


# ---------------------------------------------------------------------------------------------
# denial_reason: the default rules
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ip, reason",
    [
        P("127.0.0.1", "loopback", id="ipv4-loopback"),
        P("127.255.255.254", "loopback", id="ipv4-loopback-whole-slash-8"),
        P("10.0.0.1", "RFC 1918", id="rfc1918-10"),
        P("172.16.0.1", "RFC 1918", id="rfc1918-172-16"),
        P("172.31.255.255", "RFC 1918", id="rfc1918-172-31"),
        P("192.168.1.1", "RFC 1918", id="rfc1918-192-168"),
        P("169.254.169.254", "cloud metadata", id="metadata-aws-gcp-azure"),
        P("169.254.170.2", "cloud metadata", id="metadata-aws-ecs"),
        P("168.63.129.16", "Azure wire server", id="metadata-azure-wire-server"),
        P("100.100.100.200", "Alibaba", id="metadata-alibaba-inside-cgnat"),
        P("fd00:ec2::254", "cloud metadata", id="metadata-aws-ipv6"),
        P("169.254.1.1", "link-local", id="ipv4-link-local"),
        P("100.64.0.1", "carrier-grade NAT", id="cgnat"),
        P("100.127.255.255", "carrier-grade NAT", id="cgnat-top"),
        P("0.0.0.0", "this network", id="ipv4-unspecified"),
        P("0.1.2.3", "this network", id="this-network-slash-8"),
        P("224.0.0.1", "multicast", id="ipv4-multicast"),
        P("255.255.255.255", "broadcast", id="broadcast"),
        P("240.0.0.1", "reserved", id="reserved-240"),
        P("192.0.0.1", "IETF protocol", id="ietf-protocol-192-0-0"),
        P("192.0.2.1", "documentation", id="test-net-1"),
        P("198.51.100.7", "documentation", id="test-net-2"),
        P("203.0.113.9", "documentation", id="test-net-3"),
        P("198.18.0.1", "benchmarking", id="benchmarking"),
        P("::1", "loopback", id="ipv6-loopback"),
        P("::", "unspecified", id="ipv6-unspecified"),
        P("fc00::1", "unique local", id="ula-fc"),
        P("fd12:3456::1", "unique local", id="ula-fd"),
        P("fe80::1", "link-local", id="ipv6-link-local"),
        P("fe80::1%eth0", "link-local", id="ipv6-link-local-with-zone"),
        P("fec0::1", "site-local", id="ipv6-site-local"),
        P("ff02::1", "multicast", id="ipv6-multicast"),
        P("2001:db8::1", "documentation", id="ipv6-documentation"),
        P("::ffff:127.0.0.1", "IPv4-mapped address of 127.0.0.1, which is loopback", id="ipv4-mapped-loopback"),
        P("::ffff:10.0.0.1", "IPv4-mapped address of 10.0.0.1", id="ipv4-mapped-private"),
        P("::ffff:169.254.169.254", "cloud metadata", id="ipv4-mapped-metadata"),
        P("::127.0.0.1", "IPv4-compatible address of 127.0.0.1", id="ipv4-compatible-loopback"),
        P("::ffff:0:127.0.0.1", "IPv4-translated address of 127.0.0.1", id="ipv4-translated-loopback"),
        P("2002:7f00:1::", "6to4 address embedding 127.0.0.1", id="6to4-loopback"),
        P("2002:a9fe:a9fe::", "6to4 address embedding 169.254.169.254", id="6to4-metadata"),
        P("2002:c0a8:101:1::1", "6to4 address embedding 192.168.1.1", id="6to4-private-with-subnet"),
        P("64:ff9b::7f00:1", "NAT64 address of 127.0.0.1", id="nat64-loopback"),
        P("64:ff9b::a9fe:a9fe", "NAT64 address of 169.254.169.254", id="nat64-metadata"),
        P("64:ff9b:1::a00:1", "local-use NAT64 address embedding 10.0.0.1", id="local-nat64-slash-96-private"),
        P(
            _local_nat64_48("127.0.0.1"),
            "local-use NAT64 address embedding 127.0.0.1",
            id="local-nat64-slash-48-layout-loopback",
        ),
        P(_teredo("8.8.8.8", "127.0.0.1"), "Teredo address whose client is 127.0.0.1", id="teredo-client-loopback"),
        P(_teredo("10.0.0.1", "8.8.8.8"), "Teredo address whose server is 10.0.0.1", id="teredo-server-private"),
    ],
)
def test_default_rules_deny(ip, reason):
    assert reason in guard.denial_reason(ip)


@pytest.mark.parametrize(
    "ip",
    [
        P("8.8.8.8", id="google-dns"),
        P("1.1.1.1", id="cloudflare-dns"),
        P("93.184.216.34", id="example-com"),
        P("100.63.255.255", id="just-below-cgnat"),
        P("100.128.0.0", id="just-above-cgnat"),
        P("172.32.0.1", id="just-outside-172-16-slash-12"),
        P("11.0.0.1", id="just-outside-10-slash-8"),
        P("169.253.255.255", id="just-below-link-local"),
        P("2606:4700:4700::1111", id="cloudflare-ipv6"),
        P("2001:4860:4860::8888", id="google-ipv6"),
        P("::ffff:8.8.8.8", id="ipv4-mapped-public"),
        P("2002:808:808::", id="6to4-public"),
        P("64:ff9b::808:808", id="nat64-public-as-dns64-synthesises"),
        P("64:ff9b:1::808:808", id="local-nat64-public"),
        P(_teredo("8.8.8.8", "1.1.1.1"), id="teredo-public-server-and-client"),
    ],
)
def test_default_rules_allow_public_addresses(ip):
    assert guard.denial_reason(ip) is None


def test_python_ipaddress_is_the_trap_we_guard_against():
    # If these ever start failing, Python fixed it; our rules do not depend on either answer.
    assert not ipaddress.ip_address("::ffff:127.0.0.1").is_loopback
    assert ipaddress.ip_address("2002:a9fe:a9fe::").is_global
    assert guard.denial_reason("::ffff:127.0.0.1") is not None
    assert guard.denial_reason("2002:a9fe:a9fe::") is not None


def test_denial_reason_accepts_ipaddress_objects():
    assert guard.denial_reason(ipaddress.ip_address("127.0.0.1")) == "loopback"


# ---------------------------------------------------------------------------------------------
# Policy parsing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry, network, hostname, port",
    [
        P("127.0.0.1:8081", "127.0.0.1/32", None, 8081, id="ipv4-with-port"),
        P("10.1.0.0/16", "10.1.0.0/16", None, None, id="ipv4-cidr"),
        P("10.1.0.0/16:8080", "10.1.0.0/16", None, 8080, id="ipv4-cidr-with-port"),
        P("[::1]:8080", "::1/128", None, 8080, id="bracketed-ipv6-with-port"),
        P("[::1]", "::1/128", None, None, id="bracketed-ipv6"),
        P("::1", "::1/128", None, None, id="bare-ipv6"),
        P("fd00::/8", "fd00::/8", None, None, id="bare-ipv6-cidr"),
        P("[fd00::/8]:443", "fd00::/8", None, 443, id="bracketed-ipv6-cidr-with-port"),
        P("intranet.example:443", None, "intranet.example", 443, id="hostname-with-port"),
        P("  Intranet.Example.  ", None, "intranet.example", None, id="hostname-normalised"),
        P("bücher.example", None, "xn--bcher-kva.example", None, id="unicode-hostname-encoded"),
    ],
)
def test_policy_entries_parse(entry, network, hostname, port):
    (target,) = Policy.from_settings(False, entry, "").allow
    assert target.network == (ipaddress.ip_network(network) if network else None)
    assert (target.hostname, target.port) == (hostname, port)


def test_policy_skips_empty_items_and_keeps_order():
    policy = Policy.from_settings(True, " 10.0.0.1 , ,intranet.example,", "192.168.0.0/16")
    assert [t.text for t in policy.allow] == ["10.0.0.1", "intranet.example"]
    assert [t.text for t in policy.deny] == ["192.168.0.0/16"]
    assert policy.allow_private is True
    assert Policy.from_settings(False, "", "") == Policy()


@pytest.mark.parametrize(
    "entry, why",
    [
        P("127.1", "looks like an IP address", id="short-form-ipv4"),
        P("0x7f.1", "looks like an IP address", id="hex-ipv4"),
        P("2130706433", "looks like an IP address", id="decimal-ipv4"),
        P("10.1.0.5/16", "host bits set", id="cidr-with-host-bits"),
        P("10.0.0.0/33", "not a valid CIDR", id="cidr-prefix-too-long"),
        P("example.com/24", "not a valid CIDR", id="hostname-with-prefix"),
        P("10.0.0.1:0", "outside 1-65535", id="port-zero"),
        P("intranet.example:65536", "outside 1-65535", id="port-too-big"),
        P("intranet.example:https", "not a number", id="port-by-name"),
        P("intranet.example:", "port is empty", id="port-empty"),
        P("[::1", "closing ']'", id="unclosed-bracket"),
        P("[::1]8080", "only ':port' may follow", id="bracket-without-colon"),
        P("[127.0.0.1]:80", "only IPv6", id="ipv4-in-brackets"),
        P("fe80::1%eth0", "zone ID", id="ipv6-zone-id"),
        P("::1::2", "not a valid IPv6", id="bad-ipv6"),
        P("*.example.com", "not allowed in a hostname", id="wildcard"),
        P("a_b.example", "not allowed in a hostname", id="underscore"),
        P("１２７.０.０.１", "IDNA 2008", id="full-width-digits"),
    ],
)
def test_policy_rejects_a_bad_entry_naming_the_entry_and_the_variable(entry, why):
    with pytest.raises(ValueError) as caught:
        Policy.from_settings(False, "10.0.0.1, " + entry, "")
    message = str(caught.value)
    assert why in message
    assert repr(entry) in message
    assert "GREENBATCH_ALLOW_TARGETS" in message


def test_a_bad_deny_entry_names_the_deny_variable():
    with pytest.raises(ValueError, match="GREENBATCH_DENY_TARGETS: entry 'nope:x'"):
        Policy.from_settings(False, "", "nope:x")


# ---------------------------------------------------------------------------------------------
# Policy.check_address
# ---------------------------------------------------------------------------------------------


def _allowed(policy, ip, port, host=None):
    try:
        policy.check_address(ip, port, host)
        return True
    except Blocked:
        return False


def _refusal(check, *args, **kwargs) -> Blocked:
    """The Blocked a check raises."""
    with pytest.raises(Blocked) as caught:
        check(*args, **kwargs)
    return caught.value


def test_a_refusal_tells_the_submitter_it_is_refused_and_the_operator_which_rule_refused_it():
    refusal = _refusal(Policy().check_address, "127.0.0.1", 80)
    assert str(refusal) == (
        "127.0.0.1 is a private or reserved address, which this server does not fetch "
        "(an operator can allow it with GREENBATCH_ALLOW_TARGETS=127.0.0.1:80)"
    )
    assert refusal.detail == "127.0.0.1 is loopback (denied by default; see GREENBATCH_ALLOW_TARGETS)"
    assert refusal.kind == "blocked"
    assert isinstance(refusal, guard.GuardError)


def test_a_hostname_refusal_keeps_the_address_it_resolved_to_and_the_rule_to_the_detail():
    refusal = _refusal(Policy().check_address, "::ffff:127.0.0.1", 443, host="Intranet.Example.")
    assert str(refusal) == (
        "intranet.example resolves to a private or reserved address, which this server does "
        "not fetch (an operator can allow it with GREENBATCH_ALLOW_TARGETS=intranet.example:443)"
    )
    assert refusal.detail.startswith("intranet.example resolves to ::ffff:127.0.0.1, which is an IPv4-mapped")


@pytest.mark.parametrize(
    "ip, host, public",
    [
        P(
            "::1",
            "::1",
            "::1 is a private or reserved address, which this server does not fetch (an operator can allow "
            "it with GREENBATCH_ALLOW_TARGETS=[::1]:80)",
            id="ipv6-literal-bracketed-in-the-hint",
        ),
        P(
            "127.0.0.1",
            "2130706433",
            "2130706433 resolves to a private or reserved address, which this server does not fetch",
            id="a-host-no-allow-entry-can-name-gets-no-hint",
        ),
        P(
            "169.254.169.254",
            "metadata.example",
            "metadata.example resolves to a private or reserved address, which this server does not fetch",
            id="no-hint-where-only-the-exact-address-would-lift-it",
        ),
        P("10.0.0.5", None, "10.0.0.5 is on this server's deny-list (GREENBATCH_DENY_TARGETS)", id="deny-entry"),
        P(
            "10.0.0.5",
            "intranet.example",
            "intranet.example resolves to an address on this server's deny-list (GREENBATCH_DENY_TARGETS)",
            id="deny-entry-reached-by-a-name",
        ),
    ],
)
def test_public_refusals_name_only_what_the_submitter_typed(ip, host, public):
    refusal = _refusal(Policy.from_settings(False, "", "10.0.0.5").check_address, ip, 80, host=host)
    assert str(refusal) == public
    assert ip in refusal.detail


@pytest.mark.parametrize(
    "ip, port, allowed",
    [
        P("127.0.0.1", 8081, True, id="named-address-on-named-port"),
        P("127.0.0.1", 22, False, id="named-address-on-other-port"),
        P("127.0.0.2", 8081, False, id="other-address-on-named-port"),
        P("::ffff:127.0.0.1", 8081, True, id="ipv4-mapped-form-of-named-address"),
        P("2002:7f00:1::", 8081, False, id="6to4-form-is-not-the-same-socket"),
    ],
)
def test_port_scoped_allow_entry(ip, port, allowed):
    policy = Policy.from_settings(False, "127.0.0.1:8081", "")
    assert _allowed(policy, ip, port) is allowed


def test_port_scoped_refusal_says_which_port_is_allowed():
    policy = Policy.from_settings(False, "127.0.0.1:8081", "")
    assert "allows it only on port 8081, not 22" in _refusal(policy.check_address, "127.0.0.1", 22).detail


def test_cidr_allow_entry_without_port_allows_every_port():
    policy = Policy.from_settings(False, "10.1.0.0/16", "")
    assert _allowed(policy, "10.1.2.3", 22) and _allowed(policy, "10.1.255.255", 65535)
    assert not _allowed(policy, "10.2.0.1", 80)


def test_ipv6_allow_entry_with_port():
    policy = Policy.from_settings(False, "[::1]:8080", "")
    assert _allowed(policy, "::1", 8080)
    assert not _allowed(policy, "::1", 8081)


def test_deny_entry_wins_over_allow_entry():
    policy = Policy.from_settings(False, "10.0.0.0/8", "10.0.0.5")
    assert not _allowed(policy, "10.0.0.5", 80)
    assert _allowed(policy, "10.0.0.6", 80)
    assert "matches '10.0.0.5' in GREENBATCH_DENY_TARGETS" in _refusal(policy.check_address, "10.0.0.5", 80).detail


def test_deny_entry_wins_over_allow_private():
    policy = Policy.from_settings(True, "", "192.168.0.0/16")
    assert not _allowed(policy, "192.168.1.1", 80)
    assert _allowed(policy, "10.0.0.1", 80)


def test_deny_entry_also_catches_ipv6_forms_embedding_the_denied_ipv4():
    policy = Policy.from_settings(True, "", "10.0.0.0/8")
    for ip in ("::ffff:10.0.0.1", "2002:a00:1::", "64:ff9b::a00:1"):
        assert not _allowed(policy, ip, 80), ip


def test_deny_entry_blocks_public_addresses_too():
    policy = Policy.from_settings(False, "", "93.184.216.34")
    assert not _allowed(policy, "93.184.216.34", 443)


def test_port_scoped_deny_entry_blocks_only_that_port():
    policy = Policy.from_settings(False, "", "93.184.216.34:25")
    assert not _allowed(policy, "93.184.216.34", 25)
    assert _allowed(policy, "93.184.216.34", 443)


def test_hostname_deny_entry_blocks_whatever_the_host_resolves_to():
    policy = Policy.from_settings(False, "", "tracker.example", getaddrinfo=FakeResolver("93.184.216.34"))
    assert not _allowed(policy, "8.8.8.8", 443, host="tracker.example")
    assert _allowed(policy, "8.8.8.8", 443, host="other.example")


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class ScriptedResolver:
    """getaddrinfo answering each lookup of a name with the next of its scripted answers (the last repeats);
    an exception in the script is raised instead."""

    def __init__(self, **script):
        self.script = {name.replace("_", "."): list(answers) for name, answers in script.items()}
        self.calls = []

    def __call__(self, host, port, **kwargs):
        self.calls.append(host)
        answers = self.script[host]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return [_info(ip) for ip in answer]


@pytest.mark.parametrize(
    "ip, port, host",
    [
        P("93.184.216.34", 443, None, id="the-address-written-as-an-ip"),
        P("93.184.216.34", 443, "alias.example", id="another-name-for-the-address"),
        P("::ffff:93.184.216.34", 443, None, id="the-address-ipv4-mapped"),
        P("2606:2800:220:1::1946", 443, "alias.example", id="its-ipv6-address"),
        P("93.184.216.34", 25, None, id="any-port"),
    ],
)
def test_a_hostname_deny_entry_denies_the_addresses_the_name_resolves_to(ip, port, host):
    lookup = ScriptedResolver(tracker_example=[["93.184.216.34", "2606:2800:220:1::1946"]])
    policy = Policy.from_settings(False, "", "tracker.example", getaddrinfo=lookup)
    refusal = _refusal(policy.check_address, ip, port, host=host)
    assert "matches 'tracker.example' in GREENBATCH_DENY_TARGETS, a name that resolves to it" in refusal.detail
    assert "GREENBATCH_DENY_TARGETS" in str(refusal) and "93.184" not in str(refusal).replace(ip, "")
    assert _allowed(policy, "93.184.216.35", port, host=host)
    assert lookup.calls == ["tracker.example"]  # looked up once, when the policy was built


def test_a_port_scoped_hostname_deny_entry_denies_its_addresses_on_that_port_only():
    policy = Policy.from_settings(
        False, "", "mail.example:25", getaddrinfo=ScriptedResolver(mail_example=[["93.184.216.34"]])
    )
    assert not _allowed(policy, "93.184.216.34", 25)
    assert _allowed(policy, "93.184.216.34", 443)


@pytest.mark.parametrize(
    "deny, ip",
    [
        P("::ffff:10.0.0.5", "10.0.0.5", id="mapped-entry-denies-the-plain-address"),
        P("[::ffff:10.0.0.5]:80", "10.0.0.5", id="mapped-entry-with-a-port"),
        P("::ffff:10.0.0.0/104", "10.0.0.9", id="mapped-range-denies-plain-addresses-in-it"),
        P("10.0.0.5", "::ffff:10.0.0.5", id="plain-entry-denies-the-mapped-address"),
        P("::ffff:10.0.0.5", "2002:a00:5::", id="mapped-entry-denies-6to4-and-other-embeddings"),
    ],
)
def test_deny_entries_match_ipv4_mapped_and_plain_forms_alike(deny, ip):
    policy = Policy.from_settings(True, "10.0.0.0/8", deny)
    assert not _allowed(policy, ip, 80)
    assert _allowed(policy, "172.16.0.6", 80) and _allowed(policy, "::ffff:172.16.0.6", 80)


def test_a_denied_name_resolving_to_a_mapped_address_denies_the_plain_one_too():
    policy = Policy.from_settings(
        True, "", "intranet.example", getaddrinfo=ScriptedResolver(intranet_example=[["::ffff:10.0.0.5"]])
    )
    assert not _allowed(policy, "10.0.0.5", 80)


def test_a_policy_without_hostname_deny_entries_looks_nothing_up():
    lookup = ScriptedResolver()  # any lookup would fail with KeyError
    policy = Policy.from_settings(False, "intranet.example", "10.0.0.0/8, [fd00::1]:443", getaddrinfo=lookup)
    assert policy.denied_names is None and lookup.calls == []


def test_denied_names_are_looked_up_again_in_the_background_once_due():
    clock, started = Clock(), []
    lookup = ScriptedResolver(tracker_example=[["93.184.216.34"], ["93.184.216.99"]])
    names = guard.DeniedNames(
        guard.parse_targets("tracker.example", guard.DENY_VAR), getaddrinfo=lookup, clock=clock, start=started.append
    )
    policy = Policy(deny=names.entries, denied_names=names)
    clock.now += guard.DENY_REFRESH - 1
    assert not _allowed(policy, "93.184.216.34", 80) and started == []
    clock.now += 1
    assert not _allowed(policy, "93.184.216.34", 80)  # due: the check starts a lookup and uses what it has
    assert not _allowed(policy, "93.184.216.34", 80) and len(started) == 1  # one lookup at a time
    started.pop()()  # the background lookup runs
    assert not _allowed(policy, "93.184.216.99", 80)
    assert _allowed(policy, "93.184.216.34", 80)  # the name moved away from it
    assert guard.DENY_REFRESH == 300


def test_a_failed_lookup_keeps_the_addresses_a_denied_name_had_and_says_so(caplog):
    clock = Clock()
    failure = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    lookup = ScriptedResolver(tracker_example=[["93.184.216.34"], failure, ["93.184.216.99"]])
    names = guard.DeniedNames(
        guard.parse_targets("tracker.example", guard.DENY_VAR),
        getaddrinfo=lookup,
        clock=clock,
        start=lambda work: work(),
    )
    policy = Policy(deny=names.entries, denied_names=names)
    clock.now += guard.DENY_REFRESH
    with caplog.at_level("WARNING", logger="app.fetch.guard"):
        assert not _allowed(policy, "93.184.216.34", 80)
    assert "tracker.example could not be looked up (" in caplog.text
    assert "its 1 known addresses stay denied" in caplog.text
    assert names.addresses("tracker.example") == {ipaddress.ip_address("93.184.216.34")}
    clock.now += guard.DENY_REFRESH
    assert not _allowed(policy, "93.184.216.99", 80)


def test_a_denied_name_that_does_not_resolve_at_start_is_still_denied_by_name(caplog):
    lookup = ScriptedResolver(gone_example=[socket.gaierror(socket.EAI_NONAME, "Name or service not known")])
    with caplog.at_level("WARNING", logger="app.fetch.guard"):
        policy = Policy.from_settings(False, "", "gone.example", getaddrinfo=lookup)
    assert "only the name itself is denied until it resolves" in caplog.text
    assert not _allowed(policy, "93.184.216.34", 80, host="gone.example")
    assert _allowed(policy, "93.184.216.34", 80)


@pytest.mark.parametrize(
    "ip", ["10.0.0.1", "127.0.0.1", "169.254.1.1", "100.64.0.1", "fd00::1", "fe80::1", "::1", "::ffff:192.168.1.1"]
)
def test_allow_private_permits_private_loopback_link_local_cgnat_and_ula(ip):
    assert _allowed(Policy(allow_private=True), ip, 80)
    assert not _allowed(Policy(), ip, 80)


@pytest.mark.parametrize(
    "ip",
    [
        "169.254.169.254",
        "168.63.129.16",
        "100.100.100.200",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
    ],
)
def test_allow_private_does_not_lift_metadata_unspecified_multicast_or_broadcast(ip):
    assert not _allowed(Policy(allow_private=True), ip, 80)


def test_metadata_message_says_allow_private_is_not_enough():
    refusal = _refusal(Policy(allow_private=True).check_address, "169.254.169.254", 80)
    assert "denied even with GREENBATCH_ALLOW_PRIVATE" in refusal.detail


def test_metadata_is_lifted_only_by_an_entry_naming_the_exact_address():
    broad = Policy.from_settings(False, "169.254.0.0/16", "")
    assert not _allowed(broad, "169.254.169.254", 80)
    assert _allowed(broad, "169.254.1.1", 80)
    exact = Policy.from_settings(False, "169.254.169.254:80", "")
    assert _allowed(exact, "169.254.169.254", 80)
    assert not _allowed(exact, "169.254.169.254", 8080)
    by_name = Policy.from_settings(False, "metadata.internal", "")
    assert not _allowed(by_name, "169.254.169.254", 80, host="metadata.internal")


@pytest.mark.parametrize(
    "ip, port, host, allowed",
    [
        P("10.9.9.9", 443, "intranet.example", True, id="named-host-named-port"),
        P("10.9.9.9", 443, "Intranet.Example.", True, id="host-compared-case-and-dot-insensitively"),
        P("10.9.9.9", 80, "intranet.example", False, id="named-host-other-port"),
        P("10.9.9.9", 443, "other.example", False, id="other-host-same-address"),
        P("10.9.9.9", 443, "sub.intranet.example", False, id="subdomain-is-not-the-host"),
        P("10.9.9.9", 443, None, False, id="no-host-given"),
    ],
)
def test_hostname_allow_entry_permits_the_urls_host(ip, port, host, allowed):
    policy = Policy.from_settings(False, "intranet.example:443", "")
    assert _allowed(policy, ip, port, host) is allowed


def test_check_address_refuses_something_that_is_not_an_address():
    with pytest.raises(Blocked, match="not an IP address"):
        Policy().check_address("example.com", 80)


# ---------------------------------------------------------------------------------------------
# resolve
# ---------------------------------------------------------------------------------------------


def _info(ip, port=80):
    if ":" in ip:
        return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))


class FakeResolver:
    """A getaddrinfo stand-in that records its calls and answers a fixed list."""

    def __init__(self, *ips, error=None):
        self.answer = [_info(ip) for ip in ips]
        self.error = error
        self.calls = []

    def __call__(self, host, port, **kwargs):
        self.calls.append((host, port, kwargs))
        if self.error:
            raise self.error
        return self.answer


@pytest.mark.parametrize(
    "ips",
    [
        P(("93.184.216.34", "127.0.0.1"), id="allowed-first-denied-second"),
        P(("127.0.0.1", "93.184.216.34"), id="denied-first-allowed-second"),
        P(("2606:4700::1", "::ffff:169.254.169.254"), id="ipv6-public-then-mapped-metadata"),
    ],
)
def test_resolve_blocks_when_any_address_is_denied(ips):
    with pytest.raises(Blocked):
        guard.resolve("rebind.example", 80, Policy(), getaddrinfo=FakeResolver(*ips))


def test_resolve_looks_up_once_and_returns_the_tuples_to_connect_to():
    fake = FakeResolver("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    infos = guard.resolve("example.com", 443, Policy(), getaddrinfo=fake)
    assert infos == fake.answer
    assert fake.calls == [("example.com", 443, {"type": socket.SOCK_STREAM})]


def test_resolve_checks_the_port_against_port_scoped_entries():
    policy = Policy.from_settings(False, "intranet.example:443", "")
    fake = FakeResolver("10.9.9.9")
    assert guard.resolve("intranet.example", 443, policy, getaddrinfo=fake)
    with pytest.raises(Blocked):
        guard.resolve("intranet.example", 80, policy, getaddrinfo=fake)


def test_resolve_reraises_dns_failures_unchanged():
    error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    with pytest.raises(socket.gaierror) as caught:
        guard.resolve("nx.example", 80, Policy(), getaddrinfo=FakeResolver(error=error))
    assert caught.value is error


def test_resolve_treats_an_empty_answer_as_a_dns_failure():
    with pytest.raises(socket.gaierror, match="no addresses"):
        guard.resolve("empty.example", 80, Policy(), getaddrinfo=FakeResolver())


def test_resolve_strips_brackets_from_ipv6_hosts():
    fake = FakeResolver("2606:4700::1")
    guard.resolve("[2606:4700::1]", 80, Policy(), getaddrinfo=fake)
    assert fake.calls[0][0] == "2606:4700::1"


def test_resolve_refuses_non_ascii_hosts_before_python_idna_2003_maps_them():
    fake = FakeResolver("8.8.8.8")
    with pytest.raises(InvalidUrl, match="not ASCII"):
        guard.resolve("１２７.０.０.１", 80, Policy(), getaddrinfo=fake)
    assert fake.calls == []


def test_resolve_uses_socket_getaddrinfo_as_patched_at_call_time(monkeypatch):
    # gevent's monkey.patch_all may run after this module is imported; we must use the patched one.
    fake = FakeResolver("8.8.8.8")
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    guard.resolve("example.com", 80, Policy())
    assert fake.calls


@pytest.mark.parametrize(
    "host",
    [
        P("2130706433", id="decimal"),
        P("0x7f.1", id="hex-short"),
        P("0x7f000001", id="hex-whole"),
        P("0177.0.0.1", id="octal-first-octet"),
        P("017700000001", id="octal-whole"),
        P("127.1", id="short-dotted"),
        P("127.000.000.001", id="zero-padded"),
        P("[::ffff:127.0.0.1]", id="ipv4-mapped-ipv6"),
    ],
)
def test_numeric_loopback_forms_are_blocked_by_the_address_libc_resolves_them_to(host):
    assert re.search("127.0.0.1.*loopback", _refusal(guard.resolve, host, 80, Policy()).detail)


def test_zero_resolves_to_the_unspecified_address_and_is_blocked():
    assert "0.0.0.0, which is 'this network'" in _refusal(guard.resolve, "0", 80, Policy()).detail


def test_localhost_is_blocked_by_every_address_it_resolves_to():
    with pytest.raises(Blocked, match="^localhost resolves to"):
        guard.resolve("localhost", 80, Policy())


def test_allow_private_lets_numeric_loopback_through_and_returns_the_pinned_address():
    infos = guard.resolve("127.1", 8080, Policy(allow_private=True))
    assert [info[4] for info in infos] == [("127.0.0.1", 8080)]


# ---------------------------------------------------------------------------------------------
# Judged at submit: hosts that need no lookup
# ---------------------------------------------------------------------------------------------

LOCAL = Policy.from_settings(False, "127.0.0.1:8081", "")


def _literal(policy, url):
    """What refuses_literal says of a URL as check_url writes it."""
    return policy.refuses_literal(guard.check_url(url))


@pytest.mark.parametrize(
    "url, why",
    [
        P(
            "http://127.0.0.1:9000/",
            "127.0.0.1 is loopback; this server does not fetch it on port 9000 (GREENBATCH_ALLOW_TARGETS allows it "
            "only on port 8081); restart with GREENBATCH_ALLOW_TARGETS=127.0.0.1:8081,127.0.0.1:9000",
            id="another-port-of-an-allowed-address",
        ),
        P(
            "https://10.0.0.1/",
            "10.0.0.1 is private (RFC 1918); this server does not fetch it; restart with "
            "GREENBATCH_ALLOW_TARGETS=127.0.0.1:8081,10.0.0.1:443",
            id="default-port-of-the-scheme",
        ),
        P(
            "http://[::1]:8081/",
            "::1 is loopback; this server does not fetch it; restart with GREENBATCH_ALLOW_TARGETS=127.0.0.1:8081,[::1]:8081",
            id="ipv6-bracketed-in-the-entry",
        ),
        P(
            "http://[::ffff:127.0.0.1]:9000/",
            "::ffff:127.0.0.1 is an IPv4-mapped address of 127.0.0.1, which is loopback; this server does not fetch "
            "it on port 9000 (GREENBATCH_ALLOW_TARGETS allows it only on port 8081); restart with "
            "GREENBATCH_ALLOW_TARGETS=127.0.0.1:8081,127.0.0.1:9000",
            id="ipv4-mapped-allowed-by-its-ipv4",
        ),
        P(
            "http://2130706433:9000/",
            "2130706433 (that is 127.0.0.1) is loopback; this server does not fetch it on port 9000 "
            "(GREENBATCH_ALLOW_TARGETS allows it only on port 8081); restart with "
            "GREENBATCH_ALLOW_TARGETS=127.0.0.1:8081,127.0.0.1:9000",
            id="numeric-form-as-libc-reads-it",
        ),
        P(
            "http://localhost:9000/",
            "localhost is this machine (loopback, 127.0.0.1 or ::1); this server does not fetch it; restart with "
            "GREENBATCH_ALLOW_TARGETS=127.0.0.1:8081,localhost:9000",
            id="localhost",
        ),
        P(
            "http://api.localhost/",
            "api.localhost is this machine (loopback, 127.0.0.1 or ::1); this server does not fetch it; restart "
            "with GREENBATCH_ALLOW_TARGETS=127.0.0.1:8081,api.localhost:80",
            id="a-name-under-localhost",
        ),
        P(
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254 is a cloud metadata endpoint (AWS, GCP, Azure, Oracle, OpenStack); this server does "
            "not fetch it",
            id="metadata-gets-no-restart-advice",
        ),
    ],
)
def test_an_address_or_localhost_the_policy_blocks_is_refused_with_the_restart_that_allows_it(url, why):
    assert _literal(LOCAL, url) == why


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/",
        "http://[::1]:8081/",
        "http://[::ffff:127.0.0.1]:9000/",
        "http://0x7f.1:9000/",
        "http://localhost:9000/",
        "https://10.0.0.1/",
    ],
)
def test_the_restart_a_refusal_names_lets_that_url_through(url):
    allow = re.search(r"restart with GREENBATCH_ALLOW_TARGETS=(\S+)$", _literal(LOCAL, url)).group(1)
    assert _literal(Policy.from_settings(False, allow, ""), url) is None


@pytest.mark.parametrize(
    "url",
    [
        P("http://127.0.0.1:8081/", id="allowed-address"),
        P("http://[::ffff:127.0.0.1]:8081/", id="ipv4-mapped-form-of-an-allowed-address"),
        P("http://8.8.8.8/", id="public-address"),
        P("http://localhost:8081/", id="localhost-when-one-loopback-address-is-allowed"),
        P("http://example.com/localhost", id="a-name"),
        P("http://127.0.0.1.example/", id="a-name-that-starts-with-digits"),
        P("http://1e100/", id="digits-that-are-no-address"),
        P("http://127.0.0.1./", id="a-trailing-dot-makes-it-a-name-for-dns"),
    ],
)
def test_allowed_addresses_and_names_are_left_to_the_fetch(url):
    # localhost resolves to 127.0.0.1, ::1 or both, as this machine's resolver says: only the fetch knows.
    assert _literal(LOCAL, url) is None


def test_allow_private_lets_addresses_through_at_submit_as_at_fetch():
    assert _literal(Policy(allow_private=True), "http://10.0.0.1/") is None
    assert _literal(Policy(allow_private=True), "http://localhost/") is None


@pytest.mark.parametrize(
    "url, why",
    [
        P("http://10.0.0.5/", "10.0.0.5 is on this server's deny-list (GREENBATCH_DENY_TARGETS)", id="address"),
        P("http://127.0.0.1:8081/", "127.0.0.1 is on this server's deny-list (GREENBATCH_DENY_TARGETS)", id="allowed"),
        P("http://localhost/", "localhost is on this server's deny-list (GREENBATCH_DENY_TARGETS)", id="localhost"),
    ],
)
def test_the_deny_list_refuses_at_submit_with_no_restart_advice(url, why):
    policy = Policy.from_settings(False, "127.0.0.1:8081", "10.0.0.5,127.0.0.1:8081,localhost")
    assert _literal(policy, url) == why


def test_literal_refusals_names_each_refused_url_by_its_index_and_skips_none():
    urls = ["http://127.0.0.1:8081/a", "http://127.0.0.1:9000/a", None, "http://example.com/", "http://127.0.0.1:9000"]
    refused = LOCAL.literal_refusals(urls)
    assert [index for index, _ in refused] == [1, 4]
    assert refused[0][1] == refused[1][1] == _literal(LOCAL, "http://127.0.0.1:9000/")


def test_literal_refusals_name_indexes_across_slices_of_the_list():
    allowed, refused = "http://127.0.0.1:8081/a", "http://127.0.0.1:9000/a"
    urls: list[str | None] = [allowed] * (2 * guard.JOINED_URLS + 5)
    for index in (3, guard.JOINED_URLS, len(urls) - 1):
        urls[index] = refused
    urls[guard.JOINED_URLS + 7] = None
    assert [index for index, _ in LOCAL.literal_refusals(urls)] == [3, guard.JOINED_URLS, len(urls) - 1]
    assert LOCAL.literal_refusals([allowed] * (2 * guard.JOINED_URLS)) == []


def test_literal_refusals_tell_hosts_apart_that_share_a_prefix():
    # A run of URLs on 127.0.0.1:80 must not lend its verdict to 127.0.0.1:8081 or 127.0.0.10.
    urls = ["http://127.0.0.1/", "http://127.0.0.1:8081/", "http://127.0.0.10/", "http://127.0.0.1?x"]
    assert [index for index, _ in LOCAL.literal_refusals(urls)] == [0, 2, 3]
    # Nor may an allowed run swallow the next URL when that is all a slice refuses.
    urls = ["http://127.0.0.1:8081/a", "http://127.0.0.1:8081?b", "http://127.0.0.1:8081", "http://127.0.0.10:8081/"]
    assert [index for index, _ in LOCAL.literal_refusals(urls)] == [3]
