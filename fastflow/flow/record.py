"""The flow run record (`"schema": 1`): one JSON object per flow run on the results branch,
`flows/<flow>/<YYYY>/<MM>/<flow_run_id>.json` (docs/results-branch.md, "Flow records").

A flow run id has the form of a run id with the flow's name in place of a pipeline's
(`20261202T013000Z-weather-7f3a09c2`). The run of task `T` of a flow run is the run id
`<stamp>-<flow>.<T>-<suffix>` (the flow run's stamp and suffix), a rerun's `...-<suffix>r<n>`:
derived, so a task of a flow run can never run twice under two ids (`task_run_id`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Mapping

from fastflow.model import RunStatus
from fastflow.record import RUN_ID_FORM, CommitRef, ErrorInfo, Trigger, run_id_month

FLOW_RECORD_SCHEMA = 1
PENDING = "pending"  # a task not started yet (the flow run is running)
TASK_PIPELINE_SEPARATOR = "."  # a script task's runs are recorded as pipeline `<flow>.<task>`


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def task_pipeline_name(flow: str, task: str) -> str:
    """The pipeline name a script task's run is recorded under: `<flow>.<task>`."""
    return f"{flow}{TASK_PIPELINE_SEPARATOR}{task}"


def task_run_id(flow_run_id: str, flow: str, pipeline: str, generation: int = 0) -> str:
    """The run id of a task (recorded under `pipeline`) in flow run `flow_run_id`: the flow
    run's timestamp and suffix around the task's pipeline name; `generation` n > 0 (the n-th
    rerun) appends `r<n>`."""
    parts = run_id_month(flow_run_id)
    if parts is None or not (parts[2] == flow or parts[2].startswith(flow + "-")):
        raise ValueError(f"flow run id {flow_run_id!r} is not `{RUN_ID_FORM}` of flow {flow!r}")
    suffix = parts[2][len(flow) + 1:]  # none for a schedule slot whose id is the flow's name
    rerun = f"r{generation}" if generation else ""
    return f"{flow_run_id[:16]}-{pipeline}" + (f"-{suffix}{rerun}" if suffix or rerun else "")


def downstream_flow_run_id(flow: str, parent_run_id: str) -> str:
    """The flow run id a pipeline run's downstream trigger to flow `flow` starts: the parent's
    timestamp and a digest of its id, so deciding it again (after a crash) starts nothing new."""
    digest = hashlib.sha1(f"{parent_run_id}->{flow}".encode("utf-8")).hexdigest()[:8]
    return f"{parent_run_id[:16]}-{flow}-{digest}"


@dataclass(frozen=True)
class TaskState:
    """One task of a flow run: its run (id, pipeline), status, attempts, output and timings.
    `status` is `pending`, `queued`, `running`, a terminal run status or `skipped` (with
    `reason`); `reused_from` names the flow run whose successful run a rerun kept."""

    id: str
    pipeline: str
    depends_on: tuple[str, ...] = ()
    when: str = "success"
    status: str = PENDING
    run_id: str | None = None
    attempts: int = 0
    exit_code: int | None = None
    error: ErrorInfo | None = None
    reason: str | None = None
    output: Mapping[str, object] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    reused_from: str | None = None

    @property
    def ended(self) -> bool:
        return self.status not in (PENDING, RunStatus.QUEUED.value, RunStatus.RUNNING.value)

    @property
    def succeeded(self) -> bool:
        return self.status == RunStatus.SUCCEEDED.value

    def to_json(self) -> dict:
        return {
            "id": self.id, "pipeline": self.pipeline, "depends_on": list(self.depends_on),
            "when": self.when, "status": self.status, "run_id": self.run_id,
            "attempts": self.attempts, "exit_code": self.exit_code,
            "error": {"kind": self.error.kind, "message": self.error.message} if self.error else None, "reason": self.reason,
            "output": dict(self.output) if self.output is not None else None,
            "started_at": _iso(self.started_at), "finished_at": _iso(self.finished_at),
            "duration_s": self.duration_s, "reused_from": self.reused_from,
        }

    @classmethod
    def from_json(cls, data: dict) -> "TaskState":
        error = data.get("error")
        return cls(
            id=data["id"], pipeline=data["pipeline"],
            depends_on=tuple(data.get("depends_on") or ()), when=data.get("when", "success"),
            status=data.get("status", PENDING), run_id=data.get("run_id"),
            attempts=int(data.get("attempts") or 0), exit_code=data.get("exit_code"),
            error=ErrorInfo(error["kind"], error["message"]) if error else None,
            reason=data.get("reason"), output=data.get("output"),
            started_at=_time(data.get("started_at")), finished_at=_time(data.get("finished_at")),
            duration_s=data.get("duration_s"), reused_from=data.get("reused_from"),
        )


@dataclass(frozen=True)
class FlowRunRecord:
    """A flow run: which flow, why, at which commit, with which params, and its tasks.
    `status` is `running` until every task ended, then `succeeded` (no task failed: skipped
    tasks whose `when` was not met do not count), `failed`, or `cancelled`. `workspace` is the
    host folder of its workspace while it exists; `workspace_kept_until` says how long a failed
    run's workspace is kept for a rerun (null: removed)."""

    flow_run_id: str
    flow: str
    tasks: tuple[TaskState, ...]
    status: str = RunStatus.RUNNING.value
    trigger: Trigger = Trigger()
    commit: CommitRef = CommitRef()
    params: Mapping[str, object] = field(default_factory=dict)
    rerun_of: str | None = None
    generation: int = 0
    max_parallel: int | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    workspace: str | None = None
    workspace_kept_until: datetime | None = None
    error: ErrorInfo | None = None

    def task(self, task_id: str) -> TaskState:
        for state in self.tasks:
            if state.id == task_id:
                return state
        raise KeyError(task_id)

    def with_task(self, state: TaskState) -> "FlowRunRecord":
        return replace(self, tasks=tuple(state if t.id == state.id else t for t in self.tasks))

    def to_json(self) -> dict:
        return {
            "schema": FLOW_RECORD_SCHEMA, "flow_run_id": self.flow_run_id, "flow": self.flow,
            "status": self.status, "trigger": self.trigger.to_json(),
            "commit": {"sha": self.commit.sha, "tree": self.commit.tree}, "params": dict(self.params),
            "rerun_of": self.rerun_of, "generation": self.generation,
            "max_parallel": self.max_parallel, "queued_at": _iso(self.queued_at),
            "started_at": _iso(self.started_at), "finished_at": _iso(self.finished_at),
            "duration_s": self.duration_s, "workspace": self.workspace,
            "workspace_kept_until": _iso(self.workspace_kept_until),
            "error": {"kind": self.error.kind, "message": self.error.message} if self.error else None,
            "tasks": [t.to_json() for t in self.tasks],
        }

    @classmethod
    def from_json(cls, data: dict) -> "FlowRunRecord":
        error = data.get("error")
        return cls(
            flow_run_id=data["flow_run_id"], flow=data["flow"],
            tasks=tuple(TaskState.from_json(t) for t in data.get("tasks") or ()),
            status=data.get("status", RunStatus.RUNNING.value),
            trigger=Trigger.from_json(data.get("trigger") or {}),
            commit=CommitRef(**(data.get("commit") or {})),
            params=data.get("params") or {}, rerun_of=data.get("rerun_of"),
            generation=int(data.get("generation") or 0), max_parallel=data.get("max_parallel"),
            queued_at=_time(data.get("queued_at")), started_at=_time(data.get("started_at")),
            finished_at=_time(data.get("finished_at")), duration_s=data.get("duration_s"),
            workspace=data.get("workspace"),
            workspace_kept_until=_time(data.get("workspace_kept_until")),
            error=ErrorInfo(error["kind"], error["message"]) if error else None,
        )
