"""The daemon's sign of life, for `fastflow status` and the status site.

Every HEARTBEAT_INTERVAL the daemon's state goes to `<state_dir>/status.json` (read on the
server) and to `state/daemon.json` on the results branch (committed with the next run's record).
Every BRANCH_HEARTBEAT_INTERVAL the overview page is re-rendered and committed on its own, since
a static page cannot notice a dead daemon by itself. Each copy declares the interval it is
written at (`heartbeat_interval_s`), so readers judge staleness by the copy they read. A clean
stop writes a last one with `stopped_at`, so readers say "stopped", not "stale".
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Callable

from fastflow.daemon.timers import Every
from fastflow.defaults import (
    BRANCH_HEARTBEAT_INTERVAL,
    HEARTBEAT_INTERVAL,
    STATE_STATUS,
)
from fastflow.files import write_atomic
from fastflow.results.store import ResultsStore


class Heartbeat:
    """Writes the heartbeat; `refresh_site` commits a fresh overview page (and flushes)."""

    def __init__(self, state_dir: Path, store: ResultsStore, refresh_site: Callable[[], None]) -> None:
        self.path = state_dir / STATE_STATUS
        self.store = store
        self.refresh_site = refresh_site
        self.every = Every(HEARTBEAT_INTERVAL)
        self._branch = Every(BRANCH_HEARTBEAT_INTERVAL)
        self.last_at: datetime | None = None
        self.stopped_at: datetime | None = None

    def beat(self, now: datetime, status: dict, *, stopped: bool = False,
             local_only: bool = False) -> None:
        """Write `status` as the heartbeat of `now`; `stopped`: the last one, on a clean stop;
        `local_only`: status.json only (a standby daemon publishes nothing on the branch)."""
        data = dict(status)
        if stopped:
            self.stopped_at = now
            data["stopped_at"] = now.isoformat()
        self.last_at = now
        self.every.done(now)
        write_atomic(self.path, json.dumps({**data, "heartbeat_interval_s": HEARTBEAT_INTERVAL},
                                           indent=2, default=str))
        if local_only:
            return
        self.store.write_state("daemon", {**data, "heartbeat_interval_s": BRANCH_HEARTBEAT_INTERVAL})
        if self._branch.due(now):
            self.refresh_site()
            self._branch.done(now)
