"""Body decoding: gzip, deflate and br, a bounded step at a time, so a compression bomb inflates no further
than the decoded-bytes cap allows (the fast client reads bodies through it; urllib3 does its own)."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, cast

from .base import DECODE_CHUNK
from .errors import FetchError

try:
    import brotli
except ImportError:  # pragma: no cover - brotli comes with geventhttpclient
    brotli = None

MAX_ENCODINGS = 5  # like urllib3: a longer Content-Encoding chain is refused
ACCEPT_ENCODING = "gzip, deflate, br" if brotli else "gzip, deflate"
UNDECIDED_LIMIT = 64 * 1024  # deflate bytes held while telling zlib-wrapped from raw (one read's worth)

DECODE_ERRORS: tuple[type[Exception], ...] = (zlib.error, brotli.error) if brotli else (zlib.error,)


class _Inflate:
    """gzip or deflate, DECODE_CHUNK decoded bytes at a time."""

    def __init__(self, gzip: bool):
        self._gzip = gzip
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
        self._members = 0  # gzip members finished before the current one
        self._ended = False
        # deflate is zlib-wrapped by the spec and raw in practice: decided on the first output, as urllib3 does.
        self._trying: bytes | None = None if gzip else b""

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """Decoded output of the next compressed bytes, in pieces of at most DECODE_CHUNK."""
        if self._trying is not None:
            yield from self._first(data)
        else:
            yield from self._inflate(data)

    def _first(self, data: bytes) -> Iterator[bytes]:
        """deflate's first bytes: zlib-wrapped if they decode as such, else raw deflate from the start."""
        self._trying = cast(bytes, self._trying) + data  # pieces() calls this only while it is bytes
        try:
            out = self._obj.decompress(data, DECODE_CHUNK)
        except zlib.error:
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
            data, self._trying = self._trying, None
            yield from self._inflate(data)
            return
        if not out and not self._obj.eof and len(self._trying) <= UNDECIDED_LIMIT:
            return  # undecided: zlib holds the bytes so far
        self._trying = None
        if out:
            yield out
        yield from self._inflate(self._obj.unconsumed_tail)

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        """Inflate with a bound on each step's output; gzip members may follow one another."""
        while not self._ended:
            if self._obj.eof:
                if not self._gzip:
                    self._ended = True  # bytes after the deflate stream are ignored
                    return
                data = self._obj.unused_data + data
                if not data:
                    return  # the next member, if any, comes with the next bytes
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._members += 1
            try:
                out = self._obj.decompress(data, DECODE_CHUNK)
            except zlib.error:
                if self._members:
                    self._ended = True  # junk after the last gzip member: ignored, as urllib3 does
                    return
                raise
            if out:
                yield out
            data = self._obj.unconsumed_tail
            if not data and len(out) < DECODE_CHUNK and not self._obj.eof:
                return


class _Brotli:
    """br, about DECODE_CHUNK decoded bytes at a time (Brotli 1.2's output_buffer_limit)."""

    def __init__(self) -> None:
        self._obj = brotli.Decompressor()

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """Decoded output of the next compressed bytes, in bounded pieces."""
        out = self._obj.process(data, output_buffer_limit=DECODE_CHUNK)
        while out and not self._obj.is_finished():
            yield out
            # Output beyond the limit waits inside the decompressor, even when it says it can take more input.
            out = self._obj.process(b"", output_buffer_limit=DECODE_CHUNK)
        if out:
            yield out


class Decoder(Protocol):
    """One content coding's decoder (_Inflate, _Brotli)."""

    def pieces(self, data: bytes) -> Iterator[bytes]: ...


DECODERS: dict[str, Callable[[], Decoder]] = {
    "gzip": lambda: _Inflate(gzip=True),
    "x-gzip": lambda: _Inflate(gzip=True),
    "deflate": lambda: _Inflate(gzip=False),
}
if brotli is not None:
    DECODERS["br"] = _Brotli


def content_decoders(content_encoding: str | None) -> list[Decoder]:
    """Decoders for a Content-Encoding, first applied first; unknown codings pass through (as in urllib3)."""
    if not content_encoding:
        return []
    names = [name.strip().lower() for name in content_encoding.split(",")]
    known = [name for name in names if name in DECODERS]
    if len(known) > MAX_ENCODINGS:
        raise FetchError(
            "other", f"the response has {len(known)} content encodings; at most {MAX_ENCODINGS} are decoded"
        )
    return [DECODERS[name]() for name in reversed(known)]


def decoded(data: bytes, decoders: list[Decoder]) -> Iterator[bytes]:
    """Raw body bytes through every decoder in turn, lazily, so no stage holds more than one step's output."""
    pieces: Iterable[bytes] = (data,)
    for decoder in decoders:
        pieces = _through(decoder, pieces)
    return iter(pieces)


def _through(decoder: Decoder, pieces: Iterable[bytes]) -> Iterator[bytes]:
    """One decoding stage."""
    for piece in pieces:
        yield from decoder.pieces(piece)
