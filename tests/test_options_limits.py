"""Batch options have bounded sizes and safe headers, lists stay light, reruns of old batches answer 4xx, and
CSV exports cannot carry a spreadsheet formula."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from urllib.parse import urlencode

import pytest
import websocket

from tests.support.server import error_of


def refusal(response) -> dict:
    """The error of a 400 invalid_options answer."""
    assert response.status_code == 400, response.text[:300]
    error = error_of(response)
    assert error["code"] == "invalid_options"
    return error


def option_refusal(server, **options) -> dict:
    """Submit a one-URL batch with these options; return the single problem of the 400 it must get."""
    response = server.request("POST", "/api/v1/batches", json={"urls": ["http://example.com/"], "options": options})
    (detail,) = refusal(response)["details"]
    return detail


def submitted_options(server, target, **options) -> dict:
    """The options a batch was stored with."""
    return server.submit([target.url("/ok")], **options)["options"]


# -- sizes -----------------------------------------------------------------------------------


def test_a_megabyte_accept_status_is_refused_before_parsing_naming_the_field(server):
    detail = option_refusal(server, accept_status="200," * 250_000 + "200")
    assert detail["field"] == "options.accept_status"
    assert "at most 2000 characters" in detail["message"]


def test_accept_status_takes_at_most_100_statuses_or_ranges(server, target):
    hundred = ",".join(str(status) for status in range(100, 300, 2))
    assert submitted_options(server, target, accept_status=hundred)["accept_status"] == hundred
    detail = option_refusal(server, accept_status=hundred + ",300")
    assert detail["field"] == "options.accept_status"
    assert "at most 100" in detail["message"]


@pytest.mark.parametrize(
    "given, stored",
    [
        ("404,200-299,250-310", "200-310,404"),
        ("200-299, 300-399", "200-399"),
        ("418,418,200", "200,418"),
        (" 301 - 302 ", "301-302"),
        ("2xx,3xx", "200-399"),
        ("404,2XX", "200-299,404"),
        ("5xx,2xx", "200-299,500-599"),
    ],
)
def test_accept_status_is_stored_merged_and_sorted(server, target, given, stored):
    assert submitted_options(server, target, accept_status=given)["accept_status"] == stored


@pytest.mark.parametrize("given", ["6xx", "2x", "2xxx", "xx", "2xx-3xx"])
def test_accept_status_classes_are_a_digit_from_1_to_5_then_xx(server, given):
    detail = option_refusal(server, accept_status=given)
    assert detail["field"] == "options.accept_status" and "2xx,3xx" in detail["message"]


def test_a_status_in_an_accepted_class_counts_as_ok(server, target):
    results = server.run_batch([target.url("/status/404"), target.url("/status/500")], accept_status="2xx,4xx")
    assert [(r["status_code"], r["ok"]) for r in results.values()] == [(404, True), (500, False)]


def test_headers_over_16_kib_together_are_refused_though_each_is_under_8_kib(server):
    detail = option_refusal(server, headers={f"X-Part-{n}": "v" * 6000 for n in range(3)})
    assert detail["field"] == "options.headers"
    assert "16384" in detail["message"]


def test_more_than_50_headers_are_refused(server):
    detail = option_refusal(server, headers={f"X-H{n}": "1" for n in range(51)})
    assert detail["field"] == "options.headers" and "at most 50 headers" in detail["message"]


def test_a_header_name_over_100_characters_is_refused(server):
    detail = option_refusal(server, headers={"X-" + "n" * 99: "1"})
    assert detail["field"] == "options.headers" and "at most 100 characters" in detail["message"]


# -- lists show header names, not values -------------------------------------------------------

BULKY = {"X-Bulky": "b" * 8000, "Authorization": "Bearer not-for-lists"}


def test_the_batch_list_shows_header_names_and_the_batch_keeps_the_values(server, target):
    batch = server.submit([target.url("/ok")], headers=BULKY)
    listed = server.request("GET", "/api/v1/batches", params={"limit": 200})
    assert listed.status_code == 200
    (shown,) = [b for b in listed.json()["batches"] if b["id"] == batch["id"]]
    assert "headers" not in shown["options"]
    assert shown["options"]["header_names"] == ["X-Bulky", "Authorization"]
    assert "not-for-lists" not in listed.text and "b" * 100 not in listed.text
    assert server.batch(batch["id"])["options"]["headers"] == BULKY


def test_the_live_list_snapshot_shows_header_names_without_values(server, target):
    batch = server.submit([target.url("/ok")], headers=BULKY)
    ws = websocket.create_connection("ws" + server.base_url[len("http") :] + "/ws/batches", timeout=15)
    try:
        snapshot = json.loads(ws.recv())
    finally:
        ws.close()
    assert snapshot["type"] == "snapshot"
    (shown,) = [b for b in snapshot["batches"] if b["id"] == batch["id"]]
    assert "headers" not in shown["options"]
    assert shown["options"]["header_names"] == ["X-Bulky", "Authorization"]
    assert "not-for-lists" not in json.dumps(snapshot)


# -- headers the client owns, control characters, repeats ---------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Host",
        "host",
        "Content-Length",
        "Transfer-Encoding",
        "connection",
        "Upgrade",
        "TE",
        "Trailer",
        "Keep-Alive",
        "Proxy-Connection",
    ],
)
def test_headers_the_client_owns_are_refused_naming_the_header(server, name):
    detail = option_refusal(server, headers={name: "admin.intranet.test" if name.lower() == "host" else "1"})
    assert detail["field"] == "options.headers"
    assert repr(name) in detail["message"]


@pytest.mark.parametrize(
    "character",
    ["\x00", "\x01", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x7f", "\x85"],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_control_characters_in_a_header_value_are_refused(server, character):
    detail = option_refusal(server, headers={"X-Probe": f"a{character}b"})
    assert detail["field"] == "options.headers"
    assert "'X-Probe'" in detail["message"]


@pytest.mark.parametrize("value", [" a", "a ", "\ta", "a\t"])
def test_a_header_value_with_whitespace_at_either_end_is_refused(server, value):
    assert "whitespace" in option_refusal(server, headers={"X-Probe": value})["message"]


def test_a_tab_inside_a_header_value_is_accepted(server, target):
    assert submitted_options(server, target, headers={"X-Probe": "a\tb"})["headers"] == {"X-Probe": "a\tb"}


def test_a_header_name_given_twice_in_any_case_is_refused(server):
    detail = option_refusal(server, headers={"X-Probe": "1", "x-probe": "2"})
    assert detail["field"] == "options.headers"
    assert "twice" in detail["message"] and "'x-probe'" in detail["message"]


def text_submission(server, target, query: str):
    """POST one URL as text/plain with this query string."""
    return server.request(
        "POST", f"/api/v1/batches?{query}", data=target.url("/ok"), headers={"Content-Type": "text/plain"}
    )


@pytest.mark.parametrize(
    "query, named",
    [
        ("header=Host:%20admin.intranet.test", "'Host'"),
        ("header=Transfer-Encoding:%20chunked", "'Transfer-Encoding'"),
        ("header=X-A:%201&header=x-a:%202", "twice"),
        ("header=X-A:%201&header=X-A:%202", "twice"),
        ("header=X-A:%20a%0Bb", "U+000B"),
        ("header=X-A:%20a%C2%85", "U+0085"),
        ("header=bad", "'bad'"),
    ],
)
def test_query_string_headers_follow_the_same_rules(server, target, query, named):
    error = refusal(text_submission(server, target, query))
    assert named in error["message"]
    assert error["details"][0]["field"] == "header"


def test_query_string_headers_drop_the_spaces_around_a_value(server, target):
    response = text_submission(server, target, "header=X-A:%20%201%20&header=X-B:")
    assert response.status_code == 201, response.text
    assert response.json()["options"]["headers"] == {"X-A": "1", "X-B": ""}


# -- rerun of a batch stored under other limits -------------------------------------------------


def test_rerun_after_the_concurrency_limit_was_lowered_answers_409_naming_the_limit(make_server, target, tmp_path):
    first = make_server(data_dir=tmp_path / "kept")
    batch = first.submit([target.url("/ok")], concurrency=50)
    first.wait(batch["id"])
    first.stop()
    lowered = make_server(
        env={"GREENBATCH_MAX_CONCURRENCY": "10", "GREENBATCH_DEFAULT_CONCURRENCY": "5"}, data_dir=tmp_path / "kept"
    )
    response = lowered.request("POST", f"/api/v1/batches/{batch['id']}/rerun")
    assert response.status_code == 409, response.text
    error = error_of(response)
    assert error["code"] == "invalid_options"
    assert "options.concurrency" in error["message"] and "submit its URLs again" in error["message"]
    assert error["details"][0]["field"] == "options.concurrency"


def test_rerun_of_a_batch_stored_with_a_host_header_answers_409(make_server, target, tmp_path):
    first = make_server(data_dir=tmp_path / "kept")
    batch = first.submit([target.url("/ok")])
    first.wait(batch["id"])
    first.stop()
    # As an older version stored it, before batches were refused a Host header.
    with sqlite3.connect(tmp_path / "kept" / "greenbatch.db") as db:
        (stored,) = db.execute("SELECT options FROM batches WHERE id = ?", (batch["id"],)).fetchone()
        db.execute(
            "UPDATE batches SET options = ? WHERE id = ?",
            (json.dumps({**json.loads(stored), "headers": {"Host": "admin.intranet.test"}}), batch["id"]),
        )
    db.close()
    restarted = make_server(data_dir=tmp_path / "kept")
    response = restarted.request("POST", f"/api/v1/batches/{batch['id']}/rerun", json={"only": "all"})
    assert response.status_code == 409, response.text
    error = error_of(response)
    assert error["code"] == "invalid_options" and "'Host'" in error["message"]


def test_an_unfinished_batch_stored_with_a_host_header_is_not_resumed_but_ends_failed_saying_why(
    make_server, target, tmp_path
):
    first = make_server(data_dir=tmp_path / "kept")
    batch = first.submit([target.url(f"/delay/2000?n={i}") for i in range(4)], concurrency=1)
    first.kill()  # mid-batch: it resumes on the next start
    with sqlite3.connect(tmp_path / "kept" / "greenbatch.db") as db:
        (stored,) = db.execute("SELECT options FROM batches WHERE id = ?", (batch["id"],)).fetchone()
        db.execute(
            "UPDATE batches SET options = ? WHERE id = ?",
            (json.dumps({**json.loads(stored), "headers": {"Host": "admin.intranet.test"}}), batch["id"]),
        )
    db.close()
    target.hits(reset=True)
    restarted = make_server(data_dir=tmp_path / "kept")
    ended = restarted.wait(batch["id"])
    assert ended["status"] == "failed"
    assert "'Host'" in restarted.log() and "not resumed" in restarted.log()
    events = restarted.request("GET", f"/api/v1/batches/{batch['id']}/events").json()["events"]
    assert "not resumed" in events[-1]["data"]["error"] and "'Host'" in events[-1]["data"]["error"]
    assert not any("/delay/" in path for path in target.hits()), "nothing was fetched with the refused header"


# -- CSV export ------------------------------------------------------------------------------


def csv_export(server, batch_id: str):
    """The CSV download of a batch."""
    response = server.request("GET", f"/api/v1/batches/{batch_id}/results", params={"format": "csv"})
    assert response.status_code == 200, response.text
    return response


def test_csv_export_quotes_every_field_and_says_utf_8(server, target):
    batch = server.submit([target.url("/ok"), target.url("/status/404")])
    server.wait(batch["id"])
    response = csv_export(server, batch["id"])
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    lines = response.text.splitlines()
    assert lines[0].startswith('"index","url",')
    for line in lines:
        fields = next(csv.reader([line]))
        assert line == ",".join('"' + field.replace('"', '""') + '"' for field in fields)
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["status_code"], r["ok"]) for r in rows] == [("200", "true"), ("404", "false")]  # as JSON writes them


@pytest.mark.parametrize(
    "content_type, shown",
    [
        ("text/html;=1+2", "text/html;'=1+2"),
        ("text/html; =HYPERLINK(1)", "text/html; '=HYPERLINK(1)"),
        ("text/html,+1", "text/html,'+1"),
        ('text/html;"-1', "text/html;\"'-1"),
        ("@SUM(1)", "'@SUM(1)"),
        ("text/html; charset=utf-8", "text/html; charset=utf-8"),
    ],
)
def test_csv_export_defuses_formulas_a_target_puts_after_a_separator(server, target, content_type, shown):
    batch = server.submit([target.url("/html?" + urlencode({"ctype": content_type}))])
    server.wait(batch["id"])
    (row,) = csv.DictReader(io.StringIO(csv_export(server, batch["id"]).text))
    assert row["content_type"] == shown


def test_csv_export_defuses_full_width_formula_signs(server, target):
    urls = [
        target.url("/ok?q=;\uff1d1+2"),
        target.url("/ok?q=,\uff0b1"),
        target.url("/ok?q=;\uff0d1"),
        target.url("/ok?q=;\uff20x"),
    ]
    batch = server.submit(urls)
    server.wait(batch["id"])
    rows = list(csv.DictReader(io.StringIO(csv_export(server, batch["id"]).text)))
    assert [row["url"][len(target.url("/ok?q=")) :] for row in rows] == [
        ";'\uff1d1+2",
        ",'\uff0b1",
        ";'\uff0d1",
        ";'\uff20x",
    ]


def test_the_index_page_lists_batches_with_headers_from_the_slim_snapshot_and_older_pages(page, make_server, target):
    from playwright.sync_api import expect  # the page fixture has skipped already when Playwright is missing

    server = make_server()
    ids = [server.submit([target.url(f"/ok?n={n}")], headers=BULKY)["id"] for n in range(52)]
    server.wait(ids[-1])
    page.goto(server.url("/"))
    rows = page.locator("tr.batch-row")
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_attribute("data-id", ids[-1])
    expect(rows.first).to_contain_text("1 / 1")
    page.locator("#older").click()
    expect(rows).to_have_count(52)
    expect(rows.last).to_have_attribute("data-id", ids[0])
    fresh = server.submit([target.url("/ok")], headers=BULKY)  # arrives live: the page fetches it whole
    expect(rows.first).to_have_attribute("data-id", fresh["id"], timeout=20_000)


HUGE = 10**400  # an integer past a float's range


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"thresholds": {"p50_ms": HUGE}}, "options.thresholds"),
        ({"thresholds": {"failed_rate": HUGE}}, "options.thresholds"),
        ({"max_retry_after": HUGE}, "options.max_retry_after"),
        ({"per_host_interval": HUGE}, "options.per_host_interval"),
        ({"checks": [{"source": "size", "op": "<", "value": HUGE}]}, "options.checks[0].value"),
        ({"checks": [{"source": "time.total", "op": "<", "value": HUGE}]}, "options.checks[0].value"),
        ({"checks": [{"source": "json", "path": "$.a", "op": ">", "value": HUGE}]}, "options.checks[0].value"),
    ],
)
def test_an_integer_too_large_for_a_number_is_a_400_naming_its_field(server, options, field):
    assert option_refusal(server, **options)["field"] == field
