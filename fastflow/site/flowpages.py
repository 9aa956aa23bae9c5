"""The flow pages of the status site: one page per flow run (its DAG as inline SVG, its tasks
linked to their run pages) and one page per flow (its newest runs, a chart of their durations).

    flows/<flow>/index.html                          a flow and its newest runs
    flows/<flow>/<YYYY>/<MM>/<flow_run_id>.html      one flow run

A flow run record comes in as its JSON (`flow.record.FlowRunRecord.to_json()`, the file on the
results branch): the site sits below `flow` in the layout and reads plain data. Same input,
same bytes.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Sequence

from markupsafe import Markup

from fastflow.humanize import format_time
from fastflow.site import charts, views
from fastflow.site.dag import dag_svg, nodes_of
from fastflow.site.data import SiteData, has_page
from fastflow.site.render import _page

RECENT_FLOW_RUNS = 50  # flow runs listed on a flow's page


def flow_path(flow: str) -> str:
    """The site path of a flow's page (`views.flow_page_path`)."""
    return views.flow_page_path(flow)


def flow_run_path(flow: str, flow_run_id: str) -> str:
    """The site path of one flow run's page (`views.flow_run_page_path`)."""
    return views.flow_run_page_path(flow, flow_run_id)


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _task_href(root: str, task: Mapping) -> str | None:
    run_id, pipeline = task.get("run_id"), task.get("pipeline")
    started = task.get("status") not in ("pending", "skipped", None)
    if started and isinstance(run_id, str) and isinstance(pipeline, str) \
            and has_page(run_id) and has_page(pipeline):
        return root + views.run_page_path(pipeline, run_id)
    return None


def _task_rows(record: Mapping, root: str) -> list[dict[str, Any]]:
    rows = []
    for task in record.get("tasks") or ():
        error = task.get("error") or {}
        why = task.get("reason") or error.get("message") or ""
        rows.append({
            "id": task["id"], "status": views.status_view(task.get("status")),
            "href": _task_href(root, task), "run_id": task.get("run_id") or "",
            "after": ", ".join(task.get("depends_on") or ()), "when": task.get("when", "success"),
            "attempts": task.get("attempts") or "", "duration": views.duration_text(task.get("duration_s")),
            "why": why, "reused": task.get("reused_from") or "",
        })
    return rows


def flow_dag(record: Mapping, root: str) -> Markup:
    """The DAG of a flow run as inline SVG, nodes linking to the task runs' pages."""
    nodes = nodes_of(record.get("tasks") or (), status_of=views.status_view,
                     duration_of=views.duration_text, href_of=lambda t: _task_href(root, t))
    return Markup(dag_svg(nodes, label=f"Tasks of flow run {record['flow_run_id']} of "
                          f"{record['flow']}, coloured by status"))


def render_flow_run_page(data: SiteData, record: Mapping) -> dict[str, bytes]:
    """One flow run's page: status, trigger, commit, params, timings, the DAG and the tasks."""
    path = flow_run_path(record["flow"], record["flow_run_id"])
    root = "../" * path.count("/")
    zone = data.display_timezone
    trigger = record.get("trigger") or {}
    timings = [("Queued", format_time(_time(record.get("queued_at")), zone)),
               ("Started", format_time(_time(record.get("started_at")), zone)),
               ("Finished", format_time(_time(record.get("finished_at")), zone)),
               ("Duration", views.duration_text(record.get("duration_s")))]
    error = record.get("error") or {}
    return _page(
        "flowrun.html", path, data, r=record, status=views.status_view(record.get("status")),
        flow_href=root + flow_path(record["flow"]), dag=flow_dag(record, root),
        tasks=_task_rows(record, root), timings=[t for t in timings if t[1]],
        trigger=str(trigger.get("kind") or "manual")
        + (f" {trigger['schedule_id']}" if trigger.get("schedule_id") else ""),
        sha=(record.get("commit") or {}).get("sha") or "",
        short_sha=((record.get("commit") or {}).get("sha") or "")[:12],
        rerun_of=record.get("rerun_of") or "",
        params=sorted((str(k), str(v)) for k, v in (record.get("params") or {}).items()),
        reason=error.get("message") or "")


def _run_rows(records: Sequence[Mapping], zone: str) -> list[dict[str, Any]]:
    rows = []
    for record in records:
        when = _time(record.get("finished_at")) or _time(record.get("started_at"))
        counts: dict[str, int] = {}
        for task in record.get("tasks") or ():
            counts[task.get("status")] = counts.get(task.get("status"), 0) + 1
        rows.append({
            "id": record["flow_run_id"], "status": views.status_view(record.get("status")),
            "href": flow_run_path(record["flow"], record["flow_run_id"]).split("/", 2)[2],
            "when": format_time(when, zone), "when_iso": when.isoformat() if when else "",
            "trigger": str((record.get("trigger") or {}).get("kind") or "manual"),
            "duration": views.duration_text(record.get("duration_s")),
            "tasks": ", ".join(f"{n} {views.status_view(s).label}" for s, n in sorted(
                counts.items(), key=lambda kv: str(kv[0]))),
        })
    return rows


def render_flow_page(data: SiteData, flow: str, records: Sequence[Mapping],
                     description: str = "", total_runs: int | None = None) -> dict[str, bytes]:
    """A flow's page: its newest runs (newest first, as given) and a chart of their durations."""
    window = list(records[:RECENT_FLOW_RUNS])
    bars = [charts.Bar(None if r.get("duration_s") is None else float(r["duration_s"]),
                       r.get("status"), f"{r['flow_run_id']}: "
                       f"{views.duration_text(r.get('duration_s')) or 'no duration'}, "
                       f"{views.status_view(r.get('status')).label}") for r in reversed(window)]
    chart = Markup(charts.bar_chart(bars, label=f"Durations of the last {len(window)} runs of "
                                    f"flow {flow}", x_caption=f"last {len(window)} runs, oldest "
                                    "left")) if window else None
    return _page("flow.html", flow_path(flow), data, name=flow, description=description,
                 runs=_run_rows(window, data.display_timezone), chart=chart,
                 total_runs=len(records) if total_runs is None else total_runs,
                 dag=flow_dag(window[0], "../../") if window else None)


def render_flow_pages(data: SiteData, flow: str, records: Sequence[Mapping],
                      description: str = "") -> dict[str, bytes]:
    """A flow's page and the page of each of its runs (`records` newest first)."""
    pages = render_flow_page(data, flow, records, description)
    for record in records:
        pages.update(render_flow_run_page(data, record))
    return pages
