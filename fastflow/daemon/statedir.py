"""Where a daemon keeps its state, how other processes address it, and the lock that keeps
one daemon per state dir (no daemon machinery).

Light on purpose: `fastflow run --remote`, `fastflow logs` and `fastflow status` import this,
not `fastflow.daemon`, so they start fast.
"""
from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Mapping

from fastflow.daemon.inbox import Inbox
from fastflow.defaults import (
    STATE_DEPLOYMENT,
    STATE_INBOX,
    STATE_LOCK,
    STATE_WEBHOOK_PAYLOADS,
)
from fastflow.errors import FastflowError
from fastflow.files import try_lock
from fastflow.humanize import did_you_mean
from fastflow.record import request_run_id


def default_state_dir(source: str, environ: Mapping[str, str]) -> Path:
    """`$XDG_STATE_HOME/fastflow/<name>` (default `~/.local/state/...`), `<name>` from the source."""
    base = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME", "~")) / ".local" / "state")
    name = source.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "repo"
    if not is_remote(source):
        name = Path(source).resolve().name.removesuffix(".git") or "repo"
    return Path(base).expanduser() / "fastflow" / name


def webhook_payload_dir(state_dir: Path | str) -> Path:
    """`<state_dir>/webhooks/payload/`: the bodies of webhook requests whose runs are not yet
    recorded, one file per run named by its run id (`webhook_payload_file`), mode 0600. The
    webhook intake writes them; the daemon removes each when its run is recorded, and at start
    those of runs already recorded (`daemon.runs.RunLauncher.sweep_webhook_payloads`)."""
    return Path(state_dir) / STATE_WEBHOOK_PAYLOADS


def webhook_payload_file(state_dir: Path | str, run_id: str) -> Path:
    """The stored body of the webhook request of run `run_id` (see `webhook_payload_dir`)."""
    return webhook_payload_dir(state_dir) / run_id


def queue_remote_run(state_dir: Path, pipeline: str, env: Mapping[str, str],
                     run_config: str | None, now: datetime) -> str:
    """Ask the daemon of `state_dir` to run `pipeline`; returns the run id it will have.

    Refuses (`FastflowError`) what the daemon would refuse and can be known here: a pipeline
    not active or disabled, or a disabled run configuration, in the deployment the daemon
    recorded (`deployment.json`). The daemon checks again when it reads the request (a push
    may land meanwhile) and records a refusal as a `failed` run with error kind `refused`."""
    inbox_dir = Path(state_dir) / STATE_INBOX
    if not inbox_dir.is_dir():
        raise FastflowError(
            f"{state_dir}: no `fastflow serve` state dir here (no inbox/); start the daemon, "
            "or pass its --state-dir"
        )
    check_remote_pipeline(Path(state_dir), pipeline, run_config)
    request_id = Inbox(state_dir).post_run_request(pipeline, dict(env), run_config, now)
    return request_run_id(pipeline, request_id)


def queue_supervise_reset(state_dir: Path, pipeline: str, now: datetime) -> Path:
    """Ask the daemon of `state_dir` to reset the supervision of `pipeline` (its crash count
    and given-up state; a given-up pipeline restarts at once): a request in its inbox, done
    at its next round, or at its next start when no daemon runs. Returns the request file.
    Refuses (`FastflowError`) a state dir without an inbox, or a pipeline the daemon's
    `deployment.json` does not have."""
    if not (Path(state_dir) / STATE_INBOX).is_dir():
        raise FastflowError(
            f"{state_dir}: no `fastflow serve` state dir here (no inbox/); pass the daemon's "
            "--state-dir")
    try:
        active = json.loads((Path(state_dir) / STATE_DEPLOYMENT).read_text(encoding="utf-8"))["active"]
    except (OSError, ValueError, KeyError, TypeError):
        active = None  # no deployment yet: the daemon decides
    if active is not None and pipeline not in active:
        raise FastflowError(
            f"{state_dir}: the daemon has no active pipeline named {pipeline!r}"
            f"{did_you_mean(pipeline, active) or '.'} Check the name (`fastflow status`)")
    return Inbox(state_dir).post_supervise("reset", pipeline, now)


def queue_remote_flow(state_dir: Path, flow: str, params: Mapping[str, object], now: datetime,
                      rerun_of: str | None = None) -> str:
    """Ask the daemon of `state_dir` to run flow `flow` with `params` (or, with `rerun_of`, to
    rerun that flow run); returns the flow run id it will have. The daemon judges the flow at
    its deployed commit (a refusal is in its log)."""
    inbox_dir = Path(state_dir) / STATE_INBOX
    if not inbox_dir.is_dir():
        raise FastflowError(
            f"{state_dir}: no `fastflow serve` state dir here (no inbox/); start the daemon, "
            "or pass its --state-dir"
        )
    request_id = Inbox(state_dir).post_run_request(flow, {}, None, now, params=dict(params),
                                                   rerun_of=rerun_of)
    return rerun_of or request_run_id(flow, request_id)


def check_remote_pipeline(state_dir: Path, pipeline: str, run_config: str | None = None) -> None:
    """Raise `FastflowError` when the daemon of `state_dir` would refuse to run `pipeline`
    (with `run_config`), as far as its `deployment.json` tells (none yet: nothing to check, the
    daemon decides; `daemon.requests.start_refusal` is its judge)."""
    try:
        deployed = json.loads((state_dir / STATE_DEPLOYMENT).read_text(encoding="utf-8"))
        active, disabled = deployed["active"], deployed.get("disabled", [])
        disabled_configs = deployed.get("disabled_run_configs", {}).get(pipeline, [])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return
    if pipeline not in active:
        raise FastflowError(
            f"{state_dir}: the daemon has no active pipeline named {pipeline!r}"
            f"{did_you_mean(pipeline, active) or '.'} Check the name, or push the pipeline first")
    if pipeline in disabled:
        raise FastflowError(
            f"{state_dir}: pipeline {pipeline!r} is disabled (\"enabled\": false in its "
            f"pipeline.json); enable it and push, or run it here with `fastflow run {pipeline}`")
    if run_config is not None and run_config in disabled_configs:
        raise FastflowError(
            f"{state_dir}: run configuration {run_config!r} of pipeline {pipeline!r} is disabled "
            f"(\"enabled\": false in its schedules[] entry); enable it and push, or run it here "
            f"with `fastflow run {pipeline} --run-config {run_config}`")


def is_remote(source: str) -> bool:
    """A URL (`https://`, `ssh://`, `file://`, `git@host:path`) rather than a local path."""
    return "://" in source or (":" in source and "@" in source.split(":", 1)[0])


class StateDirBusy(FastflowError):
    """Another daemon holds the state dir's lock."""


class StateLock:
    """An exclusive `flock` on `<state_dir>/daemon.lock`, released when the process dies."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / STATE_LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = try_lock(self.path)
        if fd is None:
            owner = self.path.read_text(errors="replace")[:64].strip() or "unknown"
            raise StateDirBusy(
                f"{self.path.parent}: another `fastflow serve` (pid {owner}) uses this state dir; "
                "stop it first or pass another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
