"""The OpenAPI description is true: it lists exactly the API's routes, and a live server's answers match it.

The schemathesis run fuzzes a real server that may fetch only 127.0.0.1 on a port where nothing listens
(GREENBATCH_DENY_TARGETS covers every other address), and whose submitted URLs are rewritten to that
port, so no generated URL is ever looked up or fetched anywhere else.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import ipaddress
import json
import os
import re
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.core.config import Config
from app.core.options import BatchOptions
from app.fetch import guard
from app.web import openapi
from tests.support.server import ROOT, GreenbatchServer

EXAMPLES_PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES", "25"))
_ROUTES_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import json, os, sys
from app import create_app
app = create_app()
rules = [(rule.rule, sorted(rule.methods - {"HEAD", "OPTIONS"})) for rule in app.url_map.iter_rules()]
print(json.dumps(rules))
"""


def flask_api_routes(tmp_path) -> dict[tuple[str, str], None]:
    """(OpenAPI-style path, method) of every route the real app registers under /api/v1."""
    env = {"GREENBATCH_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", _ROUTES_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    routes = {}
    for rule, methods in json.loads(out.strip().splitlines()[-1]):
        if rule.startswith("/api/v1/") or rule == "/api/v1":
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)
            for method in methods:
                routes[(path, method.lower())] = None
    return routes


def test_every_api_route_is_described_with_its_methods_and_nothing_else(server, tmp_path):
    document = server.request("GET", "/api/v1/openapi.json").json()
    described = {(path, method) for path, operations in document["paths"].items() for method in operations}
    assert described == set(flask_api_routes(tmp_path))


def test_the_description_is_openapi_3_1_with_the_main_schemas(server):
    response = server.request("GET", "/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert {"Batch", "Result", "Event", "Error", "OptionsInput", "Options"} <= set(document["components"]["schemas"])
    every_operation = [op for operations in document["paths"].values() for op in operations.values()]
    assert all(op["summary"] and op["operationId"] for op in every_operation)


def test_every_batch_option_is_described_for_requests_and_answers():
    described = openapi.schemas(Config())
    # The sidecars (each row's, the submitting request's origin) are never given by a client nor shown.
    option_names = {f.name for f in dataclasses.fields(BatchOptions)} - {"rows", "origin"}
    assert set(described["OptionsInput"]["properties"]) == option_names | {"webhook"}  # sugar for one notify entry
    assert set(described["Options"]["properties"]) == option_names


def test_the_description_states_this_servers_limits(make_server):
    custom = make_server(
        env={"GREENBATCH_MAX_URLS": "77", "GREENBATCH_MAX_CONCURRENCY": "9", "GREENBATCH_DEFAULT_CONCURRENCY": "3"}
    )
    schemas = custom.request("GET", "/api/v1/openapi.json").json()["components"]["schemas"]
    assert schemas["NewBatch"]["properties"]["urls"]["maxItems"] == 77
    assert schemas["OptionsInput"]["properties"]["concurrency"]["maximum"] == 9


# -- the API's page --------------------------------------------------------------------------


def test_the_api_page_lists_every_operation_of_the_description_with_its_summary(server):
    document = server.request("GET", "/api/v1/openapi.json").json()
    page = server.request("GET", "/api")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    rows = re.findall(r'<tr class="endpoint">\s*<td><code>(.*?)</code></td>\s*<td>(.*?)</td>', page.text, re.S)
    shown = [tuple(html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in row) for row in rows]
    assert shown == [
        (f"{method.upper()} {path}", operation["summary"].replace("`", ""))  # `code` is set in code
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]
    assert all(summary for _, summary in shown)
    assert 'href="/api/v1/openapi.json"' in page.text  # and the raw description, one click away


def test_the_headers_api_link_opens_the_api_page(server):
    assert '<a href="/api" ' in server.request("GET", "/").text


@pytest.mark.browser
def test_the_api_page_reads_on_a_phone_without_sideways_scrolling(browser, server):
    from tests.support.server import ARTIFACTS

    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        phone = context.new_page()
        phone.goto(server.url("/api"))
        assert phone.locator("tr.endpoint").count() == len(openapi.operations(Config()))
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        ARTIFACTS.mkdir(exist_ok=True)
        phone.screenshot(path=str(ARTIFACTS / "api-page-390.png"), full_page=True)
    finally:
        context.close()


# -- schemathesis against a live server -----------------------------------------------------


def only_a_closed_port(port: int) -> dict[str, str]:
    """Settings under which 127.0.0.1:<port> is the one place a fetch may go: every other address, in every
    form, is on the deny-list, and 127.0.0.1 on any other port is loopback, refused at submit."""
    ipv4 = ipaddress.ip_network("0.0.0.0/0").address_exclude(ipaddress.ip_network("127.0.0.1/32"))
    ipv6 = ipaddress.ip_network("::/0").address_exclude(ipaddress.ip_network("::ffff:127.0.0.1/128"))
    return {
        "GREENBATCH_DENY_TARGETS": ",".join(str(network) for network in [*ipv4, *ipv6]),
        "GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{port}",
    }


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory, closed_port):
    """A server whose only fetchable target is a port where nothing listens, so fuzzed batches reach no network."""
    instance = GreenbatchServer(tmp_path_factory.mktemp("fuzz"), only_a_closed_port(closed_port)).start()
    instance.netloc = f"127.0.0.1:{closed_port}"  # where generated URLs are sent
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_server):
    """The live server's description, loaded by schemathesis."""
    loaded = schemathesis.openapi.from_url(fuzzed_server.url("/api/v1/openapi.json"))
    loaded.config.update(base_url=fuzzed_server.base_url)
    return loaded


def local_only(url, netloc: str):
    """A generated URL with its host and port replaced by `netloc` when the server would accept it (others
    stay as they are)."""
    if not isinstance(url, str):
        return url
    try:
        guard.check_url(url)
    except (guard.InvalidUrl, ValueError):
        return url  # refused by the server with the very same check
    parts = urlsplit(url)
    rewritten = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    try:
        if urlsplit(guard.check_url(rewritten)).netloc == netloc:
            return rewritten
    except (guard.InvalidUrl, ValueError):
        pass
    return f"http://{netloc}/"


def keep_fetches_local(case, netloc: str) -> None:
    """Rewrite every URL a generated submission, watch list or source preview carries to `netloc` (where the server's fetches
    find nothing)."""
    watch_list = case.path.startswith("/api/v1/lists") and not case.path.endswith(("/run", "/runs"))
    if case.method.upper() not in ("POST", "PATCH") or not (
        case.path.endswith(("/batches", "/sources/preview")) or watch_list
    ):
        return
    if isinstance(case.body, dict) and isinstance(case.body.get("source"), dict):
        case.body["source"]["url"] = local_only(case.body["source"].get("url"), netloc)
    if isinstance(case.body, dict) and isinstance(case.body.get("urls"), list):
        case.body["urls"] = [local_only(url, netloc) for url in case.body["urls"]]
    options = case.body.get("options") if isinstance(case.body, dict) else None
    if isinstance(options, dict):  # a notify target is resolved when submitted and posted to when the batch ends
        targets = options.get("notify") if isinstance(options.get("notify"), list) else []
        for target in [*targets, options.get("webhook")]:
            if isinstance(target, dict) and "url" in target:
                target["url"] = local_only(target["url"], netloc)
    elif isinstance(case.body, str) and "csv" in (case.media_type or ""):
        try:
            rows = list(csv.reader(io.StringIO(case.body)))
        except csv.Error:
            return  # the server cannot read it either: it must answer 400
        out = io.StringIO()
        csv.writer(out).writerows([local_only(row[0], netloc)] if row else [] for row in rows)
        case.body = out.getvalue()
    elif isinstance(case.body, str):
        case.body = "\n".join(local_only(line.strip(), netloc) for line in case.body.splitlines())


def use_a_real_batch_sometimes(case, server) -> None:
    """For about half the cases with a batch id, use a batch that exists, so answers other than 404 are checked."""
    batch_id = (case.path_parameters or {}).get("batch_id")
    if batch_id is not None and len(str(batch_id)) % 2 == 0:
        urls = [f"http://{server.netloc}/a", f"http://{server.netloc}/b"]
        created = server.request("POST", "/api/v1/batches", json={"urls": urls})
        assert created.status_code == 201, created.text
        case.path_parameters["batch_id"] = created.json()["id"]


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def fuzz_runs() -> list:
    """Valid requests for every operation; invalid ones for those with a query or body to get wrong."""
    runs = []
    for path, method, _, operation in openapi.operations(Config()):
        has_input = "requestBody" in operation or any(p["in"] == "query" for p in operation.get("parameters", []))
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if has_input else [GenerationMode.POSITIVE]
        runs += [pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}") for mode in modes]
    return runs


@pytest.mark.parametrize("method, path, mode", fuzz_runs())
def test_api_answers_are_never_500_and_match_the_description(api_schema, fuzzed_server, method, path, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def answers_match(case):
        keep_fetches_local(case, fuzzed_server.netloc)
        use_a_real_batch_sometimes(case, fuzzed_server)
        case.call_and_validate(base_url=fuzzed_server.base_url, session=fuzzed_server.session, checks=CHECKS)

    answers_match()


# -- what fuzzing found ----------------------------------------------------------------------


def test_a_csv_body_the_csv_module_cannot_read_answers_400_not_500(server):
    body = '"' + "a" * 200_000  # a quote never closed: one field past the csv module's 128 KiB limit
    response = server.request("POST", "/api/v1/batches", data=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_body"


def test_rerun_refuses_fields_it_does_not_know_like_submit_does(server, target):
    batch = server.submit([target.url("/ok")])
    response = server.request("POST", f"/api/v1/batches/{batch['id']}/rerun", json={"only": "all", "ony": "failed"})
    assert response.status_code == 400
    assert response.json()["error"]["details"] == [{"field": "ony", "message": "is not a known field"}]
