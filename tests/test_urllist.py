"""A batch's URLs held compactly, and read from JSON a window at a time (app/core/urllist.py)."""

from __future__ import annotations

import json
import tracemalloc
from functools import partial

import pytest

from app.core import urllist
from app.core.urllist import UrlList, read_json_array, read_json_object

# Brackets, commas and a line feed's escape-free cousins inside URLs: none of them may cut a window wrongly.
URLS = [f"http://a.test/page?i={i}" for i in range(3_000)] + [
    "http://[::1]:8080/",
    "http://b.test/a,b",
    "http://b.test/end]",
    "http://b.test/ünï",
    "",
]


@pytest.fixture
def small_windows(monkeypatch):
    """Windows of 100 characters: the list above is read in hundreds of them."""
    monkeypatch.setattr(urllist, "JSON_WINDOW", 100)


@pytest.mark.parametrize(
    "dumps",
    [
        partial(json.dumps, ensure_ascii=False),
        partial(json.dumps, ensure_ascii=False, separators=(",", ":")),
        partial(json.dumps, ensure_ascii=False, indent=2),
    ],
    ids=["spaced", "compact", "indented"],
)
def test_a_json_array_of_strings_is_read_a_window_at_a_time_as_json_loads_reads_it(small_windows, dumps):
    text = f'{{"urls": {dumps(URLS)} , "name": "x"}}'
    start = text.index("[")
    read = read_json_array(text, start)
    assert read is not None
    builder, end = read
    assert text[end:] == ' , "name": "x"}'
    assert builder.build() == URLS == json.loads(text)["urls"]


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(["http://a.test/ü"] * 20),  # \u00fc: a backslash escape
        '["http:\\/\\/a.test\\/"]',  # slashes escaped, as PHP writes them
        '["http://a.test/", 42]',
        '["http://a.test/", ["http://b.test/"]]',
        "[]",
        '["http://a.test/"',
        '["http://a.test/",]',
    ],
    ids=["unicode-escape", "escaped-slashes", "number", "nested", "empty", "unclosed", "trailing-comma"],
)
def test_an_array_with_escapes_or_values_that_are_not_strings_is_left_to_json_loads(small_windows, text):
    assert read_json_array(text, 0) is None


@pytest.mark.parametrize(
    "text",
    [
        "[" + " , ".join(['"http://a.test/"'] * 20) + "]",  # whitespace before each comma
        json.dumps([",http://a.test/"] * 20),  # strings that start with a comma
        json.dumps(["]http://a.test/"] * 20),  # ... or a bracket
        json.dumps(["http://a.test/", "http://b.test/"]),
    ],
    ids=["space-before-comma", "comma-first", "bracket-first", "within-a-window"],
)
def test_an_array_cut_where_it_cannot_be_is_left_to_json_loads_and_never_read_otherwise(small_windows, text):
    read = read_json_array(text, 0)
    assert read is None or (read[0].build() == json.loads(text) and read[1] == len(text))
    assert UrlList.from_json(text) == json.loads(text)  # how the store reads a list back, either way


def test_reading_a_json_array_holds_its_urls_about_once_never_as_a_str_each():
    urls = [f"http://a.test/page?i={i}" for i in range(200_000)]
    text = json.dumps(urls)
    tracemalloc.start()
    try:
        builder, _ = read_json_array(text, 0)  # type: ignore[misc]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # json.loads holds a str per URL, ~60 bytes more than its text: 2.7 times the text here.
    assert peak < 1.5 * len(text), f"{peak / len(text):.2f} times the JSON text"
    assert builder.build() == urls


def test_a_json_object_is_read_as_json_loads_reads_it_with_its_urls_in_windows(small_windows):
    text = json.dumps({"name": "n", "options": {"urls": [1], "concurrency": 2}, "urls": URLS[:50], "name ": None})
    body = read_json_object(text, "urls")
    assert body is not None and list(body) == ["name", "options", "urls", "name "]
    body["urls"] = body["urls"].build()
    assert body == json.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"urls": ["http://a.test/"], "urls": ["http://b.test/"]}',  # the last counts: json.loads says so
        '{"urls": ["http://a.test/"]} []',
        '{"urls": ["http://a.test/"],}',
        '{"name": "no urls"}',
        '["http://a.test/"]',
        '\ufeff{"urls": ["http://a.test/"]}',
    ],
    ids=["urls-twice", "extra-data", "trailing-comma", "no-urls", "not-an-object", "byte-order-mark"],
)
def test_a_json_body_read_json_object_does_not_read_is_left_to_json_loads(text):
    assert read_json_object(text, "urls") is None


def test_slices_of_a_url_list_come_whole_even_when_a_url_holds_a_line_break():
    urls = ["http://a.test/1", "http://a.test/2\n3", "http://a.test/4", "http://a.test/ü"]
    compact = UrlList.of(urls)
    assert [compact[a:b] for a in range(5) for b in range(5)] == [urls[a:b] for a in range(5) for b in range(5)]
    assert UrlList.of(urls[::2])[0:2] == urls[::2]
