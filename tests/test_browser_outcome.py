"""The batch page says what decided each row (issue 17, the live page): the reason in words, the hop where a
row diverged, matched / mismatched / warn counters, a breakdown and a filter by reason, and the PASS/FAIL
verdict with each threshold, at 1280 px and at 390 px."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.support.server import ARTIFACTS, CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
]
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect

FINISHED = 20_000  # ms a small batch gets to finish in the browser's eyes
MARKUP = "<img src=x onerror=alert(1)>"


def shot(tab, name: str) -> None:
    """A full-page screenshot in test-artifacts/, named for the screen width."""
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"outcome-{name}-{tab.viewport_size['width']}.png"), full_page=True)


def words(tab, expression: str):
    """Evaluate `expression` with static/outcome.js imported as `o`, in the page."""
    return tab.evaluate(f"async () => {{ const o = await import('/static/outcome.js'); return {expression}; }}")


def test_reasons_warnings_and_thresholds_read_as_sentences(page, server):
    page.goto(server.url("/"))
    reason = "o.reasonWords({{rule: '{}', expected: {!r}, actual: {!r}}}, {{batchChecks: checks}})"
    checks = [
        {"source": "json", "path": "$.stock", "op": ">", "value": 0},
        {"source": "header", "name": "Cache-Control", "op": "present"},
        {"source": "body", "op": "contains", "value": "Add to cart"},
        {"source": "time.total", "op": "<", "value": 500},
    ]
    cases = {
        reason.format("expect.final_url", "https://new.example/a", "https://new.example/"): (
            "lands on https://new.example/ instead of https://new.example/a"
        ),
        reason.format("expect.status", "301", "302"): "302 where 301 was expected",
        reason.format("expect.status", "301,308", "302"): "302 where 301 or 308 was expected",
        reason.format("expect.final_status", "2xx", "404"): "ends on 404 where 2xx was expected",
        reason.format("expect.max_hops", "3", "4"): "4 hops, at most 3 expected",
        reason.format("expect.max_hops", "0", "1"): "1 hop, at most 0 expected",
        reason.format("accept_status", "200-399", "404"): "404 is not 200–399 (accept_status)",
        reason.format(
            "error", "a response", "refused: connection refused"
        ): "no response (refused: connection refused)",
        # Checks: `expected` and `actual` as app/core/checks.py gives them.
        reason.format("check[2]", 'body contains "Add to cart"', "not found in the body"): (
            "check[2]: body does not contain 'Add to cart'"
        ),
        reason.format("check[0]", "json $.stock > 0", "0"): "check[0]: $.stock is 0, not over 0",
        reason.format(
            "check[0]", "json $.stock > 0", "the body is not JSON"
        ): "check[0]: $.stock: the body is not JSON",
        reason.format("check[1]", "header Cache-Control present", "absent"): "check[1]: no Cache-Control header",
        reason.format("check[3]", "time.total < 500", "812.3 ms"): "check[3]: time.total 812 ms, not under 500 ms",
        reason.format("check[9]", 'body contains "x"', "not found in the body"): (
            'check[9]: not found in the body (expected body contains "x")'
        ),
        reason.format("bot_challenge", "the site's own response", "cf-mitigated: challenge"): (
            "bot challenge (cf-mitigated: challenge)"
        ),
        reason.format("redirect_to_root", "a page other than the root", "http://a/x -> http://a/"): (
            "lands on the site's root (http://a/x -> http://a/)"
        ),
        "o.thresholdWords('failed_rate', 0.01)": "failed ≤ 1%",
        "o.thresholdWords('p95_ms', 500)": "p95 ≤ 500 ms",
        "o.thresholdWords('min_ok', 9900)": "ok ≥ 9,900",
        "o.thresholdValue('warn_rate', 1 / 3)": "33.33%",
    }
    said = words(page, f"(() => {{ const checks = {json.dumps(checks)}; return [{', '.join(cases)}]; }})()")
    assert dict(zip(cases.values(), said, strict=True)) == {want: want for want in cases.values()}, said
    # A row's error already says "no response" and "not accepted": its words add only what it does not say.
    row = {
        "ok": False,
        "outcome": "failed",
        "error": {"kind": "status", "message": "404 is not an accepted status (200-399)"},
        "reasons": [{"rule": "accept_status", "expected": "200-399", "actual": "404"}],
        "warnings": [],
    }
    assert words(page, f"o.resultWords({json.dumps(row)}, [])") == ""
    warned = {
        "ok": True,
        "outcome": "warn",
        "reasons": [],
        "warnings": [{"kind": "temporary_redirect", "evidence": "302 at hop 0"}],
    }
    assert words(page, f"o.resultWords({json.dumps(warned)}, [])") == "temporary redirect (302 at hop 0)"


# -- against a real server: a batch with expectations, warnings and thresholds ------------------------


@pytest.fixture(scope="module")
def judged(server, target):
    """A finished batch of six rows: one matches, four miss an expectation each, one redirects temporarily."""
    t = target.url
    urls = [
        {"url": t("/redirect/1?status=301"), "expect": {"status": 301, "final_url": t("/redirect/0?status=301")}},
        {"url": t("/redirect/1?status=302"), "expect": {"status": 301}},
        {"url": t("/redirect/4?status=301"), "expect": {"max_hops": 3}},
        {"url": t("/redirect/1?status=301"), "expect": {"final_url": t("/elsewhere")}, "meta": {"note": MARKUP}},
        {"url": t("/status/404"), "expect": {"final_status": 200}},
        t("/redirect/1?status=302"),
    ]
    checks = [{"source": "body", "op": "contains", "value": "done"}]  # what /redirect/N ends on
    batch = server.submit(urls, concurrency=6, thresholds={"failed_rate": 0.5, "p95_ms": 10_000}, checks=checks)
    return server.wait(batch["id"])


def row(tab, index: int):
    """The result row of URL `index`."""
    return tab.locator(f'tr.result-row[data-index="{index}"]')


@pytest.fixture(params=["desktop", "phone"])
def screen(request):
    """The page at 1280 px (`page`), then at 390 px (`phone`)."""
    return request.getfixturevalue("page" if request.param == "desktop" else "phone")


def test_each_row_says_in_words_what_decided_it_the_drawer_marks_the_hop_and_reasons_filter(
    screen, server, target, judged
):
    tab = screen
    tab.goto(server.url(f"/batches/{judged['id']}"))
    expect(tab.locator("#live-mode")).to_contain_text("all results loaded", timeout=FINISHED)
    t = target.url
    expect(row(tab, 0).locator(".col-outcome")).to_have_text("")
    expect(row(tab, 1).locator(".col-outcome")).to_contain_text("302 where 301 was expected")
    expect(row(tab, 2).locator(".col-outcome")).to_contain_text("4 hops, at most 3 expected")
    expect(row(tab, 3).locator(".col-outcome")).to_contain_text(
        f"lands on {t('/redirect/0?status=301')} instead of {t('/elsewhere')}"
    )
    expect(row(tab, 4).locator(".col-outcome")).to_contain_text("ends on 404 where 200 was expected")
    expect(row(tab, 4).locator(".col-outcome")).to_contain_text("check[0]: body does not contain 'done'")
    expect(row(tab, 5).locator(".col-outcome")).to_have_text("warn temporary redirect (302 at hop 0)")
    expect(row(tab, 5)).to_have_class(re.compile(r"\bwarn\b"))
    # Counters: with expectations, ok and failed read matched and mismatched; warn has its own.
    expect(tab.locator("#label-ok")).to_have_text("Matched")
    expect(tab.locator("#label-failed")).to_have_text("Mismatched")
    # The counters add up to the URLs, as the bar does: Matched leaves out the warn row that Warn counts.
    assert [tab.locator(f"#count-{k}").text_content() for k in ("ok", "warn", "failed")] == ["1", "1", "4"]
    # The drawer marks the hop where the row diverged, and shows meta as text, never markup.
    row(tab, 1).click()
    diverged = tab.locator('tr.detail[data-detail-for="1"] .chain li.diverged')
    expect(diverged).to_have_count(1)
    expect(diverged).to_contain_text("diverged here: 302 where 301 was expected")
    expect(tab.locator('tr.detail[data-detail-for="1"] .chain li').first).to_have_class("diverged")
    row(tab, 3).click()
    drawer = tab.locator('tr.detail[data-detail-for="3"]')
    expect(drawer.locator(".facts")).to_contain_text(MARKUP)
    expect(drawer.locator(".facts dd", has_text="final URL")).to_have_count(1)
    assert tab.locator("#results img").count() == 0
    assert tab.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth"), "the page scrolls sideways"
    shot(tab, "judged")
    # Filters: warn, then one reason from the breakdown; both live in the address.
    tab.locator('.segmented [data-filter="warn"]').click()
    expect(tab.locator("tr.result-row")).to_have_count(1)
    assert row(tab, 5).count() == 1 and "outcome=warn" in tab.url
    tab.locator('.segmented [data-filter="all"]').click()
    tab.locator('#by-reason button[data-value="expect.status"]').click()
    expect(tab.locator("tr.result-row")).to_have_count(1)
    assert row(tab, 1).count() == 1 and "reason=expect.status" in tab.url
    expect(tab.locator("#facet-chip")).to_have_text("reason expect.status ✕")


def test_a_row_that_ends_while_the_page_is_open_says_why_and_the_counters_move(page, server, target):
    urls = [
        {"url": target.url("/ok"), "expect": {"final_status": 200}},
        {"url": target.url("/delay/1500"), "expect": {"final_status": 201}},
        target.url("/delay/1500?n=2"),
    ]
    batch = server.submit(urls, thresholds={"min_ok": 2})
    page.goto(server.url(f"/batches/{batch['id']}"))
    expect(page.locator("#verdict")).to_contain_text("decided when the batch ends")
    expect(page.locator("#verdict li")).to_have_text(["ok ≥ 2"])
    expect(row(page, 1).locator(".col-outcome")).to_have_text("ends on 200 where 201 was expected", timeout=FINISHED)
    expect(page.locator("#count-failed")).to_have_text("1")
    expect(page.locator("#label-failed")).to_have_text("Mismatched")
    expect(page.locator("#verdict .verdict-word")).to_have_text("PASS", timeout=FINISHED)
    expect(page.locator("#verdict li")).to_have_text(["ok ≥ 2 ✓"])


def test_the_banner_takes_the_verdict_from_the_batchs_final_event(page, server, target):
    # The stream's `end` message (the whole batch again) and its close are held back: the final event alone must
    # say FAIL (the page reads the batch again only when the stream ends or fails).
    def without_end(ws):
        upstream = ws.connect_to_server()
        upstream.on_message(lambda message: None if '"type":"end"' in str(message) else ws.send(message))
        upstream.on_close(lambda code, reason: None)  # nor its close, which would send the page to read the batch

    page.route_web_socket(re.compile(r"/ws/batches/"), without_end)
    batch = server.submit([target.url("/delay/1500"), target.url("/status/404")], thresholds={"min_ok": 2})
    page.goto(server.url(f"/batches/{batch['id']}"))
    expect(page.locator("#verdict")).to_contain_text("decided when the batch ends")
    expect(page.locator("#verdict .verdict-word")).to_have_text("FAIL", timeout=FINISHED)
    expect(page.locator("#verdict li")).to_have_text(["ok ≥ 2 ✗ 1"])


def test_a_cancelled_batch_shows_fail_naming_the_cancelled_urls(page, server, target):
    batch = server.submit([target.url(f"/delay/2000?banner={i}") for i in range(3)], concurrency=1)
    assert server.request("POST", f"/api/v1/batches/{batch['id']}/cancel").status_code == 200
    cancelled = server.wait(batch["id"])["counts"]["cancelled"]
    page.goto(server.url(f"/batches/{batch['id']}"))
    expect(page.locator("#verdict .verdict-word")).to_have_text("FAIL")
    expect(page.locator('#verdict li[data-threshold="cancelled"]')).to_have_text(f"cancelled ≤ 0 ✗ {cancelled}")
    shot(page, "cancelled")


def test_the_verdict_banner_says_fail_and_lists_each_threshold_with_its_limit_and_what_missed_it(page, server, judged):
    page.goto(server.url(f"/batches/{judged['id']}"))
    # 4 of 6 failed, past the 50 % limit; p95 met.
    expect(page.locator("#verdict")).to_have_class(re.compile(r"\bfail\b"))
    expect(page.locator("#verdict .verdict-word")).to_have_text("FAIL")
    expect(page.locator('#verdict li[data-threshold="failed_rate"]')).to_have_text("failed ≤ 50% ✗ 66.67%")
    expect(page.locator('#verdict li[data-threshold="p95_ms"]')).to_have_text("p95 ≤ 10.0 s ✓")


# -- the web form: a CSV with a header ------------------------------------------------------------------


def test_a_pasted_csv_shows_the_columns_it_recognised_and_is_sent_as_csv_with_the_verdict_options(
    screen, server, target
):
    t = target.url
    pasted = (
        "old,new,expected_status,owner\n"
        f"{t('/redirect/1?status=301')},{t('/redirect/0?status=301')},301,alice\n"
        f"{t('/status/404')},{t('/ok')},,{MARKUP}\n"
    )
    screen.goto(server.url("/"))
    screen.fill("#urls", pasted)
    expect(screen.locator("#csv-columns li")).to_have_text(["old → url", "new → expected_final_url", "expected_status"])
    expect(screen.locator("#csv-columns .csv-meta")).to_have_text("meta: owner")
    expect(screen.locator("#url-count")).to_have_text("2 URLs")
    screen.locator("#verdict-options summary").click()
    screen.select_option("#url_match", "ignore_query")
    screen.fill("#failed_rate", "50")
    screen.fill("#p95_ms", "5000")
    screen.screenshot(path=str(ARTIFACTS / f"outcome-form-{screen.viewport_size['width']}.png"), full_page=True)
    screen.click("#submit")
    screen.wait_for_url(re.compile(r"/batches/[0-9a-f]+$"))
    expect(screen.locator("#batch-options")).to_contain_text("final URL match: ignore query")
    batch = server.wait(screen.url.rsplit("/", 1)[1])
    assert batch["options"]["thresholds"] == {"failed_rate": 0.5, "p95_ms": 5000}
    assert batch["options"]["url_match"] == "ignore_query"
    results = server.request("GET", f"/api/v1/batches/{batch['id']}/results").json()["results"]
    assert [(r["meta"], r["outcome"]) for r in results] == [({"owner": "alice"}, "ok"), ({"owner": MARKUP}, "failed")]
    assert results[1]["reasons"][0]["rule"] == "expect.final_url"


def test_a_large_csv_file_shows_its_header_from_its_first_line_alone(page, server, target, tmp_path):
    big = tmp_path / "moves.csv"
    row = f"{target.url('/ok')},{target.url('/ok')},a note that makes each line longer than most\n"
    big.write_text("Source, Destination ,note\n" + row * 40_000)
    assert big.stat().st_size > 2 * 1024 * 1024, "over 2 MiB: sent as a file, not put in the editor"
    page.goto(server.url("/"))
    page.set_input_files("#file", str(big))
    expect(page.locator("#csv-columns li")).to_have_text(["Source → url", "Destination → expected_final_url"])
    expect(page.locator("#csv-columns .csv-meta")).to_have_text("meta: note")
    expect(page.locator("#url-count")).to_have_text("40,000 URLs", timeout=15_000)
    page.click("#file-clear")
    expect(page.locator("#csv-columns")).to_be_hidden()


def test_a_refused_row_of_a_pasted_csv_is_marked_on_its_line(page, server, target):
    page.goto(server.url("/"))
    page.fill("#urls", f"url,expected_status\n{target.url('/ok')},200\nftp://x,200\n")
    page.click("#submit")
    expect(page.locator("#url-errors li").first).to_contain_text("line 3: ftp://x,200 — only http:// and https://")
    expect(page.locator("#gutter .bad")).to_have_text(["3"])
    expect(page.locator("#form-error")).to_contain_text("1 URL cannot be fetched")
