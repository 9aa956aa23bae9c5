"""What the webhook intake reads of a running daemon (`app.DaemonView`), from its pieces.

Read-only and safe from the HTTP threads: the deployment is an immutable value swapped whole
by a sync; the results store guards its reads with its own lock; the run journal is files, and the
accepted requests (`daemon.payloads`) guard their index with a lock. The secrets a signed pipeline is checked with are decrypted from the snapshot of the
deployed commit once per (commit, pipeline) and kept in memory until the deployment changes.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping

from fastflow import repo as git
from fastflow.daemon.payloads import AcceptedRequests
from fastflow.daemon.runs import RunJournal
from fastflow.daemon.webhooks.intake import WEBHOOK_RUN_ID
from fastflow.deploy.deployment import Deployment
from fastflow.deploy.flows import flows_at_commit
from fastflow.errors import FastflowError, RepositoryError
from fastflow.model import Pipeline
from fastflow.results.read import flow_history_row, history_row
from fastflow.results.store import ResultsStore
from fastflow.secrets.runtime import webhook_secrets

logger = logging.getLogger(__name__)

# /api/runs answers for the run ids the intake gives (`intake.WEBHOOK_RUN_ID`) only, and never
# touches a file for an id of another shape.
SECRETS_RETRY_S = 30.0


class DaemonLooks:
    """`app.DaemonView` over a daemon's parts (`loop.Daemon.serve` builds it)."""

    def __init__(self, *, state_dir: Path, deployment: Callable[[], Deployment | None],
                 repository: git.GitRepo, snapshots: Path, store: ResultsStore,
                 environ: Mapping[str, str], last_tick_at: Callable[[], datetime | None],
                 standby: Callable[[], bool], requests: AcceptedRequests) -> None:
        self.state_dir = Path(state_dir)
        self.requests = requests
        self.journal = RunJournal(self.state_dir)
        self._deployment = deployment
        self.repository = repository
        self.snapshots = snapshots
        self.store = store
        self.environ = dict(environ)
        self._last_tick_at = last_tick_at
        self._standby = standby
        self._secrets: dict[tuple[str, str], tuple[str, ...]] = {}
        self._flow_keys: tuple[str | None, dict[str, str]] = (None, {})
        self._failures: dict[tuple[str, str], tuple[float, FastflowError]] = {}
        self._lock = threading.Lock()

    def deployment(self) -> Deployment | None:
        return self._deployment()

    def last_tick_at(self) -> datetime | None:
        return self._last_tick_at()

    def standby(self) -> bool:
        """Another daemon holds the lease on the repository (this one executes nothing)."""
        return self._standby()

    def flow_keys(self) -> dict[str, str]:
        """The webhook keys of the valid flows at the deployed commit, by flow (read once per
        commit from its snapshot; none when the commit's flows cannot be read)."""
        deployment = self._deployment()
        if deployment is None or deployment.commit is None:
            return {}
        with self._lock:
            if self._flow_keys[0] != deployment.commit:
                try:
                    found = flows_at_commit(self.repository, deployment.commit, self.snapshots)
                    keys = {n: f.webhook_key for n, f in found.flows.items() if f.webhook_key}
                except (FastflowError, OSError) as exc:
                    logger.warning("webhook: the flows of commit %s cannot be read: %s",
                                   deployment.commit[:12], exc)
                    keys = {}
                self._flow_keys = (deployment.commit, keys)
            return self._flow_keys[1]

    def webhook_secrets(self, pipeline: Pipeline) -> tuple[str, ...]:
        """The values of `pipeline`'s `webhook_secret`s at the deployed commit (cached per
        commit); `FastflowError` when the secrets file cannot give them (that answer is kept
        for `SECRETS_RETRY_S`, so a flood of requests does not decrypt the file each time)."""
        deployment = self._deployment()
        if deployment is None or deployment.root_tree is None or deployment.config is None:
            return ()
        key = (deployment.root_tree, pipeline.name)
        with self._lock:
            failed = self._failed(key)
            if failed is not None:  # not decrypted again at every request: a flood costs nothing
                raise failed.with_traceback(None)  # the same error, no growing traceback
            if key not in self._secrets:
                if len(self._secrets) > 256:  # old deployments' entries
                    self._secrets.clear()
                    self._failures.clear()
                try:
                    root = git.snapshot_tree(self.repository, deployment.root_tree, "",
                                             self.snapshots)
                except OSError as exc:
                    raise FastflowError(f"the snapshot of the deployed commit cannot be "
                                        f"written: {exc}") from None
                try:
                    self._secrets[key] = webhook_secrets(root, deployment.config, pipeline,
                                                         self.environ)
                except FastflowError as exc:
                    self._failures[key] = (time.monotonic(), exc)
                    raise
            return self._secrets[key]

    def _failed(self, key: tuple[str, str]) -> FastflowError | None:
        failed = self._failures.get(key)
        if failed is not None and time.monotonic() - failed[0] < SECRETS_RETRY_S:
            return failed[1]
        return None

    def run_status(self, run_id: str) -> dict | None:
        """A webhook run as `fastflow history --json` shows it: from the results branch once
        recorded, else `queued` or `running` from the journal or the accepted requests; a webhook flow run
        as `fastflow flow history --json` shows it (its record is written when it starts and
        as its tasks end); None when unknown or not a webhook run id."""
        match = WEBHOOK_RUN_ID.fullmatch(run_id)
        if match is None:
            return None
        pipeline = match["pipeline"]
        order = self.journal.get(run_id)
        if order is not None:
            started = order.started_at.isoformat() if order.started_at else None
            return _pending_row(run_id, order.trigger.to_json(),
                                "running" if started else "queued", started)
        message = self.requests.pending(run_id)  # accepted, not journalled yet
        if message is not None:
            delivery = (message.get("webhook") or {}).get("delivery_id")
            return _pending_row(run_id, {"kind": "webhook", "delivery_id": delivery}, "queued",
                                None)
        try:
            if pipeline in self.flow_keys():
                return {"flow": pipeline, **flow_history_row(self.store.read_flow(run_id, pipeline))}
            record = self.store.read_run(run_id, pipeline=pipeline)
        except RepositoryError:
            return None
        return {"pipeline": pipeline, **history_row(record)}


def _pending_row(run_id: str, trigger: dict, status: str, started_at: str | None) -> dict:
    """The `history_row` shape of a run not recorded yet."""
    pipeline = WEBHOOK_RUN_ID.fullmatch(run_id)["pipeline"]
    return {"pipeline": pipeline, "run_id": run_id, "status": status,
            "trigger": {"kind": trigger.get("kind", "webhook"),
                        "schedule_id": trigger.get("schedule_id"),
                        "parent_run_id": trigger.get("parent_run_id"),
                        "delivery_id": trigger.get("delivery_id")},
            "started_at": started_at, "finished_at": None, "duration_s": None, "attempts": 0,
            "exit_code": None, "error": None, "downstream": []}
