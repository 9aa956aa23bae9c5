"""`fastflow status --watch`: a live terminal view of the daemon, refreshed in place (rich Live).

What it shows, from `results.read.watch_report` (the same data as `fastflow status`, read again
at every refresh): the daemon line, the running runs (flow tasks named as `flow.task`), the
newest run of each flow with its tasks, the queue, the next scheduled runs and every pipeline's
last result. `q` (on a terminal) or Ctrl-C leaves, exit code 0.
"""
from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import tty
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fastflow.cli.render import status_cell
from fastflow.errors import FastflowError
from fastflow.humanize import format_elapsed
from fastflow.model import RunStatus
from fastflow.record import run_id_month
from fastflow.results.read import open_results, watch_report

DEFAULT_WATCH_INTERVAL = 2.0  # seconds between refreshes
NEXT_SHOWN = 8  # next scheduled runs listed


def _status(value: str | None) -> Text | str:
    try:
        return status_cell(RunStatus(value)) if value else "-"
    except ValueError:  # a flow task's `pending`
        return Text(str(value), style="dim")


def _pipeline_of(run_id: str) -> str:
    parts = run_id_month(run_id)
    if parts is None:
        return run_id
    return parts[2].rsplit("-", 1)[0] if "-" in parts[2] else parts[2]


def _daemon_text(daemon: dict | None) -> Text:
    """The daemon in one line: alive (or stale, stopped, standing by), heartbeat, pid."""
    if daemon is None:
        return Text("daemon: no heartbeat recorded; is fastflow serve running?", style="red")
    if daemon.get("stopped_at"):
        return Text(f"daemon: stopped at {daemon['stopped_at']} (pid {daemon['pid']})",
                    style="yellow")
    standby = (daemon.get("lease") or {}).get("role") == "standby"
    state = "stale" if daemon["stale"] else "standing by" if standby else "alive"
    return Text(f"daemon: {state}, heartbeat {daemon['ago']}, pid {daemon['pid']}",
                style="red" if daemon["stale"] else "green")


def _at(iso_time: str) -> str:
    return datetime.fromisoformat(iso_time).isoformat(timespec="seconds")


def watch_view(report: dict) -> Group:
    """The live view of one `watch_report` (a rich renderable; see the module doc)."""
    daemon = report["daemon"]
    parts: list = [Text(f"fastflow status --watch · {report['repository']} · {report['branch']} "
                        f"· {_at(report['now'])} · q or Ctrl-C to leave", style="bold"),
                   _daemon_text(daemon)]
    running = Table(title="Running", title_justify="left", expand=False)
    for column in ("RUN", "PIPELINE"):
        running.add_column(column)
    for run_id in (daemon or {}).get("running") or ():
        running.add_row(run_id, _pipeline_of(run_id))
    parts.append(running if running.row_count else Text("Running: nothing", style="dim"))
    flows = report.get("flows") or []
    if flows:
        table = Table(title="Flows (newest run of each)", title_justify="left")
        for column in ("FLOW", "FLOW RUN", "STATUS", "TASKS"):
            table.add_column(column)
        for flow in flows:
            tasks = Text()
            for n, task in enumerate(flow["tasks"]):
                if n:
                    tasks.append("  ")
                tasks.append(f"{task['id']} ")
                tasks.append_text(Text.assemble(_status(task["status"])))
            table.add_row(flow["flow"], flow["flow_run_id"], _status(flow["status"]), tasks)
        parts.append(table)
    queued = (daemon or {}).get("queued") or []
    parts.append(Text(f"Queue: {len(queued)} waiting" + (": " + ", ".join(queued[:10])
                                                        if queued else ""),
                      style="" if queued else "dim"))
    upcoming = sorted((p for p in report["pipelines"] if p["next_run"]),
                      key=lambda p: p["next_run"]["at"])[:NEXT_SHOWN]
    if upcoming:
        table = Table(title="Next slots", title_justify="left")
        table.add_column("PIPELINE")
        table.add_column("NEXT RUN")
        for row in upcoming:
            table.add_row(row["name"], f"{row['next_run']['in']} ({_at(row['next_run']['local'])})")
        parts.append(table)
    last = Table(title="Last results", title_justify="left")
    for column in ("PIPELINE", "STATUS", "LAST RUN", "FINISHED", "DURATION"):
        last.add_column(column)
    for row in report["pipelines"]:
        finished = row["last_finished"]
        last.add_row(row["name"] + ("" if row["valid"] else " (invalid)"),
                     _status(row["last_status"]), row["last_run_id"] or "-",
                     finished["ago"] if finished else "-", format_elapsed(row["last_duration_s"]))
    parts.append(last)
    return Group(*parts)


@contextlib.contextmanager
def key_reader() -> Iterator[Callable[[float], str | None]]:
    """`read(timeout)`: the next key pressed (None when none came within `timeout` seconds).
    On a terminal stdin is put in cbreak mode (keys arrive at once, unechoed) and restored after;
    without one, nothing is read and `read` only waits."""
    stream = sys.stdin
    if not stream.isatty():
        def wait(timeout: float) -> str | None:
            select.select([], [], [], timeout)
            return None
        yield wait
        return
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode(errors="replace") if ready else None

    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def watch_status(repo: Path, state_dir: Path | None, *, clock: Callable[[], datetime],
                 console: Console, read_key: Callable[[float], str | None],
                 interval: float = DEFAULT_WATCH_INTERVAL, frames: int | None = None) -> None:
    """Show `watch_report` of `repo` in place until `q` (or `frames` refreshes: tests). The
    branch is read again at every refresh; an error of one refresh (the branch being written)
    is shown in the view, not raised."""
    shown = 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while frames is None or shown < frames:
            try:
                with open_results(repo, clock) as results:
                    view = watch_view(watch_report(results, clock(), state_dir))
            except (OSError, FastflowError) as exc:
                if not shown:
                    raise  # no branch, no repository: the command's error, as `status` says it
                view = Text(f"cannot read the results branch right now: {exc}", style="red")
            live.update(view, refresh=True)
            shown += 1
            if frames is not None and shown >= frames:
                break
            key = read_key(interval)
            if key in ("q", "Q"):
                break
