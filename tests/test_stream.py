"""The live event stream over websockets: replay, gap-free order, coalescing, resync, close codes and the gate."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import struct
import time
from typing import Any

import pytest
import websocket
from websocket import ABNF

from app.runs.events import Event
from app.serve.websocket import text_frame
from app.web.stream import events_frame, events_message
from tests.support.server import GreenbatchServer
from tests.support.viewers import Received, connect, receive, watch


def assert_gap_free(seqs: list[int], last: int) -> None:
    """Exactly 1..last, in order."""
    assert seqs == list(range(1, last + 1)), f"{len(seqs)} events, first {seqs[:3]}, last {seqs[-3:]}"


# -- one batch ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_batch(server, target) -> tuple[dict[str, Any], Received]:
    """2,000 quick URLs at concurrency 50, watched from submission to the end."""
    batch = server.submit([target.url("/ok")] * 2000, concurrency=50)
    return batch, watch(server, f"/ws/batches/{batch['id']}")


def test_a_fast_batch_streams_every_event_once_in_seq_order_then_ends_and_closes_1000(fast_batch):
    batch, got = fast_batch
    assert got.messages[0]["type"] == "snapshot" and got.messages[0]["batch"]["id"] == batch["id"]
    end = got.messages[-1]
    assert end["type"] == "end" and end["batch"]["status"] == "done"
    assert_gap_free(got.seqs, end["batch"]["last_seq"])
    results = [e["data"]["index"] for e in got.events if e["type"] == "result"]
    assert sorted(results) == list(range(2000))
    last = got.events[-1]
    assert last["type"] == "batch" and last["data"]["status"] == "done" and last["data"]["counts"]["ok"] == 2000
    assert set(last) == {"seq", "type", "batch_id", "at", "data"}
    assert (got.close_code, got.close_reason) == (1000, "batch finished")


def test_events_are_coalesced_into_at_most_about_twenty_messages_a_second(fast_batch):
    _, got = fast_batch
    frames = [t for m, t in zip(got.messages, got.arrivals) if m["type"] == "events"]
    assert len(frames) * 4 < len(got.events)
    assert len(frames) <= 20 * (frames[-1] - frames[0]) + 3


def test_viewers_of_a_batch_share_the_frame_of_the_same_run_of_events():
    # 200 viewers of one batch send the same runs of events: each run is encoded into a frame once.
    run = [Event("frames1", seq, "result", {"index": seq - 1, "ok": True}) for seq in range(10, 15)]
    frame = events_frame(run)
    assert frame == text_frame(events_message(run))
    assert events_frame(list(run)) is frame, "another viewer's list of the same run reuses the frame"
    assert events_frame(run[1:]) is not frame and events_frame(run[1:]) == text_frame(events_message(run[1:]))
    gap = [run[0], run[2], run[3]]  # not consecutive: never taken for (or mistaken as) a run
    assert events_frame(gap) == text_frame(events_message(gap))


def test_a_finished_batch_replays_from_after_then_ends(server, target):
    batch = server.submit([target.url("/ok")] * 30, concurrency=5)
    final = server.wait(batch["id"])
    got = watch(server, f"/ws/batches/{batch['id']}?after=5")
    assert [m["type"] for m in got.messages][0] == "snapshot"
    assert got.messages[0]["batch"]["status"] == "done"
    assert got.seqs[0] == 6 and got.seqs[-1] == final["last_seq"]
    assert_gap_free(list(range(1, 6)) + got.seqs, final["last_seq"])
    assert got.events[-1]["type"] == "batch" and got.events[-1]["data"]["status"] == "done"
    assert got.messages[-1] == {"type": "end", "batch": final}
    assert got.close_code == 1000

    caught_up = watch(server, f"/ws/batches/{batch['id']}?after={final['last_seq']}")
    assert [m["type"] for m in caught_up.messages] == ["snapshot", "end"]
    assert caught_up.close_code == 1000


def test_two_viewers_at_once_receive_identical_event_streams(server, target):
    batch = server.submit([target.url("/ok")] * 500, concurrency=20)
    first, second = connect(server, f"/ws/batches/{batch['id']}"), connect(server, f"/ws/batches/{batch['id']}")
    got_first, got_second = receive(first), receive(second)
    assert got_first.events == got_second.events
    assert_gap_free(got_first.seqs, got_first.messages[-1]["batch"]["last_seq"])


def test_viewers_joining_at_different_moments_of_a_running_batch_each_get_every_event_once(server, target):
    # Joining viewers share the store's replay pages; each must still see 1..last with no gap or repeat.
    from concurrent.futures import ThreadPoolExecutor

    batch = server.submit([target.url(f"/delay/5?i={i}") for i in range(1500)], concurrency=15)

    def late_viewer(delay: float) -> Received:
        time.sleep(delay)
        return watch(server, f"/ws/batches/{batch['id']}")

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(late_viewer, [0.05 * n for n in range(8)]))
    last = seen[0].messages[-1]["batch"]["last_seq"]
    for got in seen:
        assert got.close_code == 1000 and got.messages[-1]["type"] == "end"
        assert_gap_free(got.seqs, last)
        assert sorted(e["data"]["index"] for e in got.events if e["type"] == "result") == list(range(1500))
    assert all(got.events == seen[0].events for got in seen), "every viewer sees the same events"


def test_client_pings_during_a_busy_stream_are_answered_by_the_one_sender_without_breaking_it(server, target):
    # With the library, a pong written by the reader while the app writes events raised ConcurrentObjectUseError.
    # 20 rounds of 100 ms: the stream stays busy for 2 s (~40 frames) however fast the engine gets.
    batch = server.submit([target.url("/delay/100")] * 1000, concurrency=50)
    ws = connect(server, f"/ws/batches/{batch['id']}", sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    got, pongs = Received(), 0
    try:
        while got.close_code is None:
            ws.ping(b"are you there")
            opcode, frame = ws.recv_data_frame(True)
            if opcode == ABNF.OPCODE_PONG:
                pongs += 1
            elif opcode == ABNF.OPCODE_TEXT:
                got.messages.append(json.loads(frame.data))
            elif opcode == ABNF.OPCODE_CLOSE:
                got.close_code = struct.unpack("!H", frame.data[:2])[0]
    finally:
        ws.shutdown()
    assert got.close_code == 1000 and pongs > 10
    assert_gap_free(got.seqs, got.messages[-1]["batch"]["last_seq"])
    assert "ConcurrentObjectUseError" not in server.log() and "Traceback" not in server.log()


def test_an_unknown_batch_gets_a_not_found_error_and_close_4404(server):
    got = watch(server, "/ws/batches/000000000000")
    assert [m["type"] for m in got.messages] == ["error"]
    assert got.messages[0]["error"]["code"] == "not_found"
    assert got.close_code == 4404


def test_an_after_that_is_not_a_whole_number_gets_close_4400(server, target):
    got = watch(server, "/ws/batches/000000000000?after=-1")
    assert got.messages[0]["error"]["code"] == "invalid_after"
    assert got.close_code == 4400


def test_a_viewer_that_stops_reading_is_closed_4000_resync_and_catches_up_with_after(make_server, target):
    server = make_server(env={"GREENBATCH_WS_QUEUE_EVENTS": "500"})
    # 2,000 events of ~4 KB (long URLs) against a tiny receive buffer: the kernel's socket buffers
    # (4 MiB at most) cannot absorb them, so the server's sender blocks and the viewer's queue overflows.
    urls = [target.url(f"/ok?i={i}&pad={'x' * 1900}") for i in range(2000)]
    batch = server.submit(urls, concurrency=50)
    slow = connect(server, f"/ws/batches/{batch['id']}", sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    try:
        assert json.loads(slow.recv())["type"] == "snapshot"
        deadline = time.monotonic() + 60
        while "closed with 4000 resync" not in server.log():  # not reading meanwhile
            assert time.monotonic() < deadline, "the viewer was never told to resync"
            time.sleep(0.05)
        first = receive(slow)
    finally:
        slow.shutdown()
    assert (first.close_code, first.close_reason) == (4000, "resync")
    assert first.seqs and first.seqs == list(range(1, len(first.seqs) + 1))

    # Catching up, a viewer may be told to resync again (its replay of ~4 MB pages races the live
    # events); each time it reconnects after the last seq it has, as the protocol says, and loses nothing.
    seqs, events = list(first.seqs), list(first.events)
    for _ in range(20):
        rest = watch(server, f"/ws/batches/{batch['id']}?after={seqs[-1]}")
        seqs += rest.seqs
        events += rest.events
        if rest.close_code != 4000:
            break
    assert rest.close_code == 1000
    assert_gap_free(seqs, rest.messages[-1]["batch"]["last_seq"])
    assert sorted(e["data"]["index"] for e in events if e["type"] == "result") == list(range(2000))


# -- every batch ---------------------------------------------------------------------------------


def test_the_batch_list_shows_the_newest_batches_then_each_batch_state_and_progress(server, target):
    older = server.submit([target.url("/delay/1000")], concurrency=1)  # ends while we watch
    ws = connect(server, "/ws/batches")
    try:
        snapshot = json.loads(ws.recv())
        assert snapshot["type"] == "snapshot"
        assert older["id"] in [b["id"] for b in snapshot["batches"]] and len(snapshot["batches"]) <= 50
        batch = server.submit([target.url("/delay/100")] * 75, concurrency=5)  # 1.5 s: at least one progress event
        got = Received()
        while not any(e["batch_id"] == batch["id"] and e["data"].get("status") == "done" for e in got.events):
            ws.settimeout(15)
            opcode, frame = ws.recv_data_frame(False)
            assert opcode != ABNF.OPCODE_CLOSE, f"the list stream closed with {frame.data!r}; it must never end"
            got.messages.append(json.loads(frame.data))
    finally:
        ws.close()
    mine = [e for e in got.events if e["batch_id"] == batch["id"]]
    assert {e["type"] for e in got.events} <= {"batch", "progress"}
    assert [e["data"]["status"] for e in mine if e["type"] == "batch"] == ["queued", "running", "done"]
    assert any(e["type"] == "progress" for e in mine)
    assert [e["seq"] for e in mine] == sorted(e["seq"] for e in mine)
    assert any(e["batch_id"] == older["id"] and e["data"].get("status") == "done" for e in got.events), (
        "another batch ending must not end the list stream"
    )


# -- the websocket itself ------------------------------------------------------------------------


def test_a_client_close_is_answered_with_a_close_frame_carrying_its_code(server):
    ws = connect(server, "/ws/batches")
    try:
        assert json.loads(ws.recv())["type"] == "snapshot"
        ws.send_close(4321, b"bye")
        got = receive(ws)
    finally:
        ws.shutdown()
    assert got.close_code == 4321


def test_an_inbound_frame_declaring_one_gib_is_refused_with_1009_before_its_payload_is_read(server):
    host, port = server.base_url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock, sock.makefile("rb") as reader:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws/batches HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert reader.readline().split()[1] == b"101"
        while reader.readline() not in (b"\r\n", b""):
            pass
        # A text frame header that declares 1 GiB, then only a few bytes of it.
        sock.sendall(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 1 << 30) + os.urandom(4) + b"x" * 16)
        while True:
            first, second = reader.read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", reader.read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", reader.read(8))[0]
            payload = reader.read(length)
            if first & 0x0F == 0x8:
                break
    assert struct.unpack("!H", payload[:2])[0] == 1009
    assert b"65536" in payload[2:]


def test_a_foreign_origin_is_refused_with_403_before_the_upgrade(server):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(server, "/ws/batches", origin="http://evil.example")
    assert refused.value.status_code == 403
    error = json.loads(refused.value.resp_body)["error"]
    assert error["message"] and error["details"] == []


@pytest.fixture(scope="module")
def brisk_server(tmp_path_factory, target_env):
    """A server with a 0.3 s heartbeat and a 1 s idle timeout."""
    instance = GreenbatchServer(
        tmp_path_factory.mktemp("brisk"),
        {**target_env, "GREENBATCH_WS_HEARTBEAT": "0.3", "GREENBATCH_WS_IDLE_TIMEOUT": "1"},
    ).start()
    yield instance
    instance.stop()


def test_heartbeats_arrive_as_ping_messages_and_protocol_pings(brisk_server):
    ws = connect(brisk_server, "/ws/batches")
    try:
        started = time.monotonic()
        got = Received()
        while not (got.of("ping") and got.protocol_pings) and time.monotonic() - started < 5:
            ws.settimeout(5)
            opcode, frame = ws.recv_data_frame(True)
            if opcode == ABNF.OPCODE_PING:
                got.protocol_pings += 1
            elif opcode == ABNF.OPCODE_TEXT:
                got.messages.append(json.loads(frame.data))
    finally:
        ws.close()
    assert got.of("ping") and all(m == {"type": "ping"} for m in got.of("ping")) and got.protocol_pings
    assert time.monotonic() - started < 3  # the default heartbeat would take 20 s


def test_a_client_that_answers_nothing_is_closed_1001_after_the_idle_timeout(brisk_server):
    ws = connect(brisk_server, "/ws/batches")
    try:
        time.sleep(2.5)  # not reading, so not answering pings
        got = receive(ws, until=10)
    finally:
        ws.shutdown()
    assert got.close_code == 1001 and "1 s" in got.close_reason
    assert got.of("ping"), "heartbeats went out while the client was silent"


def test_more_websockets_from_one_address_than_the_limit_are_refused_with_429(make_server):
    server = make_server(env={"GREENBATCH_WS_MAX_PER_CLIENT": "2"})
    first, second = connect(server, "/ws/batches"), connect(server, "/ws/batches")
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            connect(server, "/ws/batches")
        assert refused.value.status_code == 429
        assert json.loads(refused.value.resp_body)["error"]["code"] == "too_many_requests"
        first.close()
        deadline = time.monotonic() + 5
        while True:  # the server frees the slot once the first connection's close handshake is done
            try:
                connect(server, "/ws/batches").close()
                break
            except websocket.WebSocketBadStatusException:
                assert time.monotonic() < deadline, "the slot of a closed websocket was never freed"
                time.sleep(0.05)
    finally:
        first.shutdown()
        second.close()


def test_behind_a_trusted_proxy_the_limit_counts_each_forwarded_client_apart(make_server):
    server = make_server(env={"GREENBATCH_WS_MAX_PER_CLIENT": "1", "GREENBATCH_PROXY_HOPS": "1"})
    alice = connect(server, "/ws/batches", header=["X-Forwarded-For: 203.0.113.7"])
    bob = connect(server, "/ws/batches", header=["X-Forwarded-For: 203.0.113.8"])
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            connect(server, "/ws/batches", header=["X-Forwarded-For: 203.0.113.7"])
        assert refused.value.status_code == 429 and "203.0.113.7" in refused.value.resp_body.decode()
    finally:
        alice.close()
        bob.close()


def test_a_stopping_server_closes_its_websockets_with_1001(make_server):
    server = make_server()
    ws = connect(server, "/ws/batches")
    try:
        assert json.loads(ws.recv())["type"] == "snapshot"
        server.signal(signal.SIGTERM)
        got = receive(ws, until=10)
    finally:
        ws.shutdown()
    assert got.close_code == 1001
