"""The janitor on a real PostgreSQL and Redis: one at a time in the cluster, and what it sends again, and when."""

from __future__ import annotations

import time

import pytest

for module in ("psycopg", "redis", "dramatiq"):
    pytest.importorskip(module)

import psycopg  # noqa: E402
import redis  # noqa: E402

from app.cluster import janitor as janitor_module  # noqa: E402
from app.cluster.janitor import EPOCH_KEY, Janitor  # noqa: E402
from app.cluster.ledger import Ledger, plan_chunks  # noqa: E402

CREATED = "2026-01-01T00:00:00.000Z"


@pytest.fixture
def client(redis_server):
    """A client of the session's redis-server, emptied first."""
    instance = redis.Redis.from_url(redis_server.url, decode_responses=True)
    instance.flushall()
    yield instance
    instance.close()


class Sent:
    """What the janitor sent, as the web's ClusterControl.send would have sent it: (batch id, chunk nos)."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.calls: list[tuple[str, list[int]]] = []

    def __call__(self, batch_id: str, nos: list[int]) -> bool:
        self.calls.append((batch_id, nos))
        self.ledger.mark_sent(batch_id, nos)
        return True


def make_janitor(pg_url: str, ledger: Ledger, client, sent: Sent, cancelled: list[str] | None = None) -> Janitor:
    """A janitor whose sends are recorded and whose cancels go to the ledger."""

    def cancel(batch_id: str) -> bool:
        (cancelled if cancelled is not None else []).append(batch_id)
        return ledger.cancel(batch_id) is not None

    return Janitor(pg_url, ledger, client, sent, cancel, silent_after=300)


def stored(ledger: Ledger, batch_id: str, total: int, chunk: int = 100) -> int:
    """A batch stored with its chunks, as a submit's transaction leaves it before any send; its chunk count."""
    urls = [f"http://h{i % 3}.test/{i}" for i in range(total)]
    chunks = plan_chunks(urls, 1, chunk, chunk)
    ledger.create_batch(batch_id, "test", {"concurrency": 5}, urls, CREATED, None, chunks)
    return len(chunks)


def test_one_web_process_at_a_time_is_the_janitor_and_another_takes_over_when_it_goes(pg_url, ledger, client):
    first, second = (make_janitor(pg_url, ledger, client, Sent(ledger)) for _ in range(2))
    try:
        assert first._lock() and not second._lock()
        first.stop()  # its connection closes, and the lock with it (as when its process dies)
        # PostgreSQL frees the lock when the closed connection's backend ends, a moment after the close returns.
        deadline = time.monotonic() + 10
        while not second._lock():
            assert time.monotonic() < deadline, "the second process never took the janitor's lock"
            time.sleep(0.05)
    finally:
        first.stop()
        second.stop()


def test_when_redis_has_lost_its_keys_every_open_chunk_is_sent_again(pg_url, ledger, client):
    chunks = stored(ledger, "b1", 500)
    sent = Sent(ledger)
    janitor = make_janitor(pg_url, ledger, client, sent)
    assert janitor.sweep() == chunks and sent.calls == [("b1", list(range(chunks)))]
    assert janitor.sweep() == 0, "the epoch key is set now: nothing is lost"
    client.delete(EPOCH_KEY)  # a restarted Redis without persistence: the queue is gone with it
    assert janitor.sweep() == chunks


def test_chunks_never_sent_are_sent_once_they_have_waited_unsent_after(pg_url, ledger, client, monkeypatch):
    client.set(EPOCH_KEY, "kept")
    stored(ledger, "b2", 300)
    sent = Sent(ledger)
    janitor = make_janitor(pg_url, ledger, client, sent)
    assert janitor.sweep() == 0, "stored a moment ago: its web process is sending them"
    monkeypatch.setattr(janitor_module, "UNSENT_AFTER", 0.0)
    assert janitor.sweep() == 3 and sent.calls == [("b2", [0, 1, 2])]
    assert janitor.sweep() == 0, "sent now, and not silent for long"


def test_a_cancel_whose_process_died_is_ended_by_the_janitor(pg_url, ledger, client, monkeypatch):
    client.set(EPOCH_KEY, "kept")
    stored(ledger, "b3", 200)
    with psycopg.connect(pg_url, autocommit=True) as conn:  # what a cancel's first transaction leaves
        conn.execute("UPDATE batches SET cancelling = true WHERE id = 'b3'")
    cancelled: list[str] = []
    janitor = make_janitor(pg_url, ledger, client, Sent(ledger), cancelled)
    janitor.sweep()
    assert cancelled == [], "a cancel may be under way in another process: it is left alone for a while"
    monkeypatch.setattr(janitor_module, "CANCEL_RESUME_AFTER", 0.0)
    janitor.sweep()
    assert cancelled == ["b3"] and ledger.cancelling() == [] and ledger.unfinished() == []
