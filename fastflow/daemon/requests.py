"""What the daemon accepts of a `fastflow run --remote` request, and the record of a refusal.

A request names a pipeline that must be active and enabled in the current deployment, and a
run configuration it has (if any), enabled (`start_refusal`, which also judges downstream
triggers and is the check a webhook intake calls). The CLI checks what it can before queueing
(`statedir.check_remote_pipeline`), but a push may land between the queueing and the daemon's
reading: then the refusal becomes a run record of its own, under the run id the CLI printed,
with status `failed`, error kind `refused`, the reason, and a log line saying it; so
`fastflow logs <run_id>`, `fastflow history` and the status site show the user why.

`RunRequests.accept` is what the daemon loop does with each run request of its inbox: queue
(journal) its run under its deterministic id, unless that id is known already, so a request
read again after a crash, before its acknowledgement, never runs twice; a request naming a flow
starts a flow run (or a rerun), and a webhook request's body is settled once a flow run took it
(its tasks get none).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from fastflow.config.values import NAME_RE
from fastflow.daemon.inbox import RunRequestMessage
from fastflow.daemon.payloads import AcceptedRequests
from fastflow.daemon.runs import RunLauncher
from fastflow.deploy.deployment import Deployment
from fastflow.errors import FastflowError
from fastflow.executors.base import RUNNER, OutputLine
from fastflow.model import RunStatus
from fastflow.record import ErrorInfo, LogInfo, RunRecord, Trigger, request_run_id
from fastflow.results.layout import log_path
from fastflow.run.capture import format_line
from fastflow.run.runner import resolve_settings

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class RequestHooks:
    """What accepting a request needs of the daemon: its deployment, whether a name is a
    flow, its `submit` (`Daemon.submit`) and a flow rerun (`FlowRuns.rerun`)."""

    deployment: Callable[[], Deployment | None]
    is_flow: Callable[[str], bool]
    submit: Callable[..., str]
    rerun: Callable[[str, datetime], object]


class RunRequests:
    """The daemon's handling of run requests (module doc)."""

    def __init__(self, launcher: RunLauncher, accepted: AcceptedRequests,
                 hooks: RequestHooks) -> None:
        self.launcher = launcher
        self.accepted = accepted
        self.hooks = hooks

    def accept(self, request: RunRequestMessage, now: datetime) -> None:
        """Queue the run `request` asks for, unless its run id is known (module doc).
        `OSError` (a full state dir) leaves it to be accepted again."""
        run_id = request_run_id(request.pipeline, request.request_id)
        if self.launcher.knows(run_id, request.pipeline):
            logger.info("request %s: %s was already accepted", request.request_id, run_id)
        elif request.rerun_of or self.hooks.is_flow(request.pipeline):
            self._start_flow(request, run_id, now)
        else:
            self._queue(request, run_id, now)

    def _queue(self, request: RunRequestMessage, run_id: str, now: datetime) -> None:
        try:
            check_request(request, self.hooks.deployment())
            run_id = self.hooks.submit(request.pipeline, request_trigger(request), now=now,
                                       env=request.env, run_config_id=request.run_config,
                                       run_id=run_id, webhook=request.webhook)
            logger.info("queued %s (request %s)", run_id, request.request_id)
        except FastflowError as exc:
            logger.warning("run request %s refused: %s", request.request_id, exc)
            if recordable(request.pipeline):  # the user sees why, by the run id they got
                self.launcher.store_record(*refusal(request, run_id, str(exc), now))

    def _start_flow(self, request: RunRequestMessage, run_id: str, now: datetime) -> None:
        """A request naming a flow: a flow run (`run_id` is its flow run id), or a rerun."""
        try:
            if request.rerun_of:
                self.hooks.rerun(request.rerun_of, now)
            else:
                self.hooks.submit(request.pipeline, request_trigger(request), now=now,
                                  run_id=run_id, params=request.params or {})
            logger.info("flow run %s queued (request %s)", request.rerun_of or run_id,
                        request.request_id)
        except FastflowError as exc:  # no run record: a flow has none; the log says why
            logger.warning("flow request %s refused: %s", request.request_id, exc)
        if request.webhook is not None:  # a flow run's tasks get no body: it may go now
            self.accepted.settle(run_id)
