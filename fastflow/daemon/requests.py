"""What the daemon accepts of a `fastflow run --remote` request, and the record of a refusal.

A request names a pipeline that must be active and enabled in the current deployment, and a
run configuration it has (if any). The CLI checks what it can before queueing
(`statedir.check_remote_pipeline`), but a push may land between the queueing and the daemon's
reading: then the refusal becomes a run record of its own, under the run id the CLI printed,
with status `failed`, error kind `refused`, the reason, and a log line saying it; so
`fastflow logs <run_id>`, `fastflow history` and the status site show the user why.
"""
from __future__ import annotations

from datetime import datetime

from fastflow.config.values import NAME_RE
from fastflow.daemon.inbox import RunRequestMessage
from fastflow.deploy.deployment import Deployment
from fastflow.errors import FastflowError
from fastflow.executors.base import RUNNER, OutputLine
from fastflow.model import RunStatus
from fastflow.record import ErrorInfo, LogInfo, RunRecord, Trigger
from fastflow.results.layout import log_path
from fastflow.run.capture import format_line
from fastflow.run.runner import resolve_settings


class RequestRefused(FastflowError):
    """The daemon will not run what a request asks for; the message says why."""


def check_request(request: RunRequestMessage, deployment: Deployment | None) -> None:
    """Raise `RequestRefused` unless the request's pipeline is active and enabled in
    `deployment` and has the run configuration it names."""
    active = deployment.active.get(request.pipeline) if deployment else None
    if active is None:
        raise RequestRefused(f"no active pipeline named {request.pipeline!r} at the deployed "
                             "commit; check the name, or push the pipeline first")
    if not active.pipeline.enabled:
        raise RequestRefused(f"pipeline {request.pipeline!r} is disabled (\"enabled\": false "
                             f"at commit {active.commit[:12]}); enable it and push")
    try:
        resolve_settings(active.pipeline, request.run_config)
    except FastflowError as exc:
        raise RequestRefused(str(exc)) from None


def recordable(pipeline: str) -> bool:
    """Whether a record can be written for `pipeline` (its name is a pipeline name)."""
    return NAME_RE.fullmatch(pipeline) is not None


def refusal(request: RunRequestMessage, run_id: str, reason: str,
            now: datetime) -> tuple[RunRecord, str]:
    """The record and log of a refused request: `failed`, error kind `refused`, no attempt."""
    log_text = format_line(OutputLine(RUNNER, f"refused: {reason}", now)) + "\n"
    record = RunRecord(
        run_id=run_id, pipeline=request.pipeline, status=RunStatus.FAILED,
        run_config=request.run_config, trigger=Trigger(kind="manual"),
        error=ErrorInfo("refused", reason), queued_at=request.requested_at, finished_at=now,
        log=LogInfo(log_path(request.pipeline, run_id), len(log_text.encode())),
    )
    return record, log_text
