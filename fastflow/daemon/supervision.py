"""Supervision of long-running pipelines: restarts after a crash, planned restarts, giving up.

A pipeline is supervised when its pipeline.json sets `restart_on_crash` or `restart_interval`
(docs/supervision.md). The decisions are pure functions of a pipeline's `Supervised` state, its
`DaemonPolicy`, what happened and `now`:

- `started`: an instance is up (`up_since`); with `restart_interval` its planned restart is
  pending at once (`interval`);
- `ended`: a run's final outcome. A crash (`failed`, `timed_out`, `oom_killed`, `lost`) of a
  `restart_on_crash` pipeline plans a restart (`crash`) after the cooldown, doubled per
  consecutive crash up to `restart_cooldown_max` (a run up `restart_healthy_after` starts the
  doubling afresh); the `restart_limit`-th crash within `restart_limit_window` gives up instead.
  `succeeded` and `cancelled` (by a person, or the planned restart's stop) are not crashes;
- `reset`: `fastflow supervise reset NAME` or a push that changes a given-up pipeline clears the
  count and the given-up state, and plans a restart at once (`reset`);
- `queued`: the pending restart's run is journalled.

Each pending restart carries its run id (`record.restart_run_id`, from the run it follows), and
the state of every pipeline is committed to the results branch (`state/supervision.json`,
journalled by the results store before it is acted on), so a daemon restart or a kill -9
neither loses a pending restart nor queues it twice: the run id is known once journalled.
`handled` (the last run whose outcome was decided) makes `ended` idempotent.

`Supervisor` holds the states of one daemon and does the I/O through callables it is given:
the daemon loop calls it at a run's start and end, and every tick (`due` restarts, resets by
push); it returns `Event`s (given up, restart planned, reset) for alerts.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Callable, Iterable, Mapping
from zoneinfo import ZoneInfo

from fastflow.model import DaemonPolicy, RunStatus
from fastflow.record import ErrorInfo, RunRecord, Trigger, restart_run_id
from fastflow.results.layout import SUPERVISION_STATE
from fastflow.schedule.cron import cron_instants, parse_cron

logger = logging.getLogger(__name__)

STATE_NAME = SUPERVISION_STATE  # state/supervision.json on the results branch
SCHEMA = 1
CRASHES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.OOM_KILLED, RunStatus.LOST})
RESTARTS_KEPT = timedelta(days=1)  # restart times kept: "restarts in the last day"
CRASH = "crash"
INTERVAL = "interval"
RESET = "reset"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class PendingRestart:
    """A restart the daemon will queue at `at`: its run id, why, and the run it follows
    (`crash`, `reset`) or replaces (`interval`: that run is stopped when this one is queued).
    `queued`: an interval restart's run is journalled, its old instance being stopped.
    `run_config`: the run configuration of the run it follows, which the restart uses too."""

    run_id: str
    at: datetime
    reason: str
    after: str
    queued: bool = False
    run_config: str | None = None

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "at": self.at.isoformat(), "reason": self.reason,
                "after": self.after, "queued": self.queued, "run_config": self.run_config}

    @classmethod
    def from_json(cls, data: Mapping) -> "PendingRestart":
        return cls(str(data["run_id"]), datetime.fromisoformat(data["at"]), str(data["reason"]),
                   str(data["after"]), bool(data.get("queued", False)), data.get("run_config"))


@dataclass(frozen=True)
class Supervised:
    """One supervised pipeline's state (see the module doc)."""

    consecutive: int = 0  # crashes since the last run that was not one (or was up long enough)
    crashes: tuple[datetime, ...] = ()  # crash times within the start-limit window
    restarts: tuple[datetime, ...] = ()  # times restarts were queued, within the last day
    pending: PendingRestart | None = None
    given_up_at: datetime | None = None
    given_up_after: str | None = None  # the run whose crash reached the start limit
    given_up_tree: str | None = None  # the pipeline's tree then: a push changing it resets
    given_up_run_config: str | None = None  # the run configuration a reset restarts with
    running: str | None = None  # the run id of the instance that is up
    up_since: datetime | None = None
    handled: str | None = None  # the last run whose outcome was decided here

    @property
    def given_up(self) -> bool:
        return self.given_up_at is not None

    def to_json(self) -> dict:
        return {
            "consecutive": self.consecutive,
            "crashes": [t.isoformat() for t in self.crashes],
            "restarts": [t.isoformat() for t in self.restarts],
            "pending": self.pending.to_json() if self.pending else None,
            "given_up": self.given_up,
            "given_up_at": _iso(self.given_up_at),
            "given_up_after": self.given_up_after,
            "given_up_tree": self.given_up_tree,
            "given_up_run_config": self.given_up_run_config,
            "running": self.running,
            "up_since": _iso(self.up_since),
            "handled": self.handled,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> "Supervised":
        pending = data.get("pending")
        return cls(
            consecutive=int(data.get("consecutive", 0)),
            crashes=tuple(datetime.fromisoformat(t) for t in data.get("crashes") or ()),
            restarts=tuple(datetime.fromisoformat(t) for t in data.get("restarts") or ()),
            pending=PendingRestart.from_json(pending) if pending else None,
            given_up_at=_time(data.get("given_up_at")),
            given_up_after=data.get("given_up_after"),
            given_up_tree=data.get("given_up_tree"),
            given_up_run_config=data.get("given_up_run_config"),
            running=data.get("running"),
            up_since=_time(data.get("up_since")),
            handled=data.get("handled"),
        )


@dataclass(frozen=True)
class Event:
    """A change people may want to hear about: `given_up` (notify once: it happens once per
    give-up, at the crash that reached the limit), `restart_planned`, `reset`."""

    kind: str
    pipeline: str
    at: datetime
    run_id: str | None  # the run it is about (the crashed run; the planned restart's)
    message: str


# --- pure decisions -----------------------------------------------------------------------------


def cooldown(policy: DaemonPolicy, consecutive: int) -> float:
    """Seconds before the restart after the `consecutive`-th crash in a row (1, 2, ...):
    `restart_cooldown` doubled per crash after the first, at most `restart_cooldown_max`."""
    wait = policy.restart_cooldown * 2.0 ** max(0, min(consecutive - 1, 64))
    return min(wait, max(policy.restart_cooldown_max, policy.restart_cooldown))


def planned_restart_at(interval: float | str, up_since: datetime) -> datetime:
    """When an instance up since `up_since` is restarted by `restart_interval`: that many
    seconds later, or the cron's next time (UTC) after its start."""
    if isinstance(interval, str):
        return next(cron_instants(parse_cron(interval), ZoneInfo("UTC"), up_since)).at
    return up_since + timedelta(seconds=float(interval))


def started(state: Supervised, pipeline: str, run_id: str, at: datetime,
            policy: DaemonPolicy, run_config: str | None = None) -> Supervised:
    """An instance of `pipeline` (run `run_id`) started at `at`: it is up; a pending crash or
    reset restart is superseded (the pipeline is up again); with `restart_interval` its
    planned restart is pending."""
    if state.running == run_id:
        return state  # a re-attached run: its planned restart stays as it was
    pending = None
    if policy.restart_interval is not None:
        planned = planned_restart_at(policy.restart_interval, at)
        pending = PendingRestart(restart_run_id(pipeline, run_id, INTERVAL, planned), planned,
                                 INTERVAL, run_id, run_config=run_config)
    return replace(state, running=run_id, up_since=at, pending=pending)


def ended(state: Supervised, record: RunRecord, policy: DaemonPolicy, tree: str | None,
          now: datetime) -> tuple[Supervised, tuple[Event, ...]]:
    """Decide after the final outcome of `record` (a run of the supervised pipeline whose
    tree is `tree` now); idempotent: a record seen before changes nothing."""
    if record.run_id == state.handled or not record.status.terminal \
            or record.status is RunStatus.SKIPPED or (record.error and record.error.kind == "refused"):
        return state, ()  # a refused request never ran: it is no crash
    name = record.pipeline
    at = record.finished_at or now
    new = replace(state, handled=record.run_id)
    if new.running == record.run_id:
        new = replace(new, running=None, up_since=None)
    pending = new.pending
    if pending is not None and pending.reason == INTERVAL and pending.after == record.run_id:
        new = replace(new, pending=None)
        if pending.queued:  # stopped for its planned restart: not a crash, the new one is queued
            return new, ()
    if record.status not in CRASHES or not policy.restart_on_crash:
        return replace(new, consecutive=0), ()
    if new.given_up:
        return new, ()
    consecutive = new.consecutive
    if (record.duration_s or 0.0) >= policy.restart_healthy_after:
        consecutive = 0  # it was up long enough: this crash starts the doubling afresh
    window = timedelta(seconds=policy.restart_limit_window)
    crashes = tuple(t for t in new.crashes if t > at - window) + (at,)
    if len(crashes) >= policy.restart_limit:
        message = (f"{name}: given up after {len(crashes)} crashes within "
                   f"{policy.restart_limit_window:g}s (restart_limit {policy.restart_limit}); "
                   f"the last: {record.run_id} {record.status.value}. Push a change to the "
                   f"pipeline or run `fastflow supervise reset {name}`")
        return replace(new, consecutive=consecutive + 1, crashes=crashes, pending=None,
                       given_up_at=at, given_up_after=record.run_id, given_up_tree=tree,
                       given_up_run_config=record.run_config), (
            Event("given_up", name, at, record.run_id, message),)
    consecutive += 1
    restart_at = at + timedelta(seconds=cooldown(policy, consecutive))
    planned = PendingRestart(restart_run_id(name, record.run_id, CRASH, restart_at), restart_at,
                             CRASH, record.run_id, run_config=record.run_config)
    message = (f"{name}: {record.run_id} {record.status.value}; restart {planned.run_id} at "
               f"{restart_at.isoformat()} (crash {consecutive} in a row)")
    return replace(new, consecutive=consecutive, crashes=crashes, pending=planned), (
        Event("restart_planned", name, at, planned.run_id, message),)


def explained(state: Supervised, record: RunRecord) -> RunRecord:
    """`record` with its error saying why, when it is the instance a planned restart stopped
    (else as it is): `stopped for its planned restart <run id> (restart_interval)`, so the
    history tells it from a person's cancel."""
    pending = state.pending
    if pending is None or pending.reason != INTERVAL or not pending.queued \
            or pending.after != record.run_id or record.status is not RunStatus.CANCELLED:
        return record
    return replace(record, error=ErrorInfo(
        "cancelled", f"stopped for its planned restart {pending.run_id} (restart_interval)"))


def reset(state: Supervised, pipeline: str, now: datetime, why: str
          ) -> tuple[Supervised, tuple[Event, ...]]:
    """Clear the crash count and the given-up state (`why`: `supervise reset`, a push); a
    given-up pipeline is restarted at once (`reset`) unless an instance is up."""
    pending = state.pending
    if state.given_up and state.running is None:
        after = state.given_up_after or pipeline
        pending = PendingRestart(restart_run_id(pipeline, after, RESET, now), now, RESET, after,
                                 run_config=state.given_up_run_config)
    new = replace(state, consecutive=0, crashes=(), given_up_at=None, given_up_after=None,
                  given_up_tree=None, given_up_run_config=None, pending=pending)
    message = f"{pipeline}: supervision reset by {why}" + (
        f"; restart {pending.run_id} now" if pending is not state.pending else "")
    return new, (Event("reset", pipeline, now, pending.run_id if pending else None, message),)


def due(state: Supervised, now: datetime) -> PendingRestart | None:
    """The pending restart to queue at `now` (None: none, or not yet)."""
    pending = state.pending
    return pending if pending is not None and not pending.queued and pending.at <= now else None


def queued(state: Supervised, now: datetime) -> Supervised:
    """The pending restart's run is journalled at `now`: a crash or reset restart is done; an
    interval restart stays pending (`queued`) until the instance it replaces has ended."""
    pending = state.pending
    if pending is None:
        return state
    restarts = tuple(t for t in state.restarts if t > now - RESTARTS_KEPT) + (now,)
    if pending.reason == INTERVAL:
        return replace(state, restarts=restarts, pending=replace(pending, queued=True))
    return replace(state, restarts=restarts, pending=None)


def drop_pending(state: Supervised) -> Supervised:
    return replace(state, pending=None)


def next_wake(states: Iterable[Supervised]) -> datetime | None:
    """The earliest time a pending restart is due (None: none pending)."""
    times = [s.pending.at for s in states if s.pending is not None and not s.pending.queued]
    return min(times) if times else None


def states_to_json(states: Mapping[str, Supervised]) -> dict:
    return {"schema": SCHEMA, "pipelines": {n: s.to_json() for n, s in sorted(states.items())}}


def states_from_json(data: Mapping | None, source: str) -> dict[str, Supervised]:
    """The states `states_to_json` wrote; `ValueError` naming `source` when it cannot be read."""
    if not data:
        return {}
    try:
        return {str(n): Supervised.from_json(s) for n, s in (data.get("pipelines") or {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{source}: cannot be read ({type(exc).__name__}: {exc})") from None


# --- the daemon's holder -----------------------------------------------------------------------


@dataclass
class SupervisorHooks:
    """What the supervisor needs from the daemon.

    `policy(name)`: the active pipeline's `DaemonPolicy` and tree (None: not active, or
    disabled); `submit(name, trigger, run_id, run_config)`: queue a run (raises
    `FastflowError` when it cannot);
    `knows(run_id, name)`: journalled or recorded; `cancel(run_id)`: stop a running run;
    `active(name, besides)`: a run of the pipeline other than `besides` is queued or running
    (journalled); `save(data)`: journal
    `state/supervision.json`; `notify(event)`: alerts."""

    policy: Callable[[str], tuple[DaemonPolicy, str] | None]
    submit: Callable[[str, Trigger, str, str | None], object]
    knows: Callable[[str, str], bool]
    cancel: Callable[[str], object]
    save: Callable[[dict], None]
    active: Callable[[str, str], bool] = lambda name, besides: False
    notify: Callable[[Event], None] = lambda event: None


@dataclass
class Supervisor:
    """The supervision states of one daemon, and the I/O around the pure decisions."""

    hooks: SupervisorHooks
    states: dict[str, Supervised] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _stopping: set[str] = field(default_factory=set)  # runs asked to stop for a planned restart

    def load(self, data: Mapping | None, source: str) -> None:
        with self._lock:
            self.states = states_from_json(data, source)

    def data(self) -> dict:
        """The states as `state/supervision.json` holds them."""
        with self._lock:
            return states_to_json(self.states)

    def _set(self, name: str, state: Supervised) -> None:
        if self.states.get(name) == state:
            return
        self.states[name] = state
        self.hooks.save(states_to_json(self.states))

    def _emit(self, events: Iterable[Event]) -> None:
        for event in events:
            (logger.warning if event.kind == "given_up" else logger.info)(
                "supervision: %s", event.message)
            try:
                self.hooks.notify(event)
            except Exception as exc:  # noqa: BLE001 - an alert never stops supervision
                logger.error("supervision: alert for %s of %s failed: %s", event.kind,
                             event.pipeline, exc)

    def run_started(self, pipeline: str, run_id: str, at: datetime,
                    run_config: str | None = None) -> None:
        """A run of `pipeline` (with `run_config`) started at `at`."""
        found = self.hooks.policy(pipeline)
        if found is None or not found[0].supervised:
            return
        with self._lock:
            self._set(pipeline, started(self.states.get(pipeline, Supervised()), pipeline,
                                        run_id, at, found[0], run_config))

    def run_ended(self, record: RunRecord, now: datetime) -> RunRecord:
        """`record` is final (called before it is stored, so the decision is journalled
        first: a kill -9 between the two re-derives the record, never the decision).
        Returns the record to store (`explained`)."""
        found = self.hooks.policy(record.pipeline)
        with self._lock:
            state = self.states.get(record.pipeline)
            if found is None or (not found[0].supervised and state is None):
                if state is not None and state.running == record.run_id:  # e.g. disabled
                    self._set(record.pipeline, replace(state, running=None, up_since=None))
                return record
            record = explained(state or Supervised(), record)
            new, events = ended(state or Supervised(), record, found[0], found[1], now)
            self._stopping.discard(record.run_id)
            self._set(record.pipeline, new)
        self._emit(events)
        return record

    def reset(self, pipeline: str, now: datetime, why: str) -> bool:
        """Clear `pipeline`'s crash count and given-up state; False when it has none."""
        with self._lock:
            state = self.states.get(pipeline)
            if state is None:
                return False
            new, events = reset(state, pipeline, now, why)
            self._set(pipeline, new)
        self._emit(events)
        return True

    def tick(self, now: datetime) -> datetime | None:
        """Forget pipelines no longer supervised (removed, disabled, their fields gone) once
        no run of theirs is up; reset given-up pipelines whose tree a push changed; queue the
        restarts due; ask an instance replaced by a queued planned restart to stop. Returns
        the next due time."""
        with self._lock:
            names = sorted(self.states)
        for name in names:
            found = self.hooks.policy(name)
            with self._lock:
                state = self.states[name]
                if (found is None or not found[0].supervised) and state.running is None:
                    logger.info("supervision: %s is no longer supervised; its state is dropped",
                                name)
                    del self.states[name]
                    self.hooks.save(states_to_json(self.states))
                    continue
            if state.given_up and found is not None and found[1] != state.given_up_tree:
                self.reset(name, now, "a push that changed the pipeline")
            self._restart_due(name, now, found)
        with self._lock:
            return next_wake(self.states.values())

    def _restart_due(self, name: str, now: datetime,
                     found: tuple[DaemonPolicy, str] | None) -> None:
        with self._lock:
            state = self.states[name]
            pending = due(state, now)
            if pending is None:
                self._stop_replaced(state)
                return
            wanted = found is not None and (found[0].restart_interval is not None
                                            if pending.reason == INTERVAL
                                            else found[0].restart_on_crash)
            if not wanted:
                logger.info("supervision: %s: restart %s dropped: the pipeline is no longer "
                            "active or supervised for it", name, pending.run_id)
                self._set(name, drop_pending(state))
                return
            if pending.reason == INTERVAL and state.running != pending.after:
                self._set(name, drop_pending(state))  # its instance ended meanwhile
                return
            known = self.hooks.knows(pending.run_id, name)
            if not known and pending.reason != INTERVAL and self.hooks.active(name, pending.after):
                logger.info("supervision: %s: restart %s not needed: a run of it is queued or "
                            "running (it is the instance now)", name, pending.run_id)
                self._set(name, drop_pending(state))
                return
            if not known:
                trigger = Trigger(kind="restart", reason=pending.reason,
                                  parent_run_id=pending.after)
                try:
                    self.hooks.submit(name, trigger, pending.run_id, pending.run_config)
                except Exception as exc:  # noqa: BLE001 - e.g. a full disk: retried next tick
                    logger.error("supervision: %s: restart %s not queued: %s; retried",
                                 name, pending.run_id, exc)
                    return
                logger.info("supervision: %s: queued restart %s (%s, after %s)", name,
                            pending.run_id, pending.reason, pending.after)
            self._set(name, queued(state, now))
            self._stop_replaced(self.states[name])

    def _stop_replaced(self, state: Supervised) -> None:
        """A queued planned restart: stop the instance it replaces (SIGTERM, the grace period,
        then SIGKILL, as a cancel), once per daemon; the new run starts when it ended
        (`max_instances`)."""
        pending = state.pending
        if pending is None or not pending.queued or pending.after in self._stopping:
            return
        self._stopping.add(pending.after)
        logger.info("supervision: stopping %s for its planned restart %s", pending.after,
                    pending.run_id)
        self.hooks.cancel(pending.after)

