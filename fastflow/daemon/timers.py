"""The loop's clocks: when each chore of `tick(now)` is next due, given the `now` it is passed.

`Every` is a periodic chore (poll, heartbeat, retention): due at the first tick, then once per
period after it last ran. `Alarm` is a wake-up someone else sets (the next schedule slot): due
at its time, at once when rung (a sync re-planned), and on every tick while no time is known.
Neither reads a clock, so a test drives them with any `now`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass
class Every:
    """A chore due every `seconds`; `next_at` None means "not run yet": due now."""

    seconds: float
    next_at: datetime | None = None

    def due(self, now: datetime) -> bool:
        return self.next_at is None or now >= self.next_at

    def done(self, now: datetime) -> None:
        """The chore ran at `now`: next due one period later."""
        self.next_at = now + timedelta(seconds=self.seconds)


@dataclass
class Alarm:
    """A wake-up at `at` (None: unknown, so every tick checks), or at once after `ring()`."""

    at: datetime | None = None
    rung: bool = False

    def ring(self) -> None:
        self.rung = True

    def due(self, now: datetime) -> bool:
        return self.rung or self.at is None or now >= self.at

    def set(self, at: datetime | None) -> None:
        """The next wake-up (None: none known); clears a ring."""
        self.at, self.rung = at, False


def earliest(*moments: datetime | None) -> datetime:
    """The earliest of the known `moments` (at least one must be known)."""
    return min(m for m in moments if m is not None)
