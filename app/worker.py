"""`gunicorn -k app.worker.Worker -w 1 wsgi:app`: the name README and docs/deploy.md give for app/serve/worker.py."""

from __future__ import annotations

from .serve.worker import Worker

__all__ = ["Worker"]
