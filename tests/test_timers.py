"""fastflow.daemon.timers: the loop's chores are timed by the `now` they are given."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fastflow.daemon.timers import Alarm, Every, earliest

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)


def test_every_is_due_first_then_once_per_period():
    poll = Every(60)
    assert poll.due(T0)
    poll.done(T0)
    assert not poll.due(T0 + timedelta(seconds=59))
    assert poll.due(T0 + timedelta(seconds=60))
    assert poll.next_at == T0 + timedelta(seconds=60)


def test_alarm_rings_at_its_time_or_at_once():
    slots = Alarm()
    assert slots.due(T0)  # no time known yet: every tick looks
    slots.set(T0 + timedelta(minutes=5))
    assert not slots.due(T0)
    slots.ring()
    assert slots.due(T0)
    slots.set(T0 + timedelta(minutes=5))
    assert not slots.due(T0) and slots.due(T0 + timedelta(minutes=5))


def test_earliest_ignores_unknown_moments():
    assert earliest(None, T0 + timedelta(seconds=1), T0) == T0
