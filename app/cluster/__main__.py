"""`python -m app.cluster worker|migrate|import-sqlite`: cluster mode's commands (docs/deploy.md).

python -m app.cluster worker --processes P --threads T   Dramatiq's gevent worker on app.cluster.actors
python -m app.cluster migrate                            create or upgrade the PostgreSQL schema
python -m app.cluster import-sqlite DATA_DIR/greenbatch.db  copy a one-process history into PostgreSQL
"""

from gevent import monkey

monkey.patch_all()

# Everything below must see the patched standard library: psycopg chooses its wait function when imported,
# redis and Dramatiq their sockets and threads; each is imported below, after the patch.

import argparse
import importlib
import os
import sys
from pathlib import Path

from ..core.config import Config, ConfigError, env_name

ROOT = Path(__file__).resolve().parents[2]  # the checkout: Dramatiq imports app.cluster.actors from here
BROKER = "app.cluster.actors:broker"
# Seconds Dramatiq waits, on SIGTERM, for running chunks to return: they finish fetches in flight within
# runner.STOP_GRACE, commit, and send the rest again; whatever is still unacked after this is requeued when
# the process's heartbeat times out.
SHUTDOWN_TIMEOUT = 30


def worker(processes: int, threads: int, verbose: int) -> int:
    """Run Dramatiq's worker (P processes of T greenlets each) on the chunk actor, as `dramatiq-gevent` would."""
    if not monkey.is_module_patched("socket"):
        raise RuntimeError("gevent must patch the standard library before psycopg, redis and dramatiq are imported")
    from dramatiq.cli import main, make_argument_parser

    argv = [BROKER, "--processes", str(processes), "--threads", str(threads), "--path", str(ROOT)]
    argv += ["--worker-shutdown-timeout", str(SHUTDOWN_TIMEOUT * 1000)] + ["--verbose"] * verbose
    parsed = make_argument_parser().parse_args(argv)  # type: ignore[no-untyped-call]  # Dramatiq's CLI is not annotated
    result: int = main(parsed)  # type: ignore[no-untyped-call]
    return result


def migrate(config: Config) -> int:
    """Bring the PostgreSQL schema up to date; say which migrations ran."""
    import psycopg

    from ..runs.store.pg_schema import LATEST
    from ..runs.store.pg_schema import migrate as apply

    with psycopg.connect(config.database_url, autocommit=True) as conn:
        applied = apply(conn)
    if applied:
        print(f"database schema: applied {', '.join(map(str, applied))}; now at version {LATEST}")
    else:
        print(f"database schema: already at version {LATEST}")
    return 0


def import_sqlite(config: Config, path: str) -> int:
    """Copy a one-process history (its greenbatch.db) into PostgreSQL; say what was copied."""
    from ..runs.store.base import StoreOpenError

    try:  # app/runs/store/pg_import.py, PostgresStore's helper (by name: it lands with the PostgreSQL store)
        module = importlib.import_module("app.runs.store.pg_import")
    except ModuleNotFoundError as exc:
        if exc.name != "app.runs.store.pg_import":
            raise
        print("greenbatch: import-sqlite is not available in this version", file=sys.stderr)
        return 2
    try:
        print(module.import_sqlite(path, config.database_url))
    except StoreOpenError as exc:
        print(f"greenbatch: cannot import: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command."""
    parser = argparse.ArgumentParser(prog="python -m app.cluster", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("worker", help="run cluster workers (Dramatiq's gevent worker) on this machine")
    run.add_argument(
        "--processes", "-p", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPUs)"
    )
    run.add_argument("--threads", "-t", type=int, default=8, help="chunks each process runs at once (default: 8)")
    run.add_argument("--verbose", "-v", action="count", default=0, help="more log output (Dramatiq's)")
    commands.add_parser("migrate", help="create or upgrade the PostgreSQL schema")
    copy = commands.add_parser("import-sqlite", help="copy a one-process history (greenbatch.db) into PostgreSQL")
    copy.add_argument("path", help="the SQLite file of a one-process greenbatch (its data folder's greenbatch.db)")
    args = parser.parse_args(argv)
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"greenbatch: cannot start: {exc}", file=sys.stderr)
        return 2
    if not config.cluster:
        print(
            f"greenbatch: cluster commands need {env_name('database_url')} and {env_name('redis_url')} set",
            file=sys.stderr,
        )
        return 2
    if args.command == "worker":
        if args.processes < 1 or args.threads < 1:
            parser.error("--processes and --threads must be at least 1")
        migrate(config)  # a worker may start before any web process: claims need the tables
        return worker(args.processes, args.threads, args.verbose)
    if args.command == "migrate":
        return migrate(config)
    return import_sqlite(config, args.path)


if __name__ == "__main__":
    sys.exit(main())
