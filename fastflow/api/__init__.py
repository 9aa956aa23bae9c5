"""The Python API: what the `fastflow` commands do, as functions (docs/api.md).

    from fastflow import api
    api.list_pipelines("path/to/repo")          # [{"name", "valid", ...}]
    api.list_flows("path/to/repo")
    result = api.run("weather", repo="path/to/repo", params={"day": "2026-12-01"})
    result.status, result.record                # a flow: its FlowRunRecord; a pipeline: RunRecord
    run_id = api.queue("report", repo="path/to/repo")   # on the `fastflow serve` daemon
    api.status("path/to/repo")                  # as `fastflow status --json`
    api.history("weather", repo="path/to/repo")  # a pipeline's runs, or a flow's flow runs

Each function is the twin of a command (`fastflow list`, `flow list`, `run` / `flow run`,
`run --remote` / `flow run --remote`, `status`, `history` / `flow history`) and raises
`fastflow.errors.FastflowError` (a subclass) where the command prints `Error: ...`. Nothing here
prints; output lines go to the `on_line(task, line)` callback. `environ` (default: this
process's environment) is where the executor's settings (Docker host, uv) come from.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping

from fastflow.daemon.flowhere import run_workspace_flow
from fastflow.daemon.statedir import (
    default_state_dir,
    queue_remote_flow,
    queue_remote_run,
)
from fastflow.deploy.flows import discover_flows
from fastflow.deploy.workspace import open_workspace
from fastflow.executors import choose_executor
from fastflow.executors.base import OutputLine
from fastflow.flow.record import FlowRunRecord
from fastflow.record import RunRecord, Trigger
from fastflow.results.read import flow_history, open_results, run_history, status_report
from fastflow.run.runner import RunRequest, run_pipeline
from fastflow.secrets.runtime import secrets_loader

OnLine = Callable[[str, OutputLine], None]  # (task id, or the pipeline's name; the line)

__all__ = ["RunResult", "history", "list_flows", "list_pipelines", "queue", "run", "status"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class RunResult:
    """How `run` ended: `kind` (`pipeline` or `flow`), `status` (the run's, or the flow run's),
    `record` (`RunRecord`, or `FlowRunRecord`), `log` (a pipeline run's captured log text) and
    `runs` (a flow: each task's `RunRecord` by task id)."""

    kind: str
    status: str
    record: RunRecord | FlowRunRecord
    log: str = ""
    runs: Mapping[str, RunRecord] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


def list_pipelines(repo: str | Path = ".") -> list[dict]:
    """Every pipeline of the working tree `repo`: name, type, enabled, valid, and its problems
    when invalid (`fastflow list --json`)."""
    discovery = open_workspace(Path(repo)).discovery
    found = [{"name": p.name, "type": p.type.value, "enabled": p.enabled, "valid": True,
              "description": p.description} for p in discovery.pipelines.values()]
    found += [{"name": i.name, "valid": False, "problems": [p.to_json() for p in i.problems]}
              for i in discovery.invalid.values()]
    return sorted(found, key=lambda entry: entry["name"])


def list_flows(repo: str | Path = ".") -> list[dict]:
    """Every flow of the working tree `repo`: name, file, task ids, valid, and its problems when
    invalid (`fastflow flow list --json`)."""
    workspace = open_workspace(Path(repo))
    found = discover_flows(workspace.root, workspace.config, workspace.discovery)
    flows = [{"name": f.name, "file": f.file, "tasks": [t.id for t in f.tasks], "valid": True,
              "description": f.description} for f in found.flows.values()]
    flows += [{"name": i.name, "file": i.file, "valid": False,
               "problems": [p.to_json() for p in i.problems]} for i in found.invalid.values()]
    return sorted(flows, key=lambda entry: entry["name"])


def _is_flow(workspace, name: str) -> bool:
    if name in workspace.discovery.pipelines or name in workspace.discovery.invalid:
        return False
    return name in discover_flows(workspace.root, workspace.config, workspace.discovery).names


def run(name: str, *, repo: str | Path = ".", params: Mapping[str, object] | None = None,
        env: Mapping[str, str] | None = None, local: bool = False,
        on_line: OnLine | None = None, cancel: threading.Event | None = None,
        environ: Mapping[str, str] | None = None) -> RunResult:
    """Run pipeline or flow `name` of the working tree `repo` here, to its end, as `fastflow
    run NAME` / `fastflow flow run NAME` do (Docker, or the host with `local`); `params` for a
    flow, `env` (`--env`) for a pipeline. Nothing goes to the results branch."""
    environ = dict(os.environ if environ is None else environ)
    workspace = open_workspace(Path(repo))
    executor = choose_executor(workspace.config, local=local, environ=environ, clock=_now)
    if _is_flow(workspace, name):
        outcome = run_workspace_flow(
            workspace, name, params=params or {}, executor=executor, environ=environ,
            clock=_now, sink_for=lambda task: (lambda line: on_line(task, line)) if on_line
            else (lambda line: None), events=lambda task, kind, text: None, cancel=cancel)
        return RunResult("flow", outcome.record.status, outcome.record,
                         runs={t: o.record for t, o in outcome.runs.items()})
    pipeline = workspace.pipeline(name)
    request = RunRequest(
        pipeline=pipeline, trigger=Trigger(kind="manual"), trigger_env=dict(env or {}),
        log_cap_bytes=workspace.config.log_cap_bytes, grace_period=workspace.config.grace_period,
        secrets_loader=secrets_loader(workspace.root, workspace.config, pipeline, environ, None))
    outcome = run_pipeline(request, executor, clock=_now, cancel=cancel,
                           sink=(lambda line: on_line(name, line)) if on_line else None)
    return RunResult("pipeline", outcome.record.status.value, outcome.record, outcome.log_text)


def queue(name: str, *, repo: str | Path = ".", state_dir: str | Path | None = None,
          params: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None,
          run_config: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """Queue a run of pipeline or flow `name` on the `fastflow serve` daemon of `state_dir`
    (default: the one of `repo`, as `fastflow serve --repo`); returns the run id or flow run id
    it will have (`fastflow run NAME --remote`, `fastflow flow run NAME --remote`)."""
    environ = dict(os.environ if environ is None else environ)
    state = Path(state_dir) if state_dir else default_state_dir(str(repo), environ)
    workspace = open_workspace(Path(repo))
    if _is_flow(workspace, name):
        return queue_remote_flow(state, name, params or {}, _now())
    return queue_remote_run(state, name, dict(env or {}), run_config, _now())


def status(repo: str | Path = ".", state_dir: str | Path | None = None) -> dict:
    """The state of the pipelines and the daemon, as `fastflow status --json` gives it."""
    with open_results(Path(repo), _now) as results:
        return status_report(results, _now(), Path(state_dir) if state_dir else None)


def history(name: str, *, repo: str | Path = ".", limit: int = 20) -> dict:
    """The recorded runs of pipeline `name` (`fastflow history --json`), or, for a flow, its
    flow runs (`fastflow flow history --json`), newest first."""
    repo = Path(repo)
    with open_results(repo, _now) as results:
        if results.workspace is not None and _is_flow(results.workspace, name):
            return flow_history(results, name, limit)
        if results.store.list_flow_run_ids(name, 1):
            return flow_history(results, name, limit)
        return run_history(results, name, limit)
