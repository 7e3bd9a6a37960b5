"""TLS for both transports: the CAs trusted (certifi's and GREENBATCH_CA_BUNDLE's), and what a batch that
captures TLS records of a server's certificate.

A certificate is read from its DER bytes (the `cryptography` library), so it is described the same way
whether the handshake verified it or not (a batch with tls_verify false), and parsed once per certificate.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import math
import ssl
from collections.abc import Callable
from typing import Any

import certifi
import gevent.ssl

MAX_TEXT = 1024  # an issuer or a subject is target-controlled text: at most this many characters
MAX_SAN = 253  # characters of one SAN kept: the longest DNS name (a longer one names no host)
MAX_SANS_CHARS = 4096  # characters of SANs a description keeps (a CDN's certificate can carry hundreds of names)
_CACHE_SIZE = 4096  # certificates described once each; the cache starts over when it fills
_CACHE_BYTES = 16 * 2**20  # or when the certificates it describes add up to this many DER bytes

_ca_bundle: str | None = None
_described: dict[bytes, _Certificate] = {}
_described_bytes = 0
_shared: dict[str, ssl.SSLContext] = {}


def use_ca_bundle(path: str | None) -> None:
    """Trust the CAs of a PEM file besides certifi's in every TLS context from now on (GREENBATCH_CA_BUNDLE)."""
    global _ca_bundle
    if (path or None) != _ca_bundle:
        _ca_bundle = path or None
        _shared.clear()


def shared_context(check: str = "all") -> ssl.SSLContext:
    """The process's gevent TLS context for the fast transport, made on first use: `check` is "all" (chain and
    host name), "chain" (not the name: tls_verify off, to learn whether the chain is valid) or "none"."""
    context = _shared.get(check)
    if context is None:
        context = make_context(gevent.ssl.create_default_context, chain=check != "none", name=check == "all")
        context.set_alpn_protocols(["http/1.1"])
        _shared[check] = context
    return context


def ca_bundle() -> str | None:
    """The extra CA file in use, if any."""
    return _ca_bundle


def check_ca_bundle(path: str) -> str | None:
    """What is wrong with a CA file (missing, unreadable, no certificate in it), or None when it loads."""
    try:
        context = ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        return f"{path} does not exist"
    except (OSError, ssl.SSLError) as exc:
        return f"{path} cannot be loaded as PEM certificates: {exc}"
    if not context.get_ca_certs():
        return f"{path} holds no CA certificate"
    return None


def make_context(create: Callable[..., ssl.SSLContext], *, chain: bool = True, name: bool = True) -> ssl.SSLContext:
    """A client context from `create` (ssl's or gevent.ssl's create_default_context) trusting certifi's CAs and
    the extra bundle; `chain` False checks nothing, `name` False checks the chain but not the host name."""
    context = create(cafile=certifi.where())
    if _ca_bundle:
        context.load_verify_locations(cafile=_ca_bundle)
    if not chain or not name:
        context.check_hostname = False
    if not chain:
        context.verify_mode = ssl.CERT_NONE
    return context


def describe(
    sock: ssl.SSLSocket, host: str, chain_valid: bool | None, problem: str | None, now: datetime.datetime
) -> dict[str, Any]:
    """What a capture records of a TLS connection: protocol, cipher, the server's certificate, and its problems.

    chain_valid: True when the handshake verified the chain, False when it did not verify (problem says why),
    None when it was not checked.
    """
    info: dict[str, Any] = {"version": sock.version(), "cipher": (sock.cipher() or (None,))[0]}
    der = sock.getpeercert(binary_form=True)
    if not der:
        return {**info, "chain_valid": chain_valid, "problems": [problem] if problem else []}
    return {**info, **described_certificate(der, host, chain_valid, problem, now)}


def described_certificate(
    der: bytes, host: str, chain_valid: bool | None, problem: str | None, now: datetime.datetime
) -> dict[str, Any]:
    """describe's account of a DER certificate met at `host`: issuer, subject, sans (at most MAX_SANS_CHARS of
    them, the one naming the host always; sans_omitted counts the rest), not_before, not_after (ISO 8601, UTC),
    the SHA-256 fingerprint, days_left, name_match, chain_valid and the problems."""
    cert = _parsed(der)
    left = days_left(cert.fields["not_after"], now)
    matched = cert.match(host)
    problems = [problem] if problem else []
    if matched is None:
        problems.append(f"the certificate is not valid for {host[:200]}")
    if left < 0 and not problem:
        problems.append("the certificate has expired")
    sans, omitted = cert.kept(matched)
    return {
        **cert.fields,
        "sans": sans,
        "sans_omitted": omitted,
        "days_left": left,
        "name_match": matched is not None,
        "chain_valid": chain_valid,
        "problems": problems,
    }


class _Certificate:
    """A certificate read once: its fields, its SANs, and which host names and addresses they cover."""

    def __init__(self, fields: dict[str, Any], names: list[str], addresses: list[str]):
        """fields: issuer, subject, not_before, not_after, fingerprint; names: DNS SANs; addresses: IP SANs."""
        self.fields = fields
        self.sans = [name[:MAX_SAN] for name in names] + addresses  # the order the stored list keeps them in
        self._exact: dict[str, int] = {}
        self._wildcards: dict[str, int] = {}  # "*.shop.example" covers one label before ".shop.example"
        for position, name in enumerate(names):
            name = name.lower().rstrip(".")
            if name.startswith("*."):
                self._wildcards.setdefault(name[2:], position)
            else:
                self._exact.setdefault(name, position)
        self._addresses: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, int] = {}
        for position, text in enumerate(addresses, len(names)):
            try:
                self._addresses.setdefault(ipaddress.ip_address(text), position)
            except ValueError:
                pass  # a network (10.0.0.0/8) names no one host
        self._names = len(names)
        # The SANs kept when none has to be: IP addresses first (each names one host exactly), then DNS names
        # in the certificate's order, while they fit in MAX_SANS_CHARS.
        self._default = self._fitting(list(range(len(names), len(self.sans))) + list(range(len(names))), set())
        self._default_sans = [self.sans[position] for position in sorted(self._default)]

    def match(self, host: str) -> int | None:
        """The position of the SAN that names the host (an address by an IP SAN; a wildcard covers one label).

        Every SAN is looked at, not only those kept, so a certificate is valid for a name wherever it lists it.
        """
        host = host.lower().rstrip(".")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None:
            return self._addresses.get(address)
        exact = self._exact.get(host)
        if exact is not None or "." not in host:
            return exact
        return self._wildcards.get(host.split(".", 1)[1])

    def kept(self, matched: int | None) -> tuple[list[str], int]:
        """The SANs a description lists, in the certificate's order, and how many it leaves out: the one that
        named the host (`matched`) always among them."""
        if matched is None or matched in self._default:
            return self._default_sans, len(self.sans) - len(self._default)
        # The name is past what fits: it comes first, and the last names that fitted make room for it.
        ranked = sorted(self._default, key=lambda position: (position < self._names, position))
        chosen = self._fitting([matched, *ranked], {matched})
        return [self.sans[position] for position in sorted(chosen)], len(self.sans) - len(chosen)

    def _fitting(self, ranked: list[int], must: set[int]) -> set[int]:
        """The positions taken in rank order, each while its text still fits in MAX_SANS_CHARS (`must` always)."""
        chosen, used = set(), 0
        for position in ranked:
            size = len(self.sans[position])
            if position in must or used + size <= MAX_SANS_CHARS:
                chosen.add(position)
                used += size
        return chosen


def _parsed(der: bytes) -> _Certificate:
    """A DER certificate read once (cached by its bytes)."""
    global _described_bytes
    known = _described.get(der)
    if known is not None:
        return known
    # Imported on the first certificate described: a process whose batches capture no TLS never loads it (~10 MiB).
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(name) for name in extension.get_values_for_type(x509.DNSName)]
        addresses = [str(address) for address in extension.get_values_for_type(x509.IPAddress)]
    except (x509.ExtensionNotFound, ValueError):
        names, addresses = [], []
    fields = {
        "issuer": cert.issuer.rfc4514_string()[:MAX_TEXT],
        "subject": cert.subject.rfc4514_string()[:MAX_TEXT],
        "not_before": _iso(cert.not_valid_before_utc),
        "not_after": _iso(cert.not_valid_after_utc),
        "fingerprint": hashlib.sha256(der).hexdigest(),
    }
    described = _Certificate(fields, names, addresses)
    if len(_described) >= _CACHE_SIZE or _described_bytes + len(der) > _CACHE_BYTES:
        _described.clear()
        _described_bytes = 0
    _described[der] = described
    _described_bytes += len(der)
    return described


def days_left(not_after: str, now: datetime.datetime) -> int:
    """Whole days from `now` until a certificate's not_after; negative once it has expired."""
    end = datetime.datetime.fromisoformat(not_after.replace("Z", "+00:00"))
    return math.floor((end - now).total_seconds() / 86400)


def now_utc() -> datetime.datetime:
    """The time days_left counts from."""
    return datetime.datetime.now(datetime.UTC)


def _iso(moment: datetime.datetime) -> str:
    """A UTC time as 2026-12-06T08:00:00Z."""
    return moment.astimezone(datetime.UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"  # 4-digit years
