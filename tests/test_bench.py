"""The benchmark's own logic (bench/): what it reads off the wire, and the order it measures in."""
from app.events import Event
from app.stream import events_message
from bench.drivers import _HEAD
from bench.run import run_order


def test_the_viewers_driver_reads_every_events_seq_type_and_time_from_the_servers_own_json():
    # The driver scans the server's messages instead of decoding them: if the event head changes
    # shape, this fails here rather than as viewers that silently "miss" every event in make bench.
    events = [Event("0123456789ab", 7, "result", {"index": 0, "error": {"message": 'say "seq":1 {}'}},
                    at="2026-11-28T02:00:00.001Z"),
              Event("0123456789ab", 8, "batch", {"status": "done"}, at="2026-11-28T02:00:00.002Z")]
    heads = _HEAD.findall(events_message(events).encode())
    assert heads == [(b"7", b"result", b"2026-11-28T02:00:00.001Z"), (b"8", b"batch", b"2026-11-28T02:00:00.002Z")]


def test_each_run_measures_a_clients_end_to_end_and_engine_alone_back_to_back_leading_in_turn():
    modes = ["e2e:fast", "e2e:requests", "engine:fast", "engine:requests", "grequests", "threads"]
    assert run_order(modes, 0) == ["e2e:fast", "engine:fast", "e2e:requests", "engine:requests", "grequests", "threads"]
    assert run_order(modes, 1) == ["engine:fast", "e2e:fast", "engine:requests", "e2e:requests", "grequests", "threads"]
    assert run_order(["e2e:fast", "grequests"], 1) == ["e2e:fast", "grequests"]
