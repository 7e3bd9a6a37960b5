"""Polite batches (issue 18): per-host pacing, Retry-After pauses, HEAD then GET, the User-Agent; checked in the
target's own log of each request's start and end."""

from __future__ import annotations

import datetime as dt
import random
import re
import secrets
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from app.core.clock import iso_at
from app.core.config import Config
from app.core.options import BatchOptions
from app.core.results import Result
from app.core.stats import row_of
from app.fetch.base import USER_AGENT, VERSION
from app.fetch.errors import FetchError, RetryLater
from app.fetch.follow import attempt
from app.runs import hosts as hosts_module
from app.runs.events import Event
from app.runs.hosts import (
    LEARN_FORGET,
    LEARN_MARGIN,
    LEARN_MAX,
    LEARN_WINDOW,
    Counters,
    Host,
    Hosts,
    UrlPass,
    host_table,
)
from app.runs.reader import BatchReader
from tests.support.server import error_of, kind_of
from tests.test_follow import ScriptedTransport, answer


@pytest.fixture(scope="module")
def server(tmp_path_factory, target_env, target):
    """One server for the module, with a short GREENBATCH_MAX_RETRY_AFTER ceiling to test against."""
    from tests.support.server import GreenbatchServer

    env = {
        # localhost is a second host on the same target
        "GREENBATCH_ALLOW_TARGETS": f"{target_env['GREENBATCH_ALLOW_TARGETS']},localhost:{target.port}",
        "GREENBATCH_MAX_RETRY_AFTER": "120",
    }
    instance = GreenbatchServer(tmp_path_factory.mktemp("polite"), env).start()
    instance.run_batch([target.url("/ok")])  # a first fetch warms the process (threads, imports) for the timings
    yield instance
    instance.stop()


def paced_urls(target, count: int, query: str = "") -> tuple[str, list[str]]:
    """`count` URLs of one fresh /paced key on the target (its log is the key's alone), and the key."""
    key = secrets.token_hex(4)
    return key, [target.url(f"/paced/{key}/{i}{'?' + query if query else ''}") for i in range(count)]


def wait_for(check, what: str, timeout: float = 10):
    """Poll `check` until it answers something true; that answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            return answer
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def epoch(text: str) -> float:
    """An API time (2026-12-06T12:00:00.000Z) as epoch seconds."""
    return dt.datetime.fromisoformat(text).timestamp()


def ended_iso_in(seconds: float) -> str:
    """The ISO time `seconds` from now, as the API writes times (UTC, Z)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + seconds))


def most_at_once(log: list[dict]) -> int:
    """The most requests the target was answering at one moment."""
    edges = sorted([(entry["start"], 1) for entry in log] + [(entry["end"], -1) for entry in log])
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_per_host_interval_and_per_host_space_the_starts_and_cap_the_requests_in_flight(server, target):
    key, urls = paced_urls(target, 12, "delay=300")
    results = server.run_batch(urls, concurrency=10, per_host=2, per_host_interval=0.2)
    assert all(result["ok"] for result in results.values())
    # Each URL's started_at is the engine's own stamp, taken when the dispatcher hands it out: after the
    # interval since the last request started, so after the URL before it started (the target's stamps would
    # add how late a busy machine reads each request). Both are ISO times to the millisecond.
    starts = sorted(epoch(result["started_at"]) for result in results.values())
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.2 - 0.002, gaps
    log = target.paced_log(key)
    assert len(log) == 12 and most_at_once(log) <= 2


class Clock:
    """The clock app.runs.hosts reads (time.monotonic and time.time), moved by the test alone."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        """The test's monotonic time."""
        return self.now

    def time(self) -> float:
        """The wall time, as far from the epoch as the test's monotonic time."""
        return 1_800_000_000.0 + self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """A clock for app.runs.hosts that only the test moves."""
    clock = Clock()
    monkeypatch.setattr(hosts_module, "time", clock)
    return clock


def test_the_dispatcher_starts_a_hosts_next_request_at_its_last_start_plus_per_host_interval(clock):
    options = BatchOptions.parse({"per_host": 2, "per_host_interval": 0.2}, Config.from_env({}))
    hosts = Hosts(options, iter(range(4)), lambda index: f"http://h.test/{index}", Counters())
    host = hosts.host("h.test")
    assert hosts.next_url() == 0
    first = hosts.start(host, first=True)
    clock.now = first + 0.2 - 1e-6
    assert not hosts.may_enter(host) and not hosts.may_start(host), "not before the interval is over"
    clock.now = first + 0.2
    assert hosts.may_enter(host) and hosts.next_url() == 1, "at the interval, not later"
    second = hosts.start(host, first=True)
    clock.now = second + 0.2
    assert not hosts.may_enter(host), "per_host 2: both slots are held"
    clock.now = second + 0.5
    hosts.leave(host)
    assert hosts.next_url() == 2, "a freed slot goes at once: the interval since the last start is over"


def test_urls_waiting_for_a_busy_host_hold_no_fetcher_from_the_other_hosts(server, target):
    slow_key, slow = paced_urls(target, 6, "delay=500")
    fast_key, fast = paced_urls(target, 30)
    fast = [url.replace("127.0.0.1", "localhost") for url in fast]  # another host on the same target
    server.run_batch(slow + fast, concurrency=2, per_host=1)
    slow_starts = sorted(entry["start"] for entry in target.paced_log(slow_key))
    fast_ends = [entry["end"] for entry in target.paced_log(fast_key)]
    assert len(slow_starts) == 6 and len(fast_ends) == 30
    # Slow URL 1 waits for URL 0 in its host's queue, not in a fetcher: the other host's URLs go by meanwhile.
    assert max(fast_ends) < slow_starts[1]


def test_a_host_that_refuses_past_its_rate_is_paused_by_retry_after_and_every_url_ends_ok(server, target):
    # The requests of a burst arrive in any order (jitter): the host may refuse one that was sent first.
    key, urls = paced_urls(target, 60, "rate=10&retry_after=2&jitter=40")
    batch = server.submit(urls, concurrency=10, retries=3)
    server.wait(batch["id"], timeout=60)
    results = server.results(batch["id"])
    assert [kind_of(result) for result in results] == [None] * 60
    log = sorted(target.paced_log(key), key=lambda entry: entry["start"])
    first_refusal = min(entry["end"] for entry in log if entry["status"] == 429)
    later = [entry["start"] for entry in log if entry["start"] > first_refusal]
    for i, start in enumerate(later):
        in_a_second = [other for other in later[i:] if other < start + 1.0]
        assert len(in_a_second) <= 10, f"{len(in_a_second)} requests in the second from {start}"
    # The pause: what the first burst had sent already aside, nothing starts within 2 s of the first refusal,
    # and the host refuses nothing sent after it.
    resumed = [entry for entry in log if entry["start"] > first_refusal + 0.1]
    assert resumed[0]["start"] >= first_refusal + 2 - 0.05
    assert [entry["status"] for entry in resumed] == [200] * len(resumed)
    # and it learned about the pace the host takes, not a timid one: over a quarter of the limit (half of it on
    # a quiet machine; a loaded one delays the fetches themselves)
    pace = (len(resumed) - 1) / (resumed[-1]["start"] - resumed[0]["start"])
    assert pace > 2.5, f"{pace:.1f} requests a second after the pause"
    assert max(result["attempts"] for result in results) == 2
    (host,) = server.request("GET", f"/api/v1/batches/{batch['id']}/hosts").json()["hosts"]
    refusals = sum(entry["status"] == 429 for entry in log)
    assert host == {
        "host": "127.0.0.1",
        "in_flight": 0,
        "done": 60,
        "ok": 60,
        "failed": 0,
        "p50_ms": host["p50_ms"],
        "refused": refusals,
        "paused_until": None,
        "pause_reason": "",
    }
    metrics = server.request("GET", "/metrics").text
    assert (
        "greenbatch_host_pauses_total" in metrics and f'greenbatch_retries_total{{status="429"}} {refusals}' in metrics
    )


def redirecting_urls(target, there_query: str = "") -> tuple[str, str]:
    """A fresh /paced key and a URL of it on 127.0.0.1 that redirects to /paced/<key>/there on localhost."""
    key = secrets.token_hex(4)
    there = target.url(f"/paced/{key}/there{'?' + there_query if there_query else ''}").replace(
        "127.0.0.1", "localhost"
    )
    return key, target.url(f"/paced/{key}/origin?" + urlencode({"redirect": there}))


def hits(log: list[dict], step: str) -> list[dict]:
    """The requests of a /paced log to one step (`origin`, `there`, `busy`), by start."""
    return sorted(
        (entry for entry in log if entry["path"].split("?")[0].endswith("/" + step)), key=lambda e: e["start"]
    )


def test_a_retry_after_on_a_redirect_hop_holds_the_url_in_that_hosts_queue_not_in_a_fetcher(server, target):
    # The redirect's host takes one request a second (the origin's counts) and asks for 2 s: longer than the timeout.
    key, moved = redirecting_urls(target, "rate=1&retry_after=2")
    fast_key, fast = paced_urls(target, 5)
    results = server.run_batch([moved, *fast], concurrency=1, retries=1, timeout=1)
    assert [kind_of(result) for result in results.values()] == [None] * 6
    assert (results[0]["status_code"], results[0]["attempts"], results[0]["refused"]) == (200, 2, 1)
    assert [hop["status"] for hop in results[0]["redirects"]] == [302]
    log = target.paced_log(key)
    there = hits(log, "there")
    # The URL goes on at the hop that was refused, after the pause, and the origin is asked once.
    assert len(hits(log, "origin")) == 1
    assert [entry["status"] for entry in there] == [429, 200]
    assert there[1]["start"] >= there[0]["end"] + 2 - 0.05
    # Its one fetcher fetched the other host's URLs during the pause.
    assert max(entry["end"] for entry in target.paced_log(fast_key)) < there[1]["start"]


def test_a_redirect_to_a_host_at_its_per_host_cap_waits_in_that_hosts_queue_not_in_a_fetcher(server, target):
    key, moved = redirecting_urls(target)
    busy = target.url(f"/paced/{key}/busy?delay=1000").replace("127.0.0.1", "localhost")
    fast_key, fast = paced_urls(target, 5)
    results = server.run_batch([busy, moved, *fast], concurrency=2, per_host=1)
    assert [result["status_code"] for result in results.values()] == [200] * 7
    log = target.paced_log(key)
    (busy_hit,) = hits(log, "busy")
    (there,) = hits(log, "there")
    assert len(hits(log, "origin")) == 1 and there["start"] >= busy_hit["end"] - 0.05
    # The redirected URL waited for localhost's slot in its queue: the second fetcher went on with 127.0.0.1.
    assert max(entry["end"] for entry in target.paced_log(fast_key)) < busy_hit["end"]


def test_a_retry_after_past_max_retry_after_ends_the_url_rate_limited_at_once(server, target):
    _, urls = paced_urls(target, 1, "rate=0&retry_after=3600")
    started = time.monotonic()
    result = server.run_batch(urls, retries=2)[0]
    assert time.monotonic() - started < 5
    assert kind_of(result) == "rate_limited"
    assert "Retry-After: 3600" in result["error"]["message"] and "max_retry_after of 60 s" in result["error"]["message"]
    assert result["attempts"] == 1
    # Refused a wait, the URL has no answer: it fails on the `error` rule, never as issue 17's rate_limited warning.
    assert (result["outcome"], result["ok"], result["warnings"]) == ("failed", False, [])
    assert result["reasons"][0]["rule"] == "error" and result["reasons"][0]["actual"].startswith("rate_limited: 429")


def test_a_429_still_answered_after_the_last_retry_ends_warn_with_the_rate_limited_warning(server, target):
    _, urls = paced_urls(target, 1, "rate=0&retry_after=0")
    result = server.run_batch(urls, retries=1)[0]
    assert (result["status_code"], result["attempts"], result["refused"]) == (429, 2, 1)
    assert (result["outcome"], result["ok"], result["error"]) == ("warn", True, None)
    assert result["warnings"] == [{"kind": "rate_limited", "evidence": "status 429, retry-after: 0"}]


def test_waiting_for_a_refusing_hosts_pace_and_backoff_is_not_fetch_time(server, target):
    # Each 429 comes back in ms, without a usable Retry-After: the URLs back off and wait for the pace the
    # refusals taught, seconds in all, in the host's queue; their 1 s deadline counts the requests alone.
    key, urls = paced_urls(target, 2, "rate=0&retry_after=garbage")
    results = server.run_batch(urls, retries=1, timeout=1, max_retry_after=1)
    log = target.paced_log(key)
    assert len(log) == 4 and max(entry["end"] for entry in log) - min(entry["start"] for entry in log) > 1
    for result in results.values():
        assert (result["status_code"], result["attempts"], result["error"]) == (429, 2, None)
        assert result["timings"]["total"] < 1000


def test_a_backoff_without_retry_after_holds_back_that_url_alone_not_its_host(server, target):
    # One URL always answers 429 without a Retry-After; the 40 others on its host answer at once.
    fine_key, fine = paced_urls(target, 40)
    refusing_key, refusing = paced_urls(target, 1, "rate=0&retry_after=garbage")
    results = server.run_batch([*fine[:10], *refusing, *fine[10:]], concurrency=8, per_host=4, retries=4)
    assert results[10]["status_code"] == 429 and (results[10]["attempts"], results[10]["refused"]) == (5, 4)
    assert [result["status_code"] for index, result in results.items() if index != 10] == [200] * 40
    tries = sorted(entry["start"] for entry in target.paced_log(refusing_key))
    assert len(tries) == 5 and tries[-1] - tries[0] >= 0.2 + 0.4 + 0.8 + 1.6 - 0.05
    # Its backoffs were its own: the host's other URLs went on (at the pace its refusals taught) during the longest.
    went_on = [entry for entry in target.paced_log(fine_key) if tries[-2] < entry["start"] < tries[-1]]
    assert len(went_on) >= 3, f"{len(went_on)} of the other URLs started during its 1.6 s backoff"


def test_a_connection_error_backs_off_in_its_hosts_queue_not_under_its_deadline_and_the_host_goes_on(server, target):
    # The URL's connection is reset three times, then it answers: its backoffs (0.2 + 0.4 + 0.8 s) are longer than
    # its 1 s timeout. Answers close their connections, so each try is a request of its own (none is a stale reuse).
    key, failing = paced_urls(target, 1, "fail=3&close=1")
    fine_key, fine = paced_urls(target, 5, "close=1")
    results = server.run_batch([*failing, *fine], concurrency=1, retries=3, timeout=1)
    assert (kind_of(results[0]), results[0]["status_code"], results[0]["attempts"]) == (None, 200, 4)
    assert results[0]["timings"]["total"] < 1000 and results[0].get("refused", 0) == 0  # resets are no refusals
    assert [results[index]["status_code"] for index in range(1, 6)] == [200] * 5
    tries = sorted(target.paced_log(key), key=lambda entry: entry["start"])
    assert [entry["status"] for entry in tries] == ["RST", "RST", "RST", 200]
    assert tries[-1]["start"] - tries[0]["start"] >= 0.2 + 0.4 + 0.8 - 0.05
    # Its one fetcher fetched the host's other URLs while the URL backed off in the queue.
    assert max(entry["end"] for entry in target.paced_log(fine_key)) < tries[-1]["start"]


def test_an_unpaced_retry_whose_backoff_outlasts_the_deadline_ends_with_its_connection_error_at_once(server, target):
    # Without retry_statuses nothing paces the batch: its backoffs are fetch time. The third try's 0.8 s backoff
    # would end past the 1 s deadline, so the URL ends with that try's error, not `deadline`, and sooner.
    key, urls = paced_urls(target, 1, "fail=10&close=1")
    result = server.run_batch(urls, retries=3, retry_statuses=[], timeout=1)[0]
    assert kind_of(result) == "other" and "reset" in result["error"]["message"], result["error"]
    assert result["attempts"] == 3 and result["timings"]["total"] < 1000
    assert [entry["status"] for entry in target.paced_log(key)] == ["RST"] * 3


def test_a_host_that_refuses_every_request_is_asked_at_most_max_retry_after_apart_its_urls_shown_waiting(
    server, target
):
    key, urls = paced_urls(target, 4, "rate=0&retry_after=0")
    batch = server.submit(urls, retries=1, max_retry_after=0.5)
    held = wait_for(
        lambda: (answer := server.batch(batch["id"]))["counts"]["waiting"] and answer, "URLs shown waiting", 5
    )
    assert held["counts"]["waiting"] + held["counts"]["pending"] + held["counts"]["running"] <= 4
    (host,) = server.request("GET", f"/api/v1/batches/{batch['id']}/hosts").json()["hosts"]
    assert host["pause_reason"] == "429 answers: paced at one request every 0.5 s" and host["paused_until"]
    ended = server.wait(batch["id"], timeout=10)
    assert (ended["counts"]["warn"], ended["counts"]["waiting"]) == (4, 0)
    assert len(target.paced_log(key)) == 8
    # Four requests at least are paced after the first refusal, each 0.5 s after the one before (by the server's
    # own times: the target's stamps add how late a busy machine reads each request). The upper bound, that
    # the pace is never slower than max_retry_after, is the next test's, on the dispatcher's clock.
    assert epoch(ended["finished_at"]) - epoch(ended["started_at"]) >= 4 * 0.5 - 0.002


def test_a_host_refusing_with_retry_after_0_is_asked_again_max_retry_after_after_its_last_start(clock):
    options = BatchOptions.parse({"retries": 3, "max_retry_after": 0.5}, Config.from_env({}))
    hosts = Hosts(options, iter(range(1)), lambda index: "http://h.test/", Counters())
    host = hosts.host("h.test")
    assert hosts.next_url() == 0
    for tries in range(1, 4):  # each try is refused with Retry-After: 0; what it teaches stops at max_retry_after
        started = hosts.start(host, first=True)
        hosts.refused(host, 429, retrying=True, started=started)
        hosts.pause(host, 0, "429 Retry-After: 0")
        hosts.leave(host)  # the URL goes back to its host's queue, as the engine sends it (RetryLater)
        hosts.requeue(0, hosts_module.Requeued(tries, 0.0, None, tries, tries, [], None, "h.test"))
        assert not hosts.may_enter(host), "paced, though Retry-After asked for no pause"
        assert hosts.paused("h.test") == (iso_at(clock.time() + 0.5), "429 answers: paced at one request every 0.5 s")
        clock.now = started + 0.5 - 1e-6
        assert not hosts.may_enter(host), "not before 0.5 s"
        clock.now = started + 0.5
        assert hosts.may_enter(host) and hosts.next_url() == 0, "asked again max_retry_after after, never later"
        hosts.requeued.pop(0)  # taken up by its next go, as the engine's _fetch_one does


def test_cancel_during_a_long_pause_ends_the_batch_within_a_second(server, target):
    key, urls = paced_urls(target, 20, "rate=0&retry_after=30")
    batch = server.submit(urls, concurrency=5, retries=3)
    deadline = time.monotonic() + 10
    while not target.paced_log(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    paused = wait_for(
        lambda: (answer := server.batch(batch["id"]))["counts"]["waiting"] == 20 and answer, "every URL waits"
    )
    assert paused["counts"]["pending"] == 0 and paused["counts"]["running"] == 0
    (host,) = server.request("GET", f"/api/v1/batches/{batch['id']}/hosts").json()["hosts"]
    assert (host["host"], host["refused"], host["pause_reason"]) == ("127.0.0.1", 5, "429 Retry-After: 30")
    assert host["paused_until"] > ended_iso_in(25)
    asked = time.monotonic()
    assert server.request("POST", f"/api/v1/batches/{batch['id']}/cancel").status_code == 200
    ended = server.wait(batch["id"], timeout=5)
    assert time.monotonic() - asked < 1.0
    assert ended["status"] == "cancelled" and ended["counts"]["cancelled"] == 20
    # The five that were refused keep their try and refusal, as a URL cancelled in flight does.
    results = server.results(batch["id"])
    waited = [result for result in results if result["attempts"]]
    assert [(result["attempts"], result["refused"]) for result in waited] == [(1, 1)] * 5
    assert {result["error"]["message"] for result in waited} == {
        "batch was cancelled while this URL waited in its host's queue"
    }
    assert {result["error"]["message"] for result in results if not result["attempts"]} == {
        "batch was cancelled before this URL ran"
    }


def test_head_get_asks_with_get_where_head_answers_405_and_says_which_method_answered(server, target):
    key, urls = paced_urls(target, 5, "head=405")
    results = server.run_batch(urls, method="HEAD,GET")
    assert [(r["ok"], r["status_code"], r["method"], r["attempts"]) for r in results.values()] == [
        (True, 200, "GET", 2)
    ] * 5
    assert sorted(entry["method"] for entry in target.paced_log(key)) == ["GET"] * 5 + ["HEAD"] * 5


def test_head_get_keeps_the_head_answer_where_head_works(server, target):
    result = server.fetch_one(target.url("/ok"), method="head,get")
    assert (result["ok"], result["method"], result["attempts"]) == (True, "HEAD", 1)


def test_the_default_user_agent_names_greenbatch_and_its_version_and_a_batch_may_replace_it(server, target):
    assert USER_AGENT == f"greenbatch/{VERSION} (+https://github.com/greenbatch)"
    key, urls = paced_urls(target, 1)
    for client in ("fast", "requests"):
        server.run_batch(urls, client=client)
        server.run_batch(urls, client=client, headers={"user-agent": "audit-bot/2"})
    assert [entry["user_agent"] for entry in target.paced_log(key)] == [USER_AGENT, "audit-bot/2"] * 2


def test_the_version_in_the_user_agent_is_the_projects():
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert f'version = "{VERSION}"' in pyproject


def test_greenbatch_user_agent_sets_the_servers_default(make_server, target):
    server = make_server({"GREENBATCH_USER_AGENT": "acme-link-audit/1 (+mailto:web@acme.test)"})
    key, urls = paced_urls(target, 1)
    server.run_batch(urls)
    assert [entry["user_agent"] for entry in target.paced_log(key)] == ["acme-link-audit/1 (+mailto:web@acme.test)"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"per_host_interval": 61}, "options.per_host_interval"),
        ({"per_host_interval": -1}, "options.per_host_interval"),
        ({"max_retry_after": 121}, "options.max_retry_after"),
        ({"retry_statuses": [429, 99]}, "options.retry_statuses"),
        ({"retry_statuses": list(range(400, 421))}, "options.retry_statuses"),
        ({"head_fallback_statuses": "405,abc"}, "options.head_fallback_statuses"),
        ({"respect_retry_after": "maybe"}, "options.respect_retry_after"),
        ({"method": "GET,HEAD"}, "options.method"),
    ],
)
def test_polite_options_past_their_limits_are_refused_with_400_naming_the_field(server, target, options, field):
    response = server.request("POST", "/api/v1/batches", json={"urls": [target.url("/ok")], "options": options})
    assert response.status_code == 400
    assert [detail["field"] for detail in error_of(response)["details"]] == [field]


def test_the_hosts_table_downloads_as_csv_the_most_refused_host_first(server, target):
    _, refusing = paced_urls(target, 2, "rate=0&retry_after=3600")
    fine = [target.url("/ok").replace("127.0.0.1", "localhost")] * 3
    batch = server.submit(fine + refusing, retries=1)
    server.wait(batch["id"])
    response = server.request("GET", f"/api/v1/batches/{batch['id']}/hosts", params={"format": "csv"})
    assert response.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in response.headers["Content-Disposition"]
    lines = response.text.splitlines()
    assert lines[0] == '"host","in_flight","done","ok","failed","p50_ms","refused","paused_until","pause_reason"'
    assert lines[1].startswith('"127.0.0.1","0","2","0","2",') and '"2",""' in lines[1]
    assert lines[2].startswith('"localhost","0","3","3","0",')
    assert server.request("GET", f"/api/v1/batches/{batch['id']}/hosts", params={"format": "xml"}).status_code == 400


def test_the_hosts_table_counts_a_warned_url_as_ok_as_the_batch_counts_do(server, target):
    batch = server.wait(server.submit([target.url("/challenge"), target.url("/ok"), target.url("/status/500")])["id"])
    assert (batch["counts"]["ok"], batch["counts"]["warn"], batch["counts"]["failed"]) == (2, 1, 1)
    [host] = server.request("GET", f"/api/v1/batches/{batch['id']}/hosts").json()["hosts"]
    assert (host["done"], host["ok"], host["failed"]) == (3, 2, 1)


def test_the_hosts_table_read_as_a_batch_runs_ends_as_the_one_counted_at_once_from_its_stored_results(server, target):
    # The server counts each stored result once, as the polls come; the finished batch's table is the same as
    # one counted from all its results in one go (what a new process reads).
    _, refusing = paced_urls(target, 2, "rate=0&retry_after=3600")
    slow = [target.url(f"/delay/{100 + 20 * i}?n={i}") for i in range(8)] + [target.url("/status/500")]
    other = [url.replace("127.0.0.1", "localhost") for url in slow[:3]]
    batch = server.submit(slow + other + refusing, concurrency=2, retries=1)
    polls = []
    while server.batch(batch["id"])["status"] not in ("done", "failed", "cancelled"):
        polls.append(server.request("GET", f"/api/v1/batches/{batch['id']}/hosts").json()["hosts"])
        time.sleep(0.1)
    ended = server.request("GET", f"/api/v1/batches/{batch['id']}/hosts").json()["hosts"]
    assert any(0 < sum(host["done"] for host in poll) < 14 for poll in polls), "read while it ran"
    assert host_table(server.results(batch["id"]), {}) == ended
    assert [(h["host"], h["done"], h["ok"], h["failed"], h["refused"]) for h in ended] == [
        ("127.0.0.1", 11, 8, 3, 2),  # each refusing URL refused once: a Retry-After past the cap ends it at once
        ("localhost", 3, 3, 0, 0),
    ]


class NothingInFlight:
    """The engine's side of a batch no process fetches now: no host in flight or paused."""

    def hosts_live(self, batch_id: str) -> dict:
        return {}


def test_a_hosts_table_counts_only_the_results_stored_since_it_was_last_read_in_either_store(store_factory):
    store = store_factory(flush_interval=0.01)
    batch_id = secrets.token_hex(6)
    urls = [f"http://{'b' if n % 3 == 0 else 'a'}.test/{n}" for n in range(6)]
    store.create_batch(batch_id, "hosts", {}, urls, "2026-12-06T00:00:00.000Z")
    results = [
        {"index": n, "url": url, "ok": n != 4, "status_code": 429 if n == 4 else 200, "error": None, "bytes": 0}
        | {"timings": {"total": 10.0 + n}, "refused": int(n == 5)}
        for n, url in enumerate(urls)
    ]
    events = [Event(batch_id, n + 1, "result", data, row=row_of(data)) for n, data in enumerate(results)]
    reader = BatchReader(store, NothingInFlight())
    store.extend(events[:3])
    assert store.flush(30)
    assert reader.hosts(batch_id) == host_table(results[:3], {})
    reads = []
    read = store.events
    store.events = lambda batch_id, after, limit, types: reads.append(after) or read(batch_id, after, limit, types)
    store.extend(events[3:])
    assert store.flush(30)
    assert reader.hosts(batch_id) == host_table(results, {})
    assert reads == [3], "the second read starts after the results the first one counted"


def test_the_dispatcher_hands_a_freed_host_its_own_queued_url_among_thousands_of_full_hosts():
    # What a pick costs with many hosts is bench/hosts.py's (a heap by ready time: O(log hosts)); this is that it
    # picks right: each freed host, in any order, gets the URL queued behind it, and nothing else moves.
    count = 5_000
    options = BatchOptions.parse({"per_host": 1}, Config.from_env({}))
    # URL i and URL count + i are on host i, and a last URL on a host of its own.
    url_of = lambda i: f"http://h{i % count if i < 2 * count else 'last'}.test/{i}"  # noqa: E731
    hosts = Hosts(options, iter(range(2 * count + 1)), url_of, Counters())
    taken = [hosts.next_url() for _ in range(count + 1)]  # the last one sets every host's second URL aside
    assert taken[-1] == 2 * count
    for host in random.Random(18).sample(range(count), 400):
        hosts.leave(hosts.host(f"h{host}.test"))
        assert hosts.next_url() == count + host


def test_waiting_counts_the_urls_queued_behind_hosts_their_refusals_hold_back_until_they_are_free(clock):
    # What waiting() costs with many hosts is bench/hosts.py's (it looks only at hosts a refusal paused or paced).
    options = BatchOptions.parse({"per_host": 1, "retries": 1}, Config.from_env({}))
    # Two URLs on each of h0, h1 and h2, then one on a host of its own: taking it sets each host's second URL aside.
    hosts = Hosts(options, iter(range(7)), lambda i: f"http://h{i % 3 if i < 6 else 'last'}.test/{i}", Counters())
    assert [hosts.next_url() for _ in range(4)] == [0, 1, 2, 6]
    paused, paced = hosts.host("h0.test"), hosts.host("h1.test")
    assert hosts.waiting() == 0
    hosts.pause(paused, 60, "429 Retry-After: 60")
    hosts.refused(paced, 429, retrying=True, started=hosts.start(paced, first=True))
    hosts.interval_of(paced, clock.now)  # the refusal's lesson: the host is paced
    assert hosts.waiting() == 2
    clock.now += 60
    assert hosts.waiting() == 1, "the pause is over"
    for n in range(int(LEARN_FORGET / LEARN_MARGIN) + 2):  # LEARN_FORGET seconds of answers at the learned pace
        hosts.took(paced, paced.learned_at + n * LEARN_MARGIN)
    assert hosts.waiting() == 0, "unpaced"
    hosts.refused(paced, 429, retrying=True, started=hosts.start(paced, first=False))
    hosts.interval_of(paced, clock.now)
    assert hosts.waiting() == 1, "paced again by its next refusal"


def refusing_host() -> tuple[Hosts, Host]:
    """The Hosts of a batch that retries 429s, and its one host."""
    options = BatchOptions.parse({"retries": 3}, Config.from_env({}))
    hosts = Hosts(options, iter(()), lambda index: "http://h.test/", Counters())
    return hosts, hosts.host("h.test")


def test_a_refusal_in_a_burst_that_started_together_paces_the_host_at_what_it_took_not_once_a_second():
    # Ten requests start at once and reach the host in any order: it takes nine and refuses the one that came
    # last, though it started first. The nine are what the host took, not none.
    hosts, host = refusing_host()
    starts = [hosts.start(host, first=False) for _ in range(10)]
    for started in starts[1:]:
        hosts.took(host, started)
    hosts.refused(host, 429, retrying=True, started=starts[0])
    assert hosts.interval_of(host, time.monotonic()) == pytest.approx(LEARN_MARGIN * LEARN_WINDOW / 9)


def test_answers_that_come_long_after_a_refusal_still_count_the_second_before_it():
    # A slow host: five requests started 2.5 s ago, one was refused, and the others' answers come in now, while
    # its pause lasts. They are what the host took, however long the pause and the answers took.
    hosts, host = refusing_host()
    burst = time.monotonic() - 2.5
    hosts.refused(host, 429, retrying=True, started=burst + 0.001)
    for _ in range(5):
        hosts.took(host, burst)
    assert hosts.interval_of(host, time.monotonic()) == pytest.approx(LEARN_MARGIN * LEARN_WINDOW / 5)


def test_refusals_at_the_learned_pace_double_it_up_to_learn_max_never_past_it():
    hosts, host = refusing_host()
    taught = []
    for _ in range(6):
        hosts.refused(host, 429, retrying=True, started=hosts.start(host, first=False))
        taught.append(hosts.interval_of(host, time.monotonic()))
    assert taught == pytest.approx([1.2, 2.4, 4.8, 9.6, LEARN_MAX, LEARN_MAX])


def test_answers_that_are_not_refusals_bring_a_doubled_pace_back_to_the_one_the_host_took():
    hosts, host = refusing_host()
    taught = []
    for _ in range(2):  # the second refusal came at the learned pace: the interval doubles
        hosts.refused(host, 429, retrying=True, started=hosts.start(host, first=False))
        taught.append(hosts.interval_of(host, time.monotonic()))
    assert taught == pytest.approx([LEARN_MARGIN * LEARN_WINDOW, 2 * LEARN_MARGIN * LEARN_WINDOW])
    for _ in range(8):
        hosts.took(host, hosts.start(host, first=False))
    assert hosts.interval_of(host, time.monotonic()) == pytest.approx(LEARN_MARGIN * LEARN_WINDOW, rel=0.01)


def test_refusals_at_the_learned_pace_double_it_but_never_teach_the_pace_the_batch_held_the_host_to():
    # The host took nine of a burst 5 s ago and refused one: one request every 0.13 s. Then four requests sent at
    # the learned pace are refused: each doubles it, though the second before each held no other request.
    hosts, host = refusing_host()
    burst = time.monotonic() - 5
    hosts.refused(host, 429, retrying=True, started=burst)
    for n in range(9):
        hosts.took(host, burst + n / 1000)
    taught = [hosts.interval_of(host, time.monotonic())]
    for _ in range(4):
        hosts.refused(host, 429, retrying=True, started=hosts.start(host, first=False))
        taught.append(hosts.interval_of(host, time.monotonic()))
    measured = LEARN_MARGIN * LEARN_WINDOW / 9
    assert taught == pytest.approx([measured, 2 * measured, 4 * measured, 8 * measured, 16 * measured])
    for _ in range(12):  # answers that are not refusals bring it back to what the host took, not to 1.2 s
        hosts.took(host, hosts.start(host, first=False))
    assert hosts.interval_of(host, time.monotonic()) == pytest.approx(measured, rel=0.01)


def test_a_failed_connection_is_no_answer_the_host_took_so_a_refusal_after_resets_paces_it_at_what_it_answered():
    # A host resets four connections, then refuses the fifth request, all within a second. It took none of the
    # five: its pace is one request per LEARN_MARGIN seconds, not four times as fast, and the resets are no refusals.
    options = BatchOptions.parse({"retries": 3}, Config.from_env({}))
    hosts = Hosts(options, iter(range(5)), lambda index: f"http://h.test/{index}", Counters())
    reset = FetchError("other", "connection reset by h.test before a response", retryable=True)
    transport = ScriptedTransport(reset, reset, reset, reset, answer(429))
    for _ in range(5):
        index = hosts.next_url()
        assert index is not None
        gate, url = UrlPass(hosts, index, "h.test"), f"http://h.test/{index}"
        with pytest.raises(RetryLater):  # each backs off in the host's queue, as the engine has it
            attempt(transport, url, {}, options, Result(index=index, url=url), time.perf_counter(), gate=gate)
        gate.release()
    host = hosts.host("h.test")
    assert (host.refused, len(host.answered)) == (1, 0)
    assert hosts.interval_of(host, time.monotonic()) == pytest.approx(LEARN_MARGIN * LEARN_WINDOW)


def test_answers_taken_at_the_learned_pace_for_learn_forget_seconds_unpace_the_host():
    hosts, host = refusing_host()
    hosts.refused(host, 429, retrying=True, started=hosts.start(host, first=False))
    assert hosts.interval_of(host, time.monotonic()) == LEARN_MARGIN * LEARN_WINDOW
    paced_from = host.learned_at
    answered = [paced_from + n * LEARN_MARGIN for n in range(int(LEARN_FORGET / LEARN_MARGIN) + 2)]
    for started in answered[:-1]:
        hosts.took(host, started)
    assert hosts.interval_of(host, time.monotonic()) == LEARN_MARGIN * LEARN_WINDOW
    hosts.took(host, answered[-1])  # LEARN_FORGET seconds of them
    assert hosts.interval_of(host, time.monotonic()) == 0
    # A refusal starts the count again: the next lesson is the host's pace then, not the one it had.
    hosts.refused(host, 429, retrying=True, started=hosts.start(host, first=False))
    assert hosts.interval_of(host, time.monotonic()) == LEARN_MARGIN * LEARN_WINDOW


# -- the batch page ------------------------------------------------------------------------------------


def test_the_batch_page_shows_the_paused_host_its_waiting_urls_and_sorts_the_hosts(server, target, page, phone):
    expect = pytest.importorskip("playwright.sync_api").expect
    key, paused = paced_urls(target, 12, "rate=0&retry_after=30")
    fine = [target.url(f"/delay/400?i={i}").replace("127.0.0.1", "localhost") for i in range(4)]
    batch = server.submit(paused + fine, concurrency=4, retries=3)
    wait_for(lambda: server.batch(batch["id"])["counts"]["waiting"] == 12, "the paused host's URLs wait")
    for tab, name in ((page, "desktop"), (phone, "phone")):
        tab.goto(server.url(f"/batches/{batch['id']}"))
        rows = tab.locator("#host-rows tr")
        expect(rows).to_have_count(2)
        first = rows.nth(0)  # the most refused first
        expect(first.locator(".col-host")).to_have_text("127.0.0.1")
        expect(first.locator(".col-pause")).to_have_text(
            re.compile(r"^waiting: rate limited, (2\d|30) s \(Retry-After\)$")
        )
        expect(tab.locator("#stat-waiting")).to_be_visible()
        expect(tab.locator("#count-waiting")).to_have_text("12")
        expect(tab.locator("#progress-text")).to_contain_text("12 waiting: rate limited")
        tab.screenshot(path=f"/tmp/gb-hosts-{name}.png", full_page=True)
    page.click("[data-host-sort=host]")
    expect(page.locator("#host-rows tr .col-host")).to_have_text(["127.0.0.1", "localhost"])
    page.click("[data-host-sort=host]")
    expect(page.locator("#host-rows tr .col-host")).to_have_text(["localhost", "127.0.0.1"])
    assert server.request("POST", f"/api/v1/batches/{batch['id']}/cancel").status_code == 200
    expect(page.locator("#stat-waiting")).to_be_hidden()
    assert target.paced_log(key)


def test_the_batch_page_shows_a_host_slowed_by_its_refusals_and_its_waiting_urls(server, target, page):
    expect = pytest.importorskip("playwright.sync_api").expect
    key, urls = paced_urls(target, 6, "rate=0&retry_after=0")
    batch = server.submit(urls, retries=1, max_retry_after=2)
    wait_for(lambda: server.batch(batch["id"])["counts"]["waiting"], "URLs held by the learned pace")
    page.goto(server.url(f"/batches/{batch['id']}"))
    expect(page.locator("#host-rows tr .col-pause")).to_have_text(
        re.compile(r"^waiting: rate limited, one request every (1\.2|2\.0) s \(paced\)$")
    )
    expect(page.locator("#stat-waiting")).to_be_visible()
    expect(page.locator("#progress-text")).to_contain_text("waiting: rate limited, one request every")
    page.screenshot(path="/tmp/gb-hosts-paced.png", full_page=True)
    assert server.request("POST", f"/api/v1/batches/{batch['id']}/cancel").status_code == 200
    expect(page.locator("#stat-waiting")).to_be_hidden()
    assert target.paced_log(key)
