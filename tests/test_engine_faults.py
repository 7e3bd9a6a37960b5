"""A bug inside the engine: the batch ends as failed, visibly and durably, and the engine goes on.

These tests run the engine in this process, with a real store and bus, because the fault has to be
put inside it: a transport factory that raises stands for any bug that escapes a batch's greenlet.
"""

import pytest

from app.core.config import Config
from app.core.options import BatchOptions
from app.fetch import guard, make_transport
from app.runs.engine import Engine
from app.runs.events import EventBus
from app.runs.store import SQLiteStore


class BuggyFactory:
    """Makes the real transport, except for the first batch, where it raises as a bug would."""

    def __init__(self):
        self.calls = 0

    def __call__(self, options, resolver):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("bug in the transport factory")
        return make_transport(options, resolver)


@pytest.fixture
def engine_and_events(tmp_path, target):
    """An engine whose first batch hits the bug, and every event its bus hands on."""
    config = Config(data_dir=str(tmp_path), allow_targets=f"127.0.0.1:{target.port}", max_running_batches=1)
    store = SQLiteStore(config.db_path, flush_interval=0.01)
    bus = EventBus(store)
    policy = guard.Policy.from_settings(config.allow_private, config.allow_targets, config.deny_targets)
    engine = Engine(config, store, bus, policy, transport_factory=BuggyFactory())
    events = []
    bus.tap(events.extend)
    yield engine, events
    engine.shutdown(5)
    store.close()


def test_a_batch_whose_engine_code_raises_ends_failed_with_the_error_and_the_next_batch_still_runs(
    engine_and_events, target
):
    engine, events = engine_and_events
    options = BatchOptions.parse({"concurrency": 2}, engine.config)
    broken = engine.submit([target.url("/ok")] * 3, options)
    queued = engine.submit([target.url("/ok")] * 3, options)  # waits behind the broken one (one batch at a time)

    engine.wait_released(broken, timeout=10)
    engine.wait_released(queued, timeout=10)

    final = [e for e in events if e.batch_id == broken and e.type == "batch"][-1].data
    assert final["status"] == "failed"
    assert final["error"] == "internal error: RuntimeError('bug in the transport factory')"
    assert final["counts"]["pending"] == 3, "no URL was fetched, and none is reported as fetched"
    stored = engine.store.get_batch(broken)
    assert stored.status == "failed" and stored.summary["counts"]["pending"] == 3

    assert engine.store.get_batch(queued).status == "done"
    assert engine.store.get_batch(queued).summary["counts"]["ok"] == 3
