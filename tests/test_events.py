"""Events: one JSON encoding shared by the store and every viewer, nothing refused, and the bus that numbers and hands them on."""

import json

import gevent
import pytest

from app.core.jsonutil import compact_json
from app.runs.events import Event, EventBus


def test_event_json_is_the_compact_json_of_the_event_with_its_payload_text_as_is():
    data = {
        "index": 3,
        "url": 'http://example.com/caf\u00e9?q="x"\\',
        "ok": True,
        "error": None,
        "timings": {"total": 1.308, "dns": None},
        "redirects": [],
        "by_status": {200: 2},
    }
    event = Event("0123456789ab", 7, "result", data, at="2026-11-27T22:04:47.809Z")
    assert json.loads(event.json) == {
        "seq": 7,
        "type": "result",
        "batch_id": "0123456789ab",
        "at": "2026-11-27T22:04:47.809Z",
        "data": {**data, "by_status": {"200": 2}},
    }
    assert event.json.endswith(',"data":' + event.data_json + "}")
    assert event.json == json.dumps(json.loads(event.json), separators=(",", ":"), ensure_ascii=False)  # compact
    assert "\u00e9" in event.data_json, "non-ASCII stays UTF-8 text, as SQLite and websockets carry it"


def test_what_orjson_refuses_falls_back_to_the_standard_library_so_no_event_is_lost():
    lone_surrogate = {"error": {"kind": "other", "message": "bad \ud800 byte"}}
    huge = {"bytes": 2**70}
    for value in (lone_surrogate, huge):
        assert compact_json(value) == json.dumps(value, separators=(",", ":"))
        assert json.loads(Event("b", 1, "result", value).data_json) == value


def test_keys_that_are_not_strings_are_written_as_strings_as_the_standard_library_writes_them():
    value = {"status_codes": {200: 3, 404: 1}, "ok": True}
    assert (
        compact_json(value)
        == json.dumps(value, separators=(",", ":"))
        == '{"status_codes":{"200":3,"404":1},"ok":true}'
    )


def test_not_a_number_becomes_null_which_browsers_can_parse():
    assert compact_json({"mean_ms": float("nan")}) == '{"mean_ms":null}'


class Sink:
    """The store's side of the bus: the lists it was handed, in order, committed at once unless told to hold."""

    def __init__(self, hold: bool = False):
        self.lists: list[list[Event]] = []
        self.held: list[Event] = []
        self.hold = hold
        self.observers = []

    def extend(self, events: list[Event]) -> None:
        self.lists.append(list(events))
        self.held.extend(events)
        if not self.hold:
            self.commit()

    def observe_commits(self, observer) -> None:
        self.observers.append(observer)

    def commit(self) -> None:
        committed, self.held = self.held, []
        for observer in self.observers:
            observer(committed)


def seqs(lists: list[list[Event]]) -> list[list[tuple[str, int]]]:
    return [[(event.batch_id, event.seq) for event in events] for events in lists]


def test_results_of_one_turn_of_the_loop_reach_the_store_and_viewers_as_one_list_per_batch_in_seq_order():
    sink, viewer, tap = Sink(), [], []
    bus = EventBus(sink)
    bus.open("a")
    bus.open("b", last_seq=40)  # a resumed batch numbers on from its stored events
    bus.subscribe("a", viewer.append)
    bus.tap(tap.append)
    bus.emit("a", "batch", {"status": "running"})
    for index in range(3):
        bus.result("a", {"index": index, "ok": True}, None)
    bus.result("b", {"index": 0, "ok": True}, None)
    assert seqs(viewer) == [[("a", 1)]], "results wait for the end of the turn"
    gevent.sleep(0)  # one turn of the loop
    assert seqs(viewer) == [[("a", 1)], [("a", 2), ("a", 3), ("a", 4)]]
    assert seqs(sink.lists) == seqs(tap) == [[("a", 1)], [("a", 2), ("a", 3), ("a", 4)], [("b", 41)]]
    assert [event.data["index"] for event in sink.lists[1]] == [0, 1, 2]
    assert bus.last_seq("a") == 4 and bus.last_seq("b") == 41


def test_an_event_emitted_after_queued_results_goes_after_them_at_once():
    sink, everything = Sink(), []
    bus = EventBus(sink)
    bus.open("a")
    bus.subscribe(None, everything.append)  # the all-batches view: state changes and progress, no results
    bus.result("a", {"index": 0, "ok": True}, None)
    bus.result("a", {"index": 1, "ok": False}, None)
    bus.emit("a", "batch", {"status": "done"})
    assert seqs(sink.lists) == [[("a", 1), ("a", 2)], [("a", 3)]]
    assert seqs(everything) == [[("a", 3)]]
    gevent.sleep(0)
    assert len(sink.lists) == 2, "nothing is handed on twice"


def test_a_broken_listener_stops_neither_the_batch_nor_the_other_listeners():
    sink, viewer = Sink(), []
    bus = EventBus(sink)
    bus.open("a")

    def broken(events):
        raise RuntimeError("viewer bug")

    bus.subscribe("a", broken)
    bus.subscribe("a", viewer.append)
    bus.result("a", {"index": 0, "ok": True}, None)
    bus.flush()  # what a shutdown does before closing the store: no waiting for the turn
    assert seqs(viewer) == seqs(sink.lists) == [[("a", 1)]]


def test_a_result_for_a_batch_the_bus_does_not_number_fails_at_once():
    bus = EventBus(Sink())
    with pytest.raises(KeyError, match="not open"):
        bus.result("nobody", {"index": 0, "ok": True}, None)


def test_viewers_see_an_event_only_once_it_is_committed_so_a_crash_cannot_reuse_a_seq_they_saw():
    sink, viewer, everything, tap = Sink(hold=True), [], [], []
    bus = EventBus(sink)
    bus.open("a")
    bus.open("b")
    bus.subscribe("a", viewer.append)
    bus.subscribe(None, everything.append)
    bus.tap(tap.append)
    bus.emit("a", "batch", {"status": "running"})
    bus.result("a", {"index": 0, "ok": True}, None)
    bus.emit("b", "batch", {"status": "running"})
    assert viewer == [] and everything == [], "nothing reaches a viewer before the store commits it"
    assert seqs(tap) == [[("a", 1)], [("a", 2)], [("b", 1)]], "taps (metrics) count events as they are numbered"
    sink.commit()  # one commit holding events of two batches
    assert seqs(viewer) == [[("a", 1), ("a", 2)]]
    assert seqs(everything) == [[("a", 1)], [("b", 1)]], "the all-batches view gets state changes, no results"
