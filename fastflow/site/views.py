"""View models: records and configuration turned into plain values that templates print.

Pure functions, no jinja2. Pagination lives here too (see `history_blocks`): history pages are
numbered from the oldest run, so adding a run never moves a run to another page.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from fastflow.config.sizes import parse_size
from fastflow.config.view import resolved_view
from fastflow.humanize import format_bytes, format_cores, format_seconds, format_time
from fastflow.model import Pipeline, RunStatus
from fastflow.record import RunRecord, run_id_month
from fastflow.site import charts
from fastflow.site.data import SiteData, check_name, has_page, run_time

# status -> (label, family, glyph). The family picks the colour; label and glyph carry the meaning
# without colour.
STATUS_STYLE = {
    "succeeded": ("succeeded", "ok", "✓"),
    "failed": ("failed", "bad", "✕"),
    "lost": ("lost", "bad", "?"),
    "timed_out": ("timed out", "warn", "◔"),
    "oom_killed": ("OOM killed", "warn", "▲"),
    "cancelled": ("cancelled", "muted", "⊘"),
    "skipped": ("skipped", "muted", "»"),
    "running": ("running", "info", "●"),
    "queued": ("queued", "info", "○"),
}
NO_RUNS = ("no runs yet", "none", "–")

_LOG_LINE = re.compile(
    r"(?P<ts>\d{4}-\d\d-\d\dT(?P<time>\d\d:\d\d:\d\d(?:\.\d+)?)Z) (?P<stream>stdout|stderr|runner) \| "
    r"(?P<text>.*)")
_OMITTED = re.compile(r"--- \d+ bytes omitted by Fast-Flow .*---")


@dataclass(frozen=True)
class Status:
    """How a status is shown: words, colour family and glyph."""

    value: str
    label: str
    family: str
    glyph: str


def status_view(status: RunStatus | str | None) -> Status:
    """The display of a run status (None: the pipeline has no runs yet)."""
    if status is None:
        return Status("none", *NO_RUNS)
    value = status.value if isinstance(status, RunStatus) else str(status)
    label, family, glyph = STATUS_STYLE.get(value, (value, "muted", "•"))
    return Status(value, label, family, glyph)


@dataclass(frozen=True)
class LogLine:
    """One line of a run log: its kind (`stdout`, `stderr`, `runner`, `omitted`, `plain`)."""

    kind: str
    time: str
    timestamp: str
    text: str


def parse_log(text: str) -> list[LogLine]:
    """The lines of a log file in `fastflow.run.capture`'s format; unknown lines are kept as plain.
    Split on `\\n` only, as the format says (a `\\r` or U+2028 in a line is part of it)."""
    lines = []
    for raw in text.removesuffix("\n").split("\n") if text else ():
        match = _LOG_LINE.fullmatch(raw)
        if match:
            lines.append(LogLine(match["stream"], match["time"][:12], match["ts"], match["text"]))
        elif _OMITTED.fullmatch(raw):
            lines.append(LogLine("omitted", "", "", raw))
        else:
            lines.append(LogLine("plain", "", "", raw))
    return lines


# --- pagination --------------------------------------------------------------------------------


def block_count(total_runs: int, page_size: int) -> int:
    """How many history pages `total_runs` runs fill (page 1 holds the oldest runs)."""
    return math.ceil(total_runs / page_size) if total_runs > 0 else 0


def history_name(block: int) -> str:
    """The file name of history page `block` (1 = the oldest runs), relative to the pipeline."""
    return f"history-{block}.html"


def history_blocks(runs: Sequence[RunRecord], total_runs: int,
                   page_size: int) -> dict[int, list[RunRecord]]:
    """The history pages that `runs` (newest first, the newest `len(runs)` of `total_runs`) cover.

    Page k holds the runs number (k-1)*page_size+1 .. k*page_size counted from the oldest, so a
    page is complete and never changes once the next page exists; only pages whose runs are all
    in the window are returned. Runs within a page are newest first.
    """
    if len(runs) > total_runs:
        raise ValueError(f"{len(runs)} runs given but total_runs is {total_runs}")
    oldest_known = total_runs - len(runs)  # chronological index of runs[-1]
    blocks = {}
    for block in range(1, block_count(total_runs, page_size) + 1):
        first = (block - 1) * page_size
        last = min(block * page_size, total_runs) - 1
        if first < oldest_known:
            continue
        blocks[block] = [runs[total_runs - 1 - c] for c in range(last, first - 1, -1)]
    return blocks


# --- records -----------------------------------------------------------------------------------


def duration_text(seconds: float | None) -> str:
    """A duration for tables, or an empty string."""
    return "" if seconds is None else format_seconds(seconds)


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


def failure_text(record: RunRecord) -> str:
    """Why a run did not succeed, in one line (empty for a success)."""
    if record.status is RunStatus.SUCCEEDED:
        return ""
    if record.error is not None:
        return f"{record.error.kind}: {record.error.message}"
    if record.exit_code is not None:
        return f"exit code {record.exit_code}"
    return status_view(record.status).label


def trigger_text(record: RunRecord, zone: str) -> str:
    """How the run was started, in words: `schedule nightly (slot 2026-11-22 03:00:00 UTC)`,
    `webhook (delivery 72d3162e-...)` (the sender's delivery id, to find the request there)."""
    trig = record.trigger
    text = trig.kind + (f" {trig.schedule_id}" if trig.schedule_id else "")
    if trig.parent_run_id:
        text += f" after run {trig.parent_run_id}"
    if trig.slot is not None:
        text += f" (slot {format_time(trig.slot, zone)})"
    if trig.delivery_id:
        text += f" (delivery {trig.delivery_id})"
    return text


def downstream_text(fired: dict) -> str:
    """One entry of a record's `downstream` in words: `report, run configuration prod (route
    full): started <run id>`, `...: skipped: <why>`, or only what fired (a `fastflow run` on
    the host starts none)."""
    text = str(fired.get("pipeline"))
    if fired.get("run_config_id"):
        text += f", run configuration {fired['run_config_id']}"
    text += f" ({fired.get('reason')})"
    if fired.get("skipped"):
        return f"{text}: skipped: {fired['skipped']}"
    if fired.get("run_id"):
        return f"{text}: started {fired['run_id']}"
    return text


def soft_event(event: dict) -> dict[str, str]:
    """A soft-limit event `{t, kind, value, limit}` in words (bytes for memory, cores for CPU)."""
    fmt = format_bytes if event.get("kind") == "memory" else format_cores

    def show(value: Any) -> str:
        return fmt(value) if isinstance(value, (int, float)) else str(value)

    t = event.get("t")
    return {"kind": str(event.get("kind", "")), "value": show(event.get("value")),
            "limit": show(event.get("limit")),
            "at": format_seconds(t) if isinstance(t, (int, float)) else "?"}


def attempt_rows(record: RunRecord, zone: str) -> list[dict[str, Any]]:
    """The attempts of a run as table rows (number, status, exit code, wait, times, duration)."""
    return [
        {
            "n": a.n,
            "status": status_view(a.status),
            "exit_code": "" if a.exit_code is None else str(a.exit_code),
            "wait": duration_text(a.wait_before_s) if a.wait_before_s else "–",
            "started": format_time(a.started_at, zone),
            "finished": format_time(a.finished_at, zone),
            "duration": duration_text(_seconds_between(a.started_at, a.finished_at)),
        }
        for a in record.attempts
    ]


def limit_value(limits: dict, key: str) -> float | None:
    """A limit from a record's `limits` dict (bytes or cores); None when unset or unreadable."""
    value = limits.get(key)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(parse_size(value))
    except ValueError:
        return None


def run_page_path(pipeline: str, run_id: str) -> str:
    """The site path of one run's page: `runs/<pipeline>/<YYYY>/<MM>/<run_id>.html`, sharded
    by the month in the run id like the records, so a commit never rewrites a folder listing
    every run of a busy pipeline. Run ids without a leading timestamp stay unsharded."""
    check_name(pipeline, "pipeline")
    check_name(run_id, "run id")
    parts = run_id_month(run_id)
    month = f"{parts[0]}/{parts[1]}/" if parts else ""
    return f"runs/{pipeline}/{month}{run_id}.html"


def flow_page_path(flow: str) -> str:
    """The site path of a flow's page: `flows/<flow>/index.html`."""
    check_name(flow, "flow")
    return f"flows/{flow}/index.html"


def flow_run_page_path(flow: str, flow_run_id: str) -> str:
    """The site path of one flow run's page, sharded by month like run pages:
    `flows/<flow>/<YYYY>/<MM>/<flow_run_id>.html`."""
    check_name(flow, "flow")
    check_name(flow_run_id, "flow run id")
    parts = run_id_month(flow_run_id)
    month = f"{parts[0]}/{parts[1]}/" if parts else ""
    return f"flows/{flow}/{month}{flow_run_id}.html"


def flow_rows(flows: Mapping[str, Mapping], zone: str) -> list[dict[str, Any]]:
    """The overview's rows of flows (`SiteData.flows`): link, description, the last run."""
    rows = []
    for name in sorted(flows):
        if not has_page(name):
            continue
        entry = flows[name]
        last = entry.get("last") or None
        when = None
        if last:
            stamp = last.get("finished_at") or last.get("started_at")
            when = datetime.fromisoformat(stamp) if isinstance(stamp, str) and stamp else None
        rows.append({
            "name": name, "href": flow_page_path(name),
            "description": str(entry.get("description") or ""),
            "status": status_view(last.get("status") if last else None),
            "last_href": flow_run_page_path(name, last["flow_run_id"])
            if last and has_page(last.get("flow_run_id")) else None,
            "last_when": format_time(when, zone) if when else "",
            "last_duration": duration_text(last.get("duration_s")) if last else "",
        })
    return rows


def run_rows(runs: Sequence[RunRecord], zone: str) -> list[dict[str, Any]]:
    """History table rows for `runs` (kept in the given order)."""
    return [
        {
            "run_id": r.run_id,
            "href": run_page_path(r.pipeline, r.run_id),
            "status": status_view(r.status),
            "when": format_time(run_time(r), zone),
            "when_iso": (run_time(r).isoformat() if run_time(r) else ""),
            "trigger": r.trigger.kind + (f" ({r.trigger.schedule_id})" if r.trigger.schedule_id
                                         else ""),
            "duration": duration_text(r.duration_s),
            "attempts": len(r.attempts),
            "peak_memory": (format_bytes(r.resources.peak_memory_bytes)
                            if r.resources.peak_memory_bytes is not None else ""),
            "reason": failure_text(r),
        }
        for r in runs
    ]


def failure_reasons(runs: Sequence[RunRecord], zone: str) -> list[dict[str, Any]]:
    """Failed runs among `runs` grouped by reason: count and most recent run, most recent first."""
    groups: dict[str, dict[str, Any]] = {}
    for r in runs:  # newest first: the first of a group is its latest
        reason = failure_text(r)
        if not reason or r.status in (RunStatus.SKIPPED, RunStatus.CANCELLED):
            continue
        group = groups.setdefault(reason, {
            "reason": reason, "count": 0, "last_run_id": r.run_id,
            "last_run_href": run_page_path(r.pipeline, r.run_id),
            "last_when": format_time(run_time(r), zone), "status": status_view(r.status)})
        group["count"] += 1
    return list(groups.values())


def _config_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False) if value else "—"
    return str(value)


def config_rows(pipeline: Pipeline) -> list[dict[str, str]]:
    """The effective configuration (field, value, source), without host-specific paths.

    The folder's absolute path is left out and files of the folder are shown by name, so the
    page is the same whichever machine renders it.
    """
    rows = []
    for key, value, source in resolved_view(pipeline):
        if key == "path":
            continue
        if key in ("metadata_file", "requirements") and value is not None:
            value = Path(value).name
        rows.append({"field": key, "value": _config_value(value), "source": source})
    return rows


def chart_bars(runs: Sequence[RunRecord], what: str) -> list[charts.Bar]:
    """Bars for the pipeline charts, oldest left: `what` is "duration" or "memory"."""
    bars = []
    for r in reversed(runs):
        label = status_view(r.status).label
        if what == "duration":
            value = r.duration_s
            text = duration_text(value) if value is not None else "no duration"
        else:
            value = r.resources.peak_memory_bytes
            text = format_bytes(value) if value is not None else "not measured"
        bars.append(charts.Bar(None if value is None else float(value), r.status.value,
                               f"{r.run_id}: {text}, {label}"))
    return bars


def sparkline_bars(data: SiteData, name: str) -> list[charts.Bar]:
    """The overview sparkline bars of one pipeline, from its summary (oldest left)."""
    summary = data.summaries.get(name)
    if summary is None:
        return []
    ids = summary.recent_run_ids or ("",) * len(summary.recent_statuses)
    return [
        charts.Bar(d, s.value, f"{rid + ': ' if rid else ''}{duration_text(d) or 'no duration'}, "
                               f"{status_view(s).label}")
        for s, d, rid in zip(summary.recent_statuses, summary.recent_durations, ids)
    ]
