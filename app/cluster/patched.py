"""The rule cluster mode starts with: gevent patches the standard library before psycopg (or redis) is imported."""

from __future__ import annotations

import sys

from gevent import monkey

from ..core.config import ConfigError

HOW_TO_START = (
    "start the web with `python wsgi.py` or `gunicorn -k app.worker.Worker wsgi:app`, and workers with "
    "`python -m app.cluster worker`: each patches first"
)


def require_patched() -> None:
    """ConfigError unless gevent has patched sockets and select, and psycopg (if imported) waits cooperatively.

    psycopg picks how it waits for the server when it is imported: imported before the patch, each query
    blocks every greenlet of the process (every viewer, every fetch) until PostgreSQL answers.
    """
    if not (monkey.is_module_patched("socket") and monkey.is_module_patched("select")):
        raise ConfigError(
            f"cluster mode needs gevent's monkey.patch_all() before anything else is imported: {HOW_TO_START}"
        )
    waiting = sys.modules.get("psycopg.waiting")
    if waiting is not None and getattr(waiting, "wait", None) is getattr(waiting, "wait_c", None):
        raise ConfigError(
            f"psycopg was imported before gevent patched the standard library, so its queries would block every "
            f"greenlet: {HOW_TO_START}"
        )
