"""Comparing two runs: each URL aligned with its row in a base batch and counted once, under the first kind of
change that holds; the store's rows for it in both stores; the API's page, its paging and its downloads; a
rerun's remap of URL prefixes."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import subprocess
import sys

import pytest

from app.core.stats import row_of
from app.runs.diff import KINDS, DiffRow, compare, judge, path_key
from app.runs.events import Event
from app.runs.store import SQLiteStore
from tests.support.planted import planted_urls
from tests.support.server import CHROMIUM, ROOT, error_of

CREATED = "2026-12-06T00:00:00.000Z"


def row(index=0, url="http://a.test/", outcome="ok", status=200, final=None, ms=50.0):
    """A URL's row as the store reads it for a diff."""
    return DiffRow(index, url, outcome, status, final or url, ms)


# -- judging a pair --------------------------------------------------------------------------


def test_a_row_counts_once_under_the_first_kind_that_holds():
    before = row(status=200, ms=10)
    assert judge(before, row(outcome="failed", status=500, final="http://a.test/x", ms=900), 2) == "newly_failed"
    assert judge(row(outcome="failed", status=500), row(status=301, ms=900), 2) == "fixed"
    assert judge(before, row(status=203, final="http://a.test/x", ms=900), 2) == "status_changed"
    assert judge(before, row(final="http://a.test/x", ms=900), 2) == "final_url_changed"
    assert judge(before, row(ms=900), 2) == "slower"
    assert judge(row(ms=900), before, 2) == "faster"
    assert judge(before, row(ms=10), 2) == "unchanged"


def test_slower_and_faster_need_the_factor_and_at_least_100_ms():
    assert judge(row(ms=10), row(ms=90), 2) == "unchanged", "9 times longer, but only 80 ms"
    assert judge(row(ms=200), row(ms=390), 2) == "unchanged", "190 ms longer, but not twice"
    assert judge(row(ms=200), row(ms=400), 2) == "slower"
    assert judge(row(ms=200), row(ms=400), 3) == "unchanged"
    assert judge(row(ms=400), row(ms=200), 2) == "faster"


def test_a_cancelled_url_is_neither_fixed_nor_newly_failed():
    assert judge(row(outcome="failed", status=None), row(outcome="cancelled", status=None), 2) == "unchanged"
    assert judge(row(), row(outcome="cancelled", status=None), 2) == "status_changed"


def test_key_path_ignores_scheme_host_trailing_slash_and_case():
    assert path_key("https://www.example.com/About/?Q=1") == path_key("http://staging.example.com/about?q=1")
    assert path_key("https://example.com") == path_key("http://staging.test/") == "/"
    assert path_key("https://example.com/a?x=1") != path_key("https://example.com/a?x=2")


def test_alignment_by_path_lines_up_staging_with_production_and_their_own_redirects():
    prod = [
        row(0, "https://www.example.com/a", final="https://www.example.com/a/"),
        row(1, "https://www.example.com/b"),
    ]
    staging = [
        row(0, "https://staging.example.com/b"),
        row(1, "https://staging.example.com/A/", final="https://staging.example.com/a"),
    ]
    diff = compare(prod, staging, "path")
    assert diff.summary["unchanged"] == 2
    assert compare(prod, staging, "url").summary | {"pending": 0} == dict.fromkeys(KINDS, 0) | {
        "added": 2,
        "removed": 2,
        "pending": 0,
    }


def test_a_url_listed_twice_aligns_with_its_second_listing():
    base = [row(0, "http://a.test/x"), row(1, "http://a.test/x", outcome="failed", status=500)]
    batch = [row(0, "http://a.test/x"), row(1, "http://a.test/x"), row(2, "http://a.test/x")]

    assert [(c.index, c.base_index, c.kind) for c in compare(base, batch, listed=KINDS).changes] == [
        (0, 0, "unchanged"),
        (1, 1, "fixed"),
        (2, None, "added"),
    ]


def test_urls_without_a_result_yet_are_pending_not_counted_as_a_change():
    base = [row(0, "http://a.test/1"), row(1, "http://a.test/2")]
    batch = [
        row(0, "http://a.test/1", outcome="failed", status=500),
        DiffRow(1, "http://a.test/2", None, None, None, None),
    ]
    summary = compare(base, batch).summary
    assert (summary["newly_failed"], summary["pending"], summary["removed"]) == (1, 1, 0)


# -- the store's rows, in both stores ----------------------------------------------------------


def _result(batch_id, seq, index, url, status=200, ok=True, kind=None, final=None, ms=12.5):
    data = {
        "index": index,
        "url": url,
        "final_url": final if final is not None else (url if status else None),
        "status_code": status,
        "ok": ok,
        "error": None if kind is None else {"kind": kind, "message": kind},
        "bytes": 3,
        "timings": {"total": ms},
    }
    return Event(batch_id, seq, "result", data, row=row_of(data))


def test_the_store_reads_each_url_with_its_outcome_status_final_url_and_time(store_factory):
    store = store_factory()
    urls = [f"http://a.test/{i}" for i in range(4)]
    store.create_batch("b", "b", {}, urls, CREATED)
    store.extend(
        [
            _result("b", 1, 0, urls[0], final="http://a.test/moved"),
            _result("b", 2, 1, urls[1], status=503, ok=False, kind="status", ms=200.0),
            _result("b", 3, 3, urls[3], status=None, ok=False, kind="cancelled", ms=0.0),
        ]
    )
    assert store.flush(10)
    assert store.diff_rows("b") == [
        DiffRow(0, urls[0], "ok", 200, "http://a.test/moved", 12.5),
        DiffRow(1, urls[1], "failed", 503, urls[1], 200.0),
        DiffRow(2, urls[2], None, None, None, None),
        DiffRow(3, urls[3], "cancelled", None, None, 0.0),
    ]
    assert store.diff_rows("missing") == []


# -- the API -------------------------------------------------------------------------------------


def _wait_all(server, *ids):
    return [server.wait(batch_id) for batch_id in ids]


@pytest.fixture(scope="module")
def planted(server, target):
    """Two runs of one list against answers that change between them: 3 newly failing, 2 fixed, 4 final URL
    changed, 1 removed, 1 added, 2 unchanged."""
    kept, gone, new = planted_urls(target)
    base = server.submit([gone, *kept], concurrency=4)["id"]
    server.wait(base)
    batch = server.submit([*kept, new], concurrency=4)["id"]
    server.wait(batch)
    return base, batch, kept


def test_two_runs_give_the_exact_planted_diff(server, planted):
    base, batch, kept = planted
    response = server.request("GET", f"/api/v1/batches/{batch}/diff?base={base}&slower=1000")  # no URL counts as slower
    assert response.status_code == 200, response.text
    diff = response.json()
    assert (diff["base"], diff["batch"], diff["key"]) == (base, batch, "url")
    assert diff["summary"] == dict.fromkeys(KINDS, 0) | {
        "newly_failed": 3,
        "fixed": 2,
        "final_url_changed": 4,
        "added": 1,
        "removed": 1,
        "unchanged": 2,
        "pending": 0,
    }
    kinds = [(c["index"], c["base_index"], c["kind"]) for c in diff["changes"]]
    assert kinds == [
        *[(i, i + 1, "newly_failed") for i in range(3)],
        *[(i, i + 1, "fixed") for i in range(3, 5)],
        *[(i, i + 1, "final_url_changed") for i in range(5, 9)],
        (11, None, "added"),
        (None, 0, "removed"),
    ], "every change but unchanged, in the batch's order, the removed after"
    first = diff["changes"][0]
    assert first["key"] == kept[0]
    assert first["before"] | {"total_ms": 0} == {
        "status_code": 200,
        "final_url": kept[0],
        "outcome": "ok",
        "total_ms": 0,
    }
    assert first["after"]["outcome"] == "failed" and first["after"]["status_code"] == 500
    assert diff["changes"][5]["after"]["final_url"].endswith("/ok")


def test_changes_page_with_after_and_limit_and_filter_by_kind(server, planted):
    base, batch, _ = planted
    seen, after = [], None
    for _ in range(10):
        page = server.request(
            "GET", f"/api/v1/batches/{batch}/diff", params={"base": base, "limit": 4, "after": after, "slower": 1000}
        ).json()
        seen += page["changes"]
        after = page["next_after"]
        if after is None:
            break
    assert len(seen) == page["total"] == 11
    assert len({json.dumps(c) for c in seen}) == 11, "each change once"
    only = server.request("GET", f"/api/v1/batches/{batch}/diff?base={base}&kind=fixed,unchanged&slower=1000").json()
    assert [c["kind"] for c in only["changes"]] == ["fixed", "fixed", "unchanged", "unchanged"]


def test_changes_export_as_csv_and_ndjson(server, planted):
    base, batch, _ = planted
    csv_response = server.request("GET", f"/api/v1/batches/{batch}/diff?base={base}&format=csv&kind=fixed,removed")
    assert csv_response.status_code == 200
    assert csv_response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(csv_response.text)))
    assert [(r["kind"], r["before_status_code"], r["after_status_code"]) for r in rows] == [
        ("fixed", "500", "200"),
        ("fixed", "500", "200"),
        ("removed", "200", ""),
    ]
    lines = server.request("GET", f"/api/v1/batches/{batch}/diff?base={base}&format=ndjson").text.splitlines()
    assert [json.loads(line)["kind"] for line in lines].count("final_url_changed") == 4


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("key=host", "key"),
        ("slower=1", "slower"),
        ("slower=nan", "slower"),
        ("slower=5000", "slower"),
        ("kind=broken", "kind"),
        ("limit=0", "limit"),
        ("format=json", "format"),
    ],
)
def test_a_parameter_the_diff_cannot_take_answers_400_naming_it(server, planted, query, field):
    base, batch, _ = planted
    response = server.request("GET", f"/api/v1/batches/{batch}/diff?base={base}&{query}")
    assert response.status_code == 400
    assert error_of(response)["details"][0]["field"] == field


def test_without_base_a_batch_not_rerun_answers_400_and_an_unknown_base_404(server, planted):
    base, batch, _ = planted
    assert error_of(server.request("GET", f"/api/v1/batches/{batch}/diff"))["details"][0]["field"] == "base"
    assert server.request("GET", f"/api/v1/batches/{batch}/diff?base=nope").status_code == 404


def test_a_rerun_remaps_url_prefixes_and_its_diff_defaults_to_the_batch_it_came_from(server, planted, target):
    base, batch, kept = planted
    old = target.url("/changes/")
    new = old.replace("127.0.0.1", "localhost")
    response = server.request("POST", f"/api/v1/batches/{batch}/rerun", json={"remap": [{"from": old, "to": new}]})
    assert response.status_code == 201, response.text
    rerun = response.json()["id"]
    server.wait(rerun)
    urls = [r["url"] for r in server.results(rerun)]
    assert urls[0] == kept[0].replace("127.0.0.1", "localhost")
    by_url = server.request("GET", f"/api/v1/batches/{rerun}/diff").json()
    assert by_url["base"] == batch
    assert (by_url["summary"]["added"], by_url["summary"]["removed"]) == (12, 12)
    by_path = server.request("GET", f"/api/v1/batches/{rerun}/diff?key=path").json()
    assert by_path["summary"]["unchanged"] == 12, "the same paths answer as they did, on another host"


@pytest.mark.parametrize(
    "remap",
    [
        "http://a.test/",
        [{"from": "http://a.test/"}],
        [{"from": "ftp://a.test/", "to": "http://b.test/"}],
        [{"from": "http://a.test/", "to": "http://b.test/"}] * 21,
    ],
)
def test_a_remap_that_is_not_a_list_of_http_prefix_pairs_answers_400(server, planted, remap):
    _, batch, _ = planted
    response = server.request("POST", f"/api/v1/batches/{batch}/rerun", json={"remap": remap})
    assert response.status_code == 400
    assert error_of(response)["details"][0]["field"].startswith("remap")


def test_a_remap_to_a_denied_address_is_refused_like_a_submission(server, planted, target):
    _, batch, _ = planted
    remap = [{"from": target.url("/changes/"), "to": "http://169.254.169.254/changes/"}]
    response = server.request("POST", f"/api/v1/batches/{batch}/rerun", json={"remap": remap})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_urls"


def test_a_diff_of_batches_over_the_servers_limit_answers_413_naming_the_setting(make_server, target):
    small = make_server({"GREENBATCH_MAX_DIFF_URLS": "2"})
    base = small.submit([target.url("/ok?a"), target.url("/ok?b")])["id"]
    batch = small.submit([target.url("/ok?a"), target.url("/ok?b"), target.url("/ok?c")])["id"]
    assert small.request("GET", f"/api/v1/batches/{base}/diff?base={base}").status_code == 200
    response = small.request("GET", f"/api/v1/batches/{batch}/diff?base={base}")
    assert response.status_code == 413
    assert "GREENBATCH_MAX_DIFF_URLS" in error_of(response)["message"]


def ended_batch(store, batch_id: str, urls: list[str], status: int, parent_id: str | None = None) -> None:
    """Store a done batch of these URLs, each answering `status`, as the engine stores one."""
    store.create_batch(batch_id, batch_id, {}, urls, CREATED, parent_id)
    events = []
    for index, url in enumerate(urls):
        data = {"index": index, "url": url, "final_url": url, "status_code": status, "ok": status == 200}
        data |= {"error": None, "timings": {"total": 5.0}}
        events.append(Event(batch_id, index + 1, "result", data, row=row_of(data)))
    ok = len(urls) if status == 200 else 0
    counts = {"total": len(urls), "pending": 0, "running": 0, "ok": ok, "failed": len(urls) - ok, "cancelled": 0}
    final = {"status": "done", "finished_at": CREATED, "counts": counts, "stats": {}}
    events.append(Event(batch_id, len(urls) + 1, "batch", final))
    store.extend(events)


def test_a_csv_diff_of_urls_stored_with_a_lone_surrogate_writes_u_fffd_in_its_place(tmp_path, make_server):
    # A release before the API refused lone surrogates stored them, escaped as Python's json writes them.
    urls = ["http://a.test/caf\udce9", "http://a.test/ok"]
    data = tmp_path / "data"
    writer = SQLiteStore(str(data / "greenbatch.db"), flush_interval=0.01)
    try:
        ended_batch(writer, "base", urls, 200)
        ended_batch(writer, "again", urls, 500, parent_id="base")
        assert writer.flush(10)
    finally:
        writer.close()
    server = make_server(data_dir=data, env={"GREENBATCH_INTEGRITY_CHECK_INTERVAL": "0"})
    response = server.request("GET", "/api/v1/batches/again/diff", params={"base": "base", "format": "csv"})
    assert response.status_code == 200, response.text[:300]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["key"], r["kind"], r["after_final_url"]) for r in rows] == [
        ("http://a.test/caf\ufffd", "newly_failed", "http://a.test/caf\ufffd"),
        ("http://a.test/ok", "newly_failed", "http://a.test/ok"),
    ]
    ndjson = server.request("GET", "/api/v1/batches/again/diff", params={"base": "base", "format": "ndjson"})
    assert [json.loads(line)["key"] for line in ndjson.text.splitlines()] == urls, "JSON keeps the escape"


# -- the command line ----------------------------------------------------------------------------


def run_diff_cli(server, *args):
    """`python -m app.cli diff ...` against the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENBATCH_")}
    command = [sys.executable, "-m", "app.cli", "diff", *args, "--server", server.base_url]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_the_cli_prints_each_kinds_count_and_each_change_and_exits_1_on_a_listed_kind(server, planted):
    base, batch, kept = planted
    done = run_diff_cli(server, base, batch, "--fail-on", "newly_failed,final_url_changed")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["newly_failed", "3"]
    assert f"newly_failed  {kept[0]}  ok 200" in lines[len(KINDS) + 1]
    assert " -> failed 500 " in lines[len(KINDS) + 1]
    assert "failing: newly_failed 3, final_url_changed 4" in done.stderr


def test_the_cli_exits_0_when_no_listed_kind_happened_and_2_for_an_unknown_kind(server, planted):
    base, batch, _ = planted
    assert run_diff_cli(server, base, batch, "--fail-on", "slower,status_changed").returncode == 0
    done = run_diff_cli(server, base, batch, "--fail-on", "worse")
    assert done.returncode == 2
    assert "the kinds are newly_failed, fixed" in done.stderr


# -- the batch page ------------------------------------------------------------------------------

browser_only = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")


def expect(locator):
    """Playwright's expect, imported only where a browser test runs."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def kind_count(tab, kind):
    """The number on a kind's counter of the page's comparison."""
    return int(tab.locator(f'#compare-kinds [data-kind="{kind}"] .n').inner_text())


@browser_only
@pytest.mark.parametrize("screen", ["page", "phone"])
def test_the_batch_page_opens_on_its_diff_with_a_counter_per_kind_each_a_filter(request, screen, server, planted):
    tab = request.getfixturevalue(screen)
    base, batch, kept = planted
    tab.goto(server.url(f"/batches/{batch}?compare={base}"))
    expect(tab.locator("#compare-rows tr")).to_have_count(11)
    assert [kind_count(tab, kind) for kind in ("newly_failed", "fixed", "final_url_changed", "added", "removed")] == [
        3,
        2,
        4,
        1,
        1,
    ]
    first = tab.locator("#compare-rows tr").first
    assert kept[0] in first.inner_text()
    assert re.search(r"200.*→.*500", " ".join(first.inner_text().split()))
    tab.screenshot(path=f"/tmp/compare-{screen}.png", full_page=True)
    tab.locator("#compare").screenshot(path=f"/tmp/compare-card-{screen}.png")
    tab.locator('#compare-kinds [data-kind="fixed"]').click()
    expect(tab.locator("#compare-rows tr")).to_have_count(2)
    assert tab.locator("#compare-rows tr").all_inner_texts()[0].startswith("Fixed")
    assert tab.evaluate("document.documentElement.scrollWidth") <= tab.viewport_size["width"], "no sideways scroll"


def answer_one_by_one(target, key: str, count: int) -> None:
    """Let `count` requests held under `key` answer, each once the target holds it (one URL at a time)."""
    for _ in range(count):
        target.release_when_held(key, 1)


@browser_only
def test_a_rerun_opens_compared_with_its_batch_and_the_counters_move_as_its_rows_land(page, server, target):
    key = secrets.token_hex(4)
    urls = [target.url(f"/hold/{key}?i={i}") for i in range(6)]
    first = server.submit(urls, concurrency=1)["id"]  # the rerun keeps it: one URL at a time, each held
    answer_one_by_one(target, key, 6)
    server.wait(first)
    rerun = server.request("POST", f"/api/v1/batches/{first}/rerun").json()["id"]
    page.goto(server.url(f"/batches/{rerun}"))
    expect(page.locator("#compare-base")).to_have_value(first)  # filled once the batches list is read
    not_run = page.locator('#compare-kinds [data-kind="pending"]')
    expect(not_run.locator(".n")).to_have_text("6")
    for landed in range(1, 7):  # each row lands when the test lets its URL answer: the counters follow it
        answer_one_by_one(target, key, 1)
        if landed < 6:
            expect(not_run.locator(".n")).to_have_text(str(6 - landed))
            assert server.batch(rerun)["status"] == "running", "the counters moved while the rerun ran"
        else:
            expect(not_run).to_have_count(0)
        # Each landed row is judged (unchanged, or slower or faster: how long the test held it decides which).
        judged = page.evaluate(
            """() => [...document.querySelectorAll('#compare-kinds [data-kind]')]
                .filter((button) => button.dataset.kind !== 'pending')
                .reduce((sum, button) => sum + Number(button.querySelector('.n').textContent), 0)"""
        )
        assert judged == landed
    server.wait(rerun)
    page.screenshot(path="/tmp/compare-live.png", full_page=True)
