"""A small least-recently-used cache: what the store keeps of final event pages and the stream of shared frames."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most `size` entries; a hit makes its entry the newest, and a new entry past the size evicts the oldest."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value kept for `key`, now the most recently used, or None."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> V:
        """Keep `value` for `key` as the most recently used; returns it."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def drop(self, matches: Callable[[K], bool]) -> None:
        """Forget every entry whose key matches (what a deleted batch leaves behind)."""
        for key in [key for key in self._entries if matches(key)]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
