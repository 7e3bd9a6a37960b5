"""A batch fetching at full speed shares the hub: the loop keeps turning between URLs, a turn in which every
fetch wakes at once reads a few ms of responses, and a running batch is shown from memory, so the API
answers between two turns of the loop, not after a lap of every fetcher.

These tests run the engine in this process with a real store and bus: what they check is how the engine
and the reader use the one gevent hub, which a server in a subprocess would hide.
"""

from __future__ import annotations

import os
import signal
import time

import gevent
import gevent.monkey
import pytest
from gevent.event import Event

from app.core.config import Config
from app.core.options import BatchOptions
from app.fetch import guard, make_transport
from app.fetch.base import Hop
from app.runs.engine import Engine
from app.runs.events import EventBus
from app.runs.reader import BatchReader
from app.runs.store import SQLiteStore
from tests.support.target import start_target

URLS = 3_000


class AnsweredTransport:
    """A transport whose every response is there when asked for (a target on loopback that answers before
    the read): fetch() returns without ever waiting, so it never yields the hub by itself."""

    def fetch(self, url, *, method, headers, connect_timeout, read_timeout, max_bytes):
        """A 200 with a small body, at once."""
        return Hop(200, {"Content-Type": "text/plain"}, 512, {"dns": None, "connect": None, "tls": None})

    def close(self):
        """Nothing to close."""


class HeldTransport(AnsweredTransport):
    """Answers only once `release` is set: a batch that stays running as long as the test needs."""

    def __init__(self):
        self.release = Event()

    def fetch(self, url, **kwargs):
        """Wait for the release, then answer."""
        self.release.wait()
        return super().fetch(url, **kwargs)


class ReadCountingStore(SQLiteStore):
    """The SQLite store, counting reads of a batch's row."""

    batch_reads = 0

    def get_batch(self, batch_id, recent=False):
        """Count, then read as the store does."""
        self.batch_reads += 1
        return super().get_batch(batch_id, recent)


def engine_with(tmp_path, transport_factory, allow_targets: str = "") -> tuple[Engine, ReadCountingStore]:
    """An engine on a real store and bus whose batches fetch through `transport_factory`'s transports."""
    config = Config(data_dir=str(tmp_path), allow_targets=allow_targets)
    store = ReadCountingStore(config.db_path, flush_interval=0.01)
    policy = guard.Policy.from_settings(config.allow_private, config.allow_targets, config.deny_targets)
    return Engine(config, store, EventBus(store), policy, transport_factory=transport_factory), store


@pytest.fixture
def answered(tmp_path):
    """An engine whose responses are all there at once."""
    transport = AnsweredTransport()
    engine, store = engine_with(tmp_path, lambda options, resolver: transport)
    yield engine
    engine.shutdown(5)
    store.close()


def test_the_loop_keeps_turning_between_urls_even_when_every_response_is_already_there(answered):
    batch_id = answered.submit(
        [f"http://a.test/{i}" for i in range(URLS)], BatchOptions.parse({"concurrency": 10}, answered.config)
    )
    results_at_each_turn = []

    def watch() -> None:
        # A timer fires only when the loop polls: each wake-up is one turn of the loop.
        while answered.is_live(batch_id):
            results_at_each_turn.append(answered.live(batch_id).counts["ok"])
            gevent.sleep(0.001)

    watcher = gevent.spawn(watch)
    answered.wait_released(batch_id, timeout=60)
    watcher.join(5)

    steps = [later - earlier for earlier, later in zip(results_at_each_turn, results_at_each_turn[1:])]
    assert results_at_each_turn[-1] == URLS
    # A turn runs the callbacks gevent allows in its switch interval (5 ms): a few hundred instant URLs at most,
    # never the whole batch in one go as fetchers that do not yield would.
    assert max(steps) <= URLS // 3, f"{max(steps)} URLs ended within one turn of the loop"


def counts_at_each_turn(engine: Engine, batch_id: str, seconds: float) -> list[int]:
    """The batch's results each time a 1 ms timer fires, for `seconds`: a timer fires once a turn of the loop."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and engine.is_live(batch_id):
        seen.append(engine.live(batch_id).counts["ok"])
        gevent.sleep(0.001)
    return seen


def test_a_turn_in_which_every_fetch_wakes_at_once_reads_a_few_ms_of_responses_not_all_of_them(tmp_path):
    with start_target() as target:  # its own: the test stops it for a moment
        engine, store = engine_with(tmp_path, make_transport, allow_targets=f"127.0.0.1:{target.port}")
        concurrency = 1000
        batch_id = engine.submit(
            [target.url(f"/ok?i={i}") for i in range(20 * concurrency)],
            BatchOptions.parse({"concurrency": concurrency}, engine.config),  # the fast client
        )
        try:
            while engine.live(batch_id).counts["ok"] < 2 * concurrency:
                gevent.sleep(0.01)
            for _ in range(2):  # the first time, libev's poll learns to return this many events at once
                os.kill(target.pid, signal.SIGSTOP)  # every fetcher sends its request and waits
                gevent.sleep(0.3)
                os.kill(target.pid, signal.SIGCONT)
                # The hub stalls (as on a busy machine) while the target answers them all: the next poll finds
                # every fetch's response there at once.
                gevent.monkey.get_original("time", "sleep")(0.5)
                steps = counts_at_each_turn(engine, batch_id, 0.5)
        finally:
            os.kill(target.pid, signal.SIGCONT)
            engine.shutdown(5)
            store.close()
    most = max(later - earlier for earlier, later in zip(steps, steps[1:]))
    # About a hundred or two on a 2-core VM: what the turn reads in its 5 ms, then its callbacks' 5 ms.
    assert most < concurrency * 3 // 5, f"{most} of {concurrency} responses were read in one turn of the loop"


@pytest.fixture
def held(tmp_path):
    """An engine whose fetches wait for the test, its store and its transport."""
    transport = HeldTransport()
    engine, store = engine_with(tmp_path, lambda options, resolver: transport)
    yield engine, store, transport
    transport.release.set()
    engine.shutdown(5)
    store.close()


def test_a_running_batch_is_shown_from_memory_after_one_read_of_its_stored_row(held):
    engine, store, transport = held
    reader = BatchReader(store, engine)
    batch_id = engine.submit(["http://a.test/1", "http://a.test/2"], BatchOptions.parse({}, engine.config), "held")
    first = reader.get(batch_id)
    for _ in range(5):
        again = reader.get(batch_id)
        assert (again.name, again.num, again.total, again.status) == ("held", first.num, 2, "running")
        assert again.counts["running"] == 2
    assert store.batch_reads == 1, "a reader thread's answer would wait a lap of every fetcher in the callback queue"

    transport.release.set()
    engine.wait_released(batch_id, timeout=10)
    done = reader.get(batch_id)
    assert done.status == "done" and done.counts["ok"] == 2, "once the engine lets go, the stored row is read again"
    assert store.batch_reads == 2
