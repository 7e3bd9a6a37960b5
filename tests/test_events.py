"""Events' JSON: one encoding shared by the store and every viewer, and nothing an event carries is refused."""
import json

from app.events import Event, compact_json


def test_event_json_is_the_compact_json_of_the_event_with_its_payload_text_as_is():
    data = {"index": 3, "url": "http://example.com/caf\u00e9?q=\"x\"\\", "ok": True, "error": None,
            "timings": {"total": 1.308, "dns": None}, "redirects": [], "by_status": {200: 2}}
    event = Event("0123456789ab", 7, "result", data, at="2026-11-27T22:04:47.809Z")
    assert json.loads(event.json) == {"seq": 7, "type": "result", "batch_id": "0123456789ab",
                                      "at": "2026-11-27T22:04:47.809Z", "data": {**data, "by_status": {"200": 2}}}
    assert event.json.endswith(',"data":' + event.data_json + "}")
    assert event.json == json.dumps(json.loads(event.json), separators=(",", ":"), ensure_ascii=False)  # compact
    assert "\u00e9" in event.data_json, "non-ASCII stays UTF-8 text, as SQLite and websockets carry it"


def test_what_orjson_refuses_falls_back_to_the_standard_library_so_no_event_is_lost():
    lone_surrogate = {"error": {"kind": "other", "message": "bad \ud800 byte"}}
    huge = {"bytes": 2 ** 70}
    for value in (lone_surrogate, huge):
        assert compact_json(value) == json.dumps(value, separators=(",", ":"))
        assert json.loads(Event("b", 1, "result", value).data_json) == value


def test_not_a_number_becomes_null_which_browsers_can_parse():
    assert compact_json({"mean_ms": float("nan")}) == '{"mean_ms":null}'
