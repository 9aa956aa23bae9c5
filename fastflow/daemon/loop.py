"""`fastflow serve`: follow a branch of a pipelines repository and run its pipelines.

The loop is huey's: `tick(now)` does one round of work and returns when it next needs to run;
`serve()` wraps it in a thin `while` that sleeps on the inbox (a push notification or a run
request wakes it at once) until then. Signal handlers only set flags. One round, each part
given the same `now` and timed by `timers` (no part reads the clock):

1. drain the inbox;
2. sync (`sync.Follower`) when a push was announced or the poll interval passed;
3. queue requested runs (`runs.RunLauncher`: journal, dispatch, record);
4. fire due schedule slots (`schedule.timetable`);
5. apply retention, hourly (`results.retention`);
6. write the heartbeat (`heartbeat`).

`tick` returns the earliest of the next poll, the next heartbeat and the next schedule slot, so
an idle daemon sleeps until then. The state dir holds everything local (names in
`fastflow.defaults`, `STATE_*`): `daemon.lock` (one daemon per state dir), `inbox/`, `active/`
(the run journal), `journal/` (the results store's), `live/` (output of running runs),
`snapshots/`, `preheat/`, `mirror.git` (for a URL), `deployment.json` and `status.json`.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping

from fastflow import repo as git
from fastflow.config import default_repo_config
from fastflow.daemon.alert_check import stale_already_notified
from fastflow.daemon.alerts import Alerts, AlertSources, notification_targets
from fastflow.daemon.dispatcher import Dispatcher
from fastflow.daemon.downstream import DownstreamHooks, DownstreamRuns
from fastflow.daemon.flows import FlowRuns
from fastflow.daemon.heartbeat import (
    Heartbeat,
    StateDirSpace,
    is_disk_full,
    last_heartbeat,
)
from fastflow.daemon.inbox import (
    Inbox,
    PushMessage,
    RunRequestMessage,
    SuperviseMessage,
)
from fastflow.daemon.lease import Holder, Lease
from fastflow.daemon.payloads import AcceptedRequests
from fastflow.daemon.requests import RequestHooks, RunRequests
from fastflow.daemon.runs import LaunchContext, RunLauncher, RunOrder
from fastflow.daemon.statedir import StateLock, is_remote
from fastflow.daemon.supervision import STATE_NAME as SUPERVISION_STATE
from fastflow.daemon.supervision import Supervisor, SupervisorHooks
from fastflow.daemon.sync import Follower, open_source, pushed_base
from fastflow.daemon.timers import Alarm, Every, earliest
from fastflow.daemon.webhooks import WebhookServer, hand, start_webhooks
from fastflow.daemon.webhooks.view import DaemonLooks
from fastflow.defaults import (
    BRANCH_HEARTBEAT_INTERVAL,
    CONFIG_FILE,
    DEFAULT_LEASE_TIMEOUT,
    HEARTBEAT_INTERVAL,
    STATE_JOURNAL,
    STATE_SNAPSHOTS,
)
from fastflow.deploy.deployment import (
    ActivePipeline,
    Deployment,
    deploy_commit,
)
from fastflow.deploy.preheat import Preheater
from fastflow.errors import FastflowError
from fastflow.executors.base import (
    Executor,
)
from fastflow.model import RepoConfig
from fastflow.record import RunRecord, Trigger, WebhookInput, new_run_id
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
    lease_timeout: float | None = None  # None: from config.yaml (see `lease`)
    webhooks_listen: str | None = None  # `--webhooks HOST:PORT`: over config.yaml's webhooks.listen


class LeaseLost(FastflowError):
    """Another daemon took the lease on the repository while this one held it."""


class Daemon:
    """Follows one branch of one repository; see the module doc."""

    def __init__(self, options: ServeOptions, *, clock: Callable[[], datetime],
                 environ: Mapping[str, str],
                 executor_factory: Callable[[RepoConfig], Executor],
                 credentials: git.Credentials | None = None) -> None:
        self.options = options
        self.state_dir = Path(options.state_dir).resolve()
        self.clock = clock
        self.environ = dict(environ)
        self.credentials = credentials
        self.lock = StateLock(self.state_dir)
        self.snapshots = self.state_dir / STATE_SNAPSHOTS
        self.stopping = threading.Event()
        self._executor_factory = executor_factory
        self.follower: Follower | None = None
        self._waiter = None
        self._poll = Every(options.poll_interval)
        self._retention = Every(RETENTION_INTERVAL)
        self._slots = Alarm()  # the next schedule slot; rung when a sync re-planned
        self._lock = threading.RLock()  # finished runs act on the timetable from worker threads
        self.space = StateDirSpace(self.state_dir)  # a full state dir pauses intake
        self.lease: Lease | None = None
        self._working = False  # took up work (holds the lease since start or a takeover)
        self.last_tick_at: datetime | None = None  # for the webhook intake's /healthz
        self.webhooks: WebhookServer | None = None

    @property
    def deployment(self) -> Deployment | None:
        """The active deployment (None before the first valid configuration)."""
        return self.follower.deployment if self.follower else None

    # --- lifecycle ------------------------------------------------------------------------

    def _open(self) -> RepoConfig:
        """Lock the state dir; open the repository, the results store and the run machinery."""
        self.lock.acquire()
        self.inbox = Inbox(self.state_dir)
        self.requests = AcceptedRequests(self.state_dir)  # webhook requests, until recorded
        self.requests.open()
        self.repository = open_source(self.options.source, self.state_dir, self.credentials,
                                      self.options.branch)
        self.follower = Follower(source=self.options.source, branch=self.options.branch,
                                 state_dir=self.state_dir, repository=self.repository,
                                 snapshots=self.snapshots, credentials=self.credentials)
        config = self.follower.config_at_head()
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
        self.lease = Lease(self.repository, credentials=self.credentials,
                           remote=self.options.source if is_remote(self.options.source) else None,
                           me=Holder.this_process(self.state_dir),
                           timeout=self.options.lease_timeout or config.lease_timeout
                           or DEFAULT_LEASE_TIMEOUT)
        self.executor = self._executor_factory(config)
        self.preheater = Preheater(self.executor.preheat, self.state_dir, self.clock)
        self.dispatcher = Dispatcher(self.options.max_concurrent_runs or config.max_concurrent_runs)
        self.timetable = Timetable(start=self._start_slot, skip=self._record_skipped,
                                   cancel=self.dispatcher.cancel,
                                   save=lambda data: self.store.write_state("scheduler", data))
        self._load_watermarks()
        self.supervisor = Supervisor(SupervisorHooks(
            policy=self._supervision_policy, knows=lambda r, p: self.launcher.knows(r, p),
            submit=lambda p, trigger, r, rc: self.submit(p, trigger, now=self.clock(), run_id=r,
                                                         run_config_id=rc),
            cancel=self.dispatcher.cancel, save=self._save_supervision,
            active=lambda p, besides: any(o.pipeline == p and o.run_id != besides
                                          for o in self.launcher.journal.orders())))
        self._supervision_changed = False
        self._load_supervision()
        self.heartbeat = Heartbeat(self.state_dir, self.store,
                                   refresh_site=lambda: self._publish_overview("site heartbeat"))
        self.publisher = SitePublisher(self.store, self.clock, lambda: self.deployment,
                                       schedule_info=self._schedule_info,
                                       heartbeat=lambda: self.heartbeat.last_at,
                                       heartbeat_interval_s=BRANCH_HEARTBEAT_INTERVAL,
                                       stopped_at=lambda: self.heartbeat.stopped_at,
                                       supervision=self.supervisor.data,
                                       notifications=lambda: self.alerts.recent_deliveries())
        self.follower.attach(store=self.store, preheater=self.preheater, timetable=self.timetable,
                             publisher=self.publisher, submit=self.submit)
        self._open_alerts()
        self.supervisor.hooks.notify = self.alerts.supervision  # given_up is heard (alerts)
        self.launcher = RunLauncher(
            state_dir=self.state_dir, repository=self.repository, snapshots=self.snapshots,
            store=self.store, executor=self.executor, preheater=self.preheater,
            dispatcher=self.dispatcher, clock=self.clock, environ=self.environ,
            on_finished=self.publisher.pages_for_run, after_record=self._after_record,
            on_ended=self._run_ended, before_record=self._before_record,
            on_started=self._run_started,
            on_event=lambda order, event: self.alerts.soft_limit(
                order.run_id, order.pipeline, event),
            requests=self.requests,
        )
        self.flows = FlowRuns(
            state_dir=self.state_dir, repository=self.repository, snapshots=self.snapshots,
            store=self.store, launcher=self.launcher, clock=self.clock,
            config_for=lambda commit: self.deployment.config if self.deployment else None,
            on_ended=self._run_ended,  # a flow run's schedule slot ends with it
            pages=self.publisher.pages_for_flow_run)
        self.downstream = DownstreamRuns(self.launcher, DownstreamHooks(
            deployment=lambda: self.deployment, is_flow=self._is_flow, submit=self.submit,
            clock=self.clock, lock=self._lock))
        self.run_requests = RunRequests(self.launcher, self.requests, RequestHooks(
            deployment=lambda: self.deployment, is_flow=self._is_flow, submit=self.submit,
            rerun=self.flows.rerun))
        return config

    def _open_alerts(self) -> None:
        """Notifications (`daemon.alerts`): their state from the results branch, a courier."""
        self.alerts = Alerts(self.store, self.clock, AlertSources(
            targets=lambda pipeline: notification_targets(self.deployment, pipeline),
            config=lambda: self.deployment.config if self.deployment else None,
            secrets_root=self._secrets_root, environ=self.environ, wake=self._wake,
            pages=lambda: self.publisher.pages_for_pipelines(())))
        self.alerts.load()

    def _load_watermarks(self) -> None:
        source = f"state/scheduler.json on {self.store.branch}"
        try:
            self.timetable.load(self.store.read_state("scheduler"), source)
        except FastflowError as exc:
            # Not a silent default: every schedule starts from now, and the error says so.
            logger.error("%s; every schedule starts afresh from now", exc)

    def _load_supervision(self) -> None:
        source = f"state/{SUPERVISION_STATE}.json on {self.store.branch}"
        try:
            self.supervisor.load(self.store.read_state(SUPERVISION_STATE), source)
        except ValueError as exc:
            # Not a silent default: supervision starts afresh (no pending restart), and says so.
            logger.error("%s; supervision starts afresh: no restart is pending", exc)

    def start(self) -> list[str]:
        """Open everything and take the lease on the repository, then take up work
        (`_take_work`); without the lease, stand by (`tick` takes up work at a takeover).
        Returns notes on what reconciliation did."""
        self._open()
        now = self.clock()
        if not self.lease.check(now):
            logger.warning("standing by: %s; this daemon executes nothing until it holds the "
                           "lease", self.lease.reason)
            self.heartbeat.beat(now, self.status(now), local_only=True)
            return []
        return self._take_work()

    def _take_work(self) -> list[str]:
        """Recover what a previous daemon of this state dir left (journalled records, active
        runs), and sync once. Returns notes on what reconciliation did."""
        self._working = True
        left = self.launcher.journal.orders()  # read before the first sync journals its own runs
        again = self.launcher.recover_webhooks(left)  # accepted, not journalled before a stop
        for message in again:
            hand(self.inbox, message)
        if again:
            logger.info("webhooks: %d accepted request(s) the previous daemon had not taken "
                        "are queued now", len(again))
        for order in left:  # runs of schedules a previous daemon left
            if order.trigger.schedule_id:
                self.timetable.track(order.run_id, order.trigger.schedule_id)
        pushes = [m for m in self.inbox.read() if isinstance(m, PushMessage)]  # left in place
        base = pushed_base(pushes, f"refs/heads/{self.options.branch}")
        if base is not None and self.deployment is None:  # pushes the hook recorded before
            self.follower.adopt_pushed_range(base)  # the first start run as if it had been up
        restored = self.deployment
        now = self.clock()
        last_beat = last_heartbeat(self.store, self.state_dir)  # the last holder's, before ours
        self.alerts.load()  # at a takeover: what the previous holder's alerts remembered
        self._sync(now, safe=True)
        self.alerts.daemon_started(last_beat, now,
                                   lambda beat: stale_already_notified(self.state_dir, beat))
        self.follower.preheat_on_start(restored)
        if self.deployment is not None and self.timetable.plan is None:
            self.follower.activate_schedules(now)  # the branch did not move since last time
            self._slots.ring()
        notes = self.launcher.reconcile(self._context_for_order, left)
        return notes + self.flows.resume()  # flow runs a previous daemon left: go on

    def sync_once(self) -> Deployment | None:
        """`fastflow sync`: one sync (pre-heats included, waited for), then release the state
        dir. Returns the new deployment, or None when the branch did not move."""
        self._open()
        try:
            deployment = self.sync(self.clock())
            self.preheater.wait_all()
            self.store.flush()
            return deployment
        finally:
            self.preheater.shutdown()
            self.requests.close()
            self.lock.release()

    def stop(self, grace: float | None = None) -> None:
        """Take no new work; let running runs finish up to `grace` seconds, then leave them
        (their containers keep running; the next start reconciles them)."""
        self.stopping.set()
        self._stop_webhooks()
        dropped = self.dispatcher.stop_accepting()
        logger.info("stopping: %d queued runs stay journalled for the next start", len(dropped))
        if not self.dispatcher.wait_idle(self.options.stop_grace if grace is None else grace):
            logger.warning("runs still active after the grace period; the next start reconciles them")
        self.alerts.stop()  # what waits in a group window goes now, for a few seconds at most
        now = self.clock()
        if self.lease.held:
            self.heartbeat.beat(now, self.status(now), stopped=True)
            self._publish_overview("site: daemon stopped")
        else:  # a standby publishes nothing
            self.heartbeat.beat(now, self.status(now), stopped=True, local_only=True)
        self.lease.release(now)
        self.preheater.shutdown()
        self.requests.close()
        self.lock.release()

    def serve(self) -> None:
        """Run until `request_stop()` (the SIGTERM/SIGINT handlers call it)."""
        self._waiter = self.inbox.waiter()
        try:
            self._start_webhooks()
            while not self.stopping.is_set():
                wake_at = self.round(self.clock())
                timeout = max(0.0, (wake_at - self.clock()).total_seconds())
                self._waiter.wait(min(timeout, HEARTBEAT_INTERVAL))
        finally:
            self._stop_webhooks()  # SIGTERM: no new request, in-flight ones answered, then runs
            self._waiter.close()
        if self.lease.lost:
            raise LeaseLost(f"{self.options.source}: another daemon took the lease "
                            f"({self.lease.reason}); this one stopped. Start it again to stand "
                            "by, or stop the other one")

    def round(self, now: datetime) -> datetime:
        """`tick(now)`, unless the state dir is full: then intake is paused (`StateDirSpace`),
        finished runs are recorded as soon as there is room, and the daemon stays up."""
        if self.space.full:
            try:
                self.launcher.retry_unrecorded()
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
            if not self.space.has_room():
                return self.space.hit(OSError(), now)
        try:
            wake_at = earliest(self.tick(now), self.alerts.next_at)  # a group window's end
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            return self.space.hit(exc, now)
        self.space.cleared(now)
        return wake_at

    def request_stop(self) -> None:
        """Ask `serve` to return (safe from a signal handler: it only sets flags)."""
        self.stopping.set()
        if self._waiter is not None:
            self._waiter.wake()

    def _start_webhooks(self) -> None:
        """Listen for webhooks where `--webhooks` or config.yaml's `webhooks.listen` says (the
        configuration at the start: a change takes effect at the next start); nothing when
        neither names an address."""
        config = self.deployment.config if self.deployment and self.deployment.config \
            else default_repo_config()
        settings = config.webhooks or default_repo_config().webhooks
        listen = self.options.webhooks_listen or settings.listen
        if listen is None:
            return
        looks = DaemonLooks(state_dir=self.state_dir, deployment=lambda: self.deployment,
                            repository=self.repository, snapshots=self.snapshots,
                            store=self.store, environ=self.environ,
                            last_tick_at=lambda: self.last_tick_at,
                            standby=lambda: not self.lease.held, requests=self.requests)
        source = "--webhooks" if self.options.webhooks_listen else f"{CONFIG_FILE}: webhooks.listen"
        self.webhooks = start_webhooks(replace(settings, listen=listen), looks,
                                       requests=self.requests, inbox=self.inbox,
                                       clock=self.clock, source=source)

    def _stop_webhooks(self) -> None:
        if self.webhooks is not None:
            self.webhooks.stop()
            self.webhooks = None

    # --- one round --------------------------------------------------------------------------

    def tick(self, now: datetime) -> datetime:
        """One round of work (see the module doc) at `now`; returns when the next is due."""
        self.last_tick_at = now
        if not self._hold_lease(now):
            return self._stand_by(now)
        messages = self.inbox.read()  # each acknowledged once what it asked for is durable
        pushes = [m for m in messages if isinstance(m, PushMessage)]
        ref = f"refs/heads/{self.options.branch}"
        if any(m.updates_ref(ref) for m in pushes) or self._poll.due(now):
            self._sync(now, safe=True)
            self._poll.done(now)
        for message in pushes:  # synced (or failed and logged: the poll retries)
            self.inbox.acknowledge(message)
        for message in messages:
            if isinstance(message, RunRequestMessage):
                self.run_requests.accept(message, now)
                self.inbox.acknowledge(message)
            elif isinstance(message, SuperviseMessage):
                self._supervise_request(message, now)
                self.inbox.acknowledge(message)
        if self.timetable.plan is not None and self._slots.due(now):
            with self._lock:
                self._slots.set(self.timetable.fire_due(now))
                self.follower.write_schedule_state(now)
        supervision_at = self._supervise(now)
        self.launcher.retry_unrecorded()  # records a fault kept from the results branch
        if self._retention.due(now):
            self.apply_retention(now)
            self.flows.sweep_workspaces(now)  # failed flow runs' workspaces past their time
            self._retention.done(now)
        if self.store.push_retry_at is not None and now >= self.store.push_retry_at:
            self.store.push_pending(now)  # a results push the remote refused or missed
        if self.heartbeat.every.due(now):
            self.heartbeat.beat(now, self.status(now))
        self.alerts.tick(now, self.launcher.running_runs(),
                         self.deployment.pipeline_schedules() if self.deployment else [],
                         self.launcher.slot_started)
        return earliest(self._poll.next_at, self.heartbeat.every.next_at, self._slots.at,
                        self.lease.next_check_at, self.store.push_retry_at, supervision_at)

    def _hold_lease(self, now: datetime) -> bool:
        """Renew the lease when due, or try to take it; take up work at a takeover; stop when
        another daemon took it from us. Returns whether this daemon holds it."""
        if self.lease.due(now):
            self.lease.check(now)
        if self.lease.held and not self._working:
            logger.warning("taking over: %s", self.lease.reason)
            self.store.push_pending()  # a URL: the results branch as the remote has it now
            self._load_watermarks()  # the slots the previous holder handled
            self._load_supervision()  # and its pending restarts
            for note in self._take_work():
                logger.info("reconciled %s", note)
        elif self.lease.lost and not self.stopping.is_set():
            logger.error("stopping: another daemon holds the lease now (%s)", self.lease.reason)
            self.request_stop()
        return self.lease.held

    def _stand_by(self, now: datetime) -> datetime:
        """A standby's round: nothing but the lease (checked by `_hold_lease`) and status.json."""
        if self.heartbeat.every.due(now):
            self.heartbeat.beat(now, self.status(now), local_only=True)
        return earliest(self.heartbeat.every.next_at, self.lease.next_check_at)

    def sync(self, now: datetime) -> Deployment | None:
        """One sync at `now` (`Follower.sync`); raises when it fails."""
        return self._sync(now, safe=False)

    def _sync(self, now: datetime, *, safe: bool) -> Deployment | None:
        with self._lock:
            deployment = self.follower.safe_sync(now) if safe else self.follower.sync(now)
        if deployment is not None:
            self._slots.ring()  # the schedules were re-planned: fire what is due at once
        return deployment

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

    def _publish_overview(self, message: str) -> None:
        self.store.write_files(self.publisher.pages_for_pipelines(()), message)
        self.store.flush()

    def _schedule_info(self, deployment: Deployment) -> tuple[dict, dict]:
        return schedule_info(deployment.schedules, self.timetable.next_runs())

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

    # --- runs -------------------------------------------------------------------------------

    def submit(self, pipeline: str, trigger: Trigger, *, now: datetime,
               env: Mapping[str, str] | None = None, run_config_id: str | None = None,
               run_id: str | None = None, hold: bool = False,
               webhook: WebhookInput | None = None,
               params: Mapping[str, object] | None = None) -> str:
        """Queue a run of `pipeline` at the current deployment's version of it; returns its id.
        With `hold`, only journal it (`RunLauncher.submit`); `webhook`: what a webhook request
        gives the run (its payload, headers and env). A flow's name starts a flow run
        (`daemon.flows`, with `params`) and returns its flow run id."""
        deployment = self.deployment
        if deployment is not None and pipeline not in deployment.active \
                and self.flows.is_flow(pipeline, deployment.commit):
            return self.flows.start(pipeline, commit=deployment.commit, trigger=trigger, now=now,
                                    params=params if params is not None else env,
                                    flow_run_id=run_id)  # a flow schedule's env: its params
        if deployment is None or pipeline not in deployment.active:
            raise FastflowError(f"no active pipeline named {pipeline!r}")
        active = deployment.active[pipeline]
        order = RunOrder(
            run_id=run_id or new_run_id(pipeline, now), pipeline=pipeline,
            commit=active.commit, root_tree=self._root_tree(active, deployment),
            tree=active.tree, queued_at=now, trigger=trigger, run_config_id=run_config_id,
            env=dict(env or {}), webhook=webhook,
        )
        renew = None if run_id else (lambda: new_run_id(pipeline, now))  # random: draw again
        order = self.launcher.submit(order, LaunchContext(active, deployment.config), renew,
                                     hold=hold)
        return order.run_id

    def _root_tree(self, active: ActivePipeline, deployment: Deployment) -> str:
        if active.commit == deployment.commit:
            return deployment.root_tree
        return git.commit_info(self.repository, active.commit).tree

    def _is_flow(self, name: str) -> bool:
        deployment = self.deployment
        return deployment is not None and name not in deployment.active \
            and self.flows.is_flow(name, deployment.commit)

    def _run_ended(self, run_id: str) -> None:
        """A run ended, recorded or not yet (its record may wait for a full disk): its
        schedule's next slot must not see it as running."""
        if self.stopping.is_set():
            return
        with self._lock:
            self.timetable.ended(run_id)

    def _after_record(self, record: RunRecord) -> None:
        """Downstream runs (journalled by `DownstreamRuns.decide`) are queued when their parent's
        record is stored; a schedule's waiting run (overlap queue/replace) starts when its
        running one ended. A stopping daemon queues nothing: the next start finds them. Its
        targets hear of it (`alerts`) in any case."""
        self.alerts.run_recorded(record, lambda: self.store.read_log(record.run_id,
                                                                     record.pipeline))
        if self.stopping.is_set():
            return
        with self._lock:
            self.timetable.ended(record.run_id)
        self.downstream.release(record)
        self.flows.task_recorded(record)  # a flow's task ended: what is due next starts

    # --- supervision (daemon.supervision) ---------------------------------------------------

    def _supervision_policy(self, pipeline: str):
        """The active pipeline's `DaemonPolicy` and tree (None: not active, or disabled: a
        disabled pipeline is not restarted)."""
        deployment = self.deployment
        active = deployment.active.get(pipeline) if deployment else None
        if active is None or not active.pipeline.enabled:
            return None
        return active.pipeline.daemon, active.tree

    def _save_supervision(self, data: dict) -> None:
        self.store.write_state(SUPERVISION_STATE, data)
        self._supervision_changed = True
        if self._waiter is not None:  # a run's start or end planned a restart: the loop may
            self._waiter.wake()  # sleep past it (up to a heartbeat); a round re-plans its wake

    def _publish_supervision(self) -> None:
        """Commit a changed supervision state with a fresh overview (status and the site show
        it at once); a fault is logged, and the next record or heartbeat commits it."""
        if not self._supervision_changed:
            return
        self._supervision_changed = False
        try:
            self._publish_overview("site: supervision")
        except Exception as exc:  # noqa: BLE001 - journalled: committed with the next record
            logger.error("supervision state not committed yet: %s: %s", type(exc).__name__, exc)

    def _supervise(self, now: datetime) -> datetime | None:
        """Queue the supervised restarts due at `now`; returns when the next one is due."""
        if self.deployment is None:
            return None
        with self._lock:
            wake_at = self.supervisor.tick(now)
        self._publish_supervision()
        return wake_at

    def _supervise_request(self, request: SuperviseMessage, now: datetime) -> None:
        """`fastflow supervise reset NAME`: journalled before the request is acknowledged."""
        with self._lock:
            done = self.supervisor.reset(request.pipeline, now, "fastflow supervise reset")
        if not done:
            logger.warning("supervise reset %s: nothing to reset (no supervision state of that "
                           "pipeline)", request.pipeline)
        self._publish_supervision()

    def _run_started(self, order: RunOrder) -> None:
        self.supervisor.run_started(order.pipeline, order.run_id, order.started_at or self.clock(),
                                    order.run_config_id)
        self._publish_supervision()
        self.flows.task_started(order)  # a flow's task: `running` in its flow record

    def _before_record(self, record: RunRecord) -> RunRecord:
        """Before a finished run is recorded: its downstream runs (`DownstreamRuns.decide`), and
        supervision's decision (a restart planned, or given up), journalled before the record
        so a kill -9 between them never loses it (`Supervisor.run_ended` is idempotent)."""
        record = self.downstream.decide(record)
        try:
            record = self.supervisor.run_ended(record, self.clock())
        except Exception as exc:  # noqa: BLE001 - the record is stored all the same
            logger.error("run %s: supervision could not decide: %s: %s", record.run_id,
                         type(exc).__name__, exc)
        return record

    def _context_for_order(self, order: RunOrder) -> LaunchContext | None:
        """The pipeline as of an order's commit, for runs re-queued after a crash."""
        if order.flow is not None:  # a flow's task: its script or pipeline at that commit
            return self.flows.context_for(order)
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

    # --- notifications (daemon.alerts) ----------------------------------------------------

    def _secrets_root(self) -> Path | None:
        """A snapshot of the deployed commit's tree: its secrets file holds targets' URLs."""
        deployment = self.deployment
        if deployment is None:
            return None
        return git.snapshot_tree(self.repository, deployment.root_tree, "", self.snapshots)

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.wake()

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
            "sync_errors": list(self.follower.errors),
            "dependencies": {n: vars(s) for n, s in self.preheater.states().items()},
            "running": sorted(j.run_id for j in self.dispatcher.running()),
            "queued": [j.run_id for j in self.dispatcher.queued()],
            "lease": self.lease.status(),
        }
