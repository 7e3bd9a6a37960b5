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

MAX_TEXT = 1024  # an issuer, a subject or one SAN is target-controlled text: at most this many characters
MAX_SANS = 100  # names a certificate's `sans` lists (a CDN's certificate can carry hundreds)
_CACHE_SIZE = 4096  # certificates described once each; the cache starts over when it fills

_ca_bundle: str | None = None
_described: dict[bytes, dict[str, Any]] = {}
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
    cert = certificate(der)
    left = days_left(cert["not_after"], now)
    match = name_matches(host, cert)
    problems = [problem] if problem else []
    if not match:
        problems.append(f"the certificate is not valid for {host[:200]}")
    if left < 0 and not problem:
        problems.append("the certificate has expired")
    return {**info, **cert, "days_left": left, "name_match": match, "chain_valid": chain_valid, "problems": problems}


def certificate(der: bytes) -> dict[str, Any]:
    """issuer, subject, sans, not_before, not_after (ISO 8601, UTC) and the SHA-256 fingerprint of a DER certificate."""
    known = _described.get(der)
    if known is not None:
        return known
    # Imported on the first certificate described: a process whose batches capture no TLS never loads it (~10 MiB).
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(n)[:MAX_TEXT] for n in names.get_values_for_type(x509.DNSName)]
        sans += [str(n) for n in names.get_values_for_type(x509.IPAddress)]
    except (x509.ExtensionNotFound, ValueError):
        sans = []
    described = {
        "issuer": cert.issuer.rfc4514_string()[:MAX_TEXT],
        "subject": cert.subject.rfc4514_string()[:MAX_TEXT],
        "sans": sans[:MAX_SANS],
        "not_before": _iso(cert.not_valid_before_utc),
        "not_after": _iso(cert.not_valid_after_utc),
        "fingerprint": hashlib.sha256(der).hexdigest(),
    }
    if len(_described) >= _CACHE_SIZE:
        _described.clear()
    _described[der] = described
    return described


def days_left(not_after: str, now: datetime.datetime) -> int:
    """Whole days from `now` until a certificate's not_after; negative once it has expired."""
    end = datetime.datetime.fromisoformat(not_after.replace("Z", "+00:00"))
    return math.floor((end - now).total_seconds() / 86400)


def name_matches(host: str, cert: dict[str, Any]) -> bool:
    """Whether a certificate's SANs name the host (an address by an IP SAN; a wildcard covers one label)."""
    host = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for san in cert["sans"]:
        if address is not None:
            try:
                if ipaddress.ip_address(san) == address:
                    return True
            except ValueError:
                pass
            continue
        name = san.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def now_utc() -> datetime.datetime:
    """The time days_left counts from."""
    return datetime.datetime.now(datetime.UTC)


def _iso(moment: datetime.datetime) -> str:
    """A UTC time as 2026-12-06T08:00:00Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
