"""The SQLite store on its own: what it is handed is committed once, and reads of a batch are shared."""
import sqlite3

import gevent
import pytest

from app.events import Event
from app.stats import row_of
from app.store import SQLiteStore


def result(seq: int, index: int) -> Event:
    """A result event as the engine makes it."""
    data = {"index": index, "url": f"http://a.test/{index}", "status_code": 200, "ok": True, "error": None,
            "bytes": 3, "timings": {"total": 1.5}}
    return Event("b", seq, "result", data, row=row_of(data))


@pytest.mark.parametrize("parameter_limit", [None, 999], ids=["this-sqlite", "sqlite-before-3.32"])
def test_groups_of_every_size_are_stored_once_each_in_order(tmp_path, parameter_limit):
    # The store inserts many rows per statement; SQLite before 3.32 allowed only 999 parameters
    # in one, so the same groups must fit there too.
    store = SQLiteStore(str(tmp_path / "gb.db"), flush_interval=0.01)
    try:
        if parameter_limit:
            store._writer.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, parameter_limit)
        urls = [f"http://a.test/{i}" for i in range(1_500)]
        store.create_batch("b", "sizes", {}, urls, "2026-11-28T00:00:00.000Z")
        seq = 0
        for size in (1, 2, 3, 63, 64, 65, 511, 512, 513):
            group = [result(seq + i + 1, seq + i) for i in range(size)]
            seq += size
            store.extend(group)
            assert store.flush(10)
        assert store.urls("b") == urls
        stored = store.stored_events("b", after=0, limit=5_000)
        assert [e.seq for e in stored] == list(range(1, seq + 1))
        assert [e.data["index"] for e in stored] == list(range(seq))
        assert sorted(store.result_rows("b")) == list(range(seq))
    finally:
        store.close()


def test_viewers_that_take_a_recent_row_share_one_read_of_a_batch_and_others_always_read(tmp_path):
    store = SQLiteStore(str(tmp_path / "gb.db"), flush_interval=0.01)
    try:
        store.create_batch("b", "shared", {"concurrency": 2}, ["http://a.test/"], "2026-11-28T00:00:00.000Z")
        reads = []
        real_read = store._read

        def counted(fn, *args):
            reads.append(fn)
            return real_read(fn, *args)

        store._read = counted  # a spy: every read still runs against the file
        joining = [gevent.spawn(store.get_batch, "b", recent=True) for _ in range(50)]
        gevent.joinall(joining, raise_error=True)
        assert len(reads) == 1, "50 viewers joining at once make one read"
        assert {(g.value.id, g.value.name, g.value.total) for g in joining} == {("b", "shared", 1)}
        store.get_batch("b")
        store.get_batch("b")
        assert len(reads) == 3, "a caller that needs the row as it is now always reads"
    finally:
        store.close()
