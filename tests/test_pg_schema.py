"""The PostgreSQL schema of cluster mode: applied once, in order, by any number of processes starting at once."""

from __future__ import annotations

import ast
import subprocess
import sys

import psycopg

from app.runs.store import pg_schema


def test_an_empty_database_gets_every_migration_and_a_second_run_applies_none(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert pg_schema.current_version(conn) == 0
        assert pg_schema.migrate(conn) == [version for version, _, _ in pg_schema.MIGRATIONS]
        assert pg_schema.current_version(conn) == pg_schema.LATEST
        assert pg_schema.migrate(conn) == []
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"batches", "url_lists", "events", "chunks", "schema_version"} <= tables


def test_processes_starting_at_once_apply_each_migration_exactly_once(pg_url):
    script = (
        "import sys, psycopg; from app.runs.store import pg_schema; "
        "print(pg_schema.migrate(psycopg.connect(sys.argv[1], autocommit=True)))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, pg_url], stdout=subprocess.PIPE, text=True) for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    applied = [version for output in outputs for version in ast.literal_eval(output)]
    assert sorted(applied) == [version for version, _, _ in pg_schema.MIGRATIONS]


def test_a_database_newer_than_this_code_is_refused_with_a_message_saying_so(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pg_schema.migrate(conn)
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (pg_schema.LATEST + 1,))
        try:
            pg_schema.migrate(conn)
        except RuntimeError as exc:
            assert "newer than this greenbatch knows" in str(exc)
        else:
            raise AssertionError("a newer schema was accepted")


def test_a_search_reads_the_text_at_a_key_even_where_postgresql_cannot_read_the_json(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pg_schema.migrate(conn)
        texts = [
            '{"url":"http://a.test/\\"q\\"","final_url":null}',  # JSON: read as JSON, its escapes undone
            '{"url":"http://b.test/x","error":{"message":"odd \\ud800"},"t":NaN}',  # PostgreSQL refuses it
        ]
        read = [
            conn.execute("SELECT json_text_at(%s, 'url'), json_text_at(%s, 'final_url')", (text, text)).fetchone()
            for text in texts
        ]
    assert read == [('http://a.test/"q"', None), ("http://b.test/x", None)]
