"""The whole status site rendered from a results branch: the library twin of `fastflow site`.

The daemon keeps `site/` on the branch up to date page by page (`results.publish`); this renders
every page at once into a folder, from the same sources: the run records and logs of the branch,
the pipelines of the working tree, and the deployed configuration (`state/deployment.json`:
invalid pipelines, configuration errors, next runs) with the working tree as fallback.
"""
from __future__ import annotations

import functools
from datetime import datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fastflow.config.schedules import check_schedules, read_schedules_file
from fastflow.defaults import HEARTBEAT_INTERVAL
from fastflow.deploy.workspace import flow_names
from fastflow.model import InvalidPipeline, Problem, Severity
from fastflow.record import RunRecord
from fastflow.results.publish import flow_summaries, summaries_from_json
from fastflow.results.read import (
    Results,
    configuration_view,
    daemon_status,
    supervision_status,
)
from fastflow.schedule.spec import Schedule
from fastflow.site import SiteData, render_all, render_flow_pages, write_pages

DEPLOYED = "deployed configuration"  # the `file` of problems known only as messages


def _schedules(results: Results) -> dict[str, list[Schedule]]:
    workspace = results.workspace
    if workspace is None:
        return {}
    discovery = workspace.discovery
    found = check_schedules(read_schedules_file(workspace.root), discovery.pipelines,
                            root=workspace.root, invalid_pipelines=tuple(discovery.invalid),
                            flows=flow_names(workspace))
    by_pipeline: dict[str, list[Schedule]] = {}
    for schedule in found.schedules:
        by_pipeline.setdefault(schedule.pipeline, []).append(schedule)
    return by_pipeline


def _invalid(results: Results, config: dict) -> dict[str, InvalidPipeline]:
    """Invalid pipelines with their problems: the working tree's carry file and field; those
    known only from the deployment carry its messages."""
    tree = dict(results.workspace.discovery.invalid) if results.workspace else {}
    if config["from"] == "working tree":
        return tree
    return {name: tree.get(name) or InvalidPipeline(name, Path(name), tuple(
                Problem(DEPLOYED, "", message, pipeline=name) for message in messages))
            for name, messages in config["invalid"].items()}


def _problems(results: Results, config: dict) -> tuple[Problem, ...]:
    if config["from"] == "working tree":
        return tuple(p for p in results.workspace.discovery.problems if p.severity is Severity.ERROR)
    return tuple(Problem(DEPLOYED, "", message) for message in config["errors"])


def site_data(results: Results, now: datetime) -> SiteData:
    """The `SiteData` of the repository: configuration, summaries, next runs, heartbeat."""
    config = configuration_view(results, now)
    daemon = daemon_status(results, now, None)
    next_runs = {name: (datetime.fromisoformat(entry["at"]), entry["timezone"])
                 for name, entry in config["next_runs"].items()}
    return SiteData(
        now=now,
        pipelines=dict(results.workspace.discovery.pipelines) if results.workspace else {},
        invalid=_invalid(results, config),
        config_problems=_problems(results, config),
        summaries=summaries_from_json(results.store.read_summary()),
        next_runs=next_runs,
        schedules=_schedules(results),
        heartbeat=datetime.fromisoformat(daemon["heartbeat"]) if daemon else None,
        heartbeat_interval_s=daemon["interval_s"] if daemon else HEARTBEAT_INTERVAL,
        stopped_at=datetime.fromisoformat(daemon["stopped_at"])
        if daemon and daemon.get("stopped_at") else None,
        supervision=supervision_status(results, now),
        notifications=tuple((results.store.read_state("notifications") or {}).get("recent")
                            or ()),
        flows=flow_summaries(results.store),
    )


def all_runs(results: Results) -> tuple[dict[str, list[RunRecord]], dict[str, str]]:
    """Every run on the branch per pipeline (newest first) and every log by run id."""
    runs: dict[str, list[RunRecord]] = {}
    logs: dict[str, str] = {}
    for name in results.pipelines_on_branch():
        records = results.store.list_runs(name, limit=10**9)
        runs[name] = records
        for record in records:
            logs[record.run_id] = results.store.read_log(record.run_id, name)
    return runs, logs


def build_site_from_branch(results: Results, out_dir: Path, now: datetime) -> list[str]:
    """Render the whole site into `out_dir`; returns the relative paths written (or kept)."""
    results.require_branch()
    runs, logs = all_runs(results)
    data = site_data(results, now)
    pages = render_all(data, runs, logs)
    for flow in results.store.flows_on_branch():
        pages.update(render_flow_pages(data, flow, results.store.recent_flow_runs(flow, 10**9)))
    return write_pages(pages, Path(out_dir))


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # the CLI prints the URL; a line per request would drown it


def make_server(folder: Path, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server for the static files of `folder` (port 0: any free port); the caller runs
    `serve_forever()` and closes it."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    return ThreadingHTTPServer((host, port), handler)
