"""Fixtures for the real parts: the greenbatch server in a subprocess and the HTTP target it fetches from.

The pytest process itself is never monkey-patched; only the server subprocess is, by wsgi.py. The
helpers behind the fixtures live in tests/support/, which test modules (and bench/) import.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.receiver import Receiver
from tests.support.server import CHROMIUM, CHROMIUM_ARGS, GreenbatchServer
from tests.support.services import Postgres, Redis
from tests.support.target import start_target

# A suite started in the background by a shell without job control (`make test &`, nohup) ignores SIGINT, and an
# ignored signal stays ignored in every process it starts: the tests that stop the server, the CLI or
# `make cluster` with Ctrl-C would then wait for an exit that never comes.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def closed_port():
    """An allowed loopback port where nothing listens: bound but never listening, so connects are refused
    and nothing else can take the port while the module runs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture(scope="module")
def receiver():
    """A webhook receiver (tests/support/receiver.py, a real HTTP server on 127.0.0.1) a server may post to."""
    instance = Receiver()
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def target():
    """The real HTTP target server (tests/support/target.py) on 127.0.0.1."""
    process = start_target()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def target_env(target) -> dict[str, str]:
    """Settings that let the server reach the target's port and no other loopback port."""
    return {"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{target.port}"}


@pytest.fixture
def make_server(tmp_path, target_env):
    """A factory for servers with their own data folder; every server started is stopped afterwards."""
    started: list[GreenbatchServer] = []

    def make(env: dict[str, str] | None = None, data_dir: Path | None = None, **kwargs: Any) -> GreenbatchServer:
        server = GreenbatchServer(data_dir or tmp_path / f"data{len(started)}", {**target_env, **(env or {})}, **kwargs)
        started.append(server)
        return server.start()

    yield make
    hung = []
    for server in started:  # stop them all, then report the first that would not stop on SIGTERM
        try:
            server.stop()
        except AssertionError as exc:
            hung.append(exc)
    if hung:
        raise hung[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory, target_env):
    """One shared server for tests that do not restart it."""
    instance = GreenbatchServer(tmp_path_factory.mktemp("gb"), target_env).start()
    yield instance
    instance.stop()


# -- the browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Playwright's sync API; skips when Chromium or Playwright is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _tab(browser, **context_options):
    """A fresh context and page; an uncaught script error fails the test that caused it."""
    context = browser.new_context(**context_options)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    script_errors: list[str] = []
    tab.on("pageerror", lambda error: script_errors.append(str(error)))
    yield tab
    context.close()
    assert not script_errors, f"the page threw: {script_errors}"


@pytest.fixture
def page(browser):
    """A fresh page at 1280x800, a desktop window."""
    yield from _tab(browser, viewport={"width": 1280, "height": 800})


@pytest.fixture
def phone(browser):
    """A fresh page at 390x844, a phone: touch, and a mobile viewport."""
    yield from _tab(browser, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/support/services.py), on a unix socket in a temp folder."""
    folder = Path(tempfile.mkdtemp(prefix="gb-pg-"))  # under /tmp: the postgres user must reach it
    server = Postgres(folder).start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(postgres) -> str:
    """A fresh, empty PostgreSQL database for one test, as a libpq URL."""
    return postgres.new_database()


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server for the session, on a unix socket in a temp folder, no persistence."""
    folder = Path(tempfile.mkdtemp(prefix="gb-redis-"))
    server = Redis(folder).start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def ledger(pg_url):
    """The cluster's ledger (app/cluster/ledger.py) on a fresh, migrated database."""
    psycopg = pytest.importorskip("psycopg")
    from app.cluster.ledger import Ledger
    from app.runs.store import pg_schema

    with psycopg.connect(pg_url, autocommit=True) as conn:
        pg_schema.migrate(conn)
    instance = Ledger(pg_url)
    yield instance
    instance.close()


# -- stores of each kind ----------------------------------------------------------------------------

STORE_KINDS = ["sqlite", "postgres"]


def _store_maker(kind: str, folder: Path, request: pytest.FixtureRequest):
    """Open empty stores of one kind (a SQLite file each, or a fresh PostgreSQL database each); close them after.

    The pytest process is not patched, so the PostgreSQL store runs its queries on threads, as SQLite's does.
    """
    opened: list[Any] = []

    def make(**options: Any) -> Any:
        if kind == "sqlite":
            from app.runs.store import SQLiteStore

            store = SQLiteStore(str(folder / f"gb{len(opened)}.db"), **options)
        else:
            pytest.importorskip("psycopg")
            from app.runs.store.postgres import PostgresStore

            url = request.getfixturevalue("postgres").new_database()
            store = PostgresStore(url, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture(params=STORE_KINDS)
def store_factory(request, tmp_path):
    """A factory of empty stores, run once with SQLite's and once with PostgreSQL's: the store's contract."""
    yield from _store_maker(request.param, tmp_path, request)


@pytest.fixture(scope="module", params=STORE_KINDS)
def module_store_factory(request, tmp_path_factory):
    """store_factory for a module's shared fixtures."""
    yield from _store_maker(request.param, tmp_path_factory.mktemp(request.param), request)
