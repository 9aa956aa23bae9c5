"""`fastflow run NAME`: run a pipeline from the working tree, live, like the server would."""
from __future__ import annotations

import signal
import threading
from datetime import datetime, timezone
from pathlib import Path

import click

from fastflow.cli.common import host_environment, repo_option
from fastflow.cli.render import console, styled_status
from fastflow.deploy.flows import discover_flows
from fastflow.deploy.workspace import Workspace, open_workspace
from fastflow.executors import choose_executor
from fastflow.executors.base import STDERR, STDOUT, OutputLine
from fastflow.humanize import format_bytes, format_elapsed, visible_controls
from fastflow.model import RunStatus
from fastflow.record import RunRecord, Trigger
from fastflow.run.runner import RunRequest, run_pipeline, write_record_json
from fastflow.secrets.runtime import secrets_loader

# The exit code of `fastflow run` for each way a run can end (documented in README and docs/cli.md).
EXIT_CODES = {
    RunStatus.SUCCEEDED: 0,
    RunStatus.FAILED: 10,
    RunStatus.LOST: 11,
    RunStatus.TIMED_OUT: 124,
    RunStatus.CANCELLED: 130,
    RunStatus.OOM_KILLED: 137,
}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parse_env_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    """`KEY=VALUE` strings from `--env` into a mapping (a bad pair is a usage error)."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--env")
        env[key] = value
    return env


class LivePrinter:
    """Prints output lines as they come: stdout to stdout, stderr (red on a terminal) to stderr,
    Fast-Flow's own lines dimmed; with `timestamps`, each line starts with its UTC time."""

    def __init__(self, timestamps: bool) -> None:
        self.timestamps = timestamps
        self.out = console()
        self.err = console(stderr=True)
        self.lock = threading.Lock()

    def __call__(self, line: OutputLine) -> None:
        prefix = ""
        if self.timestamps:
            prefix = line.at.astimezone(timezone.utc).strftime("%H:%M:%S.%f")[:-3] + " "
        text = visible_controls(line.text)  # output must not drive the terminal; the log keeps it
        with self.lock:
            if line.stream == STDOUT:
                self.out.print(prefix + text, markup=False, highlight=False, soft_wrap=True)
            elif line.stream == STDERR:
                self.err.print(prefix + text, style="red", markup=False, highlight=False,
                               soft_wrap=True)
            else:
                self.err.print(f"{prefix}fastflow: {text}", style="dim", markup=False,
                               highlight=False, soft_wrap=True)


def print_summary(record: RunRecord) -> None:
    """The final summary of a run: status, exit code, attempts, duration, error, route."""
    out = console(stderr=True)
    parts = [
        f"run {record.run_id}: {styled_status(record.status)}",
        f"exit code {record.exit_code if record.exit_code is not None else '-'}",
        f"{len(record.attempts)} attempt{'s' if len(record.attempts) != 1 else ''}",
        f"in {format_elapsed(record.duration_s)}",
    ]
    if record.resources.peak_memory_bytes:
        parts.append(f"peak memory {format_bytes(record.resources.peak_memory_bytes)}")
    out.print(", ".join(parts), highlight=False)
    if record.error and record.status is not RunStatus.SUCCEEDED:
        out.print(f"  error ({record.error.kind}): {visible_controls(record.error.message)}",
                  markup=False,
                  highlight=False)
    if record.route:
        out.print(f"  route: {record.route}", markup=False, highlight=False)
    for fired in record.downstream:
        out.print(f"  would trigger {fired['pipeline']} ({fired['reason']})", markup=False,
                  highlight=False)


@click.command("run")
@repo_option
@click.argument("name")
@click.option("--env", "-e", "env_pairs", multiple=True, metavar="KEY=VALUE",
              help="Set an environment variable for this run (repeatable).")
@click.option("--run-config", "run_config", metavar="ID",
              help="Use the run configuration ID (an entry of pipeline.json's schedules[]).")
@click.option("--local", is_flag=True,
              help="Run on the host with uv instead of in a Docker container.")
@click.option("--timestamps", "-t", is_flag=True, help="Prefix every output line with its time.")
@click.option("--record-json", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the run record (JSON, schema 1) to this file.")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the captured log (capped, as stored on the results branch) to this file.")
@click.option("--remote", is_flag=True,
              help="Queue the run on the `fastflow serve` daemon (at its deployed commit) instead.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --remote: the daemon's state dir [default: as `fastflow serve --repo`].")
def run(repo: Path, name: str, env_pairs: tuple[str, ...], run_config: str | None, local: bool,
        timestamps: bool, record_json: Path | None, log_file: Path | None, remote: bool,
        state_dir: Path | None) -> None:
    """Run pipeline NAME from the working tree, streaming its output, and exit with its status.

    Exit codes: 0 succeeded, 10 failed, 11 lost, 124 timed_out, 130 cancelled, 137 oom_killed;
    1 when nothing could run (an `Error:` line says why), 2 for a usage error.
    """
    trigger_env = parse_env_pairs(env_pairs)
    workspace = open_workspace(repo)  # once: config and discovery serve both checks below
    if _is_flow(workspace, name):  # a flow's name runs the flow (`fastflow flow run NAME`)
        # only here, as the statedir import below: a pipeline's run does not load the flow
        # machinery (and cli.flowrun uses this module's utc_now)
        from fastflow.cli.flowrun import queue_flow_remote, run_flow_now

        if remote:
            queue_flow_remote(repo, name, {}, state_dir)
            return
        run_flow_now(repo, name, {}, local, record_json)
        return
    if remote:
        # only here: the inbox's file watcher (watchdog) is not needed to run a pipeline
        from fastflow.daemon.statedir import default_state_dir, queue_remote_run

        state = state_dir or default_state_dir(str(repo), host_environment())
        run_id = queue_remote_run(state, name, trigger_env, run_config, utc_now())
        click.echo(f"queued {run_id} on the daemon of {state}")
        return
    pipeline = workspace.pipeline(name)
    executor = choose_executor(workspace.config, local=local, environ=host_environment(), clock=utc_now)
    request = RunRequest(
        pipeline=pipeline,
        run_config_id=run_config,
        trigger=Trigger(kind="manual"),
        trigger_env=trigger_env,
        log_cap_bytes=workspace.config.log_cap_bytes,
        grace_period=workspace.config.grace_period,
        log_path=str(log_file) if log_file else None,
        secrets_loader=secrets_loader(workspace.root, workspace.config, pipeline,
                                      host_environment(), run_config),
    )
    cancel = threading.Event()
    previous = _install_cancel_handlers(cancel)
    try:
        outcome = run_pipeline(request, executor, clock=utc_now, sink=LivePrinter(timestamps),
                               cancel=cancel)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if record_json:
        write_record_json(outcome.record, record_json)
    if log_file:
        log_file.write_text(outcome.log_text, encoding="utf-8")
    print_summary(outcome.record)
    raise SystemExit(EXIT_CODES.get(outcome.record.status, 1))


def _is_flow(workspace: Workspace, name: str) -> bool:
    """Whether `name` is a flow of the working tree and not a pipeline (pipelines win)."""
    if name in workspace.discovery.pipelines or name in workspace.discovery.invalid:
        return False
    return name in discover_flows(workspace.root, workspace.config, workspace.discovery).names


def _install_cancel_handlers(cancel: threading.Event) -> dict:
    """Ctrl-C and SIGTERM only set the cancel flag; the run stops its process tree and ends."""

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        if not cancel.is_set():
            console(stderr=True).print("fastflow: cancelling the run (Ctrl-C)", style="yellow")
        cancel.set()

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    return previous


__all__ = ["run", "EXIT_CODES"]
