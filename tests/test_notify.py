"""Notifications: notify targets checked when a batch is submitted (each entry's fields, the SSRF guard), their
secrets never shown back in full, and deliveries a local receiver verifies."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import signal
import socket
import time
import uuid
from typing import Any

import gevent
import pytest

from app.core.config import Config
from app.fetch import guard
from app.runs.events import Event
from app.runs.notify import TRIES, Notifier, post, signature, slack_text, target_refusals
from tests.support.planted import untimed
from tests.support.receiver import HANG, Receiver, verified
from tests.support.server import ARTIFACTS, ROOT, GreenbatchServer, error_of

SECRET = "s3cret-for-the-receiver-7781"


@pytest.fixture(scope="module")
def unreachable():
    """A receiver on a loopback port the server is not allowed to reach."""
    instance = Receiver()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def notify_server(tmp_path_factory, target, receiver):
    """One server allowed to reach the target and the receiver, and no other loopback port."""
    env = {
        "GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{target.port},127.0.0.1:{receiver.port}",
        "GREENBATCH_NOTIFY_RETRY_DELAY": "0.05",  # tries 0.05 s and 0.2 s apart
    }
    instance = GreenbatchServer(tmp_path_factory.mktemp("notify"), env).start()
    yield instance
    instance.stop()


def submitted(server: GreenbatchServer, urls: list[str], **options: Any):
    """The answer to a JSON submission with these options."""
    return server.request("POST", "/api/v1/batches", json={"urls": urls, "options": options})


# -- options ---------------------------------------------------------------------------------


def test_notify_options_are_stored_with_secrets_and_url_paths_shown_only_by_their_last_characters(
    notify_server, target, receiver
):
    slack = f"http://127.0.0.1:{receiver.port}/services/T000/B000/XXXXsecretpath"
    options = {
        "notify": [
            {"type": "webhook", "url": receiver.url("/hook?token=q1w2e3"), "secret": SECRET},
            {"type": "webhook", "url": receiver.url("/api/webhooks/123/discordTOKENtail"), "secret": SECRET},
        ],
        "webhook": {"url": receiver.url("/second"), "secret": "another-secret-99"},
        "notify_on": "change",
        "consecutive_failures": 2,
    }
    created = submitted(notify_server, [target.url("/ok")], **options, concurrency=1)
    assert created.status_code == 201, created.text
    batch = created.json()
    assert batch["options"]["notify"] == [
        {"type": "webhook", "url": receiver.url("/...hook"), "secret": "...7781"},
        {"type": "webhook", "url": receiver.url("/...tail"), "secret": "...7781"},
        {"type": "webhook", "url": receiver.url("/...cond"), "secret": "...t-99"},
    ]
    assert (batch["options"]["notify_on"], batch["options"]["consecutive_failures"]) == ("change", 2)
    listed = notify_server.request("GET", "/api/v1/batches").json()["batches"]
    page = notify_server.request("GET", f"/batches/{batch['id']}").text
    rerun = notify_server.request("POST", f"/api/v1/batches/{batch['id']}/rerun")
    assert rerun.status_code == 201, rerun.text
    for shown in (json.dumps(listed), page, rerun.text):
        assert SECRET not in shown and "another-secret-99" not in shown and "q1w2e3" not in shown
        assert "discordTOKEN" not in shown
    assert rerun.json()["options"]["notify"] == batch["options"]["notify"]

    created = submitted(notify_server, [target.url("/ok")], notify=[{"type": "slack", "url": slack}])
    assert created.json()["options"]["notify"] == [
        {"type": "slack", "url": f"http://127.0.0.1:{receiver.port}/...path"}
    ]


def test_a_batch_without_notify_options_shows_none_of_them(notify_server, target):
    batch = notify_server.submit([target.url("/ok")])
    assert not {"notify", "notify_on", "consecutive_failures"} & set(batch["options"])


@pytest.mark.parametrize(
    "options, field, message",
    [
        ({"notify": {"url": "http://x.test/"}}, "options.notify", "must be a list"),
        ({"notify": [{"type": "email", "url": "http://x.test/"}]}, "options.notify[0].type", "webhook, slack"),
        ({"notify": [{"type": "slack", "url": "http://x.test/"}, {"type": "slack"}]}, "options.notify[1].url", "URL"),
        ({"notify": [{"type": "webhook", "url": "ftp://x.test/", "secret": SECRET}]}, "options.notify[0].url", "http"),
        ({"notify": [{"type": "webhook", "url": "http://x.test/"}]}, "options.notify[0].secret", "8 to 256"),
        (
            {"notify": [{"type": "webhook", "url": "http://x.test/", "secret": "...7781"}]},
            "options.notify[0].secret",
            "cut short",
        ),
        (
            {"notify": [{"type": "slack", "url": "http://x.test/", "secret": SECRET}]},
            "options.notify[0].secret",
            "not a field",
        ),
        ({"notify": [{"type": "slack", "url": "http://x.test/"}] * 11}, "options.notify", "at most 10"),
        ({"webhook": {"url": "http://x.test/"}}, "options.webhook.secret", "8 to 256"),
        (
            {"notify": [{"type": "webhook", "url": "http://[::1/x", "secret": SECRET}]},
            "options.notify[0].url",
            "not a valid URL",
        ),
        ({"webhook": {"url": "http://[::1/x", "secret": SECRET}}, "options.webhook.url", "not a valid URL"),
        ({"notify": [{"type": "slack", "url": "http://[::1"}]}, "options.notify[0].url", "not a valid URL"),
        ({"notify": [{"type": "slack", "url": "http://x.test:99999/"}]}, "options.notify[0].url", "not a valid URL"),
        ({"notify_on": "sometimes"}, "options.notify_on", "always, change, failure"),
        ({"consecutive_failures": 0}, "options.consecutive_failures", "from 1 to 50"),
        ({"consecutive_failures": 51}, "options.consecutive_failures", "server limit"),
    ],
)
def test_a_bad_notify_option_answers_400_naming_the_entry_and_its_field(notify_server, target, options, field, message):
    error = error_of(submitted(notify_server, [target.url("/ok")], **options))
    assert error["code"] == "invalid_options"
    assert [detail["field"] for detail in error["details"]] == [field]
    assert message in error["details"][0]["message"]


def test_a_webhook_to_a_denied_address_is_refused_with_the_guards_reason_and_never_sent(
    notify_server, target, unreachable
):
    metadata = {"type": "webhook", "url": "http://169.254.169.254/latest", "secret": SECRET}
    error = error_of(submitted(notify_server, [target.url("/ok")], notify=[metadata]))
    assert error["details"][0]["field"] == "options.notify[0].url"
    assert "169.254.169.254 is a private or reserved address" in error["details"][0]["message"]

    loopback = {"url": unreachable.url(), "secret": SECRET}
    answer = submitted(notify_server, [target.url("/ok")], webhook=loopback)
    error = error_of(answer)
    assert answer.status_code == 400
    assert error["details"][0]["field"] == "options.webhook.url"
    assert f"127.0.0.1:{unreachable.port}" in error["message"], error
    assert unreachable.connections == 0


# -- deliveries ------------------------------------------------------------------------------


def hook(name: str) -> str:
    """A receiver path of one test's own."""
    return f"/hook/{name}/{uuid.uuid4().hex[:8]}"


def settled(server: GreenbatchServer, batch_id: str, timeout: float = 15) -> list[dict[str, Any]]:
    """A finished batch's deliveries once none is pending."""
    deadline = time.monotonic() + timeout
    while True:
        found = server.request("GET", f"/api/v1/batches/{batch_id}/deliveries").json()["deliveries"]
        if found and all(d["status"] != "pending" for d in found):
            return found
        assert time.monotonic() < deadline, f"deliveries of {batch_id} still pending: {found}"
        time.sleep(0.05)


def rerun(server: GreenbatchServer, batch_id: str) -> dict[str, Any]:
    """Rerun a batch and wait for the new one to end."""
    created = server.request("POST", f"/api/v1/batches/{batch_id}/rerun")
    assert created.status_code == 201, created.text
    return server.wait(created.json()["id"])


def test_a_finished_batch_posts_its_payload_signed_over_the_timestamp_and_the_raw_body(notify_server, target, receiver):
    path = hook("signed")
    batch = notify_server.submit(
        [target.url("/ok"), target.url("/status/404")], webhook={"url": receiver.url(path), "secret": SECRET}
    )
    notify_server.wait(batch["id"])

    [request] = receiver.received(path)
    payload = verified(request, SECRET)
    assert payload == {
        "event": "batch.finished",
        "batch_id": batch["id"],
        "list_id": None,
        "name": batch["name"],
        "parent_id": None,
        "status": "done",
        "verdict": {"pass": False, "violations": []},
        "counts": notify_server.batch(batch["id"])["counts"],
        "stats": notify_server.batch(batch["id"])["stats"],
        "diff_summary": None,
        "dashboard_url": notify_server.url(f"/batches/{batch['id']}"),
        "delivery_id": f"{batch['id']}-0",
    }
    assert request["headers"]["X-Greenbatch-Delivery"] == payload["delivery_id"]
    [delivery] = settled(notify_server, batch["id"])
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("sent", 1, 200)
    assert delivery["url"] == receiver.url("/..." + path[-4:]) and delivery["last_error"] is None
    log = notify_server.wait_for_log(f"batch {batch['id']}: notification sent to")
    assert f"notification sent to {delivery['url']}" in log and path not in log


def test_a_receiver_answering_500_twice_gets_a_third_try_and_every_try_is_recorded(notify_server, target, receiver):
    path = hook("retried")
    receiver.answers[path] = [500, 500]
    batch = notify_server.submit([target.url("/ok")], webhook={"url": receiver.url(path), "secret": SECRET})
    notify_server.wait(batch["id"])

    requests = receiver.received(path, 3)
    assert all(verified(request, SECRET)["batch_id"] == batch["id"] for request in requests)
    # Every try of one delivery carries its id, signed: a receiver that got a try twice drops the second.
    assert {verified(request, SECRET)["delivery_id"] for request in requests} == {f"{batch['id']}-0"}
    [delivery] = settled(notify_server, batch["id"])
    assert (delivery["status"], delivery["attempts"]) == ("sent", 3)
    assert [t["status_code"] for t in delivery["tries"]] == [500, 500, 200]
    assert [t["error"] for t in delivery["tries"]] == ["the receiver answered 500"] * 2 + [None]


def test_a_receiver_that_never_answers_2xx_is_given_up_after_three_tries_with_the_last_error(
    notify_server, target, receiver
):
    path = hook("failing")
    receiver.answers[path] = [503, 503, 301]
    batch = notify_server.submit([target.url("/ok")], webhook={"url": receiver.url(path), "secret": SECRET})
    notify_server.wait(batch["id"])

    [delivery] = settled(notify_server, batch["id"])
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("failed", 3, 301)
    assert delivery["last_error"] == "the receiver answered 301 (redirects are not followed)"
    assert len(receiver.received(path, 3)) == 3


def test_notify_on_change_sends_nothing_for_an_identical_rerun_and_sends_for_a_changed_one(
    notify_server, target, receiver
):
    path = hook("change")
    # Slower is a change (2x and 100 ms more): answers of 400 ms leave a loaded machine's stall of up to 400 ms
    # unseen, where answers of a millisecond would turn a 100 ms stall into a change.
    flips = target.url(f"/changes/{uuid.uuid4().hex}?answers=200,200,500&delay=400")
    first = notify_server.wait(
        notify_server.submit(
            [flips, target.url("/delay/400")], notify_on="change", webhook={"url": receiver.url(path), "secret": SECRET}
        )["id"]
    )
    same = rerun(notify_server, first["id"])
    changed = rerun(notify_server, same["id"])

    [skipped] = settled(notify_server, same["id"])
    assert skipped["status"] == "skipped" and skipped["attempts"] == 0
    assert skipped["note"] == "notify_on is change, and nothing changed since the previous run"
    settled(notify_server, changed["id"])
    sent = [verified(request, SECRET) for request in receiver.received(path, 2)]
    assert [payload["batch_id"] for payload in sent] == [first["id"], changed["id"]]  # the first run: no previous
    assert sent[1]["parent_id"] == same["id"]
    assert untimed(sent[1]["diff_summary"]) == {"newly_failed": 1, "unchanged": 1}


def test_notify_on_failure_sends_only_when_the_verdict_fails_or_a_url_newly_fails(notify_server, target, receiver):
    path = hook("failure")
    flips = target.url(f"/changes/{uuid.uuid4().hex}?answers=200,500")
    passing = notify_server.wait(
        notify_server.submit([flips], notify_on="failure", webhook={"url": receiver.url(path), "secret": SECRET})["id"]
    )
    failing = rerun(notify_server, passing["id"])

    [skipped] = settled(notify_server, passing["id"])
    assert skipped["status"] == "skipped" and "verdict passes" in skipped["note"]
    settled(notify_server, failing["id"])
    [request] = receiver.received(path)
    payload = verified(request, SECRET)
    assert (payload["batch_id"], payload["verdict"]["pass"], payload["diff_summary"]["newly_failed"]) == (
        failing["id"],
        False,
        1,
    )


def test_consecutive_failures_notifies_once_a_url_failed_that_many_runs_in_a_row(notify_server, target, receiver):
    path = hook("consecutive")
    flaky = target.url(f"/changes/{uuid.uuid4().hex}?answers=500,500,200")
    options = {"consecutive_failures": 2, "webhook": {"url": receiver.url(path), "secret": SECRET}}
    once = notify_server.wait(notify_server.submit([flaky, target.url("/ok")], **options)["id"])
    twice = rerun(notify_server, once["id"])
    fixed = rerun(notify_server, twice["id"])

    assert settled(notify_server, once["id"])[0]["status"] == "skipped"
    assert settled(notify_server, fixed["id"])[0]["status"] == "skipped"
    [request] = receiver.received(path)
    payload = verified(request, SECRET)
    assert payload["batch_id"] == twice["id"]
    assert payload["consecutive_failures"] == {"runs": 2, "urls": 1}


def test_a_slack_target_gets_a_short_text_with_the_counts_the_verdict_and_the_link(notify_server, target, receiver):
    path = hook("slack")
    batch = notify_server.submit(
        [target.url("/ok"), target.url("/status/500")], notify=[{"type": "slack", "url": receiver.url(path)}]
    )
    notify_server.wait(batch["id"])

    [request] = receiver.received(path)
    assert "X-Greenbatch-Signature" not in request["headers"]
    text = json.loads(request["body"])["text"]
    assert "verdict FAILED" in text and "1 ok, 0 warn, 1 failed, 0 cancelled" in text
    assert f"<{notify_server.url('/batches/' + batch['id'])}|open the batch>" in text


def test_the_batch_page_shows_each_notification_delivered_or_failing_with_its_error(
    notify_server, target, receiver, page, phone
):
    good, bad = hook("page-ok"), hook("page-failing")
    receiver.answers[bad] = [500, 500, 500]
    notify = [
        {"type": "webhook", "url": receiver.url(bad), "secret": SECRET},
        {"type": "slack", "url": receiver.url(good)},
    ]
    batch = notify_server.submit([target.url("/ok")], notify=notify)
    notify_server.wait(batch["id"])
    settled(notify_server, batch["id"])

    for tab, width in ((page, 1280), (phone, 390)):
        tab.goto(notify_server.url(f"/batches/{batch['id']}"))
        line = tab.locator("#batch-notify")
        line.filter(has_text="delivered").wait_for()
        text = line.inner_text()
        assert f"failing: webhook {receiver.url('/...' + bad[-4:])} after 3 tries: the receiver answered 500" in text
        assert f"delivered to slack http://127.0.0.1:{receiver.port}/..." in text
        assert SECRET not in tab.content()
        assert tab.evaluate("document.documentElement.scrollWidth") <= width
        ARTIFACTS.mkdir(exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / f"batch-notifications-{width}.png"))


def test_metrics_count_the_deliveries_by_status(notify_server, target, receiver):
    path = hook("metrics")
    receiver.answers[path] = [500, 500, 500]
    batch = notify_server.submit([target.url("/ok")], webhook={"url": receiver.url(path), "secret": SECRET})
    notify_server.wait(batch["id"])
    settled(notify_server, batch["id"])

    metrics = notify_server.request("GET", "/metrics").text
    counts = dict(re.findall(r'^greenbatch_notifications\{status="(\w+)"\} (\S+)$', metrics, re.M))
    assert set(counts) == {"pending", "sent", "failed", "skipped"}
    assert float(counts["failed"]) >= 1


def test_a_watch_lists_run_now_links_its_notification_to_the_batch_page_as_a_rerun_does(
    notify_server, target, receiver
):
    path = hook("run-now")
    hooked = {"type": "webhook", "url": receiver.url(path), "secret": SECRET}
    body = {"name": "linked", "urls": [target.url("/ok")], "schedule": {"every": "1d"}, "notify": [hooked]}
    created = notify_server.request("POST", "/api/v1/lists", json=body)
    assert created.status_code == 201, created.text
    try:
        started = notify_server.request("POST", f"/api/v1/lists/{created.json()['id']}/run")
        assert started.status_code == 201, started.text
        batch = notify_server.wait(started.json()["id"])
        [request] = receiver.received(path)
        assert verified(request, SECRET)["dashboard_url"] == notify_server.url(f"/batches/{batch['id']}")
    finally:
        notify_server.request("DELETE", f"/api/v1/lists/{created.json()['id']}")


# -- a killed server ----------------------------------------------------------------------------


def test_a_server_killed_before_its_delivery_went_out_sends_it_after_restart(make_server, target, tmp_path):
    receiver = Receiver()
    try:
        env = {"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{target.port},127.0.0.1:{receiver.port}"}
        server = make_server(env, data_dir=tmp_path / "killed")
        receiver.answers["/hook"] = [HANG]  # the first try is held, unanswered, while the server is killed
        batch = server.submit([target.url("/ok")], webhook={"url": receiver.url(), "secret": SECRET})
        receiver.received("/hook")
        assert server.batch(batch["id"])["status"] == "done"
        server.signal(signal.SIGKILL)
        server.kill()
        receiver.release()

        restarted = make_server(env, data_dir=tmp_path / "killed")
        second = receiver.received("/hook", 2)[1]
        assert verified(second, SECRET)["batch_id"] == batch["id"]
        [delivery] = settled(restarted, batch["id"])
        assert (delivery["status"], delivery["last_status_code"]) == ("sent", 200)
    finally:
        receiver.stop()


# -- the outbox in each store ------------------------------------------------------------------------


def finished(store, batch_id: str, options: dict[str, Any], status: str = "done") -> None:
    """Store a batch with these options and its final event, committed."""
    store.create_batch(batch_id, batch_id, options, ["http://a.test/"], "2026-12-06T00:00:00.000Z")
    final = {"status": status, "finished_at": "2026-12-06T00:00:01.000Z", "counts": {"ok": 1}, "stats": {}}
    store.extend([Event(batch_id, 1, "batch", final)])
    assert store.flush(10)


def test_a_batch_ends_with_one_pending_delivery_per_target_written_with_its_final_event(store_factory):
    store = store_factory(flush_interval=0.01)
    notify = [
        {"type": "webhook", "url": "http://a.test/h", "secret": SECRET},
        {"type": "slack", "url": "http://b.test/"},
    ]
    finished(store, "told", {"notify": notify})
    finished(store, "quiet", {})
    store.extend([Event("told", 2, "batch", {"status": "done", "counts": {"ok": 1}})])  # a final event again
    assert store.flush(10)

    assert [(d.target, d.kind, d.url, d.state) for d in store.deliveries("told")] == [
        (0, "webhook", "http://a.test/h", "pending"),
        (1, "slack", "http://b.test/", "pending"),
    ]
    assert store.deliveries("quiet") == []
    assert store.count_deliveries() == {"pending": 2}
    assert store.delete_batch("told") and store.deliveries("told") == []


def test_a_claimed_delivery_is_not_claimed_again_until_its_lease_ends_or_it_is_released(store_factory):
    store = store_factory(flush_interval=0.01)
    finished(store, "b", {"notify": [{"type": "slack", "url": "http://a.test/"}]})

    [claimed] = store.claim_deliveries(60, 10)  # by the store's clock (PostgreSQL's own)
    now = time.time()  # read after it: the lease ends by now + 60 however long the claim took
    assert store.claim_deliveries(60, 10, now) == []
    [again] = store.claim_deliveries(60, 10, now + 61)
    assert again.id == claimed.id and again.claim_token != claimed.claim_token
    assert store.release_deliveries() == 1
    [claimed] = store.claim_deliveries(60, 10, now)
    assert store.record_delivery(claimed, "pending", [{"status_code": 500}], now + 5, {"event": "batch.finished"})
    assert store.claim_deliveries(60, 10, now) == []  # due in 5 s
    [again] = store.claim_deliveries(60, 10, now + 5)
    assert (again.attempts, again.payload) == (1, {"event": "batch.finished"})


def test_a_sender_whose_lease_ended_writes_nothing_over_the_sender_that_claimed_it_next(store_factory):
    store = store_factory(flush_interval=0.01)
    finished(store, "b", {"notify": [{"type": "slack", "url": "http://a.test/"}]})
    now = time.time()
    [late] = store.claim_deliveries(60, 10, now)
    [holder] = store.claim_deliveries(60, 10, now + 61)

    assert store.record_delivery(holder, "sent", [{"status_code": 200}], now + 61)
    assert not store.record_delivery(late, "pending", [{"status_code": 200}, {"status_code": 500}], now + 70)
    [row] = store.deliveries("b")
    assert (row.state, row.attempts) == ("sent", 1)
    assert not store.record_delivery(holder, "failed", [], now + 80), "a claim is written once"


def test_a_lists_deliveries_are_found_by_its_list_id(store_factory):
    store = store_factory(flush_interval=0.01)
    finished(store, "run1", {"notify": [{"type": "slack", "url": "http://a.test/"}]})
    finished(store, "run2", {"notify": [{"type": "slack", "url": "http://a.test/"}]})
    finished(store, "other", {"notify": [{"type": "slack", "url": "http://a.test/"}]})
    # batches.list_id, the watch lists' column: set as the scheduler's submit would have.
    store._transaction(lambda conn: conn.execute("UPDATE batches SET list_id = 'L' WHERE id LIKE 'run%'"))

    assert [d.batch_id for d in store.list_deliveries("L")] == ["run2", "run1"]


def test_the_newest_delivery_of_each_of_many_lists_is_read_in_one_query(store_factory):
    store = store_factory(flush_interval=0.01)
    two = [{"type": "slack", "url": "http://a.test/"}, {"type": "webhook", "url": "http://b.test/", "secret": SECRET}]
    finished(store, "a1", {"notify": two})
    finished(store, "a2", {"notify": two})
    finished(store, "b1", {"notify": two[:1]})
    finished(store, "quiet", {})
    finished(store, "alone", {"notify": two[:1]})
    store._transaction(lambda conn: conn.execute("UPDATE batches SET list_id = substr(id, 1, 1) WHERE id <> 'alone'"))

    found = store.last_list_deliveries(["a", "b", "q", "none"])
    assert {list_id: (d.batch_id, d.target) for list_id, d in found.items()} == {"a": ("a2", 1), "b": ("b1", 0)}
    assert found["a"] == store.list_deliveries("a", 1)[0], "the same delivery list_deliveries shows first"
    assert store.last_list_deliveries([]) == {}


# -- the sender in this process ----------------------------------------------------------------------


class CountingNotifier(Notifier):
    """The sender, counting how often it prepares a batch's payload."""

    prepared = 0

    def prepare(self, record):
        """Notifier.prepare, counted."""
        self.prepared += 1
        return super().prepare(record)


class BrokenNotifier(Notifier):
    """A sender whose preparing fails the way a bug or a lost database would."""

    def prepare(self, record):
        """Fails."""
        raise RuntimeError("the diff's rows cannot be read")


def sender(kind: type[Notifier], store) -> Notifier:
    """A sender of this kind on the store, retrying at once, allowed to reach no address."""
    return kind(Config(notify_retry_delay=0.01), store, guard.Policy.from_settings(False, "", ""))


def test_a_batchs_payload_and_decision_are_made_once_for_all_its_targets(store_factory):
    store = store_factory(flush_interval=0.01)
    notify = [{"type": "slack", "url": f"http://a.test/{i}"} for i in range(10)]
    finished(store, "b", {"notify": notify, "notify_on": "failure"})  # it passes: every target is skipped
    notifier = sender(CountingNotifier, store)

    assert notifier.send_due() == 10
    assert notifier.prepared == 1
    assert {d.state for d in store.deliveries("b")} == {"skipped"}


def test_an_error_while_sending_is_logged_and_counted_as_a_try_until_the_delivery_fails(store_factory, caplog):
    store = store_factory(flush_interval=0.01)
    finished(store, "b", {"notify": [{"type": "slack", "url": "http://a.test/"}]})
    notifier = sender(BrokenNotifier, store)

    for _ in range(TRIES):
        [delivery] = store.deliveries("b")
        time.sleep(max(0.0, delivery.due - time.time()))
        assert notifier.send_due() == 1

    [delivery] = store.deliveries("b")
    assert (delivery.state, delivery.attempts) == ("failed", TRIES)
    assert delivery.tries[-1]["error"] == "the sender failed: RuntimeError: the diff's rows cannot be read"
    assert "batch b: notification %d failed in the sender" % delivery.id in caplog.text
    assert notifier.send_due() == 0


def test_a_slack_text_shows_a_name_that_looks_like_a_mention_or_a_link_as_text():
    payload = {"batch_id": "b", "name": "<!channel> & <https://x.test|log in>", "status": "done", "counts": {}}
    text = slack_text(payload | {"dashboard_url": "http://gb.test/batches/b"})
    assert text.startswith("greenbatch: batch &lt;!channel&gt; &amp; &lt;https://x.test|log in&gt; done")
    assert "<http://gb.test/batches/b|open the batch>" in text


# -- checking targets when they are saved ---------------------------------------------------------------


def slow_resolver(seconds: float):
    """A getaddrinfo that answers a public address after `seconds`, letting other greenlets run meanwhile."""

    def getaddrinfo(host, port, type=0):
        gevent.sleep(seconds)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    return getaddrinfo


def no_such_name(host, port, type=0):
    """A getaddrinfo that knows no name, in the resolver's words."""
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def test_a_saves_targets_are_resolved_at_once_within_one_bound():
    policy = guard.Policy.from_settings(False, "", "")
    urls = [f"https://hooks{i}.test/x" for i in range(10)]
    started = time.monotonic()
    judged = target_refusals(urls, policy, 2000, getaddrinfo=slow_resolver(0.3))
    assert [refusal for _, refusal in judged] == [None] * 10
    assert time.monotonic() - started < 1.5, "ten lookups of 0.3 s took as long as one after another"

    started = time.monotonic()
    [(checked, refusal)] = target_refusals(urls[:1], policy, 2000, limit=0.2, getaddrinfo=slow_resolver(5))
    assert checked is None and refusal == "hooks0.test could not be checked within 0.2 s; try again"
    assert time.monotonic() - started < 1


def test_a_target_that_does_not_resolve_is_refused_in_the_resolvers_words_only_where_refusals_are_explained():
    policy = guard.Policy.from_settings(False, "", "")
    [(_, quiet)] = target_refusals(["https://internal.test/h"], policy, 2000, False, getaddrinfo=no_such_name)
    [(_, explained)] = target_refusals(["https://internal.test/h"], policy, 2000, True, getaddrinfo=no_such_name)
    assert quiet == "could not resolve internal.test"
    assert explained == "could not resolve internal.test: [Errno -2] Name or service not known"


# -- sending ---------------------------------------------------------------------------------------


def test_a_send_goes_through_the_guard_again_and_a_denied_receiver_never_gets_a_packet(unreachable):
    policy = guard.Policy.from_settings(False, "", "")  # loopback is not allowed: the receiver's port is denied
    with pytest.raises(guard.Blocked):
        post(unreachable.url(), b"{}", {"Content-Type": "application/json"}, policy, 1.0)
    assert unreachable.connections == 0


def test_the_signature_is_hmac_sha256_of_the_timestamp_a_dot_and_the_raw_body():
    expected = hmac.new(b"secret-key", b"1796563200." + b'{"a":1}', hashlib.sha256).hexdigest()
    assert signature("secret-key", "1796563200", b'{"a":1}') == f"sha256={expected}"


# -- the README's receiver ---------------------------------------------------------------------------


def readme_receiver():
    """verified(body, headers, secret) as the README's Notifications section gives it, run as written."""
    section = (ROOT / "README.md").read_text().split("### Notifications", 1)[1]
    [snippet] = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    scope: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    return scope["verified"]


def test_the_readmes_receiver_accepts_a_real_delivery_and_refuses_junk_without_raising(notify_server, target, receiver):
    verified_by_readme = readme_receiver()
    path = hook("readme")
    batch = notify_server.submit([target.url("/ok")], webhook={"url": receiver.url(path), "secret": SECRET})
    notify_server.wait(batch["id"])
    [request] = receiver.received(path)
    body, headers = request["body"], request["headers"]
    assert verified_by_readme(body, headers, SECRET)

    old = str(int(time.time()) - 301)
    replayed = {**headers, "X-Greenbatch-Timestamp": old, "X-Greenbatch-Signature": signature(SECRET, old, body)}
    junk = [
        (body, headers, "another-secret"),
        (body + b" ", headers, SECRET),
        (body, replayed, SECRET),
        (body, {}, SECRET),
        (body, {**headers, "X-Greenbatch-Signature": "sha256=\u00e9t\u00e9"}, SECRET),
        (body, {**headers, "X-Greenbatch-Timestamp": "soon"}, SECRET),
        (body, {**headers, "X-Greenbatch-Timestamp": "\ud800"}, SECRET),
        (body, {"X-Greenbatch-Timestamp": headers["X-Greenbatch-Timestamp"]}, SECRET),
    ]
    for junk_body, junk_headers, secret in junk:
        assert verified_by_readme(junk_body, junk_headers, secret) is False


def test_a_sqlite_outbox_from_before_claim_tokens_gets_the_column_and_its_pending_deliveries_go_out(tmp_path):
    import sqlite3

    from app.runs.store import SQLiteStore
    from app.runs.store.schema import SCHEMA

    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    before = re.sub(r"\n    claim_token TEXT,[^\n]*", "", SCHEMA)
    assert "claim_token" not in before
    old.executescript(before)
    old.execute(
        "INSERT INTO deliveries (batch_id, target, kind, url, state, created_at, updated_at, due, claimed_until)"
        " VALUES ('b', 0, 'slack', 'http://a.test/', 'pending', '', '', 0, 1)"
    )
    old.commit()
    old.close()
    store = SQLiteStore(path)
    try:
        assert store.release_deliveries() == 1
        [claimed] = store.claim_deliveries(60, 10)
        assert claimed.claim_token and store.record_delivery(claimed, "sent", [{"status_code": 200}], 0)
    finally:
        store.close()
