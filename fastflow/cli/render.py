"""Terminal rendering for the CLI: rich tables on a terminal, plain text otherwise."""
from __future__ import annotations

import sys
from typing import Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

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
    """Print rows as a rich table on a terminal, tab-separated lines otherwise."""
    out = console()
    if not out.is_terminal:
        out.print("\t".join(headers), markup=False)
        for row in rows:
            out.print("\t".join(_plain(str(c)) for c in row), markup=False)
        return
    table = Table(*headers, show_lines=False)
    for row in rows:
        table.add_row(*(str(c) for c in row))
    out.print(table)


def _plain(text: str) -> str:
    return Text.from_markup(text).plain


def styled_status(status: RunStatus) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status.value}[/]"


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
