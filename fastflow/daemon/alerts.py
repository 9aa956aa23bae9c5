"""When to notify whom: the daemon's side of notifications (docs/notifications.md).

`Alerts` does the I/O around the pure decisions of `daemon.alert_rules`: it keeps the
tallies in `state/notifications.json` on the results branch (so a daemon restart neither
forgets a failure streak nor repeats a message), holds each target's events for its group
window, resolves each target's URL (a secret is decrypted from the deployed commit's secrets
file), hands messages to the `notify` courier (a worker thread: delivery never blocks a run or
the loop) and records every attempt under `notifications/` on the branch.
"""
from __future__ import annotations

import json
import logging
import secrets as random
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Mapping

from fastflow import defaults
from fastflow.daemon.alert_rules import (
    Group,
    Groups,
    Tally,
    missed_slots,
    run_events,
    soft_limit_events,
    stuck_events,
)
from fastflow.deploy.deployment import Deployment
from fastflow.errors import FastflowError
from fastflow.model import NotificationTarget, NotifyEvent, RepoConfig, RunStatus
from fastflow.notify import delivery
from fastflow.notify.courier import Courier, Parcel, entry
from fastflow.notify.message import Event, compose, tail_lines
from fastflow.record import RunRecord
from fastflow.results.store import ResultsStore
from fastflow.schedule.spec import Schedule
from fastflow.secrets.runtime import notification_urls
from fastflow.site.views import run_page_path

logger = logging.getLogger(__name__)

STATE_NAME = "notifications"  # state/notifications.json on the results branch
RECORDS_DIR = "notifications"  # notifications/<YYYY>/<MM>/<id>.json: one per message


# --- the daemon's alerts ------------------------------------------------------------------------


def record_path(message_id: str) -> str:
    """`notifications/<YYYY>/<MM>/<id>.json`, by the timestamp the id starts with."""
    return f"{RECORDS_DIR}/{message_id[:4]}/{message_id[4:6]}/{message_id}.json"


def new_message_id(target: str, now: datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{target}-{random.token_hex(2)}"


def shown_target(target: NotificationTarget) -> str:
    """What is recorded and shown of where a target's messages go: the URL's private form
    (tokens masked by the library), or the name of the secret holding it."""
    if target.secret is not None:
        return f"secret {target.secret}"
    try:
        return delivery.describe(target.url or "")
    except delivery.DeliveryFailed:
        return target.url.split("://", 1)[0] + "://..." if target.url else "?"


@dataclass
class AlertSources:
    """What the alerts need from the daemon: `targets(pipeline)` (its effective targets; the
    defaults for one no longer active), `config()` (the active config.yaml), `secrets_root()`
    (a checkout of the deployed commit, for the secrets file), `environ` (age identities),
    `wake()` (the loop re-reads `next_at`), `pages()` (site pages a delivery record changes:
    the overview lists the last deliveries)."""

    targets: Callable[[str], tuple[NotificationTarget, ...]]
    config: Callable[[], RepoConfig | None]
    secrets_root: Callable[[], Path | None]
    environ: Mapping[str, str]
    wake: Callable[[], None] = lambda: None
    pages: Callable[[], Mapping[str, bytes | None]] = lambda: {}


def notification_targets(deployment: Deployment | None, pipeline: str) -> tuple:
    """Where `pipeline`'s events go: its resolved targets while it is active, else
    config.yaml's (a pipeline removed or invalid since its run started)."""
    if deployment is None:
        return ()
    active = deployment.active.get(pipeline)
    if active is not None:
        return active.pipeline.notifications
    return deployment.config.notifications if deployment.config else ()


class Alerts:
    """The daemon's notifications: see the module doc. Thread-safe: runs are recorded on
    worker threads, the loop ticks, the courier reports from its own thread."""

    def __init__(self, store: ResultsStore, clock: Callable[[], datetime], sources: AlertSources,
                 courier: Courier | None = None) -> None:
        self.store = store
        self.clock = clock
        self.sources = sources
        self.groups = Groups()
        self.tallies: dict[str, Tally] = {}
        self.checked: dict[str, str] = {}  # "schedule id/target" -> `missed` checked up to
        self.recent: list[dict] = []  # the last deliveries, newest first (for the site)
        self._lock = threading.RLock()
        self.courier = courier or Courier(self._report, clock)

    # -- state ----------------------------------------------------------------------------

    def load(self) -> None:
        """Read `state/notifications.json` (a damaged one is logged and starts afresh)."""
        try:
            data = self.store.read_state(STATE_NAME) or {}
            with self._lock:
                self.tallies = {n: Tally.from_json(t) for n, t in (data.get("pipelines") or {}).items()}
                self.checked = dict(data.get("missed_checked") or {})
                self.recent = list(data.get("recent") or [])
        except (ValueError, TypeError, AttributeError, FastflowError) as exc:
            logger.error("state/%s.json on %s is unreadable (%s); notifications start afresh",
                         STATE_NAME, self.store.branch, exc)

    def recent_deliveries(self) -> list[dict]:
        """The last deliveries, newest first (what the site's overview lists)."""
        with self._lock:
            return list(self.recent)

    def state_json(self) -> dict:
        with self._lock:
            return {"schema": 1, "pipelines": {n: t.to_json() for n, t in self.tallies.items()},
                    "missed_checked": dict(self.checked), "recent": list(self.recent)}

    def _save(self) -> None:
        self.store.write_state(STATE_NAME, self.state_json())

    # -- what happened ----------------------------------------------------------------------

    def run_recorded(self, record: RunRecord, log: Callable[[], str]) -> None:
        """A run's record is on the branch: decide and queue what its targets hear."""
        if record.status in (RunStatus.QUEUED, RunStatus.RUNNING):
            return
        now = self.clock()
        targets = self.sources.targets(record.pipeline)
        with self._lock:
            tally, found = run_events(self.tallies.get(record.pipeline, Tally()), record,
                                      targets, now)
            changed = tally != self.tallies.get(record.pipeline)
            self.tallies[record.pipeline] = tally
            if changed:
                self._save()
        if not found:
            return
        tail = tail_lines(_safe(log), defaults.NOTIFY_LOG_LINES)
        for target, kind, detail in found:
            self._add(target, Event(
                kind=kind, at=now, pipeline=record.pipeline, run_id=record.run_id,
                status=record.status.value, commit=record.commit.sha if record.commit else None,
                duration_s=record.duration_s, detail=detail,
                log_tail=tail if kind != NotifyEvent.RECOVERY.value else (),
                run_url=self._run_url(record.pipeline, record.run_id)), now)

    def given_up(self, pipeline: str, run_id: str | None, detail: str) -> None:
        """Supervision gave up restarting `pipeline` (sent once per give-up: supervision calls
        this once)."""
        now = self.clock()
        for target in self.sources.targets(pipeline):
            if NotifyEvent.GIVEN_UP in target.events:
                self._add(target, Event(kind=NotifyEvent.GIVEN_UP.value, at=now,
                                        pipeline=pipeline, run_id=run_id, detail=detail,
                                        run_url=self._run_url(pipeline, run_id)), now)

    def supervision(self, event) -> None:
        """`SupervisorHooks.notify`: a supervision event (`given_up` is the one people hear)."""
        if getattr(event, "kind", None) == NotifyEvent.GIVEN_UP.value:
            self.given_up(event.pipeline, event.run_id, event.message)

    def daemon_started(self, previous: Mapping | None, now: datetime,
                       notified: Callable[[str], bool] = lambda heartbeat: False) -> bool:
        """At a daemon start: when the last heartbeat on the branch (`previous`, the state the
        last daemon wrote) is stale and not a clean stop, `scheduler_stale` goes to the targets
        of config.yaml, unless `notified(heartbeat)` says `fastflow status --check` sent it
        already. Returns whether it was stale."""
        if not previous or previous.get("stopped_at") or not previous.get("heartbeat"):
            return False
        try:
            beat = datetime.fromisoformat(previous["heartbeat"])
        except (TypeError, ValueError):
            return False
        interval = float(previous.get("heartbeat_interval_s") or defaults.HEARTBEAT_INTERVAL)
        age = (now - beat).total_seconds()
        if age <= defaults.HEARTBEAT_STALE_FACTOR * interval:
            return False
        if notified(previous["heartbeat"]):
            return True
        self.scheduler_stale(f"the last heartbeat was at {beat.isoformat(timespec='seconds')}, "
                             f"{age:.0f} s before this start (no clean stop): the daemon was "
                             "down or hung", now)
        return True

    def scheduler_stale(self, detail: str, now: datetime) -> int:
        """Send `scheduler_stale` to config.yaml's targets that want it; returns how many."""
        config = self.sources.config()
        count = 0
        for target in config.notifications if config else ():
            if NotifyEvent.SCHEDULER_STALE in target.events:
                self._add(target, Event(kind=NotifyEvent.SCHEDULER_STALE.value, at=now,
                                        detail=detail), now)
                count += 1
        return count

    # -- the loop's round ---------------------------------------------------------------------

    def tick(self, now: datetime, running: Iterable[tuple[str, str, datetime]],
             schedules: Iterable[Schedule], started: Callable[[str, str], bool]) -> None:
        """One round at `now`: `stuck` for the `running` runs (run id, pipeline, started at),
        `missed` for the slots of `schedules` (`started(run_id, pipeline)`), then send the
        groups whose window ended."""
        for run_id, pipeline, started_at in running:
            self._check_stuck(run_id, pipeline, started_at, now)
        moved = [self._check_missed(schedule, now, started) for schedule in schedules]
        if any(moved):
            with self._lock:
                self._save()
        with self._lock:
            ready = self.groups.due(now)
        for group in ready:
            self._send(group, now)

    @property
    def next_at(self) -> datetime | None:
        with self._lock:
            return self.groups.next_at

    def flush_all(self) -> None:
        """Send every waiting group now (a stopping daemon), then wait a little for them."""
        now = self.clock()
        with self._lock:
            ready = self.groups.due(datetime.max.replace(tzinfo=now.tzinfo))
        for group in ready:
            self._send(group, now)

    def stop(self, timeout: float = 5.0) -> None:
        self.flush_all()
        self.courier.wait_idle(timeout)
        self.courier.stop(timeout)

    def soft_limit(self, run_id: str, pipeline: str, event: Mapping) -> None:
        """Running run `run_id` went over a soft limit (`event`, told by its executor as the
        excursion starts): `soft_limit` now, once per run (its record does not tell it again)."""
        now = self.clock()
        self._running_events(run_id, pipeline, NotifyEvent.SOFT_LIMIT, now,
                             lambda tally, targets: soft_limit_events(tally, run_id, event,
                                                                      targets, now))

    def _check_stuck(self, run_id: str, pipeline: str, started_at: datetime, now: datetime) -> None:
        self._running_events(run_id, pipeline, NotifyEvent.STUCK, now,
                             lambda tally, targets: stuck_events(tally, run_id, started_at,
                                                                 targets, now))

    def _running_events(self, run_id: str, pipeline: str, kind: NotifyEvent, now: datetime,
                        decide: Callable[[Tally, list], tuple[Tally, list]]) -> None:
        """An event of running run `run_id` for the targets of `pipeline` that want `kind`:
        `decide(tally, targets)` says who hears what; the tally is saved when it did."""
        targets = [t for t in self.sources.targets(pipeline) if kind in t.events]
        if not targets:
            return
        with self._lock:
            tally, found = decide(self.tallies.get(pipeline, Tally()), targets)
            if found:
                self.tallies[pipeline] = tally
                self._save()
        for target, event_kind, detail in found:
            self._add(target, Event(kind=event_kind, at=now, pipeline=pipeline, run_id=run_id,
                                    status=RunStatus.RUNNING.value, detail=detail,
                                    run_url=self._run_url(pipeline, run_id)), now)

    def _check_missed(self, schedule: Schedule, now: datetime,
                      started: Callable[[str, str], bool]) -> bool:
        """`missed` for the slots of `schedule`, each target by its own grace; returns whether
        the slots checked moved on (the state is saved once per round)."""
        targets = [t for t in self.sources.targets(schedule.pipeline)
                   if NotifyEvent.MISSED in t.events]
        if not targets or not schedule.enabled:
            return False
        moved = False
        for target in targets:
            key = f"{schedule.id}/{target.name}"
            with self._lock:
                since = self.checked.get(key)
            if since is None:  # first seen: slots from now on (no flood of old ones)
                until, missed = now, []
            else:
                until, missed = missed_slots(schedule, datetime.fromisoformat(since),
                                             target.missed_grace, now,
                                             lambda run_id: started(run_id, schedule.pipeline))
            if until.isoformat() != since:
                with self._lock:
                    self.checked[key] = until.isoformat()
                moved = True
            for at in missed:
                self._add(target, Event(
                    kind=NotifyEvent.MISSED.value, at=now, pipeline=schedule.pipeline,
                    detail=f"schedule {schedule.id}: the slot of {at.isoformat()} had no run "
                           f"started within {target.missed_grace:g} s"), now)
        return moved

    # -- sending --------------------------------------------------------------------------------

    def _add(self, target: NotificationTarget, event: Event, now: datetime) -> None:
        with self._lock:
            opened = self.groups.add(target, event, now)
        if opened:
            self.sources.wake()

    def _run_url(self, pipeline: str, run_id: str | None) -> str | None:
        config = self.sources.config()
        if config is None or not config.site_url or not run_id:
            return None
        try:
            return f"{config.site_url}/{run_page_path(pipeline, run_id)}"
        except (ValueError, FastflowError):
            return None

    def _send(self, group: Group, now: datetime) -> None:
        target, message = group.target, compose(group.events)
        message_id = new_message_id(target.name, now)
        shown = shown_target(target)
        try:
            url = self._url(target)
        except FastflowError as exc:
            attempt = {"n": 1, "at": now.isoformat(), "outcome": "failed", "error": str(exc),
                       "took_s": 0.0}
            parcel = Parcel(message_id, target.name, shown, "", message, now)
            logger.warning("notification %s to %s not sent: %s", message_id, target.name, exc)
            self._report(entry(parcel, [attempt], "failed"))
            return
        self.courier.post(Parcel(message_id, target.name, shown, url, message, now))

    def _url(self, target: NotificationTarget) -> str:
        if target.secret is None:
            return target.url or ""
        config, root = self.sources.config(), self.sources.secrets_root()
        if config is None or root is None:
            raise FastflowError(f"no deployed configuration to read secret {target.secret} "
                                "from; push a valid .fastflow/ first")
        found = notification_urls(root, config, {target.secret: target.pipeline},
                                  self.sources.environ)
        return found[target.secret]

    def _report(self, data: dict) -> None:
        """Record one delivery's state on the branch (its file, and the recent list)."""
        with self._lock:
            self.recent = [data] + [r for r in self.recent if r.get("id") != data["id"]]
            self.recent = self.recent[:defaults.NOTIFY_RECENT]
            self._save()
        files = {record_path(data["id"]): json.dumps(data, indent=2).encode()}
        try:  # outside the lock: rendering reads the recent list (and the runs' summary)
            files.update(self.sources.pages())
        except Exception as exc:  # noqa: BLE001 - a page that fails to render is left out
            logger.warning("the site's overview was not refreshed for notification %s: %s",
                           data["id"], exc)
        self.store.write_files(files, f"notification {data['id']}: {data['outcome']}")
        self.store.flush()


def _safe(log: Callable[[], str]) -> str:
    try:
        return log()
    except (FastflowError, OSError, ValueError) as exc:
        logger.warning("the log of a run could not be read for its notification: %s", exc)
        return ""
