"""The store on its own, SQLite's and PostgreSQL's alike (store_factory): what it is handed is committed once, and
reads of a batch are shared."""

import itertools
import json
import sqlite3
import sys

import gevent
import pytest

from app.core.stats import row_of
from app.core.urllist import UrlList
from app.runs.events import Event
from app.runs.store import SQLiteStore
from app.runs.store import sqlite as sqlite_store
from tests.support.events import result_event

CREATED = "2026-12-06T00:00:00.000Z"


def result(seq: int, index: int, batch_id: str = "b") -> Event:
    """A result event as the engine makes it."""
    return result_event(batch_id, seq, index)


def groups_of_every_size_are_stored_once_each_in_order(store) -> None:
    """Hand the store groups of events of every size around its statements' sizes; each is stored once, in order."""
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
    assert [index for index, _ in store.iter_result_rows("b", page=100)] == list(range(seq))
    assert store.get_batch("b").last_seq == seq


def test_groups_of_every_size_are_stored_once_each_in_order(store_factory):
    groups_of_every_size_are_stored_once_each_in_order(store_factory(flush_interval=0.01))


def test_groups_of_every_size_fit_a_sqlite_from_before_3_32(tmp_path):
    # The SQLite store inserts many rows per statement; SQLite before 3.32 allowed only 999 parameters in one.
    store = SQLiteStore(str(tmp_path / "gb.db"), flush_interval=0.01)
    try:
        store._writer.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        groups_of_every_size_are_stored_once_each_in_order(store)
    finally:
        store.close()


def judged_event(seq: int, index: int, outcome: str, reasons: list[str], warnings: list[str]) -> Event:
    """A `result` event whose outcome rules and warnings decided, with its stats row, as the engine makes it."""
    data = {
        "index": index,
        "url": f"http://a.test/{index}",
        "status_code": 302,
        "ok": outcome == "warn",
        "error": None if outcome == "warn" else {"kind": "mismatch", "message": "expect.status: expected 301"},
        "bytes": 3,
        "timings": {"total": 1.5},
        "outcome": outcome,
        "reasons": [{"rule": rule, "expected": "x", "actual": "y"} for rule in reasons],
        "warnings": [{"kind": kind, "evidence": "302 at hop 0"} for kind in warnings],
    }
    return Event("b", seq, "result", data, row=row_of(data))


def test_a_group_mixing_plain_and_judged_results_stores_each_ones_warn_reasons_and_warnings(store_factory):
    store = store_factory(flush_interval=0.01)
    store.create_batch("b", "mixed", {}, [f"http://a.test/{i}" for i in range(40)], "2026-11-28T00:00:00.000Z")
    group = []
    for i in range(40):
        if i % 10 == 3:
            group.append(judged_event(i + 1, i, "warn", ["temporary_redirect"], ["temporary_redirect"]))
        elif i % 10 == 7:
            group.append(
                judged_event(i + 1, i, "failed", ["expect.status", "temporary_redirect"], ["temporary_redirect"])
            )
        else:
            group.append(result(i + 1, i))
    store.extend(group)
    assert store.flush(10)
    assert [row for _, row in store.iter_result_rows("b")] == [e.row for e in group]
    assert [e.seq for e in store.stored_events("b", after=0, limit=100)] == list(range(1, 41))


def test_viewers_that_take_a_recent_row_share_one_read_of_a_batch_and_others_always_read(store_factory):
    store = store_factory(flush_interval=0.01)
    store.create_batch("b", "shared", {"concurrency": 2}, ["http://a.test/"], "2026-11-28T00:00:00.000Z")
    reads = []
    real_read = store._read

    def counted(fn, *args):
        reads.append(fn)
        return real_read(fn, *args)

    store._read = counted  # a spy: every read still runs against the database
    joining = [gevent.spawn(store.get_batch, "b", recent=True) for _ in range(50)]
    gevent.joinall(joining, raise_error=True)
    assert len(reads) == 1, "50 viewers joining at once make one read"
    assert {(g.value.id, g.value.name, g.value.total) for g in joining} == {("b", "shared", 1)}
    store.get_batch("b")
    store.get_batch("b")
    assert len(reads) == 3, "a caller that needs the row as it is now always reads"


def test_a_batch_keeps_its_urls_in_submission_order_whatever_they_hold(store_factory):
    store = store_factory()
    urls = [
        "http://a.test/z",
        "http://a.test/a",
        'http://b.test/ünï?q="x"',
        "http://a.test/z",
        "http://c.test/\ud800",
    ]
    store.create_batch("b", "order", {}, urls, "2026-11-28T00:00:00.000Z")
    assert store.urls("b") == urls
    assert store.urls("missing") == []
    assert store.delete_batch("b")
    assert not store.delete_batch("b")
    assert store.urls("b") == [] and store.get_batch("b") is None


def test_a_batch_records_the_source_its_urls_came_from_and_a_list_records_none(store_factory):
    store = store_factory()
    source = {"type": "sitemap", "url": "http://a.test/sitemap.xml", "include": None, "exclude": "x", "max_urls": 5}
    store.create_batch("s", "from a sitemap", {}, ["http://a.test/"], "2026-12-06T00:00:00.000Z", source=source)
    store.create_batch("l", "a list", {}, ["http://a.test/"], "2026-12-06T00:00:01.000Z")
    assert store.get_batch("s").source == source
    assert store.get_batch("l").source is None
    assert [record.source for record in store.list_batches(10)] == [None, source]


SPECS = {
    "0": {"expect": {"status": 301}, "meta": {"sku": "A1"}},
    "2": {"checks": [{"source": "size", "op": "<", "value": 9}]},
}


def test_per_row_specs_are_stored_apart_from_the_options_every_listing_reads(store_factory):
    store = store_factory()
    store.create_batch("r", "rows", {"concurrency": 2}, ["http://a.test/"] * 3, CREATED, row_specs=SPECS)
    store.create_batch("p", "plain", {}, ["http://a.test/"], CREATED)
    assert [record.options for record in store.list_batches(10)] == [{}, {"concurrency": 2}]
    assert store.get_batch("r").options == {"concurrency": 2}
    assert (store.row_specs("r"), store.row_specs("p"), store.row_specs("gone")) == (SPECS, None, None)
    assert store.delete_batch("r") and store.row_specs("r") is None


def test_a_batch_stored_with_its_row_specs_in_its_options_still_reads_them(store_factory):
    # Before row_specs had their own table, they were options.rows.
    store = store_factory()
    store.create_batch("old", "old", {"concurrency": 2, "rows": SPECS}, ["http://a.test/"] * 3, CREATED)
    assert store.row_specs("old") == SPECS


def test_opening_a_sqlite_file_moves_row_specs_out_of_the_options_that_held_them(tmp_path):
    path = str(tmp_path / "old.db")
    store = SQLiteStore(path)
    store.create_batch("old", "old", {"concurrency": 2, "rows": SPECS}, ["http://a.test/"] * 3, CREATED)
    store.create_batch("said", "said", {"headers": {"X-Note": '"rows"'}}, ["http://a.test/"], CREATED)
    store.close()
    store = SQLiteStore(path)
    try:
        assert [record.options for record in store.list_batches(10)] == [
            {"headers": {"X-Note": '"rows"'}},
            {"concurrency": 2},
        ]
        assert (store.row_specs("old"), store.row_specs("said")) == (SPECS, None)
    finally:
        store.close()


def test_a_database_from_before_url_lists_keeps_every_batchs_urls_in_order(tmp_path):
    # Earlier versions kept one `urls` row per URL; opening such a file moves them to url_lists.
    path = str(tmp_path / "old.db")
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE urls (batch_id TEXT NOT NULL, idx INTEGER NOT NULL, url TEXT NOT NULL,
                               PRIMARY KEY (batch_id, idx)) WITHOUT ROWID;
        """)
        rows = [("old", i, f"http://a.test/{i}") for i in range(300)] + [("other", 0, "http://b.test/")]
        conn.executemany("INSERT INTO urls VALUES (?, ?, ?)", rows[::-1])  # stored order must not matter
    store = SQLiteStore(path)
    try:
        assert store.urls("old") == [f"http://a.test/{i}" for i in range(300)]
        assert store.urls("other") == ["http://b.test/"]
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "urls" not in tables and "url_lists" in tables


def test_flush_returns_once_what_was_appended_before_it_is_committed_while_other_batches_keep_appending(
    store_factory,
):
    store = store_factory(flush_interval=0.01)
    store.create_batch("b", "mine", {}, ["http://a.test/0"], "2026-11-28T00:00:00.000Z")
    store.create_batch("other", "busy", {}, [], "2026-11-28T00:00:00.000Z")
    feeding = True
    fed = itertools.count(1)

    def feed(_committed) -> None:
        """Another batch's results, arriving with every commit: the buffer is never empty after one."""
        if feeding:
            store.extend([result(seq, seq - 1, "other") for seq in itertools.islice(fed, 10)])

    store.observe_commits(feed)
    try:
        feed([])
        assert store.flush(5)
        store.extend([result(1, 0)])
        assert store.flush(5), "a batch's end waits for its own events, not for a quiet moment"
        assert [e.seq for e in store.stored_events("b")] == [1]
    finally:
        feeding = False


def test_a_url_list_gives_back_each_url_as_given_from_one_buffer_a_fraction_of_the_size_of_a_list():
    urls = [f"http://a.test/{i}" for i in range(10_000)] + ["http://b.test/ünï", "http://c.test/\ud800", ""]
    compact = UrlList.of(urls)
    assert len(compact) == len(urls) and compact == urls and list(compact) == urls
    assert [compact[i] for i in (0, 9_999, 10_000, 10_001, -1)] == [urls[i] for i in (0, 9_999, 10_000, 10_001, -1)]
    assert compact[2:5] == urls[2:5]
    with pytest.raises(IndexError):
        compact[len(urls)]
    ascii_only = UrlList.of(urls[:10_000])  # held as text, not bytes
    assert ascii_only == urls[:10_000] and ascii_only[-1] == urls[9_999]
    for held, given in ((compact, urls), (ascii_only, urls[:10_000])):
        size = sys.getsizeof(held._data) + sys.getsizeof(held._offsets)
        assert size < (sys.getsizeof(given) + sum(sys.getsizeof(u) for u in given)) / 3


def test_a_url_list_is_written_into_its_row_a_piece_at_a_time_and_read_back_as_given(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "BLOB_PIECE", 1_000)  # a hundred pieces
    urls = [f"http://a.test/{i}" for i in range(5_000)] + ["http://b.test/ünï", "http://c.test/\ud800"]
    store = SQLiteStore(str(tmp_path / "gb.db"), flush_interval=0.01)
    try:
        store.create_batch("b", "pieces", {}, UrlList.of(urls), "2026-11-28T00:00:00.000Z")
        (stored,) = store._writer.execute("SELECT urls FROM url_lists WHERE batch_id = 'b'").fetchone()
        assert json.loads(stored) == urls  # the row holds the JSON array and nothing else
        assert store.urls("b") == urls
        # A list an earlier version stored as text reads back as well.
        store._writer.execute("INSERT INTO url_lists (batch_id, urls) VALUES ('old', ?)", (json.dumps(urls),))
        assert store.urls("old") == urls
    finally:
        store.close()
