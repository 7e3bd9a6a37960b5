"""Expectations per URL, the warn tier and the reasons, through the real server against the real target."""

from __future__ import annotations

import codecs
import csv
import io
import json
import sqlite3

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import error_of
from tests.support.viewers import watch


def planted_csv(target, rows: int) -> tuple[str, dict[int, str]]:
    """A migration CSV (old, new, expected_status, note) with a planted mismatch every 100 rows, and the rule
    each planted row must fail by: a wrong final URL, a 302 where 301 was expected, a chain of 3 (max_hops 1),
    a redirect loop, a target that answers 404."""
    plants = [
        ("expect.final_url", lambda i: (f"/redirect-to?url=/page/other{i}&status=301", f"/page/{i}", "301", "")),
        ("expect.status", lambda i: (f"/redirect-to?url=/page/{i}&status=302", f"/page/{i}", "301", "")),
        ("expect.max_hops", lambda i: ("/redirect/3?status=301", "/redirect/0?status=301", "301", "1")),
        ("error", lambda i: ("/loop", f"/page/{i}", "301", "")),
        ("expect.final_status", lambda i: ("/redirect-to?url=/status/404&status=301", "/status/404", "301", "")),
    ]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["old", "new", "expected_status", "max_hops", "note"])
    planted: dict[int, str] = {}
    for i in range(rows):
        if i % 100 == 50:
            rule, make = plants[(i // 100) % len(plants)]
            old, new, status, hops = make(i)
            planted[i] = rule
        else:
            old, new, status, hops = f"/redirect-to?url=/page/{i}&status=301", f"/page/{i}", "301", ""
        writer.writerow([old, new, status, hops, f"row {i}"])
    return out.getvalue(), planted


def submit_csv(server, text: str, **options) -> dict:
    """Submit a CSV body with options in the query string (objects as JSON text)."""
    params = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in options.items()}
    response = server.request("POST", "/api/v1/batches", data=text, headers={"Content-Type": "text/csv"}, params=params)
    assert response.status_code == 201, response.text[:500]
    return response.json()


@pytest.fixture(scope="module")
def migration(server, target) -> tuple[dict, list[dict], dict[int, str]]:
    """A 500-row migration CSV with five planted mismatches, run to its end; every new URL must answer 200."""
    text, planted = planted_csv(target, 500)
    batch = submit_csv(server, text, base_url=target.url("/"), expect={"final_status": 200}, concurrency=20)
    server.wait(batch["id"], timeout=60)
    return server.batch(batch["id"]), server.results(batch["id"]), planted


def test_a_migration_csv_reports_each_planted_row_by_the_rule_that_failed_it(migration):
    batch, results, planted = migration
    assert [r["index"] for r in results] == list(range(500)), "rows come back in input order"
    failed = {r["index"]: r["reasons"][0]["rule"] for r in results if r["outcome"] == "failed"}
    assert failed == planted
    assert batch["counts"]["failed"] == len(planted)
    assert batch["stats"]["by_reason"]["expect.status"] == 1


def test_a_csv_rows_other_columns_come_back_as_meta_in_order_with_the_rows_expectations(migration, target):
    _, results, _ = migration
    row = results[7]
    assert row["meta"] == {"note": "row 7"}
    assert row["expect"] == {"status": 301, "final_url": target.url("/page/7"), "final_status": 200}
    assert row["outcome"] == "ok" and row["ok"] is True and row["reasons"] == []


def test_a_wrong_final_url_says_where_it_landed_instead(migration, target):
    _, results, _ = migration
    reason = results[50]["reasons"][0]
    assert reason == {
        "rule": "expect.final_url",
        "expected": target.url("/page/50"),
        "actual": target.url("/page/other50"),
        "hop": 1,
    }
    assert results[50]["error"]["kind"] == "mismatch"


def test_the_results_filter_by_reason_and_by_outcome(server, migration):
    batch, _, planted = migration
    by_reason = server.results(batch["id"], reason="expect.max_hops")
    assert [r["index"] for r in by_reason] == [i for i, rule in planted.items() if rule == "expect.max_hops"]
    assert [r["index"] for r in server.results(batch["id"], outcome="failed")] == sorted(planted)
    assert server.results(batch["id"], outcome="warn") == []


def warned_fetches(server) -> float:
    """greenbatch_fetches_total{outcome="warn"} on /metrics."""
    text = server.request("GET", "/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "greenbatch_fetches_total" and sample.labels.get("outcome") == "warn"
    )


def test_bot_walls_and_a_deep_url_sent_to_the_root_end_warn_while_ordinary_pages_end_ok(server, target):
    urls = [target.url("/challenge"), target.url("/bot-status"), target.url("/deep/blog/2019/post"), target.url("/ok")]
    warned_before = warned_fetches(server)
    batch = server.submit(urls)
    server.wait(batch["id"])
    assert warned_fetches(server) - warned_before == 3, "/metrics counts the warn outcome"
    results = server.results(batch["id"])
    assert [(r["outcome"], [w["kind"] for w in r["warnings"]]) for r in results] == [
        ("warn", ["bot_challenge"]),
        ("warn", ["bot_challenge"]),
        ("warn", ["redirect_to_root"]),
        ("ok", []),
    ]
    assert all(r["ok"] for r in results), "ok stays true for warn"
    done = server.batch(batch["id"])
    assert done["counts"]["warn"] == 3 and done["counts"]["ok"] == 4
    assert done["stats"]["by_warning"] == {"bot_challenge": 2, "redirect_to_root": 1}
    assert [r["index"] for r in server.results(batch["id"], outcome="warn")] == [0, 1, 2]
    assert [r["index"] for r in server.results(batch["id"], outcome="ok")] == [0, 1, 2, 3], "ok holds warn, as counts"
    assert [r["index"] for r in server.results(batch["id"], reason="bot_challenge")] == [0, 1]


def test_a_known_challenge_page_in_a_body_kept_for_a_check_ends_warn_with_its_evidence(server, target):
    vendors = ["cloudflare", "datadome", "perimeterx", "akamai", "title-only"]
    urls = [target.url(f"/challenge-page/{vendor}") for vendor in vendors] + [target.url("/shop/1")]
    kept = [{"source": "body", "op": "not_contains", "value": "Sold out"}]  # the check that keeps bodies
    results = server.results(server.wait(server.submit(urls, checks=kept)["id"])["id"])
    assert [(r["outcome"], r["warnings"]) for r in results] == [
        (
            "warn",
            [
                {
                    "kind": "bot_challenge",
                    "evidence": "Cloudflare challenge page: <title>Just a moment...</title> and _cf_chl_opt",
                }
            ],
        ),
        ("warn", [{"kind": "bot_challenge", "evidence": "DataDome challenge page: captcha-delivery.com"}]),
        ("warn", [{"kind": "bot_challenge", "evidence": "PerimeterX challenge page: _pxAppId"}]),
        ("warn", [{"kind": "bot_challenge", "evidence": "Akamai challenge page: /_sec/cp_challenge/"}]),
        ("ok", []),
        ("ok", []),
    ]
    # Without a check that keeps it, no body is read for this: the page is what its status says.
    [plain] = server.results(server.wait(server.submit([urls[3]])["id"])["id"])
    assert (plain["outcome"], plain["warnings"]) == ("ok", [])


def test_warn_as_turns_a_kind_into_a_failure(server, target):
    result = server.fetch_one(target.url("/challenge"), warn_as={"bot_challenge": "failed"})
    assert result["outcome"] == "failed" and result["ok"] is False
    assert result["reasons"][0]["rule"] == "bot_challenge"


def test_url_items_may_be_objects_with_expectations_and_meta_and_the_batch_gives_defaults(server, target):
    batch = server.submit(
        [
            {"url": "/redirect-to?url=/page/a&status=301", "expect": {"final_url": "/page/a"}, "meta": {"sku": "A1"}},
            "/redirect-to?url=/page/b&status=308",
        ],
        base_url=target.url("/"),
        expect={"status": "301,308"},
    )
    server.wait(batch["id"])
    first, second = server.results(batch["id"])
    assert first["expect"] == {"status": "301,308", "final_url": target.url("/page/a")}
    assert first["meta"] == {"sku": "A1"} and first["outcome"] == "ok"
    assert second["expect"] == {"status": "301,308"} and second["outcome"] == "ok"
    shown = server.batch(batch["id"])["options"]
    assert shown["expect"] == {"status": "301,308"} and shown["base_url"] == target.url("/")
    assert "rows" not in shown, "each result carries its own row's expectations, not the batch"


def test_a_bad_expectation_is_a_400_naming_the_item_and_field(server, target):
    response = server.request(
        "POST",
        "/api/v1/batches",
        json={"urls": [target.url("/ok"), {"url": target.url("/ok"), "expect": {"status": "3xx9"}}]},
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["details"][0]["field"] == "urls[1].expect"
    assert "status" in error["details"][0]["message"]
    bad_option = server.request(
        "POST", "/api/v1/batches", json={"urls": [target.url("/ok")], "options": {"warn_as": {"x": "warn"}}}
    )
    assert bad_option.status_code == 400
    assert error_of(bad_option)["details"][0]["field"] == "options.warn_as"


def test_without_thresholds_the_verdict_fails_when_a_row_failed(migration):
    batch, _, planted = migration
    assert batch["verdict"] == {"pass": False, "violations": []}


def test_thresholds_decide_the_verdict_and_name_each_broken_one_with_its_value(server, target):
    urls = [target.url("/ok")] * 9 + [target.url("/status/500")]
    loose = server.submit(urls, thresholds={"failed_rate": 0.1, "min_ok": 9})
    strict = server.submit(urls, thresholds={"failed_rate": 0.05, "p95_ms": 0, "min_ok": 10})
    assert server.batch(loose["id"])["verdict"] is None or server.batch(loose["id"])["status"] != "running"
    assert server.wait(loose["id"])["verdict"] == {"pass": True, "violations": []}
    verdict = server.wait(strict["id"])["verdict"]
    assert verdict["pass"] is False
    assert [(v["threshold"], v["limit"], v["actual"]) for v in verdict["violations"] if v["threshold"] != "p95_ms"] == [
        ("failed_rate", 0.05, 0.1),
        ("min_ok", 10, 9),
    ]
    assert [v["threshold"] for v in verdict["violations"]] == ["failed_rate", "p95_ms", "min_ok"]


def test_the_final_batch_event_on_the_websocket_carries_the_verdict_the_batch_shows(server, target):
    urls = [target.url("/ok"), target.url("/status/404"), target.url("/ok")]
    batch = server.submit(urls, thresholds={"failed_rate": 0.2, "min_ok": 2})
    got = watch(server, f"/ws/batches/{batch['id']}?after=0")
    final = got.events[-1]
    assert (final["type"], final["data"]["status"]) == ("batch", "done")
    assert final["data"]["verdict"] == {
        "pass": False,
        "violations": [{"threshold": "failed_rate", "limit": 0.2, "actual": 0.3333}],
    }
    assert final["data"]["verdict"] == server.batch(batch["id"])["verdict"] == got.of("end")[0]["batch"]["verdict"]


def test_the_csv_export_adds_outcome_reasons_expectations_then_the_meta_columns_in_input_order(server, migration):
    batch, results, planted = migration
    text = server.request("GET", batch["links"]["csv"]).text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][-6:] == [
        "outcome",
        "reasons",
        "expected_status",
        "expected_final_url",
        "expected_final_status",
        "note",
    ]
    assert [row[0] for row in rows[1:]] == [str(i) for i in range(500)]
    named = dict(zip(rows[0], rows[51]))
    assert named["outcome"] == "failed" and named["note"] == "row 50"
    assert named["reasons"].startswith("expect.final_url: expected ") and named["expected_status"] == "301"
    assert dict(zip(rows[0], rows[8]))["outcome"] == "ok"
    lines = server.request("GET", batch["links"]["ndjson"]).text.splitlines()
    assert json.loads(lines[50])["reasons"] == results[50]["reasons"]
    assert json.loads(lines[50])["meta"] == {"note": "row 50"}


def test_a_csv_meta_value_that_looks_like_a_formula_is_defused(server, target):
    body = f'url,note\n{target.url("/ok")},=HYPERLINK("http://evil")\n'
    batch = submit_csv(server, body)
    server.wait(batch["id"])
    rows = list(csv.reader(io.StringIO(server.request("GET", batch["links"]["csv"]).text)))
    assert dict(zip(rows[0], rows[1]))["note"] == '\'=HYPERLINK("http://evil")'


def test_an_expected_final_url_given_as_a_path_without_a_base_is_a_400_naming_it(server, target):
    response = server.request(
        "POST",
        "/api/v1/batches",
        json={"urls": [target.url("/ok"), {"url": target.url("/ok"), "expect": {"final_url": "/x"}}]},
    )
    assert response.status_code == 400
    assert error_of(response)["details"][0]["field"] == "urls[1].expect.final_url"


def test_a_bad_expectation_in_a_csv_is_a_400_naming_its_line(server, target):
    body = f"url,expected_status\n{target.url('/ok')},301\n{target.url('/ok')},3oo\n"
    response = server.request("POST", "/api/v1/batches", data=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 400
    assert error_of(response)["details"][0]["field"] == "line 3"


def test_a_rerun_of_the_failed_keeps_each_rows_expectations_and_meta(server, target):
    batch = server.submit(
        [
            {"url": target.url("/redirect-to?url=/page/a&status=301"), "expect": {"status": 301}, "meta": {"n": 0}},
            {"url": target.url("/redirect-to?url=/page/b&status=302"), "expect": {"status": 301}, "meta": {"n": 1}},
        ]
    )
    server.wait(batch["id"])
    response = server.request("POST", f"/api/v1/batches/{batch['id']}/rerun", json={"only": "failed"})
    assert response.status_code == 201, response.text
    rerun = server.wait(response.json()["id"])
    [again] = server.results(rerun["id"])
    assert (again["meta"], again["expect"], again["outcome"]) == ({"n": 1}, {"status": 301}, "failed")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"options": {"base_url": "https://example.com/"}}, "urls"),  # no urls at all
        ({"urls": 5, "options": {"base_url": "https://example.com/"}}, "urls"),
        ({"urls": ["/ok", "http://[x/"], "options": {"base_url": "https://example.com/"}}, "urls[1]"),
    ],
)
def test_a_base_url_with_urls_that_are_not_a_list_of_urls_is_a_400_naming_them(server, body, field):
    response = server.request("POST", "/api/v1/batches", json=body)
    assert response.status_code == 400, response.text
    assert error_of(response)["details"][0]["field"] == field, response.text


def test_an_option_nested_too_deep_in_a_query_string_is_a_400_naming_it(server, target):
    response = server.request(
        "POST",
        "/api/v1/batches?thresholds=" + "[" * 1500,
        data=target.url("/ok"),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 400, response.text
    assert error_of(response)["details"][0]["field"] == "options.thresholds"


def test_a_rerun_with_remap_moves_the_expected_final_urls_too(server, target):
    old, new = target.url("/"), target.url("/").replace("127.0.0.1", "localhost")
    urls = [
        {"url": "/redirect-to?url=/page/a&status=301", "expect": {"final_url": "/page/a"}},
        {"url": "/redirect-to?url=/page/b&status=301"},
    ]
    batch = server.submit(urls, base_url=old, expect={"final_url": "/page/b"})
    assert [r["outcome"] for r in server.results(server.wait(batch["id"])["id"])] == ["ok", "ok"]
    response = server.request(
        "POST", f"/api/v1/batches/{batch['id']}/rerun", json={"remap": [{"from": old, "to": new}]}
    )
    assert response.status_code == 201, response.text
    results = server.results(server.wait(response.json()["id"])["id"])
    assert [r["url"] for r in results] == [
        new + "redirect-to?url=/page/a&status=301",
        new + "redirect-to?url=/page/b&status=301",
    ]
    assert [(r["outcome"], r["expect"]["final_url"]) for r in results] == [
        ("ok", new + "page/a"),
        ("ok", new + "page/b"),
    ]


def test_a_batch_stored_with_its_row_specs_in_its_options_still_exports_and_reruns_them(make_server, target):
    server = make_server()
    urls = [
        {"url": target.url("/redirect-to?url=/page/a&status=302"), "expect": {"status": 301}, "meta": {"sku": "A1"}},
        target.url("/ok"),
    ]
    batch = server.wait(server.submit(urls)["id"])
    server.stop()
    # As an earlier version stored it: the specs in the batch's options, no row_specs row.
    with sqlite3.connect(server.data_dir / "greenbatch.db") as conn:
        [(specs,)] = conn.execute("SELECT specs FROM row_specs WHERE batch_id = ?", (batch["id"],))
        options = json.loads(conn.execute("SELECT options FROM batches WHERE id = ?", (batch["id"],)).fetchone()[0])
        conn.execute("UPDATE batches SET options = ?", (json.dumps({**options, "rows": json.loads(specs)}),))
        conn.execute("DELETE FROM row_specs")
    server = make_server(data_dir=server.data_dir)  # which moves them to row_specs on opening the file
    exported = server.request("GET", f"/api/v1/batches/{batch['id']}/results", params={"format": "csv"}).text
    assert next(csv.reader(io.StringIO(exported)))[-1] == "sku"
    assert "rows" not in server.batch(batch["id"])["options"]
    response = server.request("POST", f"/api/v1/batches/{batch['id']}/rerun", json={"only": "failed"})
    [again] = server.results(server.wait(response.json()["id"])["id"])
    assert (again["outcome"], again["expect"], again["meta"]) == ("failed", {"status": 301}, {"sku": "A1"})


def ok_fetches_with_error(server, kind: str) -> float:
    """greenbatch_fetches_total{outcome="ok", error_kind=kind} on /metrics."""
    text = server.request("GET", "/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "greenbatch_fetches_total" and sample.labels == {"outcome": "ok", "error_kind": kind}
    )


def test_a_row_its_expectations_pass_carries_no_error_though_accept_status_refuses_its_status(server, target):
    body = "old,new\n/redirect-to?url=/status/404&status=301,/status/404\n"
    batch = submit_csv(server, body, base_url=target.url("/"))
    done = server.wait(batch["id"])
    [row] = server.results(batch["id"])
    assert (row["outcome"], row["ok"], row["error"]) == ("ok", True, None)
    assert done["stats"]["by_error"] == {}
    assert server.results(batch["id"], error="status") == []
    exported = dict(zip(*csv.reader(io.StringIO(server.request("GET", batch["links"]["csv"]).text))))
    assert (exported["ok"], exported["error_kind"]) == ("true", "")
    assert ok_fetches_with_error(server, "status") == 0


@pytest.mark.parametrize("status", ["²", "٣٠١", "301²"])
def test_an_expected_status_in_digits_other_than_ascii_is_a_400_naming_its_line(server, target, status):
    body = f"url,expected_status,expected_final_status\n{target.url('/ok')},{status},{status}\n"
    response = server.request("POST", "/api/v1/batches", data=body.encode(), headers={"Content-Type": "text/csv"})
    assert response.status_code == 400, response.text[:300]
    assert error_of(response)["details"][0]["field"] == "line 2"


def test_a_csv_that_starts_with_a_byte_order_mark_keeps_its_header_and_expectations(server, target):
    body = f"url,target,note\n{target.url('/redirect-to?url=/page/b&status=301')},{target.url('/page/a')},x\n"
    response = server.request(
        "POST", "/api/v1/batches", data=codecs.BOM_UTF8 + body.encode(), headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 201, response.text[:300]
    [row] = server.results(server.wait(response.json()["id"])["id"])
    assert (row["url"], row["expect"], row["meta"]) == (
        target.url("/redirect-to?url=/page/b&status=301"),
        {"final_url": target.url("/page/a")},
        {"note": "x"},
    )
    assert row["reasons"][0]["rule"] == "expect.final_url"


def test_a_csv_header_with_more_meta_columns_than_a_batch_takes_is_a_400_naming_the_limit(server, target):
    header = "url," + ",".join(f"c{i}" for i in range(51))
    body = f"{header}\n{target.url('/ok')}" + ",x" * 51 + "\n"
    response = server.request("POST", "/api/v1/batches", data=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 400, response.text[:300]
    [detail] = error_of(response)["details"]
    assert detail == {
        "field": "line 1",
        "message": "a batch has at most 50 distinct meta columns (server limit), not 51",
    }


def test_json_rows_whose_meta_keys_together_pass_the_limit_are_a_400_naming_the_first_row_past_it(server, target):
    urls = [{"url": target.url("/ok"), "meta": {f"r{row}k{key}": 1 for key in range(20)}} for row in range(3)]
    urls.insert(1, {"url": target.url("/ok"), "meta": {"r0k0": 2}})  # a column already counted adds none
    response = server.request("POST", "/api/v1/batches", json={"urls": urls})
    assert response.status_code == 400, response.text[:300]
    [detail] = error_of(response)["details"]
    assert detail["field"] == "urls[3].meta" and "at most 50 distinct meta columns" in detail["message"]
    ok = server.request("POST", "/api/v1/batches", json={"urls": urls[:3]})
    assert ok.status_code == 201, "40 distinct columns are within the limit"
