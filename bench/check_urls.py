"""What checking a submitted batch's URLs costs the hub: microseconds per URL, and the longest hold.

    python bench/check_urls.py [--repeat 3] [--server]

Each case is a list of distinct URLs as one request body carries them. The figures are the best of
--repeat runs of what app/web/api.py does with a list (guard.all_unchanged over it, then guard.check_url on
each URL when it does not pass as a whole), and the longest stretch in which the checks did not let
other greenlets run (guard.HUB_SLICE). Both are CPU time of this thread (time.thread_time), which other
processes on the machine do not inflate; the turns themselves go by wall time. The hostile cases are
issue 21's: long non-ASCII URLs refused for a character at their end or accepted, hosts too long for
DNS, and thousands of distinct internationalised hosts whose IDNA encoding costs the most per character.

--server also submits each list, its last URL made file:// so that the batch is refused and nothing
is fetched, to a real server (`python wsgi.py`) while another thread asks for /healthz every 10 ms,
and prints how long the submit took and the slowest /healthz meanwhile: how long other requests wait.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.fetch import guard

LONG = 2040  # bytes of UTF-8: 4,900 such URLs make a 10 MB body (GREENBATCH_MAX_REQUEST_BYTES)
# 41 consecutive letters: the longest label of distinct ones that IDNA encodes in 63 characters, and its
# dearest per character (Punycode's work grows with length times distinct code points).
CYRILLIC = "".join(chr(0x430 + i) for i in range(41))


def _padded(prefix: str, filler: str, suffix: str = "") -> str:
    """prefix + filler repeated to about LONG bytes of UTF-8 + suffix."""
    room = int((LONG - len(prefix) - len(suffix.encode())) * len(filler) / len(filler.encode()))
    return prefix + (filler * room)[:room] + suffix


CASES = {
    "plain ASCII, one host (the common batch)": [f"http://127.0.0.1:8080/bytes/1024?i={i}" for i in range(10_000)],
    "plain ASCII, 10,000 distinct hosts": [f"http://host{i}.example/path?i={i}" for i in range(10_000)],
    "4,900 x 2 KB non-ASCII paths, refused (U+200B at the end)": [
        _padded(f"http://example.com/{i}/", "é", "\u200b") for i in range(4_900)
    ],
    "4,900 x 2 KB non-ASCII paths, accepted": [_padded(f"http://example.com/{i}/", "é") for i in range(4_900)],
    "4,900 x 2 KB non-ASCII hosts, refused (too long for DNS)": [
        _padded(f"http://{i}", "ü") + "/" for i in range(4_900)
    ],
    "4,900 x 2 KB hosts of 58-letter labels, refused (too long)": [
        _padded(f"http://{i}", ("ü" * 58 + ".")) + "/" for i in range(4_900)
    ],
    "10,000 IDNA hosts, 3 labels of 35-41 distinct letters, accepted": [
        f"http://{CYRILLIC[:35]}{i}.{CYRILLIC}.{CYRILLIC}.example/" for i in range(10_000)
    ],
}


def check_all(urls: list[str]) -> int:
    """What app.web.api._validate_urls does with a list: one pattern over it, else check_url per URL; refusals."""
    if guard.all_unchanged(urls):
        return 0
    refused = 0
    for url in urls:
        try:
            guard.check_url(url)
        except guard.InvalidUrl:
            refused += 1
    return refused


SLEEP = time.sleep


def measure(urls: list[str], repeat: int) -> tuple[float, float, int]:
    """(best CPU microseconds per URL over `repeat` runs, longest CPU hold between turns in ms, URLs refused)."""
    best, hold, refused = float("inf"), 0.0, 0
    for _ in range(repeat):
        guard._split_netloc.cache_clear()  # each run meets its hosts for the first time, as a new batch would
        turns = [time.thread_time()]
        time.sleep = lambda _seconds, turns=turns: turns.append(time.thread_time())  # the checks' turns
        try:
            refused = check_all(urls)
        finally:
            time.sleep = SLEEP
        turns.append(time.thread_time())
        best = min(best, turns[-1] - turns[0])
        hold = max(hold, max(later - earlier for earlier, later in zip(turns, turns[1:])))
    return best / len(urls) * 1e6, hold * 1000, refused


def submit_while_polling(base_url: str, urls: list[str]) -> tuple[float, float, int]:
    """(seconds the refused submit took, slowest /healthz meanwhile in ms, the submit's status)."""
    session = requests.Session()
    session.trust_env = False
    slowest, done = [0.0], threading.Event()

    def poll() -> None:
        while not done.is_set():
            started = time.perf_counter()
            session.get(base_url + "/healthz", timeout=120)
            slowest[0] = max(slowest[0], time.perf_counter() - started)
            time.sleep(0.01)

    poller = threading.Thread(target=poll)
    poller.start()
    body = json.dumps({"urls": urls[:-1] + ["file:///refused"]}, ensure_ascii=False).encode()
    started = time.perf_counter()
    try:
        status = requests.post(
            base_url + "/api/v1/batches", data=body, timeout=300, headers={"Content-Type": "application/json"}
        ).status_code
    finally:
        took = time.perf_counter() - started
        done.set()
        poller.join()
    return took, slowest[0] * 1000, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--server", action="store_true", help="also submit each list to a real server")
    args = parser.parse_args(argv)
    print(f"{'case':<66} {'us/URL':>8} {'ms/list':>8} {'hold ms':>8} {'refused':>8}")
    for name, urls in CASES.items():
        per_url, hold, refused = measure(urls, args.repeat)
        print(f"{name:<66} {per_url:8.2f} {per_url * len(urls) / 1000:8.1f} {hold:8.1f} {refused:8d}")
    if args.server:
        from bench.procs import Server

        server = Server(target_port=1).start()
        try:
            print(f"\n{'case, submitted to a server':<66} {'submit s':>8} {'healthz':>8} {'status':>8}")
            for name, urls in CASES.items():
                took, slowest, status = submit_while_polling(server.base_url, urls)
                print(f"{name:<66} {took:8.2f} {slowest:6.0f}ms {status:8d}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
