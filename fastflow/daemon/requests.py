"""What the daemon accepts of a `fastflow run --remote` request, and the record of a refusal.

A request names a pipeline that must be active and enabled in the current deployment, and a
run configuration it has (if any), enabled (`start_refusal`, which also judges downstream
triggers and is the check a webhook intake calls). The CLI checks what it can before queueing
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


def start_refusal(deployment: Deployment | None, pipeline: str,
                  run_config_id: str | None) -> str | None:
    """Why the daemon may not start `pipeline` (with the run configuration `run_config_id`)
    for anything but its own schedules: a `fastflow run --remote` request, a downstream
    trigger, a webhook. None when it may: the pipeline is active in `deployment`, enabled, and
    has that run configuration, enabled. The one judge of all of them, so each refuses alike.
    """
    active = deployment.active.get(pipeline) if deployment else None
    if active is None:
        return (f"no active pipeline named {pipeline!r} at the deployed commit; check the name, "
                "or push the pipeline first")
    at = active.commit[:12]
    if not active.pipeline.enabled:
        return f"pipeline {pipeline!r} is disabled (\"enabled\": false at commit {at}); enable it and push"
    try:
        settings = resolve_settings(active.pipeline, run_config_id)
    except FastflowError as exc:
        return str(exc)
    if settings.run_config is not None and not settings.run_config.enabled:
        return (f"run configuration {run_config_id!r} of pipeline {pipeline!r} is disabled "
                f"(\"enabled\": false in its schedules[] entry at commit {at}); enable it and push")
    return None


def check_request(request: RunRequestMessage, deployment: Deployment | None) -> None:
    """Raise `RequestRefused` unless `start_refusal` allows what the request asks for."""
    reason = start_refusal(deployment, request.pipeline, request.run_config)
    if reason is not None:
        raise RequestRefused(reason)


def request_trigger(request: RunRequestMessage) -> Trigger:
    """The trigger of a request's run: `webhook` (with its delivery id) for the webhook
    intake's, `manual` for `fastflow run --remote`'s."""
    if request.webhook is not None:
        return Trigger(kind="webhook", delivery_id=request.webhook.delivery_id)
    return Trigger(kind="manual")


def recordable(pipeline: str) -> bool:
    """Whether a record can be written for `pipeline` (its name is a pipeline name)."""
    return NAME_RE.fullmatch(pipeline) is not None


def refusal(request: RunRequestMessage, run_id: str, reason: str,
            now: datetime) -> tuple[RunRecord, str]:
    """The record and log of a refused request: `failed`, error kind `refused`, no attempt."""
    log_text = format_line(OutputLine(RUNNER, f"refused: {reason}", now)) + "\n"
    record = RunRecord(
        run_id=run_id, pipeline=request.pipeline, status=RunStatus.FAILED,
        run_config=request.run_config, trigger=request_trigger(request),
        error=ErrorInfo("refused", reason), queued_at=request.requested_at, finished_at=now,
        log=LogInfo(log_path(request.pipeline, run_id), len(log_text.encode())),
    )
    return record, log_text
