"""The dry run of a flow (`fastflow flow run NAME --dry-run`): everything a run would do, nothing run.

The plan (`flow.plan`: order, groups, each task's pipeline, args and env with the params
substituted) and, for each task, the `AttemptSpec` of its first attempt exactly as a real flow
run builds it: the same flow record and engine (`flow.run`: run ids, `FASTFLOW_INPUTS`,
`FASTFLOW_PARAMS`), the same run request and spec (`run.runner.attempt_spec`), secrets masked
(their values are never read). The Docker executor renders each spec as the commands it would
run (`DockerExecutor.dry_run_commands`: the container's own keywords as `docker run` flags), and
`flow.plan.shell_script` joins them into a bash script. Here because it joins `flow`, `run` and
`executors`, which sit on the rows below.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Mapping

from fastflow.daemon.flowhere import task_trigger
from fastflow.executors.base import AttemptSpec
from fastflow.executors.docker import DockerExecutor
from fastflow.flow.plan import (
    SCRATCH_TOKEN,
    WORKSPACE_TOKEN,
    FlowPlan,
    plan_flow,
    shell_script,
)
from fastflow.flow.run import FlowEngine, new_flow_record
from fastflow.model import Flow, Pipeline, RepoConfig
from fastflow.record import CommitRef, Trigger, new_run_id
from fastflow.run.runner import RunRequest, attempt_spec

MASK = "***"  # what a secret's value is shown as


@dataclass(frozen=True)
class DryRun:
    """A flow run that did not happen: its plan, each task's first attempt (`specs`, env with
    secrets masked), its commands (`setup`: scratch folders and cache volume; `commands`:
    `docker run`), and the whole as a bash script."""

    plan: FlowPlan
    flow_run_id: str
    specs: Mapping[str, AttemptSpec]
    setup: Mapping[str, list[list[str]]]
    commands: Mapping[str, list[str]]
    script: str


def dry_run_flow(flow: Flow, *, pipelines: Mapping[str, Pipeline], config: RepoConfig,
                 params: Mapping[str, object], executor: DockerExecutor | None,
                 now: datetime) -> DryRun:
    """The dry run of `flow` with `params` at `now` (see the module doc). `executor` None (a
    `--local` dry run): no docker commands, no script. `ConfigError` as a real run would raise
    it before anything runs (a missing param, a FASTFLOW_ variable in an env)."""
    plan = plan_flow(flow, pipelines, params)
    flow_run_id = new_run_id(flow.name, now)
    record = new_flow_record(flow, flow_run_id, trigger=Trigger(kind="manual"),
                             commit=CommitRef(), params=plan.params, now=now)
    engine = FlowEngine(flow, record)
    specs: dict[str, AttemptSpec] = {}
    setup: dict[str, list[list[str]]] = {}
    commands: dict[str, list[str]] = {}
    for task_id in plan.order:
        state = record.task(task_id)
        task = plan.tasks[task_id]
        request = RunRequest(
            pipeline=task.pipeline, trigger=task_trigger(record, task_id),
            trigger_env=engine.task_env(state), secrets={name: MASK for name in task.secrets},
            log_cap_bytes=config.log_cap_bytes, grace_period=config.grace_period,
            flow=engine.task_input(state, Path(WORKSPACE_TOKEN)))
        specs[task_id] = attempt_spec(request, engine.run_id_of(state), 1)
        if executor is not None:
            setup[task_id], commands[task_id] = executor.dry_run_commands(
                specs[task_id], Path(SCRATCH_TOKEN) / task_id)
    script = shell_script(plan, {k: [v] for k, v in commands.items()}, setup) if executor else ""
    return DryRun(plan, flow_run_id, specs, setup, commands, script)
