"""`fastflow flow run NAME` on this machine: a flow run driven by the engine the daemon uses.

The tasks are ordinary runs (`run.runner.run_pipeline`, each on a thread of its own) through the
executor the daemon would use (Docker, or the host with `--local`), with the same run ids, env,
workspace and outputs as a daemon's flow run (`flow.run`), from the working tree. Nothing is
written to the results branch (as `fastflow run`); the caller gets the flow run record and the
record and log of every task run.
"""
from __future__ import annotations

import queue
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

from fastflow.deploy.flows import discover_flows, find_flow
from fastflow.deploy.workspace import Workspace
from fastflow.executors.base import Clock, Executor, OutputSink
from fastflow.flow.record import FlowRunRecord, TaskState
from fastflow.flow.run import (
    FlowEngine,
    Workspaces,
    new_flow_record,
    resolve_params,
    task_as_pipeline,
)
from fastflow.model import Flow, Pipeline, RepoConfig
from fastflow.record import CommitRef, ErrorInfo, RunRecord, Trigger, new_run_id
from fastflow.run.runner import RunOutcome, RunRequest, run_pipeline
from fastflow.secrets.runtime import secrets_loader

# (task id, what happened): "started", "ended", "skipped"; the text says it for people.
TaskEvents = Callable[[str, str, str], None]


@dataclass
class FlowOutcome:
    """How a flow run ended here: its record and each task run's outcome by task id."""

    record: FlowRunRecord
    runs: dict[str, RunOutcome] = field(default_factory=dict)


def task_trigger(record: FlowRunRecord, task_id: str) -> Trigger:
    """The trigger of a task's run: kind `flow`, naming the flow run and the task."""
    return Trigger(kind="flow", flow_run_id=record.flow_run_id, task=task_id)


def local_workspaces() -> Workspaces:
    """Where `fastflow flow run` (and the API) keep flow runs' workspaces on this machine: a
    folder of the system's temporary directory (the daemon keeps them in its state dir)."""
    return Workspaces(Path(tempfile.gettempdir()) / "fastflow-workspaces")


def run_workspace_flow(
    workspace: Workspace, name: str, *, params: Mapping[str, object], executor: Executor,
    environ: Mapping[str, str], clock: Clock, sink_for: Callable[[str], OutputSink],
    events: TaskEvents, cancel: threading.Event | None = None,
) -> FlowOutcome:
    """Run flow `name` of the working tree `workspace` here (`fastflow flow run NAME`, the
    API's `run`): the flow and the pipelines its tasks name as the tree has them, its params
    resolved (`ConfigError` before anything runs for a missing one), secrets decrypted at each
    task's start, the workspace kept after a failure for `flow_workspace_keep`."""
    flow = find_flow(discover_flows(workspace.root, workspace.config, workspace.discovery), name)
    resolved = resolve_params(flow, params)
    pipelines = {t.pipeline: workspace.pipeline(t.pipeline) for t in flow.tasks if t.pipeline}
    return run_flow_here(
        flow, pipelines=pipelines, config=workspace.config, executor=executor, params=resolved,
        workspaces=local_workspaces(), clock=clock, sink_for=sink_for, events=events,
        cancel=cancel, workspace_keep_s=workspace.config.flow_workspace_keep,
        secrets_for=lambda p: secrets_loader(workspace.root, workspace.config, p, environ, None))


def run_flow_here(
    flow: Flow, *, pipelines: Mapping[str, Pipeline], config: RepoConfig, executor: Executor,
    params: Mapping[str, object], workspaces: Workspaces, clock: Clock,
    sink_for: Callable[[str], OutputSink], events: TaskEvents,
    cancel: threading.Event | None = None,
    secrets_for: Callable[[Pipeline], Callable[[], Mapping[str, str]] | None] = lambda p: None,
    workspace_keep_s: float = 0.0, flow_run_id: str | None = None,
) -> FlowOutcome:
    """Run `flow` to its end and return its record (see the module doc). `sink_for(task)`
    receives each task's output live; `events(task, kind, text)` hears when a task starts,
    ends or is skipped; `cancel` stops the running tasks and starts no more."""
    cancel = cancel or threading.Event()
    now = clock()
    flow_run_id = flow_run_id or new_run_id(flow.name, now)
    record = new_flow_record(flow, flow_run_id, trigger=Trigger(kind="manual"),
                             commit=CommitRef(), params=params, now=now)
    workspace = workspaces.create(flow_run_id)
    engine = FlowEngine(flow, replace(record, workspace=str(workspace)))
    done: queue.Queue[tuple[str, RunOutcome | BaseException]] = queue.Queue()
    outcome = FlowOutcome(engine.record)
    running = 0

    def execute(state: TaskState) -> None:
        task = flow.task(state.id)
        pipeline = task_as_pipeline(flow, task, pipelines.get(task.pipeline or ""))
        request = RunRequest(
            pipeline=pipeline, trigger=task_trigger(engine.record, task.id),
            trigger_env=engine.task_env(state), log_cap_bytes=config.log_cap_bytes,
            grace_period=config.grace_period, secrets_loader=secrets_for(pipeline),
            flow=engine.task_input(state, workspace))
        try:
            result = run_pipeline(request, executor, clock=clock, sink=sink_for(task.id),
                                  cancel=cancel, run_id=state.run_id)
        except BaseException as exc:  # noqa: BLE001 - e.g. a FASTFLOW_ variable: the task failed
            done.put((task.id, exc))
            return
        done.put((task.id, result))

    while True:
        if cancel.is_set() and not engine.cancelled:
            engine.cancel(clock())
        before = {t.id: t.status for t in engine.record.tasks}
        for state in engine.start_due(clock()):
            engine.task_started(state.id, clock())
            events(state.id, "started", f"started (run {state.run_id})")
            threading.Thread(target=execute, args=(state,), name=f"task-{state.id}",
                             daemon=True).start()
            running += 1
        for state in engine.record.tasks:
            if state.status == "skipped" and before.get(state.id) != "skipped":
                events(state.id, "skipped", f"skipped: {state.reason}")
        if running == 0:
            break
        try:
            task_id, result = done.get(timeout=0.5)
        except queue.Empty:
            continue
        running -= 1
        _ended(engine, task_id, result, clock, events, outcome)
    final = workspaces.ended(engine.finish(clock()), clock(), workspace_keep_s)
    outcome.record = final
    return outcome


def _ended(engine: FlowEngine, task_id: str, result: RunOutcome | BaseException, clock: Clock,
           events: TaskEvents, outcome: FlowOutcome) -> None:
    if isinstance(result, BaseException):
        now = clock()
        engine.task_ended(task_id, status="failed", run_id=None, attempts=0, exit_code=None,
                          error=ErrorInfo("config", str(result)), output=None,
                          started_at=engine.record.task(task_id).started_at, finished_at=now)
        events(task_id, "ended", f"failed before it ran: {result}")
        return
    record: RunRecord = result.record
    outcome.runs[task_id] = result
    engine.task_ended(task_id, status=record.status.value, run_id=record.run_id,
                      attempts=len(record.attempts), exit_code=record.exit_code,
                      error=record.error, output=result.output, started_at=record.started_at,
                      finished_at=record.finished_at)
    text = f"{record.status.value}"
    if record.error and record.status.value != "succeeded":
        text += f": {record.error.message}"
    events(task_id, "ended", text)
