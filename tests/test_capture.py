"""What a batch that sets `capture` records of each server it spoke to (issue 20): the address, the protocol,
the Server header, the headers it listed and, over https, the certificate; `tls_verify` off records a
certificate's problems instead of failing the row; GREENBATCH_CA_BUNDLE adds CAs; and a batch's certificate
inventory (`GET /api/v1/batches/<id>/certificates`), in both stores.

Servers are real: HTTPS hosts on 127.0.0.2 onwards with certificates from a CA made by trustme (IP SANs).
"""

from __future__ import annotations

import csv
import datetime
import io
import itertools
import socket

import orjson
import pytest

from app import fetch
from app.core.config import Config, ConfigError
from app.core.options import CLIENTS, BatchOptions
from app.core.results import Result
from app.core.stats import row_of
from app.fetch import guard, tls
from app.fetch.errors import FetchError
from app.fetch.follow import follow
from app.runs.certificates import certificates, expiring
from app.runs.engine import Fetching
from app.runs.events import Event
from app.runs.reader import BatchReader
from tests.support.server import error_of
from tests.support.tls_hosts import FORMULA, TlsHosts

TLS_FIELDS = {
    "version",
    "cipher",
    "issuer",
    "subject",
    "sans",
    "not_before",
    "not_after",
    "days_left",
    "name_match",
    "chain_valid",
    "fingerprint",
    "problems",
    "sans_omitted",
}
CAPTURED = {"remote_ip", "http_version", "server", "headers", "tls"}
HOSTS = 30  # the suite's size of "5,000 URLs over 300 hosts": 300 URLs over 30 hosts
PER_HOST = 10
EXPIRES_IN = [5 + 3 * i for i in range(HOSTS)]  # days: host 0 in 5, host 1 in 8, ... host 29 in 92


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """30 HTTPS hosts; host 1 presents a certificate for another name, each expires EXPIRES_IN[i] days on."""
    instance = TlsHosts(
        tmp_path_factory.mktemp("tls"),
        HOSTS,
        days=lambda i: EXPIRES_IN[i],
        names=lambda ip: ["elsewhere.example"] if ip == "127.0.0.3" else [ip],
    )
    yield instance
    instance.stop()


@pytest.fixture
def trusted(hosts):
    """This process trusts the test CA, as GREENBATCH_CA_BUNDLE makes a server do."""
    tls.use_ca_bundle(str(hosts.ca_file))
    yield hosts
    tls.use_ca_bundle(None)


def fetched(url: str, client: str, at: str | None = None, **options) -> dict:
    """One URL through a client's transport and the follow policy, as the engine fetches it; the result. `at`:
    the address every host name resolves to (else the system's resolver says)."""
    chosen = BatchOptions(concurrency=2, timeout=10, connect_timeout=5, client=client, **options)
    transport = fetch.TRANSPORTS[client](chosen, lambda host, port: socket.getaddrinfo(at or host, port, type=1))
    result = Result(index=0, url=url)
    try:
        follow(transport, result, chosen, 0.0, 2048)
    finally:
        transport.close()
    return result.to_dict()


WANTED = {"tls": True, "headers": ["cache-control", "x-robots-tag"]}

# ---------------------------------------------------------------------------------------------
# What each hop records, in both transports
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_every_hop_records_address_protocol_server_listed_headers_and_certificate(trusted, client):
    host = trusted.hosts[0]
    result = fetched(host.url("/redirect"), client, capture=WANTED)
    assert result["ok"], result
    [hop] = result["redirects"]
    for seen in (hop, result):
        assert seen["remote_ip"] == "127.0.0.2" and seen["http_version"] == "HTTP/1.1"
        assert seen["server"].startswith("tls-host/1.0")
        assert set(seen["tls"]) == TLS_FIELDS
        assert seen["tls"]["sans"] == ["127.0.0.2"] and seen["tls"]["sans_omitted"] == 0
        assert seen["tls"]["name_match"] and seen["tls"]["chain_valid"]
        assert seen["tls"]["not_after"] == host.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert seen["tls"]["days_left"] == EXPIRES_IN[0] and seen["tls"]["problems"] == []
        assert seen["tls"]["version"].startswith("TLS") and seen["tls"]["cipher"]
    assert hop["headers"] == {}, "the 302 sends none of the listed headers"
    assert result["headers"] == {"cache-control": "max-age=60", "x-robots-tag": "noindex"}


@pytest.mark.parametrize("client", CLIENTS)
def test_without_capture_a_result_has_none_of_the_captured_fields(trusted, client):
    result = fetched(trusted.hosts[0].url("/redirect"), client)
    assert result["ok"] and not CAPTURED & set(result) and not CAPTURED & set(result["redirects"][0])


@pytest.mark.parametrize("client", CLIENTS)
def test_a_captured_header_value_is_kept_as_text_cut_at_1_KiB(trusted, client):
    result = fetched(trusted.hosts[0].url("/long-header"), client, capture={"tls": False, "headers": ["x-long"]})
    assert result["headers"]["x-long"] == ("<b>" + "x" * 5000)[:1024]
    assert "tls" not in result, "tls is recorded only when asked for"


@pytest.mark.parametrize("client", CLIENTS)
def test_over_plain_http_tls_is_null(target, client):
    result = fetched(target.url("/ok"), client, capture=WANTED)
    assert result["ok"] and result["tls"] is None and result["remote_ip"] == "127.0.0.1"


# ---------------------------------------------------------------------------------------------
# tls_verify
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_with_tls_verify_on_a_certificate_for_another_name_fails_the_row_as_tls(trusted, client):
    with pytest.raises(FetchError) as failure:
        fetched(trusted.hosts[1].url(), client, capture=WANTED)
    assert failure.value.kind == "tls" and "127.0.0.3" in str(failure.value)


@pytest.mark.parametrize("client", CLIENTS)
def test_with_tls_verify_off_a_certificate_for_another_name_is_recorded_with_its_problem(trusted, client):
    result = fetched(trusted.hosts[1].url(), client, capture=WANTED, tls_verify=False)
    assert result["ok"] and result["status_code"] == 200
    assert result["tls"]["sans"] == ["elsewhere.example"] and result["tls"]["name_match"] is False
    assert result["tls"]["problems"] == ["the certificate is not valid for 127.0.0.3"]
    # The fast client checks the chain apart from the name; requests' does not say (null).
    assert result["tls"]["chain_valid"] is (True if client == "fast" else None)


@pytest.mark.parametrize("client", CLIENTS)
def test_with_tls_verify_off_an_unknown_ca_is_recorded_not_refused(hosts, client):
    result = fetched(hosts.hosts[0].url(), client, capture=WANTED, tls_verify=False)
    assert result["ok"] and result["tls"]["name_match"] is True
    if client == "fast":
        assert result["tls"]["chain_valid"] is False
        assert result["tls"]["problems"] == ["unable to get local issuer certificate"]
    else:
        assert result["tls"]["chain_valid"] is None


@pytest.mark.parametrize("client", CLIENTS)
def test_an_unknown_ca_fails_the_row_until_the_ca_bundle_names_it(hosts, client):
    with pytest.raises(FetchError) as failure:
        fetched(hosts.hosts[0].url(), client)
    assert failure.value.kind == "tls"
    tls.use_ca_bundle(str(hosts.ca_file))
    try:
        assert fetched(hosts.hosts[0].url(), client)["ok"]
    finally:
        tls.use_ca_bundle(None)


# ---------------------------------------------------------------------------------------------
# A certificate's names: at most 4 KiB of them kept, the one that names the host always
# ---------------------------------------------------------------------------------------------

# 150 DNS names (about 6,000 characters), then the shop's name, then an address: what a CDN's certificate is like.
FILLER = [f"edge-{n:03}.customers-of-a-content-delivery-network.example" for n in range(150)]


def _der_certificate(names: list[str], days: int = 30) -> bytes:
    """A self-signed certificate (DER) whose SANs are these DNS names, as `cryptography` writes any name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "many names")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_a_certificate_with_100_names_of_1020_characters_is_recorded_in_4_KiB_with_a_count_of_those_left_out():
    names = [f"{n:03}" + "a" * 1017 for n in range(100)]  # ~100 KB of names a server may send in every handshake
    described = tls.described_certificate(_der_certificate(names), "elsewhere.example", True, None, tls.now_utc())
    sans = described["sans"]
    assert sans == [name[: tls.MAX_SAN] for name in names[: len(sans)]], "each cut at 253 characters, in order"
    assert len(sans) == tls.MAX_SANS_CHARS // 253 == 16
    assert described["sans_omitted"] == 100 - 16
    assert len(orjson.dumps(described)) < 5 * 1024, "what every result and redirect hop carries stays small"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """An HTTPS host on 127.0.0.1 whose certificate lists FILLER, then www.shop.example, then 127.0.0.1."""
    instance = TlsHosts(tmp_path_factory.mktemp("shop"), 1, names=lambda ip: [*FILLER, "www.shop.example", ip], first=1)
    tls.use_ca_bundle(str(instance.ca_file))
    yield instance.hosts[0]
    tls.use_ca_bundle(None)
    instance.stop()


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("name", ["www.shop.example", "127.0.0.1"])
def test_a_host_named_past_the_names_kept_matches_and_its_name_is_kept(shop, client, name):
    # OpenSSL accepts the certificate for both names; the record must agree, and list the name it matched by.
    result = fetched(f"https://{name}:{shop.port}/", client, at="127.0.0.1", capture={"tls": True, "headers": []})
    assert result["ok"], result
    info = result["tls"]
    assert info["name_match"] is True and info["problems"] == [] and info["chain_valid"] is True
    assert name in info["sans"] and "127.0.0.1" in info["sans"], "the matching name and the address are kept"
    assert sum(map(len, info["sans"])) <= tls.MAX_SANS_CHARS
    assert info["sans_omitted"] == len(FILLER) + 2 - len(info["sans"]) > 0


# ---------------------------------------------------------------------------------------------
# Through the server: options, the inventory
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gb(tmp_path_factory, hosts, target):
    """A server that trusts the test CA and may fetch the 30 hosts and the target."""
    from tests.support.server import GreenbatchServer

    env = {
        "GREENBATCH_CA_BUNDLE": str(hosts.ca_file),
        "GREENBATCH_ALLOW_TARGETS": f"{hosts.allow},127.0.0.1:{target.port}",
    }
    server = GreenbatchServer(tmp_path_factory.mktemp("gb"), env).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def inventory(gb, hosts):
    """A finished batch of 300 URLs over the 30 hosts (a host's certificate for another name among them) with
    capture and tls_verify off, and its certificates answer."""
    urls = [host.url(f"/page/{n}") for n in range(PER_HOST) for host in hosts.hosts]
    batch = gb.submit(urls, concurrency=30, capture={"tls": True, "headers": []}, tls_verify=False)
    done = gb.wait(batch["id"], timeout=60)
    assert done["counts"]["ok"] == len(urls), done["counts"]
    response = gb.request("GET", f"/api/v1/batches/{batch['id']}/certificates")
    assert response.status_code == 200, response.text
    return batch, response.json()


def test_the_inventory_has_one_row_per_host_and_certificate_with_its_expiry(inventory, hosts):
    batch, answer = inventory
    rows = {row["host"]: row for row in answer["certificates"]}
    assert answer["count"] == len(rows) == HOSTS
    for host, days in zip(hosts.hosts, EXPIRES_IN, strict=True):
        row = rows[f"{host.ip}:{host.port}"]
        assert row["not_after"] == host.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert row["days_left"] == days and row["urls"] == PER_HOST
        assert row["url_examples"][0] == host.url("/page/0") and len(row["url_examples"]) == 5
    assert [row["days_left"] for row in answer["certificates"]] == sorted(EXPIRES_IN), "soonest expiry first"
    assert answer["expiring"] == sum(1 for days in EXPIRES_IN if days <= 30) == 9
    assert rows[f"127.0.0.3:{hosts.hosts[1].port}"]["name_match"] is False


def test_the_inventory_pages_by_cursor_each_row_once_with_the_counts_of_every_page(gb, inventory):
    batch, whole = inventory
    shown, cursor = [], None
    for _ in range(10):
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        answer = gb.request("GET", f"/api/v1/batches/{batch['id']}/certificates", params=params).json()
        assert len(answer["certificates"]) <= 7 and answer["count"] == HOSTS and answer["expiring"] == 9
        shown += answer["certificates"]
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert shown == whole["certificates"] and len(shown) == HOSTS


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"cursor": "2026-01-01_x"}, "cursor")],
)
def test_a_bad_page_of_the_inventory_is_refused_naming_the_parameter(gb, inventory, params, field):
    batch, _ = inventory
    response = gb.request("GET", f"/api/v1/batches/{batch['id']}/certificates", params=params)
    assert response.status_code == 400 and error_of(response)["details"][0]["field"] == field


def test_a_certificate_expiring_within_21_days_fails_a_cert_days_left_check(gb, hosts):
    urls = [host.url() for host in hosts.hosts[:8]]  # expiring in 5, 8, ... 26 days; host 1's is for another name
    check = {"source": "cert.days_left", "op": ">", "value": 21}
    batch = gb.submit(urls, capture={"tls": True}, tls_verify=False, checks=[check])
    results = gb.results(gb.wait(batch["id"])["id"])
    failed = {r["index"]: r["reasons"] for r in results if r["outcome"] == "failed"}
    assert sorted(failed) == [i for i, days in enumerate(EXPIRES_IN[:8]) if days <= 21] == [0, 1, 2, 3, 4, 5]
    assert failed[0] == [
        {"rule": "check[0]", "expected": "cert.days_left > 21", "actual": f"{EXPIRES_IN[0]} days left"}
    ]
    assert [r["outcome"] for r in results[6:]] == ["ok", "ok"]


def test_a_cert_days_left_check_without_capture_tls_is_refused_naming_it(gb, hosts):
    check = {"source": "cert.days_left", "op": ">", "value": 21}
    response = gb.request(
        "POST", "/api/v1/batches", json={"urls": [hosts.hosts[0].url()], "options": {"checks": [check]}}
    )
    assert response.status_code == 400
    [detail] = error_of(response)["details"]
    assert detail["field"] == "options.checks[0].source" and "capture" in detail["message"], detail


def test_a_batch_records_its_capture_and_tls_verify_options(inventory):
    batch, _ = inventory
    assert batch["options"]["capture"] == {"tls": True, "headers": []} and batch["options"]["tls_verify"] is False


def test_the_csv_of_a_capturing_batch_has_the_captured_columns_with_formulas_defused(gb, hosts):
    batch = gb.submit([hosts.hosts[0].url("/formula")], capture={"tls": True, "headers": ["X-Formula"]})
    gb.wait(batch["id"])
    response = gb.request("GET", f"/api/v1/batches/{batch['id']}/results", params={"format": "csv"})
    header, row = list(csv.reader(io.StringIO(response.text)))
    line = dict(zip(header, row, strict=True))
    assert line["header:x-formula"] == "'" + FORMULA, "a spreadsheet shows the text, never runs it"
    assert line["remote_ip"] == "127.0.0.2" and line["tls_days_left"] == str(EXPIRES_IN[0])
    assert line["tls_name_match"] == "true" and line["ok"] == "true"


def test_a_batch_without_capture_has_an_empty_inventory(gb, hosts):
    batch = gb.submit([hosts.hosts[0].url()])
    gb.wait(batch["id"])
    answer = gb.request("GET", f"/api/v1/batches/{batch['id']}/certificates").json()
    assert answer["certificates"] == [] and answer["expiring"] == 0


def test_the_inventory_of_an_unknown_batch_is_404(gb):
    response = gb.request("GET", "/api/v1/batches/nosuchbatch/certificates")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"


@pytest.mark.parametrize(
    ("options", "field", "says"),
    [
        ({"capture": "tls"}, "options.capture", "must be an object"),
        ({"capture": {"tls": "yes"}}, "options.capture", "tls must be true or false"),
        ({"capture": {"cookies": True}}, "options.capture", "unknown key 'cookies'"),
        ({"capture": {"headers": ["x"] * 21}}, "options.capture", "at most 20"),
        ({"capture": {"headers": ["bad name"]}}, "options.capture", "is not a token"),
        ({"tls_verify": "maybe"}, "options.tls_verify", "true or false"),
    ],
)
def test_a_bad_capture_or_tls_verify_is_refused_naming_the_field(gb, hosts, options, field, says):
    response = gb.request("POST", "/api/v1/batches", json={"urls": [hosts.hosts[0].url()], "options": options})
    assert response.status_code == 400
    [detail] = error_of(response)["details"]
    assert detail["field"] == field and says in detail["message"], detail


def test_a_ca_bundle_that_is_not_a_pem_file_stops_start_up_naming_the_setting(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    policy = guard.Policy.from_settings(False, "", "")
    with pytest.raises(ConfigError, match=f"GREENBATCH_CA_BUNDLE: {bad} cannot be loaded as PEM certificates"):
        Fetching(Config(ca_bundle=str(bad)), policy)  # what both the server and a cluster worker build at start
    with pytest.raises(ConfigError, match="does not exist"):
        Fetching(Config(ca_bundle=str(tmp_path / "missing.pem")), policy)


# ---------------------------------------------------------------------------------------------
# The inventory in both stores
# ---------------------------------------------------------------------------------------------

_ids = itertools.count()


def _tls_of(fingerprint: str, not_after: str) -> dict:
    return {"issuer": "CN=ca", "subject": "CN=x", "sans": [], "not_after": not_after, "fingerprint": fingerprint}


def test_the_inventory_reads_final_and_redirect_hops_alike_in_either_store(store_factory):
    store = store_factory(flush_interval=0.01)
    batch_id = f"c{next(_ids)}"
    urls = [f"https://a.example/{n}" for n in range(4)]
    store.create_batch(batch_id, "certs", {}, urls, "2026-12-06T00:00:00.000Z")
    a = _tls_of("aa", "2026-12-16T00:00:00Z")
    b = _tls_of("bb", "2027-06-01T00:00:00Z")
    results = [
        # a redirect from a.example to b.example:8443, each with its certificate
        {"url": urls[0], "final_url": "https://b.example:8443/", "tls": b, "redirects": [{"url": urls[0], "tls": a}]},
        # a redirect that stays on a.example: the URL counts once
        {"url": urls[1], "final_url": urls[1], "tls": a, "redirects": [{"url": urls[1], "tls": a}]},
        {"url": urls[2], "final_url": urls[2], "tls": None, "redirects": []},  # a fetch that captured nothing
        {"url": urls[3], "final_url": None, "redirects": []},  # a failure before any response
    ]
    events = []
    for index, result in enumerate(results):
        data = {"index": index, "ok": True, "status_code": 200, "error": None, "bytes": 0, **result}
        data["timings"] = {"total": 1.0}
        events.append(Event(batch_id, index + 1, "result", data, row=row_of(data)))
    store.extend(events)
    assert store.flush(30)
    now = datetime.datetime(2026, 12, 6, tzinfo=datetime.UTC)
    rows = certificates(store, batch_id, now)
    assert [(r["host"], r["fingerprint"], r["urls"], r["days_left"]) for r in rows] == [
        ("a.example", "aa", 2, 10),
        ("b.example:8443", "bb", 1, 177),
    ]
    assert rows[0]["url_examples"] == urls[:2] and expiring(rows) == 1


class NothingInFlight:
    """The engine's side of a batch no process fetches now."""

    def hosts_live(self, batch_id: str) -> dict:
        return {}


def test_the_inventory_counted_as_results_come_in_any_order_ends_as_the_one_read_at_once(store_factory):
    # The reader keeps a batch's inventory and counts only the results stored since its last read; results are
    # stored as their fetches end, not in URL order, and the rows must come out as one read of them all gives.
    store = store_factory(flush_interval=0.01)
    batch_id = f"c{next(_ids)}"
    urls = [f"https://a.example/{n}" for n in range(8)]
    store.create_batch(batch_id, "certs", {}, urls, "2026-12-06T00:00:00.000Z")
    a, b = _tls_of("aa", "2026-12-16T00:00:00Z"), _tls_of("bb", "2027-06-01T00:00:00Z")
    events = []
    for seq, index in enumerate(reversed(range(8)), 1):
        data = {"index": index, "url": urls[index], "final_url": urls[index], "tls": a, "redirects": []}
        if index % 3 == 0:  # redirected from b.example:8443
            data["redirects"] = [{"url": "https://b.example:8443/", "tls": b}]
        data |= {"ok": True, "status_code": 200, "error": None, "bytes": 0, "timings": {"total": 1.0}}
        events.append(Event(batch_id, seq, "result", data, row=row_of(data)))
    reader = BatchReader(store, NothingInFlight())
    now = datetime.datetime(2026, 12, 6, tzinfo=datetime.UTC)
    store.extend(events[:5])
    assert store.flush(30)
    assert [row["urls"] for row in reader.certificates(batch_id, now).rows] == [5, 2]
    store.extend(events[5:])
    assert store.flush(30)
    rows = reader.certificates(batch_id, now).rows
    assert rows == certificates(store, batch_id, now)
    assert [(row["host"], row["urls"], row["url_examples"]) for row in rows] == [
        ("a.example", 8, urls[:5]),
        ("b.example:8443", 3, [urls[0], urls[3], urls[6]]),
    ]


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.parametrize("size", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_the_page_shows_the_certificates_tab_the_expiring_count_and_captured_text_as_text(
    browser, gb, hosts, inventory, size
):
    sync_api = pytest.importorskip("playwright.sync_api")
    batch, answer = inventory
    # A capturing batch whose header carries markup and a formula: shown as the text it is.
    marked = gb.submit([hosts.hosts[0].url("/formula")], capture={"tls": True, "headers": ["x-formula"]})
    gb.wait(marked["id"])
    context = browser.new_context(viewport={"width": size[0], "height": size[1]}, is_mobile=size[0] < 600)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        tab.goto(gb.url(f"/batches/{batch['id']}"))
        expect = sync_api.expect
        expect(tab.locator("#cert-expiring")).to_have_text("expiring within 30 days: 9")
        expect(tab.locator("#tls-unverified")).to_be_visible()
        tab.screenshot(path=f"/tmp/capture-head-{size[0]}.png")
        tab.click("#tab-certificates")
        expect(tab.locator("#cert-rows tr")).to_have_count(HOSTS)
        expect(tab.locator("#results-panel")).to_be_hidden()
        first = tab.locator("#cert-rows tr").first
        expect(first).to_contain_text(f"{hosts.hosts[0].ip}:{hosts.hosts[0].port}")
        expect(first).to_contain_text(str(EXPIRES_IN[0]))
        widths = tab.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"the page is {widths[0]} px wide on a {widths[1]} px screen"
        tab.evaluate("document.getElementById('view-tabs').scrollIntoView()")
        tab.screenshot(path=f"/tmp/capture-certs-{size[0]}.png")

        tab.goto(gb.url(f"/batches/{marked['id']}"))
        expect(tab.locator("#tls-unverified")).to_have_count(0)
        tab.locator("#result-rows tr.result-row").first.click()
        value = tab.locator("tr.detail .header-value")
        expect(value).to_have_text(FORMULA)
        assert tab.locator("tr.detail img").count() == 0, "captured text is never markup"
        tab.evaluate("document.querySelector('tr.result-row').scrollIntoView()")
        tab.screenshot(path=f"/tmp/capture-detail-{size[0]}.png")
    finally:
        context.close()
    assert not errors, errors


@pytest.mark.browser
def test_the_certificates_tab_shows_a_page_of_rows_and_show_more_adds_the_next(browser, gb, inventory):
    sync_api = pytest.importorskip("playwright.sync_api")
    batch, answer = inventory
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    # The tab reads 100 rows a page; this batch has 30, so its pages are made 12 rows long on their way out.
    tab.route(
        "**/certificates?*", lambda route: route.continue_(url=route.request.url.replace("limit=100", "limit=12"))
    )
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        tab.goto(gb.url(f"/batches/{batch['id']}"))
        tab.click("#tab-certificates")
        rows, more, expect = tab.locator("#cert-rows tr"), tab.locator("#certs-more"), sync_api.expect
        expect(rows).to_have_count(12)
        expect(tab.locator("#cert-count")).to_have_text(str(HOSTS))
        more.scroll_into_view_if_needed()
        tab.screenshot(path="/tmp/capture-certs-more.png")
        more.click()
        expect(rows).to_have_count(24)
        more.click()
        expect(rows).to_have_count(HOSTS)
        expect(more).to_be_hidden()
        hosts_shown = rows.locator(".host").all_inner_texts()
        assert hosts_shown == [row["host"] for row in answer["certificates"]], "each row once, in order"
    finally:
        context.close()
    assert not errors, errors


# ---------------------------------------------------------------------------------------------
# Cluster mode: the workers capture, PostgreSQL holds it, the web process answers the inventory
# ---------------------------------------------------------------------------------------------


def test_in_cluster_mode_the_workers_capture_and_the_inventory_reads_postgresql(
    tmp_path, hosts, postgres, redis_server
):
    for module in ("psycopg", "redis", "dramatiq"):
        pytest.importorskip(module)
    from tests.support.cluster import Cluster

    env = {"GREENBATCH_CA_BUNDLE": str(hosts.ca_file), "GREENBATCH_ALLOW_TARGETS": hosts.allow}
    cluster = Cluster(tmp_path, postgres.new_database(), redis_server.url, env)
    try:
        web = cluster.start_web()
        cluster.start_worker(threads=2)
        urls = [host.url(f"/c/{n}") for n in range(3) for host in hosts.hosts[:4]]
        batch = web.submit(urls, capture={"tls": True, "headers": ["cache-control"]}, tls_verify=False)
        done = web.wait(batch["id"], timeout=60)
        assert done["counts"]["ok"] == len(urls), cluster.logs()
        result = web.results(batch["id"])[0]
        assert result["remote_ip"] == "127.0.0.2" and result["headers"] == {"cache-control": "max-age=60"}
        answer = web.request("GET", f"/api/v1/batches/{batch['id']}/certificates").json()
        assert [(row["days_left"], row["urls"]) for row in answer["certificates"]] == [
            (days, 3) for days in EXPIRES_IN[:4]
        ]
    finally:
        cluster.stop()
