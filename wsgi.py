"""Entry point: patch the standard library for gevent first, then build the app.

`python wsgi.py [--host H] [--port P]` serves it; WSGI servers (gunicorn) import `app` from here.
"""

from gevent import monkey

monkey.patch_all()

# Everything below must see the patched standard library.

import argparse
import sys

from app import create_app
from app.core.config import Config, ConfigError
from app.serve.server import configure_logging, listen, serve


def load_config(argv: list[str] | None = None) -> Config:
    """Settings from GREENBATCH_* variables, with --host and --port taking precedence."""
    parser = argparse.ArgumentParser(description="Serve the greenbatch dashboard and API.")
    parser.add_argument("--host", help="address to bind (GREENBATCH_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (GREENBATCH_PORT, default 8000)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    return Config.from_env(**overrides)


if __name__ == "__main__":
    try:
        config = load_config()
        configure_logging(config)
        listener = listen(config)  # first: a taken port must stop us before anything of the data folder is touched
        application = create_app(config)
        sys.exit(serve(application, listener))
    except ConfigError as exc:
        print(f"greenbatch: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)
else:
    try:
        app = create_app()
    except ConfigError as exc:
        print(f"greenbatch: cannot start: {exc}", file=sys.stderr)
        # 3 is gunicorn's "worker failed to boot": it stops, where any other code has it start the worker again.
        raise SystemExit(3) from None
