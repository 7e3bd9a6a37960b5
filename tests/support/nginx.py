"""A real nginx in front of a greenbatch server, configured from docs/deploy (the documented config)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.processes import stop_process

DEPLOY = Path(__file__).resolve().parent.parent.parent / "docs" / "deploy"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx in the foreground with a prefix folder of its own, stopped with SIGQUIT."""

    def __init__(self, folder: Path, upstream_port: int, *more_ports: int):
        """nginx for greenbatch on `upstream_port`; with `more_ports`, for every one of them (cluster mode)."""
        self.folder = folder
        self.port = 0
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        (folder / "temp").mkdir(exist_ok=True)
        os.chmod(folder / "temp", 0o777)
        location = (DEPLOY / "nginx-location.conf").read_text()
        upstream = ""
        if more_ports:
            servers = "".join(f"    server 127.0.0.1:{port};\n" for port in (upstream_port, *more_ports))
            upstream = re.sub(r"(    server [^\n]*\n)+", servers, (DEPLOY / "nginx-upstream.conf").read_text())
            location = location.replace("127.0.0.1:8000", "greenbatch")
        else:
            location = location.replace("127.0.0.1:8000", f"127.0.0.1:{upstream_port}")
        self._config = f"""
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {folder}/logs/access.log;
    client_body_temp_path {folder}/temp/body;
    proxy_temp_path {folder}/temp/proxy;
    fastcgi_temp_path {folder}/temp/fastcgi;
    uwsgi_temp_path {folder}/temp/uwsgi;
    scgi_temp_path {folder}/temp/scgi;
    {(DEPLOY / "nginx-http.conf").read_text()}
    {upstream}
    server {{
        listen 127.0.0.1:{{port}};
        server_name localhost;
        {location}
    }}
}}
"""
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """Where nginx listens."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10, tries: int = 3) -> Nginx:
        """Start nginx on a free port and wait until it listens there; on another port when one was taken between
        free_port() and nginx's bind (up to `tries` ports)."""
        for _ in range(tries):
            self.port = free_port()
            (self.folder / "nginx.conf").write_text(self._config.replace("{port}", str(self.port)))
            if self._started(timeout):
                return self
        raise RuntimeError(f"nginx found each of {tries} free ports taken before it could bind one: {self.error_log()}")

    def _started(self, timeout: float) -> bool:
        """Start nginx and wait until it listens: True; False (it is stopped) when its port was taken meanwhile."""
        pid_file = self.folder / "nginx.pid"
        pid_file.unlink(missing_ok=True)
        (self.folder / "logs" / "error.log").unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                NGINX,
                "-p",
                str(self.folder),
                "-c",
                str(self.folder / "nginx.conf"),
                "-e",
                str(self.folder / "logs" / "error.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Address already in use" in self.error_log():
                stop_process(self.proc, signal.SIGKILL, 10)  # it would retry the bind for 2.5 s, then exit
                return False
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited {self.proc.returncode}: {self.error_log()}")
            # nginx writes its pid file once it has bound its port: only then is whoever answers there nginx.
            if pid_file.exists() and pid_file.read_text().strip() == str(self.proc.pid):
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    return True
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen within {timeout} s: {self.error_log()}")

    def error_log(self) -> str:
        """nginx's error log."""
        path = self.folder / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Graceful stop (SIGQUIT), then kill if it lingers."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGQUIT, 10)
