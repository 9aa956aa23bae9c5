"""What a schedule is: the frozen `Schedule` (cron, interval or one instant), its policies, and
the set that validation produces. Pure data: `fastflow.config.schedules` builds these from
`.fastflow/schedules.yaml` and pipeline.json; `planner` turns them into slots.
"""
from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping
from zoneinfo import ZoneInfo

from fastflow.defaults import SCHEDULES_FILE
from fastflow.model import Problem, Severity
from fastflow.schedule.cron import CronExpr, parse_cron
from fastflow.schedule.timevalues import format_duration, zone

DEFAULT_TIMEZONE = "UTC"
DEFAULT_MAX_CATCHUP = 10
UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

class Catchup(str, enum.Enum):
    """What happens to slots missed while the scheduler was not running."""

    NONE = "none"
    LATEST = "latest"
    ALL = "all"


class Overlap(str, enum.Enum):
    """What a slot does when a run of the same schedule is still running or waiting."""

    SKIP = "skip"
    QUEUE = "queue"
    ALLOW = "allow"
    REPLACE = "replace"


class ScheduleKind(str, enum.Enum):
    CRON = "cron"
    INTERVAL = "interval"
    AT = "at"


@dataclass(frozen=True)
class Schedule:
    """One validated schedule: what to run (pipeline, run configuration, env) and when.

    Exactly one of `cron`, `interval` (whole seconds, anchored to `start` or the epoch) or `at`
    is set, as `kind` says. Instants are timezone-aware; `timezone` is the IANA zone the cron
    is read in. `source` and `field` say where it was written, for messages.
    """

    id: str
    pipeline: str
    kind: ScheduleKind
    cron: CronExpr | None = None
    interval: int | None = None
    at: datetime | None = None
    timezone: str = DEFAULT_TIMEZONE
    start: datetime | None = None
    end: datetime | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    run_config: str | None = None
    catchup: Catchup = Catchup.LATEST
    catchup_window: int | None = None
    max_catchup: int = DEFAULT_MAX_CATCHUP
    skip_if_late: int | None = None
    overlap: Overlap = Overlap.SKIP
    enabled: bool = True
    source: str = SCHEDULES_FILE
    field: str = ""

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.timezone)

    @property
    def fingerprint(self) -> str:
        """A short hash of what decides the slots; a change makes the new definition start now."""
        timing = (self.kind.value, self.cron.text if self.cron else None, self.interval,
                  _iso(self.at), self.timezone, _iso(self.start), _iso(self.end), self.pipeline)
        return hashlib.sha256(repr(timing).encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        """The schedule as plain data (the daemon keeps its last valid set across restarts)."""
        return {
            "id": self.id, "pipeline": self.pipeline, "kind": self.kind.value,
            "cron": self.cron.text if self.cron else None, "interval": self.interval,
            "at": _iso(self.at), "timezone": self.timezone, "start": _iso(self.start),
            "end": _iso(self.end), "env": dict(self.env), "run_config": self.run_config,
            "catchup": self.catchup.value, "catchup_window": self.catchup_window,
            "max_catchup": self.max_catchup, "skip_if_late": self.skip_if_late,
            "overlap": self.overlap.value, "enabled": self.enabled, "source": self.source,
            "field": self.field,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Schedule:
        """The schedule `to_json` gave (raises KeyError or ValueError for other data)."""
        return cls(**{
            **data, "kind": ScheduleKind(data["kind"]),
            "cron": parse_cron(data["cron"]) if data.get("cron") else None,
            "at": _from_iso(data.get("at")), "start": _from_iso(data.get("start")),
            "end": _from_iso(data.get("end")), "env": dict(data.get("env") or {}),
            "catchup": Catchup(data["catchup"]), "overlap": Overlap(data["overlap"]),
        })

    def describe(self) -> str:
        if self.kind is ScheduleKind.CRON:
            return f"cron {self.cron.text}"  # type: ignore[union-attr]
        if self.kind is ScheduleKind.INTERVAL:
            return f"every {format_duration(self.interval)}"  # type: ignore[arg-type]
        return f"at {_iso(self.at)}"


@dataclass(frozen=True)
class ScheduleSet:
    """The outcome of validation: the usable schedules and every problem found."""

    schedules: tuple[Schedule, ...]
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.ERROR)

    def get(self, schedule_id: str) -> Schedule:
        for schedule in self.schedules:
            if schedule.id == schedule_id:
                return schedule
        raise KeyError(schedule_id)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _from_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
