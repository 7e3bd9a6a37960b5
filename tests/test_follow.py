"""The follow policy on its own (app/fetch/follow.py), against a scripted transport: redirects hop by hop,
credentials that stay with their origin, retries with a backoff, the limits that end a URL, what a final
status means, and what a deadline leaves behind.

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
from app.fetch.errors import REUSED, DeadlineExceeded, FetchError, RetryLater, deadline_message
from app.fetch.follow import follow, loop_text
from app.fetch.guard import InvalidUrl

CREDENTIALS = {"Authorization": "Bearer secret", "X-Api-Key": "k", "Cookie": "a=b", "Accept": "text/html"}


class ScriptedTransport:
    """Answers each fetch with the next item of its script (a Hop, or an exception to raise); records requests."""

    def __init__(self, *script: Hop | BaseException):
        self.script = list(script)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.methods: list[str] = []

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
        self.methods.append(method)
        answer = self.script.pop(0)
        if isinstance(answer, BaseException):
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
    assert result.error == {"kind": "status", "message": "404 is not an accepted status (200-299)"}
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


def test_an_accepted_status_has_no_error_and_any_other_names_the_accepted_statuses():
    accepted, _ = run(ScriptedTransport(answer(404)), accept_status="200-299,404")
    assert accepted.ok and accepted.error is None
    refused, _ = run(ScriptedTransport(answer(500)))
    assert not refused.ok
    assert refused.error == {"kind": "status", "message": "500 is not an accepted status (200-399)"}


def test_a_long_accept_status_is_cut_after_a_whole_range_in_the_message():
    many = ",".join(str(code) for code in range(200, 230))
    result, _ = run(ScriptedTransport(answer(404)), accept_status=many)
    assert result.error is not None
    assert result.error["message"] == "404 is not an accepted status (200-229)"  # merged into one range
    spread = ",".join(str(code) for code in range(200, 260, 2))
    result, _ = run(ScriptedTransport(answer(404)), accept_status=spread)
    assert result.error is not None
    assert result.error["message"] == "404 is not an accepted status (200,202,204,206,208,210,212,214,216,218,...)"


def test_a_url_that_redirects_to_itself_says_so():
    transport = ScriptedTransport(*[redirect("/loop")] * 3)
    with pytest.raises(FetchError) as refused:
        run(transport, url="https://a.example/loop", max_redirects=2)
    assert refused.value.kind == "too_many_redirects"
    assert str(refused.value) == "redirect loop: /loop redirects to itself"


def test_a_loop_of_several_steps_is_told_from_the_step_reached_first():
    transport = ScriptedTransport(redirect("/a"), redirect("/b?x=1"), redirect("/a"), redirect("/b?x=1"))
    with pytest.raises(FetchError) as refused:
        run(transport, max_redirects=3)
    assert refused.value.kind == "too_many_redirects"
    assert str(refused.value) == "redirect loop: /a -> /b?x=1 -> /a"
    eight = [f"https://a.example/{n}" for n in range(1, 9)]
    assert loop_text(eight, "https://a.example/") == "/1 -> /2 -> /3 -> /4 -> ... -> /8 -> /1"


def test_a_loop_across_origins_names_whole_urls_cut_short():
    long_path = "/" + "p" * 200
    transport = ScriptedTransport(
        redirect("https://a.example" + long_path),
        redirect("http://a.example" + long_path),
        redirect("https://a.example" + long_path),
    )
    with pytest.raises(FetchError) as refused:
        run(transport, url="http://a.example" + long_path, max_redirects=2)
    assert str(refused.value) == (
        "redirect loop: http://a.example/" + "p" * 60 + "... -> https://a.example/" + "p" * 59 + "... -> "
        "http://a.example/" + "p" * 60 + "..."
    )


def test_a_deadline_mid_hop_leaves_the_phases_that_hop_completed_in_the_timings():
    deadline = DeadlineExceeded()
    deadline.phases = {"dns": 1.0, "connect": 0.5, "tls": None}
    transport = ScriptedTransport(redirect("/next"), deadline)
    result = Result(index=0, url="https://a.example/start")
    options = BatchOptions.parse({}, Config())
    with pytest.raises(DeadlineExceeded):
        follow(transport, result, options, time.perf_counter(), 2048)
    assert set(result.timings) == {"dns", "connect", "tls", "redirect"}
    assert result.timings["dns"] == 1.0 and result.timings["connect"] == 0.5
    assert result.timings["redirect"] >= 0, "the time of the hops before it"


def test_the_deadline_message_names_what_was_missing_for_how_long_and_what_was_done():
    fresh = {"dns": 1.0, "connect": 0.4, "tls": None}
    assert deadline_message(30, fresh, 29_901.4, 0) == (
        "the 30 s deadline passed with no first byte after 29.9 s (dns 1 ms, connect 0.4 ms done)"
    )
    assert deadline_message(2, {**fresh, "wait": 25.0}, 2000, 1) == (
        "the 2 s deadline passed with the body still coming after 2.0 s "
        "(dns 1 ms, connect 0.4 ms, wait 25 ms done; 1 redirect before)"
    )
    assert deadline_message(1, {"dns": 12.0}, 1000, 0) == (
        "the 1 s deadline passed with no connection after 1.0 s (dns 12 ms done)"
    )
    assert deadline_message(1, {"dns": 2.0, "connect": 1.0}, 1000, 0).startswith(
        "the 1 s deadline passed with no TLS handshake after 1.0 s"
    )
    assert deadline_message(1, {}, 1000, 0) == "the 1 s deadline passed with no address for the host after 1.0 s"
    assert deadline_message(0.5, REUSED, 480, 2) == (
        "the 0.5 s deadline passed with no first byte after 0.5 s (reused connection; 2 redirects before)"
    )
    assert deadline_message(3, None, 3000, 0) == "no complete response within the 3 s deadline", "no hop in progress"


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


def test_with_head_get_the_heads_try_counts_in_attempts_before_the_gets_own_retries():
    refused = FetchError("refused", "connection refused by a.example", retryable=True)
    transport = ScriptedTransport(answer(405), refused, answer())
    result, pauses = run(transport, method="HEAD,GET", retries=1, retry_statuses=[])
    assert transport.methods == ["HEAD", "GET", "GET"]
    assert result.ok and result.method == "GET" and pauses == [0.2], "the GET has its own retry"
    assert result.attempts == 3, "the HEAD, then the GET twice"


def test_a_get_after_head_sent_back_to_its_hosts_queue_goes_on_counting_after_the_heads_try():
    refused = FetchError("refused", "connection refused by a.example", retryable=True)
    options = BatchOptions.parse({"method": "HEAD,GET", "retries": 1}, Config())
    result = Result(index=0, url="https://a.example/")
    with pytest.raises(RetryLater) as backing_off:
        follow(ScriptedTransport(answer(405), refused), result, options, time.perf_counter(), 2048, gate=HostQueue())
    resume = backing_off.value.resume
    assert (resume.method, resume.head_tries) == ("GET", 1)
    follow(ScriptedTransport(answer()), result, options, time.perf_counter(), 2048, gate=HostQueue(), resume=resume)
    assert result.ok and result.attempts == 3


class HostNotReady:
    """A paced batch's gate whose host is never ready: the URL goes back to its host's queue before each request."""

    def before_request(self, url: str) -> None:
        raise RetryLater()


def test_a_try_the_hosts_gate_sends_back_to_its_queue_is_not_counted_as_an_attempt():
    refused = FetchError("refused", "connection refused by a.example", retryable=True)
    options = BatchOptions.parse({"retries": 2}, Config())
    result = Result(index=0, url="https://a.example/")
    with pytest.raises(RetryLater):
        follow(ScriptedTransport(), result, options, time.perf_counter(), 2048, gate=HostNotReady())
    assert (result.attempts, result.retried) == (0, 0), "nothing was sent"
    with pytest.raises(RetryLater):  # sent once, refused, then its backoff in the host's queue
        follow(ScriptedTransport(refused), result, options, time.perf_counter(), 2048, gate=HostQueue())
    with pytest.raises(RetryLater):
        follow(ScriptedTransport(), result, options, time.perf_counter(), 2048, gate=HostNotReady())
    assert (result.attempts, result.retried) == (1, 1), "the retry waits unsent: one attempt so far"


class HostQueue:
    """A paced batch's gate that always lets the request go, and sends a URL to back off in its host's queue."""

    def before_request(self, url: str) -> None:
        """Any request may start."""

    def no_answer(self, url: str) -> None:
        """A failed connection is not counted here."""

    def retry_later(self, url: str, after: float = 0.0) -> None:
        raise RetryLater()


def test_a_retry_that_could_not_start_before_the_deadline_is_not_made_and_the_url_ends_with_its_error():
    refused = FetchError("refused", "connection refused by a.example", retryable=True)
    options = BatchOptions.parse({"retries": 3, "timeout": 1}, Config())

    def follow_from(spent: float, **how) -> Result:
        """Follow a URL refused once, `spent` seconds of its fetch time used already."""
        result = Result(index=0, url="https://a.example/")
        follow(ScriptedTransport(refused, answer()), result, options, time.perf_counter() - spent, 2048, **how)
        return result

    # Paced: the backoff waits in the host's queue, not under the deadline, while any fetch time is left.
    with pytest.raises(RetryLater):
        follow_from(0.9, gate=HostQueue())
    with pytest.raises(FetchError, match="refused"):
        follow_from(1.0, gate=HostQueue())
    # Unpaced: the backoff is fetch time; one that would end past the deadline is not waited for.
    assert follow_from(0.7, sleep=lambda seconds: None).ok
    with pytest.raises(FetchError, match="refused"):
        follow_from(0.8, sleep=lambda seconds: None)


def test_a_retry_after_of_digits_other_than_ascii_is_unreadable_not_a_crash():
    from app.fetch.follow import retry_after

    options = BatchOptions(concurrency=1, timeout=5, connect_timeout=5, retries=2)
    assert retry_after(Hop(status=429, headers={"Retry-After": "\u00b2"}, bytes=0, timings={}), options) is None
    assert retry_after(Hop(status=429, headers={"Retry-After": "2"}, bytes=0, timings={}), options) == 2.0
