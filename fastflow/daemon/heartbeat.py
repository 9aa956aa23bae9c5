"""The daemon's sign of life, for `fastflow status` and the status site.

Every HEARTBEAT_INTERVAL the daemon's state goes to `<state_dir>/status.json` (read on the
server) and to `state/daemon.json` on the results branch (committed with the next run's record).
Every BRANCH_HEARTBEAT_INTERVAL the overview page is re-rendered and committed on its own, since
a static page cannot notice a dead daemon by itself. Each copy declares the interval it is
written at (`heartbeat_interval_s`), so readers judge staleness by the copy they read. A clean
stop writes a last one with `stopped_at`, so readers say "stopped", not "stale".

`StateDirSpace` is the daemon's other vital sign: whether the state dir has room (a full one
pauses intake until it has, see docs/serve.md).
"""
from __future__ import annotations

import errno
import json
import logging
import os
from datetime import datetime, timedelta
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

logger = logging.getLogger(__name__)


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


def last_heartbeat(store: ResultsStore, state_dir: Path) -> dict | None:
    """The newest heartbeat another daemon process left: the branch's `state/daemon.json` or
    the state dir's `status.json` (rewritten every minute: a shorter outage shows), not one
    this process wrote itself (a standby taking over)."""
    found = [store.read_state("daemon")]
    try:
        found.append(json.loads((state_dir / STATE_STATUS).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass  # none yet, or being replaced: the branch's copy will do
    beats = []
    for data in found:
        try:
            at = datetime.fromisoformat(data["heartbeat"])
        except (TypeError, KeyError, ValueError):
            continue
        if data.get("pid") != os.getpid() or data.get("stopped_at"):
            beats.append((at, data))
    return max(beats, key=lambda b: b[0])[1] if beats else None


FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_RETRY_INTERVAL = 5.0  # seconds between checks of a full state dir
FULL_RESUME_BYTES = 1024 * 1024  # free space a full state dir needs before intake resumes


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` says a disk (or a quota) is full."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


class StateDirSpace:
    """Whether the state dir has room; while it has none the daemon pauses intake.

    The daemon calls `hit` when a round failed on a full disk: it says so once (and not again
    until the state dir had room), and the daemon takes nothing new (the inbox, schedule slots
    and pushes wait: nothing is dropped, slots are caught up by their policy) until `has_room`
    (at least FULL_RESUME_BYTES free), checked every FULL_RETRY_INTERVAL. `cleared` after a round
    that succeeded says once that intake resumed.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.full_since: datetime | None = None

    @property
    def full(self) -> bool:
        return self.full_since is not None

    def hit(self, exc: OSError, now: datetime) -> datetime:
        """A round failed for want of space at `now`; returns when to check again."""
        if self.full_since is None:
            self.full_since = now
            logger.error("the state dir %s is full (%s): intake paused (pushes, schedule slots "
                         "and run requests wait), runs in flight go on and are recorded once "
                         "there is room; checking again every %g s. Free space on its disk",
                         self.state_dir, exc.strerror or exc, FULL_RETRY_INTERVAL)
        return now + timedelta(seconds=FULL_RETRY_INTERVAL)

    def has_room(self) -> bool:
        try:
            stat = os.statvfs(self.state_dir)
        except OSError:
            return False
        return stat.f_bavail * stat.f_frsize >= FULL_RESUME_BYTES

    def cleared(self, now: datetime) -> None:
        """A round succeeded: say once that intake resumed after a full state dir."""
        if self.full_since is not None:
            logger.warning("the state dir %s has room again: intake resumes (it was full for "
                           "%.0f s)", self.state_dir, (now - self.full_since).total_seconds())
            self.full_since = None
