"""The PostgreSQL store beyond the contract both stores keep (test_store.py, test_results_query.py): where its
queries run under gevent, how it names its database, its time limits, failing commits, results PostgreSQL cannot
read as JSON, and the import of a single-process history."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

psycopg = pytest.importorskip("psycopg")

from app.core.stats import row_of  # noqa: E402 - after the skip: the default mode runs without psycopg
from app.runs.events import Event  # noqa: E402
from app.runs.store import SQLiteStore, StoreError, StoreOpenError  # noqa: E402
from app.runs.store.base import ResultQuery  # noqa: E402
from app.runs.store.pg_import import import_sqlite  # noqa: E402
from app.runs.store.postgres import POSTGRES, PostgresStore  # noqa: E402
from tests.support.events import result_event  # noqa: E402

CREATED = "2026-12-06T00:00:00.000Z"


def run_python(script: str, *args: str) -> dict:
    """Run a script in a fresh interpreter (gevent patching is for the whole process); the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_patched_first_each_query_lets_every_other_greenlet_run_and_viewers_share_reads(pg_url):
    seen = run_python(
        """
        from gevent import monkey

        monkey.patch_all()

        import json, sys, time
        import gevent
        from app.runs.store.postgres import PostgresStore

        store = PostgresStore(sys.argv[1])
        ticks = []
        ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(1000)])
        started = time.monotonic()
        sleeps = [gevent.spawn(store._read, lambda conn: conn.execute("SELECT pg_sleep(0.5)").fetchone()) for _ in range(3)]
        gevent.joinall(sleeps, raise_error=True)
        took = time.monotonic() - started
        ticked = len(ticks)
        ticker.kill()
        store.create_batch("b", "shared", {}, ["http://a.test/"], "2026-12-06T00:00:00.000Z")
        reads = []
        real_read = store._read
        store._read = lambda fn, *args: reads.append(fn) or real_read(fn, *args)
        gevent.joinall([gevent.spawn(store.get_batch, "b", recent=True) for _ in range(50)], raise_error=True)
        store.close()
        print(json.dumps({"threads": store._threads is not None, "took": took, "ticked": ticked, "reads": len(reads)}))
        """,
        pg_url,
    )
    assert not seen["threads"], "patched first: queries run in their greenlets"
    assert seen["took"] < 1.2, "three half-second queries at once, not one after another"
    assert seen["ticked"] >= 20, "the hub kept running while PostgreSQL worked"
    assert seen["reads"] == 1, "50 viewers joining at once make one read"


def test_gevent_patching_after_psycopg_was_imported_is_refused_with_what_to_do(pg_url):
    seen = run_python(
        """
        import json, sys
        import psycopg  # picks its blocking wait now
        from gevent import monkey

        monkey.patch_all()
        from app.runs.store import StoreOpenError
        from app.runs.store.postgres import PostgresStore

        try:
            PostgresStore(sys.argv[1])
        except StoreOpenError as exc:
            print(json.dumps({"refused": str(exc)}))
        else:
            print(json.dumps({"refused": None}))
        """,
        pg_url,
    )
    assert "psycopg was imported before gevent patched the standard library" in seen["refused"]
    assert "patch first" in seen["refused"]


def test_the_default_mode_never_imports_psycopg():
    seen = run_python(
        """
        import json, sys
        import app.runs.services, app.runs.store, app.web.api, app.web.exports, app.web.stream, app.serve.server

        print(json.dumps({"imported": sorted(m for m in sys.modules if m.split(".")[0] in ("psycopg", "psycopg_pool"))}))
        """
    )
    assert seen["imported"] == []


def test_an_unreachable_database_is_named_without_its_password_with_what_to_check(closed_port, postgres):
    with pytest.raises(StoreOpenError) as refused:
        PostgresStore(f"postgresql://gb:s3cret-word@127.0.0.1:{closed_port}/greenbatch")
    message = str(refused.value)
    assert f"postgresql://gb@127.0.0.1:{closed_port}/greenbatch" in message
    assert "GREENBATCH_DATABASE_URL" in message and "s3cret" not in message
    missing = postgres.url("no_such_database")
    with pytest.raises(StoreOpenError, match='database "no_such_database" does not exist'):
        PostgresStore(missing)


def test_a_count_or_a_search_past_its_time_is_cancelled_by_postgresql_and_keeps_what_it_found(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        started = time.monotonic()
        assert POSTGRES.within(conn, 0.2, lambda: conn.execute("SELECT pg_sleep(5)").fetchone()) == (None, False)
        assert time.monotonic() - started < 2
        assert POSTGRES.within(conn, 5, lambda: conn.execute("SELECT 1").fetchone()) == ((1,), True)
        slow = "SELECT g FROM generate_series(1, 1000) AS g, LATERAL (SELECT pg_sleep(0.01) WHERE g > 0) AS s"
        rows, finished = POSTGRES.read_within(conn, 0.5, slow, ())
        assert not finished and 10 <= len(rows) < 1000
        assert [g for (g,) in rows] == list(range(1, len(rows) + 1)), "the rows found before the time ran out"
        assert POSTGRES.read_within(conn, 5, "SELECT g FROM generate_series(1, 25) AS g", ()) == (
            [(g,) for g in range(1, 26)],
            True,
        )
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",), "the limit ends with its read"


def set_read_only(postgres, database: str, read_only: bool) -> None:
    """Make a database take no writes (or take them again), and end its sessions so every new one sees it."""
    postgres.psql(f"ALTER DATABASE {database} SET default_transaction_read_only = {'on' if read_only else 'off'}")
    postgres.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")


def test_commits_that_fail_keep_their_events_and_the_store_says_so_until_one_works(postgres, pg_url):
    store = PostgresStore(pg_url, flush_interval=0.01)
    database = psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"]
    try:
        store.create_batch("b", "kept", {}, ["http://a.test/0", "http://a.test/1"], CREATED)
        assert store.writable() and store.fault() is None
        set_read_only(postgres, database, True)
        store.extend([result_event("b", 1, 0)])
        assert not store.flush(1)
        fault = store.fault()
        assert fault is not None and fault.state == "failing"
        assert store.name in fault.message and "results wait in memory" in fault.message
        assert not store.writable()
        with pytest.raises(StoreError):
            store.create_batch("c", "refused", {}, [], CREATED)
        store.extend([result_event("b", 2, 1)])
        set_read_only(postgres, database, False)
        assert store.flush(10), "the events waiting are committed once PostgreSQL takes writes again"
        assert store.fault() is None and store.writable()
        assert [e.seq for e in store.stored_events("b")] == [1, 2]
    finally:
        set_read_only(postgres, database, False)
        store.close()


def odd_results() -> list[dict]:
    """Results as the engine may store them, some holding what PostgreSQL refuses to read as JSON: a lone
    surrogate in an error message (written as an escape by Python's json, where orjson cannot encode it), and
    with it, in some, an integer beyond 64 bits and NaN."""
    results = []
    for index in range(40):
        result = {
            "index": index,
            "url": f"http://host{index % 3}.test/{index}",
            "final_url": f"http://host{index % 3}.test/{index}",
            "status_code": 200 if index % 4 else 503,
            "ok": bool(index % 4),
            "error": None if index % 4 else {"kind": "status", "message": "503"},
            "bytes": 100 + index,
            "timings": {"total": index / 3, "ttfb": 1e16},
        }
        if index % 5 == 2:
            result["error"] = {"kind": "status", "message": "odd \ud800 text"}
        if index % 10 == 7:
            result["attempts"] = 2**70
            result["timings"]["dns"] = float("nan")
        results.append(result)
    return results


def stored_odd_results(store) -> None:
    """odd_results() as batch b of the store."""
    results = odd_results()
    store.create_batch("b", "odd", {}, [r["url"] for r in results], CREATED)
    store.extend([Event("b", r["index"] + 1, "result", r, row=row_of(r)) for r in results])
    assert store.flush(10)


def test_results_postgresql_cannot_read_as_json_download_as_from_sqlite_and_searches_find_them(pg_url, tmp_path):
    from app.web.exports import chunks

    def downloads(store) -> list[str]:
        return [
            "".join(c if isinstance(c, str) else c.decode() for c in chunks(store, "b", f)) for f in ("csv", "json")
        ]

    sqlite = SQLiteStore(str(tmp_path / "gb.db"), flush_interval=0.01)
    try:
        stored_odd_results(sqlite)
        from_sqlite = downloads(sqlite)
    finally:
        sqlite.close()
    store = PostgresStore(pg_url, flush_interval=0.01)
    try:
        stored_odd_results(store)
        assert downloads(store) == from_sqlite
        # SQLite fails a search that reaches a text holding NaN ("malformed JSON"); PostgreSQL reads the URLs of
        # such texts from the text itself.
        for q in ("host1", "HOST2.test/1"):
            page = store.result_page("b", ResultQuery(q=q, limit=50))
            wanted = [r["index"] for r in odd_results() if q.lower() in r["url"]]
            assert ([r["index"] for r in page.results], page.total) == (wanted, len(wanted)), q
    finally:
        store.close()


# -- import of a single-process history ------------------------------------------------------------------------


def single_process_history(path: str) -> None:
    """A SQLite store as the single process leaves it: a finished batch, a cancelled rerun of it, and one queued."""
    store = SQLiteStore(path, flush_interval=0.01)
    try:
        for batch_id, parent, status, size in (("done", None, "done", 30), ("rerun", "done", "cancelled", 5)):
            results = odd_results()[:size]
            store.create_batch(
                batch_id, f"{batch_id} batch", {"concurrency": 4}, [r["url"] for r in results], CREATED, parent
            )
            events = [Event(batch_id, 1, "batch", {"status": "running", "started_at": CREATED})]
            events += [Event(batch_id, r["index"] + 2, "result", r, row=row_of(r)) for r in results]
            counts = {
                "total": size,
                "pending": 0,
                "waiting": 0,
                "running": 0,
                "ok": size,
                "failed": 0,
                "cancelled": 0,
                "warn": 0,
            }
            final = {"status": status, "finished_at": CREATED, "counts": counts, "stats": {"p50_ms": 1.5}}
            events.append(Event(batch_id, size + 2, "batch", final))
            store.extend(events)
        store.create_batch("waiting", "queued batch", {}, ["http://a.test/"], CREATED)
        assert store.flush(10)
    finally:
        store.close()


def as_read(store, batch_id: str) -> tuple:
    """Everything the API reads of a batch, but its num (each database numbers its own batches)."""
    record = store.get_batch(batch_id)
    record.num = 0
    events = [(e.seq, e.type, e.at, e.data_json) for e in store.stored_events(batch_id, limit=100)]
    pages = [store.result_page(batch_id, ResultQuery(**q)) for q in ({}, {"outcome": "failed"}, {"sort": "latency"})]
    return record, list(store.urls(batch_id)), events, pages, list(store.result_pages(batch_id))


def test_a_single_process_history_imports_once_and_reads_back_the_same_from_postgresql(tmp_path, postgres, pg_url):
    path = str(tmp_path / "greenbatch.db")
    single_process_history(path)
    report = import_sqlite(path, pg_url)
    assert (report.copied, report.unfinished, report.present, report.events) == (["done", "rerun"], ["waiting"], [], 39)
    sqlite, store = SQLiteStore(path), PostgresStore(pg_url)
    try:
        for batch_id in ("done", "rerun"):
            assert as_read(store, batch_id) == as_read(sqlite, batch_id), batch_id
        assert [b.id for b in store.list_batches(10)] == ["rerun", "done"], "newest first, as they were"
        assert store.get_batch("waiting") is None
    finally:
        sqlite.close()
        store.close()
    again = import_sqlite(path, pg_url)
    assert (again.copied, again.present, again.conflicting) == ([], ["done", "rerun"], [])
    database = psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"]
    postgres.psql("UPDATE batches SET name = 'renamed here' WHERE id = 'rerun'", database)
    conflict = import_sqlite(path, pg_url)
    assert (conflict.present, conflict.conflicting) == (["done"], ["rerun"])
    assert "1 conflicting left untouched: rerun" in str(conflict)
    assert postgres.psql("SELECT name FROM batches WHERE id = 'rerun'", database).stdout.strip() == "renamed here"


def test_an_import_names_a_file_it_cannot_read(tmp_path, pg_url):
    with pytest.raises(StoreOpenError, match="does not exist"):
        import_sqlite(str(tmp_path / "missing.db"), pg_url)
    (tmp_path / "notes.db").write_text("not a database, but long enough to hold a header of a hundred bytes " * 3)
    with pytest.raises(StoreOpenError, match="is not a SQLite database"):
        import_sqlite(str(tmp_path / "notes.db"), pg_url)


def test_a_running_cluster_batch_answers_counts_and_statistics_from_its_tally(pg_url):
    import random

    from app.cluster.ledger import Ledger
    from app.core import stats
    from tests.support.ledger_appender import fetched

    store = PostgresStore(pg_url)  # migrates the database the ledger writes
    ledger = Ledger(pg_url)
    try:
        urls = [f"http://h{i % 7}.test/{i}" for i in range(60)]
        ledger.create_batch("c", "cluster", {}, urls, CREATED, None, [list(range(30)), list(range(30, 60))])
        queued = store.get_batch("c")
        assert (queued.status, queued.summary["counts"]["pending"]) == ("queued", 60)
        ledger.claim("c", 0)
        rng = random.Random(16)
        recorded = [fetched(index, rng) for index in range(25)]
        ledger.append("c", recorded)
        tally = stats.Tally()
        for _, _, row in recorded:
            tally.add(row)
        for record in (store.get_batch("c"), store.list_batches(1)[0]):
            assert record.status == "running"
            assert record.summary["counts"] == tally.counts(60)
            assert {k: v for k, v in record.summary["stats"].items() if k != "urls_per_s"} == tally.summary()
            assert record.summary["stats"]["urls_per_s"] > 0, "since the first claim, by the database's clock"
        rest = [fetched(index, rng) for index in range(25, 60)]
        ledger.append("c", rest)
        final = [e for e in store.stored_events("c") if e.type == "batch"][-1].data
        done = store.get_batch("c")
        assert done.status == "done" and done.summary == {"counts": final["counts"], "stats": final["stats"]}
    finally:
        ledger.close()
        store.close()
