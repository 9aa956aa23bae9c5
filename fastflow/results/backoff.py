"""When to try again to push the results branch after a push that did not land.

A push refused by the remote's policy (a pre-receive hook, a protected ref) or one that cannot
reach the remote is not retried at every commit: the store waits `PUSH_RETRY_INITIAL` seconds,
then twice as long after each further failure, up to `PUSH_RETRY_MAX`; the daemon's tick pushes
again when `retry_at` has come. One warning per streak of failures (and when its reason
changes); the push that lands at last says how many attempts it took. The commits wait on the
local branch meanwhile: nothing is lost.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from fastflow.defaults import PUSH_RETRY_INITIAL, PUSH_RETRY_MAX


@dataclass
class PushBackoff:
    """The state of one store's failed pushes (none: `retry_at` is None)."""

    failures: int = 0
    retry_at: datetime | None = None
    reason: str | None = None  # the `PushResult` value of the current streak

    def due(self, now: datetime) -> bool:
        """Whether a push may be tried at `now` (no failure pending, or its wait is over)."""
        return self.retry_at is None or now >= self.retry_at

    def failed(self, now: datetime, reason: str) -> bool:
        """Count a failed push at `now`; True when it is news (the first of a streak, or a
        new reason): the caller warns then, and only then."""
        news = self.reason != reason
        self.failures += 1
        self.reason = reason
        self.retry_at = now + timedelta(seconds=self.delay_s)
        return news

    @property
    def delay_s(self) -> float:
        """The wait after the latest failure: doubling from PUSH_RETRY_INITIAL, capped."""
        return min(PUSH_RETRY_INITIAL * 2 ** max(self.failures - 1, 0), PUSH_RETRY_MAX)

    def succeeded(self) -> int:
        """Forget the streak after a push landed; returns how many pushes had failed."""
        failures, self.failures, self.retry_at, self.reason = self.failures, 0, None, None
        return failures
