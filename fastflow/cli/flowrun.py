"""`fastflow flow run NAME` (the real run), `flow rerun FLOW_RUN_ID`, `flow history NAME`.

The run streams every task's output live, each line prefixed with its task id, says when a task
starts, ends, is retried (the runner's own lines) or is skipped and why, ends with a summary
table, and exits 0 when no task failed, 10 when one did (1 when nothing could run).
"""
from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import click
from rich.table import Table

from fastflow.cli.common import echo_json, host_environment, repo_option
from fastflow.cli.render import console, print_table, status_cell
from fastflow.cli.run import utc_now
from fastflow.daemon.flowhere import FlowOutcome, run_workspace_flow
from fastflow.daemon.statedir import default_state_dir, queue_remote_flow
from fastflow.deploy.workspace import open_workspace
from fastflow.executors import choose_executor
from fastflow.executors.base import STDERR, STDOUT, OutputLine
from fastflow.humanize import format_elapsed, visible_controls
from fastflow.model import RunStatus
from fastflow.record import run_id_month
from fastflow.results.read import flow_history, open_results

FLOW_FAILED_EXIT = 10  # any task failed (as `fastflow run` for a failed run)


def read_params_option(value: str | None) -> dict:
    """`--params '{"date": "2026-12-01"}'` or `--params @file.json` as a JSON object."""
    if not value:
        return {}
    where = "--params"
    text = value
    if value.startswith("@"):
        where = value[1:]
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {value[1:]}: {exc.strerror or exc}",
                                     param_hint="--params") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{where} is not JSON: {exc}", param_hint="--params") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f'{where} must be a JSON object like {{"date": "2026-12-01"}}',
                                 param_hint="--params")
    return data


class TaskPrinter:
    """Each task's output, every line prefixed with `[task]`; Fast-Flow's lines dimmed."""

    def __init__(self) -> None:
        self.out = console()
        self.err = console(stderr=True)
        self.lock = threading.Lock()

    def sink(self, task: str):
        def emit(line: OutputLine) -> None:
            text = f"[{task}] {visible_controls(line.text)}"
            with self.lock:
                if line.stream == STDOUT:
                    self.out.print(text, markup=False, highlight=False, soft_wrap=True)
                elif line.stream == STDERR:
                    self.err.print(text, style="red", markup=False, highlight=False,
                                   soft_wrap=True)
                else:
                    self.err.print(f"fastflow: {text}", style="dim", markup=False,
                                   highlight=False, soft_wrap=True)
        return emit

    def event(self, task: str, kind: str, text: str) -> None:
        style = {"started": "cyan", "skipped": "yellow"}.get(kind, "bold")
        with self.lock:
            self.err.print(f"fastflow: [{task}] {visible_controls(text)}", style=style,
                           markup=False, highlight=False, soft_wrap=True)


def print_flow_summary(outcome: FlowOutcome) -> None:
    """The table of a flow run's tasks: status, attempts, duration, run id, reason."""
    record = outcome.record
    table = Table(title=f"flow run {record.flow_run_id}: {record.status}", title_justify="left")
    for column in ("task", "status", "attempts", "duration", "run", "note"):
        table.add_column(column)
    for task in record.tasks:
        note = task.reason or (task.error.message if task.error and not task.succeeded else "")
        try:
            status = status_cell(RunStatus(task.status))
        except ValueError:
            status = task.status
        table.add_row(task.id, status, str(task.attempts or "-"), format_elapsed(task.duration_s)
                      if task.duration_s is not None else "-", task.run_id or "-",
                      visible_controls(note or ""))
    out = console(stderr=True)
    out.print(table)
    if record.workspace and record.workspace_kept_until:
        out.print(f"workspace kept at {record.workspace} until "
                  f"{record.workspace_kept_until.isoformat()}", highlight=False)


def run_flow_now(repo: Path, name: str, params: dict, local: bool,
                 record_json: Path | None = None) -> None:
    """Run flow `name` of the working tree here (see the module doc) and exit with its status."""
    workspace = open_workspace(repo)
    environ = host_environment()
    executor = choose_executor(workspace.config, local=local, environ=environ, clock=utc_now)
    printer = TaskPrinter()
    cancel = threading.Event()
    previous = _install_cancel_handlers(cancel)
    try:
        outcome = run_workspace_flow(workspace, name, params=params, executor=executor,
                                     environ=environ, clock=utc_now, sink_for=printer.sink,
                                     events=printer.event, cancel=cancel)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if record_json:
        record_json.write_text(json.dumps(outcome.record.to_json(), indent=2) + "\n",
                               encoding="utf-8")
    print_flow_summary(outcome)
    raise SystemExit(0 if outcome.record.status == "succeeded" else FLOW_FAILED_EXIT)


def _install_cancel_handlers(cancel: threading.Event) -> dict:
    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        if not cancel.is_set():
            console(stderr=True).print("fastflow: cancelling the flow run (Ctrl-C)",
                                       style="yellow")
        cancel.set()

    return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}


@click.command("rerun")
@click.argument("flow_run_id")
@repo_option
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The daemon's state dir [default: as `fastflow serve --repo`].")
def rerun_flow(flow_run_id: str, repo: Path, state_dir: Path | None) -> None:
    """Run the failed and skipped tasks of flow run FLOW_RUN_ID again on the daemon, at the same
    commit, with the recorded outputs and kept workspace of the tasks that succeeded."""
    flow = _flow_of(flow_run_id)
    state = state_dir or default_state_dir(str(repo), host_environment())
    queue_remote_flow(state, flow, {}, utc_now(), rerun_of=flow_run_id)
    click.echo(f"queued a rerun of {flow_run_id} on the daemon of {state}")


@click.command("history")
@click.argument("name")
@repo_option
@click.option("--limit", "-n", default=20, show_default=True, help="How many flow runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def flow_history_command(name: str, repo: Path, limit: int, as_json: bool) -> None:
    """The flow runs of flow NAME on the results branch, newest first, with their tasks."""
    with open_results(repo, utc_now) as results:
        data = flow_history(results, name, limit)
    if as_json:
        echo_json(data)
        return
    if not data["runs"]:
        click.echo(f"No flow runs of {name} on the results branch.")
        return
    rows = [[r["flow_run_id"], r["status"], r["trigger"] or "-",
             format_elapsed(r["duration_s"]) if r["duration_s"] is not None else "-",
             ", ".join(f"{t} {s}" for t, s in r["tasks"].items())] for r in data["runs"]]
    print_table(["flow run", "status", "trigger", "duration", "tasks"], rows)


def queue_flow_remote(repo: Path, name: str, params: dict, state_dir: Path | None) -> None:
    """`--remote`: queue a run of flow `name` on the daemon (at its deployed commit)."""
    state = state_dir or default_state_dir(str(repo), host_environment())
    flow_run_id = queue_remote_flow(state, name, params, utc_now())
    click.echo(f"queued {flow_run_id} (a flow run) on the daemon of {state}")


def _flow_of(flow_run_id: str) -> str:
    """The flow of a flow run id (`<stamp>-<flow>-<suffix>`; a flow name may hold `-`)."""
    parts = run_id_month(flow_run_id)
    if parts is None:
        raise click.BadParameter(f"{flow_run_id!r} is not a flow run id like "
                                 "20261202T013000Z-weather-7f3a09c2", param_hint="FLOW_RUN_ID")
    return parts[2].rsplit("-", 1)[0] if "-" in parts[2] else parts[2]  # the daemon reads it
