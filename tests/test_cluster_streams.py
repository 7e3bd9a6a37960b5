"""Cluster mode's live events: announcing committed seq ranges on Redis Streams, following them from PostgreSQL."""

from __future__ import annotations

import pytest

redis = pytest.importorskip("redis")

from app.cluster.streams import BATCHES_KEY, announce, events_key  # noqa: E402
from app.runs.events import Event  # noqa: E402


@pytest.fixture
def client(redis_server):
    """A redis-py client on the session's redis-server, emptied before the test."""
    instance = redis.Redis.from_url(redis_server.url, decode_responses=True)
    instance.flushall()
    yield instance
    instance.close()


def result(batch_id: str, seq: int) -> Event:
    """A result event."""
    return Event(batch_id, seq, "result", {"index": seq})


def change(batch_id: str, seq: int, type_: str = "progress") -> Event:
    """A batch or progress event."""
    return Event(batch_id, seq, type_, {"status": "running"})


def test_announce_adds_one_entry_per_batch_with_its_committed_seq_range(client):
    assert announce(client, [result("a", 3), result("a", 4), change("a", 5), result("b", 7), result("b", 8)])
    assert [fields for _, fields in client.xrange(events_key("a"))] == [{"first": "3", "last": "5"}]
    assert [fields for _, fields in client.xrange(events_key("b"))] == [{"first": "7", "last": "8"}]
    # Only runs holding batch or progress events go on the all-batches stream, with those events' seqs.
    assert [fields for _, fields in client.xrange(BATCHES_KEY)] == [{"batch_id": "a", "first": "5", "last": "5"}]


def test_announce_of_nothing_touches_nothing(client):
    assert announce(client, [])
    assert client.keys("*") == []


def test_announce_without_redis_answers_false_and_does_not_raise(tmp_path):
    absent = redis.Redis.from_url(f"unix://{tmp_path / 'no.sock'}", socket_connect_timeout=1)
    assert announce(absent, [change("a", 1, "batch")]) is False
