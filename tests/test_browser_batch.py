"""The batch page at 1280 and at 390 px: it fits the screen, its numbers move with its rows, and its failures
are findable and explained (issue 14, items 1 to 4, the batch page's side)."""

from __future__ import annotations

import os
import re
import secrets
import signal
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.server import ARTIFACTS, CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
]
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect

FINISHED = 20_000  # ms a small batch gets to finish in the browser's eyes
SCREENS = {"desktop": (1280, 800), "phone": (390, 844)}


@pytest.fixture(params=list(SCREENS))
def screen(request):
    """The page at 1280 px (`page`), then at 390 px (`phone`)."""
    return request.getfixturevalue("page" if request.param == "desktop" else "phone")


def width_of(tab) -> int:
    """The viewport's width: 1280 or 390."""
    return tab.viewport_size["width"]


def shot(tab, name: str) -> None:
    """A full-page screenshot in test-artifacts/, named for the screen width."""
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"batch-{name}-{width_of(tab)}.png"), full_page=True)


def open_batch(tab, server, batch_id: str, query: str = "") -> None:
    """Open a batch page and wait until its script has run."""
    tab.goto(server.url(f"/batches/{batch_id}{query}"))
    expect(tab.locator("#live-mode")).not_to_be_empty()


def wait_until_final(tab, status: str = "done") -> None:
    """Wait for the page to show the batch ended with the given status."""
    expect(tab.locator("#batch-status")).to_have_text(status, timeout=FINISHED)
    expect(tab.locator("#live-mode")).to_contain_text("all results loaded", timeout=FINISHED)


def assert_nothing_scrolls_sideways(tab) -> None:
    """The page is no wider than the screen."""
    widths = tab.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide on a {widths[1]} px screen"


def assert_every_row_shows_its_url(tab) -> None:
    """Each result row's URL is on screen horizontally, at least 120 px of it, and starts with its scheme."""
    boxes = tab.locator("tr.result-row .col-url .url").evaluate_all(
        """nodes => nodes.map(n => { const b = n.getBoundingClientRect();
             return {left: b.left, right: b.right, width: b.width, height: b.height, text: n.textContent}; })"""
    )
    assert boxes, "no rows"
    for box in boxes:
        assert box["width"] >= 120 and box["height"] > 0, box
        assert box["left"] >= 0 and box["right"] <= width_of(tab), box
        assert box["text"].startswith("http"), box


def shown_indexes(tab) -> list[int]:
    """The URL indexes of the rows shown, in order."""
    return [int(i) for i in tab.locator("tr.result-row").evaluate_all("rows => rows.map(r => r.dataset.index)")]


def address_query(tab) -> dict[str, list[str]]:
    """The page address's query, parsed."""
    return parse_qs(urlsplit(tab.url).query)


def ms_of(latency: str) -> float:
    """A shown latency in ms: "12.5 ms", "888 ms", "1.07 s" (a URL held past a second)."""
    value, unit = latency.split()
    return float(value) * (1000 if unit == "s" else 1)


# -- item 2: the page fits a phone ------------------------------------------------------------------


def test_the_page_fits_the_screen_with_every_rows_url_visible_and_no_stat_printed_over_another(screen, server, target):
    urls = [
        *(target.url(f"/delay/{40 * i}?n={i}") for i in range(6)),
        *(target.url(f"/status/{code}") for code in (201, 301, 404, 418, 503)),
        target.url("/redirect/2"),
        target.url("/ok?" + "&".join(f"parameter{i}=a-rather-long-value-{i}" for i in range(8))),
    ]
    batch = server.submit(urls, concurrency=4)
    server.wait(batch["id"])
    open_batch(screen, server, batch["id"])
    wait_until_final(screen)
    expect(screen.locator("tr.result-row")).to_have_count(len(urls))

    assert_nothing_scrolls_sideways(screen)
    assert_every_row_shows_its_url(screen)
    stats = screen.locator(".stats .stat:not([hidden])").evaluate_all(
        """nodes => nodes.map(n => { const b = n.querySelector('dd').getBoundingClientRect();
             return {left: b.left, right: b.right, top: b.top, bottom: b.bottom, column: n.getBoundingClientRect().left,
                     fits: n.querySelector('dd').scrollWidth <= n.querySelector('dd').clientWidth}; })"""
    )
    for i, a in enumerate(stats):
        assert a["fits"], f"stat {i} is cut"
        for b in stats[i + 1 :]:
            apart = (
                a["right"] <= b["left"] or b["right"] <= a["left"] or a["bottom"] <= b["top"] or b["bottom"] <= a["top"]
            )
            assert apart, f"stat {i} overlaps another: {a} {b}"
    columns = len({round(s["column"]) for s in stats})
    assert columns == (3 if width_of(screen) == 390 else len(stats)), "one row of stats on a wide screen"
    expect(screen.locator("#count-warn")).to_have_text("1")  # /redirect/2 redirects with a 302: warn
    for button in screen.locator(".actions .button:visible").all():  # every action on screen, none cut off
        box = button.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width_of(screen), button.text_content()
    expect(screen.locator(".export-group .button")).to_have_text(["CSV", "NDJSON", "JSON"])
    assert "format=json" in screen.locator("#export-json").get_attribute("href")
    # Every status code shows in its panel, none hidden in a scroll box.
    codes = screen.locator("#by-status li")
    expect(codes).to_have_count(6)
    # Measured in one pass in the page: the panel is drawn again as the last events land, and an element found
    # by one call may be gone by the next (then it has no box).
    screen.wait_for_function(
        """() => { const panel = document.querySelector('#by-status'), last = panel && panel.querySelector('li:last-child');
                   return !!last && last.getBoundingClientRect().bottom <= panel.getBoundingClientRect().bottom + 1
                          && panel.scrollHeight <= panel.clientHeight; }""",
        timeout=5000,
    )
    shot(screen, "finished")


def test_delete_looks_enabled_when_it_is(screen, server, target):
    batch = server.submit([target.url("/ok")])
    server.wait(batch["id"])
    open_batch(screen, server, batch["id"])
    wait_until_final(screen)
    delete = screen.locator("#delete")
    expect(delete).to_be_enabled()
    assert delete.evaluate("n => getComputedStyle(n).opacity") == "1"
    red = screen.evaluate("getComputedStyle(document.querySelector('#cancel')).color")
    assert delete.evaluate("n => getComputedStyle(n).color") == red, "Delete is drawn as the danger it is"


# -- item 3: one set of live numbers ----------------------------------------------------------------


def test_counts_progress_and_toolbar_agree_with_the_rows_while_a_batch_runs(screen, server, target):
    # The target holds every URL until the test lets it answer, seven at a time: the batch runs until the last.
    key = secrets.token_hex(4)
    urls = [target.url(f"/hold/{key}?n={i}") for i in range(60)]
    urls[5::9] = [target.url(f"/hold/{key}?status=500&n={i}") for i in range(5, 60, 9)]
    batch = server.submit(urls, concurrency=10)
    samples: list[dict] = []

    def sample_until(landed: int) -> None:
        """Read the page every 20 ms until it shows `landed` rows."""
        deadline = time.monotonic() + 20
        while not samples or samples[-1]["all"] < landed:
            assert time.monotonic() < deadline, f"{landed} rows shown within 20 s: {samples[-1:]}"
            # One evaluate reads the counters and the rows in the same frame: the page draws them together.
            samples.append(
                screen.evaluate(
                    """() => ({
                        ok: +document.querySelector('#count-ok').textContent.replace(/,/g, ''),
                        failed: +document.querySelector('#count-failed').textContent.replace(/,/g, ''),
                        okRows: document.querySelectorAll('tr.result-row.ok').length,
                        failedRows: document.querySelectorAll('tr.result-row.failed').length,
                        all: +document.querySelector('[data-n="all"]').textContent.replace(/,/g, ''),
                        done: document.querySelector('#progress-text').textContent,
                        pct: +document.querySelector('#progress').getAttribute('aria-valuenow'),
                        status: document.querySelector('#batch-status').textContent,
                    })"""
                )
            )
            if samples[-1]["all"] < landed:
                screen.wait_for_timeout(20)

    try:
        open_batch(screen, server, batch["id"])
        for landed in range(7, 60, 7):
            target.release_when_held(key, 7, held=10)
            sample_until(landed)
            assert samples[-1]["status"] == "running", samples[-1]
        target.release_when_held(key, 4, held=4)
        expect(screen.locator("#batch-status")).to_have_text("done", timeout=FINISHED)
        sample_until(60)
    finally:
        target.release(key)
    assert samples[-1]["status"] == "done", samples[-1]
    live = [s for s in samples if s["status"] == "running"]
    assert len(live) >= 5, "the batch was watched while it ran"
    for s in samples:
        assert (s["ok"], s["failed"]) == (s["okRows"], s["failedRows"]), s
        assert s["all"] == s["okRows"] + s["failedRows"], s
        assert s["done"] == f"{s['all']} of 60 URLs done", s
        assert s["pct"] == 100 * s["all"] // 60, s
    for before, after in zip(samples, samples[1:]):
        assert after["ok"] >= before["ok"] and after["failed"] >= before["failed"], (before, after)
    assert samples[-1]["ok"] == 53 and samples[-1]["failed"] == 7
    expect(screen.locator("#count-running")).to_have_text("0")
    expect(screen.locator("#count-pending")).to_have_text("0")


def test_a_cancelled_batch_says_what_was_fetched_and_what_never_ran(screen, server, target):
    batch = server.submit([target.url("/ok"), target.url("/ok?n=1")] + [target.url("/delay/4000")] * 7, concurrency=2)
    open_batch(screen, server, batch["id"])
    expect(screen.locator("tr.result-row")).to_have_count(2)
    expect(screen.locator("#count-running")).to_have_text("2")
    screen.click("#cancel")
    wait_until_final(screen, "cancelled")
    expect(screen.locator("#progress-text")).to_have_text("Cancelled: 2 fetched, 2 stopped in flight, 5 never ran")
    expect(screen.locator("#progress-pct")).to_have_text("")
    assert "100" not in screen.title()
    never_ran = screen.locator('tr.result-row[data-index="8"]')
    expect(never_ran.locator(".col-outcome")).to_contain_text("cancelled before this URL ran")
    expect(never_ran.locator(".col-latency")).to_have_text("–")
    expect(screen.locator('tr.result-row[data-index="0"] .col-latency')).to_have_text(re.compile(r"\d ms$"))
    expect(screen.locator('.segmented [data-filter="cancelled"]')).to_be_visible()
    assert_nothing_scrolls_sideways(screen)
    shot(screen, "cancelled")


def test_no_rate_is_shown_for_a_batch_that_fetched_nothing_or_ran_under_a_second(screen, server, target):
    nothing = server.submit([target.url("/delay/4000")] * 2, concurrency=2)
    time.sleep(1.3)
    server.request("POST", f"/api/v1/batches/{nothing['id']}/cancel")
    open_batch(screen, server, nothing["id"])
    wait_until_final(screen, "cancelled")
    expect(screen.locator("#progress-text")).to_have_text("Cancelled: 0 fetched, 2 stopped in flight, 0 never ran")
    expect(screen.locator("#stat-rate")).to_have_text("–")

    quick = server.submit([target.url("/ok")] * 3)
    server.wait(quick["id"])
    open_batch(screen, server, quick["id"])
    wait_until_final(screen)
    expect(screen.locator("#stat-rate")).to_have_text("–")

    steady = server.submit([target.url("/delay/300")] * 8, concurrency=2)  # 1.2 s
    open_batch(screen, server, steady["id"])
    wait_until_final(screen)
    expect(screen.locator("#stat-rate")).to_have_text(re.compile(r"^\d+(\.\d)?$"))


def test_the_running_filter_lists_the_urls_in_flight_with_their_elapsed_time(screen, server, target):
    urls = [target.url("/ok")] * 3 + [target.url(f"/delay/6000?n={i}") for i in range(3)]
    batch = server.submit(urls + [target.url("/ok?after=1")] * 4, concurrency=3)
    open_batch(screen, server, batch["id"])
    expect(screen.locator("#count-running")).to_have_text("3")
    screen.click('.segmented [data-filter="running"]')
    in_flight = screen.locator("tr.result-row.in-flight")
    expect(in_flight).to_have_count(3)
    expect(in_flight.locator(".col-url .url")).to_have_text(urls[3:])
    assert shown_indexes(screen) == [3, 4, 5]
    expect(in_flight.first.locator(".code")).to_have_text("running")
    first = float(in_flight.first.locator(".col-latency").text_content().split()[0])
    expect(in_flight.first.locator(".col-latency")).not_to_have_text(
        in_flight.first.locator(".col-latency").text_content()
    )
    assert address_query(screen)["outcome"] == ["running"]
    assert_every_row_shows_its_url(screen)
    assert_nothing_scrolls_sideways(screen)
    shot(screen, "running")
    assert first > 0
    server.request("POST", f"/api/v1/batches/{batch['id']}/cancel")
    expect(screen.locator("tr.result-row.in-flight")).to_have_count(0, timeout=FINISHED)
    expect(screen.locator("#results-empty")).to_contain_text("Nothing in flight")


def test_a_lost_server_shows_a_banner_and_the_page_returns_to_the_websocket_when_it_is_back(
    screen, make_server, target, tmp_path
):
    data = tmp_path / "kept"
    first = make_server(data_dir=data)
    port = first.base_url.rsplit(":", 1)[1]
    batch = first.submit([target.url(f"/delay/150?n={i}") for i in range(60)], concurrency=2)  # about 4.5 s
    open_batch(screen, first, batch["id"])
    expect(screen.locator("#live-mode")).to_have_text("Live updates: websocket")
    expect(screen.locator("tr.result-row").nth(3)).to_be_attached()
    banner = screen.locator("#lost-contact")
    expect(banner).to_be_hidden()

    first.kill()
    expect(banner).to_be_visible(timeout=10_000)
    expect(banner).to_have_text("Lost contact with the server, retrying…")
    assert_nothing_scrolls_sideways(screen)
    shot(screen, "lost-contact")
    make_server(data_dir=data, env={"GREENBATCH_PORT": port})  # the same port and data: the batch resumes
    expect(screen.locator("#live-mode")).to_have_text("Live updates: websocket", timeout=FINISHED)
    expect(banner).to_be_hidden()
    wait_until_final(screen)
    expect(screen.locator('[data-n="all"]')).to_have_text("60")
    assert shown_indexes(screen) == list(range(60))


def test_a_server_that_stops_answering_without_closing_shows_the_banner_and_the_page_resumes(page, make_server, target):
    server = make_server(env={"GREENBATCH_WS_HEARTBEAT": "0.5"})  # the page counts 6 s of silence as a dead line
    batch = server.submit([target.url(f"/delay/100?n={i}") for i in range(40)], concurrency=2)  # about 2 s
    open_batch(page, server, batch["id"])
    expect(page.locator("#live-mode")).to_have_text("Live updates: websocket")
    expect(page.locator("tr.result-row").nth(3)).to_be_attached()
    server.signal(signal.SIGSTOP)  # like a suspended machine: connections stay open, nothing answers
    try:
        expect(page.locator("#lost-contact")).to_be_visible(timeout=20_000)
    finally:
        server.signal(signal.SIGCONT)
    expect(page.locator("#live-mode")).to_have_text("Live updates: websocket", timeout=FINISHED)
    expect(page.locator("#lost-contact")).to_be_hidden()
    wait_until_final(page)
    assert shown_indexes(page) == list(range(40))


# -- item 4: failures findable ----------------------------------------------------------------------


def test_clicking_a_status_code_or_an_error_kind_filters_the_table(screen, server, target, closed_port):
    urls = [target.url("/ok")] * 3 + [target.url("/status/404")] * 2 + [target.url("/status/503")]
    urls += [target.url(f"/redirect-to?url=http://127.0.0.1:{closed_port}/x")]  # blocked after the redirect
    batch = server.submit(urls)
    server.wait(batch["id"])
    open_batch(screen, server, batch["id"])
    wait_until_final(screen)

    screen.locator('#by-status button[data-value="404"]').click()
    expect(screen.locator("tr.result-row")).to_have_count(2)
    expect(screen.locator("tr.result-row .col-status .code")).to_have_text(["404", "404"])
    expect(screen.locator('#by-status button[data-value="404"]')).to_have_attribute("aria-pressed", "true")
    expect(screen.locator("#facet-chip")).to_have_text("status 404 ✕")
    assert address_query(screen)["status"] == ["404"]
    assert_nothing_scrolls_sideways(screen)
    shot(screen, "status-filter")

    screen.locator('#by-error button[data-value="blocked"]').click()
    expect(screen.locator("tr.result-row")).to_have_count(1)
    assert shown_indexes(screen) == [6]
    assert "status" not in address_query(screen) and address_query(screen)["error"] == ["blocked"]
    expect(screen.locator("#blocked-banner")).to_be_hidden()  # other failures are not blocked ones

    screen.click("#facet-chip")
    expect(screen.locator("tr.result-row")).to_have_count(len(urls))
    assert "error" not in address_query(screen)


def test_the_url_search_filter_and_sort_live_in_the_address_and_survive_a_reload(screen, server, target):
    urls = [target.url(f"/delay/{150 * i}?team=web&n={i}") for i in range(5)]
    urls += [target.url(f"/delay/{150 * i}?status=500&team=api&n={i}") for i in range(5)]
    batch = server.submit(urls)
    server.wait(batch["id"])
    # Slowest first by the latency each result recorded: a loaded machine may stretch a 150 ms delay past a
    # 300 ms one, and the page must show what was measured.
    failed = [result for result in server.results(batch["id"]) if result["index"] >= 5]
    slowest_first = [r["index"] for r in sorted(failed, key=lambda r: (-r["timings"]["total"], -r["index"]))]
    open_batch(screen, server, batch["id"])
    wait_until_final(screen)

    screen.fill("#url-search", "team=api")
    expect(screen.locator("tr.result-row")).to_have_count(5)
    screen.click('.segmented [data-filter="failed"]')
    screen.click('#results button[data-sort="latency"]')
    expect(screen.locator("tr.result-row").first).to_have_attribute("data-index", str(slowest_first[0]))
    assert shown_indexes(screen) == slowest_first
    assert address_query(screen) == {"q": ["team=api"], "outcome": ["failed"], "sort": ["latency"]}

    screen.reload()
    wait_until_final(screen)
    expect(screen.locator("#url-search")).to_have_value("team=api")
    expect(screen.locator('.segmented [data-filter="failed"]')).to_have_attribute("aria-pressed", "true")
    expect(screen.locator('#results th[aria-sort="descending"] button')).to_have_text("Latency")
    expect(screen.locator("tr.result-row")).to_have_count(5)
    assert shown_indexes(screen) == slowest_first

    screen.fill("#url-search", "nothing-like-this")
    expect(screen.locator("#results-empty")).to_contain_text("No results match")
    assert_nothing_scrolls_sideways(screen)


def test_rows_and_the_drawer_number_urls_from_0_as_the_api_does_and_escape_closes_the_drawer(screen, server, target):
    urls = [target.url(f"/ok?n={i}") for i in range(5)]
    batch = server.submit(urls)
    server.wait(batch["id"])
    open_batch(screen, server, batch["id"])
    wait_until_final(screen)
    expect(screen.locator("tr.result-row .col-index")).to_have_text(["0", "1", "2", "3", "4"])

    row = screen.locator('tr.result-row[data-index="3"]')
    row.click()
    drawer = screen.locator('tr.detail[data-detail-for="3"]')
    expect(drawer.locator(".drawer-title")).to_contain_text("URL #3")
    expect(drawer.locator(".chain .url")).to_have_text(urls[3])
    shot(screen, "drawer")
    screen.keyboard.press("Escape")
    expect(screen.locator("tr.detail")).to_have_count(0)
    expect(row).to_be_focused()
    expect(row).to_have_attribute("aria-expanded", "false")


# -- item 1: blocked URLs explained -----------------------------------------------------------------


def test_when_every_failure_is_blocked_a_banner_says_how_to_allow_it_and_the_hint_is_not_cut(
    screen, server, target, closed_port
):
    blocked = [target.url(f"/redirect-to?url=http://127.0.0.1:{closed_port}/admin?n={i}") for i in range(3)]
    batch = server.submit([target.url("/ok"), *blocked])
    server.wait(batch["id"])
    open_batch(screen, server, batch["id"])
    wait_until_final(screen)

    banner = screen.locator("#blocked-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Every failure here is blocked")
    expect(screen.locator("#blocked-command")).to_have_text(f"GREENBATCH_ALLOW_TARGETS=127.0.0.1:{closed_port}")
    error = screen.locator('tr.result-row[data-index="1"] td.col-outcome')
    expect(error).to_contain_text(f"GREENBATCH_ALLOW_TARGETS=127.0.0.1:{closed_port})")
    cut = error.evaluate(
        """n => n.scrollWidth > n.clientWidth + 1 || n.scrollHeight > n.clientHeight + 1
               || getComputedStyle(n).textOverflow === 'ellipsis'"""
    )
    assert not cut, "the blocked hint is readable in the row"
    assert_nothing_scrolls_sideways(screen)
    shot(screen, "blocked")


# -- issue 15: a page of a large batch, read from the server ----------------------------------------


def test_a_batch_of_20000_results_opens_on_its_first_page_without_replaying_them_and_pages_to_the_last(
    page, make_server, target
):
    server = make_server(env={"GREENBATCH_MAX_URLS": "20000"})
    batch = server.submit([target.url(f"/ok?n={i}") for i in range(20_000)], concurrency=200)
    batch = server.wait(batch["id"], timeout=120)
    sockets: list[str] = []
    received: list[int] = []  # results each `events` message brought
    reads: list[str] = []  # the results API's pages the page asked for

    def watch(ws) -> None:
        sockets.append(ws.url)
        ws.on("framereceived", lambda frame: received.append(frame.count('"type":"result"')))

    page.on("websocket", watch)
    page.on("request", lambda request: "/results?" in request.url and reads.append(request.url))
    open_batch(page, server, batch["id"])
    wait_until_final(page)
    expect(page.locator("#page-info")).to_have_text("1–100 of 20,000")
    assert shown_indexes(page) == list(range(100))
    assert int(re.search(r"after=(\d+)", sockets[0]).group(1)) == batch["last_seq"], "it starts where the snapshot is"
    assert sum(received) == 0, "no result replayed"
    expect(page.locator('[data-n="all"]')).to_have_text("20,000")

    page.fill("#page-go", "200")
    page.press("#page-go", "Enter")
    expect(page.locator("#page-info")).to_have_text("19,901–20,000 of 20,000")
    assert shown_indexes(page) == list(range(19_900, 20_000))
    expect(page.locator("#page-next")).to_be_disabled()
    assert address_query(page)["offset"] == ["19900"]
    page.click("#page-prev")
    expect(page.locator("#page-info")).to_have_text("19,801–19,900 of 20,000")
    page.fill("#page-go", "#12345")
    page.press("#page-go", "Enter")
    expect(page.locator("tr.result-row").first).to_have_attribute("data-index", "12345")
    expect(page.locator("#page-info")).to_have_text("12,346–12,445 of 20,000")
    page.click('#results button[data-sort="index"]')  # descending: the last URL first
    expect(page.locator("tr.result-row").first).to_have_attribute("data-index", "19999")
    assert len(reads) <= 6, f"one read per page shown: {reads}"
    shot(page, "large")


def test_a_live_result_joins_the_page_in_index_order_and_other_sorts_offer_a_refresh(page, server, target):
    # The target holds every URL until the test lets it answer, so each result lands while the page watches.
    key = secrets.token_hex(4)
    batch = server.submit([target.url(f"/hold/{key}?n={i}") for i in range(60)], concurrency=3)
    try:
        target.release_when_held(key, 3, held=3)
        deadline = time.monotonic() + 20
        while len(server.request("GET", batch["links"]["results"]).json()["results"]) < 3:
            # Stored, so the page's first read shows them, and only later ones come as new results.
            assert time.monotonic() < deadline, "the three answered URLs stored within 20 s"
            time.sleep(0.02)
        open_batch(page, server, batch["id"], "?sort=latency")
        expect(page.locator("tr.result-row")).to_have_count(3)
        target.release_when_held(key, 2, held=3)
        refresh = page.locator("#new-results")
        expect(refresh).to_have_text("2 new results — refresh")
        before = page.locator("tr.result-row").count()
        refresh.click()
        expect(page.locator("tr.result-row")).not_to_have_count(before)
        expect(page.locator("tr.result-row")).to_have_count(5)
        assert server.batch(batch["id"])["status"] == "running", "the refresh was offered while the batch ran"
    finally:
        target.release(key)
    wait_until_final(page)
    expect(page.locator("tr.result-row")).to_have_count(60)  # the batch's end reads the page once more
    expect(refresh).to_be_hidden()
    latencies = [ms_of(text) for text in page.locator("tr.result-row .col-latency").all_text_contents()]
    assert latencies == sorted(latencies, reverse=True)

    key = secrets.token_hex(4)
    descending = server.submit([target.url(f"/hold/{key}?n={i}") for i in range(60)], concurrency=2)
    try:
        target.release_when_held(key, 2, held=2)
        open_batch(page, server, descending["id"], "?order=desc")
        on_top = []
        for newest in range(1, 10, 2):  # each pair lands while it runs: the newer of the two goes on top
            if newest > 1:
                target.release_when_held(key, 2, held=2)
            expect(page.locator("tr.result-row").first).to_have_attribute("data-index", str(newest))
            on_top.append(page.locator("tr.result-row").first.get_attribute("data-index"))
            expect(page.locator("#batch-status")).to_have_text("running")
        assert len({i for i in on_top if i}) > 3, f"newer results went on top while it ran: {on_top}"
    finally:
        target.release(key)
    wait_until_final(page)
    assert shown_indexes(page) == list(range(59, -1, -1))


def test_the_next_page_of_a_running_batch_is_read_as_of_the_first_so_no_row_shows_twice(page, server, target):
    # Slowest first: five slow URLs land on top between the first page and the next. Read as of now, the next
    # page would start five rows early and show the first page's last five again. The target holds the five until
    # the first page is shown, and a sixth until the test ends, so the batch runs throughout whatever the load.
    slow, last = secrets.token_hex(4), secrets.token_hex(4)
    urls = [target.url(f"/ok?n={i}") for i in range(130)] + [target.url(f"/hold/{slow}?n={i}") for i in range(5)]
    batch = server.submit([*urls, target.url(f"/hold/{last}")], concurrency=10)
    try:
        deadline = time.monotonic() + 20
        while server.batch(batch["id"])["counts"]["ok"] < 130 or target.held(slow) < 5:
            assert time.monotonic() < deadline, "the 130 quick URLs done and the five slow ones held within 20 s"
            time.sleep(0.05)
        reads: list[str] = []
        page.on("request", lambda request: "/results?" in request.url and reads.append(request.url))
        open_batch(page, server, batch["id"], "?sort=latency")
        expect(page.locator("tr.result-row")).to_have_count(100)
        first = shown_indexes(page)
        assert target.release(slow) == 5
        expect(page.locator("#new-results")).to_have_text("5 new results — refresh", timeout=FINISHED)
        page.click("#page-next")
        expect(page.locator("#page-info")).to_contain_text("101–130")
        second = shown_indexes(page)
        assert sorted(first + second) == list(range(130)), f"each row once: {sorted(set(first) & set(second))} twice"
        assert "until_seq=" in reads[-1] and "until_seq=" not in reads[0], reads
        expect(page.locator("#new-results")).to_have_text("5 new results — refresh")
        assert server.batch(batch["id"])["status"] == "running", "the sixth URL kept the batch running throughout"
        shot(page, "pinned-next-page")
    finally:
        server.request("POST", f"/api/v1/batches/{batch['id']}/cancel")
        target.release(last)
