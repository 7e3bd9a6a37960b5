"""Watch lists: a list of URLs run as a new batch on a schedule, each run compared with the one before it; its
runs never overlap, a slot missed while the server was down runs once, and only keep_runs runs are kept."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import gevent
import pytest

from app.core.clock import now_iso
from app.core.config import Config
from app.core.options import ValidationError
from app.core.results import FINAL_STATUSES
from app.fetch import guard
from app.fetch.sources import READ_SLOTS
from app.runs import schedule
from app.runs.diff import KINDS
from app.runs.events import Event
from app.runs.schedule import Schedule, Scheduler
from app.runs.store import SQLiteStore, StoreError
from app.runs.store.base import ListRecord
from app.runs.store.schema import SCHEMA, migrate
from tests.support.planted import planted_urls, untimed
from tests.support.receiver import verified
from tests.support.server import GreenbatchServer, error_of

FAST = {"GREENBATCH_MIN_SCHEDULE_INTERVAL": "1", "GREENBATCH_MAX_KEEP_RUNS": "5"}
SECRET = "s3cret-of-the-watch-list-42"


@pytest.fixture(scope="module")
def server(tmp_path_factory, target, receiver):
    """One server for the module, whose lists may run every second, allowed to reach the target and the receiver."""
    env = {"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{target.port},127.0.0.1:{receiver.port}", **FAST}
    instance = GreenbatchServer(tmp_path_factory.mktemp("lists"), env).start()
    yield instance
    instance.stop()


def create(server, **body) -> dict:
    """POST a list (every hour unless told), asserting 201."""
    body.setdefault("schedule", {"every": "1h"})
    response = server.request("POST", "/api/v1/lists", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def run_now(server, list_id: str) -> dict:
    """Run a list now and wait for the run to end."""
    response = server.request("POST", f"/api/v1/lists/{list_id}/run")
    assert response.status_code == 201, response.text
    return server.wait(response.json()["id"])


def runs_of(server, list_id: str) -> dict:
    """GET a list's runs, newest first."""
    response = server.request("GET", f"/api/v1/lists/{list_id}/runs")
    assert response.status_code == 200, response.text
    return response.json()


def names(runs: dict) -> list[str]:
    """The run numbers (#1, #2...) of a list's runs, newest first."""
    return [run["name"][-2:] for run in runs["runs"]]


def listed(list_id: str = "l1", urls=("http://a.test/",), next_run_at: float | None = 100.0, **fields) -> ListRecord:
    """A list as the store keeps it, every minute, its slot at `next_run_at`."""
    return ListRecord(
        list_id, "l", list(urls), {}, {"every": "1m"}, [], None, None, fields.pop("keep_runs", 30), False,
        "2026-12-06T00:00:00.000Z", next_run_at, None, 0, 0, None, **fields,
    )  # fmt: skip


def ended(store, batch_id: str) -> None:
    """Store a batch's final event, committed."""
    final = {"status": "done", "finished_at": "2026-12-06T00:00:01.000Z", "counts": {"ok": 1}, "stats": {}}
    store.extend([Event(batch_id, 1, "batch", final)])
    assert store.flush(10)


class Submitter:
    """The part of an engine a scheduler uses: submit stores the batch, or fails as a store does; none is live."""

    def __init__(self, store, fails: Exception | None = None):
        self.store, self.fails, self.submitted = store, fails, []

    def submit(self, urls, options, name="", parent_id=None, source=None, list_id=None, batch_id=None):
        """Store the batch (never run), as the engine's submit does first."""
        if self.fails is not None:
            raise self.fails
        self.store.create_batch(
            batch_id, name, options.to_dict(), list(urls), now_iso(), parent_id, list_id=list_id,
            row_specs=options.row_specs(),
        )  # fmt: skip
        assert self.store.flush(10)
        self.submitted.append(batch_id)
        return batch_id

    def is_live(self, batch_id: str) -> bool:
        """No batch runs here."""
        return False


def epoch(text: str) -> float:
    """An API time (2026-12-06T12:00:00.000Z) as epoch seconds."""
    return dt.datetime.fromisoformat(text).timestamp()


def wait_until(check, timeout: float, what: str):
    """check() once it is truthy, polling every 50 ms."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.05)


# -- runs and their diffs ----------------------------------------------------------------------


def test_two_runs_of_a_list_give_the_exact_planted_diff(server, target):
    kept, gone, new = planted_urls(target)
    watched = create(server, name="shop", urls=[gone, *kept], options={"concurrency": 4})
    first = run_now(server, watched["id"])
    response = server.request("PATCH", f"/api/v1/lists/{watched['id']}", json={"urls": [*kept, new]})
    assert response.status_code == 200, response.text
    second = run_now(server, watched["id"])

    assert (first["name"], second["name"]) == ("shop #1", "shop #2")
    assert second["parent_id"] == first["id"], "each run's diff base is the list's previous run"
    assert first["list_id"] == second["list_id"] == watched["id"]
    runs = runs_of(server, watched["id"])["runs"]
    assert [run["id"] for run in runs] == [second["id"], first["id"]], "newest first"
    assert set(runs[0]["diff_summary"]) == {*KINDS, "pending"}
    assert untimed(runs[0]["diff_summary"]) == {
        "newly_failed": 3,
        "fixed": 2,
        "final_url_changed": 4,
        "added": 1,
        "removed": 1,
        "unchanged": 2,
    }
    assert runs[1]["diff_summary"] is None, "the first run has no run before it"
    assert runs[0]["verdict"]["pass"] is False and runs[0]["counts"]["failed"] == 3
    diff = server.request("GET", f"/api/v1/batches/{second['id']}/diff").json()
    assert diff["base"] == first["id"] and diff["summary"] == runs[0]["diff_summary"]


def test_a_list_keeps_only_its_last_keep_runs_runs(server, target):
    watched = create(server, urls=[target.url("/ok")], keep_runs=2)
    ids = [run_now(server, watched["id"])["id"] for _ in range(3)]
    assert [run["id"] for run in runs_of(server, watched["id"])["runs"]] == ids[:0:-1]
    assert server.request("GET", f"/api/v1/batches/{ids[0]}").status_code == 404, "the oldest run is deleted"


def test_lowering_keep_runs_deletes_the_runs_beyond_it_at_once(server, target):
    watched = create(server, urls=[target.url("/ok")], keep_runs=4)
    ids = [run_now(server, watched["id"])["id"] for _ in range(3)]
    changed = server.request("PATCH", f"/api/v1/lists/{watched['id']}", json={"keep_runs": 2})
    assert changed.status_code == 200, changed.text
    assert [run["id"] for run in runs_of(server, watched["id"])["runs"]] == ids[:0:-1]
    assert server.request("GET", f"/api/v1/batches/{ids[0]}").status_code == 404


def test_a_lists_runs_give_no_diff_for_a_run_still_going_and_at_most_50_at_once(server, target):
    watched = create(server, urls=[target.url("/ok")])
    first = run_now(server, watched["id"])
    server.request("PATCH", f"/api/v1/lists/{watched['id']}", json={"urls": [target.url("/delay/1500")]})
    started = server.request("POST", f"/api/v1/lists/{watched['id']}/run").json()
    going, before = runs_of(server, watched["id"])["runs"]
    assert (going["id"], going["parent_id"], before["id"]) == (started["id"], first["id"], first["id"])
    assert going["status"] not in ("done", "cancelled", "failed") and going["diff_summary"] is None
    server.wait(started["id"])
    assert runs_of(server, watched["id"])["runs"][0]["diff_summary"]["added"] == 1, "compared once it ended"
    refused = server.request("GET", f"/api/v1/lists/{watched['id']}/runs?limit=51")
    assert refused.status_code == 400 and error_of(refused)["details"][0]["field"] == "limit"


def test_a_due_run_while_the_previous_one_is_going_is_skipped_and_recorded(server, target):
    watched = create(server, urls=[target.url("/delay/2500")], schedule={"every": "1s"})
    runs = wait_until(lambda: runs_of(server, watched["id"])["runs"], 3, "a first scheduled run")
    skipped = wait_until(lambda: runs_of(server, watched["id"])["skipped"]["count"], 3, "a skipped run")
    assert skipped >= 1
    assert [run["id"] for run in runs_of(server, watched["id"])["runs"]] == [runs[0]["id"]], "no second run"
    refused = server.request("POST", f"/api/v1/lists/{watched['id']}/run")
    assert refused.status_code == 409 and error_of(refused)["code"] == "still_running"
    shown = server.request("GET", f"/api/v1/lists/{watched['id']}").json()
    assert shown["skipped"]["count"] >= 1 and shown["skipped"]["last_at"].endswith("Z")
    assert server.request("DELETE", f"/api/v1/lists/{watched['id']}").status_code == 204


def test_a_lists_runs_notify_signed_with_its_list_id_and_change_sends_nothing_for_an_identical_run(
    server, target, receiver
):
    path = f"/hook/{uuid.uuid4().hex[:8]}"
    hook = {"type": "webhook", "url": receiver.url(path), "secret": SECRET}
    watched = create(server, urls=[target.url("/ok")], notify=[hook], notify_on="change")
    first, second = run_now(server, watched["id"]), run_now(server, watched["id"])
    [request] = receiver.received(path)
    payload = verified(request, SECRET)
    assert (payload["batch_id"], payload["list_id"]) == (first["id"], watched["id"]), "a first run is a change"

    def settled():
        found = server.request("GET", f"/api/v1/lists/{watched['id']}/deliveries").json()["deliveries"]
        return found if len(found) == 2 and all(d["status"] != "pending" for d in found) else None

    deliveries = wait_until(settled, 10, "both runs' deliveries settled")
    assert [(d["batch_id"], d["status"]) for d in deliveries] == [(second["id"], "skipped"), (first["id"], "sent")]
    assert deliveries[0]["note"] == "notify_on is change, and nothing changed since the previous run"
    assert len(receiver.received(path)) == 1, "the identical run sent nothing"
    listed = {one["id"]: one for one in server.request("GET", "/api/v1/lists").json()["lists"]}
    assert listed[watched["id"]]["last_delivery"]["status"] == "skipped"


# -- lists of a source: a sitemap read again at each run -----------------------------------------


def test_a_list_of_a_sitemap_reads_it_at_each_run_and_the_diff_shows_the_urls_added_and_removed(server, target):
    tag = uuid.uuid4().hex[:8]
    # The sitemap lists pages 0-2 at run 1, pages 1-4 at run 2, and answers 500 at run 3.
    sitemap = target.url(f"/sitemap/turns/{tag}.xml?turns=0:1:2,1:2:3:4,s500")
    watched = create(server, source={"type": "sitemap", "url": sitemap})
    assert watched["source"] == {"type": "sitemap", "url": sitemap, "include": None, "exclude": None, "max_urls": None}
    assert (watched["urls"], watched["url_count"], watched["name"]) == ([], None, f"sitemap {sitemap}")
    assert target.hits().get(f"/sitemap/turns/{tag}.xml") is None, "saving a list reads nothing: each run does"

    first, second = run_now(server, watched["id"]), run_now(server, watched["id"])
    assert first["counts"]["total"] == 3 and second["counts"]["total"] == 4
    assert second["source"] == watched["source"] and second["parent_id"] == first["id"]
    summary = runs_of(server, watched["id"])["runs"][0]["diff_summary"]
    assert untimed(summary) == {"added": 2, "removed": 1, "unchanged": 2}
    diff = server.request("GET", f"/api/v1/batches/{second['id']}/diff", params={"kind": "added,removed"}).json()
    assert sorted((change["kind"], change["key"]) for change in diff["changes"]) == [
        ("added", target.url(f"/page/{tag}/3")),
        ("added", target.url(f"/page/{tag}/4")),
        ("removed", target.url(f"/page/{tag}/0")),
    ]

    refused = server.request("POST", f"/api/v1/lists/{watched['id']}/run")
    assert refused.status_code == 409 and error_of(refused)["code"] == "source_unreadable"
    assert "answered 500, not 200" in error_of(refused)["message"]
    after = runs_of(server, watched["id"])
    assert [run["id"] for run in after["runs"]] == [second["id"], first["id"]], "a source that fails starts no run"
    assert after["skipped"]["count"] == 1
    assert (
        after["skipped"]["last_reason"] == f"its source could not be read: the sitemap {sitemap} answered 500, not 200"
    )


def test_a_scheduled_run_whose_source_cannot_be_read_is_skipped_with_its_reason_and_the_next_one_runs(server, target):
    tag = uuid.uuid4().hex[:8]
    sitemap = target.url(f"/sitemap/turns/{tag}.xml?turns=s404,0:1")
    watched = create(server, source={"type": "sitemap", "url": sitemap}, schedule={"every": "1s"})
    runs = wait_until(lambda: runs_of(server, watched["id"])["runs"], 4, "the run after the skipped one")
    shown = server.request("GET", f"/api/v1/lists/{watched['id']}").json()
    assert shown["skipped"]["count"] == 1 and "answered 404, not 200" in shown["skipped"]["last_reason"]
    assert runs[0]["name"].endswith("#1") and runs[0]["counts"]["total"] == 2, "a skipped run takes no number"
    assert server.request("DELETE", f"/api/v1/lists/{watched['id']}").status_code == 204


def test_a_source_slow_to_read_does_not_hold_back_the_other_lists_runs(server, target):
    slow = create(server, source={"type": "sitemap", "url": target.url("/delay/3000")}, schedule={"every": "1s"})
    quick = create(server, urls=[target.url("/ok")], schedule={"every": "1s"})
    # That it starts before the read ends, whatever the machine's load, is shown with 30 s reads by
    # test_a_plain_lists_run_starts_at_once_while_more_sources_than_the_scheduler_reads_at_once_are_slow.
    wait_until(lambda: runs_of(server, quick["id"])["runs"], 3, "the quick list's first run")
    skipped = wait_until(
        lambda: (shown := server.request("GET", f"/api/v1/lists/{slow['id']}").json()["skipped"])["count"] and shown,
        3,
        "the slow list's next slot skipped",
    )
    assert skipped["last_reason"] == "its previous run was still starting (reading its source)", "no queue of slots"
    for watched in (slow, quick):
        assert server.request("DELETE", f"/api/v1/lists/{watched['id']}").status_code == 204


def test_a_plain_lists_run_starts_at_once_while_more_sources_than_the_scheduler_reads_at_once_are_slow(
    make_server, target
):
    server = make_server(env=FAST)  # its own: the slow reads would hold the module server's read slots long after
    # One list more than the scheduler reads sources for at once (schedule.SOURCE_READS), each read taking 30 s,
    # within GREENBATCH_SOURCE_TIMEOUT (60 s); the plain list comes due last of all. A scheduler that waited for
    # a read to end would start it 30 s late, far past the bound below, however loaded the machine.
    slow = [
        create(server, source={"type": "sitemap", "url": target.url("/delay/30000")}, schedule={"every": "1s"})
        for _ in range(schedule.SOURCE_READS + 1)
    ]
    quick = create(server, urls=[target.url("/ok")], schedule={"every": "1s"})
    assert all(watched["next_run_at"] <= quick["next_run_at"] for watched in slow)
    wait_until(lambda: runs_of(server, quick["id"])["runs"], 10, "the plain list's first run, before any source read")


def test_a_scheduled_run_waits_for_a_source_read_slot_rather_than_being_skipped(make_server, target):
    server = make_server(env=FAST)  # its own: no other list's source may hold a read slot
    slow = target.url("/trickle?bytes=20&interval=0.1")  # 2 s to read, then not a sitemap
    source = {"type": "sitemap", "url": slow}
    started = target.hits().get("/trickle", 0)
    with ThreadPoolExecutor(2) as pool:  # both of the server's read slots (GREENBATCH_SOURCE_MAX_READS 2)
        reading = [
            pool.submit(server.request, "POST", "/api/v1/sources/preview", json={"source": source}) for _ in "ab"
        ]
        wait_until(lambda: target.hits().get("/trickle", 0) >= started + 2, 5, "two sources being read")
        watched = create(
            server, source={"type": "sitemap", "url": target.url("/sitemap/urls.xml?n=2")}, schedule={"every": "1s"}
        )
        assert [r.result().status_code for r in reading] == [400, 400]
        ended = time.time()
    runs = wait_until(lambda: runs_of(server, watched["id"])["runs"], 5, "the list's first run")
    assert runs[-1]["counts"]["total"] == 2
    assert epoch(runs[-1]["created_at"]) > ended - 0.2, "it ran once a slot came free"
    # Its next slot, due while it waited, may be skipped as still starting; never for want of a read slot.
    skipped = server.request("GET", f"/api/v1/lists/{watched['id']}").json()["skipped"]
    assert "GREENBATCH_SOURCE_MAX_READS" not in (skipped["last_reason"] or "")
    assert server.request("DELETE", f"/api/v1/lists/{watched['id']}").status_code == 204


def test_a_run_now_while_the_lists_source_is_being_read_is_refused_at_once_as_starting(server, target):
    slow = create(server, source={"type": "sitemap", "url": target.url("/delay/1600")})
    before = target.hits().get("/delay/1600", 0)
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(server.request, "POST", f"/api/v1/lists/{slow['id']}/run")
        wait_until(lambda: target.hits().get("/delay/1600", 0) > before, 5, "the first run now reading the source")
        asked = time.monotonic()
        refused = server.request("POST", f"/api/v1/lists/{slow['id']}/run")
        waited = time.monotonic() - asked
        assert refused.status_code == 409 and error_of(refused)["code"] == "still_running"
        assert error_of(refused)["message"].endswith("its previous run is still starting (reading its source)")
        assert waited < 1, f"answered after {waited:.1f} s: it waited for the source"
        assert reading.result().status_code == 409  # /delay is no sitemap


def test_a_list_saved_from_a_batch_of_a_sitemap_keeps_its_source(server, target):
    source = {"type": "sitemap", "url": target.url("/sitemap/urls.xml?n=3"), "include": "/page/[12]$"}
    response = server.request("POST", "/api/v1/batches", json={"source": source})
    assert response.status_code == 201, response.text
    batch = server.wait(response.json()["id"])
    watched = create(server, from_batch=batch["id"])
    assert watched["source"] == batch["source"] and watched["urls"] == []
    assert run_now(server, watched["id"])["counts"]["total"] == 2, "the run reads the source, include and all"
    changed = server.request("PATCH", f"/api/v1/lists/{watched['id']}", json={"urls": [target.url("/ok")]}).json()
    assert (changed["source"], changed["url_count"]) == (None, 1), "a list watches URLs or a source, never both"


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"type": "sitemap", "url": "http://169.254.169.254/sitemap.xml"}, "source.url"),
        ({"type": "feed", "url": "http://a.test/"}, "source.type"),
        ({"type": "sitemap", "url": "http://a.test/", "include": "(?=x)"}, "source.include"),
    ],
)
def test_a_list_of_a_source_the_server_would_not_read_answers_400_naming_the_field(server, source, field):
    response = server.request("POST", "/api/v1/lists", json={"source": source, "schedule": {"every": "1h"}})
    assert response.status_code == 400, response.text
    assert error_of(response)["details"][0]["field"] == field


# -- the API -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"schedule": {"every": "0s"}}, "schedule.every"),
        ({"schedule": {"every": "6 weeks"}}, "schedule.every"),
        ({"schedule": {"every": "6h", "cron": "* * * * *"}}, "schedule"),
        ({"schedule": {"cron": "61 * * * *"}}, "schedule.cron"),
        ({"schedule": {"cron": "not cron"}}, "schedule.cron"),
        ({"keep_runs": 1}, "keep_runs"),
        ({"keep_runs": 6}, "keep_runs"),
        ({"keep_runs": "3"}, "keep_runs"),
        ({"consecutive_failures": 3, "keep_runs": 2}, "consecutive_failures"),
        ({"consecutive_failures": 6}, "consecutive_failures"),
        ({"schedule": {"cron": "0 0 3 * * *"}}, "schedule.cron"),
        ({"schedule": {"cron": "@daily"}}, "schedule.cron"),
        ({"options": {"concurrency": 10**9}}, "options.concurrency"),
        ({"notify_on": "sometimes"}, "notify_on"),
        (
            {"notify": [{"type": "webhook", "url": "http://169.254.169.254/hook", "secret": "0123456789"}]},
            "notify[0].url",
        ),
        ({"notify": [{"type": "webhook", "url": "http://a.test/", "secret": "...6789"}]}, "notify[0].secret"),
        ({"consecutive_failures": 0}, "consecutive_failures"),
        ({"options": {"notify_on": "change"}}, "options.notify_on"),
        ({"urls": []}, "urls"),
        ({"source": {"type": "sitemap", "url": "http://a.test/"}}, "source"),
        ({"urls": ["http://169.254.169.254/"]}, "urls[0]"),
        ({"colour": "green"}, "colour"),
    ],
)
def test_a_list_the_server_cannot_run_answers_400_naming_the_field(server, target, body, field):
    response = server.request(
        "POST", "/api/v1/lists", json={"urls": [target.url("/ok")], "schedule": {"every": "1h"}, **body}
    )
    assert response.status_code == 400, response.text
    assert error_of(response)["details"][0]["field"] == field


def test_consecutive_failures_beyond_keep_runs_is_refused_at_a_change_naming_both(server, target):
    watched = create(server, urls=[target.url("/ok")], consecutive_failures=4, keep_runs=5)
    for body in ({"keep_runs": 3}, {"consecutive_failures": 6}):
        refused = server.request("PATCH", f"/api/v1/lists/{watched['id']}", json=body)
        assert refused.status_code == 400, refused.text
        error = error_of(refused)
        assert [d["field"] for d in error["details"]] == ["consecutive_failures", "keep_runs"]
        assert "more than keep_runs" in error["message"]
    shown = server.request("GET", f"/api/v1/lists/{watched['id']}").json()
    assert (shown["consecutive_failures"], shown["keep_runs"]) == (4, 5), "nothing was changed"


def test_a_cron_expression_has_exactly_five_fields():
    for expression in ("0 0 3 * * *", "0 3 * *", "@hourly"):
        with pytest.raises(ValidationError, match="must have five fields"):
            Schedule.parse({"cron": expression}, 60)


def test_a_schedule_more_often_than_the_servers_minimum_is_refused():
    with pytest.raises(ValidationError, match=r"^schedule.every must be between 3600 s"):
        Schedule.parse({"every": "59m"}, 3600)
    with pytest.raises(ValidationError) as refused:
        Schedule.parse({"cron": "*/30 * * * *"}, 3600)
    assert refused.value.details == [
        {
            "field": "schedule.cron",
            "message": "runs 1800 s apart, more often than every 3600 s (GREENBATCH_MIN_SCHEDULE_INTERVAL)",
        }
    ]
    assert Schedule.parse({"every": "1h"}, 3600).every == 3600
    assert Schedule.parse({"cron": "0 3 * * *"}, 3600).cron == "0 3 * * *"


def test_missed_slots_collapse_into_the_next_one_to_come():
    every = Schedule.parse({"every": "5s"}, 1)
    assert every.following(100.0, 100.2) == 105.0
    assert every.following(100.0, 117.0) == 120.0, "slots 105, 110, 115 missed: the next is 120, in phase"
    daily = Schedule.parse({"cron": "0 3 * * *"}, 60)
    three = 1796612400.0  # 2026-12-07 03:00 UTC
    assert daily.following(three - 3 * 86400, three - 60) == three, "three days missed: the next slot to come"


def test_a_list_is_read_changed_paused_and_deleted(server, target):
    watched = create(
        server,
        name="docs",
        urls=[target.url("/ok")],
        notify=[{"type": "webhook", "url": target.url("/hook"), "secret": "s3cret-value-0123456789"}],
        notify_on="change",
    )
    assert watched["notify"][0]["secret"] == "...6789", "a secret is never shown back in full"
    run = run_now(server, watched["id"])
    assert run["options"]["notify_on"] == "change", "each run carries the list's notify fields"
    assert run["options"]["notify"][0]["secret"] == "...6789"
    assert watched["keep_runs"] == 5 and watched["url_count"] == 1 and watched["next_run_at"].endswith("Z")
    listed = server.request("GET", "/api/v1/lists").json()["lists"]
    assert watched["id"] in [one["id"] for one in listed]
    assert "s3cret" not in server.request("GET", "/api/v1/lists").text
    paused = server.request("PATCH", f"/api/v1/lists/{watched['id']}", json={"paused": True, "name": "docs 2"}).json()
    assert (paused["paused"], paused["next_run_at"], paused["name"]) == (True, None, "docs 2")
    resumed = server.request("PATCH", f"/api/v1/lists/{watched['id']}", json={"paused": False}).json()
    assert resumed["next_run_at"] is not None
    assert server.request("DELETE", f"/api/v1/lists/{watched['id']}").status_code == 204
    assert server.request("GET", f"/api/v1/lists/{watched['id']}").status_code == 404


def test_a_list_saved_from_a_batch_takes_its_urls_and_options(server, target):
    batch = server.wait(server.submit([target.url("/ok"), target.url("/status/404")], concurrency=3)["id"])
    watched = create(server, from_batch=batch["id"])
    assert watched["urls"] == [target.url("/ok"), target.url("/status/404")]
    assert watched["options"]["concurrency"] == 3 and watched["name"] == batch["name"]


def test_a_list_saved_from_a_batch_notifies_only_whom_the_list_names(server, target, receiver):
    hook = {"url": receiver.url(f"/hook/{uuid.uuid4().hex[:8]}"), "secret": SECRET}
    batch = server.wait(server.submit([target.url("/ok")], webhook=hook, notify_on="failure")["id"])
    watched = create(server, from_batch=batch["id"])
    assert (watched["notify"], watched["notify_on"]) == ([], None)
    assert not {"notify", "webhook", "notify_on", "origin"} & set(watched["options"]), "the batch's targets stay its"
    notifying = create(server, from_batch=batch["id"], notify=[{"type": "webhook", **hook}])
    changed = server.request("PATCH", f"/api/v1/lists/{notifying['id']}", json={"notify": []})
    assert changed.status_code == 200 and changed.json()["notify"] == []
    for list_id in (watched["id"], notifying["id"]):
        run = run_now(server, list_id)
        assert "notify" not in run["options"], "no run posts to a target its list does not name"
        assert server.request("GET", f"/api/v1/lists/{list_id}/deliveries").json()["deliveries"] == []


def test_a_list_saved_from_a_batch_keeps_each_urls_expectations_until_its_urls_change(server, target):
    urls = [{"url": target.url("/status/500"), "expect": {"status": 500}, "meta": {"sku": "A1"}}, target.url("/ok")]
    response = server.request("POST", "/api/v1/batches", json={"urls": urls})
    assert response.status_code == 201, response.text
    batch = server.wait(response.json()["id"])
    assert batch["counts"]["ok"] == 2
    watched = create(server, from_batch=batch["id"])
    run = run_now(server, watched["id"])
    assert (run["counts"]["ok"], run["verdict"]["pass"]) == (2, True), "the expected 500 passes in the list's run"
    [row] = server.request("GET", f"/api/v1/batches/{run['id']}/results?limit=1").json()["results"]
    assert row["meta"] == {"sku": "A1"}
    server.request("PATCH", f"/api/v1/lists/{watched['id']}", json={"urls": [target.url("/status/500")]})
    after = run_now(server, watched["id"])
    assert after["counts"]["failed"] == 1, "new URLs drop the old URLs' expectations"


def test_get_lists_pages_through_every_list_oldest_first(server, target):
    made = [create(server, name=f"paged {n}", urls=[target.url("/ok")])["id"] for n in range(3)]
    run = run_now(server, made[1])
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = server.request("GET", "/api/v1/lists", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["lists"]) <= 2
        seen += body["lists"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 100
    ids = [one["id"] for one in seen]
    assert len(ids) == len(set(ids)), "no list twice"
    assert [one for one in ids if one in made] == made, "oldest first"
    recent = {one["id"]: [brief["id"] for brief in one["recent_runs"]] for one in seen}
    assert (recent[made[0]], recent[made[1]]) == ([], [run["id"]])
    for params, field in (({"limit": 0}, "limit"), ({"limit": 201}, "limit"), ({"cursor": "nonsense"}, "cursor")):
        refused = server.request("GET", "/api/v1/lists", params=params)
        assert refused.status_code == 400 and error_of(refused)["details"][0]["field"] == field


# -- the schedule over time --------------------------------------------------------------------


def test_every_5s_runs_on_time_and_after_a_sigkill_runs_a_missed_slot_once(make_server, target):
    first = make_server(env=FAST)
    watched = create(first, urls=[target.url("/ok")], schedule={"every": "5s"}, keep_runs=2)
    anchor = epoch(watched["next_run_at"])  # the server's own first slot; the later ones are anchor + 5 s, + 10 s...
    run_now(first, watched["id"])  # run 1, at once
    first.kill()
    time.sleep(max(0.0, anchor + 5.3 - time.time()))  # the slots at anchor and anchor + 5 s are missed

    restarted = time.time()
    again = make_server(env=FAST, data_dir=first.data_dir)
    slot = anchor + 10  # run 3's slot
    wait_until(lambda: "#3" in names(runs_of(again, watched["id"])), 20, "run 3")
    shown = again.request("GET", f"/api/v1/lists/{watched['id']}").json()
    assert shown["runs_started"] == 3, "two missed slots ran once: no burst"
    started = {run["name"][-2:]: epoch(run["created_at"]) for run in runs_of(again, watched["id"])["runs"]}
    assert restarted <= started["#2"] < slot, "the missed slots run once, at start, before run 3's slot"
    assert started["#3"] >= slot, f"run 3 started {slot - started['#3']:.3f} s before its slot"
    assert epoch(shown["next_run_at"]) == pytest.approx(anchor + 15, abs=0.002), "the schedule keeps its phase"
    # Run 3 is listed as soon as it is stored; run 1 is deleted just after, by the scheduler that started it.
    wait_until(lambda: names(runs_of(again, watched["id"])) == ["#3", "#2"], 5, "keep_runs 2: run 1 deleted")


# -- the store, in both stores -----------------------------------------------------------------


def test_each_slot_is_claimed_once_in_either_store(store_factory):
    store = store_factory()
    record = ListRecord(
        "l1", "l", ["http://a.test/"], {}, {"every": "1m"}, [], None, None, 30, False, "2026-12-06T00:00:00.000Z",
        100.0, None, 0, 0, None,
    )  # fmt: skip
    store.create_list(record)
    assert store.scheduled_lists() == [("l1", 100.0)]
    assert store.claim_slot("l1", 100.0, 160.0, 101.0) is True
    assert store.claim_slot("l1", 100.0, 160.0, 101.0) is False, "a second scheduler finds the slot taken"
    assert [store.number_run("l1"), store.number_run("l1")] == [1, 2]
    store.create_batch("b1", "l #1", {}, ["http://a.test/"], "2026-12-06T00:00:00.000Z", list_id="l1")
    store.create_batch("b2", "l #2", {}, ["http://a.test/"], "2026-12-06T00:00:01.000Z", "b1", list_id="l1")
    store.flush()
    assert store.list_runs("l1", 10) == ["b2", "b1"]
    store.note_skipped("l1", 102.0, "its source could not be read: the sitemap answered 500")
    sitemap = {"type": "sitemap", "url": "http://a.test/sitemap.xml", "include": None, "exclude": None, "max_urls": 9}
    assert store.change_list("l1", {"source": sitemap, "urls": []})
    found = store.get_list("l1")
    assert found is not None and (found.source, found.urls) == (sitemap, [])
    assert (found.skipped, found.last_skipped_reason) == (1, "its source could not be read: the sitemap answered 500")
    assert store.delete_list("l1") and store.get_list("l1") is None
    assert store.list_runs("l1", 10) == [], "a deleted list's runs stay as batches of no list"


def test_listing_the_lists_reads_no_urls_but_counts_them_in_either_store(store_factory):
    store = store_factory()
    store.create_list(listed(urls=[f"http://a.test/{i}" for i in range(3)], row_specs={"0": {"meta": {"a": "1"}}}))
    [shown] = store.all_lists()
    assert (shown.url_count, shown.urls, shown.row_specs) == (3, [], None)
    assert store.get_list("l1").row_specs == {"0": {"meta": {"a": "1"}}}
    assert store.change_list("l1", {"urls": ["http://a.test/"]}) and store.all_lists()[0].url_count == 1


def test_an_earlier_versions_lists_get_their_url_count_and_claim_columns_on_opening():
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    conn.executescript(
        "DROP TABLE lists; CREATE TABLE lists (id TEXT PRIMARY KEY, name TEXT NOT NULL, urls TEXT NOT NULL,"
        " options TEXT NOT NULL, schedule TEXT NOT NULL, notify TEXT NOT NULL, notify_on TEXT,"
        " consecutive_failures INTEGER, keep_runs INTEGER NOT NULL, paused INTEGER NOT NULL DEFAULT 0,"
        " created_at TEXT NOT NULL, next_run_at REAL, last_run_at REAL, runs INTEGER NOT NULL DEFAULT 0,"
        " skipped INTEGER NOT NULL DEFAULT 0, last_skipped_at REAL);"
        """INSERT INTO lists VALUES ('l1', 'l', '["http://a.test/1", "http://a.test/2"]', '{}', '{"every": "1h"}',"""
        " '[]', NULL, NULL, 30, 0, '2026-12-06T00:00:00.000Z', 100.0, NULL, 0, 0, NULL);"
    )
    migrate(conn)
    assert conn.execute("SELECT url_count, row_specs, running_batch FROM lists").fetchall() == [(2, None, None)]


def test_a_lists_run_is_claimed_once_until_it_ends_in_either_store(store_factory):
    store = store_factory(flush_interval=0.01)
    store.create_list(listed())
    assert store.claim_run("l1", "b1", 1000.0)
    assert not store.claim_run("l1", "b2", 1001.0), "b1 is claimed, its batch about to be stored"
    store.create_batch("b1", "l #1", {}, ["http://a.test/"], "2026-12-06T00:00:00.000Z", list_id="l1")
    assert store.flush(10)
    assert not store.claim_run("l1", "b2", 5000.0), "b1 is going, however old its claim"
    ended(store, "b1")
    assert store.claim_run("l1", "b2", 5001.0), "b1 ended"
    assert not store.claim_run("l1", "b3", 5030.0)
    assert store.claim_run("l1", "b3", 5062.0), "b2 was never stored: its claim lapsed"
    assert store.claim_slot_run("l1", 100.0, 160.0, 5063.0, "b4") == (True, False), "the slot taken, b3 holds the run"
    assert store.claim_slot_run("l1", 100.0, 160.0, 5063.0, "b4") == (False, False)


def test_a_slot_whose_run_was_not_stored_is_put_back_and_runs_once(store_factory):
    store = store_factory(flush_interval=0.01)
    store.create_list(listed("failing"))
    Scheduler(Config(), store, Submitter(store, fails=StoreError("the disk is full"))).run_due(now=101.0)
    assert store.get_list("failing").next_run_at == 100.0, "the store failed: the slot is put back"
    store.create_list(listed("killed"))
    assert store.claim_slot_run("killed", 100.0, 160.0, 101.0, "never-stored") == (True, True)
    # The process is killed here: the slot is claimed, its batch never stored.

    engine = Submitter(store)
    Scheduler(Config(), store, engine).run_due(now=102.0)
    assert len(engine.submitted) == 2, "each lost slot runs once, at the next start"
    assert [store.get_list(name).next_run_at for name in ("failing", "killed")] == [160.0, 160.0]
    assert all(store.delete_batch(batch_id) for batch_id in engine.submitted)
    Scheduler(Config(), store, engine).run_due(now=103.0)
    assert len(engine.submitted) == 2, "and only once, even when the run is deleted since"


class SourceSubmitter(Submitter):
    """A Submitter whose sources are read under the default fetch policy."""

    policy = guard.Policy()


def test_a_scheduled_run_keeps_its_claim_while_it_waits_for_a_read_slot_and_says_so_when_none_came(store_factory):
    store = store_factory(flush_interval=0.01)
    store.create_list(listed(urls=[], source={"type": "sitemap", "url": "http://a.test/sitemap.xml"}))
    scheduler = Scheduler(Config(source_timeout=1), store, SourceSubmitter(store))
    with READ_SLOTS.held(2), READ_SLOTS.held(2):  # both read slots (GREENBATCH_SOURCE_MAX_READS 2) are taken
        # Its slot was claimed a whole grace ago (it waited that long in the scheduler's queue); it starts now.
        scheduler.run_due(now=time.time() - scheduler.grace - 1)
        gevent.sleep(0.05)
        assert scheduler.recover_lost(time.time()) == [], "a run waiting for a read slot still holds its claim"
        scheduler._reads.join(timeout=5)
    shown = store.get_list("l1")
    assert (shown.skipped, shown.running_batch, shown.next_run_at > 100.0) == (1, None, True)
    assert shown.last_skipped_reason == (
        "it waited 1 s (GREENBATCH_SOURCE_TIMEOUT) for a turn to read its source, and every read slot stayed taken"
        " (GREENBATCH_SOURCE_MAX_READS 2)"
    )


def test_a_scheduled_run_waiting_for_its_turn_to_read_a_source_keeps_renewing_its_claim_and_runs_at_its_turn(
    store_factory, monkeypatch
):
    monkeypatch.setattr(schedule, "TURN_RENEW", 0.05)
    store = store_factory(flush_interval=0.01)
    # A source the fetch policy refuses before any lookup: its run ends at its turn, reading nothing.
    store.create_list(listed(urls=[], source={"type": "sitemap", "url": "http://127.0.0.1:9/sitemap.xml"}))
    scheduler = Scheduler(Config(source_timeout=1), store, SourceSubmitter(store))
    for _ in range(schedule.SOURCE_READS):  # every turn is taken, as by slow sources
        scheduler._read_turns.acquire()
    # No turn comes free until the test frees one: a loop that waited for it would wait out this bound.
    with gevent.Timeout(10, AssertionError("the scheduler's loop waited for a turn")):
        scheduler.run_due(now=time.time() - scheduler.grace - 1)  # its slot claimed a whole grace ago
    gevent.sleep(0.2)
    assert scheduler.recover_lost(time.time()) == [], "a run waiting for its turn still holds its claim"
    assert store.get_list("l1").running_batch is not None
    for _ in range(schedule.SOURCE_READS):
        scheduler._read_turns.release()
    scheduler._reads.join(timeout=5)
    shown = store.get_list("l1")  # its turn came: it ran, and let its claim go
    assert (shown.running_batch, shown.skipped) == (None, 1) and "cannot be fetched" in shown.last_skipped_reason


def test_a_runs_exception_counts_its_slot_as_skipped_and_the_next_slot_still_runs(store_factory):
    store = store_factory(flush_interval=0.01)
    store.create_list(listed())
    Scheduler(Config(), store, Submitter(store, fails=RuntimeError("a bug"))).run_due(now=101.0)
    shown = store.get_list("l1")
    assert (shown.next_run_at, shown.skipped, shown.running_batch) == (160.0, 1, None)


def test_pruning_deletes_every_run_beyond_keep_runs_a_page_at_a_time(store_factory, monkeypatch):
    monkeypatch.setattr(schedule, "PRUNE_PAGE", 7)
    store = store_factory(flush_interval=0.01)
    record = listed(keep_runs=2)
    store.create_list(record)
    for i in range(105):
        store.create_batch(f"b{i}", f"l #{i}", {}, ["http://a.test/"], "2026-12-06T00:00:00.000Z", list_id="l1")
    final = {"status": "done", "finished_at": "2026-12-06T00:00:01.000Z", "counts": {"ok": 1}, "stats": {}}
    store.extend([Event(f"b{i}", 1, "batch", final) for i in range(104) if i != 50])
    assert store.flush(10)
    deleted = Scheduler(Config(), store, Submitter(store)).prune(record)
    assert len(deleted) == 102 and deleted[0] == "b0", "oldest first"
    assert store.list_runs("l1", 200) == ["b104", "b103", "b50"], "b50 is going: never deleted"


def test_the_last_runs_of_a_page_of_lists_are_read_at_once_in_either_store(store_factory):
    store = store_factory()
    for n, list_id in enumerate(("l1", "l2", "l3")):
        store.create_list(
            ListRecord(
                list_id, list_id, ["http://a.test/"], {}, {"every": "1m"}, [], None, None, 30, False,
                f"2026-12-06T00:00:0{n}.000Z", None, None, 0, 0, None,
            )
        )  # fmt: skip
    for n in range(5):
        store.create_batch(f"b{n}", f"l1 #{n}", {}, ["http://a.test/"], "2026-12-06T00:00:00.000Z", list_id="l1")
    store.create_batch("c0", "l2 #1", {}, ["http://a.test/"], "2026-12-06T00:00:00.000Z", list_id="l2")
    store.create_batch("alone", "alone", {}, ["http://a.test/"], "2026-12-06T00:00:00.000Z")
    store.flush()
    found = store.recent_list_runs(["l1", "l2", "l3"], 3)
    assert [(record.list_id, record.id) for record in found] == [("l2", "c0"), ("l1", "b4"), ("l1", "b3"), ("l1", "b2")]
    assert store.recent_list_runs([], 3) == []
    first = store.page_lists(2)
    assert [record.id for record in first] == ["l1", "l2"]
    assert [record.id for record in store.page_lists(2, (first[-1].created_at, first[-1].id))] == ["l3"]


def test_a_sqlite_file_of_an_earlier_version_gets_the_lists_source_columns(tmp_path):
    path = str(tmp_path / "old.db")
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:  # the lists table as the version before sources made it
        conn.execute("ALTER TABLE lists DROP COLUMN source")
        conn.execute("ALTER TABLE lists DROP COLUMN last_skipped_reason")
        conn.execute(
            "INSERT INTO lists (id, name, urls, options, schedule, notify, keep_runs, created_at)"
            """ VALUES ('old', 'old', '["http://a.test/"]', '{}', '{"every": "1h"}', '[]', 30, 'x')"""
        )
    store = SQLiteStore(path)
    try:
        found = store.get_list("old")
        assert found is not None and (found.urls, found.source, found.last_skipped_reason) == (
            ["http://a.test/"],
            None,
            None,
        )
    finally:
        store.close()


# -- cluster mode ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres, redis_server, target, receiver):
    """Two web processes and a worker on one PostgreSQL and Redis, whose lists may run every second, allowed to
    reach the target and the receiver."""
    for module in ("psycopg", "redis", "dramatiq"):
        pytest.importorskip(module)
    from tests.support.cluster import Cluster

    env = {"GREENBATCH_ALLOW_TARGETS": f"127.0.0.1:{target.port},127.0.0.1:{receiver.port}", **FAST}
    instance = Cluster(tmp_path_factory.mktemp("cluster"), postgres.new_database(), redis_server.url, env)
    try:
        instance.start_web()
        instance.start_web()
        instance.start_worker(threads=2)
        yield instance
    finally:
        instance.stop()


def test_in_cluster_mode_two_web_processes_run_each_slot_once(cluster, target):
    web_a, web_b = cluster.webs
    watched = create(web_a, urls=[target.url("/ok")], schedule={"every": "1s"}, keep_runs=5)
    created = time.time()
    runs = wait_until(
        lambda: found if len(found := runs_of(web_b, watched["id"])["runs"]) >= 2 else None,
        8,
        "two scheduled runs",
    )
    elapsed = time.time() - created
    started = web_a.request("GET", f"/api/v1/lists/{watched['id']}").json()["runs_started"]
    assert started <= elapsed + 1, f"{started} runs in {elapsed:.1f} s: a slot ran on both web processes"
    names = [run["name"] for run in runs]
    assert len(set(names)) == len(names), names
    assert [run["parent_id"] for run in runs[:-1]] == [run["id"] for run in runs[1:]], "each run's base: the one before"
    assert web_a.request("DELETE", f"/api/v1/lists/{watched['id']}").status_code == 204
    slow = create(web_a, urls=[target.url("/delay/1500")])
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda web: web.request("POST", f"/api/v1/lists/{slow['id']}/run"), (web_a, web_b)))
    assert sorted(answer.status_code for answer in answers) == [201, 409], "run now on two processes at once"


def test_in_cluster_mode_a_list_of_a_sitemap_reads_it_at_each_run_on_either_web_process(cluster, target):
    web_a, web_b = cluster.webs
    tag = uuid.uuid4().hex[:8]
    # The sitemap lists pages 0-2 at run 1, pages 1-4 at run 2, and answers 500 at run 3.
    sitemap = target.url(f"/sitemap/turns/{tag}.xml?turns=0:1:2,1:2:3:4,s500")
    watched = create(web_a, source={"type": "sitemap", "url": sitemap})
    first, second = run_now(web_b, watched["id"]), run_now(web_a, watched["id"])
    assert (first["status"], first["counts"]["total"], first["counts"]["ok"]) == ("done", 3, 3)
    assert (second["counts"]["total"], second["parent_id"], second["source"]) == (4, first["id"], watched["source"])
    summary = runs_of(web_b, watched["id"])["runs"][0]["diff_summary"]
    assert untimed(summary) == {"added": 2, "removed": 1, "unchanged": 2}

    refused = web_b.request("POST", f"/api/v1/lists/{watched['id']}/run")
    assert refused.status_code == 409 and error_of(refused)["code"] == "source_unreadable"
    skipped = web_a.request("GET", f"/api/v1/lists/{watched['id']}").json()["skipped"]
    assert skipped["count"] == 1 and "answered 500, not 200" in skipped["last_reason"]


def test_in_cluster_mode_a_scheduled_list_of_a_sitemap_keeps_each_urls_lastmod_its_last_runs_and_notifies(
    cluster, target, receiver
):
    web_a, web_b = cluster.webs
    path = f"/hook/{uuid.uuid4().hex[:8]}"
    watched = create(
        web_a,
        source={"type": "sitemap", "url": target.url("/sitemap/urls.xml?n=3&lastmod=1")},
        schedule={"every": "1s"},
        keep_runs=2,
        notify=[{"type": "webhook", "url": receiver.url(path), "secret": SECRET}],
    )
    wait_until(lambda: web_b.request("GET", f"/api/v1/lists/{watched['id']}").json()["runs_started"] >= 3, 10, "3 runs")
    paused = web_b.request("PATCH", f"/api/v1/lists/{watched['id']}", json={"paused": True})
    assert paused.status_code == 200, paused.text

    def settled():
        """The list's runs once the last one started has ended (and the runs beyond keep_runs are deleted)."""
        started = web_b.request("GET", f"/api/v1/lists/{watched['id']}").json()["runs_started"]
        runs = runs_of(web_a, watched["id"])["runs"]
        last = runs[0]["name"].endswith(f" #{started}") and runs[0]["status"] in FINAL_STATUSES
        return runs if last and len(runs) == 2 else None

    runs = wait_until(settled, 10, "the last run ended and keep_runs held")
    assert runs[0]["parent_id"] == runs[1]["id"], "keep_runs: the two last runs"
    newest = runs[0]
    results = web_b.request("GET", f"/api/v1/batches/{newest['id']}/results").json()["results"]
    assert [result["meta"] for result in results] == [{"lastmod": f"2026-11-0{n}"} for n in (1, 2, 3)]

    def last_delivery():
        listed = {one["id"]: one for one in web_a.request("GET", "/api/v1/lists").json()["lists"]}
        found = listed[watched["id"]]["last_delivery"]
        return found if found and found["batch_id"] == newest["id"] and found["status"] == "sent" else None

    wait_until(last_delivery, 10, "the newest run's delivery, sent, shown with the list")
    payload = next(
        payload
        for payload in (verified(request, SECRET) for request in receiver.received(path))
        if payload["batch_id"] == newest["id"]
    )
    assert payload["list_id"] == watched["id"]
    assert untimed(payload["diff_summary"]) == {"unchanged": 3}


def test_in_cluster_mode_a_run_now_while_another_process_reads_the_lists_source_is_refused_as_starting(cluster, target):
    web_a, web_b = cluster.webs
    slow = create(web_a, source={"type": "sitemap", "url": target.url("/delay/2000")})
    before = target.hits().get("/delay/2000", 0)
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(web_a.request, "POST", f"/api/v1/lists/{slow['id']}/run")
        wait_until(lambda: target.hits().get("/delay/2000", 0) > before, 5, "web process A reading the source")
        refused = web_b.request("POST", f"/api/v1/lists/{slow['id']}/run")
        assert refused.status_code == 409 and error_of(refused)["code"] == "still_running"
        assert error_of(refused)["message"].endswith("its previous run is still starting (reading its source)")
        read = reading.result()
    assert (read.status_code, error_of(read)["code"]) == (409, "not_a_sitemap"), "web A read it, and ran nothing"
