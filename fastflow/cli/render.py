"""Terminal rendering for the CLI: rich tables on a terminal, plain text otherwise."""
from __future__ import annotations

import sys
from typing import Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fastflow.humanize import visible_controls
from fastflow.model import Pipeline, RunStatus

STATUS_STYLE = {
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "red",
    RunStatus.TIMED_OUT: "red",
    RunStatus.OOM_KILLED: "red",
    RunStatus.LOST: "magenta",
    RunStatus.CANCELLED: "yellow",
    RunStatus.SKIPPED: "dim",
    RunStatus.RUNNING: "cyan",
    RunStatus.QUEUED: "cyan",
}


def console(stderr: bool = False) -> Console:
    """A rich console; without a terminal it prints plain text (no colour, no wrapping)."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(file=stream, stderr=stderr)
    return Console(file=stream, no_color=True, width=10_000, soft_wrap=True, highlight=False)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print rows as a rich table on a terminal, tab-separated lines otherwise. A `Text` cell
    keeps its style; any other cell is shown as it is (pipeline names and messages come from
    pushed files and run output: no markup, control characters as visible escapes)."""
    out = console()
    cells = [[_cell(c) for c in row] for row in rows]
    if not out.is_terminal:
        out.print("\t".join(headers), markup=False)
        for row in cells:
            out.print("\t".join(c.plain for c in row), markup=False)
        return
    table = Table(*headers, show_lines=False)
    for row in cells:
        table.add_row(*row)
    out.print(table)


def _cell(value: object) -> Text:
    if isinstance(value, Text):
        return value
    return Text(visible_controls(str(value), lines=False))


def styled_status(status: RunStatus) -> str:
    """A status in rich markup, for a line printed with markup."""
    return f"[{STATUS_STYLE.get(status, 'white')}]{status.value}[/]"


def status_cell(status: RunStatus) -> Text:
    """A status for a table cell, in its colour."""
    return Text(status.value, style=STATUS_STYLE.get(status, "white"))


def schedule_summary(pipeline: Pipeline) -> str:
    """A one-line summary of a pipeline's schedules (pipeline.json fields only)."""
    parts = []
    spec = pipeline.schedule
    if spec.cron:
        parts.append(f"cron {spec.cron}")
    if spec.interval_seconds:
        parts.append(f"every {spec.interval_seconds:g}s")
    if spec.run_once_at:
        parts.append(f"once at {spec.run_once_at.isoformat()}")
    for rc in pipeline.run_configs:
        if rc.cron:
            parts.append(f"{rc.id}: cron {rc.cron}")
        elif rc.interval_seconds:
            parts.append(f"{rc.id}: every {rc.interval_seconds:g}s")
    return "; ".join(parts) or "-"
