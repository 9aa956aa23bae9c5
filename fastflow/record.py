"""The run record (`"schema": 1`): what one run did, as stored on the results branch.

Dataclasses <-> JSON, both directions, lossless. A record never holds a secret value.
Timestamps are timezone-aware datetimes, serialised as ISO 8601 with offset.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any, Mapping

from fastflow.defaults import DEFAULT_FLOW_OUTPUT_MAX_BYTES
from fastflow.model import RunStatus

SCHEMA_VERSION = 1
_STAMPED_RUN_ID = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z-(.+)$")
RUN_ID_FORM = "<YYYYMMDDTHHMMSSZ>-<pipeline>[-<suffix>]"


# --- run ids: the one home of their format ----------------------------------------------------
# `20261122T143000Z-report-7f3a09c2`: a UTC second, then the pipeline, then what makes it unique
# (8 random hex digits, a schedule id, a request id). Ids sort by time as text. Random bits make
# a clash rare; the daemon makes it impossible: it creates a run's journal entry exclusively and
# draws a new id when the name is taken (`daemon.runs.RunJournal.create`). Ids of every older
# shape (4 random hex digits) stay valid: readers only rely on the timestamp and the pipeline.
RUN_ID_RANDOM_BYTES = 4


def run_stamp(at: datetime) -> str:
    """The timestamp part of a run id: `20261122T143000Z` (UTC; `at` must be aware)."""
    if at.tzinfo is None:
        raise ValueError("run ids need a timezone-aware datetime")
    at = at.astimezone(timezone.utc)  # formatted by hand: strftime costs more than a tick
    return f"{at.year:04d}{at.month:02d}{at.day:02d}T{at.hour:02d}{at.minute:02d}{at.second:02d}Z"


def new_run_id(pipeline: str, now: datetime, rand: str | None = None) -> str:
    """A run id that sorts by time and is unique: `20261122T143000Z-pipeline_a-7f3a09c2`.

    `now` must be timezone-aware (it is written in UTC); `rand` (8 hex characters by default,
    from the OS's random source) is for tests. Unique among the runs of one second with
    overwhelming odds; a caller that must never reuse one (the daemon) checks its journal.
    """
    if now.tzinfo is None:
        raise ValueError("new_run_id needs a timezone-aware datetime")
    suffix = rand if rand is not None else os.urandom(RUN_ID_RANDOM_BYTES).hex()
    return f"{run_stamp(now)}-{pipeline}-{suffix}"


def slot_suffix(pipeline: str, schedule_id: str) -> str:
    """The part of a schedule slot's run id after the timestamp: `<pipeline>` or
    `<pipeline>-<schedule id>`."""
    return pipeline if schedule_id == pipeline else f"{pipeline}-{schedule_id}"


def slot_run_id(pipeline: str, schedule_id: str, at: datetime) -> str:
    """The deterministic run id of a schedule slot: `20261122T030000Z-report-nightly`, so the
    same slot can never run twice."""
    return f"{run_stamp(at)}-{slot_suffix(pipeline, schedule_id)}"


def restart_run_id(pipeline: str, after_run_id: str, reason: str, at: datetime) -> str:
    """The deterministic run id of a supervised restart (`daemon.supervision`):
    `20261122T143100Z-consumer-restart-1c9e04ab`, from the restart's time and a digest of the
    run it follows and why (`crash`, `interval`, `reset`), so queueing it twice is a no-op."""
    digest = hashlib.sha1(f"{after_run_id}:{reason}".encode("utf-8")).hexdigest()[:8]
    return f"{run_stamp(at)}-{pipeline}-restart-{digest}"


def request_run_id(pipeline: str, request_id: str) -> str:
    """The run id of a queued request whose id is `<stamp>-<hex>` (`fastflow run --remote`):
    known to the client at once, and the same however often the request is seen."""
    stamp, _, suffix = request_id.partition("-")
    return f"{stamp}-{pipeline}-{suffix}"


def run_id_month(run_id: str) -> tuple[str, str, str] | None:
    """(YYYY, MM, rest after the timestamp) of a run id like `20261122T143000Z-report-7f3a`,
    or None when it does not start with a UTC timestamp. Records, logs and run pages are
    sharded by this month."""
    m = _STAMPED_RUN_ID.match(run_id)
    return (m.group(1), m.group(2), m.group(7)) if m else None


def run_id_time(run_id: str) -> datetime:
    """The UTC second embedded in a run id (which must start with a timestamp)."""
    return datetime.strptime(run_id[:16] + "+0000", "%Y%m%dT%H%M%SZ%z")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} in a run record; use an aware one")
    return value.isoformat()


def _parse_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True)
class Trigger:
    kind: str = "manual"  # manual | schedule | push | downstream | webhook | restart | flow
    schedule_id: str | None = None
    slot: datetime | None = None
    parent_run_id: str | None = None
    delivery_id: str | None = None  # a webhook run: the sender's delivery id, when it gave one
    reason: str | None = None  # a restart: `crash`, `interval` or `reset` (daemon.supervision)
    flow_run_id: str | None = None  # a flow's task run (kind `flow`): its flow run, and
    task: str | None = None  # the task's id in the flow

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "schedule_id": self.schedule_id,
            "slot": _iso(self.slot),
            "parent_run_id": self.parent_run_id,
            "delivery_id": self.delivery_id,
            "reason": self.reason,
            "flow_run_id": self.flow_run_id,
            "task": self.task,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Trigger":
        return cls(
            kind=data.get("kind", "manual"),
            schedule_id=data.get("schedule_id"),
            slot=_parse_iso(data.get("slot")),
            parent_run_id=data.get("parent_run_id"),
            delivery_id=data.get("delivery_id"),  # absent in records before webhooks
            reason=data.get("reason"),  # absent in records before supervision
            flow_run_id=data.get("flow_run_id"),  # absent in records before flows
            task=data.get("task"),
        )


@dataclass(frozen=True)
class WebhookInput:
    """What a webhook request gives its run (docs/webhooks.md, "What the run gets"): the
    delivery id, the path of the stored body (`daemon.statedir.webhook_payload_file`, removed
    once the run is recorded), the selected request headers (never a signature or
    Authorization) and the env a Fast-Flow-form body `{"env": {...}}` sets, already cut to the
    pipeline's `webhook_env`. It travels in the inbox request and the run journal, never in a
    run record (the record keeps `Trigger.delivery_id`)."""

    delivery_id: str | None
    payload_file: str
    headers: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"delivery_id": self.delivery_id, "payload_file": self.payload_file,
                "headers": dict(self.headers), "env": dict(self.env)}

    @classmethod
    def from_json(cls, data: dict) -> "WebhookInput":
        """The input of `to_json`; `ValueError` naming the field when `data` is not one."""
        if not isinstance(data, dict):
            raise ValueError(f"webhook: expected an object, got {type(data).__name__}")
        delivery_id, payload_file = data.get("delivery_id"), data.get("payload_file")
        if delivery_id is not None and not isinstance(delivery_id, str):
            raise ValueError(f"webhook.delivery_id must be a string or null, got {delivery_id!r}")
        if not isinstance(payload_file, str) or not payload_file:
            raise ValueError(f"webhook.payload_file must be a non-empty path, got {payload_file!r}")
        maps = {}
        for key in ("headers", "env"):
            value = data.get(key) or {}
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise ValueError(f"webhook.{key} must map strings to strings, got {value!r}")
            maps[key] = dict(value)
        return cls(delivery_id, payload_file, maps["headers"], maps["env"])


@dataclass(frozen=True)
class FlowTaskInput:
    """What a flow run gives the run of one of its tasks (docs/flows.md): the flow, flow run
    and task, the task's `args` (params substituted), the host folder of the flow run's
    workspace, the outputs of the tasks it depends on (`FASTFLOW_INPUTS`), the params
    (`FASTFLOW_PARAMS`) and the output cap. It travels in the run journal; the record keeps
    `Trigger.flow_run_id` and `Trigger.task`."""

    flow: str
    flow_run_id: str
    task: str
    workspace: str
    args: tuple[str, ...] = ()
    inputs: Mapping[str, object] = field(default_factory=dict)
    params: Mapping[str, object] = field(default_factory=dict)
    output_max_bytes: int = DEFAULT_FLOW_OUTPUT_MAX_BYTES

    def to_json(self) -> dict:
        return {"flow": self.flow, "flow_run_id": self.flow_run_id, "task": self.task,
                "workspace": self.workspace, "args": list(self.args),
                "inputs": dict(self.inputs), "params": dict(self.params),
                "output_max_bytes": self.output_max_bytes}

    @classmethod
    def from_json(cls, data: dict) -> "FlowTaskInput":
        return cls(flow=data["flow"], flow_run_id=data["flow_run_id"], task=data["task"],
                   workspace=data["workspace"], args=tuple(data.get("args") or ()),
                   inputs=dict(data.get("inputs") or {}), params=dict(data.get("params") or {}),
                   output_max_bytes=int(data.get("output_max_bytes") or DEFAULT_FLOW_OUTPUT_MAX_BYTES))


@dataclass(frozen=True)
class CommitRef:
    sha: str | None = None
    tree: str | None = None


@dataclass(frozen=True)
class Environment:
    image: str | None = None
    image_id: str | None = None
    python: str | None = None
    uv_version: str | None = None
    requirements_hash: str | None = None
    resolved: tuple[str, ...] = ()
    node: str | None = None  # the engine's host that ran the last attempt (Swarm: the node)

    def to_json(self) -> dict:
        data = asdict(self)
        data["resolved"] = list(self.resolved)
        if data["node"] is None:  # only executors that know it name it (swarm, docker)
            del data["node"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Environment":
        return cls(**{**data, "resolved": tuple(data.get("resolved") or ())})


@dataclass(frozen=True)
class ErrorInfo:
    kind: str
    message: str


@dataclass(frozen=True)
class Attempt:
    n: int
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    status: RunStatus
    wait_before_s: float = 0.0

    def to_json(self) -> dict:
        return {
            "n": self.n,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "exit_code": self.exit_code,
            "status": self.status.value,
            "wait_before_s": self.wait_before_s,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Attempt":
        return cls(
            n=data["n"],
            started_at=_parse_iso(data.get("started_at")),
            finished_at=_parse_iso(data.get("finished_at")),
            exit_code=data.get("exit_code"),
            status=RunStatus(data["status"]),
            wait_before_s=data.get("wait_before_s", 0.0),
        )


@dataclass(frozen=True)
class Resources:
    peak_memory_bytes: int | None = None
    cpu_mean_cores: float | None = None
    cpu_max_cores: float | None = None
    samples: tuple[dict, ...] = ()  # downsampled [{t, mem, cpu}]
    soft_limit_events: tuple[dict, ...] = ()  # [{t, kind, value, limit}]

    def to_json(self) -> dict:
        data = asdict(self)
        data["samples"] = list(self.samples)
        data["soft_limit_events"] = list(self.soft_limit_events)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Resources":
        return cls(
            peak_memory_bytes=data.get("peak_memory_bytes"),
            cpu_mean_cores=data.get("cpu_mean_cores"),
            cpu_max_cores=data.get("cpu_max_cores"),
            samples=tuple(data.get("samples") or ()),
            soft_limit_events=tuple(data.get("soft_limit_events") or ()),
        )


@dataclass(frozen=True)
class LogInfo:
    path: str | None = None
    bytes: int = 0
    truncated: bool = False


@dataclass(frozen=True)
class RunRecord:
    """One run, from queue to terminal state. `to_json`/`from_json` round-trip exactly."""

    run_id: str
    pipeline: str
    status: RunStatus
    run_config: str | None = None
    trigger: Trigger = Trigger()
    commit: CommitRef = CommitRef()
    environment: Environment = Environment()
    limits: dict = field(default_factory=dict)
    exit_code: int | None = None
    error: ErrorInfo | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    attempts: tuple[Attempt, ...] = ()
    resources: Resources = Resources()
    log: LogInfo = LogInfo()
    route: str | None = None
    downstream: tuple[dict, ...] = ()
    schema: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "run_config": self.run_config,
            "trigger": self.trigger.to_json(),
            "commit": asdict(self.commit),
            "environment": self.environment.to_json(),
            "limits": dict(self.limits),
            "status": self.status.value,
            "exit_code": self.exit_code,
            "error": asdict(self.error) if self.error else None,
            "queued_at": _iso(self.queued_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_s": self.duration_s,
            "attempts": [a.to_json() for a in self.attempts],
            "resources": self.resources.to_json(),
            "log": asdict(self.log),
            "route": self.route,
            "downstream": list(self.downstream),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunRecord":
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"unsupported run record schema {data.get('schema')!r}")
        return cls(
            schema=data["schema"],
            run_id=data["run_id"],
            pipeline=data["pipeline"],
            run_config=data.get("run_config"),
            trigger=Trigger.from_json(data.get("trigger") or {}),
            commit=CommitRef(**(data.get("commit") or {})),
            environment=Environment.from_json(data.get("environment") or {}),
            limits=dict(data.get("limits") or {}),
            status=RunStatus(data["status"]),
            exit_code=data.get("exit_code"),
            error=ErrorInfo(**data["error"]) if data.get("error") else None,
            queued_at=_parse_iso(data.get("queued_at")),
            started_at=_parse_iso(data.get("started_at")),
            finished_at=_parse_iso(data.get("finished_at")),
            duration_s=data.get("duration_s"),
            attempts=tuple(Attempt.from_json(a) for a in data.get("attempts") or ()),
            resources=Resources.from_json(data.get("resources") or {}),
            log=LogInfo(**(data.get("log") or {})),
            route=data.get("route"),
            downstream=tuple(data.get("downstream") or ()),
        )


RECORD_KEYS = tuple(f.name for f in fields(RunRecord))

__all__ = [
    "Attempt",
    "CommitRef",
    "Environment",
    "ErrorInfo",
    "LogInfo",
    "RECORD_KEYS",
    "Resources",
    "RunRecord",
    "SCHEMA_VERSION",
    "Trigger",
    "WebhookInput",
    "replace",
]
