"""A batch's URLs held compactly: one UTF-8 buffer and an offset per URL, not a Python str each."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from typing import overload

# Lone surrogates (JSON allows "\ud800") must survive the round trip through bytes.
_ERRORS = "surrogatepass"


class UrlList(Sequence[str]):
    """URLs in submission order, in one buffer: ~1 byte a character and 4 a URL, where a str each costs ~60 more."""

    __slots__ = ("_data", "_offsets")

    def __init__(self, data: str | bytes, offsets: array[int]):
        """Wrap a buffer (ASCII text, or else UTF-8) and its len+1 offsets: URL i is data[offsets[i]:offsets[i + 1]]."""
        self._data = data
        self._offsets = offsets

    @classmethod
    def of(cls, urls: Iterable[str]) -> UrlList:
        """The compact form of some URLs; while it is built, their text is held once more, joined."""
        if isinstance(urls, UrlList):
            return urls
        urls = urls if isinstance(urls, Sequence) else list(urls)
        text = "".join(urls)
        if text.isascii():  # the usual case: a str of ASCII holds a byte a character, and slices as fast as bytes
            return cls(text, _offsets(len(text), map(len, urls)))
        data = text.encode("utf-8", _ERRORS)
        del text
        return cls(data, _offsets(len(data), (len(u.encode("utf-8", _ERRORS)) for u in urls)))

    def __len__(self) -> int:
        """How many URLs."""
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        """URL `index` (a slice gives a list)."""
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("URL index out of range")
        url = self._data[self._offsets[index] : self._offsets[index + 1]]
        return url if isinstance(url, str) else url.decode("utf-8", _ERRORS)

    def __iter__(self) -> Iterator[str]:
        """The URLs in order."""
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        """Equal to another UrlList, or to a list or tuple, with the same URLs in the same order."""
        if isinstance(other, UrlList | list | tuple):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, so unhashable like them

    def __repr__(self) -> str:
        """Like a list's, shortened."""
        shown = ", ".join(repr(u) for u in self[:3])
        return f"UrlList([{shown}{', ...' if len(self) > 3 else ''}], {len(self)} URLs)"


def _offsets(size: int, lengths: Iterable[int]) -> array[int]:
    """Where each URL starts, and the end: 4 bytes an offset below 4 GiB of text, else 8."""
    return array("I" if size < 2**32 else "Q", accumulate(lengths, initial=0))
