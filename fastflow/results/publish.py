"""Publishing the status site on the results branch: the pages a finished run or a sync changes.

Pages live under `site/` on the branch, committed together with the run record that changed
them (`results.store`). A finished run re-renders only its run page, its pipeline's index and
newest history page, and the overview (see `fastflow.site.pages_for_new_run`); a sync that
changes the configuration re-renders the overview and the index of each changed pipeline.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime
from typing import Callable, Iterable, Mapping, Sequence

from fastflow.defaults import HEARTBEAT_INTERVAL
from fastflow.deploy.deployment import Deployment
from fastflow.model import RunStatus
from fastflow.record import RunRecord
from fastflow.results.read import supervision_views
from fastflow.results.store import ResultsStore
from fastflow.site import (
    DEFAULT_PAGE_SIZE,
    RECENT_FLOW_RUNS,
    PipelineSummary,
    SiteData,
    pages_for_new_run,
    render_flow_page,
    render_flow_run_page,
    render_overview,
    render_pipeline_index,
)

SITE_PREFIX = "site/"


def summaries_from_json(summary: Mapping) -> dict[str, PipelineSummary]:
    """`summary.json` of the results branch as the site's per-pipeline summaries."""
    found = {}
    for name, entry in (summary.get("pipelines") or {}).items():
        recent = entry.get("recent") or []
        last = recent[-1] if recent else {}
        finished = last.get("finished_at")
        found[name] = PipelineSummary(
            last_status=RunStatus(last["status"]) if last else None,
            last_run_id=last.get("run_id"),
            last_time=datetime.fromisoformat(finished) if finished else None,
            last_duration_s=last.get("duration_s"),
            recent_statuses=tuple(RunStatus(r["status"]) for r in recent),
            recent_durations=tuple(r.get("duration_s") for r in recent),
            recent_run_ids=tuple(r["run_id"] for r in recent),
        )
    return found


def runs_recorded(summary: Mapping, pipeline: str) -> int:
    return int(((summary.get("pipelines") or {}).get(pipeline) or {}).get("runs_recorded", 0))


def flow_summaries(store: ResultsStore) -> dict[str, dict]:
    """Each flow on the branch with its newest flow run record (for the overview): one read per
    flow, whatever the number of runs."""
    found = {}
    for flow in store.flows_on_branch():
        recent = store.recent_flow_runs(flow, limit=1)
        found[flow] = {"last": recent[0] if recent else None}
    return found


class SitePublisher:
    """Renders the pages to commit with each run record or deployment."""

    def __init__(self, store: ResultsStore, clock: Callable[[], datetime],
                 deployment: Callable[[], Deployment | None],
                 schedule_info: Callable[[Deployment], tuple[Mapping, Mapping]] | None = None,
                 heartbeat: Callable[[], datetime | None] = lambda: None,
                 heartbeat_interval_s: float = HEARTBEAT_INTERVAL,
                 stopped_at: Callable[[], datetime | None] = lambda: None,
                 title: str = "Fast-Flow",
                 supervision: Callable[[], Mapping | None] = lambda: None,
                 notifications: Callable[[], Sequence[Mapping]] = lambda: ()) -> None:
        self.store = store
        self.clock = clock
        self.deployment = deployment
        self.schedule_info = schedule_info  # deployment -> (schedules, next_runs) per pipeline
        self.heartbeat = heartbeat
        self.heartbeat_interval_s = heartbeat_interval_s
        self.stopped_at = stopped_at
        self.title = title
        self.supervision = supervision  # state/supervision.json as the daemon holds it
        self.notifications = notifications  # the last deliveries (daemon.alerts)
        self.lock = threading.Lock()  # pages and the record they belong to commit in order

    def site_data(self, summary: Mapping) -> SiteData:
        deployment = self.deployment()
        schedules, next_runs = ({}, {})
        if deployment is not None and self.schedule_info is not None:
            schedules, next_runs = self.schedule_info(deployment)
        now = self.clock()
        return SiteData(
            now=now,
            pipelines=deployment.pipelines if deployment else {},
            invalid=dict(deployment.invalid) if deployment else {},
            config_problems=tuple(deployment.errors) if deployment else (),
            summaries=summaries_from_json(summary),
            schedules=schedules,
            next_runs=next_runs,
            heartbeat=self.heartbeat(),
            heartbeat_interval_s=self.heartbeat_interval_s,
            stopped_at=self.stopped_at(),
            title=self.title,
            supervision=supervision_views(self.supervision(), now),
            notifications=tuple(self.notifications()),
            flows=flow_summaries(self.store),
        )

    def pages_for_run(self, record: RunRecord, log_text: str) -> dict[str, bytes]:
        """The site pages `record` changes, as results-branch paths."""
        summary = self.store.read_summary()
        listed = self.store.list_runs(record.pipeline, limit=DEFAULT_PAGE_SIZE + 1)
        earlier = [r for r in listed if r.run_id != record.run_id]
        recent = sorted([record, *earlier], key=lambda r: r.run_id, reverse=True)
        # A record already on the branch (a second owner of the run) is not counted twice, and
        # a listing shorter than asked is complete: the count never asks for runs that are not
        # there, whatever summary.json says (pages_for_new_run would refuse).
        total = runs_recorded(summary, record.pipeline) + (len(earlier) == len(listed))
        if len(listed) <= DEFAULT_PAGE_SIZE:
            total = len(recent)
        pages = pages_for_new_run(self.site_data(summary), record, log_text,
                                  recent[: DEFAULT_PAGE_SIZE + 1], total)
        return {SITE_PREFIX + path: body for path, body in pages.items()}

    def pages_for_flow_run(self, record: Mapping) -> dict[str, bytes]:
        """The site pages a flow run record (its JSON) changes, as results-branch paths: its
        page, its flow's page (the newest runs) and the overview. Call it each time the record
        is written (started, a task ended, finished); `store.write_files` commits them."""
        recent = [r for r in self.store.recent_flow_runs(record["flow"], RECENT_FLOW_RUNS)
                  if r["flow_run_id"] != record["flow_run_id"]]
        recent = sorted([dict(record), *recent], key=lambda r: r["flow_run_id"],
                        reverse=True)[:RECENT_FLOW_RUNS]
        data = self.site_data(self.store.read_summary())
        flows = dict(data.flows)
        flows[record["flow"]] = {**flows.get(record["flow"], {}), "last": recent[0]}
        data = replace(data, flows=flows)
        pages = render_overview(data)
        pages.update(render_flow_run_page(data, record))
        pages.update(render_flow_page(data, record["flow"], recent))
        return {SITE_PREFIX + path: body for path, body in pages.items()}

    def pages_for_pipelines(self, names: Iterable[str]) -> dict[str, bytes]:
        """The overview and the index pages of `names` (after a sync changed them)."""
        summary = self.store.read_summary()
        data = self.site_data(summary)
        pages = render_overview(data)
        for name in sorted(set(names)):
            if name not in data.pipelines:
                continue
            recent = self.store.list_runs(name, limit=DEFAULT_PAGE_SIZE)
            pages.update(render_pipeline_index(data, name, recent, runs_recorded(summary, name)))
        return {SITE_PREFIX + path: body for path, body in pages.items()}
