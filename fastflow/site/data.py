"""What the status site is rendered from: `SiteData` (configuration, summaries, clock) and helpers.

Pure data, no I/O. The store/daemon (or `fastflow site build`) fills a `SiteData` from the
configuration and the results branch; the renderer turns it into pages.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping, Sequence

from fastflow.defaults import HEARTBEAT_INTERVAL, HEARTBEAT_STALE_FACTOR
from fastflow.errors import FastflowError
from fastflow.model import InvalidPipeline, Pipeline, Problem, RunStatus
from fastflow.record import RunRecord
from fastflow.schedule.spec import Schedule

SUMMARY_WINDOW = 30  # runs behind the overview's success rate and sparkline
DEFAULT_PAGE_SIZE = 50
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class PipelineSummary:
    """The overview's line for one pipeline: its last run and its recent history.

    `recent_statuses` and `recent_durations` are aligned, oldest first, at most 30 entries
    (`summarize_runs` builds one from records).
    """

    last_status: RunStatus | None = None
    last_run_id: str | None = None
    last_time: datetime | None = None
    last_duration_s: float | None = None
    recent_statuses: tuple[RunStatus, ...] = ()
    recent_durations: tuple[float | None, ...] = ()
    recent_run_ids: tuple[str, ...] = ()

    @property
    def success_rate(self) -> float | None:
        """Succeeded / finished among the recent runs (skipped and unfinished runs not counted)."""
        counted = [s for s in self.recent_statuses
                   if s.terminal and s is not RunStatus.SKIPPED]
        if not counted:
            return None
        return sum(s is RunStatus.SUCCEEDED for s in counted) / len(counted)


@dataclass(frozen=True)
class SiteData:
    """Everything the site shows besides the run records themselves.

    `now` is injected: the overview's "x minutes ago" and the heartbeat's staleness are computed
    against it, so the same data always renders the same bytes. `next_runs` maps a pipeline to
    (next instant, IANA zone name) or None; `schedules` holds the validated schedules per pipeline
    (from `.fastflow/schedules.yaml` and pipeline.json); `schedule_words` overrides the generated
    description of a pipeline's schedules. Times other than next runs are shown in
    `display_timezone`.
    """

    now: datetime
    pipelines: Mapping[str, Pipeline] = field(default_factory=dict)
    invalid: Mapping[str, InvalidPipeline] = field(default_factory=dict)
    config_problems: Sequence[Problem] = ()
    summaries: Mapping[str, PipelineSummary] = field(default_factory=dict)
    next_runs: Mapping[str, tuple[datetime, str] | None] = field(default_factory=dict)
    schedules: Mapping[str, Sequence[Schedule]] = field(default_factory=dict)
    schedule_words: Mapping[str, str] = field(default_factory=dict)
    heartbeat: datetime | None = None
    stopped_at: datetime | None = None  # the daemon exited cleanly then (not stale: stopped)
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL
    # Supervised pipelines (`results.read.supervision_view`: up since, restarts in the last day,
    # next restart, given up), by name
    supervision: Mapping[str, Mapping] = field(default_factory=dict)
    # The last notification deliveries, newest first (`recent` of state/notifications.json,
    # docs/notifications.md): {id, target, to, outcome, queued_at, events, attempts}
    notifications: Sequence[Mapping] = ()
    # Flows by name: {"description": ..., "last": the newest flow run record (its JSON) or None}
    flows: Mapping[str, Mapping] = field(default_factory=dict)
    title: str = "Fast-Flow"
    display_timezone: str = "UTC"

    def pipeline_names(self) -> list[str]:
        """Every pipeline the overview lists: valid, invalid, and those with history only."""
        return sorted(set(self.pipelines) | set(self.invalid) | set(self.summaries))

    @property
    def heartbeat_stale(self) -> bool:
        """True when the last heartbeat is older than 3 heartbeat intervals at `now`."""
        if self.heartbeat is None:
            return False
        age = (self.now - self.heartbeat).total_seconds()
        return age > HEARTBEAT_STALE_FACTOR * self.heartbeat_interval_s


def has_page(name: object) -> bool:
    """True when `name` is safe as one path segment of the site, so it can have pages.

    A pipeline folder with another name (`bad name`, `<script>`) is invalid: the site lists it
    with its problems, without a page or a link, and never refuses to render because of it."""
    return isinstance(name, str) and _SAFE_NAME.fullmatch(name) is not None


def check_name(value: str, what: str) -> str:
    """`value` if it is safe as one path segment of the site, else a FastflowError."""
    if not has_page(value):
        raise FastflowError(
            f"cannot render a site page for {what} {value!r}: it must match "
            f"[A-Za-z0-9][A-Za-z0-9_.-]* (at most 128 characters); rename it or remove its record"
        )
    return value


def run_time(record: RunRecord) -> datetime | None:
    """The time that best dates a run: finished, else started, else queued."""
    return record.finished_at or record.started_at or record.queued_at


def summarize_runs(runs: Sequence[RunRecord], window: int = SUMMARY_WINDOW) -> PipelineSummary:
    """The `PipelineSummary` of one pipeline from its runs, newest first (at least `window`)."""
    if not runs:
        return PipelineSummary()
    last = runs[0]
    recent = list(reversed(runs[:window]))
    return PipelineSummary(
        last_status=last.status,
        last_run_id=last.run_id,
        last_time=run_time(last),
        last_duration_s=last.duration_s,
        recent_statuses=tuple(r.status for r in recent),
        recent_durations=tuple(r.duration_s for r in recent),
        recent_run_ids=tuple(r.run_id for r in recent),
    )


def utc(moment: datetime) -> datetime:
    """`moment` in UTC (it must be aware)."""
    return moment.astimezone(timezone.utc)
