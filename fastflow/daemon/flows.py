"""The daemon's flow runs: each task an ordinary run through the one queue, resumed after a crash.

A flow run starts from any trigger a pipeline has (`Daemon.submit` with a flow's name: a
schedule, a `fastflow run --remote` request, a webhook, a downstream trigger) at the deployed
commit. `FlowRuns` keeps its record (`flow.record.FlowRunRecord`) and moves it on with the
engine (`flow.run.FlowEngine`): each due task becomes a `RunOrder` submitted to the
`RunLauncher` (journalled, dispatched under `max_concurrent_runs`, executed from the snapshot of
its folder at the flow run's commit, recorded), with `trigger.kind: flow`; when a task's record
is stored (`task_recorded`, from the daemon's after-record hook) the engine decides what comes
next. The flow record goes to the results branch at each change.

Crash safety: the flow run is journalled in `<state dir>/flows/<flow_run_id>.json` (fsync'd)
before any of its tasks is submitted, with the run id each due task will have (derived from the
flow run id, `flow.record.task_run_id`), so after a `kill -9`, `resume` finds every flow run
that was going on: a task whose run is recorded is taken as ended (never run again); a task
whose run is in the run journal is the launcher's to reconcile (re-attached to its container,
never started twice: its id is taken); a task that was due but never submitted is submitted now.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping

from fastflow import repo as git
from fastflow.daemon.runs import LaunchContext, RunIdTaken, RunLauncher, RunOrder
from fastflow.defaults import (
    DEFAULT_FLOW_OUTPUT_MAX_BYTES,
    STATE_FLOWS,
    STATE_WORKSPACES,
)
from fastflow.deploy.deployment import ActivePipeline, deploy_commit
from fastflow.deploy.flows import FlowDiscovery, find_flow, flows_at_commit
from fastflow.errors import FastflowError
from fastflow.files import write_atomic
from fastflow.flow.record import FlowRunRecord, TaskState
from fastflow.flow.run import (
    FlowEngine,
    Workspaces,
    new_flow_record,
    rerun_record,
    resolve_params,
    task_as_pipeline,
)
from fastflow.model import Flow, FlowTask, RepoConfig, RunStatus
from fastflow.record import CommitRef, ErrorInfo, RunRecord, Trigger, new_run_id
from fastflow.results.store import ResultsStore
from fastflow.run.output import read_output

logger = logging.getLogger(__name__)


class FlowJournal:
    """`<state_dir>/flows/`: one fsync'd file per flow run going on (its record so far)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / STATE_FLOWS
        self.dir.mkdir(parents=True, exist_ok=True)

    def write(self, record: FlowRunRecord) -> None:
        write_atomic(self.dir / f"{record.flow_run_id}.json", json.dumps(record.to_json()),
                     durable=True)

    def remove(self, flow_run_id: str) -> None:
        (self.dir / f"{flow_run_id}.json").unlink(missing_ok=True)

    def has(self, flow_run_id: str) -> bool:
        return (self.dir / f"{flow_run_id}.json").exists()

    def records(self) -> list[FlowRunRecord]:
        """Every journalled flow run; an unreadable entry is set aside in `flows/bad/`."""
        found = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                found.append(FlowRunRecord.from_json(json.loads(path.read_text("utf-8"))))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                bad = self.dir / "bad"
                bad.mkdir(exist_ok=True)
                path.replace(bad / path.name)
                logger.warning("flow journal entry %s cannot be read (%s); set aside in %s/",
                               path.name, exc, bad)
        return found


@dataclass
class _Running:
    """A flow run going on: its engine, its flow (at its commit) and the commit's config."""

    engine: FlowEngine
    flow: Flow
    found: FlowDiscovery
    config: RepoConfig
    root_tree: str


class FlowRuns:
    """Starts, advances, records and resumes the daemon's flow runs (see the module doc)."""

    def __init__(self, *, state_dir: Path, repository: git.GitRepo, snapshots: Path,
                 store: ResultsStore, launcher: RunLauncher, clock: Callable[[], datetime],
                 config_for: Callable[[str], RepoConfig | None],
                 on_ended: Callable[[str], None] | None = None,
                 pages: Callable[[dict], Mapping[str, bytes]] | None = None) -> None:
        self.repository = repository
        self.snapshots = snapshots
        self.store = store
        self.launcher = launcher
        self.clock = clock
        self.config_for = config_for  # the RepoConfig a commit's runs use
        self.on_ended = on_ended  # a flow run ended (its schedule slot is free again)
        self.pages = pages  # a flow record's site pages (`SitePublisher.pages_for_flow_run`)
        self.journal = FlowJournal(state_dir)
        self.workspaces = Workspaces(Path(state_dir) / STATE_WORKSPACES)
        self._running: dict[str, _Running] = {}
        self._found: dict[str, FlowDiscovery] = {}
        self._lock = threading.RLock()

    # --- which flows there are -----------------------------------------------------------

    def flows_at(self, commit: str) -> FlowDiscovery:
        """The flows of `commit` (read once per commit from its snapshot)."""
        with self._lock:
            if commit not in self._found:
                self._found = {commit: flows_at_commit(self.repository, commit, self.snapshots)}
            return self._found[commit]

    def is_flow(self, name: str, commit: str | None) -> bool:
        """Whether `name` is a flow (valid or not) at `commit`."""
        if commit is None:
            return False
        try:
            return name in self.flows_at(commit).names
        except FastflowError:
            return False

    # --- starting --------------------------------------------------------------------------

    def start(self, name: str, *, commit: str, trigger: Trigger, now: datetime,
              params: Mapping[str, object] | None = None,
              flow_run_id: str | None = None) -> str:
        """Start a run of flow `name` at `commit`; returns its flow run id. `FastflowError`
        before anything runs when the flow is unknown or invalid there, or a param is missing.
        A deterministic `flow_run_id` (a request's) that is known already starts nothing."""
        with self._lock:
            found = self.flows_at(commit)
            flow = find_flow(found, name)
            values = resolve_params(flow, params or {})
            flow_run_id = flow_run_id or new_run_id(name, now)
            if self.knows(flow_run_id, name):
                logger.info("flow run %s was already started", flow_run_id)
                return flow_run_id
            root_tree = git.commit_info(self.repository, commit).tree
            record = new_flow_record(flow, flow_run_id, trigger=trigger,
                                     commit=CommitRef(commit, root_tree), params=values, now=now)
            workspace = self.workspaces.create(flow_run_id)
            record = replace(record, workspace=str(workspace))
            running = self._open(record, flow, found)
            logger.info("flow run %s: started (%s, %d tasks)", flow_run_id, name, len(flow.tasks))
            self._advance(running, now)
            return flow_run_id

    def rerun(self, flow_run_id: str, now: datetime, trigger: Trigger | None = None) -> str:
        """Run the failed and skipped tasks of a flow run that ended again, at its commit, with
        the outputs and the kept workspace of the tasks that succeeded (`flow.run.rerun_record`);
        `FastflowError` when it cannot be."""
        with self._lock:
            if flow_run_id in self._running or self.journal.has(flow_run_id):
                raise FastflowError(f"flow run {flow_run_id} is still running; wait for it to end")
            try:
                previous = FlowRunRecord.from_json(self.store.read_flow(flow_run_id))
            except FastflowError:
                raise
            if not previous.commit.sha:
                raise FastflowError(f"flow run {flow_run_id} ran from a working tree; run it "
                                    "again with `fastflow flow run`")
            found = self.flows_at(previous.commit.sha)
            flow = find_flow(found, previous.flow)
            try:
                record = rerun_record(previous, flow, trigger=trigger or Trigger(kind="manual"),
                                      now=now)
            except ValueError as exc:
                raise FastflowError(str(exc)) from None
            if record.workspace is None or not Path(record.workspace).is_dir():
                record = replace(record, workspace=str(self.workspaces.create(flow_run_id)))
                logger.warning("flow run %s: its workspace is gone; the rerun starts with an "
                               "empty one", flow_run_id)
            else:
                self.workspaces.create(flow_run_id)  # no longer to be swept
            record = replace(record, workspace_kept_until=None, started_at=now,
                             finished_at=None, duration_s=None, status=RunStatus.RUNNING.value)
            running = self._open(record, flow, found)
            logger.info("flow run %s: rerun %d started", flow_run_id, record.generation)
            self._advance(running, now)
            return flow_run_id

    def knows(self, flow_run_id: str, flow: str) -> bool:
        if flow_run_id in self._running or self.journal.has(flow_run_id):
            return True
        try:
            self.store.read_flow(flow_run_id, flow)
        except FastflowError:
            return False
        return True

    def _open(self, record: FlowRunRecord, flow: Flow, found: FlowDiscovery) -> _Running:
        config = self.config_for(record.commit.sha or "")
        if config is None:
            raise FastflowError(f"no valid configuration for commit {record.commit.sha}")
        running = _Running(FlowEngine(flow, record), flow, found, config, record.commit.tree or "")
        self._running[record.flow_run_id] = running
        return running

    # --- moving on ---------------------------------------------------------------------------

    def task_started(self, order: RunOrder) -> None:
        """A task's run started (its start journalled by the launcher)."""
        if order.flow is None:
            return
        with self._lock:
            running = self._running.get(order.flow.flow_run_id)
            if running is None or running.engine.record.task(order.flow.task).run_id != order.run_id:
                return
            running.engine.task_started(order.flow.task, order.started_at or self.clock())
            self._save(running, commit=False)

    def task_recorded(self, record: RunRecord) -> None:
        """A task's run is recorded: the engine takes its outcome and starts what is due."""
        trigger = record.trigger
        if trigger.kind != "flow" or not trigger.flow_run_id or not trigger.task:
            return
        with self._lock:
            running = self._running.get(trigger.flow_run_id)
            if running is None:
                return  # a flow run not resumed yet: `resume` reads the record
            state = running.engine.record.task(trigger.task)
            if state.run_id != record.run_id:
                return  # a run of an earlier generation
            self._take_outcome(running, state, record)
            self._advance(running, self.clock())

    def _take_outcome(self, running: _Running, state: TaskState, record: RunRecord) -> None:
        status, error, output = record.status.value, record.error, None
        workspace = running.engine.record.workspace
        if record.status is RunStatus.SUCCEEDED and workspace:
            output, problem = read_output(Path(workspace), record.run_id, len(record.attempts),
                                          DEFAULT_FLOW_OUTPUT_MAX_BYTES, state.id)
            if problem is not None:
                status, error = RunStatus.FAILED.value, problem
        running.engine.task_ended(
            state.id, status=status, run_id=record.run_id, attempts=len(record.attempts),
            exit_code=record.exit_code, error=error, output=output,
            started_at=record.started_at, finished_at=record.finished_at)

    def _advance(self, running: _Running, now: datetime) -> None:
        """Start every due task (journalled first), or finish the flow run."""
        engine = running.engine
        due = engine.start_due(now)
        if engine.done:
            self._finish(running, now)
            return
        self._save(running, commit=bool(due) or not engine.busy)
        for state in due:
            self._submit(running, state, now)
        if engine.done:  # every due task failed to be submitted
            self._finish(running, now)

    def _submit(self, running: _Running, state: TaskState, now: datetime) -> None:
        engine, record = running.engine, running.engine.record
        task = running.flow.task(state.id)
        try:
            context, tree = self.task_context(running, task)
            order = RunOrder(
                run_id=state.run_id, pipeline=state.pipeline, commit=record.commit.sha,
                root_tree=running.root_tree, tree=tree, queued_at=now,
                trigger=Trigger(kind="flow", flow_run_id=record.flow_run_id, task=task.id),
                env=engine.task_env(state),
                flow=engine.task_input(state, Path(record.workspace)))
            self.launcher.submit(order, context, None)
        except RunIdTaken:
            logger.info("flow run %s: task %s (%s) is journalled or recorded already",
                        record.flow_run_id, task.id, state.run_id)
            recorded = self._recorded(state)
            if recorded is not None:
                self._take_outcome(running, state, recorded)
        except (FastflowError, OSError, ValueError) as exc:
            logger.error("flow run %s: task %s cannot be queued: %s", record.flow_run_id,
                         task.id, exc)
            engine.task_ended(state.id, status=RunStatus.FAILED.value, run_id=state.run_id,
                              attempts=0, exit_code=None,
                              error=ErrorInfo("daemon", f"the daemon could not queue it: {exc}"),
                              output=None, started_at=None, finished_at=now)

    def task_context(self, running: _Running, task: FlowTask) -> tuple[LaunchContext, str]:
        """The pipeline a task's run executes at the flow run's commit, and its folder's tree."""
        commit = running.engine.record.commit.sha
        if task.pipeline is not None:
            at = deploy_commit(self.repository, commit, self.snapshots, None)
            active = at.active.get(task.pipeline)
            if active is None:
                raise FastflowError(f"pipeline {task.pipeline!r} of task {task.id!r} is not a "
                                    f"valid pipeline at commit {commit[:12]}")
            pipeline = task_as_pipeline(running.flow, task, active.pipeline)
            return LaunchContext(ActivePipeline(pipeline, commit, active.tree),
                                 running.config), active.tree
        folder = running.flow.tasks_dir.relative_to(running.found.root).as_posix()
        tree = git.tree_id(self.repository, commit, "" if folder == "." else folder)
        if tree is None:
            raise FastflowError(f"the tasks folder {folder}/ of flow {running.flow.name!r} is "
                                f"not in commit {commit[:12]}")
        pipeline = task_as_pipeline(running.flow, task)
        return LaunchContext(ActivePipeline(pipeline, commit, tree), running.config), tree

    def context_for(self, order: RunOrder) -> LaunchContext | None:
        """The context of a flow task's run left in the run journal (reconcile after a crash)."""
        if order.flow is None:
            return None
        with self._lock:
            running = self._running.get(order.flow.flow_run_id)
            try:
                if running is None:
                    found = self.flows_at(order.commit)
                    flow = find_flow(found, order.flow.flow)
                    config = self.config_for(order.commit)
                    if config is None:
                        return None
                    record = new_flow_record(flow, order.flow.flow_run_id, trigger=Trigger(),
                                             commit=CommitRef(order.commit, order.root_tree),
                                             params={}, now=self.clock())
                    running = _Running(FlowEngine(flow, record), flow, found, config,
                                       order.root_tree)
                return self.task_context(running, running.flow.task(order.flow.task))[0]
            except (FastflowError, KeyError, ValueError) as exc:
                logger.warning("run %s: its flow task cannot be found again: %s", order.run_id, exc)
                return None

    def _finish(self, running: _Running, now: datetime) -> None:
        record = running.engine.finish(now)
        record = self.workspaces.ended(record, now, running.config.flow_workspace_keep)
        running.engine.record = record
        self._save(running, commit=True)
        self.journal.remove(record.flow_run_id)
        self._running.pop(record.flow_run_id, None)
        logger.info("flow run %s: %s", record.flow_run_id, record.status)
        if self.on_ended is not None:
            self.on_ended(record.flow_run_id)

    def _save(self, running: _Running, *, commit: bool) -> None:
        """Journal the flow run (while it goes on) and write its record to the results branch."""
        record = running.engine.record
        if record.status == RunStatus.RUNNING.value:
            self.journal.write(record)
        data = record.to_json()
        try:
            pages = self.pages(data) if self.pages is not None else None
        except Exception:  # noqa: BLE001 - a page that cannot be rendered never stops a record
            logger.exception("flow run %s: its site pages cannot be rendered", record.flow_run_id)
            pages = None
        try:
            self.store.record_flow(data, commit=commit, extra_files=pages)
        except Exception as exc:  # noqa: BLE001 - the journal holds it; the next change writes it
            logger.warning("flow run %s: its record is not written yet: %s", record.flow_run_id,
                           exc)

    def _recorded(self, state: TaskState) -> RunRecord | None:
        try:
            return self.store.read_run(state.run_id, state.pipeline)
        except FastflowError:
            return None

    # --- after a crash -----------------------------------------------------------------------

    def resume(self) -> list[str]:
        """Take up the flow runs a previous daemon left (see the module doc); a line each."""
        notes = []
        with self._lock:
            for record in self.journal.records():
                if record.flow_run_id in self._running:
                    continue
                try:
                    found = self.flows_at(record.commit.sha)
                    flow = find_flow(found, record.flow)
                    running = self._open(record, flow, found)
                except FastflowError as exc:
                    logger.error("flow run %s cannot be resumed: %s", record.flow_run_id, exc)
                    notes.append(f"{record.flow_run_id}: cannot be resumed: {exc}")
                    continue
                engine = running.engine
                for state in engine.busy:
                    recorded = self._recorded(state)
                    if recorded is not None:
                        self._take_outcome(running, state, recorded)
                    elif not self.launcher.journal.has(state.run_id):
                        engine.record = engine.record.with_task(
                            replace(state, status="pending", run_id=None))
                self._advance(running, self.clock())
                notes.append(f"{record.flow_run_id}: flow run resumed")
        return notes

    def sweep_workspaces(self, now: datetime) -> list[str]:
        with self._lock:
            return self.workspaces.sweep(now, set(self._running))

    def running(self) -> list[FlowRunRecord]:
        with self._lock:
            return [r.engine.record for r in self._running.values()]
