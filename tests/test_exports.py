"""Downloads of a batch's results: CSV with JSON's true and false, NDJSON, and one JSON array, each streamed
a store page at a time and named by the batch's links."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.stats import row_of
from app.core.verdict import OUTCOMES
from app.runs.events import Event
from app.runs.store import SQLiteStore, Store
from app.web.exports import CSV_COLUMNS, TIMINGS, chunks
from tests.support.server import error_of


@pytest.fixture(scope="module")
def finished(server, target) -> dict:
    """A finished batch: one ok URL, one that failed by its status, one ok again."""
    batch = server.submit([target.url("/ok"), target.url("/status/404"), target.url("/status/204")])
    server.wait(batch["id"])
    return server.batch(batch["id"])


def download(server, batch: dict, link: str, **params):
    """The download a batch's link leads to (its path already carries format=)."""
    response = server.request("GET", batch["links"][link], params=params)
    assert response.status_code == 200, response.text[:300]
    return response


def test_the_csv_says_ok_as_json_does_true_or_false(server, finished):
    rows = list(csv.DictReader(io.StringIO(download(server, finished, "csv").text)))
    assert [(r["index"], r["status_code"], r["ok"]) for r in rows] == [
        ("0", "200", "true"),
        ("1", "404", "false"),
        ("2", "204", "true"),
    ]


def test_the_json_download_is_one_array_of_the_results_the_pages_hold(server, finished):
    response = download(server, finished, "json")
    assert response.headers["Content-Type"] == "application/json"
    assert f'filename="greenbatch-{finished["id"]}.json"' in response.headers["Content-Disposition"]
    assert response.json() == server.results(finished["id"])
    assert [r["index"] for r in response.json()] == [0, 1, 2]  # URLs are numbered from 0, as in the list sent


def test_the_json_download_takes_the_outcome_filter(server, finished):
    assert [r["index"] for r in download(server, finished, "json", outcome="failed").json()] == [1]
    assert [r["index"] for r in download(server, finished, "json", outcome="ok").json()] == [0, 2]


def test_a_json_download_with_nothing_to_show_is_an_empty_array(server, target):
    batch = server.submit([target.url("/ok")])
    server.wait(batch["id"])
    assert download(server, batch, "json", outcome="failed").json() == []


def test_ndjson_stays_one_result_a_line(server, finished):
    lines = download(server, finished, "ndjson").text.splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]


def test_a_json_download_of_many_store_pages_is_streamed_and_whole(server, target):
    # 2,500 results are three of the store's pages of 1,000: written as they are read, in chunks.
    batch = server.submit([target.url(f"/ok?i={i}") for i in range(2500)], concurrency=50)
    server.wait(batch["id"], timeout=60)
    response = server.request("GET", batch["links"]["json"], stream=True)
    assert response.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in response.headers
    body = b"".join(response.iter_content(None))
    assert [r["index"] for r in json.loads(body)] == list(range(2500))
    lines = body.decode().splitlines()
    assert len(lines) == 2502 and lines[0] == "[" and lines[-1] == "]"  # a result a line between the brackets


def test_an_unknown_format_is_refused_naming_the_formats(server, finished):
    response = server.request("GET", f"/api/v1/batches/{finished['id']}/results", params={"format": "xml"})
    assert response.status_code == 400
    assert error_of(response)["details"] == [{"field": "format", "message": "must be one of csv, ndjson, json"}]


def test_without_a_format_the_results_come_a_page_at_a_time(server, finished):
    page = server.request("GET", finished["links"]["results"], params={"limit": 2}).json()
    assert [r["index"] for r in page["results"]] == [0, 1] and page["next_after"] == 1


# -- what the store holds, exported: every line as the reference conversion writes it ----------------------------

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_batches = itertools.count()
# Most results hold plain values (PLAIN, MS); some hold one or two odd ones: text with every character the
# CSV rules care about (quotes, separators, spaces, formula triggers ASCII and full-width, tabs, line
# breaks), a formula alone, a number json writes otherwise than orjson, one past 64 bits, or a timing no
# transport writes. A single odd value in an otherwise plain result is what tells each rule apart.
PLAIN = st.text(st.sampled_from("abcxyz/:.?&_-0123456789"), max_size=16)
MS = st.floats(0, 100_000).map(lambda ms: round(ms, 3))  # what the transports measure
TRICKY = st.text(st.sampled_from("ab -=+@;,\"\t\r\n'/:?&.09\uff1d\uff0b\u00e9\u2603\u2028"), min_size=1, max_size=10)
FORMULA = st.sampled_from(
    ["=1+2", "+1", "-1", "@SUM(A1)", "\uff1d1", "a;\uff0b1", " =1", "a, -1", "x;@y", "\t=1", 'a"b']
)
ODD_TEXT = TRICKY | FORMULA
ODD_NUMBER = st.one_of(
    st.sampled_from([0.00001, 0.000099, 1e-7, 1e16, 1.5e300, -0.0, 0.1 + 0.2, float("nan"), float("inf")]),
    st.floats(),
    st.integers(-(2**62), 2**62),  # the store's total_ms column takes 64 bits at most
)
ODD_TIMING = ODD_NUMBER | st.lists(st.integers(0, 9), max_size=2) | ODD_TEXT  # total_ms holds numbers only
TEXT_FIELDS = ("url", "final_url", "content_type", "started_at", "finished_at")


@st.composite
def results(draw: st.DrawFn) -> dict:
    """A result as Result.to_dict makes it, plain or with one or two odd values."""
    url = "http://a.test/" + draw(PLAIN)
    result = {
        "url": url,
        "final_url": draw(st.none() | st.just(url)),
        "status_code": draw(st.none() | st.integers(100, 599)),
        "ok": draw(st.booleans()),
        "error": draw(st.none() | st.fixed_dictionaries({"kind": st.just("status"), "message": PLAIN})),
        "bytes": draw(st.integers(0, 2**20)),
        "content_type": draw(st.none() | st.just("text/html; charset=utf-8")),
        "redirects": draw(st.lists(st.fixed_dictionaries({"url": st.just(url), "status": st.just(301)}), max_size=3)),
        "attempts": draw(st.integers(0, 5)),
        "started_at": draw(st.none() | st.just("2026-12-06T00:00:00.123Z")),
        "finished_at": draw(st.none() | st.just("2026-12-06T00:00:00.456Z")),
        "timings": draw(st.fixed_dictionaries({}, optional={name: st.none() | MS for name in [*TIMINGS, "redirect"]})),
    }
    if draw(st.booleans()):  # what a result means (stored before outcomes, a result has none of it)
        result["outcome"] = draw(st.sampled_from(["ok", "warn", "failed", "cancelled"]))
        reason = st.fixed_dictionaries({"rule": st.just("expect.final_url"), "expected": PLAIN, "actual": ODD_TEXT})
        result["reasons"] = draw(st.lists(reason, max_size=2))
        expect = {"status": st.integers(100, 599) | st.just("301,308"), "final_url": ODD_TEXT, "final_status": PLAIN}
        if draw(st.booleans()):
            result["expect"] = draw(st.fixed_dictionaries({}, optional=expect))
    for _ in range(draw(st.integers(0, 2))):
        where = draw(st.sampled_from([*TEXT_FIELDS, "error", "attempts", "timings", "total"]))
        if where in TEXT_FIELDS:
            result[where] = draw(ODD_TEXT | st.lists(ODD_TEXT, max_size=2))  # a list: what no transport writes
        elif where == "error":
            result["error"] = {"kind": draw(ODD_TEXT | PLAIN), "message": draw(ODD_TEXT | PLAIN)}
        elif where == "attempts":
            result["attempts"] = draw(st.integers(2**63, 2**70))  # orjson reads it as a float, json whole
        elif where == "total":
            result["timings"] = {**result["timings"], "total": draw(ODD_NUMBER)}
        else:
            result["timings"] = {**result["timings"], draw(st.sampled_from(TIMINGS[1:])): draw(ODD_TIMING)}
    return result


@pytest.fixture(scope="module")
def store(module_store_factory):
    """A store of its own (SQLite's, then PostgreSQL's), written and read through its API as the engine and the
    API do."""
    return module_store_factory(flush_interval=0.01)


def stored_batch(store: Store, results: list[dict]) -> str:
    """A new batch holding these results (numbered from 0), committed; its id."""
    batch_id = f"b{next(_batches)}"
    store.create_batch(batch_id, "exports", {}, [str(r["url"]) for r in results], "2026-12-06T00:00:00.000Z")
    events = []
    for index, result in enumerate(results):
        data = {"index": index, **result}
        events.append(Event(batch_id, index + 1, "result", data, row=row_of(data)))
    store.extend(events)
    assert store.flush(30)
    return batch_id


FORMULA_START = re.compile(r'(^|[;,\t\r\n])([ "]*)(?=[-=+@\t\r\uff1d\uff0b\uff0d\uff20])')


def reference_line(r: dict) -> str:
    """A result's CSV line as the export wrote it row by row before it was made fast: csv's writer quoting
    every field, ok as JSON writes it, the redirects counted, and each text's formula defused."""
    error, t = r.get("error") or {}, r.get("timings") or {}
    ok = None if r.get("ok") is None else "true" if r.get("ok") else "false"
    fields = [r["index"], r["url"], r.get("final_url"), r.get("status_code"), ok, error.get("kind")]
    fields += [error.get("message"), r.get("bytes"), r.get("content_type"), len(r.get("redirects") or [])]
    fields += [r.get("attempts"), r.get("started_at"), r.get("finished_at"), *(t.get(name) for name in TIMINGS)]
    expect = r.get("expect") or {}
    reasons = "; ".join(f"{x['rule']}: expected {x['expected']}, got {x['actual']}" for x in r.get("reasons") or [])
    fields += [r.get("outcome"), reasons, expect.get("status"), expect.get("final_url"), expect.get("final_status")]
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL).writerow(
        [FORMULA_START.sub(r"\1\2'", v) if isinstance(v, str) else v for v in fields]
    )
    return buffer.getvalue()


def reference_csv(store: Store, batch_id: str, outcome: str | None = None) -> str:
    """The CSV of the row-by-row conversion: reference_line of each stored result (as json reads it), under the
    header."""
    header = '"' + '","'.join(CSV_COLUMNS) + '"\r\n'
    return header + "".join(reference_line(result) for result in store.iter_results(batch_id, outcome))


def exported(store: Store, batch_id: str, fmt: str, outcome: str | None = None) -> str:
    """A download's text, as the API streams it."""
    return "".join(c if isinstance(c, str) else c.decode() for c in chunks(store, batch_id, fmt, outcome))


def csv_lines_are_the_reference_conversions(store: Store, results: list[dict]) -> None:
    """Store the results as a batch; its CSV download is the row-by-row conversion of what the store holds."""
    batch_id = stored_batch(store, results)
    assert exported(store, batch_id, "csv") == reference_csv(store, batch_id)


@pytest.mark.parametrize("module_store_factory", ["sqlite"], indirect=True)
@FAST
@given(st.lists(results(), min_size=1, max_size=30))
def test_every_csv_line_is_what_the_reference_conversion_writes_whatever_a_result_holds(store, results):
    csv_lines_are_the_reference_conversions(store, results)


# PostgreSQL reads each result's JSON itself (and writes its strings again): fewer examples keep the file fast.
@pytest.mark.parametrize("module_store_factory", ["postgres"], indirect=True)
@settings(FAST, max_examples=60)
@given(st.lists(results(), min_size=1, max_size=30))
def test_every_csv_line_from_postgresql_is_what_the_reference_conversion_writes_whatever_a_result_holds(store, results):
    csv_lines_are_the_reference_conversions(store, results)


def with_plain_verdict(result: dict, outcome: str | None, reasons: list | None) -> dict:
    """The result with a verdict that needs no work: an outcome with no reasons (none, or the empty list the
    engine writes) and no expectations, or no verdict at all (a result stored before outcomes)."""
    result = {key: value for key, value in result.items() if key not in ("outcome", "reasons", "expect")}
    return result if outcome is None and reasons is None else {**result, "outcome": outcome, "reasons": reasons}


# A page whose results all have such a verdict is written without reading one verdict of it in Python: each
# line, plain or careful (quotes, formulas, odd numbers, stored texts SQLite cannot read), ends with its outcome.
@pytest.mark.parametrize("module_store_factory", ["sqlite"], indirect=True)
@settings(FAST, max_examples=80)
@given(
    st.lists(
        st.tuples(results(), st.sampled_from([*OUTCOMES, None]), st.sampled_from([[], None])), min_size=1, max_size=30
    )
)
def test_every_csv_line_of_results_with_an_outcome_alone_is_what_the_reference_conversion_writes(store, drawn):
    csv_lines_are_the_reference_conversions(store, [with_plain_verdict(*found) for found in drawn])


def test_pages_of_outcomes_alone_with_reasons_or_an_unknown_outcome_are_written_as_the_reference_writes(store):
    outcomes = itertools.cycle([*OUTCOMES, None])
    # Every shape of sample_result but the one SQLite cannot read (its page would be read row by row).
    shapes = [sample_result(i if i % 997 != 6 else 0) for i in range(3000)]  # the store reads 1,000 at a time
    results = [with_plain_verdict(result, next(outcomes), [] if i % 3 else None) for i, result in enumerate(shapes)]
    for i in (500, 1300):  # a list in a text's place (no transport writes one): str() quotes its apostrophe
        results[i] = {**results[i], "content_type": ["it's"]}
    results[2700] = {**results[2700], "outcome": "pending"}  # an outcome of no kind the engine writes
    results[1200] = {
        **results[1200],
        "outcome": "failed",
        "reasons": [{"rule": "status", "expected": 200, "actual": 404}],
    }
    csv_lines_are_the_reference_conversions(store, results)


def sample_result(index: int) -> dict:
    """A result as a batch makes them: mostly plain, now and then a redirect, an error, a formula or a quote."""
    url = f"http://shop.example.com/item-{index}?page={index % 7}"
    result = {
        "url": url,
        "final_url": url,
        "status_code": 200,
        "ok": True,
        "error": None,
        "bytes": 512 + index,
        "content_type": "text/html; charset=utf-8",
        "redirects": [],
        "attempts": 1,
        "started_at": "2026-12-06T00:00:00.123Z",
        "finished_at": "2026-12-06T00:00:00.456Z",
        "timings": {"total": round(index / 7, 3), "ttfb": 1.5, "dns": None, "connect": None, "tls": None},
    }
    if index % 5 == 1:
        result.update(ok=False, status_code=None, final_url=None, content_type=None, timings={"total": 0.0})
        result["error"] = {"kind": "connect_timeout", "message": "no connection within 10 s"}
    if index % 11 == 2:
        result["redirects"] = [{"url": url.replace("https", "http"), "status": 301}]
    if index % 97 == 3:
        result["content_type"] = '=HYPERLINK("http://evil.test","click")'
    if index % 89 == 4:
        result["url"] = url + "&q=caf\u00e9;\uff1d1"
    if index % 83 == 5:
        result["timings"] = {"total": 0.00001, "ttfb": 1e16, "wait": -0.0, "dns": 1e-7}
    if index % 997 == 6:  # json's own encoder writes this one (past 64 bits), NaN and all, and SQLite cannot read it
        result.update(attempts=2**70, timings={"total": 1.5, "ttfb": float("nan")})
    return result


def test_a_download_of_many_store_reads_is_whole_in_index_order_and_takes_the_outcome_filter(store):
    results = [sample_result(i) for i in range(4500)]  # the store reads 1,000 URL indexes at a time
    batch_id = stored_batch(store, results)
    stored = list(store.iter_results(batch_id))
    assert [r["index"] for r in stored] == list(range(4500))
    assert exported(store, batch_id, "csv") == reference_csv(store, batch_id)
    for outcome, ok in (("ok", True), ("failed", False)):
        chosen = [r for r in stored if r["ok"] is ok]
        assert json.loads(exported(store, batch_id, "json", outcome)) == chosen
        lines = exported(store, batch_id, "ndjson", outcome).split("\n")
        assert [json.loads(line) for line in lines[:-1]] == chosen and lines[-1] == ""
        assert exported(store, batch_id, "csv", outcome) == reference_csv(store, batch_id, outcome)


def test_ndjson_and_json_downloads_carry_each_result_as_the_store_holds_it(store):
    batch_id = stored_batch(store, [sample_result(i) for i in range(300)])
    texts = [Event(batch_id, 0, "result", r).data_json for r in store.iter_results(batch_id)]
    assert exported(store, batch_id, "ndjson") == "".join(text + "\n" for text in texts)
    assert exported(store, batch_id, "json") == "[\n" + ",\n".join(texts) + "\n]\n"


def with_lone_surrogates(result: dict) -> dict:
    """The result with lone surrogates in its texts, as Python's json escapes them where orjson refuses to write
    (an error message holding one; a release before the API refused them took them in any text), and a NUL, whose
    escape PostgreSQL refuses to read as JSON too (its store keeps the text, as SQLite's does)."""
    error = {"kind": "connect_error", "message": "bad byte \udc80 in the answer\x00"}
    return {**result, "ok": False, "error": error, "content_type": "text/html; \ud800charset"}


def test_a_csv_download_writes_a_lone_surrogate_as_u_fffd_and_goes_on_with_the_results_after_it(store):
    results = [sample_result(i) for i in range(1500)]
    results[700] = with_lone_surrogates(results[700])
    batch_id = stored_batch(store, results)
    stored = list(store.iter_results(batch_id))
    assert stored[700]["error"]["message"] == "bad byte \udc80 in the answer\x00", "stored as written"
    text = exported(store, batch_id, "csv")
    assert text == reference_csv(store, batch_id).replace("\udc80", "\ufffd").replace("\ud800", "\ufffd")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert (rows[700]["error_message"], rows[700]["content_type"]) == (
        "bad byte \ufffd in the answer\x00",
        "text/html; \ufffdcharset",
    )
    assert [row["index"] for row in rows] == [str(i) for i in range(1500)]
    # NDJSON and JSON carry the stored text as it is: the escapes of the lone surrogates, which json reads back.
    assert [json.loads(line) for line in exported(store, batch_id, "ndjson").splitlines()] == stored


def test_a_download_from_the_server_is_the_stored_results_whatever_they_hold(tmp_path, make_server):
    data = tmp_path / "data"
    writer = SQLiteStore(str(data / "greenbatch.db"))
    try:
        results = [sample_result(i) for i in range(2500)]
        results[1200] = with_lone_surrogates(results[1200])  # a CSV line with U+FFFD in their place, not a cut
        batch_id = stored_batch(writer, results)
        stored = list(writer.iter_results(batch_id))
        expected_csv = reference_csv(writer, batch_id).replace("\udc80", "\ufffd").replace("\ud800", "\ufffd")
    finally:
        writer.close()
    server = make_server(data_dir=data, env={"GREENBATCH_INTEGRITY_CHECK_INTERVAL": "0"})
    path = f"/api/v1/batches/{batch_id}/results"
    csv_text = server.request("GET", path, params={"format": "csv"}).content.decode()
    assert csv_text == expected_csv
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert rows[3]["content_type"] == '\'=HYPERLINK("http://evil.test","click")', "a formula is defused"
    assert rows[4]["url"].endswith("caf\u00e9;'\uff1d1") and rows[5]["redirects"] == "0" and rows[2]["redirects"] == "1"
    assert (rows[1]["ok"], rows[1]["status_code"], rows[1]["dns_ms"], rows[1]["error_kind"]) == (
        "false",
        "",
        "",
        "connect_timeout",
    )
    assert [rows[5][f"{name}_ms"] for name in ("total", "ttfb", "wait", "dns")] == ["1e-05", "1e+16", "-0.0", "1e-07"]
    ndjson = server.request("GET", path, params={"format": "ndjson"}).content.decode()
    assert [json.loads(line) for line in ndjson.split("\n")[:-1]] == stored
    assert server.request("GET", path, params={"format": "json"}).json() == stored
