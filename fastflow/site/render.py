"""Render the status site: `SiteData` + run records -> {relative path: bytes}. The jinja2 owner.

Pages (all links relative, so the site works from file://, a sub-path or any static host):

    index.html                              overview of every pipeline
    style.css                               the one stylesheet (light and dark themes)
    pipelines/<name>/index.html             a pipeline: config, charts, the newest runs
    pipelines/<name>/history-<k>.html       history page k; page 1 holds the OLDEST runs
    runs/<pipeline>/<YYYY>/<MM>/<run_id>.html   one run: attempts, resources, log

History pages are numbered from the oldest run, so a page never changes once it is full: adding a
run re-renders its run page, the newest history page (and the one before it when the new run
opens a page, for its "newer" link), the pipeline index and the overview. Output is
deterministic: the same input gives the same bytes, so unchanged pages make no git diff.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2
from markupsafe import Markup

from fastflow.humanize import (
    format_ago,
    format_bytes,
    format_cores,
    format_seconds,
    format_time,
    format_until,
    visible_controls,
)
from fastflow.record import RunRecord
from fastflow.schedule.describe import pipeline_schedule_words
from fastflow.site import charts, views
from fastflow.site.data import (
    DEFAULT_PAGE_SIZE,
    SiteData,
    check_name,
    has_page,
    run_time,
    summarize_runs,
)

STYLESHEET = "style.css"
RECENT_HISTORY_LINKS = 5  # the pipeline index links the first and the newest few history pages


def _visible(value: Any) -> Any:
    """Every `{{ value }}` of a page passes here before escaping: autoescape leaves NUL, ESC and
    BEL raw, which HTML must not hold, so text (a log line, a message) shows them as `\\x1b`."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible_controls(value)
    return value


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fastflow.site", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_visible,
    )
    env.globals["status_view"] = views.status_view
    return env


_ENV = _environment()


def _page(template: str, path: str, data: SiteData, **context: Any) -> dict[str, bytes]:
    root = "../" * path.count("/")
    html = _ENV.get_template(template).render(
        root=root, site_title=data.title, stylesheet=root + STYLESHEET, **context)
    return {path: html.encode("utf-8")}


def _stylesheet() -> bytes:
    return resources.files("fastflow.site").joinpath("templates", STYLESHEET).read_bytes()


def pipeline_path(name: str, block: int | None = None) -> str:
    """The site path of a pipeline's index page, or of its history page `block`."""
    check_name(name, "pipeline")
    return f"pipelines/{name}/" + ("index.html" if block is None else views.history_name(block))


def run_path(pipeline: str, run_id: str) -> str:
    """The site path of one run's page (`views.run_page_path`)."""
    return views.run_page_path(pipeline, run_id)


# --- overview ----------------------------------------------------------------------------------


def _heartbeat(data: SiteData) -> dict[str, str]:
    if data.heartbeat is None:
        return {"state": "none", "label": "no heartbeat recorded", "when": "", "ago": ""}
    if data.stopped_at is not None:
        return {"state": "stopped", "label": "stopped (fastflow serve exited cleanly)",
                "when": format_time(data.stopped_at, data.display_timezone),
                "ago": format_ago(data.stopped_at, data.now)}
    state = "stale" if data.heartbeat_stale else "ok"
    return {
        "state": state,
        "label": "stale: the scheduler may be down" if state == "stale" else "alive",
        "when": format_time(data.heartbeat, data.display_timezone),
        "ago": format_ago(data.heartbeat, data.now),
    }


def _next_run(data: SiteData, name: str) -> dict[str, str] | None:
    entry = data.next_runs.get(name)
    if entry is None:
        return None
    moment, zone = entry
    return {"when": format_time(moment, zone, seconds=False), "zone": zone,
            "until": format_until(moment, data.now), "iso": moment.isoformat()}


def _schedule_words(data: SiteData, name: str) -> list[str]:
    if name in data.schedule_words:
        return [data.schedule_words[name]]
    return pipeline_schedule_words(data.pipelines.get(name), data.schedules.get(name, ()))


def _supervision(data: SiteData, name: str) -> dict[str, Any] | None:
    """A supervised pipeline's state in words (docs/supervision.md), None when it is not."""
    view = data.supervision.get(name)
    if view is None:
        return None
    up, planned, given_up = view.get("up_since"), view.get("next_restart"), view.get("given_up_at")
    restarts = int(view.get("restarts_last_day") or 0)
    return {
        "given_up": bool(view.get("given_up")),
        "given_up_when": format_time(datetime.fromisoformat(given_up["at"]), data.display_timezone)
        if given_up else "",
        "given_up_after": view.get("given_up_after") or "",
        "up": f"up since {format_time(datetime.fromisoformat(up['at']), data.display_timezone)} "
              f"({format_ago(datetime.fromisoformat(up['at']), data.now)})" if up else "down",
        "restarts": f"{restarts} restart{'s' if restarts != 1 else ''} in the last day",
        "next": f"next restart {format_until(datetime.fromisoformat(planned['at']), data.now)} "
                f"({planned['reason']})" if planned else "",
    }


def _overview_row(data: SiteData, name: str) -> dict[str, Any]:
    summary = data.summaries.get(name)
    rate = summary.success_rate if summary else None
    counted = [s for s in (summary.recent_statuses if summary else ()) if s.terminal]
    last_id = summary.last_run_id if summary else None
    pipeline = data.pipelines.get(name)
    return {
        "name": name,
        "href": pipeline_path(name) if has_page(name) else None,
        "status": views.status_view(summary.last_status if summary else None),
        "invalid": name in data.invalid,
        "removed": pipeline is None and name not in data.invalid,
        "enabled": pipeline.enabled if pipeline else True,
        "tags": list(pipeline.tags) if pipeline else [],
        "last_run_href": run_path(name, last_id) if last_id else None,
        "last_when": format_time(summary.last_time, data.display_timezone) if summary else "",
        "last_ago": format_ago(summary.last_time, data.now) if summary else "",
        "last_duration": views.duration_text(summary.last_duration_s) if summary else "",
        "rate": "" if rate is None else f"{rate:.0%}",
        "rate_detail": "" if rate is None else
        f"{round(rate * len([s for s in counted if s.value != 'skipped']))} of "
        f"{len([s for s in counted if s.value != 'skipped'])} recent runs succeeded",
        "sparkline": Markup(charts.sparkline(
            views.sparkline_bars(data, name),
            label=f"Durations of the last {len(summary.recent_statuses) if summary else 0} runs "
                  f"of {name}")),
        "next_run": _next_run(data, name),
        "schedules": _schedule_words(data, name),
        "supervision": _supervision(data, name),
    }


OVERVIEW_NOTIFICATIONS = 10  # deliveries listed on the overview, newest first


def _notification_rows(data: SiteData) -> list[dict[str, Any]]:
    """The last deliveries of notifications in words (docs/notifications.md, "Delivery")."""
    rows = []
    for entry in list(data.notifications)[:OVERVIEW_NOTIFICATIONS]:
        attempts = list(entry.get("attempts") or [])
        errors = [a.get("error") for a in attempts if a.get("error")]
        try:
            when = format_time(datetime.fromisoformat(entry["queued_at"]), data.display_timezone)
        except (KeyError, TypeError, ValueError):
            when = ""
        events = [" ".join(filter(None, (e.get("pipeline"), e.get("kind"))))
                  for e in entry.get("events") or []]
        rows.append({
            "when": when, "target": str(entry.get("target") or ""), "to": str(entry.get("to") or ""),
            "events": ", ".join(events), "outcome": str(entry.get("outcome") or ""),
            "bad": entry.get("outcome") in ("failed", "dropped"),
            "attempts": f"{len(attempts)} attempt{'s' if len(attempts) != 1 else ''}",
            "error": errors[-1] if errors else "",
        })
    return rows


def render_overview(data: SiteData) -> dict[str, bytes]:
    """The overview page (`index.html`) and the stylesheet: every pipeline, problems, heartbeat."""
    rows = [_overview_row(data, name) for name in data.pipeline_names()]
    counts = {
        "pipelines": len(rows),
        "failing": sum(r["status"].family in ("bad", "warn") for r in rows),
        "invalid": len(data.invalid),
        "problems": len(data.config_problems),
    }
    invalid = [{"name": name, "problems": data.invalid[name].problems,
                "href": pipeline_path(name) if has_page(name) else None}
               for name in sorted(data.invalid)]
    given_up = [r for r in rows if r["supervision"] and r["supervision"]["given_up"]]
    pages = _page("overview.html", "index.html", data, rows=rows, counts=counts, invalid=invalid,
                  given_up=given_up, notifications=_notification_rows(data), flows=views.flow_rows(data.flows, data.display_timezone),
                  problems=list(data.config_problems), heartbeat=_heartbeat(data),
                  generated=format_time(data.now, data.display_timezone))
    pages[STYLESHEET] = _stylesheet()
    return pages


# --- pipeline pages ----------------------------------------------------------------------------


def _history_links(name: str, blocks: int, page_size: int, total: int) -> list[dict[str, Any]]:
    if blocks == 0:
        return []
    shown = sorted({1, *range(max(blocks - RECENT_HISTORY_LINKS + 1, 1), blocks + 1)},
                   reverse=True)
    return [{"block": k, "href": views.history_name(k),
             "range": f"{(k - 1) * page_size + 1}–{min(k * page_size, total)}"}
            for k in shown]


def _pipeline_charts(data: SiteData, name: str, runs: Sequence[RunRecord]) -> dict[str, Markup]:
    caption = f"last {len(runs)} runs, oldest left"
    pipeline = data.pipelines.get(name)
    limits = []
    if pipeline and pipeline.limits.mem_soft_limit:
        limits.append(charts.LimitLine(pipeline.limits.mem_soft_limit, "soft memory limit", False))
    if pipeline and pipeline.limits.mem_hard_limit:
        limits.append(charts.LimitLine(pipeline.limits.mem_hard_limit, "hard memory limit", True))
    out = {"duration": Markup(charts.bar_chart(
        views.chart_bars(runs, "duration"), label=f"Durations of the last {len(runs)} runs of {name}",
        fmt=format_seconds, x_caption=caption))}
    if any(r.resources.peak_memory_bytes is not None for r in runs):
        out["memory"] = Markup(charts.bar_chart(
            views.chart_bars(runs, "memory"), label=f"Peak memory of the last {len(runs)} runs "
            f"of {name}", fmt=format_bytes, limits=limits, x_caption=caption))
    return out


def render_pipeline_index(data: SiteData, name: str, recent_runs: Sequence[RunRecord],
                          total_runs: int | None = None,
                          page_size: int = DEFAULT_PAGE_SIZE) -> dict[str, bytes]:
    """A pipeline's index page only: configuration, schedules, charts and the newest runs.

    `recent_runs` are newest first (at least `page_size` of them when there are that many);
    `total_runs` defaults to `len(recent_runs)`. Call it alone when only the configuration or
    the next scheduled run changed.
    """
    total = len(recent_runs) if total_runs is None else total_runs
    window = list(recent_runs[:page_size])
    blocks = views.block_count(total, page_size)
    pipeline = data.pipelines.get(name)
    context = {
        "name": name,
        "pipeline": pipeline,
        "invalid": data.invalid.get(name),
        "config": views.config_rows(pipeline) if pipeline else [],
        "schedules": _schedule_words(data, name),
        "next_run": _next_run(data, name),
        "supervision": _supervision(data, name),
        "runs": views.run_rows(window, data.display_timezone),
        "total_runs": total,
        "history": _history_links(name, blocks, page_size, total),
        "charts": _pipeline_charts(data, name, window) if window else {},
        "reasons": views.failure_reasons(window, data.display_timezone),
        "page_size": page_size,
    }
    return _page("pipeline.html", pipeline_path(name), data, **context)


def _history_page(data: SiteData, name: str, block: int, runs: list[RunRecord], blocks: int,
                  page_size: int) -> dict[str, bytes]:
    first = (block - 1) * page_size + 1
    return _page(
        "history.html", pipeline_path(name, block), data, name=name, block=block,
        runs=views.run_rows(runs, data.display_timezone),
        range=f"{first}–{first + len(runs) - 1}",
        newer=views.history_name(block + 1) if block < blocks else None,
        older=views.history_name(block - 1) if block > 1 else None)


def render_pipeline_pages(data: SiteData, name: str, runs: Sequence[RunRecord],
                          page_size: int = DEFAULT_PAGE_SIZE,
                          total_runs: int | None = None) -> dict[str, bytes]:
    """A pipeline's index and its history pages, from its runs (newest first).

    With all runs, every history page is rendered. With a window (the newest runs) and
    `total_runs`, only the history pages entirely inside the window are.
    """
    total = len(runs) if total_runs is None else total_runs
    pages = render_pipeline_index(data, name, runs, total, page_size)
    blocks = views.block_count(total, page_size)
    for block, block_runs in views.history_blocks(runs, total, page_size).items():
        pages.update(_history_page(data, name, block, block_runs, blocks, page_size))
    return pages


# --- run pages ---------------------------------------------------------------------------------


def _resource_charts(record: RunRecord) -> dict[str, Markup]:
    samples = record.resources.samples
    limits = record.limits
    mem = charts.memory_chart(samples, soft=views.limit_value(limits, "mem_soft_limit"),
                              hard=views.limit_value(limits, "mem_hard_limit"))
    cpu = charts.cpu_chart(samples, soft=views.limit_value(limits, "cpu_soft_limit"),
                           hard=views.limit_value(limits, "cpu_hard_limit"))
    return {k: Markup(v) for k, v in (("memory", mem), ("cpu", cpu)) if v is not None}


def _resource_facts(record: RunRecord) -> list[tuple[str, str]]:
    res, limits = record.resources, record.limits
    facts = []
    if res.peak_memory_bytes is not None:
        facts.append(("Peak memory", format_bytes(res.peak_memory_bytes)))
    if res.cpu_mean_cores is not None:
        facts.append(("Mean CPU", format_cores(res.cpu_mean_cores)))
    if res.cpu_max_cores is not None:
        facts.append(("Max CPU", format_cores(res.cpu_max_cores)))
    for key, label, fmt in (("mem_soft_limit", "Soft memory limit", format_bytes),
                            ("mem_hard_limit", "Hard memory limit", format_bytes),
                            ("cpu_soft_limit", "Soft CPU limit", format_cores),
                            ("cpu_hard_limit", "Hard CPU limit", format_cores)):
        value = views.limit_value(limits, key)
        if value is not None:
            facts.append((label, fmt(value)))
    return facts


def _child_page(fired: dict) -> bool:
    """Whether a `downstream` entry names a run started (whose page the run page links)."""
    pipeline, run_id = fired.get("pipeline"), fired.get("run_id")
    return not fired.get("skipped") and all(isinstance(v, str) and has_page(v)
                                            for v in (pipeline, run_id))


def render_run_page(data: SiteData, record: RunRecord, log_text: str) -> dict[str, bytes]:
    """One run's page: status, trigger, commit, attempts, timings, resources and the log.

    A run page depends only on its record, its log and the site title, so it never needs
    re-rendering once written.
    """
    zone = data.display_timezone
    queue_wait = (record.started_at - record.queued_at).total_seconds() \
        if record.started_at and record.queued_at else None
    timings = [("Queued", format_time(record.queued_at, zone)),
               ("Started", format_time(record.started_at, zone)),
               ("Finished", format_time(record.finished_at, zone)),
               ("Waited in queue", views.duration_text(queue_wait)),
               ("Duration", views.duration_text(record.duration_s))]
    env = record.environment
    path = run_path(record.pipeline, record.run_id)
    return _page(
        "run.html", path, data,
        r=record, status=views.status_view(record.status),
        pipeline_href="../" * path.count("/") + pipeline_path(record.pipeline),
        trigger=views.trigger_text(record, zone),
        downstream=[(views.downstream_text(f), "../" * path.count("/")
                     + run_path(f["pipeline"], f["run_id"]) if _child_page(f) else None)
                    for f in record.downstream],
        short_sha=(record.commit.sha or "")[:12],
        timings=[t for t in timings if t[1]],
        attempts=views.attempt_rows(record, zone),
        reason=views.failure_text(record),
        charts=_resource_charts(record), facts=_resource_facts(record),
        soft_events=[views.soft_event(e) for e in record.resources.soft_limit_events],
        environment=[(k, v) for k, v in (("Image", env.image), ("Image id", env.image_id),
                                          ("Python", env.python), ("uv", env.uv_version),
                                          ("Requirements hash", env.requirements_hash),
                                          ("Node", env.node)) if v],
        log=views.parse_log(log_text), log_bytes=format_bytes(record.log.bytes),
        when=format_time(run_time(record), zone))


# --- whole site and incremental updates --------------------------------------------------------


def render_all(data: SiteData, runs_by_pipeline: Mapping[str, Sequence[RunRecord]],
               logs: Mapping[str, str], page_size: int = DEFAULT_PAGE_SIZE) -> dict[str, bytes]:
    """Every page of the site: overview, each pipeline's pages, each run's page.

    `runs_by_pipeline` lists each pipeline's runs newest first; `logs` maps a run id to its log
    text (a missing log renders as empty). Every pipeline named in the data or the runs gets a
    page, so every link from the overview resolves.
    """
    names = sorted(set(data.pipeline_names()) | set(runs_by_pipeline))
    summaries = dict(data.summaries)
    for name, runs in runs_by_pipeline.items():
        if runs:
            summaries[name] = summarize_runs(runs)
    data = dataclasses.replace(data, summaries=summaries)
    pages = render_overview(data)
    for name in names:
        runs = runs_by_pipeline.get(name, ())
        if not runs and not has_page(name):
            continue  # an invalid folder name: listed on the overview, without a page
        pages.update(render_pipeline_pages(data, name, runs, page_size))
        for record in runs:
            pages.update(render_run_page(data, record, logs.get(record.run_id, "")))
    return pages


def pages_for_new_run(data: SiteData, record: RunRecord, log_text: str,
                      recent_runs: Sequence[RunRecord], total_runs: int | None = None,
                      page_size: int = DEFAULT_PAGE_SIZE) -> dict[str, bytes]:
    """Exactly the pages a finished run changes: its run page, its pipeline's index, the newest
    history page (and the previous one when this run opened a new page), and the overview.

    `recent_runs` are the pipeline's newest runs, newest first, this one included, at least
    `page_size + 1` of them when there are that many; `total_runs` is the pipeline's run count
    (default: `len(recent_runs)`). The pipeline's overview summary is recomputed from them. The
    cost does not depend on how many runs the branch holds.
    """
    total = len(recent_runs) if total_runs is None else total_runs
    needed = min(total, page_size + 1)
    if len(recent_runs) < needed:
        raise ValueError(f"pages_for_new_run needs the newest {needed} runs, got {len(recent_runs)}")
    summaries = dict(data.summaries)
    summaries[record.pipeline] = summarize_runs(recent_runs)
    data = dataclasses.replace(data, summaries=summaries)
    window = list(recent_runs[:needed])
    blocks = views.block_count(total, page_size)
    pages = render_overview(data)
    pages.update(render_pipeline_index(data, record.pipeline, window, total, page_size))
    covered = views.history_blocks(window, total, page_size)
    for block in (blocks - 1, blocks):
        if block in covered:
            pages.update(_history_page(data, record.pipeline, block, covered[block], blocks,
                                       page_size))
    pages.update(render_run_page(data, record, log_text))
    return pages


def build_site(data: SiteData, runs_by_pipeline: Mapping[str, Sequence[RunRecord]],
               logs: Mapping[str, str], out_dir: Path,
               page_size: int = DEFAULT_PAGE_SIZE) -> list[str]:
    """Render the whole site into `out_dir` (created if needed); returns the paths written.

    Files are only rewritten when their bytes change, so a rebuild keeps timestamps of
    unchanged pages (handy for rsync and static hosts).
    """
    return write_pages(render_all(data, runs_by_pipeline, logs, page_size), out_dir)


def write_pages(pages: Mapping[str, bytes], out_dir: Path) -> list[str]:
    """Write `pages` (relative path -> bytes) into `out_dir`, each file only when its bytes
    change; returns the paths."""
    out_dir = Path(out_dir)
    for rel, content in sorted(pages.items()):
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_bytes() != content:
            target.write_bytes(content)
    return sorted(pages)
