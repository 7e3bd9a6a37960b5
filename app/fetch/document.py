"""One document read as it streams in (a sitemap, a page) for app/fetch/sources.py: every hop resolves and connects
through the SSRF guard, redirects are followed a few hops, and the body is decoded in bounded pieces (its
Content-Encoding, then gzip again when the file itself is gzipped, as sitemap.xml.gz is), cut at a byte cap."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import gevent
import requests
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError

from . import guard
from .base import REDIRECT_STATUSES, USER_AGENT
from .decode import ACCEPT_ENCODING, DECODE_ERRORS, DECODERS, content_decoders, decoded
from .errors import FetchError
from .requests_client import RequestsTransport, _classify

MAX_HOPS = 5  # redirects followed to reach one document
RAW_CHUNK = 64 * 1024  # bytes read from the socket at once
SHARE_EVERY = 256 * 1024  # decoded bytes handed on (and parsed) between two turns given to other greenlets
GZIP_MAGIC = b"\x1f\x8b"
_UNDECODABLE: tuple[type[Exception], ...] = (DecodeError, *DECODE_ERRORS)


class DocumentError(Exception):
    """A document that cannot be read (refused by the guard, unreachable, not 200, too large): the message names
    its URL and what happened."""

    def __init__(self, message: str, code: str = "source_unreadable"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class DocumentLimits:
    """How long one request may wait, and the longest URL a redirect may name."""

    connect_timeout: float
    read_timeout: float
    max_url_length: int
    user_agent: str = USER_AGENT  # GREENBATCH_USER_AGENT, as every fetch of a batch sends


class DocumentReader:
    """Reads documents one after another over one guarded keep-alive pool; close() when done."""

    def __init__(self, policy: guard.Policy, limits: DocumentLimits):
        self._limits = limits
        # The requests transport's pinned pools: each new connection resolves through the guard and connects to a
        # checked address; its adapter is used directly, so the body streams and no redirect is followed for us.
        self._transport = RequestsTransport(
            pool_size=2, resolver=guard.GuardedResolver(policy), user_agent=limits.user_agent
        )

    def open(self, url: str, noun: str, accept: str) -> Document:
        """The document at `url` (redirects followed), its headers read and its body not yet; DocumentError if none."""
        for _ in range(MAX_HOPS + 1):
            response = self._send(url, noun, accept)
            location = response.headers.get("Location")
            if response.status_code in REDIRECT_STATUSES and location:
                response.close()
                try:
                    url = guard.check_url(urljoin(url, location.strip()), self._limits.max_url_length)
                except guard.GuardError as exc:
                    raise DocumentError(f"the {noun} {url} redirects to a URL that cannot be fetched: {exc}") from None
                continue
            if response.status_code != 200:
                response.close()
                raise DocumentError(f"the {noun} {url} answered {response.status_code}, not 200")
            return Document(url, response, noun)
        raise DocumentError(f"the {noun} redirects more than {MAX_HOPS} times; the last pointed to {url}")

    def _send(self, url: str, noun: str, accept: str) -> requests.Response:
        """One request, its body left on the wire; the guard's refusals and network errors as DocumentError."""
        transport = self._transport
        headers = {"Accept": accept, "Accept-Encoding": ACCEPT_ENCODING}
        prepared = transport.session.prepare_request(requests.Request("GET", url, headers=headers))
        try:
            return transport.adapter.send(
                prepared, stream=True, timeout=(self._limits.connect_timeout, self._limits.read_timeout)
            )
        except guard.GuardError as exc:
            raise DocumentError(f"the {noun} {url} cannot be fetched: {exc}", code="source_blocked") from None
        except requests.RequestException as exc:
            raise DocumentError(f"the {noun} {url} cannot be fetched: {_classify(exc, url)}") from None

    def close(self) -> None:
        """Close the pooled connections."""
        self._transport.close()


class Document:
    """A response whose body is read by pieces(); the connection is closed when they end or stop."""

    def __init__(self, url: str, response: requests.Response, noun: str):
        self.url = url  # after redirects: what relative links are resolved against
        self.noun = noun
        self.content_type: str = response.headers.get("Content-Type") or ""
        self._response = response
        self.gzipped = False  # the file itself was gzip (sitemap.xml.gz), beyond any Content-Encoding

    def pieces(self, cap: int) -> Iterator[bytes]:
        """The decoded body in pieces of at most RAW_CHUNK bytes; DocumentError past `cap` decoded bytes."""
        response = self._response
        size = 0
        shared = 0  # `size` when other greenlets last had a turn
        try:
            stages = content_decoders(response.headers.get("Content-Encoding"))
            chunks = response.raw.stream(RAW_CHUNK, decode_content=False)
            for piece in self._ungzipped(_decoded_chunks(chunks, stages)):
                size += len(piece)
                if size - shared >= SHARE_EVERY:
                    # Parsing takes a few ms a share, and a compressed chunk can inflate to megabytes: the API and
                    # the pages are served in between, however the bytes arrive.
                    gevent.sleep(0)
                    shared = size
                if size > cap:
                    raise DocumentError(
                        f"the {self.noun} {self.url} is larger than {cap:,} bytes"
                        f"{' uncompressed' if self.gzipped or stages else ''}; it was read no further",
                        code="source_too_large",
                    )
                yield piece
        except FetchError as exc:  # too many content encodings
            raise DocumentError(f"the {self.noun} {self.url} cannot be read: {exc}") from None
        except ReadTimeoutError:
            raise DocumentError(f"the {self.noun} {self.url} stopped sending within the read timeout") from None
        except _UNDECODABLE as exc:
            raise DocumentError(f"the {self.noun} {self.url} does not decompress: {exc}") from None
        except (ProtocolError, OSError) as exc:
            raise DocumentError(f"the connection broke while reading the {self.noun} {self.url}: {exc}") from None
        finally:
            response.close()

    def _ungzipped(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        """The pieces as they come, or gunzipped a bounded step at a time when they start with gzip's magic bytes."""
        first = next(pieces, b"")
        while len(first) < len(GZIP_MAGIC):
            more = next(pieces, None)
            if more is None:
                break
            first += more
        if not first.startswith(GZIP_MAGIC):
            if first:
                yield first
            yield from pieces
            return
        self.gzipped = True
        gunzip = DECODERS["gzip"]()
        yield from gunzip.pieces(first)
        for piece in pieces:
            yield from gunzip.pieces(piece)


def _decoded_chunks(chunks: Iterator[Any], stages: list[Any]) -> Iterator[bytes]:
    """Raw socket chunks through the Content-Encoding decoders."""
    for chunk in chunks:
        if stages:
            yield from decoded(chunk, stages)
        else:
            yield chunk
