"""CPU per URL of candidate HTTP clients in one gevent process: the measurement behind the `fast` client.

    .venv/bin/python bench/clients.py [requests urllib3 geventhttpclient fast]

Each client fetches 5,000 x /bytes/1024 from the target (tests/support/target.py, its own process) at
concurrency 50 after 200 warm-up requests, three times; it prints URLs/s (noisy on a shared machine)
and this process's CPU per URL (user + system, the stable number).
"""

from gevent import monkey

monkey.patch_all()

import resource
import sys
import time
from pathlib import Path

from gevent.pool import Pool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.target import start_target

N, CONCURRENCY, CHUNK = 5000, 50, 16 * 1024


def measure(name: str, fetch, urls: list[str]) -> None:
    """Fetch every URL at the concurrency and print throughput and CPU per URL."""
    for url in urls[:200]:
        fetch(url)
    pool = Pool(CONCURRENCY)
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for url in urls:
        pool.spawn(fetch, url)
    pool.join()
    after, seconds = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(f"{name:17s} {len(urls) / seconds:7,.0f} URLs/s  {cpu / len(urls) * 1000:.3f} ms CPU/URL", flush=True)


def clients(target) -> dict:
    """One fetch function per client, each reading and counting the whole body."""
    import requests
    import urllib3
    from geventhttpclient import HTTPClient

    from app.fetch import guard
    from app.fetch.fast_client import FastTransport

    session = requests.Session()
    session.trust_env = False
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=CONCURRENCY))

    def with_requests(url: str) -> int:
        response = session.get(url, stream=True)
        size = sum(len(chunk) for chunk in response.raw.stream(CHUNK, decode_content=True))
        response.close()
        return size

    pool = urllib3.HTTPConnectionPool("127.0.0.1", target.port, maxsize=CONCURRENCY)

    def with_urllib3(url: str) -> int:
        response = pool.request("GET", url[len(target.base_url) :], preload_content=False, retries=False)
        size = sum(len(chunk) for chunk in response.stream(CHUNK, decode_content=True))
        response.release_conn()
        return size

    client = HTTPClient("127.0.0.1", target.port, concurrency=CONCURRENCY)

    def with_geventhttpclient(url: str) -> int:
        response = client.get(url[len(target.base_url) :])
        size = 0
        while chunk := response.read(CHUNK):
            size += len(chunk)
        response.release()
        return size

    policy = guard.Policy.from_settings(False, f"127.0.0.1:{target.port}", "")
    transport = FastTransport(CONCURRENCY, lambda host, port: guard.resolve(host, port, policy))

    def with_fast(url: str) -> int:
        return transport.fetch(
            url, method="GET", headers={}, connect_timeout=5, read_timeout=5, max_bytes=10 * 1024 * 1024
        ).bytes

    return {
        "requests": with_requests,
        "urllib3": with_urllib3,
        "geventhttpclient": with_geventhttpclient,
        "fast": with_fast,
    }


def main() -> int:
    """Measure the clients named on the command line (all by default)."""
    target = start_target(quiet=True)
    try:
        fetchers = clients(target)
        urls = [target.url(f"/bytes/1024?i={i}") for i in range(N)]
        for name in sys.argv[1:] or list(fetchers):
            for _ in range(3):
                measure(name, fetchers[name], urls)
    finally:
        target.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
