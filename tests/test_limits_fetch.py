"""Fetch limits against a hostile target: the per-URL deadline, the body cap and decompression bombs,
with the server's memory measured from outside its process."""

from __future__ import annotations

import pytest

from tests.support.memory import peak_rss_during, rss
from tests.support.server import GreenbatchServer, kind_of

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def limited(tmp_path_factory, target, closed_port):
    """A server of our own (so its memory is ours to measure) allowed the target and the closed port."""
    env = {"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{target.port},127.0.0.1:{closed_port}"}
    server = GreenbatchServer(tmp_path_factory.mktemp("limits"), env).start()
    # Warm up: the first fetches import codecs and grow the pools and SQLite's cache; that is not
    # memory a bomb should be blamed for. It also makes the target compress its 200 MiB bomb now.
    server.run_batch(
        [target.url("/ok"), target.url("/gzip?size=1048576"), target.url("/endless"), target.url("/gzip-bomb")],
        max_bytes=2 * MiB,
    )
    yield server
    server.stop()


# ---------------------------------------------------------------------------------------------
# Time: the batch deadline bounds a URL however the target stalls
# ---------------------------------------------------------------------------------------------


def test_a_slow_drip_body_is_cut_at_the_batch_deadline(limited, target):
    # One byte every 0.5 s: each read returns well within the 2 s read timeout, so only the
    # deadline on the whole URL can end it (the body would take 500 s).
    result = limited.fetch_one(target.url("/trickle?bytes=1000&interval=0.5"), timeout=2)
    assert kind_of(result) == "deadline", result
    assert "2 s deadline" in result["error"]["message"]
    assert 2000 <= result["timings"]["total"] < 2500


def test_headers_slower_than_the_deadline_end_deadline(limited, target):
    result = limited.fetch_one(target.url("/slow-headers?delay=5000"), timeout=1)
    assert kind_of(result) == "deadline", result
    assert 1000 <= result["timings"]["total"] < 1500


# ---------------------------------------------------------------------------------------------
# Size and memory: caps hold on decoded bytes, and the server's memory stays flat
# ---------------------------------------------------------------------------------------------


def test_an_endless_body_stops_at_max_bytes_without_growing_memory(limited, target):
    pid = limited.proc.pid
    before = rss(pid)
    peak, results = peak_rss_during(
        pid, lambda: limited.run_batch([target.url("/endless")] * 10, max_bytes=256 * 1024, concurrency=10)
    )
    assert sorted(results) == list(range(10))
    for result in results.values():
        assert kind_of(result) == "too_large", result
        assert "cap of 262144 decoded bytes" in result["error"]["message"]
    # Ten fetches at once, each dropping its connection past 256 KiB: a little buffer and pool
    # memory, nothing that scales with the (endless) body.
    assert peak - before < 4 * MiB, f"RSS {before / MiB:.1f} MiB before, peak {peak / MiB:.1f} MiB"


def test_gzip_bombs_stop_at_the_default_cap_without_inflating_in_memory(limited, target):
    # Each bomb is 203 KB on the wire and 200 MiB decoded; the default cap is 10 MiB. The server
    # counts decoded bytes in 16 KiB steps and keeps none of them, so ten bombs at once should cost
    # buffers and decompressor state, well under 1 MiB here. The bound is one cap (10 MiB): holding
    # even one capped body breaks it, and so does decoding in big steps (16 MiB steps, which is
    # what unbounded decompression of 16 KiB of this bomb amounts to, measured +31 MiB).
    pid = limited.proc.pid
    before = rss(pid)
    peak, results = peak_rss_during(pid, lambda: limited.run_batch([target.url("/gzip-bomb")] * 10, concurrency=10))
    assert sorted(results) == list(range(10))
    for result in results.values():
        assert kind_of(result) == "too_large", result
        assert f"cap of {10 * MiB} decoded bytes" in result["error"]["message"]
    assert peak - before < 10 * MiB, f"RSS {before / MiB:.1f} MiB before, peak {peak / MiB:.1f} MiB"


# ---------------------------------------------------------------------------------------------
# Connection failures: each named for what happened
# ---------------------------------------------------------------------------------------------


def test_a_connection_reset_ends_other_with_a_message_naming_the_reset(limited, target):
    result = limited.fetch_one(target.url("/reset"))
    assert kind_of(result) == "other", result
    assert "reset" in result["error"]["message"]


def test_a_closed_port_that_is_allowed_ends_refused(limited, closed_port):
    result = limited.fetch_one(f"http://127.0.0.1:{closed_port}/", timeout=5)
    assert kind_of(result) == "refused", result
    assert f"127.0.0.1:{closed_port}" in result["error"]["message"]
