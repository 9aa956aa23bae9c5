"""Syncing: the followed branch's new head becomes the active deployment.

`Follower.sync(now)` fetches a remote into the mirror, deploys the branch's new head with
last-valid semantics (`deploy.deployment`), pre-heats changed dependencies, re-plans the
schedules, queues `run_on_change` runs, collects unused snapshots, and publishes what the sync
changed (state and site pages). It takes the `now` it is given and reads no clock. A failed
sync (the remote is away, the branch vanished) keeps the current deployment and shows the error.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Callable

from fastflow import repo as git
from fastflow.daemon.inbox import PushMessage
from fastflow.daemon.statedir import is_remote
from fastflow.defaults import STATE_DEPLOYMENT, STATE_MIRROR
from fastflow.deploy.deployment import (
    Deployment,
    dependencies_changed,
    deploy_commit,
    restore_deployment,
    save_deployment,
)
from fastflow.deploy.preheat import Preheater
from fastflow.errors import FastflowError, RepositoryError
from fastflow.executors.base import PreheatJob
from fastflow.model import RepoConfig
from fastflow.record import Trigger
from fastflow.results.publish import SitePublisher
from fastflow.results.store import ResultsStore
from fastflow.schedule.timetable import Timetable

logger = logging.getLogger(__name__)

Submit = Callable[..., str]  # Daemon.submit(pipeline, trigger, *, now, ...)


def open_source(source: str, state_dir: Path, credentials: git.Credentials | None,
                branch: str | None = None) -> git.GitRepo:
    """The repository to follow: the local one at `source`, or the mirror of a URL (fetched).

    When the URL cannot be fetched but the mirror holds `branch` from an earlier fetch, the
    daemon starts from the mirror (a warning says so; every sync fetches again). Without a
    mirror of the branch the fetch's error is raised: there is nothing to run yet."""
    if not is_remote(source):
        return git.open_repo(Path(source).resolve())
    mirror = state_dir / STATE_MIRROR
    try:
        git.mirror_fetch(source, mirror, credentials, protect=("fastflow/results",))
    except RepositoryError as exc:
        repository = git.open_repo(mirror) if (mirror / "HEAD").exists() else None
        if repository is None or branch is None or git.branch_head(repository, branch) is None:
            raise
        logger.warning("%s; starting from the local mirror %s (branch %s at %s)", exc, mirror,
                       branch, git.branch_head(repository, branch)[:10])
        return repository
    return git.open_repo(mirror)


def pushed_base(pushes: list[PushMessage], ref: str) -> str | None:
    """Where `ref` was before the earliest of `pushes` that names it: that push's old commit,
    or its new one when the push created the branch (the branch's first commit is adopted, as
    a daemon that was up would have). None when no push names `ref`."""
    for push in pushes:
        for update in push.updates:
            if update.ref == ref:
                return update.new if set(update.old) == {"0"} else update.old
    return None


class Follower:
    """Follows one branch: holds the active deployment and moves it on each sync."""

    def __init__(self, *, source: str, branch: str, state_dir: Path, repository: git.GitRepo,
                 snapshots: Path, credentials: git.Credentials | None) -> None:
        self.source, self.branch = source, branch
        self.state_dir, self.repository, self.snapshots = state_dir, repository, snapshots
        self.credentials = credentials
        self.deployment: Deployment | None = restore_deployment(repository, snapshots,
                                                                state_dir / STATE_DEPLOYMENT)
        self.errors: list[str] = []
        self._fetch_error: str | None = None  # the last fetch's failure, shown until one works
        self._adopted: Deployment | None = None  # the base `adopt_pushed_range` deployed

    def attach(self, *, store: ResultsStore, preheater: Preheater, timetable: Timetable,
               publisher: SitePublisher, submit: Submit) -> None:
        """The parts a sync acts on (they need the config this follower read first)."""
        self.store, self.preheater, self.timetable = store, preheater, timetable
        self.publisher, self.submit = publisher, submit

    def config_at_head(self) -> RepoConfig | None:
        """The configuration the branch's head makes active (the last valid one when it is
        invalid; None when no valid one is known)."""
        head = git.branch_head(self.repository, self.branch)
        if head is None:
            return self.deployment.config if self.deployment else None
        return deploy_commit(self.repository, head, self.snapshots, self.deployment).config

    # --- one sync -------------------------------------------------------------------------

    def safe_sync(self, now: datetime) -> Deployment | None:
        """`sync`, with a failure logged and shown (the current deployment stays active)."""
        try:
            return self.sync(now, offline_ok=True)
        except FastflowError as exc:  # the remote is away, a ref vanished: keep what runs
            logger.warning("sync failed, the current deployment stays active: %s", exc)
            self.errors = [str(exc)]
            return None

    def sync(self, now: datetime, *, offline_ok: bool = False) -> Deployment | None:
        """Fetch (for a URL), deploy the branch's new head, pre-heat, re-plan, queue
        run_on_change runs, publish. Returns the new deployment, or None when the branch did
        not move. `offline_ok`: a failed fetch is shown (`errors`) and the sync goes on with
        the mirror as it is, instead of raising."""
        if is_remote(self.source):
            self._fetch(offline_ok)
        head = git.branch_head(self.repository, self.branch)
        if head is None:
            raise RepositoryError(f"{self.source}: branch {self.branch!r} does not exist; "
                                  "push it or pass --branch")
        previous = self.deployment
        self.errors = [self._fetch_error] if self._fetch_error else []
        if previous is not None and previous.commit == head:
            logger.debug("sync: %s is still at %s", self.branch, head[:10])
            return None
        deployment = deploy_commit(self.repository, head, self.snapshots, previous)
        self.deployment = deployment
        save_deployment(deployment, self.state_dir / STATE_DEPLOYMENT)
        self._preheat(previous, deployment)
        self.activate_schedules(now)
        self._run_on_change(deployment, now)
        self._collect_snapshots(deployment)
        self.store.write_state("sync", {"commit": head, "at": now.isoformat()})
        self._publish(previous, deployment, now)
        changes = deployment.changes.to_json() if deployment.changes else None
        logger.info("synced %s: %s", head[:10], json.dumps(changes))
        return deployment

    def _fetch(self, offline_ok: bool) -> None:
        """Fetch the URL into the mirror; a failure is raised, or (`offline_ok`) kept in
        `_fetch_error` and warned about once, until a fetch works again."""
        try:
            git.mirror_fetch(self.source, Path(self.repository.path), self.credentials,
                             protect=(self.store.branch,))
        except RepositoryError as exc:
            if not offline_ok:
                raise
            error = (f"{exc}; the daemon goes on with its local mirror and fetches again at "
                     "every poll")
            if error != self._fetch_error:
                logger.warning("%s", error)
            self._fetch_error = error
            return
        if self._fetch_error is not None:
            logger.info("%s: fetched again; the mirror is up to date", self.source)
        self._fetch_error = None

    def adopt_pushed_range(self, base: str) -> bool:
        """Before a first sync (no deployment known), take `base`, the commit the branch was
        at before the pushes the hook recorded while no daemon ran, as deployed: the first
        sync then runs what those pushes changed, as if the daemon had been up. False (and
        nothing changes) when a deployment is known or `base` cannot be deployed."""
        if self.deployment is not None:
            return False
        try:
            self.deployment = deploy_commit(self.repository, base, self.snapshots, None)
        except FastflowError as exc:  # e.g. a force-push removed it from the branch
            logger.warning("the pushes recorded before the first start begin at %s, which "
                           "cannot be read (%s); the head is adopted without running anything",
                           base[:10], exc)
            return False
        self._adopted = self.deployment
        return True

    def activate_schedules(self, now: datetime) -> None:
        """Give the timetable the schedules of the current deployment."""
        if self.deployment is not None:
            self.timetable.activate(self.deployment.schedules, now)

    # --- pre-heat ---------------------------------------------------------------------------

    def _preheat(self, previous: Deployment | None, deployment: Deployment) -> None:
        self.submit_preheat(dependencies_changed(previous, deployment))
        for name in self.preheater.states():
            active = deployment.active.get(name)
            if active is None or active.pipeline.requirements is None:
                self.preheater.forget(name)

    def submit_preheat(self, names: list[str]) -> None:
        """Pre-heat the dependencies of the active pipelines `names`."""
        for name in names:
            active = self.deployment.active[name]
            workdir = git.snapshot_tree(self.repository, active.tree, "", self.snapshots)
            self.preheater.submit(PreheatJob(name, workdir, Path(active.pipeline.requirements).name,
                                             active.pipeline.python_version))

    def preheat_on_start(self, restored: Deployment | None) -> None:
        """A rebuilt image or a cleared cache invalidates pre-heats no push asked for: check
        every pipeline once per start (a pre-heat that is still valid returns at once); those
        the first sync just submitted are not submitted twice."""
        if self.deployment is None:
            return
        done = dependencies_changed(restored, self.deployment) if self.deployment is not restored else []
        self.submit_preheat([n for n in dependencies_changed(None, self.deployment) if n not in done])

    # --- what a sync starts and cleans up ---------------------------------------------------

    def _run_on_change(self, deployment: Deployment, now: datetime) -> None:
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
            self.submit(name, Trigger(kind="push"), now=now)

    def _collect_snapshots(self, deployment: Deployment) -> None:
        keep = {a.tree for a in deployment.active.values()}
        keep.add(deployment.root_tree)
        try:
            git.gc_snapshots(self.snapshots, keep=keep)
        except OSError as exc:  # never fatal: a later sync collects again
            logger.warning("snapshot garbage collection failed: %s", exc)

    # --- publishing ---------------------------------------------------------------------------

    def _publish(self, previous: Deployment | None, deployment: Deployment, now: datetime) -> None:
        """Commit the state and the site pages a sync changes (overview; changed pipelines)."""
        changes = deployment.changes
        if previous is None or previous is self._adopted or changes is None or changes.first_sync:
            names = set(deployment.active) | set(deployment.invalid)
        else:
            names = set(changes.added) | {c.name for c in changes.changed} | set(deployment.invalid)
        self.write_schedule_state(now)
        self.store.write_files(self.publisher.pages_for_pipelines(names), "site")
        self.store.flush()

    def write_schedule_state(self, now: datetime) -> None:
        """`state/deployment.json` on the branch: what is active, problems, next slots."""
        deployment = self.deployment
        if deployment is None:
            return
        self.store.write_state("deployment", {
            "commit": deployment.commit, "at": now.isoformat(),
            "active": {n: a.commit for n, a in sorted(deployment.active.items())},
            "invalid": {n: [str(p) for p in i.problems] for n, i in sorted(deployment.invalid.items())},
            "errors": [str(p) for p in deployment.errors] + list(self.errors),
            "schedules": [n.to_json() for n in self.timetable.next_runs()],
        })
