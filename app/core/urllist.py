"""A batch's URLs held compactly: one text of lines and an offset per URL, not a Python str each."""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, islice
from json.decoder import scanstring  # type: ignore[attr-defined]  # json's own string reader (in C)
from typing import Any, cast, overload

# Lone surrogates (JSON allows "\ud800") must survive the round trip through bytes.
_ERRORS = "surrogatepass"
JSON_WINDOW = 1 << 16  # characters of a JSON array that read_json_array parses at once (~1,500 URLs)
_WS = re.compile(r"[ \t\n\r]*")  # what JSON calls whitespace
_DECODER = json.JSONDecoder()  # json.loads' own
_OFFSETS_4 = 2**32  # offsets fit in 4 bytes below this many bytes of text


class UrlList(Sequence[str]):
    """URLs in submission order, in one buffer: ~1 byte a character and 5 a URL, where a str each costs ~60 more."""

    __slots__ = ("_data", "_offsets", "_one_per_line")

    def __init__(self, data: str | bytes, offsets: array[int]):
        """Wrap a buffer of lines (ASCII text, or else UTF-8), each URL followed by "\\n", and its len+1 offsets,
        counted without the line feeds: URL i is data[offsets[i] + i:offsets[i + 1] + i]."""
        self._data = data
        self._offsets = offsets
        # Whether a line is a URL: no URL holds a line break of its own (the guard refuses those).
        breaks = data.count("\n") if isinstance(data, str) else data.count(b"\n")
        self._one_per_line = breaks == len(offsets) - 1

    @classmethod
    def of(cls, urls: Iterable[str]) -> UrlList:
        """The compact form of some URLs; while it is built, their text is held once more, joined."""
        if isinstance(urls, UrlList):
            return urls
        builder = UrlListBuilder()
        builder.add(urls if isinstance(urls, Sequence) else list(urls))
        return builder.build()

    @classmethod
    def from_json(cls, text: str | bytes) -> UrlList:
        """A JSON array of strings (as the store keeps a batch's URLs), read a window at a time where it can be."""
        if not isinstance(text, str):
            text = text.decode("utf-8", _ERRORS)  # as json.loads reads bytes
        read = read_json_array(text, skip_json_space(text, 0))
        if read is None or skip_json_space(text, read[1]) != len(text):
            return cls.of(json.loads(text))
        del text  # joined only once the JSON text is let go
        return read[0].build()

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
            start, stop, step = index.indices(len(self))
            if step != 1 or start >= stop:
                return [self[i] for i in range(start, stop, step)]
            if self._one_per_line:
                return self.lines(start, stop)[:-1].split("\n")
            return [self[i] for i in range(start, stop)]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("URL index out of range")
        url = self._data[self._offsets[index] + index : self._offsets[index + 1] + index]
        return url if isinstance(url, str) else url.decode("utf-8", _ERRORS)

    def lines(self, start: int, stop: int) -> str:
        """URLs start to stop - 1, each followed by "\\n" (a URL may hold a line break of its own)."""
        text = self._data[self._offsets[start] + start : self._offsets[stop] + stop]
        return text if isinstance(text, str) else text.decode("utf-8", _ERRORS)

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


class UrlListBuilder:
    """A UrlList put together from lists of URLs given in turn, each joined as it comes: only one list at a
    time is held as a str per URL."""

    def __init__(self) -> None:
        """No URLs yet."""
        self._parts: list[str | bytes] = []
        self._offsets: array[int] = array("I", [0])
        self._ascii = True

    def __len__(self) -> int:
        """URLs added so far."""
        return len(self._offsets) - 1

    def add(self, urls: Sequence[str]) -> None:
        """Append some URLs (a TypeError, and nothing added, if one is not a str)."""
        if not urls:
            return
        text = "\n".join(urls) + "\n"
        sizes: Iterable[int]
        if text.isascii():  # the usual case: a str of ASCII holds a byte a character, and slices as fast as bytes
            part: str | bytes = text
            sizes = map(len, urls)
        else:
            part = text.encode("utf-8", _ERRORS)
            sizes = (len(u.encode("utf-8", _ERRORS)) for u in urls)
            self._ascii = False
        del text
        end = self._offsets[-1]
        if end + len(part) >= _OFFSETS_4 and self._offsets.typecode == "I":
            self._offsets = array("Q", self._offsets)
        # Offsets leave the line feeds out (URL i's is i more): one addition less per URL as they are counted.
        self._offsets.extend(islice(accumulate(sizes, initial=end), 1, None))
        self._parts.append(part)

    def build(self) -> UrlList:
        """The UrlList of every URL added (the builder is left empty); the text is held twice while it is joined."""
        parts, self._parts = self._parts, []
        offsets, self._offsets = self._offsets, array("I", [0])
        if self._ascii:
            data: str | bytes = "".join(cast("list[str]", parts))  # every part is a str
        else:
            data = b"".join(part.encode("ascii") if isinstance(part, str) else part for part in parts)
        self._ascii = True
        return UrlList(data, offsets)


def read_json_object(text: str, key: str) -> dict[str, Any] | None:
    """The JSON object that is the whole text, as json.loads reads it, but its member `key` (an array of
    strings) read by read_json_array into a UrlListBuilder; None when the text is anything else, has no
    `key`, or read_json_array does not read that array: json.loads the text then, for its value or its error."""
    try:
        pos = skip_json_space(text, 0)
        if text[pos : pos + 1] != "{":
            return None
        members: dict[str, Any] = {}
        pos = skip_json_space(text, pos + 1)
        while text[pos : pos + 1] == '"':
            name, pos = scanstring(text, pos + 1)
            pos = skip_json_space(text, pos)
            if text[pos : pos + 1] != ":":
                return None
            pos = skip_json_space(text, pos + 1)
            if name != key:
                members[name], pos = _DECODER.raw_decode(text, pos)
            elif name in members or (read := read_json_array(text, pos)) is None:
                return None  # `key` twice (the last counts), or not an array of strings read_json_array reads
            else:
                members[name], pos = read
            pos = skip_json_space(text, pos)
            if text[pos : pos + 1] == "}":
                return members if key in members and skip_json_space(text, pos + 1) == len(text) else None
            if text[pos : pos + 1] != ",":
                return None
            pos = skip_json_space(text, pos + 1)
        return None
    except (ValueError, RecursionError):
        return None


def read_json_array(text: str, start: int) -> tuple[UrlListBuilder, int] | None:
    """The JSON array of strings at text[start] (a "[") in a UrlListBuilder, and the index just past it;
    json.loads parses JSON_WINDOW characters of it at a time, so that its URLs are never all held as a str
    each. Build the UrlList once the text is let go: building holds the URLs' text twice.

    None when there is anything else there (an empty array, a value that is not a string, JSON that is not
    valid), or an array this does not cut into windows (a backslash escape, whitespace before a comma, a
    string that starts with "," or "]"): json.loads the whole text then, for its value or its error.
    """
    if text[start : start + 1] != "[":
        return None
    pos = skip_json_space(text, start + 1)
    builder = UrlListBuilder()
    while text[pos : pos + 1] == '"':  # pos is where a string of the array begins
        limit = min(len(text), pos + JSON_WINDOW)
        escape = text.find("\\", pos, limit)
        if escape != -1:
            limit = escape  # without a backslash, a string holds no quote: each quote opens or closes one
        end = _array_end(text, pos, limit)
        # A window ends with a string that a comma follows (or the array's last); one that ends with a quote
        # that opens a string is not valid JSON, and is refused below.
        cut = end if end != -1 else text.rfind('",', pos, limit) + 1
        if cut <= 0:
            return None
        try:
            builder.add(json.loads(f"[{text[pos:cut]}]"))  # a TypeError if a value is not a string
        except (ValueError, TypeError, RecursionError):
            return None
        if end != -1:
            return builder, text.index("]", end) + 1
        pos = skip_json_space(text, cut + 1)  # past the comma
    return None


def skip_json_space(text: str, pos: int) -> int:
    """The index of the first character from `pos` on that is not JSON whitespace (len(text) if none is)."""
    space = _WS.match(text, pos)
    return space.end() if space else pos


def _array_end(text: str, pos: int, limit: int) -> int:
    """Just past the first quote before `limit` that a "]" follows (whitespace between them aside), or -1."""
    bracket = text.find("]", pos, limit)
    while bracket != -1:
        end = bracket
        while end > pos and text[end - 1] in " \t\n\r":
            end -= 1
        if end > pos and text[end - 1] == '"':
            return end
        bracket = text.find("]", bracket + 1, limit)
    return -1


MAX_REMAP = 20  # prefix rules in one rerun's remap


def remapped(url: str, rules: list[tuple[str, str]]) -> str:
    """The URL with the first (from, to) rule whose prefix starts it applied; unchanged when none does."""
    for old, new in rules:
        if url.startswith(old):
            return new + url[len(old) :]
    return url
