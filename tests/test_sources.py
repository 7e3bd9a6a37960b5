"""Sources: a batch started from a sitemap or from the links on a page, previewed first, every fetch of the source
through the SSRF guard and its byte cap, XML bombs and gzip bombs refused with the server's memory unchanged."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.memory import peak_rss_during, rss
from tests.support.server import GreenbatchServer, error_of

MiB = 1024 * 1024
MAX_URLS = 10_000  # the module's server: a source of 8,000 URLs fits, one of 10,001 does not


@pytest.fixture(scope="module")
def server(tmp_path_factory, target_env):
    """One server for the module, with GREENBATCH_MAX_URLS low enough to pass with a generated sitemap."""
    instance = GreenbatchServer(
        tmp_path_factory.mktemp("sources"), {**target_env, "GREENBATCH_MAX_URLS": str(MAX_URLS)}
    ).start()
    yield instance
    instance.stop()


def preview(server, **source):
    """POST /api/v1/sources/preview."""
    return server.request("POST", "/api/v1/sources/preview", json={"source": source})


def submit(server, options=None, **source):
    """POST /api/v1/batches with a source instead of urls."""
    return server.request("POST", "/api/v1/batches", json={"source": source, "options": options or {}})


def test_a_nested_gzipped_sitemap_index_of_12_sitemaps_and_8000_urls_previews_in_under_2_s_and_runs(server, target):
    url = target.url("/sitemap/index.xml.gz?parts=12&n=8000&depth=2")  # an index of 12 indexes of a urlset.xml.gz
    fetched_before = target.hits().get("/page/0", 0)  # the session's target: other modules may have fetched it
    started = time.monotonic()
    response = preview(server, type="sitemap", url=url)
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    body = response.json()
    assert took < 2, f"the preview took {took:.2f} s"
    assert body["counts"] == {
        "sitemaps_read": 25,
        "pages_read": 0,
        "found": 8000,
        "unique": 8000,
        "excluded": 0,
        "invalid": 0,
        "kept": 8000,
    }
    assert body["complete"] and not body["over_limit"] and body["would_take"] == 8000
    assert len(body["urls"]) == 50
    assert body["urls"][0] == {"url": target.url("/page/0"), "meta": {"lastmod": "2026-11-01"}}
    assert target.hits().get("/page/0", 0) == fetched_before  # a preview starts nothing

    response = submit(server, {"concurrency": 200, "method": "HEAD"}, type="sitemap", url=url)
    assert response.status_code == 201, response.text
    batch = server.wait(response.json()["id"], timeout=60)
    assert batch["status"] == "done"
    assert batch["counts"]["total"] == 8000 and batch["counts"]["ok"] == 8000
    assert batch["source"] == {"type": "sitemap", "url": url, "include": None, "exclude": None, "max_urls": None}
    assert batch["name"] == f"sitemap {url}"
    first = server.request("GET", f"/api/v1/batches/{batch['id']}/results", params={"limit": 1}).json()["results"][0]
    assert first["meta"] == {"lastmod": "2026-11-01"}  # each URL's lastmod comes back with its result
    listed = server.request("GET", "/api/v1/batches").json()["batches"][0]
    assert listed["id"] == batch["id"] and listed["source"]["url"] == url


def test_a_page_with_2000_links_previews_them_resolved_deduplicated_and_on_its_origin_and_runs(server, target):
    url = target.url("/links?n=2000")
    response = preview(server, type="page_links", url=url)
    assert response.status_code == 200, response.text
    body = response.json()
    # a, link, img and script; each <a> twice (once with a #fragment); one link elsewhere, one mailto:
    assert body["counts"] == {
        "sitemaps_read": 0,
        "pages_read": 1,
        "found": 3002,
        "unique": 2001,
        "excluded": 1,
        "invalid": 1,
        "kept": 2000,
    }
    first = body["urls"][:3]
    assert [u["url"] for u in first] == [target.url("/page/0"), target.url("/page/1"), target.url("/page/2")]
    assert first[0]["meta"] == {"found_on": url}
    assert not any("#" in u["url"] or "other.invalid" in u["url"] for u in body["urls"])

    response = submit(server, {"concurrency": 200, "method": "HEAD"}, type="page_links", url=url)
    assert response.status_code == 201, response.text
    batch = server.wait(response.json()["id"], timeout=60)
    assert batch["counts"]["ok"] == 2000
    assert batch["source"]["same_origin"] is True
    first = server.request("GET", f"/api/v1/batches/{batch['id']}/results", params={"limit": 1}).json()["results"][0]
    assert first["meta"] == {"found_on": url}

    elsewhere = preview(server, type="page_links", url=url, same_origin=False).json()
    assert elsewhere["counts"]["kept"] == 2001


def test_include_and_exclude_are_regular_expressions_on_the_url(server, target):
    url = target.url("/sitemap/urls.xml?n=100")
    body = preview(server, type="sitemap", url=url, include=r"/page/\d$", exclude="/page/[02468]$").json()
    assert [u["url"] for u in body["urls"]] == [target.url(f"/page/{i}") for i in (1, 3, 5, 7, 9)]
    assert body["counts"]["excluded"] == 95

    bad = preview(server, type="sitemap", url=url, include="(?<=x)a")
    assert bad.status_code == 400
    error = error_of(bad)
    assert error["code"] == "invalid_source"
    assert error["details"][0]["field"] == "source.include" and "RE2" in error["details"][0]["message"]


def test_over_greenbatch_max_urls_the_source_is_refused_unless_max_urls_takes_the_first_n(server, target):
    url = target.url(f"/sitemap/index.xml?parts=2&n={MAX_URLS + 1}")
    body = preview(server, type="sitemap", url=url).json()
    assert body["over_limit"] and not body["complete"]
    assert f"more than {MAX_URLS:,} URLs" in body["message"] and "source.max_urls" in body["message"]

    refused = submit(server, type="sitemap", url=url)
    assert refused.status_code == 400
    assert error_of(refused)["code"] == "too_many_urls"

    taken = submit(server, {"method": "HEAD"}, type="sitemap", url=url, max_urls=30)
    assert taken.status_code == 201, taken.text
    assert taken.json()["counts"]["total"] == 30
    assert preview(server, type="sitemap", url=url, max_urls=MAX_URLS + 1).status_code == 400  # a server maximum


def test_a_sitemap_index_nested_deeper_than_3_levels_is_refused(server, target):
    assert preview(server, type="sitemap", url=target.url("/sitemap/index.xml?parts=1&n=5&depth=3")).status_code == 200
    response = preview(server, type="sitemap", url=target.url("/sitemap/index.xml?parts=1&n=5&depth=4"))
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "sitemap_too_deep" and "at most 3 levels" in error["message"]


def test_a_sitemap_of_more_than_50000_urls_is_refused_naming_the_protocols_limit(server, target):
    # The include keeps nothing, so the preview reads on to the end instead of stopping past GREENBATCH_MAX_URLS.
    response = preview(server, type="sitemap", url=target.url("/sitemap/urls.xml?n=50001"), include="^none$")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "sitemap_too_large" and "more than 50,000 URLs" in error["message"]


@pytest.mark.parametrize("name", ["bomb", "external-entity"])
def test_xml_bombs_and_external_entities_are_refused_before_anything_expands(server, target, name):
    before = rss(server.proc.pid)
    peak, response = peak_rss_during(
        server.proc.pid, lambda: preview(server, type="sitemap", url=target.url(f"/sitemap/{name}.xml"))
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "xml_forbidden"
    assert "document type declaration" in error["message"] and "external entities" in error["message"]
    assert peak - before < 5 * MiB
    assert submit(server, type="sitemap", url=target.url(f"/sitemap/{name}.xml")).status_code == 400


def test_a_gzip_bomb_sitemap_is_cut_at_50_mb_with_the_servers_memory_flat(server, target):
    before = rss(server.proc.pid)
    url = target.url("/sitemap/gzip-bomb.xml.gz")  # 100 KiB inflating to 100 MiB
    peak, response = peak_rss_during(server.proc.pid, lambda: preview(server, type="sitemap", url=url))
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "sitemap_too_large"
    assert "larger than 52,428,800 bytes uncompressed" in error["message"]
    assert peak - before < 50 * MiB, f"the server grew by {(peak - before) / MiB:.0f} MiB"


def test_the_urls_of_a_source_are_remembered_in_8_bytes_each_not_in_full(server, target):
    url = target.url("/sitemap/urls.xml.gz?n=20000&long=1990")  # 20,000 URLs of 2,000 characters: 40 MB of text
    before = rss(server.proc.pid)
    # The include keeps one URL, so the preview reads them all instead of stopping past GREENBATCH_MAX_URLS.
    peak, response = peak_rss_during(
        server.proc.pid, lambda: preview(server, type="sitemap", url=url, include="/page/0/")
    )
    assert response.status_code == 200, response.text
    assert response.json()["counts"]["unique"] == 20_000 and response.json()["counts"]["kept"] == 1
    assert peak - before < 16 * MiB, f"the server grew by {(peak - before) / MiB:.0f} MiB"


def healthz_waits_during(server, action):
    """How long each /healthz answer took while `action` ran in this thread, and what `action` returned."""
    waits = []
    done = threading.Event()

    def probe():
        while not done.is_set():
            started = time.monotonic()
            requests.get(server.url("/healthz"), timeout=30)
            waits.append(time.monotonic() - started)
            time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        result = action()
    finally:
        done.set()
        prober.join()
    return waits, result


def test_a_50_mb_sitemap_is_parsed_as_it_streams_with_the_hub_serving_meanwhile(server, target):
    url = target.url("/sitemap/urls.xml?n=10000&pad=5150")  # 52 million bytes, just under the protocol's cap
    before = rss(server.proc.pid)
    waits, (peak, response) = healthz_waits_during(
        server, lambda: peak_rss_during(server.proc.pid, lambda: preview(server, type="sitemap", url=url))
    )
    assert response.status_code == 200, response.text
    assert response.json()["counts"]["kept"] == 10_000
    assert peak - before < 50 * MiB, f"the server grew by {(peak - before) / MiB:.0f} MiB"
    # Read in one go, the 52 MB would hold the hub for seconds; between pieces, /healthz waits for one piece at most
    # (1 s leaves room for a machine whose cores are shared).
    assert len(waits) >= 3 and max(waits) < 1.0, f"/healthz waited up to {max(waits):.2f} s: {waits}"


def test_a_sitemap_index_naming_itself_thousands_of_times_is_read_once(server, target):
    url = target.url("/sitemap/self.xml?n=5000&urls=3")  # itself 5,000 times, then a urlset of 3 URLs
    response = preview(server, type="sitemap", url=url)
    assert response.status_code == 200, response.text
    counts = response.json()["counts"]
    assert counts["sitemaps_read"] == 2 and counts["kept"] == 3


def test_an_index_naming_more_sitemaps_than_greenbatch_source_max_sitemaps_is_refused_once_those_read_fall_short(
    server, target
):
    before = target.hits().get("/sitemap/urls.xml.gz", 0)
    response = preview(server, type="sitemap", url=target.url("/sitemap/index.xml?parts=99&n=99"))
    assert response.status_code == 200, response.text  # the index and its 99 sitemaps: 100, the bound
    assert response.json()["complete"] is True and response.json()["message"] is None
    assert target.hits().get("/sitemap/urls.xml.gz", 0) == before + 99
    url = target.url("/sitemap/index.xml?parts=100&n=100&start=7")  # one URL in each of 100 sitemaps
    response = preview(server, type="sitemap", url=url)
    assert response.status_code == 200, response.text  # reported as over_limit is: a batch would be refused
    shown = response.json()
    assert (shown["complete"], shown["over_limit"], shown["counts"]["kept"]) == (False, False, 99)
    assert "at most 100 in all (GREENBATCH_SOURCE_MAX_SITEMAPS), and they gave 99 URLs" in shown["message"]
    assert target.hits().get("/sitemap/urls.xml.gz", 0) == before + 2 * 99, "the 100th sitemap is never read"
    response = submit(server, type="sitemap", url=url)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "too_many_sitemaps" and error["message"] == shown["message"]
    assert "or set source.max_urls (at most 99)" in error["message"]
    assert submit(server, type="sitemap", url=url, max_urls=99).status_code == 201


def test_an_index_of_5000_sitemaps_gives_max_urls_from_its_first_ones(server, target):
    before = target.hits().get("/sitemap/urls.xml.gz", 0)
    url = target.url("/sitemap/index.xml?parts=5000&n=20000&start=3")  # 4 URLs in each sitemap
    response = preview(server, type="sitemap", url=url, max_urls=10)
    assert response.status_code == 200, response.text
    shown = response.json()
    assert (shown["would_take"], shown["complete"], shown["message"]) == (10, False, None)
    assert shown["counts"]["sitemaps_read"] == 4  # the index, then sitemaps until an 11th URL came
    response = submit(server, type="sitemap", url=url, max_urls=10)
    assert response.status_code == 201, response.text
    assert target.hits().get("/sitemap/urls.xml.gz", 0) == before + 3 + 3, "a batch reads only the sitemaps it needs"


def test_a_page_ending_inside_a_1_mb_start_tag_is_refused_at_64_kib_with_the_hub_serving_meanwhile(server, target):
    url = target.url("/open-tag?n=300000")  # `<a b=c b=c ...` 1.2 MB long, never closed
    waits, response = healthz_waits_during(server, lambda: preview(server, type="page_links", url=url))
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "page_tag_too_large" and "a tag (or comment) longer than 64 KiB" in error["message"]
    assert max(waits) < 1.0, f"/healthz waited {max(waits):.2f} s"


def test_a_page_with_a_1_mb_inline_script_gives_the_links_after_it(server, target):
    response = preview(server, type="page_links", url=target.url("/links?n=20&script=1000000"))
    assert response.status_code == 200, response.text
    assert response.json()["counts"]["kept"] == 20


def test_a_sitemap_whose_root_tag_runs_past_1_mib_is_refused_with_the_hub_serving_meanwhile(server, target):
    url = target.url("/sitemap/attributes.xml?n=300000")  # <urlset a0="" a1="" ...>: 3.3 MB in one tag
    waits, response = healthz_waits_during(server, lambda: preview(server, type="sitemap", url=url))
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "sitemap_token_too_large" and "a tag (or comment) longer than 1 MiB" in error["message"]
    assert max(waits) < 1.0, f"/healthz waited {max(waits):.2f} s"
    small = preview(server, type="sitemap", url=target.url("/sitemap/attributes.xml?n=1000"))
    assert small.status_code == 200 and small.json()["counts"]["kept"] == 1


def test_beyond_two_sources_read_at_once_previews_submits_and_list_runs_answer_503_busy(server, target):
    slow = target.url("/trickle?bytes=15&interval=0.1")  # 1.5 s to read, then not a sitemap
    watched = server.request(
        "POST", "/api/v1/lists", json={"source": {"type": "sitemap", "url": slow}, "schedule": {"every": "1h"}}
    ).json()
    started = target.hits().get("/trickle", 0)
    with ThreadPoolExecutor(2) as pool:
        reading = [pool.submit(preview, server, type="sitemap", url=slow) for _ in range(2)]
        deadline = time.monotonic() + 5
        while target.hits().get("/trickle", 0) < started + 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        refused = [
            preview(server, type="sitemap", url=target.url("/sitemap/urls.xml")),
            submit(server, type="sitemap", url=target.url("/sitemap/urls.xml")),
            server.request("POST", f"/api/v1/lists/{watched['id']}/run"),
        ]
        assert [r.result().status_code for r in reading] == [400, 400]
    for response in refused:
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        error = error_of(response)
        assert error["code"] == "busy" and "(GREENBATCH_SOURCE_MAX_READS)" in error["message"]
    assert server.request("GET", f"/api/v1/lists/{watched['id']}").json()["skipped"]["count"] == 0
    assert preview(server, type="sitemap", url=target.url("/sitemap/urls.xml")).status_code == 200
    assert server.request("DELETE", f"/api/v1/lists/{watched['id']}").status_code == 204


def test_a_source_that_trickles_is_given_up_after_greenbatch_source_timeout(make_server, target):
    quick = make_server({"GREENBATCH_SOURCE_TIMEOUT": "1"})
    started = time.monotonic()
    response = preview(quick, type="sitemap", url=target.url("/trickle?bytes=100000&interval=0.2"))
    assert time.monotonic() - started < 3
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "source_timeout" and "took longer than 1 s (GREENBATCH_SOURCE_TIMEOUT)" in error["message"]
    assert quick.request("GET", "/healthz").status_code == 200


@pytest.fixture
def listener():
    """A loopback port the server may not reach, listening, to tell whether anything connected."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def nothing_connected(sock) -> bool:
    """Whether no connection reached the listener."""
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return True
    return False


def test_a_sitemap_on_a_denied_address_is_refused_before_a_packet_is_sent(server, target, listener):
    port = listener.getsockname()[1]
    direct = preview(server, type="sitemap", url=f"http://127.0.0.1:{port}/sitemap.xml")
    assert direct.status_code == 400
    assert error_of(direct)["code"] == "invalid_source" and "127.0.0.1" in error_of(direct)["message"]

    # The same address behind a redirect, and behind a name: the guard refuses each hop before connecting.
    for url in (
        target.url(f"/redirect-to?url=http://127.0.0.1:{port}/sitemap.xml"),
        f"http://localhost:{port}/sitemap.xml",
    ):
        response = submit(server, type="sitemap", url=url)
        assert response.status_code == 400, response.text
        assert error_of(response)["code"] in ("source_blocked", "invalid_source")
    assert nothing_connected(listener)


@pytest.mark.parametrize(
    "source, field",
    [
        ({"type": "rss", "url": "http://example.com/"}, "source.type"),
        ({"type": "sitemap"}, "source.url"),
        ({"type": "sitemap", "url": "http://example.com/", "same_origin": False}, "source.same_origin"),
        ({"type": "sitemap", "url": "http://example.com/", "max_urls": 0}, "source.max_urls"),
        ({"type": "page_links", "url": "ftp://example.com/"}, "source.url"),
        ({"type": "sitemap", "url": "http://example.com/", "include": "x" * 1001}, "source.include"),
    ],
)
def test_a_source_that_cannot_be_read_answers_400_naming_the_field(server, source, field):
    response = server.request("POST", "/api/v1/batches", json={"source": source})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_source" and error["details"][0]["field"] == field


def test_urls_and_source_together_are_refused(server, target):
    response = server.request(
        "POST",
        "/api/v1/batches",
        json={"urls": [target.url("/ok")], "source": {"type": "sitemap", "url": target.url("/sitemap/urls.xml")}},
    )
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_body"


# -- the form --------------------------------------------------------------------------------------


@pytest.mark.browser
def test_the_form_previews_a_sitemap_then_starts_the_batch_that_names_its_source(server, target, page):
    expect = pytest.importorskip("playwright.sync_api").expect
    url = target.url("/sitemap/index.xml.gz?parts=3&n=120")
    page.goto(server.url("/"))
    page.get_by_label("From sitemap").check()
    expect(page.locator("#submit")).to_be_disabled()  # nothing starts before a preview
    page.fill("#source-url", url)
    page.fill("#source-exclude", "/page/1[0-9]$")
    page.click("#preview")
    expect(page.locator("#preview-counts")).to_have_text(
        "4 sitemaps read · 120 URLs found · 120 unique · 10 excluded → 110 to fetch"
    )
    expect(page.locator("#preview-urls li")).to_have_count(50)
    expect(page.locator("#preview-urls li").first).to_contain_text(target.url("/page/0"))
    page.screenshot(path="/tmp/sources-preview.png", full_page=True)
    page.fill("#source-include", "/page/")  # a change asks for a new preview
    expect(page.locator("#submit")).to_be_disabled()
    page.click("#preview")
    expect(page.locator("#submit")).to_be_enabled()
    page.click("#submit")
    page.wait_for_url("**/batches/*")
    expect(page.locator("#batch-source")).to_contain_text(f"from sitemap {url}")
    expect(page.locator("#batch-source")).to_contain_text("exclude /page/1[0-9]$")
    page.screenshot(path="/tmp/sources-batch.png")


@pytest.mark.browser
def test_a_preview_of_an_index_whose_sitemaps_read_fall_short_shows_the_servers_reason(server, target, page):
    expect = pytest.importorskip("playwright.sync_api").expect
    url = target.url("/sitemap/index.xml?parts=100&n=100&start=3")  # one URL in each of 100 sitemaps: 99 are read
    page.goto(server.url("/"))
    page.get_by_label("From sitemap").check()
    page.fill("#source-url", url)
    page.click("#preview")
    expect(page.locator("#preview-counts")).to_have_text(
        "100 sitemaps read · 99 URLs found · 99 unique · 0 excluded → more than 99 to fetch"
    )
    shown = preview(server, type="sitemap", url=url).json()
    assert (shown["complete"], shown["over_limit"]) == (False, False)
    expect(page.locator("#preview-message")).to_have_text(shown["message"])  # as text: the URL in it is no markup
    expect(page.locator("#preview-limit")).to_be_hidden()
    page.screenshot(path="/tmp/sources-preview-short.png", full_page=True)
    page.fill("#source-url", target.url("/sitemap/urls.xml?n=3"))  # a preview that reads its source whole
    page.click("#preview")
    expect(page.locator("#preview-counts")).to_have_text(
        "1 sitemap read · 3 URLs found · 3 unique · 0 excluded → 3 to fetch"
    )
    expect(page.locator("#preview-message")).to_be_hidden()


@pytest.mark.browser
def test_on_a_phone_links_on_a_page_over_the_limit_offer_to_take_the_first_n(server, target, phone):
    expect = pytest.importorskip("playwright.sync_api").expect
    phone.goto(server.url("/"))
    phone.get_by_label("Links on this page").check()
    phone.fill("#source-url", target.url(f"/links?n={MAX_URLS + 5}"))
    phone.click("#preview")
    expect(phone.locator("#preview-limit")).to_contain_text(f"at most {MAX_URLS:,} (GREENBATCH_MAX_URLS)")
    expect(phone.locator("#preview-counts")).to_contain_text(f"→ more than {MAX_URLS:,} to fetch")
    expect(phone.locator("#submit")).to_be_disabled()
    assert phone.evaluate("document.scrollingElement.scrollWidth - window.innerWidth") <= 0
    phone.screenshot(path="/tmp/sources-phone-limit.png", full_page=True)
    phone.click("#take-first")
    expect(phone.locator("#preview-counts")).to_contain_text(f"→ {MAX_URLS:,} to fetch")
    expect(phone.locator("#submit")).to_be_enabled()
    phone.screenshot(path="/tmp/sources-phone-taken.png", full_page=True)
