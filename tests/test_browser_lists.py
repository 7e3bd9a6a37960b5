"""The watch lists' pages at 1280 and at 390 px: "Save as watch list" on a batch page, the list page with its
runs and what changed in each, and /lists with each list's verdict and failures per run."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.support.server import ARTIFACTS, CHROMIUM, GreenbatchServer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
]
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect


@pytest.fixture(scope="module")
def server(tmp_path_factory, target_env):
    """One server for the module."""
    instance = GreenbatchServer(tmp_path_factory.mktemp("lists-pages"), target_env).start()
    yield instance
    instance.stop()


def shot(tab, name: str, full_page: bool = True) -> None:
    """A screenshot (of the whole page, or of the screen) in test-artifacts/, named for the screen width."""
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"lists-{name}-{tab.viewport_size['width']}.png"), full_page=full_page)


def fits(tab) -> None:
    """Nothing is wider than the screen: no sideways scrolling."""
    scroll, inner = tab.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"the page is {scroll} px wide on a {inner} px screen"


def test_a_batch_saved_as_a_watch_list_runs_and_shows_what_changed(server, target, page):
    tag = uuid.uuid4().hex[:8]
    # Answers of the batch, the list's run 1 and its run 2, in turn.
    urls = [target.url(f"/changes/{tag}/a?answers=200,200,500"), target.url(f"/changes/{tag}/b?answers=500,500,200")]
    batch = server.wait(server.submit(urls, concurrency=2)["id"])
    page.goto(server.url(f"/batches/{batch['id']}"))
    page.click("#save-list")
    expect(page.locator("#list-name")).to_have_value(batch["name"])
    expect(page.locator("#list-source")).to_contain_text("2 URLs")
    page.fill("#list-name", "shop pages")
    page.click("#list-save")
    expect(page.locator("#list-title")).to_have_text("shop pages")
    expect(page.locator("#list-meta")).to_contain_text("every 6h")
    for number in (1, 2):
        page.click("#run-now")
        run = page.locator(".run-row").first
        expect(run.locator(".batch-link")).to_have_text(f"shop pages #{number}")
        expect(run.locator(".badge")).to_have_text("done", timeout=15_000)
    newest = page.locator(".run-row").first
    expect(newest.locator(".change-chips")).to_have_text("1 newly failed1 fixed")
    expect(page.locator(".run-row").nth(1)).to_contain_text("first run")
    shot(page, "list")
    fits(page)
    newest.locator(".batch-link").click()
    expect(page.locator("#batch-list")).to_contain_text("a run of its watch list")
    expect(page.locator("#compare")).to_be_visible()  # a run opens on its diff against the run before


def test_the_lists_page_shows_each_lists_verdict_failures_per_run_and_next_run(server, target, phone):
    response = server.request(
        "POST",
        "/api/v1/lists",
        json={
            "name": "docs",
            "urls": [target.url("/ok"), target.url("/status/500")],
            "schedule": {"cron": "0 3 * * *"},
        },
    )
    assert response.status_code == 201, response.text
    watched = response.json()
    for _ in range(2):
        run = server.request("POST", f"/api/v1/lists/{watched['id']}/run").json()
        server.wait(run["id"])
    phone.goto(server.url("/lists"))
    row = phone.locator(f".list-row[data-list-id='{watched['id']}']")
    expect(row.locator(".list-verdict")).to_have_text("FAIL")
    expect(row.locator(".sparkline rect")).to_have_count(2)
    expect(row.locator(".sparkline")).to_have_attribute("aria-label", "failures in the last 2 runs: 1, 1")
    expect(row.locator(".list-next")).not_to_have_text("–")
    shot(phone, "index")
    fits(phone)
    row.locator(".batch-link").click()
    expect(phone.locator(".run-row")).to_have_count(2)
    shot(phone, "list")
    fits(phone)


def test_a_list_of_a_sitemap_shows_its_source_each_run_opens_on_its_diff_and_an_unreadable_one_says_why(
    server, target, page, phone
):
    tag = uuid.uuid4().hex[:8]
    # The sitemap lists pages 0-2 at run 1, pages 1-4 at run 2, and answers 500 at run 3.
    sitemap = target.url(f"/sitemap/turns/{tag}.xml?turns=0:1:2,1:2:3:4,s500")
    response = server.request(
        "POST",
        "/api/v1/lists",
        json={"name": "blog", "source": {"type": "sitemap", "url": sitemap}, "schedule": {"every": "6h"}},
    )
    assert response.status_code == 201, response.text
    watched = response.json()
    page.goto(server.url(f"/lists/{watched['id']}"))
    expect(page.locator("#list-meta")).to_contain_text(f"sitemap {sitemap}")
    for number in (1, 2):
        page.click("#run-now")
        run = page.locator(".run-row").first
        expect(run.locator(".batch-link")).to_have_text(f"blog #{number}")
        expect(run.locator(".badge")).to_have_text("done", timeout=15_000)
    # Pages 3 and 4 added, page 0 removed. (Pages 1 and 2 may also read faster or slower: a loaded machine's
    # first run can take 100 ms more a fetch, which is what a diff shows as a change in time.)
    chips = page.locator(".run-row").first.locator(".change-chips")
    expect(chips.locator(".change-added")).to_have_text("2 added")
    expect(chips.locator(".change-removed")).to_have_text("1 removed")
    expect(chips.locator(".change-chip:not(.change-faster):not(.change-slower)")).to_have_count(2)

    page.click("#run-now")
    expect(page.locator("#list-error")).to_contain_text("answered 500, not 200")
    expect(page.locator("#list-skipped")).to_contain_text("1 run not started; the last at")
    expect(page.locator("#list-skipped")).to_contain_text(f"its source could not be read: the sitemap {sitemap}")
    expect(page.locator(".run-row")).to_have_count(2)
    shot(page, "sitemap-list")
    fits(page)

    page.locator(".run-row").first.locator(".batch-link").click()
    compare = page.locator("#compare")
    expect(compare).to_be_visible()  # a list's run opens on its diff against the run before, unasked
    expect(compare.locator("#compare-base option:checked")).to_contain_text("blog #1")
    expect(compare.locator("#compare-base option:checked")).to_contain_text("(the run before)")
    expect(compare.locator(".kind-count.kind-added .n")).to_have_text("2")
    expect(compare.locator(".kind-count.kind-removed .n")).to_have_text("1")
    expect(compare.locator("#compare-rows tr:not(.kind-faster):not(.kind-slower)")).to_have_count(3)
    shot(page, "sitemap-run")

    phone.goto(server.url("/lists"))
    row = phone.locator(f".list-row[data-list-id='{watched['id']}']")
    expect(row.locator(".list-watched")).to_have_text(f"sitemap {sitemap}")
    shot(phone, "sitemap-index")
    fits(phone)


def test_the_lists_page_shows_50_lists_and_more_when_asked(server, target, page):
    have = len(server.request("GET", "/api/v1/lists", params={"limit": 200}).json()["lists"])
    for n in range(have, 53):
        body = {"name": f"many {n}", "urls": [target.url("/ok")], "schedule": {"every": "6h"}}
        assert server.request("POST", "/api/v1/lists", json=body).status_code == 201
    page.goto(server.url("/lists"))
    expect(page.locator(".list-row")).to_have_count(50)
    expect(page.locator("#lists-note")).to_have_text("the first 50 lists")
    page.click("#lists-more")
    expect(page.locator(".list-row")).to_have_count(max(have, 53))
    expect(page.locator("#lists-more")).to_be_hidden()
    expect(page.locator("#lists-note")).to_have_text(f"{max(have, 53)} lists")


def test_a_list_made_on_the_form_from_a_sitemap_runs_the_urls_it_reads(server, target, page):
    sitemap = target.url("/sitemap/urls.xml?n=7")
    page.goto(server.url("/lists"))
    page.get_by_label("From sitemap").check()
    expect(page.locator("#list-urls")).to_be_hidden()
    page.fill("#source-url", sitemap)
    page.fill("#source-exclude", "/page/6$")
    page.click("#preview")  # optional for a list: each run reads the source again
    expect(page.locator("#preview-counts")).to_have_text(
        "1 sitemap read · 7 URLs found · 7 unique · 1 excluded → 6 to fetch"
    )
    page.fill("#list-name", "sitemap pages")
    shot(page, "form-sitemap", full_page=False)
    fits(page)
    page.click("#list-save")
    expect(page.locator("#list-title")).to_have_text("sitemap pages")
    expect(page.locator("#list-meta")).to_contain_text(f"sitemap {sitemap}")
    page.click("#run-now")
    run = page.locator(".run-row").first
    expect(run.locator(".batch-link")).to_have_text("sitemap pages #1")
    expect(run.locator(".badge")).to_have_text("done", timeout=15_000)
    expect(run.locator(".run-urls")).to_have_text("6")
    shot(page, "form-sitemap-run")
    list_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    watched = server.request("GET", f"/api/v1/lists/{list_id}").json()
    assert (watched["source"]["type"], watched["source"]["url"], watched["source"]["exclude"]) == (
        "sitemap",
        sitemap,
        "/page/6$",
    )


def test_on_a_phone_a_sources_bad_include_and_denied_url_are_shown_beside_their_fields(server, target, phone):
    before = len(server.request("GET", "/api/v1/lists", params={"limit": 200}).json()["lists"])
    phone.goto(server.url("/lists"))
    phone.get_by_label("Links on this page").check()
    expect(phone.locator("#source-same-origin")).to_be_checked()
    phone.click("#list-save")
    expect(phone.locator("[data-error-for='source.url']")).to_have_text("Give the URL of a page.")
    phone.fill("#source-url", target.url("/links?n=3"))
    phone.fill("#source-include", "/page/([")
    phone.click("#list-save")
    include = phone.locator("[data-error-for='source.include']")
    expect(include).to_be_visible()
    expect(include).to_contain_text("is not a regular expression RE2 accepts")
    expect(phone.locator("#source-include")).to_have_attribute("aria-invalid", "true")
    expect(phone.locator("[data-error-for='source.url']")).to_be_hidden()
    expect(phone.locator("#list-error")).to_have_text("The watch list was not saved: see the field marked above.")
    shot(phone, "form-bad-include", full_page=False)  # the form: the lists below may be many
    fits(phone)

    phone.fill("#source-include", "")
    phone.fill("#source-url", "http://10.1.2.3/")
    phone.click("#list-save")
    expect(phone.locator("[data-error-for='source.url']")).to_contain_text("10.1.2.3")
    expect(phone.locator("[data-error-for='source.include']")).to_be_hidden()
    assert len(server.request("GET", "/api/v1/lists", params={"limit": 200}).json()["lists"]) == before
