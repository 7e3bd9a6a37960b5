"""Downloads of a batch's results: CSV with JSON's true and false, NDJSON, and one JSON array, each streamed
a store page at a time and named by the batch's links."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.support.server import error_of


@pytest.fixture(scope="module")
def finished(server, target) -> dict:
    """A finished batch: one ok URL, one that failed by its status, one ok again."""
    batch = server.submit([target.url("/ok"), target.url("/status/404"), target.url("/status/204")])
    server.wait(batch["id"])
    return server.batch(batch["id"])


def download(server, batch: dict, link: str, **params):
    """The download a batch's link leads to (its path already carries format=)."""
    response = server.request("GET", batch["links"][link], params=params)
    assert response.status_code == 200, response.text[:300]
    return response


def test_the_csv_says_ok_as_json_does_true_or_false(server, finished):
    rows = list(csv.DictReader(io.StringIO(download(server, finished, "csv").text)))
    assert [(r["index"], r["status_code"], r["ok"]) for r in rows] == [
        ("0", "200", "true"),
        ("1", "404", "false"),
        ("2", "204", "true"),
    ]


def test_the_json_download_is_one_array_of_the_results_the_pages_hold(server, finished):
    response = download(server, finished, "json")
    assert response.headers["Content-Type"] == "application/json"
    assert f'filename="greenbatch-{finished["id"]}.json"' in response.headers["Content-Disposition"]
    assert response.json() == server.results(finished["id"])
    assert [r["index"] for r in response.json()] == [0, 1, 2]  # URLs are numbered from 0, as in the list sent


def test_the_json_download_takes_the_outcome_filter(server, finished):
    assert [r["index"] for r in download(server, finished, "json", outcome="failed").json()] == [1]
    assert [r["index"] for r in download(server, finished, "json", outcome="ok").json()] == [0, 2]


def test_a_json_download_with_nothing_to_show_is_an_empty_array(server, target):
    batch = server.submit([target.url("/ok")])
    server.wait(batch["id"])
    assert download(server, batch, "json", outcome="failed").json() == []


def test_ndjson_stays_one_result_a_line(server, finished):
    lines = download(server, finished, "ndjson").text.splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]


def test_a_json_download_of_many_store_pages_is_streamed_and_whole(server, target):
    # 2,500 results are three of the store's pages of 1,000: written as they are read, in chunks.
    batch = server.submit([target.url(f"/ok?i={i}") for i in range(2500)], concurrency=50)
    server.wait(batch["id"], timeout=60)
    response = server.request("GET", batch["links"]["json"], stream=True)
    assert response.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in response.headers
    body = b"".join(response.iter_content(None))
    assert [r["index"] for r in json.loads(body)] == list(range(2500))
    lines = body.decode().splitlines()
    assert len(lines) == 2502 and lines[0] == "[" and lines[-1] == "]"  # a result a line between the brackets


def test_an_unknown_format_is_refused_naming_the_formats(server, finished):
    response = server.request("GET", f"/api/v1/batches/{finished['id']}/results", params={"format": "xml"})
    assert response.status_code == 400
    assert error_of(response)["details"] == [{"field": "format", "message": "must be one of csv, ndjson, json"}]


def test_without_a_format_the_results_come_a_page_at_a_time(server, finished):
    page = server.request("GET", finished["links"]["results"], params={"limit": 2}).json()
    assert [r["index"] for r in page["results"]] == [0, 1] and page["next_after"] == 1
