"""The follow policy on its own (app/fetch/follow.py), against a scripted transport: redirects hop by hop,
credentials that stay with their origin, retries with a backoff, and the limits that end a URL.

The transports themselves are tested against real servers (test_transport_conformance.py); here the
transport is a script of answers, because the policy is what these tests are about.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest

from app.core.config import Config
from app.core.options import BatchOptions
from app.core.results import Result
from app.fetch.base import Hop
from app.fetch.errors import FetchError
from app.fetch.follow import follow
from app.fetch.guard import InvalidUrl

CREDENTIALS = {"Authorization": "Bearer secret", "X-Api-Key": "k", "Cookie": "a=b", "Accept": "text/html"}


class ScriptedTransport:
    """Answers each fetch with the next item of its script (a Hop, or a FetchError to raise); records requests."""

    def __init__(self, *script: Hop | FetchError):
        self.script = list(script)
        self.requests: list[tuple[str, dict[str, str]]] = []

    def fetch(
        self,
        url: str,
        *,
        method: str,
        headers: Mapping[str, str],
        connect_timeout: float,
        read_timeout: float,
        max_bytes: int,
    ) -> Hop:
        self.requests.append((url, dict(headers)))
        answer = self.script.pop(0)
        if isinstance(answer, FetchError):
            raise answer
        return answer

    def close(self) -> None:
        """Nothing to close."""


def redirect(to: str, status: int = 302) -> Hop:
    return Hop(status=status, headers={"Location": to}, bytes=0, timings={"dns": None, "wait": 1.0})


def answer(status: int = 200, size: int = 5) -> Hop:
    return Hop(
        status=status,
        headers={"Content-Type": "text/plain"},
        bytes=size,
        timings={"dns": 1.0, "connect": 2.0, "tls": None, "wait": 3.0, "download": 0.5},
    )


def run(transport: ScriptedTransport, url: str = "https://a.example/start", **options) -> tuple[Result, list[float]]:
    """Follow `url` with these batch options; the result and the pauses the policy asked for."""
    parsed = BatchOptions.parse({"headers": CREDENTIALS, **options}, Config())
    result = Result(index=0, url=url)
    pauses: list[float] = []
    follow(transport, result, parsed, time.perf_counter(), 2048, sleep=pauses.append)
    return result, pauses


def test_each_redirect_is_recorded_and_the_final_answer_decides_the_result():
    transport = ScriptedTransport(redirect("/next", 301), redirect("https://a.example/last", 307), answer(404))
    result, _ = run(transport, accept_status="200-299")
    assert result.redirects == [
        {"url": "https://a.example/start", "status": 301},
        {"url": "https://a.example/next", "status": 307},
    ]
    assert (result.final_url, result.status_code, result.ok, result.bytes) == ("https://a.example/last", 404, False, 5)
    assert [url for url, _ in transport.requests] == [
        "https://a.example/start",
        "https://a.example/next",
        "https://a.example/last",
    ]
    assert result.timings["ttfb"] >= 6.0, "ttfb adds the earlier hops' time to the final hop's dns, connect and wait"


def test_credentials_follow_a_redirect_within_the_origin_but_never_to_another_one():
    transport = ScriptedTransport(
        redirect("/same"), redirect("https://b.example/other"), redirect("https://a.example/back"), answer()
    )
    run(transport)
    sent = [headers for _, headers in transport.requests]
    assert sent[0] == sent[1] == CREDENTIALS, "the same origin keeps every header"
    assert sent[2] == sent[3] == {"Accept": "text/html"}, (
        "once another origin was reached, credentials are gone for good"
    )


def test_a_port_or_scheme_change_is_another_origin():
    transport = ScriptedTransport(redirect("http://a.example/plain"), answer())
    run(transport)
    assert "Authorization" not in transport.requests[1][1]


def test_more_redirects_than_allowed_end_too_many_redirects_naming_the_next_target():
    transport = ScriptedTransport(redirect("/1"), redirect("/2"), redirect("/3"))
    with pytest.raises(FetchError) as refused:
        run(transport, max_redirects=2)
    assert refused.value.kind == "too_many_redirects" and "/3" in str(refused.value)
    assert len(transport.requests) == 3


def test_a_redirect_target_the_url_check_refuses_ends_the_url_before_any_request_to_it():
    transport = ScriptedTransport(redirect("https://user@evil.example/"))
    with pytest.raises(InvalidUrl, match="user name or password"):
        run(transport)
    assert len(transport.requests) == 1


def test_connection_errors_are_retried_with_a_doubling_backoff_and_each_try_counted():
    refused = FetchError("refused", "connection refused by a.example", retryable=True)
    transport = ScriptedTransport(refused, refused, answer())
    result, pauses = run(transport, retries=3)
    assert result.ok and result.attempts == 3
    assert pauses == [0.2, 0.4]


def test_retries_stop_at_the_limit_and_errors_that_are_not_retryable_are_not_retried():
    refused = FetchError("refused", "connection refused by a.example", retryable=True)
    with pytest.raises(FetchError, match="refused"):
        run(ScriptedTransport(refused, refused, refused), retries=1)
    too_large = FetchError("too_large", "body passed the cap")
    transport = ScriptedTransport(too_large, answer())
    with pytest.raises(FetchError, match="cap"):
        run(transport, retries=3)
    assert len(transport.requests) == 1
