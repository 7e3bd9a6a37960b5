"""Checks on the response: each source and op, a check that cannot be evaluated, bad checks refused by index and
field, and a catastrophic regular expression that cannot stall the hub."""

from __future__ import annotations

import json
import threading
import time

import pytest

from app.core import checks as checks_module
from app.core.checks import (
    CHECK_BUDGET,
    CHECK_BUDGET_SPENT,
    DEFAULT_CHECK_BYTES,
    JSON_WALK_BYTES,
    JSON_WALK_NODES,
    MAX_CHECK_BYTES,
    REGEX_TIMEOUT,
    WALKED_TOO_FAR,
    parse_checks,
    run,
)
from app.core.config import Config
from app.core.lru import LRU
from app.core.options import BatchOptions
from app.core.results import Result
from app.core.verdict import evaluate
from tests.support.server import error_of

HTML = b"<html><button>Add to cart</button></html>"
JSON = b'{"items": [{"id": 1, "price": 12.5}], "status": "ok"}'


def failures(raw: list[dict], body: bytes | None = HTML, headers=None, timings=None, size=100, ctype="text/html"):
    """The rules of the checks that fail on this response."""
    checks, problems = parse_checks(raw, "options.checks")
    assert problems == []
    reasons = run(checks, 0, body, headers or {}, timings or {"total": 80.0, "ttfb": 20.0}, size, ctype)
    return [(r["rule"], r["actual"]) for r in reasons]


def test_body_checks_search_the_decoded_text():
    assert failures([{"source": "body", "op": "contains", "value": "Add to cart"}]) == []
    assert failures([{"source": "body", "op": "not_contains", "value": "Sold out"}]) == []
    assert failures([{"source": "body", "op": "matches", "value": r"Add\s+to\s+cart"}]) == []
    assert failures([{"source": "body", "op": "contains", "value": "Sold out"}]) == [
        ("check[0]", "not found in the body")
    ]


def test_json_checks_read_a_jsonpath_and_fail_when_the_body_is_not_json():
    ok = [
        {"source": "json", "path": "$.status", "op": "==", "value": "ok"},
        {"source": "json", "path": "$.items[0].price", "op": "<", "value": 20},
        {"source": "json", "path": "$.items[0].id", "op": "exists"},
        {"source": "json", "path": "$.status", "op": "!=", "value": "down"},
    ]
    assert failures(ok, body=JSON, ctype="application/json") == []
    assert failures([{"source": "json", "path": "$.items[0].price", "op": ">", "value": 20}], body=JSON) == [
        ("check[0]", "12.5")
    ]
    assert failures([{"source": "json", "path": "$.missing", "op": "exists"}], body=JSON) == [("check[0]", "no match")]
    assert failures([{"source": "json", "path": "$.status", "op": "==", "value": "ok"}]) == [
        ("check[0]", "the body is not JSON")
    ]


@pytest.mark.parametrize(
    ("found", "value", "equal"),
    [
        (1, True, False),
        (0, False, False),
        (True, 1, False),
        (1.0, 1, True),
        (True, True, True),
        ([1, 0], [True, False], False),
        ({"on": 1}, {"on": True}, False),
        ({"on": [1, "a"]}, {"on": [1.0, "a"]}, True),
        ([], {}, False),
        (None, False, False),
    ],
)
def test_json_equality_tells_true_and_false_from_numbers_at_any_depth(found, value, equal):
    body = json.dumps({"a": found}).encode()
    checks = [{"source": "json", "path": "$.a", "op": op, "value": value} for op in ("==", "!=")]
    assert [rule for rule, _ in failures(checks, body=body)] == (["check[1]"] if equal else ["check[0]"])


def test_a_json_body_nested_deeper_than_json_reads_is_not_json_not_a_crash():
    deep = b"[" * 200_000  # a target's answer; json.loads would raise RecursionError
    assert failures([{"source": "json", "path": "$.a", "op": "exists"}], body=deep) == [
        ("check[0]", "the body is not JSON")
    ]


def test_header_time_size_and_content_type_checks():
    headers = {"x-shop": "demo"}
    assert failures([{"source": "header", "name": "x-shop", "op": "==", "value": "demo"}], headers=headers) == []
    assert failures([{"source": "header", "name": "x-cache", "op": "==", "value": "HIT"}]) == [
        ("check[0]", "the header is missing")
    ]
    assert failures([{"source": "header", "name": "x-cache", "op": "absent"}]) == []
    assert failures([{"source": "time.total", "op": "<", "value": 50}]) == [("check[0]", "80.0 ms")]
    assert failures([{"source": "time.ttfb", "op": "<=", "value": 20}]) == []
    assert failures([{"source": "time.dns", "op": "<", "value": 5}])[0][1].startswith("not measured")
    assert failures([{"source": "size", "op": ">", "value": 100}]) == [("check[0]", "100 bytes")]
    assert (
        failures([{"source": "content_type", "op": "==", "value": "text/html"}], ctype="text/html; charset=utf-8") == []
    )


@pytest.mark.parametrize(
    ("check", "field"),
    [
        ({"source": "bodyy", "op": "contains", "value": "x"}, "options.checks[1].source"),
        ({"source": "body", "op": "==", "value": "x"}, "options.checks[1].op"),
        ({"source": "body", "op": "matches", "value": "(unclosed"}, "options.checks[1].value"),
        ({"source": "json", "op": "exists", "path": "$[?"}, "options.checks[1].path"),
        ({"source": "header", "op": "present"}, "options.checks[1].name"),
        ({"source": "time.total", "op": "<", "value": "fast"}, "options.checks[1].value"),
        ({"source": "size", "op": "<", "value": 5, "max_bytes": 100}, "options.checks[1].max_bytes"),
        (
            {"source": "body", "op": "contains", "value": "x", "max_bytes": MAX_CHECK_BYTES + 1},
            "options.checks[1].max_bytes",
        ),
    ],
)
def test_a_bad_check_is_refused_naming_its_index_and_field(check, field):
    _, problems = parse_checks([{"source": "body", "op": "contains", "value": "ok"}, check], "options.checks")
    assert [p["field"] for p in problems] == [field]


def test_a_catastrophic_pattern_is_cut_off_and_not_run_again():
    check = [{"source": "body", "op": "matches", "value": r"(x+x+)+y"}]
    started = time.thread_time()  # CPU time: a search burns it, a loaded machine's waits do not
    first = failures(check, body=b"x" * 5000)
    took = time.thread_time() - started
    assert first[0][1].startswith("the pattern took more than")
    assert took < 20 * REGEX_TIMEOUT, f"a search ran {took:.2f} s"
    started = time.thread_time()
    assert failures(check, body=b"x" * 5000) == first
    assert time.thread_time() - started < REGEX_TIMEOUT / 2, "a pattern that ran out of time once is not run again"


def test_a_body_check_searches_only_its_max_bytes_of_the_body_and_says_so():
    body = b"a" * DEFAULT_CHECK_BYTES + b"Add to cart"
    contains = {"source": "body", "op": "contains", "value": "Add to cart"}
    [(_, actual)] = failures([contains], body=body)
    assert (
        actual == f"not found in the body (its first {DEFAULT_CHECK_BYTES} of {len(body)} bytes: the check's max_bytes)"
    )
    assert failures([{**contains, "max_bytes": len(body)}], body=body) == []
    assert failures([{"source": "body", "op": "matches", "value": "cart$", "max_bytes": len(body)}], body=body) == []


def test_a_not_contains_check_that_held_on_part_of_a_longer_body_warns_that_only_its_max_bytes_were_searched():
    body = b"a" * DEFAULT_CHECK_BYTES + b"Sold out"
    not_contains = {"source": "body", "op": "not_contains", "value": "Sold out"}

    def judged(check: dict) -> tuple[str, list[dict]]:
        checks, _ = parse_checks([check], "options.checks")
        result = Result(index=0, url="https://shop.test/p", status_code=200, content_type="text/html", ok=True)
        outcome, _, warnings = evaluate(result, {}, BatchOptions.defaults(Config()), None, "exact", None, checks, body)
        return outcome, warnings

    assert judged(not_contains) == (
        "warn",
        [
            {
                "kind": "partial_check",
                "evidence": 'check[0] body not contains "Sold out": searched its first '
                f"{DEFAULT_CHECK_BYTES} of {len(body)} bytes (the check's max_bytes)",
            }
        ],
    )
    assert judged({**not_contains, "max_bytes": len(body)})[0] == "failed", "the whole body read: found"
    assert judged({**not_contains, "value": "Add to cart", "max_bytes": len(body)}) == ("ok", [])


def test_a_json_check_fails_unparsed_on_a_body_longer_than_its_max_bytes():
    body = b'{"pad": "' + b"x" * DEFAULT_CHECK_BYTES + b'", "stock": 3}'
    check = {"source": "json", "path": "$.stock", "op": "==", "value": 3}
    assert failures([check], body=body) == [
        (
            "check[0]",
            f"the body has {len(body)} bytes, more than the {DEFAULT_CHECK_BYTES} a json check parses (its max_bytes)",
        )
    ]
    assert failures([{**check, "max_bytes": MAX_CHECK_BYTES}], body=body) == []


def test_the_patterns_remembered_as_slow_are_bounded_the_oldest_forgotten(monkeypatch):
    monkeypatch.setattr(checks_module, "_SLOW", LRU(2))
    patterns = [r"(x+x+)+y", r"(x+x+)+z", r"(xx+x+)+y"]
    for pattern in patterns:
        failures([{"source": "body", "op": "matches", "value": pattern}], body=b"x" * 5000)
    assert len(checks_module._SLOW) == 2
    assert [bool(checks_module._SLOW.get(p)) for p in patterns] == [False, True, True]


def test_a_jsonpath_on_json_nested_deeper_than_the_path_may_walk_fails_its_check_saying_so():
    deep = b"[" * 900 + b"]" * 900  # JSON that json reads, deeper than a JSONPath walks (100 levels)
    assert failures([{"source": "json", "path": "$..x", "op": "exists"}], body=deep) == [
        ("check[0]", "the JSON is nested too deep for this path")
    ]


def test_a_pattern_that_ran_out_of_time_on_a_long_text_is_still_searched_in_a_shorter_one():
    check = [{"source": "body", "op": "matches", "value": r"(y+y+)+z"}]
    assert failures(check, body=b"y" * 5000)[0][1].startswith("the pattern took more than")
    assert failures(check, body=b"yyz") == [], "a short text, searched: it matches"
    started = time.thread_time()  # CPU time: a search burns it, a loaded machine's waits do not
    assert failures(check, body=b"y" * 6000)[0][1].startswith("the pattern took more than")
    assert time.thread_time() - started < REGEX_TIMEOUT / 2, "a text as long is not searched again"


def test_one_rows_checks_share_a_time_budget_and_those_left_when_it_is_spent_fail_saying_so():
    patterns = [{"source": "body", "op": "matches", "value": rf"(w+w+)+v{i}"} for i in range(50)]
    found = failures(patterns, body=b"w" * 5000)
    assert len(found) == 50 and found[0][1].startswith("the pattern took more than")
    searched = [reason for _, reason in found if reason.startswith("the pattern took more than")]
    # Each search runs out of time: alone, the 50 would take 50 x REGEX_TIMEOUT; the budget lets the first
    # run, then as many as fit in CHECK_BUDGET (a loaded machine only cuts that number down).
    assert len(searched) <= 1 + CHECK_BUDGET / REGEX_TIMEOUT
    assert found[-1] == ("check[49]", CHECK_BUDGET_SPENT)


def test_a_rows_fast_checks_never_fail_for_time_the_hub_spends_elsewhere_between_them():
    raw = [{"source": "header", "name": "Content-Type", "op": "present"}]
    raw += [
        {"source": "json", "path": "$.a", "op": "==", "value": 1},
        {"source": "body", "op": "contains", "value": "a"},
    ]
    checks, _ = parse_checks(raw, "options.checks")

    def hub_busy_elsewhere():
        time.sleep(CHECK_BUDGET)  # other rows, other requests: time that is not this row's checks'

    reasons = run(
        checks,
        0,
        b'{"a": 1}',
        {"Content-Type": "application/json"},
        {},
        8,
        "application/json",
        None,
        hub_busy_elsewhere,
    )
    assert reasons == []


def test_a_jsonpath_with_a_descent_or_a_filter_reads_no_body_longer_than_json_walk_bytes():
    body = json.dumps([2] * JSON_WALK_BYTES).encode()
    for path in ("$..*", "$[?@ == 2]"):
        assert failures([{"source": "json", "path": path, "op": "exists"}], body=body) == [
            (
                "check[0]",
                f"the body has {len(body)} bytes, more than the {JSON_WALK_BYTES} a path with .. or a filter walks",
            )
        ], path
    assert failures([{"source": "json", "path": "$[7]", "op": "==", "value": 2}], body=body) == []
    assert failures([{"source": "json", "path": "$[?@ == 2]", "op": "==", "value": 2}], body=b"[1, 2]") == []


def test_a_wildcard_or_a_slice_reads_a_body_of_any_size_up_to_its_first_match():
    body = json.dumps({"items": [{"id": i, "name": "x" * 20} for i in range(4000)]}).encode()  # about 150 KB
    assert len(body) > 2 * JSON_WALK_BYTES
    holds = [
        {"source": "json", "path": "$.items[*].id", "op": "==", "value": 0},
        {"source": "json", "path": "$.items[-1:].id", "op": "==", "value": 3999},
        {"source": "json", "path": "$.items[100:].name", "op": "exists"},
        {"source": "json", "path": "$.*[3000].id", "op": "==", "value": 3000},
    ]
    assert failures(holds, body=body) == []


def test_a_wildcard_that_finds_nothing_stops_after_json_walk_nodes_saying_so():
    body = json.dumps([{"id": i} for i in range(3 * JSON_WALK_NODES)]).encode()
    started = time.thread_time()  # CPU time: a walk burns it, a loaded machine's waits do not
    found = failures([{"source": "json", "path": "$[*].missing", "op": "exists"}], body=body)
    assert time.thread_time() - started < 0.5
    assert found == [("check[0]", WALKED_TOO_FAR)]
    late_match = [{"source": "json", "path": "$[*].id", "op": "==", "value": 2 * JSON_WALK_NODES}]
    assert failures(late_match, body=body) == [("check[0]", "0")], "the first match decides, however early"


def test_checks_slow_on_big_bodies_leave_the_api_answering_while_a_batch_judges_them(server, target):
    rows = [
        {
            "url": target.url(f"/repeat/1000000?i={i}"),
            "checks": [
                {"source": "body", "op": "matches", "value": f"(a+a+)+y{i}_{j}", "max_bytes": 65536} for j in range(50)
            ],
        }
        for i in range(4)
    ]
    walking = [{"source": "json", "path": path, "op": "exists", "max_bytes": MAX_CHECK_BYTES} for path in ("$..*",)]
    rows += [
        {"url": target.url(f"/repeat/1000000?head=%5B&text=2,&tail=2%5D&j={j}"), "checks": walking} for j in range(2)
    ]
    batch = server.submit(rows, concurrency=6, max_bytes=4_000_000)
    slowest = 0.0
    stop = threading.Event()

    def poll():
        nonlocal slowest
        while not stop.is_set():
            asked = time.monotonic()
            status = server.batch(batch["id"])["status"]
            slowest = max(slowest, time.monotonic() - asked)
            if status != "running" and status != "queued":
                return

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        ended = server.wait(batch["id"], timeout=30)
    finally:
        stop.set()
        poller.join()
    assert ended["status"] == "done"
    # One row's checks take CHECK_BUDGET at most, and the hub serves requests between two checks.
    assert slowest < 1.5, f"GET /batches/<id> took {slowest:.2f} s"
    results = server.results(batch["id"])
    assert {r["reasons"][-1]["actual"] for r in results[:4]} == {CHECK_BUDGET_SPENT}
    assert {r["reasons"][0]["actual"] for r in results[4:]} == {
        "the body has 2000003 bytes, more than the 65536 a path with .. or a filter walks"
    }


def test_a_batch_checking_5_mb_bodies_searches_only_max_bytes_of_each_and_parses_none_as_json(server, target):
    # The bound is what keeps the hub (which serves every page and websocket) from scanning or parsing
    # megabytes per result; the unit tests above show each limit, this one shows them through a real batch.
    urls = [target.url(f"/bytes/5000000?i={i}") for i in range(12)]
    checks = [
        {"source": "body", "op": "matches", "value": "never here", "max_bytes": MAX_CHECK_BYTES},
        {"source": "json", "path": "$.a", "op": "exists"},
    ]
    batch = server.submit(urls, checks=checks, concurrency=3, max_bytes=6_000_000)
    assert server.wait(batch["id"], timeout=60)["status"] == "done"
    results = server.results(batch["id"])
    assert {r["reasons"][0]["actual"] for r in results} == {
        f"no match in the body (its first {MAX_CHECK_BYTES} of 5000000 bytes: the check's max_bytes)"
    }
    assert {r["reasons"][1]["actual"] for r in results} == {
        f"the body has 5000000 bytes, more than the {DEFAULT_CHECK_BYTES} a json check parses (its max_bytes)"
    }


def test_checks_give_the_same_answers_through_the_api(server, target):
    batch = server.submit(
        [
            target.url("/shop/1"),
            target.url("/shop/2?sold_out=1"),
            {
                "url": target.url("/product/3?stock=0"),
                "checks": [{"source": "json", "path": "$.stock", "op": ">", "value": 0}],
            },
        ],
        checks=[
            {"source": "body", "op": "not_contains", "value": "Sold out"},
            {"source": "time.total", "op": "<", "value": 10000},
        ],
    )
    server.wait(batch["id"])
    results = server.results(batch["id"])
    assert [(r["outcome"], [x["rule"] for x in r["reasons"]]) for r in results] == [
        ("ok", []),
        ("failed", ["check[0]"]),
        ("failed", ["check[2]"]),
    ]
    assert results[2]["reasons"][0] == {"rule": "check[2]", "expected": "json $.stock > 0", "actual": "0"}
    assert server.batch(batch["id"])["options"]["checks"][0] == {
        "source": "body",
        "op": "not_contains",
        "value": "Sold out",
    }
    assert server.results(batch["id"], reason="check[0]")[0]["index"] == 1


def test_a_bad_check_in_a_submission_is_a_400_naming_it(server, target):
    response = server.request(
        "POST",
        "/api/v1/batches",
        json={"urls": [target.url("/ok")], "options": {"checks": [{"source": "json", "op": "exists", "path": "$["}]}},
    )
    assert response.status_code == 400
    assert error_of(response)["details"][0]["field"] == "options.checks[0].path"


@pytest.mark.parametrize(
    ("item", "checks", "field"),
    [
        (None, [{"source": "body", "op": "not_contains", "value": "Sold out"}], "options.checks[0].source"),
        (
            None,
            [{"source": "header", "name": "a", "op": "present"}, {"source": "size", "op": ">", "value": 1}],
            "options.checks[1].source",
        ),
        ([{"source": "json", "path": "$.a", "op": "exists"}], None, "urls[0].checks[0].source"),
    ],
)
def test_a_check_that_reads_the_body_is_refused_for_a_head_batch_naming_it(server, target, item, checks, field):
    url = {"url": target.url("/ok"), "checks": item} if item else target.url("/ok")
    options = {"method": "HEAD", **({"checks": checks} if checks else {})}
    response = server.request("POST", "/api/v1/batches", json={"urls": [url], "options": options})
    assert response.status_code == 400, response.text[:300]
    [detail] = error_of(response)["details"]
    assert detail["field"] == field and "HEAD" in detail["message"]


def test_a_head_get_batch_with_a_check_that_reads_the_body_asks_with_get(server, target):
    reads = [{"source": "json", "path": "$.method", "op": "==", "value": "GET"}]
    [result] = server.results(
        server.wait(server.submit([target.url("/echo")], method="HEAD,GET", checks=reads)["id"])["id"]
    )
    assert (result["outcome"], result["method"]) == ("ok", "GET")
    headers_only = [{"source": "content_type", "op": "matches", "value": "json"}]
    [result] = server.results(
        server.wait(server.submit([target.url("/echo")], method="HEAD,GET", checks=headers_only)["id"])["id"]
    )
    assert (result["outcome"], result["method"]) == ("ok", "HEAD")
