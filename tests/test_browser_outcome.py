"""The batch page says what decided each row (issue 17, the live page): the reason in words, the hop where a
row diverged, matched / mismatched / warn counters, a breakdown and a filter by reason, and the PASS/FAIL
verdict with each threshold, at 1280 px and at 390 px."""

from __future__ import annotations

import json
import os

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
        reason.format("error", "a response", "refused: connection refused"): "no response (refused: connection refused)",
        reason.format("check[2]", "contains", "absent"): "check[2]: body does not contain 'Add to cart'",
        reason.format("check[0]", "0", "0"): "check[0]: $.stock is 0, not over 0",
        reason.format("check[1]", "present", "absent"): "check[1]: no Cache-Control header",
        reason.format("check[3]", "500", "812"): "check[3]: time.total 812 ms, not under 500 ms",
        reason.format("check[9]", "1", "2"): "check[9]: 2 where 1 was expected",
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
    warned = {"ok": True, "outcome": "warn", "reasons": [], "warnings": [{"kind": "temporary_redirect", "evidence": "302 at hop 0"}]}
    assert words(page, f"o.resultWords({json.dumps(warned)}, [])") == "temporary redirect (302 at hop 0)"
