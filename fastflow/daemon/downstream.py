"""The runs a finished run fires: its `downstream` (route and `downstream_triggers`), decided
before its record and started after it.

`decide` runs before the record is stored: each child is journalled, held (`hold=True`: not
queued until its parent's record is stored), or skipped, and the record says which: `run_id` of
the child, or `skipped` with the reason (`requests.start_refusal`: a disabled pipeline or run
configuration, one no longer active). Idempotent: decided entries stay, and a child journalled
before a crash (found by its parent run id) is not journalled twice. A child that is a flow
starts its flow run at once, its id derived from the parent's (`downstream_flow_run_id`), so
deciding it twice starts it once. `release` queues the held children once the record is stored.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable, Mapping

from fastflow.daemon.requests import start_refusal
from fastflow.daemon.runs import RunLauncher
from fastflow.deploy.deployment import Deployment
from fastflow.errors import FastflowError
from fastflow.flow.record import downstream_flow_run_id
from fastflow.record import RunRecord, Trigger

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DownstreamHooks:
    """What deciding needs of the daemon: its deployment, whether a name is a flow, its
    `submit` (`Daemon.submit`), its clock and the lock its sync and timetable share."""

    deployment: Callable[[], Deployment | None]
    is_flow: Callable[[str], bool]
    submit: Callable[..., str]
    clock: Callable[[], datetime]
    lock: threading.RLock


class DownstreamRuns:
    """See the module doc."""

    def __init__(self, launcher: RunLauncher, hooks: DownstreamHooks) -> None:
        self.launcher = launcher
        self.hooks = hooks

    def decide(self, record: RunRecord) -> RunRecord:
        """`record` with each of its downstream runs decided (module doc)."""
        if all("run_id" in fired for fired in record.downstream):
            return record
        with self.hooks.lock:
            journalled = {(o.pipeline, o.run_config_id): o.run_id
                          for o in self.launcher.journal.orders()
                          if o.trigger.parent_run_id == record.run_id}
            decided = [fired if "run_id" in fired else self._child(record, fired, journalled)
                       for fired in record.downstream]
        return replace(record, downstream=tuple(decided))

    def release(self, record: RunRecord) -> None:
        """Queue the children `decide` journalled and held, now that `record` is stored."""
        for fired in record.downstream:
            if fired.get("run_id") and not fired.get("skipped"):
                self.launcher.release(fired["run_id"])

    def _trigger(self, parent: RunRecord) -> Trigger:
        return Trigger(kind="downstream", parent_run_id=parent.run_id)

    def _child(self, parent: RunRecord, fired: dict,
               journalled: Mapping[tuple[str, str | None], str]) -> dict:
        key = (fired["pipeline"], fired.get("run_config_id"))
        if self.hooks.is_flow(key[0]):
            return self._flow_child(parent, fired)
        run_id, skipped = journalled.get(key), None
        if run_id is None:
            skipped = start_refusal(self.hooks.deployment(), *key)
        if run_id is None and skipped is None:
            try:
                run_id = self.hooks.submit(key[0], self._trigger(parent), now=self.hooks.clock(),
                                           run_config_id=key[1], hold=True)
            except (FastflowError, OSError) as exc:
                skipped = f"not queued: {exc}"
        if skipped is not None:
            logger.warning("downstream %s of %s skipped: %s", key[0], parent.run_id, skipped)
        return {**fired, "run_id": run_id, "skipped": skipped}

    def _flow_child(self, parent: RunRecord, fired: dict) -> dict:
        flow_run_id, skipped = downstream_flow_run_id(fired["pipeline"], parent.run_id), None
        try:
            self.hooks.submit(fired["pipeline"], self._trigger(parent), now=self.hooks.clock(),
                              run_id=flow_run_id, params={})
        except (FastflowError, OSError) as exc:
            skipped = f"not started: {exc}"
            logger.warning("downstream flow %s of %s skipped: %s", fired["pipeline"],
                           parent.run_id, skipped)
        return {**fired, "run_id": None if skipped else flow_run_id, "skipped": skipped}
