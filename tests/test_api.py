"""JSON API v1: submitting batches and every way a request can be wrong (always 4xx JSON, never 500)."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from app.core.config import Config
from app.web.api import BODY_BLOCK, _derived_name
from tests.support.memory import peak_rss_during, rss
from tests.support.server import error_of


def test_post_json_batch_answers_201_with_location_and_the_batch(server, target):
    response = server.request(
        "POST", "/api/v1/batches", json={"urls": [target.url("/ok")], "name": "smoke", "options": {"concurrency": 3}}
    )
    assert response.status_code == 201
    batch = response.json()
    assert response.headers["Location"].endswith(f"/api/v1/batches/{batch['id']}")
    assert batch["name"] == "smoke"
    assert batch["options"]["concurrency"] == 3
    assert batch["counts"]["total"] == 1
    assert batch["status"] in ("queued", "running", "done")


def test_post_text_plain_takes_one_url_per_line_and_options_from_the_query(server, target):
    body = f"# comment\n{target.url('/ok')}\n\n  {target.url('/status/204')}  \n"
    response = server.request(
        "POST",
        "/api/v1/batches?concurrency=2&name=plain&header=X-Probe:%20yes",
        data=body,
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 201, response.text
    batch = response.json()
    assert batch["counts"]["total"] == 2
    assert batch["name"] == "plain"
    assert batch["options"]["concurrency"] == 2
    assert batch["options"]["headers"] == {"X-Probe": "yes"}


def test_post_csv_takes_the_first_column_and_skips_a_header_row(server, target):
    body = f"url,note\n{target.url('/ok')},first\n{target.url('/status/404')},second\n"
    response = server.request("POST", "/api/v1/batches", data=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 201, response.text
    assert response.json()["counts"]["total"] == 2


def test_invalid_url_is_named_by_index_with_the_reason(server, target):
    response = server.request(
        "POST", "/api/v1/batches", json={"urls": [target.url("/ok"), "ftp://example.com/file", "not a url"]}
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_urls"
    assert [d["index"] for d in error["details"]] == [1, 2]
    assert error["details"][0]["field"] == "urls[1]"
    assert "ftp" in error["details"][0]["message"]
    # One numbering everywhere: a URL's index is its position in the list sent, from 0.
    assert error["message"].startswith("2 of 3 URLs cannot be fetched; the first is #1: only http:// and https://")


@pytest.mark.parametrize(
    "body, code",
    [
        ({"urls": "http://example.com"}, "invalid_urls"),
        ({"urls": []}, "invalid_urls"),
        ({"urls": [42]}, "invalid_urls"),
        ({"urls": [None]}, "invalid_urls"),
        ({"urls": ["http://example.com"], "options": {"concurrency": "many"}}, "invalid_options"),
        ({"urls": ["http://example.com"], "options": {"concurrency": 0}}, "invalid_options"),
        ({"urls": ["http://example.com"], "options": {"concurrency": 10**9}}, "invalid_options"),
        ({"urls": ["http://example.com"], "options": {"concurrency": True}}, "invalid_options"),
        ({"urls": ["http://example.com"], "options": {"method": "DELETE"}}, "invalid_options"),
        ({"urls": ["http://example.com"], "options": {"headers": {"Bad Name": "x"}}}, "invalid_options"),
        ({"urls": ["http://example.com"], "options": {"headers": {"X": "a\r\nInjected: 1"}}}, "invalid_options"),
        ({"urls": ["http://example.com"], "options": {"headers": {"X": "caf\u00e9 \u2603"}}}, "invalid_options"),
        ({"urls": ["http://example.com"], "options": {"headers": {"Host": "admin.example.com"}}}, "invalid_options"),
        ({"urls": ["http://example.com"], "options": {"headers": {"X": "a\x0bb"}}}, "invalid_options"),
        ({"urls": ["http://example.com"], "options": {"accept_status": "6xx"}}, "invalid_options"),
        ({"urls": ["http://example.com"], "options": {"accept_status": "200," * 1000 + "200"}}, "invalid_options"),
        ({"urls": ["http://example.com"], "options": {"timeout": -1}}, "invalid_options"),
        ({"urls": ["http://example.com"], "options": {"bogus": 1}}, "invalid_options"),
        ({"urls": ["http://example.com"], "options": []}, "invalid_options"),
        ({"urls": ["http://example.com"], "name": 7}, "invalid_name"),
        ({"urls": ["http://example.com"], "extra": 1}, "invalid_body"),
        (["http://example.com"], "invalid_body"),
        ("just a string", "invalid_body"),
    ],
    ids=lambda v: json.dumps(v)[:60] if not isinstance(v, str) else v,
)
def test_wrong_shapes_and_values_answer_400_naming_the_problem(server, body, code):
    response = server.request("POST", "/api/v1/batches", json=body)
    assert response.status_code == 400, response.text
    assert error_of(response)["code"] == code


def test_option_errors_name_the_field(server):
    response = server.request(
        "POST", "/api/v1/batches", json={"urls": ["http://example.com"], "options": {"retries": 99, "method": "PUT"}}
    )
    fields = {d["field"] for d in error_of(response)["details"]}
    assert fields == {"options.retries", "options.method"}


def test_invalid_json_answers_400(server):
    response = server.request(
        "POST", "/api/v1/batches", data=b'{"urls": [', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


def test_deeply_nested_json_answers_400_not_500(server):
    body = "[" * 5000 + "]" * 5000
    response = server.request("POST", "/api/v1/batches", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "nested" in error_of(response)["message"]


def test_non_utf8_body_answers_400(server):
    response = server.request(
        "POST", "/api/v1/batches", data=b'{"urls": ["http://\xff\xfe/"]}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "UTF-8" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            '{"urls": [{"url": "http://example.com/", "expect": {"final_url": "http://example.com/\\ud800"}}]}',
            "urls[0].expect.final_url",
        ),
        ('{"urls": [{"url": "http://example.com/", "meta": {"note": "a\\udc00"}}]}', "urls[0].meta.note"),
        ('{"urls": [{"url": "http://example.com/", "meta": {"\\ud800": "a"}}]}', "urls[0].meta"),
        ('{"urls": ["http://example.com/"], "name": "x\\ud800"}', "name"),
        ('{"urls": ["http://example.com/"], "name": "x\\uDFFF"}', "name"),  # JSON's hex digits in either case
        (
            '{"urls": ["http://example.com/"], "options": {"expect": {"final_url": "http://e.com/\\udfff"}}}',
            "options.expect.final_url",
        ),
        (
            '{"urls": ["http://example.com/"], "options": {"checks": [{"source": "body", "op": "contains", '
            '"value": "\\ud800"}]}}',
            "options.checks[0].value",
        ),
        ('{"urls": ["http://example.com/"], "options": {"headers": {"X-A": "\\ud800"}}}', "options.headers.X-A"),
    ],
)
def test_a_lone_surrogate_in_any_text_a_batch_carries_is_a_400_naming_its_field(server, body, field):
    response = server.request("POST", "/api/v1/batches", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text[:300]
    [detail] = error_of(response)["details"]
    assert detail["field"] == field and "lone surrogate" in detail["message"]


def test_a_pair_of_surrogates_is_one_character_and_accepted(server, target):
    body = '{"urls": [{"url": "%s", "meta": {"mood": "\\ud83d\\ude00"}}]}' % target.url("/ok")
    response = server.request("POST", "/api/v1/batches", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text[:300]
    [result] = server.results(server.wait(response.json()["id"])["id"])
    assert result["meta"] == {"mood": "\U0001f600"}


def test_lone_surrogate_in_a_url_answers_400(server):
    body = '{"urls": ["http://example.com/\\ud800"]}'
    response = server.request("POST", "/api/v1/batches", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert error_of(response)["details"][0]["index"] == 0
    assert "lone surrogate" in error_of(response)["details"][0]["message"]


def test_unsupported_content_type_answers_415(server):
    response = server.request(
        "POST", "/api/v1/batches", data="urls=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"


def test_more_urls_than_the_limit_answers_413(make_server):
    limited = make_server(env={"GREENBATCH_MAX_URLS": "5"})
    response = limited.request("POST", "/api/v1/batches", json={"urls": ["http://example.com/"] * 6})
    assert response.status_code == 413
    assert "GREENBATCH_MAX_URLS" in error_of(response)["message"]


def test_past_the_url_limit_a_text_body_is_counted_to_its_end_for_the_413(make_server, target):
    limited = make_server(env={"GREENBATCH_MAX_URLS": "5"})
    lines = "\n".join(target.url(f"/ok/{i}") for i in range(8))
    response = limited.request("POST", "/api/v1/batches", data=lines, headers={"Content-Type": "text/plain"})
    assert response.status_code == 413
    assert error_of(response)["message"] == "8 URLs is more than the limit of 5 (GREENBATCH_MAX_URLS)"
    # A CSV's header row is not a URL: five URLs under a header are within the limit.
    table = "url\n" + "\n".join(target.url(f"/ok/{i}") for i in range(5))
    response = limited.request("POST", "/api/v1/batches", data=table, headers={"Content-Type": "text/csv"})
    assert response.status_code == 201, response.text
    assert response.json()["counts"]["total"] == 5


def test_the_defaults_take_a_million_urls_and_a_json_body_of_a_million_125_character_urls():
    defaults = Config()
    assert defaults.max_urls == 1_000_000
    url = "http://example.com/" + "p" * 106
    sample = json.dumps({"urls": [url] * 3}, separators=(",", ":"))
    size = len(sample) + (1_000_000 - 3) * len(json.dumps(url) + ",")  # the same body with a million URLs
    assert len(url) == 125 and size <= defaults.max_request_bytes


def test_a_million_urls_in_a_text_body_are_accepted_with_the_default_limits(make_server, closed_port):
    """Only the submission: cancelling would record a million cancelled results, so the server is killed instead."""
    million = make_server(env={"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{closed_port}"})
    body = "".join(f"http://127.0.0.1:{closed_port}/{i}\n" for i in range(1_000_000))
    response = million.request(
        "POST", "/api/v1/batches", data=body.encode(), headers={"Content-Type": "text/plain"}, timeout=120
    )
    million.kill()
    assert response.status_code == 201, response.text[:500]
    assert response.json()["counts"]["total"] == 1_000_000


def test_a_million_url_json_body_is_held_about_once_while_it_is_submitted_and_after(make_server, closed_port):
    """issue 15's benchmark batch: its URLs are never all a str each (~100 bytes a URL), SQLite never copies their
    list whole, and what the submission freed goes back to the system. The server is killed, as above."""
    million = make_server(env={"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{closed_port}"})
    urls = [f"http://127.0.0.1:{closed_port}/bytes/512?i={i}" for i in range(1_000_000)]
    body = json.dumps({"urls": urls, "name": "a million", "options": {"concurrency": 1}}).encode()
    del urls
    assert million.proc is not None
    pid = million.proc.pid
    before = rss(pid)
    peak, response = peak_rss_during(
        pid,
        lambda: million.request(
            "POST", "/api/v1/batches", data=body, headers={"Content-Type": "application/json"}, timeout=120
        ),
    )
    held = rss(pid)
    million.kill()
    assert response.status_code == 201, response.text[:500]
    assert response.json()["counts"]["total"] == 1_000_000
    mib, size = 2**20, len(body)
    # The body, its text, its URLs as a str each and SQLite's two copies of their list came to 4 times its size.
    assert peak - before < 3 * size, f"{(peak - before) / mib:.0f} MiB more at the peak, for {size / mib:.0f} MiB"
    assert held - before < 1.5 * size, f"{(held - before) / mib:.0f} MiB more after, for {size / mib:.0f} MiB"


@pytest.mark.parametrize(
    "spelling",
    ["compact", "escaped slashes", "spaces around commas", "urls twice", "indented"],
)
def test_a_json_body_gives_the_same_urls_however_its_json_is_spelled(server, target, spelling):
    urls = [target.url(f"/ok/{i}") for i in range(3)]
    body = {
        "compact": json.dumps({"urls": urls}, separators=(",", ":")),
        "escaped slashes": json.dumps({"urls": urls}).replace("/", "\\/"),  # as PHP's json_encode writes them
        "spaces around commas": '{"urls": [' + " , ".join(map(json.dumps, urls)) + "]}",
        "urls twice": '{"urls": ["http://example.com/"], "urls": ' + json.dumps(urls) + "}",  # the last counts
        "indented": json.dumps({"name": "x", "urls": urls, "options": {"concurrency": 2}}, indent=2),
    }[spelling]
    response = server.request("POST", "/api/v1/batches", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    batch = server.wait(response.json()["id"])
    assert [r["url"] for r in server.results(batch["id"])] == urls


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "text/csv"])
def test_a_body_over_the_default_size_limit_answers_413_naming_the_setting_before_it_is_read(server, content_type):
    limit = Config().max_request_bytes
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=15)
    try:  # only the headers: the size they announce is enough to refuse
        connection.putrequest("POST", "/api/v1/batches")
        connection.putheader("Content-Type", content_type)
        connection.putheader("Content-Length", str(limit + 1))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        error = json.loads(response.read())["error"]
    finally:
        connection.close()
    assert error["message"] == f"request body is larger than {limit} bytes (GREENBATCH_MAX_REQUEST_BYTES)"


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_a_chunked_body_that_grows_past_the_size_limit_answers_413_naming_the_setting(make_server, content_type):
    limited = make_server(env={"GREENBATCH_MAX_REQUEST_BYTES": "65536"})
    lines = (f"http://example.com/{i}\n".encode() for i in range(20_000))  # no length given: sent chunked
    response = limited.request("POST", "/api/v1/batches", data=lines, headers={"Content-Type": content_type})
    assert response.status_code == 413
    assert "GREENBATCH_MAX_REQUEST_BYTES" in error_of(response)["message"]


def test_a_text_body_is_read_in_blocks_that_never_split_a_character_or_a_line(server, target):
    """The body is read a MiB at a time: a URL across the cut keeps its two-byte character and its index."""
    line = target.url("/ok/") + "x" * 90
    lines = [line] * ((BODY_BLOCK - 1000) // (len(line) + 2))
    before = (len(line) + 2) * len(lines)  # bytes before the refused URL (CRLF line ends)
    refused = target.url("/") + "y" * (BODY_BLOCK - before - len(target.url("/")) - 1) + "\u00a0z"
    body = "\r\n".join([*lines, refused, target.url("/ok")]).encode()
    assert body[BODY_BLOCK - 1 : BODY_BLOCK + 1] == "\u00a0".encode(), "U+00A0 straddles the end of the first MiB"
    response = server.request("POST", "/api/v1/batches", data=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 400, response.text[:500]
    (detail,) = error_of(response)["details"]
    assert detail["index"] == len(lines) and "U+00A0" in detail["message"]


def test_a_byte_that_is_not_utf8_deep_in_a_text_body_is_named_by_its_offset(server, target):
    head = (target.url("/ok") + "\n").encode() * (3 * BODY_BLOCK // 30)
    response = server.request(
        "POST", "/api/v1/batches", data=head + b"http://\xff/\n", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 400
    assert error_of(response)["message"] == f"request body is not UTF-8 (byte {len(head) + 7})"


def test_a_quoted_csv_field_may_span_the_blocks_a_body_is_read_in(server, target):
    row = f"{target.url('/ok')},{'n' * 80}"
    rows = [row] * ((BODY_BLOCK - 1000) // (len(row) + 1))
    start = len("url,note\n") + (len(row) + 1) * len(rows)
    field = target.url("/ok/") + "q" * (BODY_BLOCK - start - len(target.url("/ok/")) - 10) + "\nrest"
    body = "\n".join(["url,note", *rows, f'"{field}",note', target.url("/ok")])
    assert body.index("\n", start) < BODY_BLOCK < body.index("\n", start + len(field)), "the field spans the cut"
    response = server.request("POST", "/api/v1/batches", data=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 400
    (detail,) = error_of(response)["details"]
    assert detail["index"] == len(rows) and "line break" in detail["message"]


def test_refusals_of_both_kinds_are_listed_first_100_in_index_order_and_all_counted(server, target, closed_port):
    urls = [target.url("/ok")] + [
        "ftp://example.com/" if i % 2 else f"http://127.0.0.1:{closed_port}/{i}" for i in range(150)
    ]
    response = server.request("POST", "/api/v1/batches", json={"urls": urls})
    assert response.status_code == 400
    error = error_of(response)
    assert error["message"].startswith("150 of 151 URLs cannot be fetched; the first is #1: 127.0.0.1 is loopback")
    assert [detail["index"] for detail in error["details"]] == list(range(1, 101))
    assert [detail["url"] for detail in error["details"][:2]] == [urls[1], "ftp://example.com/"]


def test_unknown_batch_answers_404_everywhere(server):
    for method, path in [
        ("GET", "/api/v1/batches/nope"),
        ("POST", "/api/v1/batches/nope/cancel"),
        ("POST", "/api/v1/batches/nope/rerun"),
        ("DELETE", "/api/v1/batches/nope"),
        ("GET", "/api/v1/batches/nope/results"),
        ("GET", "/api/v1/batches/nope/events"),
    ]:
        response = server.request(method, path)
        assert response.status_code == 404, (method, path)
        assert error_of(response)["code"] == "not_found"


def test_unknown_api_route_and_wrong_method_answer_json(server):
    assert error_of(server.request("GET", "/api/v1/nothing-here"))["code"] == "not_found"
    response = server.request("PUT", "/api/v1/batches")
    assert response.status_code == 405
    error_of(response)


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "x"}, {"cursor": "-1"}])
def test_bad_list_parameters_answer_400(server, params):
    response = server.request("GET", "/api/v1/batches", params=params)
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_parameter"


def test_batch_list_is_newest_first_and_pages_with_a_cursor(server, target):
    ids = [server.submit([target.url("/ok")])["id"] for _ in range(3)]
    first = server.request("GET", "/api/v1/batches", params={"limit": 2}).json()
    assert [b["id"] for b in first["batches"]] == ids[::-1][:2]
    second = server.request("GET", "/api/v1/batches", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert second["batches"][0]["id"] == ids[0]


# -- the index, names and links --------------------------------------------------------------


def test_the_api_root_answers_its_name_version_and_links_that_work(server):
    response = server.request("GET", "/api/v1")
    assert response.status_code == 200
    index = response.json()
    assert (index["name"], index["version"]) == ("greenbatch", "1")
    assert index["links"] == {
        "batches": "/api/v1/batches",
        "openapi": "/api/v1/openapi.json",
        "docs": "/api",
        "healthz": "/healthz",
    }
    for link in index["links"].values():
        assert server.request("GET", link).status_code == 200, link


def test_a_batch_links_to_its_page(server, target):
    batch = server.submit([target.url("/ok")])
    assert batch["links"]["page"] == f"/batches/{batch['id']}"
    page = server.request("GET", batch["links"]["page"])
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"] and batch["id"] in page.text
    listed = server.request("GET", "/api/v1/batches").json()["batches"]
    assert next(b for b in listed if b["id"] == batch["id"])["links"]["page"] == batch["links"]["page"]


@pytest.mark.parametrize(
    "paths, name",
    [
        (["/ok"], "127.0.0.1"),
        (["/ok", "/status/404", "/ok?again"], "127.0.0.1"),
        (["/ok", "localhost:/ok", "[::ffff:127.0.0.1]:/ok"], "127.0.0.1 and 2 other hosts"),
        (["localhost:/ok", "/ok"], "localhost and 1 other host"),
    ],
)
def test_an_unnamed_batch_is_named_for_its_first_host_and_counts_the_others(server, target, paths, name):
    # Every host here is the target's machine: "localhost:" and "[...]:" swap the target's host for that one.
    urls = []
    for path in paths:
        host, _, rest = path.rpartition(":")
        urls.append(f"http://{host}:{target.port}{rest}" if host else target.url(path))
    assert server.submit(urls)["name"] == name


def test_a_given_name_is_kept_and_a_blank_one_is_named_for_the_hosts(server, target):
    named = server.request("POST", "/api/v1/batches", json={"urls": [target.url("/ok")], "name": " sitemap "})
    blank = server.request("POST", "/api/v1/batches", json={"urls": [target.url("/ok")], "name": "   "})
    assert (named.json()["name"], blank.json()["name"]) == ("sitemap", "127.0.0.1")


def test_a_derived_name_shows_an_international_host_as_written_and_fits_200_characters():
    assert _derived_name(["http://xn--bcher-kva.example/", "http://b.example/"]) == "bücher.example and 1 other host"
    long_host = "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + ".example"
    name = _derived_name([f"http://{long_host}/", "http://b.example/", "http://c.example/"])
    assert len(name) == 200 and name.startswith(long_host[:100]) and name.endswith(" and 2 other hosts")


def test_a_derived_name_stops_counting_at_1000_hosts():
    urls = [f"http://host{i}.example/" for i in range(5000)]
    assert _derived_name(urls) == "host0.example and 999+ other hosts"


def test_a_derived_name_tells_apart_hosts_that_share_a_prefix():
    urls = ["http://a.example/", "http://a.example.org/", "http://a.example:8080/", "http://a.example"]
    assert _derived_name(urls) == "a.example and 1 other host"


# -- results: filters, sorts and pages ------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed(server, target, closed_port) -> dict:
    """A finished batch of ten URLs: six ok (four of them slow or large), two 404s, a 500 and one blocked."""
    urls = [
        target.url("/delay/300?bytes=300"),  # 0
        target.url("/status/404"),  # 1
        target.url("/delay/150?bytes=5000"),  # 2
        target.url("/status/500"),  # 3
        target.url("/delay/220"),  # 4
        target.url(f"/redirect-to?url=http://127.0.0.1:{closed_port}/x"),  # 5: blocked, no status, no latency
        target.url("/redirect/1"),  # 6
        target.url("/status/404?team=api"),  # 7
        target.url("/delay/380?bytes=10"),  # 8
        target.url("/bytes/20000"),  # 9
    ]
    batch = server.submit(urls, concurrency=10)
    return server.wait(batch["id"])


def page_of(server, batch: dict, **params) -> dict:
    """One page of a batch's results (asserting 200)."""
    response = server.request("GET", batch["links"]["results"], params=params)
    assert response.status_code == 200, response.text
    return response.json()


def indexes(page: dict) -> list[int]:
    """The URL indexes of a page's results, in order."""
    return [r["index"] for r in page["results"]]


def by_latency(server, batch: dict, order: str = "asc") -> list[int]:
    """A batch's URL indexes by the latency each result recorded (ties by index, the same way), those without one
    (blocked: nothing reached the network) last: what sort=latency answers, whatever load did to the delays."""
    results = page_of(server, batch)["results"]
    timed = [r for r in results if (r["error"] or {}).get("kind") != "blocked"]
    sign = -1 if order == "desc" else 1
    timed.sort(key=lambda r: (sign * r["timings"]["total"], sign * r["index"]))
    return [r["index"] for r in timed] + [r["index"] for r in results if r not in timed]


def test_results_sort_by_status_latency_or_size_either_way_with_those_without_a_value_last(server, mixed):
    assert indexes(page_of(server, mixed, sort="status")) == [0, 2, 4, 6, 8, 9, 1, 7, 3, 5]
    assert indexes(page_of(server, mixed, sort="status", order="desc")) == [3, 7, 1, 9, 8, 6, 4, 2, 0, 5]
    slowest = indexes(page_of(server, mixed, sort="latency", order="desc"))
    assert slowest == by_latency(server, mixed, "desc") and slowest[-1] == 5, "the blocked URL has no latency"
    # Which URLs are slowest is load's to decide; each delayed URL's stored latency covers its delay at least.
    latency = {r["index"]: r["timings"]["total"] for r in page_of(server, mixed)["results"]}
    assert all(latency[index] >= delay for index, delay in {0: 300, 2: 150, 4: 220, 8: 380}.items()), latency
    fastest = indexes(page_of(server, mixed, sort="latency"))
    assert fastest == by_latency(server, mixed) and fastest[-1] == 5
    largest = page_of(server, mixed, sort="size", order="desc", limit=3)
    assert indexes(largest) == [9, 2, 0] and (largest["sort"], largest["order"]) == ("size", "desc")
    assert indexes(page_of(server, mixed, sort="size"))[-1] == 5, "no response, no size: last both ways"
    assert indexes(page_of(server, mixed, order="desc")) == list(range(9, -1, -1))


def test_results_filter_by_outcome_status_error_and_search_and_say_how_many_match(server, mixed):
    def found(**params) -> tuple[list[int], int]:
        page = page_of(server, mixed, **params)
        assert page["total_exact"] is True
        return indexes(page), page["total"]

    assert found() == (list(range(10)), 10)
    assert found(outcome="ok") == ([0, 2, 4, 6, 8, 9], 6)
    assert found(outcome="failed") == ([1, 3, 5, 7], 4)
    assert found(outcome="cancelled") == ([], 0)
    assert found(outcome="not_ok") == ([1, 3, 5, 7], 4)
    assert found(status=404) == ([1, 7], 2)
    assert found(error="blocked") == ([5], 1)
    assert found(error="status", sort="status", order="desc") == ([3, 7, 1], 3)
    assert found(q="team=api") == ([7], 1)
    assert found(q="REDIRECT/1") == ([6], 1), "a search ignores case"
    assert found(outcome="failed", status=500) == ([3], 1)


def test_results_page_by_offset_or_by_after_and_start_at_a_url_index(server, mixed):
    first = page_of(server, mixed, limit=3)
    assert (indexes(first), first["offset"], first["next_offset"], first["next_after"]) == ([0, 1, 2], 0, 3, 2)
    last = page_of(server, mixed, limit=3, offset=9)
    assert (indexes(last), last["total"], last["next_offset"], last["next_after"]) == ([9], 10, None, None)
    assert indexes(page_of(server, mixed, limit=3, offset=10)) == []
    slow = page_of(server, mixed, sort="latency", order="desc", limit=2, offset=2)
    assert (indexes(slow), slow["next_offset"]) == (by_latency(server, mixed, "desc")[2:4], 4)
    after = page_of(server, mixed, limit=3, after=3)
    assert (indexes(after), after["offset"], after["next_after"]) == ([4, 5, 6], None, 6)
    located = page_of(server, mixed, outcome="failed", from_index=4)
    assert (indexes(located), located["offset"], located["total"]) == ([5, 7], 2, 4)
    assert page_of(server, mixed)["last_seq"] == server.batch(mixed["id"])["last_seq"]
    before_any = page_of(server, mixed, until_seq=0)
    assert (indexes(before_any), before_any["total"], before_any["last_seq"]) == ([], 0, 0), "none stored by event 0"
    pinned = page_of(server, mixed, limit=3, offset=3, until_seq=first["last_seq"])
    assert (indexes(pinned), pinned["total"], pinned["last_seq"]) == ([3, 4, 5], 10, first["last_seq"])


@pytest.mark.parametrize(
    "params, field",
    [
        ({"sort": "url"}, "sort"),
        ({"order": "up"}, "order"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "x"}, "offset"),
        ({"offset": "11"}, "offset"),
        ({"limit": "1001"}, "limit"),
        ({"status": "99"}, "status"),
        ({"status": "4xx"}, "status"),
        ({"error": "gone"}, "error"),
        ({"outcome": "lost"}, "outcome"),
        ({"q": "x" * 201}, "q"),
        ({"after": "2", "offset": "3"}, "after"),
        ({"after": "2", "sort": "latency"}, "after"),
        ({"after": "2", "order": "desc"}, "after"),
        ({"from_index": "3", "sort": "size"}, "from_index"),
        ({"format": "csv", "sort": "latency"}, "sort"),
        ({"until_seq": "-1"}, "until_seq"),
        ({"format": "csv", "until_seq": "3"}, "until_seq"),
    ],
    ids=lambda v: "&".join(f"{k}={str(x)[:8]}" for k, x in v.items()) if isinstance(v, dict) else v,
)
def test_bad_results_parameters_answer_400_naming_the_parameter(server, mixed, params, field):
    response = server.request("GET", mixed["links"]["results"], params=params)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] == "invalid_parameter"
    assert field in [d["field"] for d in error["details"]], error


def test_failed_leaves_the_cancelled_out_and_not_ok_rerun_failed_and_downloads_take_both(server, target):
    urls = [target.url("/status/500"), target.url("/ok")] + [target.url(f"/delay/5000?n={i}") for i in range(3)]
    batch = server.submit(urls, concurrency=2)  # #2 and #3 in flight when it is cancelled, #4 never runs
    deadline = time.monotonic() + 20
    while len(server.results(batch["id"])) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.request("POST", f"/api/v1/batches/{batch['id']}/cancel")
    batch = server.wait(batch["id"])
    assert (batch["counts"]["failed"], batch["counts"]["cancelled"]) == (1, 3)
    assert indexes(page_of(server, batch, outcome="failed")) == [0]
    assert indexes(page_of(server, batch, outcome="cancelled")) == [2, 3, 4]
    assert indexes(page_of(server, batch, outcome="not_ok")) == [0, 2, 3, 4]
    assert indexes(page_of(server, batch, outcome="stopped")) == [2, 3], "cancelled in flight"
    download = server.request("GET", batch["links"]["json"], params={"outcome": "not_ok"})
    assert [r["index"] for r in download.json()] == [0, 2, 3, 4]
    rerun = server.request("POST", f"/api/v1/batches/{batch['id']}/rerun", json={"only": "failed"})
    assert rerun.status_code == 201 and rerun.json()["counts"]["total"] == 4, "rerun failed: failed or cancelled"


def test_events_of_some_types_leave_the_others_out(server, mixed):
    changes = server.request("GET", mixed["links"]["events"], params={"type": "batch,progress"}).json()["events"]
    assert changes and {e["type"] for e in changes} <= {"batch", "progress"}
    assert [e["seq"] for e in changes] == sorted(e["seq"] for e in changes)
    assert changes[-1]["data"]["status"] == "done"
    every = server.request("GET", mixed["links"]["events"]).json()["events"]
    assert [e for e in every if e["type"] != "result"] == changes
    wrong = server.request("GET", mixed["links"]["events"], params={"type": "results"})
    assert wrong.status_code == 400 and error_of(wrong)["details"][0]["field"] == "type"
