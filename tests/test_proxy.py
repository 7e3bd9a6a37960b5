"""Behind a real nginx under /dash/: pages, assets, API and websockets all keep the prefix."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest
import requests

from tests.support.nginx import NGINX, Nginx
from tests.support.server import GreenbatchServer

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx; .ci/run does)"),
]


@pytest.fixture(scope="module")
def proxied(tmp_path_factory, target_env):
    """A greenbatch server trusting one proxy hop, and nginx serving it under /dash/."""
    server = GreenbatchServer(tmp_path_factory.mktemp("proxied"), {**target_env, "GREENBATCH_PROXY_HOPS": "1"}).start()
    nginx = Nginx(tmp_path_factory.mktemp("nginx"), urlsplit(server.base_url).port).start()
    yield server, nginx
    nginx.stop()
    server.stop()


def test_the_bare_prefix_redirects_to_the_dashboard(proxied):
    _, nginx = proxied
    response = requests.get(nginx.base_url + "/dash", allow_redirects=False, timeout=10)
    assert response.status_code == 301 and response.headers["Location"].endswith("/dash/")


def test_the_dashboard_loads_under_the_prefix_with_working_assets(proxied):
    _, nginx = proxied
    page = requests.get(nginx.base_url + "/dash/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css))"', page.text)
    assert assets, "the page references its scripts and styles"
    for asset in assets:
        assert asset.startswith("/dash/static/"), asset
        assert requests.get(nginx.base_url + asset, timeout=10).status_code == 200, asset


def test_the_api_through_the_proxy_answers_with_prefixed_urls(proxied, target):
    _, nginx = proxied
    response = requests.post(nginx.base_url + "/dash/api/v1/batches", json={"urls": [target.url("/ok")]}, timeout=10)
    assert response.status_code == 201, response.text
    assert response.headers["Location"].startswith("/dash/api/v1/batches/") or response.headers["Location"].startswith(
        nginx.base_url + "/dash/api/v1/batches/"
    )
    batch = response.json()
    assert all(link.startswith("/dash/") for link in batch["links"].values()), batch["links"]


def test_a_batch_links_to_its_page_under_the_prefix(proxied, target):
    _, nginx = proxied
    batch = requests.post(nginx.base_url + "/dash/api/v1/batches", json={"urls": [target.url("/ok")]}, timeout=10)
    page_link = batch.json()["links"]["page"]
    assert page_link == f"/dash/batches/{batch.json()['id']}"
    page = requests.get(nginx.base_url + page_link, timeout=10)
    assert page.status_code == 200 and batch.json()["id"] in page.text


def test_the_api_index_and_the_api_page_link_under_the_prefix(proxied):
    _, nginx = proxied
    index = requests.get(nginx.base_url + "/dash/api/v1", timeout=10).json()
    assert index["links"] == {
        "batches": "/dash/api/v1/batches",
        "openapi": "/dash/api/v1/openapi.json",
        "docs": "/dash/api",
        "healthz": "/dash/healthz",
    }
    page = requests.get(nginx.base_url + index["links"]["docs"], timeout=10)
    assert page.status_code == 200
    assert 'href="/dash/api/v1/openapi.json"' in page.text and '<a href="/dash/api" ' in page.text
    endpoints = [
        re.sub(r"<[^>]+>", "", code)
        for code in re.findall(r'<tr class="endpoint">\s*<td><code>(.*?)</code>', page.text)
    ]
    assert endpoints and all(endpoint.split(" ", 1)[1].startswith("/dash/api/v1") for endpoint in endpoints), endpoints


def test_the_batch_page_hands_its_script_a_websocket_url_under_the_prefix(proxied, target):
    _, nginx = proxied
    batch = requests.post(
        nginx.base_url + "/dash/api/v1/batches", json={"urls": [target.url("/ok")]}, timeout=10
    ).json()
    page = requests.get(nginx.base_url + f"/dash/batches/{batch['id']}", timeout=10).text
    ws_urls = re.findall(r'"(wss?://[^"]+)"', page)
    assert ws_urls and all(u.startswith(f"ws://127.0.0.1:{nginx.port}/dash/ws/") for u in ws_urls), ws_urls


def test_a_websocket_through_nginx_streams_a_whole_batch(proxied, target):
    websocket = pytest.importorskip("websocket")
    _, nginx = proxied
    batch = requests.post(
        nginx.base_url + "/dash/api/v1/batches",
        json={"urls": [target.url("/delay/50")] * 30, "options": {"concurrency": 5}},
        timeout=10,
    ).json()
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{nginx.port}/dash/ws/batches/{batch['id']}?after=0", origin=nginx.base_url, timeout=20
    )
    seqs, indexes, kinds = [], set(), []
    try:
        while True:
            message = json.loads(ws.recv())
            kinds.append(message["type"])
            if message["type"] == "events":
                for event in message["events"]:
                    seqs.append(event["seq"])
                    if event["type"] == "result":
                        indexes.add(event["data"]["index"])
            if message["type"] == "end":
                break
    finally:
        ws.close()
    assert kinds[0] == "snapshot" and kinds[-1] == "end"
    assert seqs == list(range(1, len(seqs) + 1))
    assert indexes == set(range(30))


@pytest.mark.browser
def test_the_dashboard_through_nginx_submits_and_streams_a_batch_live(proxied, target, page):
    from tests.support.server import ARTIFACTS

    expect = pytest.importorskip("playwright.sync_api").expect
    _, nginx = proxied
    page.goto(nginx.base_url + "/dash/")
    page.fill("#urls", "\n".join([target.url("/delay/100")] * 12 + [target.url("/status/500")] * 3))
    page.fill("#concurrency", "3")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/dash/batches/[0-9a-f]+$"))
    expect(page.locator("#progress")).to_have_attribute("aria-valuenow", "100", timeout=20_000)
    expect(page.locator("#batch-status")).to_have_text("done")
    expect(page.locator("tr.result-row")).to_have_count(15)
    expect(page.locator("#live-mode")).not_to_contain_text("polling")
    expect(page.locator("#by-status")).to_contain_text("500")  # charts drawn before the screenshot
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "batch-page-behind-nginx.png"), full_page=True)
