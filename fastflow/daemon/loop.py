"""`fastflow serve`: follow a branch of a pipelines repository and run its pipelines.

The loop is huey's: `tick(now)` does one round of work and returns when it next needs to run;
`serve()` wraps it in a thin `while` that sleeps on the inbox (a push notification or a run
request wakes it at once) until then. Signal handlers only set flags.

One round: drain the inbox; sync when a push was announced or the poll interval passed (fetch
a remote into the mirror, diff the new commit, deploy it with last-valid semantics, pre-heat
changed dependencies, queue `run_on_change` runs, re-plan the schedules, publish the site
pages the sync changes); queue requested runs; ask the scheduler for due slots
(`fastflow.timetable`); write the heartbeat. `tick` returns the earliest of the next poll, the
next heartbeat and the next schedule slot, so an idle daemon sleeps until then.

The state dir holds everything local: `daemon.lock` (one daemon per state dir), `inbox/`,
`active/` (the run journal), `journal/` (the results store's), `live/` (output of running
runs), `snapshots/`, `cache/` (the shared uv cache), `preheat/`, `mirror.git` (for a URL),
and `status.json`.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Mapping

from fastflow import repo as git
from fastflow.config import default_repo_config
from fastflow.daemon.dispatcher import Dispatcher
from fastflow.daemon.inbox import Inbox, PushMessage, RunRequestMessage
from fastflow.daemon.runs import LaunchContext, RunLauncher, RunOrder
from fastflow.daemon.statedir import StateLock, is_remote
from fastflow.defaults import (
    BRANCH_HEARTBEAT_INTERVAL,
    HEARTBEAT_INTERVAL,
    STATE_DEPLOYMENT,
    STATE_JOURNAL,
    STATE_MIRROR,
    STATE_SNAPSHOTS,
    STATE_STATUS,
)
from fastflow.deploy.deployment import (
    ActivePipeline,
    Deployment,
    dependencies_changed,
    deploy_commit,
    restore_deployment,
    save_deployment,
)
from fastflow.deploy.preheat import Preheater
from fastflow.errors import FastflowError, RepositoryError
from fastflow.executors.base import (
    Executor,
    PreheatFunction,
    PreheatJob,
    PreheatOutcome,
)
from fastflow.files import write_atomic
from fastflow.model import RepoConfig
from fastflow.record import RunRecord, Trigger, new_run_id, request_run_id
from fastflow.results.publish import SitePublisher
from fastflow.results.retention import prune_pipelines
from fastflow.results.store import ResultsStore
from fastflow.schedule.planner import DueRun
from fastflow.schedule.timetable import Timetable, schedule_info, slot_trigger

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 60.0
RETENTION_INTERVAL = 3600.0  # retention (keep_runs, keep_days of config.yaml) runs hourly


@dataclass(frozen=True)
class ServeOptions:
    """How `fastflow serve` follows a repository."""

    source: str  # a local repository path (bare or not) or a remote URL
    state_dir: Path
    branch: str = "main"
    poll_interval: float = DEFAULT_POLL_INTERVAL
    stop_grace: float = 30.0  # on SIGTERM, how long running runs may finish
    max_concurrent_runs: int | None = None  # None: from config.yaml


class Daemon:
    """Follows one branch of one repository; see the module doc."""

    def __init__(self, options: ServeOptions, *, clock: Callable[[], datetime],
                 environ: Mapping[str, str],
                 executor_factory: Callable[[RepoConfig], Executor],
                 preheat_factory: Callable[[RepoConfig], PreheatFunction],
                 credentials: git.Credentials | None = None) -> None:
        self.options = options
        self.state_dir = Path(options.state_dir).resolve()
        self.clock = clock
        self.environ = dict(environ)
        self.credentials = credentials
        self.lock = StateLock(self.state_dir)
        self.snapshots = self.state_dir / STATE_SNAPSHOTS
        self.deployment: Deployment | None = None
        self.stopping = threading.Event()
        self._executor_factory = executor_factory
        self._preheat_factory = preheat_factory
        self._engine_config: tuple | None = None
        self._waiter = None
        self._next_poll: datetime | None = None
        self._next_heartbeat: datetime | None = None
        self._next_branch_heartbeat: datetime | None = None
        self._sync_errors: list[str] = []
        self._next_slot: datetime | None = None
        self._replanned = False  # a sync changed the schedules: tick them at once
        self._next_retention: datetime | None = None
        self._heartbeat_at: datetime | None = None
        self._stopped_at: datetime | None = None
        self._lock = threading.RLock()

    # --- lifecycle ------------------------------------------------------------------------

    def _open(self) -> RepoConfig:
        """Lock the state dir; open the repository, the results store and the run machinery."""
        self.lock.acquire()
        self.inbox = Inbox(self.state_dir)
        self.repository = self._open_repository()
        self.deployment = restore_deployment(self.repository, self.snapshots,
                                             self.state_dir / STATE_DEPLOYMENT)
        config = self._config_at_head()
        if config is None:
            config = default_repo_config()
            logger.error("the configuration at the head of %s is invalid and no earlier valid one "
                         "is known; nothing runs until a push fixes it", self.options.branch)
        self.store = ResultsStore(
            self.repository.path, self.state_dir / STATE_JOURNAL, self.clock,
            branch=config.results_branch, author=(config.author_name, config.author_email),
            remote=self.options.source if is_remote(self.options.source) else None,
            credentials=self.credentials,
        )
        self.store.recover()
        self.executor = self._executor_factory(config)
        self.preheater = Preheater(self._run_preheat, self.state_dir, self.clock)
        self._preheat_with = self._preheat_factory(config)
        self.dispatcher = Dispatcher(self.options.max_concurrent_runs or config.max_concurrent_runs)
        self.timetable = Timetable(start=self._start_slot, skip=self._record_skipped,
                                   cancel=self.dispatcher.cancel,
                                   save=lambda data: self.store.write_state("scheduler", data))
        self._load_watermarks()
        self.publisher = SitePublisher(self.store, self.clock, lambda: self.deployment,
                                       schedule_info=self._schedule_info,
                                       heartbeat=lambda: self._heartbeat_at,
                                       heartbeat_interval_s=BRANCH_HEARTBEAT_INTERVAL,
                                       stopped_at=lambda: self._stopped_at)
        self.launcher = RunLauncher(
            state_dir=self.state_dir, repository=self.repository, snapshots=self.snapshots,
            store=self.store, executor=self.executor, preheater=self.preheater,
            dispatcher=self.dispatcher, clock=self.clock, environ=self.environ,
            on_finished=self.publisher.pages_for_run, after_record=self._after_record,
        )
        return config

    def _load_watermarks(self) -> None:
        source = f"state/scheduler.json on {self.store.branch}"
        try:
            self.timetable.load(self.store.read_state("scheduler"), source)
        except FastflowError as exc:
            # Not a silent default: every schedule starts from now, and the error says so.
            logger.error("%s; every schedule starts afresh from now", exc)

    def _run_preheat(self, job: PreheatJob) -> PreheatOutcome:
        return self._preheat_with(job)

    def start(self) -> list[str]:
        """Open everything, recover what a previous daemon left (journalled records, active
        runs), and sync once. Returns notes on what reconciliation did."""
        self._open()
        for order in self.launcher.journal.orders():  # runs of schedules a previous daemon left
            if order.trigger.schedule_id:
                self.timetable.track(order.run_id, order.trigger.schedule_id)
        restored = self.deployment
        self._safe_sync()
        if self.deployment is not None:
            # A rebuilt image or a cleared cache invalidates pre-heats no push asked for: check
            # every pipeline once per start (a pre-heat that is still valid returns at once).
            done = dependencies_changed(restored, self.deployment) \
                if self.deployment is not restored else []
            self._submit_preheat([n for n in dependencies_changed(None, self.deployment)
                                  if n not in done], self.deployment)
        if self.deployment is not None and self.timetable.plan is None:
            self._activate_schedules(self.deployment)  # the branch did not move since last time
        return self.launcher.reconcile(self._context_for_order)

    def sync_once(self) -> Deployment | None:
        """`fastflow sync`: one sync (pre-heats included, waited for), then release the state
        dir. Returns the new deployment, or None when the branch did not move."""
        self._open()
        try:
            deployment = self.sync()
            self.preheater.wait_all()
            self.store.flush()
            return deployment
        finally:
            self.preheater.shutdown()
            self.lock.release()

    def stop(self, grace: float | None = None) -> None:
        """Take no new work; let running runs finish up to `grace` seconds, then leave them
        (their containers keep running; the next start reconciles them)."""
        self.stopping.set()
        dropped = self.dispatcher.stop_accepting()
        logger.info("stopping: %d queued runs stay journalled for the next start", len(dropped))
        if not self.dispatcher.wait_idle(self.options.stop_grace if grace is None else grace):
            logger.warning("runs still active after the grace period; the next start reconciles them")
        self._stopped_at = self.clock()
        self.write_status(self._stopped_at, stopped=True)
        self.store.write_files(self.publisher.pages_for_pipelines(()), "site: daemon stopped")
        self.store.flush()
        self.preheater.shutdown()
        self.lock.release()

    def serve(self) -> None:
        """Run until `request_stop()` (the SIGTERM/SIGINT handlers call it)."""
        self._waiter = self.inbox.waiter()
        try:
            while not self.stopping.is_set():
                wake_at = self.tick(self.clock())
                timeout = max(0.0, (wake_at - self.clock()).total_seconds())
                self._waiter.wait(min(timeout, HEARTBEAT_INTERVAL))
        finally:
            self._waiter.close()

    def request_stop(self) -> None:
        """Ask `serve` to return (safe from a signal handler: it only sets flags)."""
        self.stopping.set()
        if self._waiter is not None:
            self._waiter.wake()

    # --- one round --------------------------------------------------------------------------

    def tick(self, now: datetime) -> datetime:
        """One round of work (see the module doc); returns when the next round is due."""
        messages = self.inbox.drain()
        ref = f"refs/heads/{self.options.branch}"
        pushed = any(isinstance(m, PushMessage) and m.updates_ref(ref) for m in messages)
        if pushed or self._next_poll is None or now >= self._next_poll:
            self._safe_sync()
            self._next_poll = now + timedelta(seconds=self.options.poll_interval)
        for message in messages:
            if isinstance(message, RunRequestMessage):
                self._accept_request(message, now)
        if self.timetable.plan is not None and (self._next_slot is None or now >= self._next_slot
                                                or self._replanned):
            with self._lock:  # finished runs release waiting ones from worker threads
                self._replanned = False
                self._next_slot = self.timetable.fire_due(now)
                self.write_schedule_state(now)
        if self._next_retention is None or now >= self._next_retention:
            self.apply_retention(now)
            self._next_retention = now + timedelta(seconds=RETENTION_INTERVAL)
        if self._next_heartbeat is None or now >= self._next_heartbeat:
            self.write_status(now)
            self._next_heartbeat = now + timedelta(seconds=HEARTBEAT_INTERVAL)
        wake = [self._next_poll, self._next_heartbeat]
        if self._next_slot is not None:
            wake.append(self._next_slot)
        return min(wake)

    def _safe_sync(self) -> None:
        try:
            self.sync()
        except FastflowError as exc:  # the remote is away, a ref vanished: keep what runs
            logger.warning("sync failed, the current deployment stays active: %s", exc)
            self._sync_errors = [str(exc)]

    # --- syncing ----------------------------------------------------------------------------

    def _open_repository(self) -> git.GitRepo:
        source = self.options.source
        if is_remote(source):
            mirror = self.state_dir / STATE_MIRROR
            git.mirror_fetch(source, mirror, self.credentials, protect=("fastflow/results",))
            return git.open_repo(mirror)
        return git.open_repo(Path(source).resolve())

    def _config_at_head(self) -> RepoConfig | None:
        head = git.branch_head(self.repository, self.options.branch)
        if head is None:
            return self.deployment.config if self.deployment else None
        return deploy_commit(self.repository, head, self.snapshots, self.deployment).config

    def sync(self) -> Deployment | None:
        """Fetch (for a URL), deploy the branch's new head, pre-heat, queue run_on_change runs.
        Returns the new deployment, or None when the branch did not move."""
        with self._lock:
            if is_remote(self.options.source):
                git.mirror_fetch(self.options.source, Path(self.repository.path), self.credentials,
                                 protect=(self.store.branch,))
            head = git.branch_head(self.repository, self.options.branch)
            if head is None:
                raise RepositoryError(
                    f"{self.options.source}: branch {self.options.branch!r} does not exist; "
                    "push it or pass --branch"
                )
            previous = self.deployment
            if previous is not None and previous.commit == head:
                return None
            deployment = deploy_commit(self.repository, head, self.snapshots, previous)
            self.deployment = deployment
            save_deployment(deployment, self.state_dir / STATE_DEPLOYMENT)
            self._sync_errors = []
            self._preheat(previous, deployment)
            self._activate_schedules(deployment)
            self._run_on_change(deployment)
            self._collect_snapshots(deployment)
            self.store.write_state("sync", {"commit": head, "at": self.clock().isoformat()})
            self._publish_deployment(previous, deployment)
            logger.info("synced %s: %s", head[:10], json.dumps(deployment.changes.to_json()))
            return deployment

    def _preheat(self, previous: Deployment | None, deployment: Deployment) -> None:
        self._submit_preheat(dependencies_changed(previous, deployment), deployment)
        for name, state in self.preheater.states().items():
            active = deployment.active.get(name)
            if active is None or active.pipeline.requirements is None:
                self.preheater.forget(name)

    def _submit_preheat(self, names: list[str], deployment: Deployment) -> None:
        for name in names:
            active = deployment.active[name]
            workdir = git.snapshot_tree(self.repository, active.tree, "", self.snapshots)
            self.preheater.submit(PreheatJob(
                name, workdir, Path(active.pipeline.requirements).name,
                active.pipeline.python_version,
            ))

    def apply_retention(self, now: datetime) -> dict[str, list[str]]:
        """Apply `retention` of config.yaml to every pipeline on the results branch; returns
        the removed run ids per pipeline. A failure is logged and retried next time."""
        config = self.deployment.config if self.deployment else None
        if config is None or (config.keep_runs is None and config.keep_days is None):
            return {}
        names = sorted(self.store.read_summary().get("pipelines") or {})
        return prune_pipelines(self.store, names, now, config.keep_runs, config.keep_days,
                               lambda: self.publisher.site_data(self.store.read_summary()),
                               keep_going=True)

    def _activate_schedules(self, deployment: Deployment) -> None:
        self.timetable.activate(deployment.schedules, self.clock())
        self._replanned = True

    def _publish_deployment(self, previous: Deployment | None, deployment: Deployment) -> None:
        """Commit the state and the site pages a sync changes (overview; changed pipelines)."""
        changes = deployment.changes
        if previous is None or changes is None or changes.first_sync:
            names = set(deployment.active) | set(deployment.invalid)
        else:
            names = set(changes.added) | {c.name for c in changes.changed} | set(deployment.invalid)
        self.write_schedule_state(self.clock())
        self.store.write_files(self.publisher.pages_for_pipelines(names), "site")
        self.store.flush()

    def _schedule_info(self, deployment: Deployment) -> tuple[dict, dict]:
        return schedule_info(deployment.schedules, self.timetable.next_runs())

    def write_schedule_state(self, now: datetime) -> None:
        """`state/deployment.json` on the branch: what is active, problems, next slots."""
        deployment = self.deployment
        if deployment is None:
            return
        self.store.write_state("deployment", {
            "commit": deployment.commit, "at": now.isoformat(),
            "active": {n: a.commit for n, a in sorted(deployment.active.items())},
            "invalid": {n: [str(p) for p in i.problems] for n, i in sorted(deployment.invalid.items())},
            "errors": [str(p) for p in deployment.errors] + list(self._sync_errors),
            "schedules": [n.to_json() for n in self.timetable.next_runs()],
        })

    def _start_slot(self, due: DueRun) -> bool:
        """Queue the run of a due slot; False when its id is already known or it cannot run."""
        schedule = due.schedule
        if self.launcher.knows(due.run_id, schedule.pipeline):
            return False
        try:
            self.submit(schedule.pipeline, slot_trigger(due), now=self.clock(),
                        env=schedule.env, run_config_id=schedule.run_config, run_id=due.run_id)
        except FastflowError as exc:
            logger.warning("schedule %s: slot %s not started: %s", schedule.id,
                           due.slot.at.isoformat(), exc)
            return False
        logger.info("schedule %s: queued %s%s", schedule.id, due.run_id,
                    " (catch-up)" if due.catchup else "")
        return True

    def _record_skipped(self, record: RunRecord) -> None:
        if self.launcher.knows(record.run_id, record.pipeline):
            return
        logger.info("schedule %s: skipped %s (%s)", record.trigger.schedule_id, record.run_id,
                    record.error.message if record.error else "")
        self.launcher.store_record(record, "")

    def _run_on_change(self, deployment: Deployment) -> None:
        changes = deployment.changes
        if changes is None or changes.first_sync:
            return
        touched = set(changes.added) | {c.name for c in changes.changed}
        for name in sorted(touched):
            active = deployment.active.get(name)
            if active is None or not active.pipeline.run_on_change or active.commit != deployment.commit:
                continue
            if not active.pipeline.enabled:
                continue
            self.submit(name, Trigger(kind="push"), now=self.clock())

    def _collect_snapshots(self, deployment: Deployment) -> None:
        keep = {a.tree for a in deployment.active.values()}
        keep.add(deployment.root_tree)
        try:
            git.gc_snapshots(self.snapshots, keep=keep)
        except OSError as exc:  # never fatal: a later sync collects again
            logger.warning("snapshot garbage collection failed: %s", exc)

    # --- runs -------------------------------------------------------------------------------

    def submit(self, pipeline: str, trigger: Trigger, *, now: datetime,
               env: Mapping[str, str] | None = None, run_config_id: str | None = None,
               run_id: str | None = None) -> str:
        """Queue a run of `pipeline` at the current deployment's version of it; returns its id."""
        deployment = self.deployment
        if deployment is None or pipeline not in deployment.active:
            raise FastflowError(f"no active pipeline named {pipeline!r}")
        active = deployment.active[pipeline]
        order = RunOrder(
            run_id=run_id or new_run_id(pipeline, now), pipeline=pipeline,
            commit=active.commit, root_tree=self._root_tree(active, deployment),
            tree=active.tree, queued_at=now, trigger=trigger, run_config_id=run_config_id,
            env=dict(env or {}),
        )
        self.launcher.submit(order, LaunchContext(active, deployment.config))
        return order.run_id

    def _root_tree(self, active: ActivePipeline, deployment: Deployment) -> str:
        if active.commit == deployment.commit:
            return deployment.root_tree
        return git.commit_info(self.repository, active.commit).tree

    def _accept_request(self, request: RunRequestMessage, now: datetime) -> None:
        try:
            run_id = self.submit(request.pipeline, Trigger(kind="manual"), now=now,
                                 env=request.env, run_config_id=request.run_config,
                                 run_id=request_run_id(request.pipeline, request.request_id))
            logger.info("queued %s (request %s)", run_id, request.request_id)
        except FastflowError as exc:
            logger.warning("run request %s refused: %s", request.request_id, exc)

    def _after_record(self, record: RunRecord) -> None:
        """Downstream triggers fire when their parent's record is stored; a schedule's waiting
        run (overlap queue/replace) starts when its running one ended."""
        if self.stopping.is_set():
            return
        with self._lock:
            self.timetable.ended(record.run_id)
        for fired in record.downstream:
            try:
                self.submit(fired["pipeline"], Trigger(kind="downstream", parent_run_id=record.run_id),
                            now=self.clock(), run_config_id=fired.get("run_config_id"))
            except FastflowError as exc:
                logger.warning("downstream %s of %s not started: %s", fired["pipeline"],
                               record.run_id, exc)

    def _context_for_order(self, order: RunOrder) -> LaunchContext | None:
        """The pipeline as of an order's commit, for runs re-queued after a crash."""
        deployment = self.deployment
        if deployment is not None and order.pipeline in deployment.active \
                and deployment.active[order.pipeline].tree == order.tree:
            return LaunchContext(deployment.active[order.pipeline], deployment.config)
        try:
            at_commit = deploy_commit(self.repository, order.commit, self.snapshots, None)
        except FastflowError:
            return None
        active = at_commit.active.get(order.pipeline)
        return LaunchContext(active, at_commit.config) if active else None

    # --- status -----------------------------------------------------------------------------

    def status(self, now: datetime) -> dict:
        """What `fastflow status` shows about the daemon (also state/daemon.json on the branch)."""
        deployment = self.deployment
        return {
            "heartbeat": now.isoformat(),
            "pid": os.getpid(),
            "source": self.options.source,
            "branch": self.options.branch,
            "deployment": deployment.to_json() if deployment else None,
            "sync_errors": list(self._sync_errors),
            "dependencies": {n: vars(s) for n, s in self.preheater.states().items()},
            "running": sorted(j.run_id for j in self.dispatcher.running()),
            "queued": [j.run_id for j in self.dispatcher.queued()],
        }

    def write_status(self, now: datetime, stopped: bool = False) -> None:
        """`status.json` in the state dir every heartbeat; `state/daemon.json` on the results
        branch goes with the next run's commit, or on its own every BRANCH_HEARTBEAT_INTERVAL.
        `stopped`: the last one, on a clean stop (`stopped_at` tells readers it is not stale
        but ended)."""
        data = self.status(now)
        if stopped:
            data["stopped_at"] = now.isoformat()
        self._heartbeat_at = now
        path = self.state_dir / STATE_STATUS
        write_atomic(path, json.dumps({**data, "heartbeat_interval_s": HEARTBEAT_INTERVAL}, indent=2,
                                      default=str))
        self.store.write_state("daemon", {**data, "heartbeat_interval_s": BRANCH_HEARTBEAT_INTERVAL})
        if self._next_branch_heartbeat is None or now >= self._next_branch_heartbeat:
            # a static overview cannot notice a dead daemon: keep its heartbeat line current
            self.store.write_files(self.publisher.pages_for_pipelines(()), "site heartbeat")
            self.store.flush()
            self._next_branch_heartbeat = now + timedelta(seconds=BRANCH_HEARTBEAT_INTERVAL)


