"""The plan of a flow run: the order of its tasks, the groups that can run side by side, and what
each task runs (its pipeline, command arguments and env with the params substituted).

Pure: a valid `Flow`, the pipelines its tasks name and the params of the run go in; a
`FlowPlan` comes out, or `ConfigError` before anything runs (a param without a value). The
order is topological and stable (file order among tasks that are ready together); a task's
group is one more than the highest group of its dependencies, so group 1 is every task without
dependencies. The engine (`flow.run`) never waits for a group: a task starts as soon as its own
dependencies allow; the groups say what *can* run at once. `shell_script` writes the plan as
the `docker run` commands `fastflow flow run --dry-run` prints.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Mapping, Sequence

from fastflow.config.flows import substitute_params
from fastflow.errors import ConfigError
from fastflow.executors.base import OUTPUTS_DIR
from fastflow.flow.run import resolve_params, task_as_pipeline
from fastflow.model import Flow, FlowTask, Pipeline

SCRATCH_TOKEN = "/@FASTFLOW_SCRATCH@"  # where a script's per-run scratch folder goes
WORKSPACE_TOKEN = "/@FASTFLOW_WORKSPACE@"  # where a script's workspace folder goes
SHELL_VARIABLES = {SCRATCH_TOKEN: "$scratch", WORKSPACE_TOKEN: "$workspace"}


@dataclass(frozen=True)
class TaskPlan:
    """One task as it would run: the pipeline its run executes (a script task's own, or the
    pipeline it names with the task's keys over it), its arguments and env with the params
    substituted, its group (1-based) and the names of its secret variables (never values)."""

    task: FlowTask
    pipeline: Pipeline
    args: tuple[str, ...]
    env: Mapping[str, str]
    group: int
    secrets: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return self.task.id


@dataclass(frozen=True)
class FlowPlan:
    """A flow run's plan: `order` (topological), `groups` (ids that can run at once, in
    order), every task's `TaskPlan` by id, and the run's params (values as tasks see them)."""

    flow: Flow
    params: Mapping[str, str]
    order: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]
    tasks: Mapping[str, TaskPlan]


def plan_flow(flow: Flow, pipelines: Mapping[str, Pipeline],
              params: Mapping[str, object]) -> FlowPlan:
    """The plan of a run of `flow` with `params` (given values over the flow's defaults).

    `pipelines` are the valid pipelines of the same tree (a pipeline task runs one of them).
    `ConfigError` when a param has no value or a pipeline a task names is not there."""
    values = resolve_params(flow, params)
    order, groups = topological_order(flow.tasks)
    group_of = {task_id: n for n, ids in enumerate(groups, 1) for task_id in ids}
    tasks: dict[str, TaskPlan] = {}
    for task in flow.tasks:
        pipeline = None
        if task.pipeline is not None:
            pipeline = pipelines.get(task.pipeline)
            if pipeline is None:
                raise ConfigError(f'{flow.file}: task "{task.id}" runs pipeline '
                                  f'"{task.pipeline}", which is not a valid pipeline here; '
                                  "fix it first (fastflow validate)")
        runs = task_as_pipeline(flow, task, pipeline)
        tasks[task.id] = TaskPlan(
            task=task, pipeline=runs,
            args=tuple(substitute_params(arg, values) for arg in task.args),
            env={key: substitute_params(value, values) for key, value in task.env.items()},
            group=group_of[task.id], secrets=tuple(sorted(runs.secrets)),
        )
    return FlowPlan(flow, values, order, groups, tasks)


def topological_order(tasks: Sequence[FlowTask]) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """The ids of `tasks` in an order where every task comes after its dependencies (file
    order where that leaves a choice), and the groups by depth. The tasks form no cycle
    (`config.flows` refused it); a cycle here raises ValueError."""
    index = {task.id: n for n, task in enumerate(tasks)}
    depth: dict[str, int] = {}
    order: list[str] = []
    pending = list(tasks)
    while pending:
        ready = [t for t in pending if all(d in depth for d in t.depends_on)]
        if not ready:
            raise ValueError(f"the tasks {[t.id for t in pending]} form a cycle")
        for task in ready:
            depth[task.id] = 1 + max((depth[d] for d in task.depends_on), default=0)
            order.append(task.id)
        pending = [t for t in pending if t.id not in depth]
    groups: dict[int, list[str]] = {}
    for task_id in sorted(order, key=lambda i: (depth[i], index[i])):
        groups.setdefault(depth[task_id], []).append(task_id)
    return tuple(order), tuple(tuple(groups[n]) for n in sorted(groups))


def shell_script(plan: FlowPlan, commands: Mapping[str, Sequence[Sequence[str]]],
                 setup: Mapping[str, Sequence[Sequence[str]]]) -> str:
    """A bash script running `plan` with `docker run`: one group after the other, the tasks of
    a group side by side, stopping after a group where a task failed (a plain script has no
    `when`: tasks with `when: failure` or `always` are run only with the others). `setup`
    holds the commands that prepare a task's container (its scratch folders and cache
    volume), `commands` its `docker run`; paths under `SCRATCH_TOKEN` / `WORKSPACE_TOKEN` are
    written as `$scratch` / `$workspace`, made when the script starts and removed at its end."""
    flow = plan.flow
    lines = [
        "#!/usr/bin/env bash",
        f"# Flow {flow.name} ({flow.file}) as docker run commands: fastflow flow run "
        f"{flow.name} --dry-run.",
        "# Groups run one after the other, the tasks of a group side by side.",
        "set -u",
        'workspace="$(mktemp -d)"',
        'scratch="$(mktemp -d)"',
        f'mkdir -p "$workspace/{OUTPUTS_DIR}" && chmod -R 0777 "$workspace"',
        "volumes=()",
        'cleanup() { for v in "${volumes[@]}"; do docker volume rm -f "$v" >/dev/null; done; '
        'rm -rf "$scratch" "$workspace" 2>/dev/null; }',
        "trap cleanup EXIT",
        "failed=0",
    ]
    for number, group in enumerate(plan.groups, 1):
        lines += ["", f"# group {number}: {', '.join(group)}", "pids=()"]
        for task_id in group:
            lines.append(f"# task {task_id}")
            for command in setup[task_id]:
                lines.append(_shell(command))
            if setup[task_id]:
                lines.append(f"volumes+=({_quote(list(setup[task_id])[-1][-1])})")
            for command in commands[task_id]:
                lines.append(f"{_shell(command)} &")
            lines.append("pids+=($!)")
        lines += ['for pid in "${pids[@]}"; do wait "$pid" || failed=1; done',
                  f'if [ "$failed" -ne 0 ]; then echo "a task of group {number} failed" >&2; '
                  "exit 1; fi"]
    return "\n".join(lines) + "\n"


def _shell(command: Sequence[str]) -> str:
    return " ".join(_quote(arg) for arg in command)


def _quote(arg: str) -> str:
    """`arg` quoted for bash, the tokens turned into their (quoted) shell variables."""
    quoted = shlex.quote(arg)
    if not any(token in arg for token in SHELL_VARIABLES):
        return quoted
    quoted = "'" + arg.replace("'", "'\"'\"'") + "'"
    for token, variable in SHELL_VARIABLES.items():
        quoted = quoted.replace(token, f"'\"{variable}\"'")
    return quoted
