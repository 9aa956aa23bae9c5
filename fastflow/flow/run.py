"""The flow run engine: which task starts when, which is skipped and why, when the flow run ends.

A `FlowEngine` holds one flow run's record (`flow.record.FlowRunRecord`) and moves it on; it
runs nothing itself. Its caller (the daemon, through its one queue, or `fastflow flow run`
through the same code: `daemon.flows`) starts each task the engine hands out as an ordinary run
and reports how that run ended (`task_ended`). Rules (docs/flows.md, "Running a flow"):

- A task is due as soon as every task it depends on has ended, never in waves: `start_due`
  hands out every due task at once, bounded only by the flow's `max_parallel` (the daemon's
  `max_concurrent_runs` bounds all runs, flow tasks among them, in the dispatcher).
- `when` decides what a due task does: `success` (the default) runs when every dependency
  succeeded; `failure` when a dependency failed or was skipped because of a failure further
  up; `always` runs in any case. Otherwise it is `skipped` with the reason, and so on down.
  Other branches go on.
- The flow run `failed` when any task failed (timed out, was OOM-killed, lost or cancelled
  count as failed); `cancelled` when it was cancelled (the tasks not started are skipped,
  saying so); else `succeeded`.
- A rerun (`rerun_record`) takes the tasks that succeeded as they are (run id, output) and runs
  the others again, as generation n + 1 of the same flow run (task run ids `...r<n>`).
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Mapping

from fastflow.config.flows import param_names, param_value, substitute_params
from fastflow.defaults import DEFAULT_FLOW_OUTPUT_MAX_BYTES
from fastflow.errors import ConfigError, Invalid
from fastflow.executors.base import OUTPUTS_DIR
from fastflow.flow.record import (
    PENDING,
    FlowRunRecord,
    TaskState,
    task_pipeline_name,
    task_run_id,
)
from fastflow.model import Flow, FlowTask, Pipeline, PipelineType, RunStatus, TaskWhen
from fastflow.record import CommitRef, ErrorInfo, FlowTaskInput, Trigger

logger = logging.getLogger(__name__)

SUCCEEDED = RunStatus.SUCCEEDED.value
SKIPPED = RunStatus.SKIPPED.value
QUEUED = RunStatus.QUEUED.value
RUNNING = RunStatus.RUNNING.value
FAILED = RunStatus.FAILED.value
CANCELLED = RunStatus.CANCELLED.value
# How a task's run may end that counts as the task failing (for `when` and the flow's status).
FAILED_STATUSES = frozenset({FAILED, RunStatus.TIMED_OUT.value, RunStatus.OOM_KILLED.value,
                             RunStatus.LOST.value, CANCELLED})


def resolve_params(flow: Flow, given: Mapping[str, object]) -> dict[str, str]:
    """The params of a flow run: the flow's declared defaults with `given` over them, each as
    tasks see it (`config.flows.param_value`). `ConfigError` before anything runs when a param
    the flow needs has no value, or a value is not a string, number or boolean."""
    values: dict[str, str] = {}
    for key, item in given.items():
        try:
            values[str(key)] = param_value(str(key), item)
        except Invalid as exc:
            raise ConfigError(f"flow {flow.name!r}: params: {exc}") from None
    for key, default in flow.params.items():
        if key not in values and default is not None:
            values[key] = default
    used = {n for t in flow.tasks for v in (*t.args, *t.env.values()) for n in param_names(v)}
    missing = sorted((used | {k for k, d in flow.params.items() if d is None}) - set(values))
    if missing:
        raise ConfigError(
            f"flow {flow.name!r} ({flow.file}) needs the param(s) {', '.join(missing)}; give "
            f"them with --params '{{\"{missing[0]}\": \"...\"}}' (or a default in the "
            "flow's \"params\")")
    return values


def task_pipeline(flow: Flow, task: FlowTask) -> str:
    """The pipeline a task's runs are recorded under: the pipeline it names, else
    `<flow>.<task>`."""
    return task.pipeline or task_pipeline_name(flow.name, task.id)


def task_as_pipeline(flow: Flow, task: FlowTask, pipeline: Pipeline | None = None,
                     tasks_dir: Path | None = None) -> Pipeline:
    """The pipeline a task's run executes. A script task: its script in the flow's tasks
    folder (`tasks_dir`, default `flow.tasks_dir`: the daemon passes the snapshot of the
    folder at the flow run's commit) with its requirements, Python, limits, timeout, retries
    and network, recorded as `<flow>.<task>`. A pipeline task: `pipeline` (as discovered at the
    same commit) with the keys the task writes itself over its own."""
    if task.pipeline is not None:
        if pipeline is None:
            raise ValueError(f"task {task.id!r} runs pipeline {task.pipeline!r}: give it")
        changes: dict[str, object] = {}
        over = task.overrides
        limits = {k: getattr(task.limits, k) for k in vars(task.limits) if k in over}
        if limits:
            changes["limits"] = replace(pipeline.limits, **limits)
        if "timeout" in over:
            changes["timeout"] = task.timeout
        if over & {"retry_attempts", "retry_strategy", "retry_on_exit_codes"}:
            changes["retry"] = task.retry
        if "python_version" in over:
            changes["python_version"] = task.python_version
        if "network" in over:
            changes["network"] = task.network
        return replace(pipeline, **changes)
    folder = Path(tasks_dir or flow.tasks_dir)
    return Pipeline(
        name=task_pipeline(flow, task), path=folder, entry=task.script or "",
        type=PipelineType.SCRIPT, metadata_file=flow.path,
        requirements=folder / task.requirements if task.requirements else None,
        description=f"task {task.id} of flow {flow.name}", python_version=task.python_version,
        timeout=task.timeout, retry=task.retry, limits=task.limits, network=task.network,
    )


def new_flow_record(flow: Flow, flow_run_id: str, *, trigger: Trigger, commit: CommitRef,
                    params: Mapping[str, object], now: datetime) -> FlowRunRecord:
    """The record of a flow run that is about to start: every task `pending`."""
    tasks = tuple(TaskState(id=t.id, pipeline=task_pipeline(flow, t), depends_on=t.depends_on,
                            when=t.when.value) for t in flow.tasks)
    return FlowRunRecord(flow_run_id=flow_run_id, flow=flow.name, tasks=tasks, trigger=trigger,
                         commit=commit, params=dict(params), max_parallel=flow.max_parallel,
                         queued_at=now, started_at=now)


def rerun_record(previous: FlowRunRecord, flow: Flow, *, trigger: Trigger,
                 now: datetime) -> FlowRunRecord:
    """The next generation of a flow run that did not succeed: its tasks that succeeded kept
    (run id, output, timings; `reused_from` the flow run id), the others pending again. Same
    flow run id, commit, params and workspace. Raises `ValueError` naming the reason when
    there is nothing to rerun or the flow no longer has the record's tasks."""
    if previous.status == RUNNING:
        raise ValueError(f"flow run {previous.flow_run_id} is still running; wait for it to end")
    if previous.status == SUCCEEDED:
        raise ValueError(f"flow run {previous.flow_run_id} succeeded; nothing to rerun (start "
                         f"a new one with `fastflow flow run {previous.flow}`)")
    known = {t.id for t in flow.tasks}
    recorded = {t.id for t in previous.tasks}
    if known != recorded:
        raise ValueError(f"flow {flow.name!r} at commit {previous.commit.sha or '(working tree)'}"
                         f" has tasks {sorted(known)}, the flow run had {sorted(recorded)}")
    fresh = new_flow_record(flow, previous.flow_run_id, trigger=trigger, commit=previous.commit,
                            params=previous.params, now=now)
    tasks = []
    for state in fresh.tasks:
        old = previous.task(state.id)
        if old.succeeded:
            tasks.append(replace(old, reused_from=old.reused_from or previous.flow_run_id))
        else:
            tasks.append(state)
    return replace(fresh, tasks=tuple(tasks), rerun_of=previous.flow_run_id,
                   generation=previous.generation + 1, workspace=previous.workspace,
                   queued_at=previous.queued_at)


class FlowEngine:
    """Moves one flow run's record on as its tasks start and end (see the module doc).
    Not thread-safe: its caller serialises the calls (one lock, or the daemon's loop)."""

    def __init__(self, flow: Flow, record: FlowRunRecord) -> None:
        self.flow = flow
        self.record = record
        self.cancelled = False

    # --- what to do next ---------------------------------------------------------------

    def start_due(self, now: datetime) -> list[TaskState]:
        """Skip what can no longer run, then mark `queued` and return every task that may
        start now (dependencies ended, `when` met, within `max_parallel`)."""
        self._skip_unrunnable(now)
        if self.cancelled:
            return []
        busy = sum(t.status in (QUEUED, RUNNING) for t in self.record.tasks)
        limit = self.flow.max_parallel
        due = []
        for state in self.record.tasks:
            if limit is not None and busy >= limit:
                break
            if state.status != PENDING or not self._deps_ended(state):
                continue
            if self._decision(state)[0]:
                state = replace(state, status=QUEUED, run_id=self.run_id_of(state))
                self._put(state)
                due.append(state)
                busy += 1
        return due

    def run_id_of(self, state: TaskState) -> str:
        """The run id of task `state` in this generation of the flow run."""
        return task_run_id(self.record.flow_run_id, self.flow.name, state.pipeline,
                           self.record.generation)

    def task_started(self, task_id: str, now: datetime) -> None:
        state = self.record.task(task_id)
        if not state.ended:
            self._put(replace(state, status=RUNNING, started_at=state.started_at or now))

    def task_ended(self, task_id: str, *, status: str, run_id: str | None, attempts: int,
                   exit_code: int | None, error: ErrorInfo | None, output: dict | None,
                   started_at: datetime | None, finished_at: datetime | None) -> None:
        """Record how the run of `task_id` ended (a repeat for an ended task is ignored)."""
        state = self.record.task(task_id)
        if state.ended:
            return
        duration = (round((finished_at - started_at).total_seconds(), 3)
                    if started_at and finished_at else None)
        self._put(replace(state, status=status, run_id=run_id or state.run_id,
                          attempts=attempts, exit_code=exit_code, error=error, output=output,
                          started_at=started_at, finished_at=finished_at, duration_s=duration))

    def cancel(self, now: datetime) -> None:
        """Start nothing more: the tasks not started are skipped once the running ones end."""
        self.cancelled = True
        self._skip_unrunnable(now)

    @property
    def busy(self) -> list[TaskState]:
        return [t for t in self.record.tasks if t.status in (QUEUED, RUNNING)]

    @property
    def done(self) -> bool:
        return all(t.ended for t in self.record.tasks)

    def finish(self, now: datetime) -> FlowRunRecord:
        """The record once every task ended: its status, end and duration."""
        tasks = self.record.tasks
        if any(t.status in FAILED_STATUSES for t in tasks):
            status = FAILED
        elif self.cancelled:
            status = CANCELLED
        else:
            status = SUCCEEDED
        started = self.record.started_at
        self.record = replace(self.record, status=status, finished_at=now,
                              duration_s=round((now - started).total_seconds(), 3)
                              if started else None)
        return self.record

    # --- inputs of a task --------------------------------------------------------------

    def task_input(self, state: TaskState, workspace: Path,
                   output_max_bytes: int = DEFAULT_FLOW_OUTPUT_MAX_BYTES) -> FlowTaskInput:
        """What the run of `state` gets: its args with the params substituted, the workspace,
        the outputs of its dependencies by task id (null for one that wrote none or did not
        succeed), the params."""
        task = self.flow.task(state.id)
        params = {k: str(v) for k, v in self.record.params.items()}
        inputs = {dep: self.record.task(dep).output for dep in task.depends_on}
        return FlowTaskInput(
            flow=self.flow.name, flow_run_id=self.record.flow_run_id, task=task.id,
            workspace=str(workspace), args=tuple(substitute_params(a, params) for a in task.args),
            inputs=inputs, params=dict(self.record.params), output_max_bytes=output_max_bytes)

    def task_env(self, state: TaskState) -> dict[str, str]:
        """The task's `env` with the params substituted."""
        params = {k: str(v) for k, v in self.record.params.items()}
        return {k: substitute_params(v, params) for k, v in self.flow.task(state.id).env.items()}

    # --- the rules -----------------------------------------------------------------------

    def _deps_ended(self, state: TaskState) -> bool:
        return all(self.record.task(d).ended for d in state.depends_on)

    def _failed_upstream(self, task_id: str) -> bool:
        """Whether `task_id` failed, or was skipped because of a failure further up."""
        state = self.record.task(task_id)
        if state.status in FAILED_STATUSES:
            return True
        return state.status == SKIPPED and any(self._failed_upstream(d) for d in state.depends_on)

    def _decision(self, state: TaskState) -> tuple[bool, str | None]:
        """(runs, why not) for a task whose dependencies all ended."""
        when = TaskWhen(state.when)
        if when is TaskWhen.ALWAYS or not state.depends_on:
            return True, None
        if when is TaskWhen.FAILURE:
            if any(self._failed_upstream(d) for d in state.depends_on):
                return True, None
            return False, "when: failure, and no dependency failed"
        for dep in state.depends_on:
            other = self.record.task(dep)
            if other.status in FAILED_STATUSES:
                return False, f"dependency {dep!r} {other.status}"
            if other.status == SKIPPED:
                return False, f"dependency {dep!r} was skipped"
        return True, None

    def _skip_unrunnable(self, now: datetime) -> None:
        """Mark skipped, in order and repeatedly (a skip may decide a dependent's fate), every
        pending task that can no longer run: its `when` is not met, or the run is cancelled."""
        changed = True
        while changed:
            changed = False
            for state in self.record.tasks:
                if state.status != PENDING:
                    continue
                if self.cancelled:
                    reason = "the flow run was cancelled before it started"
                elif not self._deps_ended(state):
                    continue
                else:
                    runs, reason = self._decision(state)
                    if runs:
                        continue
                self._put(replace(state, status=SKIPPED, reason=reason, finished_at=now))
                changed = True

    def _put(self, state: TaskState) -> None:
        self.record = self.record.with_task(state)


class Workspaces:
    """`<root>/<flow_run_id>/`: the shared folder of each flow run (docs/flows.md,
    "Workspace and outputs"). Made writable by the task containers' user (mode 0777: the
    tasks run as another uid than the daemon). Removed when the flow run succeeds; after a
    failure kept until `<root>/<flow_run_id>.keep` (an ISO time) passes, for a rerun."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, flow_run_id: str) -> Path:
        return self.root / flow_run_id

    def create(self, flow_run_id: str) -> Path:
        """The workspace of `flow_run_id`, made when missing (a rerun finds the kept one)."""
        folder = self.path(flow_run_id)
        outputs = folder / OUTPUTS_DIR
        outputs.mkdir(parents=True, exist_ok=True)
        for path in (folder, outputs.parent, outputs):
            os.chmod(path, 0o777)
        self._marker(flow_run_id).unlink(missing_ok=True)
        return folder

    def keep(self, flow_run_id: str, until: datetime) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._marker(flow_run_id).write_text(until.isoformat() + "\n", encoding="utf-8")

    def remove(self, flow_run_id: str) -> None:
        shutil.rmtree(self.path(flow_run_id), ignore_errors=True)
        self._marker(flow_run_id).unlink(missing_ok=True)

    def sweep(self, now: datetime, active: set[str] = frozenset()) -> list[str]:
        """Remove the kept workspaces whose time is up (never one of `active` flow runs)."""
        removed = []
        for marker in sorted(self.root.glob("*.keep")) if self.root.is_dir() else ():
            flow_run_id = marker.name[:-len(".keep")]
            try:
                until = datetime.fromisoformat(marker.read_text(encoding="utf-8").strip())
            except (OSError, ValueError):
                continue
            if until <= now and flow_run_id not in active:
                self.remove(flow_run_id)
                removed.append(flow_run_id)
        return removed

    def ended(self, record: FlowRunRecord, now: datetime, keep_s: float) -> FlowRunRecord:
        """Remove or keep the workspace of a flow run that just ended; the record says which."""
        if record.status == SUCCEEDED or keep_s <= 0:
            self.remove(record.flow_run_id)
            return replace(record, workspace=None, workspace_kept_until=None)
        until = now + timedelta(seconds=keep_s)
        self.keep(record.flow_run_id, until)
        return replace(record, workspace_kept_until=until)

    def _marker(self, flow_run_id: str) -> Path:
        return self.root / f"{flow_run_id}.keep"
