"""Watch lists on a schedule: when a list's next run is due (`every` or cron), and the greenlet that starts each
due run as a normal batch, compared with the run before it.

The rules it keeps: a slot missed while no server ran is run once at start, never once per missed slot; two runs
of one list never overlap (a due run while the previous is still going is skipped, and counted as skipped: a
compare-and-set on the list's running_batch, so in every process); each slot is taken by one process only (a
compare-and-set on the list's next_run_at, so any number of cluster web processes may run a scheduler), in the
same transaction as its run's claim, and a slot whose run could not be stored is put back; after each run, the
runs beyond the list's keep_runs are deleted, oldest first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import gevent
from cronsim import CronSim, CronSimError
from gevent.event import Event as Signal
from gevent.lock import BoundedSemaphore, Semaphore
from gevent.pool import Group

from ..core.clock import iso_at
from ..core.config import Config
from ..core.options import MAX_META_CHARS, BatchOptions, ValidationError
from ..core.results import FINAL_STATUSES
from ..core.sources import Source
from ..core.urllist import UrlList
from ..fetch import guard
from ..fetch.sources import Expansion, SourceBusy, SourceError, SourceLimits, batch_urls
from .control import BatchControl
from .store import Store, StoreError
from .store.base import ListRecord
from .store.lists import CLAIM_GRACE

log = logging.getLogger(__name__)

TICK = 5.0  # seconds at most between two looks at the lists (another process may have added or changed one)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EVERY = re.compile(r"^\s*(\d{1,7})\s*([smhd])\s*$")
CRON_SAMPLES = 50  # successive cron slots whose gaps are checked against the shortest interval
MAX_EVERY = 366 * 86400  # seconds: the longest `every` (a year)
PRUNE_PAGE = 500  # run ids read at once when looking for the runs beyond keep_runs
SOURCE_READS = 8  # lists' sources read at once for due runs; a due run beyond them waits its turn in its greenlet
TURN_RENEW = CLAIM_GRACE / 2  # seconds between two renewals of the claim of a run waiting for its turn


@dataclass(frozen=True)
class Schedule:
    """When a list runs: every `seconds`, or at the times of a cron expression (UTC)."""

    every: float | None = None
    cron: str | None = None

    @classmethod
    def parse(cls, raw: Any, min_interval: float) -> Schedule:
        """A client's {"every": "6h"} or {"cron": "0 3 * * *"}; ValidationError naming the problem."""

        def problem(field: str, message: str) -> ValidationError:
            return ValidationError(f"{field} {message}", [{"field": field, "message": message}])

        if not isinstance(raw, dict) or len(raw) != 1 or not set(raw) <= {"every", "cron"}:
            raise problem("schedule", 'must be {"every": "6h"} or {"cron": "0 3 * * *"}')
        if "every" in raw:
            text = raw["every"]
            match = _EVERY.match(text) if isinstance(text, str) else None
            if match is None:
                raise problem("schedule.every", 'must be a number and a unit, s, m, h or d, such as "90s" or "6h"')
            seconds = int(match.group(1)) * UNITS[match.group(2)]
            if not min_interval <= seconds <= MAX_EVERY:
                raise problem(
                    "schedule.every",
                    f"must be between {min_interval:g} s (GREENBATCH_MIN_SCHEDULE_INTERVAL) and {MAX_EVERY // 86400} d",
                )
            return cls(every=float(seconds))
        expression = raw["cron"]
        if not isinstance(expression, str) or len(expression) > 200:
            raise problem("schedule.cron", 'must be a cron expression such as "0 3 * * *"')
        if len(expression.split()) != 5:  # cronsim reads a sixth field as seconds, and @daily: neither is ours
            raise problem("schedule.cron", 'must have five fields (minute hour day month weekday), such as "0 3 * * *"')
        try:
            slots = CronSim(expression, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
            times = [next(slots).timestamp() for _ in range(CRON_SAMPLES)]
        except (CronSimError, StopIteration) as exc:
            raise problem("schedule.cron", f"is not a cron expression greenbatch reads: {exc}") from None
        shortest = min(b - a for a, b in zip(times, times[1:], strict=False))
        if shortest < min_interval:
            raise problem(
                "schedule.cron",
                f"runs {shortest:g} s apart, more often than every {min_interval:g} s "
                "(GREENBATCH_MIN_SCHEDULE_INTERVAL)",
            )
        return cls(cron=expression)

    def first_after(self, now: float) -> float:
        """The first slot after `now` (when a new list first runs)."""
        if self.every is not None:
            return now + self.every
        assert self.cron is not None
        slots = CronSim(self.cron, dt.datetime.fromtimestamp(now, dt.UTC))
        return next(slots).timestamp()

    def following(self, slot: float, now: float) -> float:
        """The slot after `slot` that is still to come at `now`: the missed ones in between are skipped, never
        run one after another; an `every` keeps its phase."""
        if self.every is not None:
            missed = max(0, int((now - slot) // self.every))
            return slot + (missed + 1) * self.every
        return self.first_after(max(slot, now))


def _starting_text(record: ListRecord) -> str:
    """How a run of the list that is not stored yet is said: a list of a source is reading it."""
    return "starting (reading its source)" if record.source is not None else "starting"


@dataclass(frozen=True)
class RunOutcome:
    """What starting a list's run did: the batch it started, or why it started none."""

    batch_id: str | None
    # "overlap": the previous run is still going; "refused": the options no longer pass; "source": its source could
    # not be read (`code` says how: source_timeout, not_a_sitemap, empty_source...)
    skipped: str | None = None
    message: str = ""
    code: str = ""


class Scheduler:
    """The greenlet that starts each watch list's runs when they are due; run() also starts one at once."""

    def __init__(self, config: Config, store: Store, engine: BatchControl, tick: float = TICK):
        self.config = config
        self.store = store
        self.engine = engine
        self.tick = tick
        self._wake = Signal()
        self._greenlet: gevent.Greenlet[[], None] | None = None
        self._locks: dict[str, Semaphore] = {}  # a list's runs start one at a time in this process
        self._started = time.time()
        # A due run of a source waits for its turn in a greenlet of its own, never in the scheduler's loop: the
        # other lists' slots come due meanwhile. One greenlet per list at most, as each holds its list's claim.
        self._reads = Group()
        self._read_turns = BoundedSemaphore(SOURCE_READS)
        # A claimed run not stored within this was lost: a scheduled run may wait GREENBATCH_SOURCE_TIMEOUT for a
        # read slot, then take as long to read its list's source (timed from when its turn comes).
        self.grace = CLAIM_GRACE + 2 * config.source_timeout

    def start(self) -> None:
        """Start looking for due lists."""
        self._greenlet = gevent.spawn(self._loop)
        self._started = time.time()

    def stop(self) -> None:
        """Stop looking; a run being submitted is let finish."""
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)
            self._greenlet = None
        self._reads.kill(block=True, timeout=5)

    def wake(self) -> None:
        """Look at the lists now: one was added, changed or deleted."""
        self._wake.set()

    def _loop(self) -> None:
        """Run what is due, then sleep until the next slot (TICK at most, or until woken)."""
        while True:
            try:
                wait = self.run_due()
            except StoreError as exc:  # the store fails for now: try again later, never stop scheduling
                log.error("watch lists: cannot read the lists (%s); trying again in %g s", exc, self.tick)
                wait = self.tick
            except Exception:
                log.exception("watch lists: the scheduler failed; trying again in %g s", self.tick)
                wait = self.tick
            self._wake.wait(timeout=wait)
            self._wake.clear()

    def run_due(self, now: float | None = None) -> float:
        """Start every list whose slot has come; the seconds until the next slot (TICK at most)."""
        now = time.time() if now is None else now
        upcoming = [self.tick]
        self.recover_lost(now)
        for list_id, slot in self.store.scheduled_lists():
            if slot > now:
                upcoming.append(slot - now)
                continue
            record = self.store.get_list(list_id)
            if record is None or record.next_run_at != slot:
                continue  # deleted or changed since it was read
            following = Schedule.parse(record.schedule, 0).following(slot, now)
            batch_id = secrets.token_hex(6)
            taken, free = self.store.claim_slot_run(list_id, slot, following, now, batch_id, self.grace)
            if not taken:
                continue  # another process took this slot
            upcoming.append(following - now)
            starting = self._locks.get(list_id)
            if starting is not None and starting.locked():  # never a queue of slots behind a slow source
                if free:
                    self._release(list_id, batch_id)
                self.store.note_skipped(list_id, now, f"its previous run was still {_starting_text(record)}")
            elif not free:
                was = _starting_text(record) if self._starting(list_id) else "going"
                log.info("watch list %s: scheduled run skipped, its previous run is still %s", list_id, was)
                self.store.note_skipped(list_id, now, f"its previous run was still {was}")
            elif record.source is not None:
                # Reading a source may take GREENBATCH_SOURCE_TIMEOUT: the other lists' slots must not wait for it,
                # nor for a turn to read one.
                self._reads.spawn(self._run_queued, record, slot, now, batch_id)
            else:
                self._run_slot(record, slot, now, batch_id)
        return max(0.01, min(upcoming))

    def _run_queued(self, record: ListRecord, slot: float, now: float, batch_id: str) -> None:
        """_run_slot once its turn to read a source comes (SOURCE_READS at once); its claim is renewed while it waits
        for the turn, and its grace starts over when the turn comes."""
        while not self._read_turns.acquire(timeout=TURN_RENEW):
            if not self._renew(record, slot, batch_id):
                return
        try:
            if self._renew(record, slot, batch_id):
                self._run_slot(record, slot, now, batch_id)
        finally:
            self._read_turns.release()

    def _renew(self, record: ListRecord, slot: float, batch_id: str) -> bool:
        """Start the claim's grace over; False, the run given up, when it was put back meanwhile (recover_lost in
        any process: it is left to whoever runs its slot now) or the store fails (the slot is put back)."""
        try:
            held = self.store.renew_claim(record.id, batch_id, time.time())
        except StoreError as exc:  # the store fails for now: the slot is put back, to run once it answers
            log.error("watch list %s: its run at %s could not start: %s", record.id, iso_at(slot), exc)
            self._release(record.id, batch_id, slot)
            return False
        if not held:
            log.warning(
                "watch list %s: its run %s waited to start past its claim's grace; its slot was put back and runs again",
                record.id,
                batch_id,
            )
        return held

    def _run_slot(self, record: ListRecord, slot: float, now: float, batch_id: str) -> None:
        """Run a list at its claimed slot; a run that does not start is recorded with its reason, and a slot whose
        run could not be stored is put back."""
        try:
            outcome = self.run(record, scheduled=True, batch_id=batch_id)
            if outcome.skipped is not None:
                self.store.note_skipped(record.id, now, outcome.message)
        except StoreError as exc:  # the store fails for now: the slot is put back, to run once it answers
            log.error("watch list %s: its run at %s could not be stored: %s", record.id, iso_at(slot), exc)
            self._release(record.id, batch_id, slot)
        except Exception:  # a fault that would recur: counted as skipped (in a greenlet, it would reach stderr only)
            log.exception("watch list %s: its run at %s failed to start; skipped", record.id, iso_at(slot))
            self._release(record.id, batch_id)
            try:
                self.store.note_skipped(record.id, now, "it failed to start (the server's log says why)")
            except StoreError as exc:
                log.error("watch list %s: its skipped run could not be recorded: %s", record.id, exc)

    def recover_lost(self, now: float) -> list[str]:
        """Put back the slots whose run was claimed but never stored (its process was killed in between), so that
        they run once now; the ids of the lists. A process alone (SQLite) knows every claim older than its start
        was lost; in a cluster, another process may be storing one, so only claims past the grace count."""
        before = now - self.grace if self.config.cluster else max(now - self.grace, self._started)
        recovered = []
        for record in self.store.lost_runs(before):
            assert record.running_batch is not None
            log.warning(
                "watch list %s: its run %s was claimed at %s and never started (the process stopped); its slot "
                "runs now",
                record.id,
                record.running_batch,
                iso_at(record.running_since or now),
            )
            self.store.release_run(record.id, record.running_batch, record.running_slot)
            recovered.append(record.id)
        return recovered

    def _release(self, list_id: str, batch_id: str, slot: float | None = None) -> None:
        """release_run, logged when the store cannot (the claim then lapses after the grace)."""
        try:
            self.store.release_run(list_id, batch_id, slot)
        except StoreError as exc:
            log.error("watch list %s: its claim of run %s could not be dropped: %s", list_id, batch_id, exc)

    def run(self, record: ListRecord, scheduled: bool = False, batch_id: str | None = None) -> RunOutcome:
        """Start a run of the list now, as a batch whose parent is its previous run; none while that one is going.

        A scheduled run comes with its batch_id claimed (claim_slot_run); a run now claims one here."""
        lock = self._locks.setdefault(record.id, Semaphore())
        if batch_id is None and lock.locked():
            # A run of this process is starting (a source may take GREENBATCH_SOURCE_TIMEOUT to read): run now
            # answers at once, as when another process holds the claim. A scheduled run has a claim to release.
            log.info("watch list %s: not started, its previous run is still starting", record.id)
            return RunOutcome(None, "overlap", f"its previous run is still {_starting_text(record)}")
        with lock:
            previous = self.store.list_runs(record.id, 1)
            parent = previous[0] if previous else None
            claimed = batch_id or secrets.token_hex(6)
            # The claim is the rule across processes; the engine's own view covers a run of this process whose
            # ended status is not stored yet.
            going = parent is not None and self._going(parent)
            if going or (batch_id is None and not self.store.claim_run(record.id, claimed, time.time(), self.grace)):
                if going and batch_id is not None:
                    self._release(record.id, claimed)
                why = "scheduled run skipped" if scheduled else "not started"
                # Another process holds the claim while it reads the list's source: its run is not stored yet.
                still = "going" if going or not self._starting(record.id) else _starting_text(record)
                log.info("watch list %s: %s, its previous run is still %s", record.id, why, still)
                return RunOutcome(None, "overlap", f"its previous run is still {still}")
            try:
                options = BatchOptions.parse(self.run_options(record), self.config)
            except ValidationError as exc:  # a limit lowered since the list was saved
                log.error("watch list %s: not run, its options no longer pass: %s %s", record.id, exc, exc.details)
                self._release(record.id, claimed)
                return RunOutcome(None, "refused", f"its options no longer pass: {exc}")
            urls: list[str] | UrlList = record.urls
            if record.source is not None:
                try:
                    # A run now answers at once (503 busy) when every read slot is taken; a scheduled one waits.
                    wait = self.config.source_timeout if scheduled else 0.0
                    urls, options = self.expanded(record.source, options, wait)
                except SourceBusy as exc:
                    self._release(record.id, claimed)
                    if not scheduled:  # run now answers 503 busy at once
                        return RunOutcome(None, "source", f"its source could not be read: {exc}", exc.code)
                    why = (
                        f"it waited {wait:g} s (GREENBATCH_SOURCE_TIMEOUT) for a turn to read its source, and every "
                        f"read slot stayed taken (GREENBATCH_SOURCE_MAX_READS {self.config.source_max_reads})"
                    )
                    log.error("watch list %s: not run, %s", record.id, why)
                    return RunOutcome(None, "source", why, exc.code)
                except SourceError as exc:
                    log.error("watch list %s: not run, its source could not be read: %s", record.id, exc)
                    self._release(record.id, claimed)
                    return RunOutcome(None, "source", f"its source could not be read: {exc}", exc.code)
            try:
                number = self.store.number_run(record.id)
                self.engine.submit(
                    urls,
                    options,
                    f"{record.name} #{number}"[:200],
                    parent_id=parent,
                    source=record.source,
                    list_id=record.id,
                    batch_id=claimed,
                )
            except Exception:
                if batch_id is None:  # a scheduled run's caller decides what becomes of its slot
                    self._release(record.id, claimed)
                raise
            log.info("watch list %s: run #%d is batch %s", record.id, number, claimed)
            if batch_id is not None:
                try:
                    self.store.stored_run(record.id, claimed)
                except StoreError as exc:  # the run is stored: its slot must not be given back by this
                    log.error("watch list %s: run %s could not be noted as stored: %s", record.id, claimed, exc)
        self.prune(record)
        return RunOutcome(claimed)

    def expanded(self, raw: dict[str, Any], options: BatchOptions, wait: float = 0.0) -> tuple[UrlList, BatchOptions]:
        """A list's source read now as a batch submitted with it is (the guard on every fetch, the same limits, a
        read slot waited for up to `wait` seconds): its URLs, and the options with each URL's meta; SourceError
        naming why it cannot be."""
        try:
            source = Source.parse(raw, self.config)
            url = guard.check_url(source.url, self.config.max_url_length)
        except (ValidationError, guard.InvalidUrl) as exc:  # a limit lowered since the list was saved
            raise SourceError(f"the source no longer passes: {exc}", code="invalid_source") from None
        refusal = self.engine.policy.refuses_literal(url)
        if refusal is not None:
            raise SourceError(f"source.url {url} cannot be fetched: {refusal}", code="invalid_source")
        source = dataclasses.replace(source, url=url)
        found = batch_urls(
            Expansion(source, self.engine.policy, SourceLimits.from_config(self.config)), self.config.max_urls, wait
        )
        # Each URL's meta (a sitemap's lastmod, a link's found_on) is its row's meta, as in a submitted batch.
        rows = {
            index: {"meta": {key: value[:MAX_META_CHARS] for key, value in meta.items()}}
            for index, (_, meta) in enumerate(found)
            if meta
        }
        if rows:
            options = dataclasses.replace(options, rows=rows)
        return UrlList.of(url for url, _ in found), options

    def run_options(self, record: ListRecord) -> dict[str, Any]:
        """The options each run of the list is submitted with: its own, its URLs' row specs, and whom to notify."""
        options = dict(record.options)
        if record.row_specs and record.source is None:  # a source's rows are each run's own (expanded)
            options["rows"] = record.row_specs
        if record.notify:
            options["notify"] = record.notify
        if record.notify_on is not None:
            options["notify_on"] = record.notify_on
        if record.consecutive_failures is not None:
            options["consecutive_failures"] = record.consecutive_failures
        return options

    def _starting(self, list_id: str) -> bool:
        """Whether the list's claimed run is not stored yet: a process is reading its source (or died doing so,
        until the claim's grace ends)."""
        record = self.store.get_list(list_id)
        running = record.running_batch if record is not None else None
        return running is not None and self.store.get_batch(running) is None

    def _going(self, batch_id: str) -> bool:
        """Whether a run has not ended yet."""
        if self.engine.is_live(batch_id):
            return True
        batch = self.store.get_batch(batch_id)
        return batch is not None and batch.status not in FINAL_STATUSES

    def prune(self, record: ListRecord) -> list[str]:
        """Delete the list's runs beyond its keep_runs, oldest first (a run still going is left); the ids deleted."""
        beyond: list[str] = []
        while page := self.store.list_runs(record.id, PRUNE_PAGE, record.keep_runs + len(beyond)):
            beyond.extend(page)  # ids only: a backlog of any length is read a page at a time
            if len(page) < PRUNE_PAGE:
                break
        deleted = []
        for batch_id in reversed(beyond):
            if self._going(batch_id):
                continue
            if self.store.delete_batch(batch_id):
                deleted.append(batch_id)
        if deleted:
            log.info("watch list %s: deleted %d runs beyond keep_runs %d", record.id, len(deleted), record.keep_runs)
        return deleted
