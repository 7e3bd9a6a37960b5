"""The small LRU cache the store (final event pages) and the stream (shared frames) keep."""

from app.core.lru import LRU


def test_a_new_entry_past_the_size_evicts_the_least_recently_used_and_a_hit_refreshes_an_entry():
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the newest
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2


def test_drop_forgets_the_entries_of_a_deleted_batch_only():
    cache: LRU[tuple[str, int], str] = LRU(8)
    for batch, after in (("x", 0), ("x", 1000), ("y", 0)):
        cache.put((batch, after), f"{batch}{after}")
    cache.drop(lambda key: key[0] == "x")
    assert (cache.get(("x", 0)), cache.get(("x", 1000)), cache.get(("y", 0))) == (None, None, "y0")
