"""`fastflow flow list | show NAME | run NAME [--params ...] [--dry-run] [--local]` (docs/flows.md).

`flow run` without `--dry-run` runs the flow here (`cli.flowrun`); `--dry-run` validates,
resolves the params and prints the plan (order, parallel groups, each task's command, image,
mounts, limits and env with secrets masked) and an equivalent bash script of `docker run`
commands, runs nothing and exits 0.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from fastflow.cli.common import echo_json, host_environment, repo_option
from fastflow.cli.flowrun import (
    flow_history_command,
    queue_flow_remote,
    read_params_option,
    rerun_flow,
    run_flow_now,
)
from fastflow.cli.render import print_table
from fastflow.cli.run import utc_now
from fastflow.daemon.flowdry import MASK, DryRun, dry_run_flow
from fastflow.deploy.flows import FlowDiscovery, discover_flows, find_flow
from fastflow.deploy.workspace import open_workspace
from fastflow.executors import choose_executor
from fastflow.executors.base import AttemptSpec, uv_command
from fastflow.executors.docker.container import CONTAINER_NOTEBOOK_RUNNER
from fastflow.flow.plan import SCRATCH_TOKEN, WORKSPACE_TOKEN, topological_order
from fastflow.humanize import format_bytes, visible_controls
from fastflow.model import Flow, Severity


def _flows(repo: Path) -> tuple[object, FlowDiscovery]:
    workspace = open_workspace(repo)
    return workspace, discover_flows(workspace.root, workspace.config, workspace.discovery)


@click.group("flow")
def flow_group() -> None:
    """Flows: DAGs of tasks in the Featherflow format (docs/flows.md)."""


@flow_group.command("list")
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_flows(repo: Path, as_json: bool) -> None:
    """List every flow with its file, tasks and validity."""
    _, found = _flows(repo)
    if as_json:
        echo_json({
            "flows": [{"name": f.name, "file": f.file, "tasks": [t.id for t in f.tasks],
                       "description": f.description, "valid": True,
                       "warnings": [w.to_json() for w in f.warnings]}
                      for f in found.flows.values()],
            "invalid": [{"name": i.name, "file": i.file, "valid": False,
                         "problems": [p.to_json() for p in i.problems]}
                        for i in found.invalid.values()],
        })
        return
    if not found.names:
        where = " or ".join(f"{f.flows_dir}/" for f in found.folders)
        click.echo(f"No flows in {where}.")
        return
    rows = []
    for name in found.names:
        if name in found.flows:
            flow = found.flows[name]
            rows.append([name, flow.file, str(len(flow.tasks)), "valid", flow.description])
        else:
            invalid = found.invalid[name]
            errors = sum(p.severity is Severity.ERROR for p in invalid.problems)
            rows.append([name, invalid.file, "-", f"invalid ({errors} error(s))", ""])
    print_table(["flow", "file", "tasks", "status", "description"], rows)


@flow_group.command("show")
@repo_option
@click.argument("name")
def show_flow(repo: Path, name: str) -> None:
    """Show flow NAME as text: its tasks by parallel group, each with what it waits for."""
    _, found = _flows(repo)
    click.echo(dag_text(find_flow(found, name)))


def dag_text(flow: Flow) -> str:
    """The DAG of `flow` as text: one line per task, by group, `<- deps` and its `when`."""
    _, groups = topological_order(flow.tasks)
    lines = [f"flow {flow.name} ({flow.file})" + (f": {flow.description}" if flow.description
                                                  else "")]
    for number, ids in enumerate(groups, 1):
        lines.append(f"group {number}")
        for task_id in ids:
            task = flow.task(task_id)
            runs = f"script {task.script}" if task.script else f"pipeline {task.pipeline}"
            after = f" <- {', '.join(task.depends_on)}" if task.depends_on else ""
            when = f" (when {task.when.value})" if task.when.value != "success" else ""
            lines.append(f"  {task_id}: {runs}{after}{when}")
    return "\n".join(visible_controls(line, lines=False) for line in lines)


@flow_group.command("run")
@repo_option
@click.argument("name")
@click.option("--params", "params_text", metavar="JSON|@FILE",
              help="The flow's params: a JSON object, or @file.json holding one.")
@click.option("--dry-run", is_flag=True,
              help="Validate, resolve the params and print the plan and a docker run script; "
                   "run nothing.")
@click.option("--local", is_flag=True, help="Run the tasks on this host instead of in Docker.")
@click.option("--record-json", type=click.Path(path_type=Path), hidden=True)
@click.option("--remote", is_flag=True,
              help="Queue the flow run on the `fastflow serve` daemon (at its deployed commit).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --remote: the daemon's state dir [default: as `fastflow serve --repo`].")
def run_flow(repo: Path, name: str, params_text: str | None, dry_run: bool, local: bool,
             record_json: Path | None, remote: bool, state_dir: Path | None) -> None:
    """Run flow NAME of the working tree here, every task as its own run (--dry-run: print
    what would run)."""
    params = read_params_option(params_text)
    if remote and not dry_run:
        queue_flow_remote(repo, name, params, state_dir)
        return
    if not dry_run:
        run_flow_now(repo, name, params, local, record_json)
        return
    workspace, found = _flows(repo)
    flow = find_flow(found, name)
    pipelines = {t.pipeline: workspace.pipeline(t.pipeline) for t in flow.tasks if t.pipeline}
    executor = None if local else choose_executor(
        workspace.config, local=False, environ=host_environment(), clock=utc_now, engine=False)
    click.echo(dry_run_text(dry_run_flow(flow, pipelines=pipelines, config=workspace.config,
                                         params=params, executor=executor, now=utc_now())),
               nl=False)


def dry_run_text(dry: DryRun) -> str:
    """The dry run as people read it: the plan, each task, then the script."""
    plan, flow = dry.plan, dry.plan.flow
    out = [f"Dry run of flow {flow.name} ({flow.file}); nothing is run.",
           f"params: {json.dumps(dict(plan.params), sort_keys=True)}",
           f"order: {', '.join(plan.order)}", "parallel groups:"]
    out += [f"  {n}: {', '.join(ids)}" for n, ids in enumerate(plan.groups, 1)]
    for task_id in plan.order:
        spec, task = dry.specs[task_id], plan.tasks[task_id]
        command = dry.commands.get(task_id)
        out += ["", f"task {task_id} (group {task.group}"
                + (f", after {', '.join(task.task.depends_on)}" if task.task.depends_on else "")
                + f", when {task.task.when.value}): run as {spec.pipeline}"]
        if command is not None:
            image_at = command.index("uv")
            out.append(f"  image:   {command[image_at - 1]}")
        out.append(f"  command: {' '.join(_shown(a) for a in _command(spec))}")
        out.append(f"  folder:  {spec.workdir} (read-only)")
        out.append("  workspace: read-write, FASTFLOW_WORKSPACE and TMP_DIR")
        limits = spec.limits
        out.append(f"  limits:  cpu {limits.cpu_hard_limit or '-'}, memory "
                   f"{format_bytes(limits.mem_hard_limit) if limits.mem_hard_limit else '-'}, "
                   f"timeout {f'{spec.timeout:g}s' if spec.timeout else 'none'}, retries "
                   f"{task.pipeline.retry.attempts}, network {spec.network.value}")
        out.append("  env:")
        out += [f"    {key}={_shown(value)}" for key, value in sorted(spec.env.items())]
    if dry.script:
        out += ["", "# The same as a bash script of docker run commands:",
                *dry.script.rstrip().splitlines()]
    return "\n".join(visible_controls(line, lines=False) for line in out) + "\n"


def _command(spec: AttemptSpec) -> list[str]:
    return uv_command(spec, CONTAINER_NOTEBOOK_RUNNER)


def _shown(value: str) -> str:
    text = value.replace(SCRATCH_TOKEN, "$scratch").replace(WORKSPACE_TOKEN, "$workspace")
    return text if text == MASK or " " not in text else json.dumps(text)


flow_group.add_command(rerun_flow)  # cli.flowrun: the daemon's side of flows
flow_group.add_command(flow_history_command)
