"""The dashboard in a real headless Chromium: submit, watch, reload, cancel, rerun, upload, errors, escaping, fallback."""

from __future__ import annotations

import os
import re
from urllib.parse import quote

import pytest

from tests.support.server import ARTIFACTS, CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
]
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect

FINISHED = 20_000  # ms a small batch gets to finish in the browser's eyes


def open_batch(page, server, batch_id: str) -> None:
    """Open a batch page and wait until its script has run."""
    page.goto(server.url(f"/batches/{batch_id}"))
    expect(page.locator("#live-mode")).not_to_be_empty()


def wait_until_final(page, status: str = "done") -> None:
    """Wait for the page to show the batch at 100% with the given final status."""
    expect(page.locator("#progress")).to_have_attribute("aria-valuenow", "100", timeout=FINISHED)
    expect(page.locator("#batch-status")).to_have_text(status, timeout=FINISHED)


def shown_indexes(page) -> list[int]:
    """The URL indexes of the result rows on the current table page, in order."""
    return [int(i) for i in page.locator("tr.result-row").evaluate_all("rows => rows.map(r => r.dataset.index)")]


def test_a_batch_submitted_from_the_form_streams_every_row_and_reaches_100_percent(page, server, target):
    urls = (
        [target.url(f"/delay/{20 * i}") for i in range(12)]
        + [target.url("/redirect/3")] * 4
        + [target.url("/status/503")] * 4
        + [target.url("/bytes/20000")] * 4
    )
    page.goto(server.url("/"))
    page.fill("#urls", "\n".join(urls))
    page.fill("#name", "from the form")
    page.fill("#concurrency", "4")
    page.fill("#headers", "X-Probe: greenbatch\n")
    expect(page.locator("#url-count")).to_have_text("24 URLs")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/batches/[0-9a-f]+$"))
    batch_id = page.url.rsplit("/", 1)[1]

    wait_until_final(page)
    expect(page.locator("tr.result-row")).to_have_count(24)
    assert sorted(shown_indexes(page)) == list(range(24))
    # The four 302 chains end warn (temporary_redirect): OK and Warn add up to the 20 that were ok.
    expect(page.locator("#count-ok")).to_have_text("16")
    expect(page.locator("#count-warn")).to_have_text("4")
    expect(page.locator("#count-failed")).to_have_text("4")
    expect(page.locator("#batch-name")).to_have_text("from the form")
    options = server.batch(batch_id)["options"]
    assert options["concurrency"] == 4 and options["headers"] == {"X-Probe": "greenbatch"}

    page.locator('tr.result-row[data-index="12"]').click()  # a redirect: its chain and waterfall open below
    detail = page.locator('tr.detail[data-detail-for="12"]')
    expect(detail.locator(".chain li")).to_have_count(4)
    expect(detail.locator(".wrow")).to_have_count(7)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "batch-page.png"), full_page=True)


def test_reloading_mid_batch_neither_loses_nor_doubles_a_row(page, server, target):
    batch = server.submit([target.url("/delay/300")] * 30, concurrency=3)  # about 3 s
    open_batch(page, server, batch["id"])
    expect(page.locator("tr.result-row").nth(2)).to_be_attached()
    page.reload()
    expect(page.locator("tr.result-row").nth(8)).to_be_attached()
    assert page.locator("#batch-status").text_content() == "running", "reload again while it still runs"
    page.reload()
    wait_until_final(page)
    expect(page.locator("tr.result-row")).to_have_count(30)
    assert shown_indexes(page) == list(range(30))
    expect(page.locator('[data-n="all"]')).to_have_text("30")


def test_cancel_stops_the_batch_and_shows_the_rest_as_cancelled(page, server, target):
    batch = server.submit([target.url("/delay/400")] * 40, concurrency=2)  # 8 s if left alone
    open_batch(page, server, batch["id"])
    expect(page.locator("tr.result-row").first).to_be_attached()
    page.click("#cancel")
    wait_until_final(page, "cancelled")
    expect(page.locator("#cancel")).to_be_hidden()
    cancelled = int(page.locator("#count-cancelled").text_content())
    assert cancelled >= 30
    assert server.batch(batch["id"])["counts"]["cancelled"] == cancelled
    expect(page.locator('[data-n="all"]')).to_have_text("40")
    expect(page.locator("#rerun-failed")).to_be_enabled()


def test_rerun_failed_opens_a_new_batch_of_only_the_failed_urls(page, server, target):
    batch = server.submit([target.url("/ok")] * 3 + [target.url("/status/500"), target.url("/status/404")])
    server.wait(batch["id"])
    open_batch(page, server, batch["id"])
    wait_until_final(page)
    page.click("#rerun-failed")
    page.wait_for_url(re.compile(r"/batches/(?!%s)[0-9a-f]+$" % batch["id"]))
    wait_until_final(page)
    expect(page.locator("tr.result-row")).to_have_count(2)
    expect(page.locator("tr.result-row .col-url .url")).to_have_text(
        [target.url("/status/500"), target.url("/status/404")]
    )
    expect(page.locator(".meta")).to_contain_text(f"rerun of {batch['id']}")


def test_a_txt_file_loads_into_the_editor_and_submits(page, server, target, tmp_path):
    listing = tmp_path / "urls.txt"
    listing.write_text(
        f"# staging checks\r\n{target.url('/ok')}\r\n\r\n{target.url('/delay/50')}\r\n{target.url('/status/404')}\r\n"
    )
    page.goto(server.url("/"))
    page.set_input_files("#file", str(listing))
    expect(page.locator("#file-note")).to_contain_text("urls.txt")
    expect(page.locator("#url-count")).to_have_text("3 URLs")
    assert page.input_value("#urls").splitlines()[1] == target.url("/ok")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/batches/[0-9a-f]+$"))
    wait_until_final(page)
    expect(page.locator("tr.result-row")).to_have_count(3)


def test_a_csv_file_without_a_recognised_header_loads_its_first_column_without_the_header(
    page, server, target, tmp_path
):
    table = tmp_path / "urls.csv"
    table.write_text(f'link,owner\n"{target.url("/ok?a=1,2")}",web\n{target.url("/ok")},api\n')
    page.goto(server.url("/"))
    page.set_input_files("#file", str(table))
    expect(page.locator("#urls")).to_have_value(f"{target.url('/ok?a=1,2')}\n{target.url('/ok')}")


def test_an_invalid_url_is_marked_on_its_line_with_the_servers_message(page, server, target):
    page.goto(server.url("/"))
    page.fill("#urls", f"{target.url('/ok')}\n\nftp://x\n{target.url('/ok')}")
    page.click("#submit")
    problem = page.locator("#url-errors li").first
    expect(problem).to_contain_text("line 3: ftp://x — only http:// and https:// URLs are fetched")
    expect(page.locator("#gutter .bad")).to_have_text(["3"])
    expect(page.locator("#marks .mark")).to_have_count(1)
    expect(page.locator("#form-error")).to_contain_text("1 URL cannot be fetched")
    assert "/batches/" not in page.url
    page.fill("#urls", f"{target.url('/ok')}\n\nhttp://x.example/\n{target.url('/ok')}")  # fixed in place
    expect(problem).to_have_class(re.compile(r"\bresolved\b"))
    expect(page.locator("#marks .mark")).to_have_count(0)


def test_an_option_out_of_range_is_shown_next_to_its_field(page, server, target):
    page.goto(server.url("/"))
    page.fill("#urls", target.url("/ok"))
    page.fill("#concurrency", "0")
    page.click("#submit")
    expect(page.locator('[data-error-for="options.concurrency"]')).to_contain_text("must be between 1 and")
    expect(page.locator("#concurrency")).to_have_attribute("aria-invalid", "true")


def test_target_controlled_text_is_shown_as_text_never_as_markup(page, server, target):
    markup = '<img src=x onerror="document.title=`pwned`">'
    batch = server.submit(
        [target.url("/html?ctype=" + quote(markup)), target.url("/redirect-to?url=" + quote(markup))], max_redirects=0
    )
    server.wait(batch["id"])
    open_batch(page, server, batch["id"])
    wait_until_final(page)
    expect(page.locator("td.col-type").first).to_have_text(markup)
    expect(page.locator("td.col-outcome .message").last).to_contain_text(markup)
    page.locator('tr.result-row[data-index="0"]').click()
    expect(page.locator("tr.detail dd").nth(1)).to_have_text(markup)
    assert page.locator("#results img").count() == 0
    assert "pwned" not in page.title()


def test_the_page_polls_and_says_so_when_websockets_are_blocked(page, server, target):
    # Like a proxy that drops the upgrade: every websocket the page opens is closed before any message.
    page.route_web_socket(re.compile(r"/ws/"), lambda ws: ws.close(code=1011, reason="blocked by test"))
    batch = server.submit([target.url("/delay/150")] * 12, concurrency=3)
    open_batch(page, server, batch["id"])
    expect(page.locator("#live-mode")).to_contain_text("polling (websocket unavailable)")
    wait_until_final(page)
    expect(page.locator("tr.result-row")).to_have_count(12)
    page.goto(server.url("/"))
    expect(page.locator("#live-mode")).to_have_text("Live updates: polling (websocket unavailable)")
    expect(page.locator(f'tr.batch-row[data-id="{batch["id"]}"]')).to_contain_text("12 / 12")


def test_an_unknown_batch_has_a_404_page(page, server):
    response = page.goto(server.url("/batches/0123456789ab"))
    assert response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")


def test_an_unknown_page_gets_the_dashboards_404_page_with_a_way_back(page, server):
    response = page.goto(server.url("/no/such/page"))
    assert response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator(".notfound")).to_contain_text("/no/such/page")
    page.click("text=See all batches")
    expect(page.locator("#urls")).to_be_visible()


def test_a_resync_close_reconnects_after_the_last_seq_and_loses_no_row(page, make_server, target):
    server = make_server(env={"GREENBATCH_WS_QUEUE_EVENTS": "3"})  # a viewer 3 events behind is told to resync
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    batch = server.submit([target.url(f"/delay/{i % 60}") for i in range(800)], concurrency=10)  # ~2.5 s
    open_batch(page, server, batch["id"])
    wait_until_final(page)
    expect(page.locator('[data-n="all"]')).to_have_text("800")
    expect(page.locator("#count-ok")).to_have_text("800")
    afters = [int(re.search(r"after=(\d+)$", url).group(1)) for url in sockets]
    assert len(afters) > 1 and afters == sorted(afters) and afters[-1] > 0, (
        afters
    )  # each reconnect picks up where it was
    expect(page.locator("#live-mode")).to_contain_text("all results loaded")


def test_the_batch_list_shows_a_new_batch_and_its_progress_live(page, server, target):
    page.goto(server.url("/"))
    expect(page.locator("#live-mode")).to_have_text("Live updates: websocket")
    batch = server.submit([target.url("/delay/100")] * 6, concurrency=2)
    row = page.locator(f'tr.batch-row[data-id="{batch["id"]}"]')
    expect(row).to_contain_text("6 / 6", timeout=FINISHED)
    expect(row.locator(".badge")).to_have_text("done")
    expect(page.locator("tr.batch-row").first).to_have_attribute("data-id", batch["id"])


def test_older_batches_load_a_page_at_a_time_below_the_live_list_until_none_are_left(page, make_server, target):
    server = make_server()
    ids = []
    for i in range(112):
        response = server.request(
            "POST", "/api/v1/batches", json={"urls": [target.url(f"/ok?n={i}")], "name": f"batch {i:03d}"}
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    server.wait(ids[-1])
    page.goto(server.url("/"))
    rows = page.locator("tr.batch-row")
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_attribute("data-id", ids[-1])
    older = page.locator("#older")
    expect(older).to_be_visible()

    older.click()
    expect(rows).to_have_count(100)
    expect(older).to_be_visible()
    older.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "older-batches.png"))
    older.click()
    expect(rows).to_have_count(112)
    expect(older).to_be_hidden()
    expect(rows.last).to_have_attribute("data-id", ids[0])
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.id)") == ids[::-1], "newest first, none twice"

    # A new batch still arrives live above them all, and the older ones stay.
    fresh = server.submit([target.url("/ok")])
    expect(rows.first).to_have_attribute("data-id", fresh["id"], timeout=FINISHED)
    expect(rows).to_have_count(113)


def test_a_short_list_offers_no_older_batches(page, make_server, target):
    server = make_server()
    server.wait(server.submit([target.url("/ok")])["id"])
    page.goto(server.url("/"))
    expect(page.locator("tr.batch-row")).to_have_count(1)
    expect(page.locator("#older")).to_be_hidden()
