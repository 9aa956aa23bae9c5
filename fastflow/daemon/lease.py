"""The lease: of all the daemons following one repository, exactly one executes work.

Two daemons may follow the same repository with two state dirs (a move to a new server, a
mistake). The one that holds the lease works; every other one stands by: it executes nothing,
fires no slot, publishes nothing, and only checks the lease, until the holder stops (a clean
stop releases the lease at once) or dies (its lease expires).

The lease is the ref `refs/fastflow/lease` of the followed repository (for a URL: of the
remote). It points to a parentless commit whose `lease.json` says who holds it (host, pid,
state dir, a token unique to the process) and until when (`renewed_at`, `expires_at`,
`timeout_s`). It is only ever written by compare-and-swap from the value just read
(`repo.update_ref`, or `repo.push_ref_if` for a remote), so two daemons racing for a free lease
cannot both win. The holder renews it every third of the timeout; a standby checks as often
and at the moment the lease it saw expires.

`decide` is the whole policy and is pure: the lease as read, who we are and `now` in, a
verdict out. `Lease` adds the git reads and writes. Expiry is judged with the `now` the loop
passes, against the `expires_at` the holder wrote: the machines' clocks must agree to well
within the timeout (NTP does).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from fastflow import repo as git
from fastflow.daemon.timers import Every
from fastflow.defaults import DEFAULT_AUTHOR_EMAIL, DEFAULT_AUTHOR_NAME
from fastflow.errors import FastflowError, RepositoryError

logger = logging.getLogger(__name__)

LEASE_REF = "refs/fastflow/lease"
LEASE_FILE = "lease.json"

TAKE, RENEW, WAIT = "take", "renew", "wait"


@dataclass(frozen=True)
class Holder:
    """Who holds (or wants) the lease: a process of a host, with its state dir; `token` tells
    two processes of one state dir apart."""

    host: str
    pid: int
    state_dir: str
    token: str

    @classmethod
    def this_process(cls, state_dir: Path) -> Holder:
        return cls(socket.gethostname(), os.getpid(), str(Path(state_dir).resolve()),
                   secrets.token_hex(8))

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (state dir {self.state_dir})"


@dataclass(frozen=True)
class LeaseRecord:
    """`lease.json`: the holder, since when, last renewed, until when; `released_at` once a
    clean stop gave it up."""

    holder: Holder
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    timeout_s: float
    released_at: datetime | None = None

    def to_json(self) -> dict:
        return {"schema": 1, "holder": vars(self.holder),
                "acquired_at": self.acquired_at.isoformat(),
                "renewed_at": self.renewed_at.isoformat(),
                "expires_at": self.expires_at.isoformat(), "timeout_s": self.timeout_s,
                "released_at": self.released_at.isoformat() if self.released_at else None}

    @classmethod
    def from_json(cls, data: dict) -> LeaseRecord:
        """Raises ValueError (or KeyError, TypeError) on a malformed record."""
        h = data["holder"]
        released = data.get("released_at")
        return cls(Holder(str(h["host"]), int(h["pid"]), str(h["state_dir"]), str(h["token"])),
                   datetime.fromisoformat(data["acquired_at"]),
                   datetime.fromisoformat(data["renewed_at"]),
                   datetime.fromisoformat(data["expires_at"]), float(data["timeout_s"]),
                   datetime.fromisoformat(released) if released else None)


@dataclass(frozen=True)
class Verdict:
    """What to do about the lease: `take` it, `renew` ours, or `wait` (someone else holds it);
    `reason` says why, in words for the log."""

    action: str
    reason: str


def decide(current: LeaseRecord | None, me: Holder, now: datetime) -> Verdict:
    """The lease policy (pure): what `me` does at `now` about the lease `current` as read."""
    if current is None:
        return Verdict(TAKE, "no daemon holds the lease")
    holder = current.holder
    if holder.token == me.token:
        return Verdict(RENEW, "this daemon holds the lease")
    if current.released_at is not None:
        return Verdict(TAKE, f"{holder.describe()} released the lease at "
                             f"{current.released_at.isoformat()}")
    if holder.host == me.host and holder.state_dir == me.state_dir:
        # This process holds the state dir's lock, which the kernel releases only when its
        # holder dies: the lease's holder is an earlier process of this state dir, gone.
        return Verdict(TAKE, f"the lease was held by pid {holder.pid}, an earlier daemon of "
                             "this state dir, which is gone")
    if now >= current.expires_at:
        return Verdict(TAKE, f"the lease of {holder.describe()} expired at "
                             f"{current.expires_at.isoformat()} (not renewed for "
                             f"{(now - current.renewed_at).total_seconds():.0f}s)")
    return Verdict(WAIT, f"the lease is held by {holder.describe()} until "
                         f"{current.expires_at.isoformat()}")


class Lease:
    """The lease of one daemon on `repository` (a remote's mirror when `remote` is its URL)."""

    def __init__(self, repository: git.GitRepo, *, remote: str | None,
                 credentials: git.Credentials | None, me: Holder, timeout: float) -> None:
        self.repository, self.remote, self.credentials = repository, remote, credentials
        self.me, self.timeout = me, float(timeout)
        self.every = Every(self.timeout / 3)
        self.held = False
        self.lost = False  # we held it and someone else has it now
        self.current: LeaseRecord | None = None  # as last read or written
        self.reason = "not checked yet"

    # --- when --------------------------------------------------------------------------------

    def due(self, now: datetime) -> bool:
        """A check is due: every third of the timeout, and when the lease we wait for expires."""
        return self.every.due(now) or (not self.held and self.current is not None
                                       and now >= self.current.expires_at)

    @property
    def next_check_at(self) -> datetime | None:
        at = self.every.next_at
        if not self.held and self.current is not None and at is not None:
            at = min(at, self.current.expires_at)
        return at

    # --- check, renew, release ----------------------------------------------------------------

    def check(self, now: datetime) -> bool:
        """Read the lease; take or renew it when `decide` says so. Returns whether this daemon
        holds it now (see the module doc)."""
        self.every.done(now)
        try:
            sha, current = self._read()
        except FastflowError as exc:
            return self._unreachable(now, exc)
        verdict = decide(current, self.me, now)
        self.reason = verdict.reason
        if verdict.action == WAIT:
            return self._standing_by(current)
        acquired = current.acquired_at if verdict.action == RENEW else now
        mine = LeaseRecord(self.me, acquired, now, now + timedelta(seconds=self.timeout),
                           self.timeout)
        try:
            self._write(mine, sha, "renewed" if verdict.action == RENEW else "taken")
        except git.RefConflict:
            self.reason = "another daemon wrote the lease at the same moment"
            return self._standing_by(None)
        except FastflowError as exc:
            return self._unreachable(now, exc)
        if verdict.action == TAKE:
            logger.info("lease taken: %s", verdict.reason)
        self.held, self.current = True, mine
        return True

    def release(self, now: datetime) -> None:
        """Give the lease up at once (a clean stop), so a standby takes over without waiting
        for it to expire. Does nothing when this daemon does not hold it."""
        if not self.held or self.current is None:
            return
        try:
            sha, current = self._read()
            if current is None or current.holder.token != self.me.token:
                return
            self._write(replace(current, released_at=now), sha, "released")
            logger.info("lease released")
        except FastflowError as exc:  # it expires by itself
            logger.warning("could not release the lease (it expires at %s): %s",
                           self.current.expires_at.isoformat(), exc)
        self.held = False

    def _standing_by(self, current: LeaseRecord | None) -> bool:
        if self.held:
            self.lost = True
            logger.error("this daemon lost the lease: %s", self.reason)
        self.held = False
        self.current = current
        return False

    def _unreachable(self, now: datetime, exc: Exception) -> bool:
        """The lease cannot be read or written: a holder keeps working until its own lease
        expires (nobody can take it before), then stops, as a standby does."""
        if self.held and self.current is not None and now < self.current.expires_at:
            logger.warning("cannot renew the lease (it expires at %s): %s",
                           self.current.expires_at.isoformat(), exc)
            return True
        self.reason = f"the lease cannot be checked: {exc}"
        logger.warning("%s", self.reason)
        return self._standing_by(self.current)

    # --- git ------------------------------------------------------------------------------------

    def _read(self) -> tuple[str | None, LeaseRecord | None]:
        if self.remote:
            git.fetch_ref(self.repository, self.remote, LEASE_REF, self.credentials)
        sha, data = git.ref_file(self.repository, LEASE_REF, LEASE_FILE)
        if sha is None:
            return None, None
        try:
            return sha, LeaseRecord.from_json(json.loads(data or b""))
        except (ValueError, KeyError, TypeError) as exc:
            # Nobody's lease: whoever writes a valid one (by compare-and-swap) holds it.
            logger.warning("%s holds no readable %s (%s); it is taken as free", LEASE_REF,
                           LEASE_FILE, exc)
            return sha, None

    def _write(self, record: LeaseRecord, expected: str | None, what: str) -> None:
        """Point the lease ref at `record` if it is still at `expected`; `RefConflict` if not."""
        data = json.dumps(record.to_json(), indent=2).encode()
        message = f"lease {what} by {record.holder.describe()}\n"
        sha = git.commit_file(self.repository, LEASE_FILE, data, message,
                              (DEFAULT_AUTHOR_NAME, DEFAULT_AUTHOR_EMAIL), record.renewed_at)
        if not self.remote:
            git.update_ref(self.repository, LEASE_REF, sha, expected, message.strip())
            return
        local, _ = git.ref_file(self.repository, LEASE_REF, LEASE_FILE)
        git.update_ref(self.repository, LEASE_REF, sha, local, message.strip())
        result, detail = git.push_ref_if(self.repository, self.remote, LEASE_REF, expected,
                                         self.credentials)
        if result is git.PushResult.REJECTED:
            raise git.RefConflict(f"{self.remote}: {LEASE_REF} moved: {detail}")
        if result is not git.PushResult.PUSHED:
            raise RepositoryError(f"{self.remote}: cannot push {LEASE_REF} ({detail})")

    # --- status ----------------------------------------------------------------------------------

    def status(self) -> dict:
        """The lease as `fastflow status` shows it (in status.json and state/daemon.json)."""
        current = self.current
        return {
            "role": "holder" if self.held else "standby", "ref": LEASE_REF,
            "timeout_s": self.timeout, "reason": self.reason,
            "holder": vars(current.holder) if current else None,
            "renewed_at": current.renewed_at.isoformat() if current else None,
            "expires_at": current.expires_at.isoformat() if current else None,
        }
