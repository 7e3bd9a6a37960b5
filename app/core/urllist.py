"""A batch's URLs held compactly: one UTF-8 buffer and an offset per URL, not a Python str each."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from typing import overload

# Lone surrogates (JSON allows "\ud800") must survive the round trip through bytes.
_ERRORS = "surrogatepass"


class UrlList(Sequence[str]):
    """URLs in submission order: ~1 byte per character plus 4 per URL, where a list of str costs ~60 more each."""

    __slots__ = ("_data", "_offsets")

    def __init__(self, data: bytes, offsets: array[int]):
        """Wrap a buffer and its len+1 offsets (URL i is data[offsets[i]:offsets[i + 1]]); see UrlList.of."""
        self._data = data
        self._offsets = offsets

    @classmethod
    def of(cls, urls: Iterable[str]) -> UrlList:
        """The compact form of some URLs (while it is built, their text is held once more, joined)."""
        if isinstance(urls, UrlList):
            return urls
        urls = urls if isinstance(urls, Sequence) else list(urls)
        text = "".join(urls)
        data = text.encode("utf-8", _ERRORS)
        del text
        # ASCII (the usual case): a character is a byte, so the lengths of the str give the offsets.
        lengths = (
            map(len, urls) if len(data) == sum(map(len, urls)) else (len(u.encode("utf-8", _ERRORS)) for u in urls)
        )
        offsets = array("Q", accumulate(lengths, initial=0))
        if len(data) < 2**32:
            offsets = array("I", offsets)  # 4 bytes an offset suffice below 4 GiB
        return cls(data, offsets)

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
        return self._data[self._offsets[index] : self._offsets[index + 1]].decode("utf-8", _ERRORS)

    def __eq__(self, other: object) -> bool:
        """Equal to another UrlList, or to a list or tuple, with the same URLs in the same order."""
        if isinstance(other, UrlList):
            return self._data == other._data and self._offsets.tolist() == other._offsets.tolist()
        if isinstance(other, list | tuple):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking like a list: equal to lists, so never hashed

    def __repr__(self) -> str:
        """Like a list's, shortened."""
        shown = ", ".join(repr(u) for u in self[:3])
        return f"UrlList([{shown}{', ...' if len(self) > 3 else ''}], {len(self)} URLs)"

    def __iter__(self) -> Iterator[str]:
        """The URLs in order."""
        data, offsets = self._data, self._offsets
        for i in range(len(offsets) - 1):
            yield data[offsets[i] : offsets[i + 1]].decode("utf-8", _ERRORS)
