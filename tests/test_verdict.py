"""What a result means: the one evaluator's outcomes, reasons and warnings, fed finished fetches."""

from __future__ import annotations

from app.core.config import Config
from app.core.options import BatchOptions
from app.core.results import Result
from app.core.verdict import CHALLENGE_BYTES, challenge_page, evaluate, url_key

OPTIONS = BatchOptions.defaults(Config())


def fetched(url: str, status: int, final_url: str | None = None, hops: list[tuple[str, int]] = ()) -> Result:
    """A finished fetch of `url` that ended with `status` at `final_url` after redirects `hops` (url, status)."""
    return Result(
        index=0,
        url=url,
        final_url=final_url or url,
        status_code=status,
        redirects=[{"url": u, "status": s} for u, s in hops],
    )


def judge(result: Result, headers=None, expect=None, url_match="exact", warn_as=None):
    """The evaluator's verdict on a result, under the default batch options."""
    return evaluate(result, headers or {}, OPTIONS, expect, url_match, warn_as)


def test_without_expectations_accept_status_decides_and_names_itself():
    assert judge(fetched("https://a.example/x", 200)) == ("ok", [], [])
    outcome, reasons, _ = judge(fetched("https://a.example/x", 404))
    assert outcome == "failed"
    assert reasons == [{"rule": "accept_status", "expected": "200-399", "actual": "404", "hop": 0}]


def test_expectations_decide_instead_of_accept_status():
    gone = fetched("https://a.example/old", 410)
    assert judge(gone, expect={"final_status": 410})[0] == "ok"
    assert judge(gone, expect={"final_status": "404,410"})[0] == "ok"
    # The row has expectations: a 500 it does not mention is not failed by accept_status.
    assert judge(fetched("https://a.example/x", 500), expect={"max_hops": 2})[0] == "ok"


def test_a_wrong_final_url_names_the_rule_the_expected_and_the_actual_and_the_hop():
    result = fetched("https://old.example/a", 200, "https://new.example/", [("https://old.example/a", 301)])
    outcome, reasons, _ = judge(result, expect={"final_url": "https://new.example/a", "status": 301})
    assert outcome == "failed"
    assert reasons == [
        {"rule": "expect.final_url", "expected": "https://new.example/a", "actual": "https://new.example/", "hop": 1}
    ]


def test_a_302_where_301_was_expected_fails_expect_status_at_the_first_hop():
    result = fetched("https://a.example/x", 200, "https://a.example/y", [("https://a.example/x", 302)])
    outcome, reasons, warnings = judge(result, expect={"status": 301, "final_url": "https://a.example/y"})
    assert outcome == "failed"
    assert reasons[0] == {"rule": "expect.status", "expected": "301", "actual": "302", "hop": 0}
    assert warnings == [{"kind": "temporary_redirect", "evidence": "302 at hop 0"}]


def test_a_chain_longer_than_max_hops_fails_at_the_first_hop_past_it():
    hops = [(f"https://a.example/{i}", 301) for i in range(3)]
    outcome, reasons, _ = judge(
        fetched("https://a.example/0", 200, "https://a.example/3", hops), expect={"max_hops": 1}
    )
    assert outcome == "failed"
    assert reasons == [{"rule": "expect.max_hops", "expected": "1", "actual": "3", "hop": 1}]


def test_url_match_modes_compare_scheme_and_host_without_case_and_drop_default_ports():
    assert url_key("HTTPS://New.Example:443/a", "exact") == url_key("https://new.example/a", "exact")
    assert url_key("https://a.example/a/", "exact") != url_key("https://a.example/a", "exact")
    assert url_key("https://a.example/a/", "ignore_trailing_slash") == url_key("https://a.example/a", "exact")
    assert url_key("https://a.example/a?utm=1", "ignore_query") == url_key("https://a.example/a", "ignore_query")
    assert url_key("http://b.example/a", "path_only") == url_key("https://a.example/a", "path_only")


def test_a_cloudflare_challenge_warns_instead_of_failing_by_its_403():
    outcome, reasons, warnings = judge(fetched("https://a.example/", 403), {"cf-mitigated": "challenge"})
    assert (outcome, warnings) == ("warn", [{"kind": "bot_challenge", "evidence": "cf-mitigated: challenge"}])
    assert reasons == [
        {"rule": "bot_challenge", "expected": "the site's own response", "actual": "cf-mitigated: challenge", "hop": 0}
    ]


def test_status_999_and_a_429_warn_with_their_evidence():
    assert judge(fetched("https://a.example/", 999))[2] == [{"kind": "bot_challenge", "evidence": "status 999"}]
    limited = judge(fetched("https://a.example/", 429), {"retry-after": "30"})
    assert limited[:1] == ("warn",)
    assert limited[2] == [{"kind": "rate_limited", "evidence": "status 429, retry-after: 30"}]


def test_a_deep_url_landing_on_the_root_warns_but_one_expected_there_does_not():
    result = fetched(
        "https://a.example/blog/post", 200, "https://www.a.example/", [("https://a.example/blog/post", 301)]
    )
    assert judge(result)[0] == "warn"
    assert judge(result)[2] == [
        {"kind": "redirect_to_root", "evidence": "https://a.example/blog/post -> https://www.a.example/"}
    ]
    assert judge(result, expect={"final_url": "https://www.a.example/"}) == ("ok", [], [])


def test_https_downgrade_and_long_chains_warn_at_their_hop():
    hops = [
        ("https://a.example/1", 301),
        ("http://a.example/2", 301),
        ("http://a.example/3", 301),
        ("http://a.example/4", 308),
    ]
    _, reasons, warnings = judge(fetched("https://a.example/1", 200, "http://a.example/5", hops))
    assert [w["kind"] for w in warnings] == ["long_chain", "https_downgrade"]
    assert [(r["rule"], r.get("hop")) for r in reasons] == [("long_chain", None), ("https_downgrade", 0)]


def test_warn_as_maps_each_kind_to_warn_failed_or_ok():
    result = fetched("https://a.example/x", 200, "https://a.example/y", [("https://a.example/x", 302)])
    assert judge(result)[0] == "warn"
    assert judge(result, warn_as={"temporary_redirect": "failed"})[0] == "failed"
    outcome, reasons, warnings = judge(result, warn_as={"temporary_redirect": "ok"})
    assert (outcome, reasons) == ("ok", [])
    assert warnings, "a warning mapped to ok is still shown"


def test_a_fetch_that_got_no_response_fails_with_its_error_as_the_reason():
    result = Result(index=0, url="https://a.example/", error={"kind": "dns", "message": "no such host"})
    assert judge(result) == (
        "failed",
        [{"rule": "error", "expected": "a response", "actual": "dns: no such host"}],
        [],
    )
    cancelled = Result(index=0, url="https://a.example/", error={"kind": "cancelled", "message": "cancelled"})
    assert judge(cancelled) == ("cancelled", [], [])


def test_a_reason_shows_at_most_200_characters_of_what_it_found():
    long_url = "https://b.example/" + "x" * 400
    result = fetched("https://a.example/x", 200, long_url, [("https://a.example/x", 301)])
    _, reasons, _ = judge(result, expect={"final_url": "https://b.example/"})
    assert len(reasons[0]["actual"]) == 200 and reasons[0]["actual"].endswith("...")


def test_a_sqlite_file_from_before_outcomes_gets_their_columns_and_keeps_its_results(tmp_path):
    import sqlite3

    from app.runs.store import SQLiteStore
    from app.runs.store.base import ResultQuery

    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE batches (num INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
            status TEXT NOT NULL, created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, options TEXT NOT NULL,
            total INTEGER NOT NULL, parent_id TEXT, summary TEXT);
        CREATE TABLE url_lists (batch_id TEXT PRIMARY KEY, urls TEXT NOT NULL);
        CREATE TABLE events (batch_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, at TEXT NOT NULL,
            idx INTEGER, ok INTEGER, status_code INTEGER, error_kind TEXT, total_ms REAL, bytes INTEGER,
            data TEXT NOT NULL, PRIMARY KEY (batch_id, seq)) WITHOUT ROWID;
        INSERT INTO batches VALUES (1, 'b1', 'old', 'done', '2026-01-01T00:00:00.000Z', NULL, NULL, '{}', 1, NULL, NULL);
        INSERT INTO url_lists VALUES ('b1', '["https://a.example/"]');
        INSERT INTO events VALUES ('b1', 1, 'result', '2026-01-01T00:00:00.000Z', 0, 1, 200, NULL, 5.0, 10,
            '{"index": 0, "url": "https://a.example/", "ok": true, "status_code": 200}');
        """
    )
    old.close()
    store = SQLiteStore(path)
    try:
        assert [r["index"] for r in store.result_page("b1", ResultQuery(outcome="ok"), None, False).results] == [0]
        assert store.result_page("b1", ResultQuery(outcome="warn"), None, False).results == []
        assert store.result_page("b1", ResultQuery(reason="accept_status"), None, False).results == []
        assert [row for _, row in store.iter_result_rows("b1")][0].warn is False
    finally:
        store.close()


def test_the_warn_and_reason_filters_read_indexes_that_hold_only_such_results(tmp_path):
    from app.runs.store import SQLiteStore
    from app.runs.store.base import ResultQuery
    from app.runs.store.queries import explain

    store = SQLiteStore(str(tmp_path / "gb.db"))
    try:
        conn = store._writer  # the plan only: no row is read
        assert any("results_warned" in step for step in explain(conn, "b", ResultQuery(outcome="warn")))
        assert any("COVERING INDEX results_by_reason" in s for s in explain(conn, "b", ResultQuery(reason="check[0]")))
    finally:
        store.close()


def test_a_challenge_page_is_known_by_its_evidence_in_the_first_16_kib_only():
    assert challenge_page(b"<div id='px-captcha'>") == "PerimeterX challenge page: px-captcha"
    assert challenge_page(b"<TITLE>Just a moment...</TITLE><script src='/cdn-cgi/challenge-platform/h/b'>") == (
        "Cloudflare challenge page: <title>Just a moment...</title> and /cdn-cgi/challenge-platform/"
    )
    assert challenge_page(b"<title>Just a moment...</title>") is None, "the title alone is any site's"
    assert challenge_page(b" " * CHALLENGE_BYTES + b"captcha-delivery.com") is None


def test_a_challenge_page_warns_only_for_an_html_answer_of_the_statuses_walls_use():
    page = b'<script src="https://ct.captcha-delivery.com/c.js"></script>'

    def warned(status: int, content_type: str) -> list[str]:
        result = fetched("https://a.example/x", status)
        result.content_type = content_type
        return [w["kind"] for w in evaluate(result, {}, OPTIONS, None, "exact", None, (), page)[2]]

    assert warned(403, "text/html; charset=utf-8") == ["bot_challenge"]
    assert warned(404, "text/html") == []
    assert warned(200, "application/json") == []
