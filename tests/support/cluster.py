"""A greenbatch cluster on this machine: web processes and workers on a real PostgreSQL and redis-server.

The end-to-end tests build one with `Cluster`; `make cluster` runs `main()`: PostgreSQL and redis-server
in a temp folder on unix sockets, 2 web processes behind nginx (docs/deploy's files), 2 workers; it prints
the URL and stops everything, by pid, on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from tests.support.nginx import NGINX, Nginx
from tests.support.server import GreenbatchServer
from tests.support.services import Postgres, Redis
from tests.support.workers import ClusterWorker


class Cluster:
    """Web processes and workers sharing one PostgreSQL database and one Redis."""

    def __init__(self, folder: Path, database_url: str, redis_url: str, env: dict[str, str] | None = None):
        self.folder = folder
        self.env = {"GREENBATCH_DATABASE_URL": database_url, "GREENBATCH_REDIS_URL": redis_url, **(env or {})}
        self.webs: list[GreenbatchServer] = []
        self.workers: list[ClusterWorker] = []

    def start_web(self, env: dict[str, str] | None = None, args: list[str] | None = None) -> GreenbatchServer:
        """One more web process (`python wsgi.py`); every web shares one data folder, as on one machine."""
        web = GreenbatchServer(
            self.folder / "data", {**self.env, **(env or {})}, log_name=f"web{len(self.webs) + 1}.log", args=args
        )
        self.webs.append(web)
        return web.start()

    def start_worker(self, threads: int = 2, env: dict[str, str] | None = None) -> ClusterWorker:
        """One more worker (one process running `threads` chunks at once), once it consumes."""
        log = self.folder / f"worker{len(self.workers) + 1}.log"
        worker = ClusterWorker({**self.env, **(env or {})}, log, threads)
        self.workers.append(worker)
        return worker.start().wait_ready()

    def logs(self) -> str:
        """The tail of every process's log, for a failing test's message."""
        parts = [f"--- {web.log_path.name}\n{web.log()[-2000:]}" for web in self.webs]
        parts += [f"--- {worker.log.name}\n{worker.text()[-2000:]}" for worker in self.workers]
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop the web processes, then the workers, by pid."""
        for web in self.webs:
            if web.proc is not None and web.proc.poll() is None:
                web.stop()
        for worker in self.workers:
            worker.stop()


def main(argv: list[str] | None = None) -> int:
    """`make cluster`: a throwaway local cluster until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Run a throwaway greenbatch cluster on this machine until Ctrl-C.")
    parser.add_argument("--webs", type=int, default=2, help="web processes behind nginx (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="chunks each worker runs at once (default 4)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (data and logs) after Ctrl-C")
    args = parser.parse_args(argv)
    if NGINX is None:
        print("make cluster needs nginx (apt-get install nginx)", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="gb-cluster-"))
    os.chmod(folder, 0o755)  # PostgreSQL runs as the postgres user when we are root: it must reach its folder
    (folder / "pg").mkdir()
    (folder / "redis").mkdir()
    started: list = []
    stopping = False

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        print(f"greenbatch cluster: starting PostgreSQL and redis-server in {folder}", flush=True)
        postgres = Postgres(folder / "pg").start()
        started.append(postgres)
        postgres.psql("CREATE DATABASE greenbatch")
        redis = Redis(folder / "redis").start()
        started.append(redis)
        cluster = Cluster(folder, postgres.url("greenbatch"), redis.url, {"GREENBATCH_PROXY_HOPS": "1"})
        started.append(cluster)
        ports = []
        for _ in range(args.webs):
            web = cluster.start_web()
            ports.append(int(web.base_url.rsplit(":", 1)[1]))
        for _ in range(args.workers):
            cluster.start_worker(threads=args.threads)
        nginx = Nginx(folder / "nginx", *ports).start()
        started.append(nginx)
        print(
            f"greenbatch cluster: {args.webs} web processes behind nginx, {args.workers} workers, "
            f"PostgreSQL and Redis on unix sockets in {folder}\n"
            f"  open {nginx.base_url}/dash/\n"
            f"  logs in {folder}; Ctrl-C stops everything",
            flush=True,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stopping = True
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave processes behind
        for part in reversed(started):
            part.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        print("greenbatch cluster: stopped" + ("" if args.keep else f"; removed {folder}"), flush=True)
    return 0 if stopping else 1


if __name__ == "__main__":
    sys.exit(main())
