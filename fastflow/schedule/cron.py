"""POSIX cron expressions, and how their wall-clock times become instants across DST.

`parse_cron` reads a 5-field expression (or an @macro) once into a `CronExpr`; croniter only
expands the fields (names, ranges, steps, 7 = Sunday), our own `next_after` walks wall-clock
minutes with bisect (a few microseconds per slot, ten times faster than croniter's iterator, and
free of its DST handling). `cron_instants` maps wall times to instants in a zone:

- a wall time in a spring-forward gap fires once, at the first instant after the gap;
- a wall time in a fall-back fold fires once, at its first occurrence, except that a cron whose
  hour field is `*` fires in both passes of the repeated hour, so it fires every real hour;
- instants come out strictly increasing, without duplicates.
"""
from __future__ import annotations

import bisect
import calendar
import functools
import heapq
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterator
from zoneinfo import ZoneInfo

from fastflow.errors import Invalid
from fastflow.humanize import show

UTC = timezone.utc
CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
CRON_EXAMPLE = 'use 5 fields (minute hour day-of-month month day-of-week) such as "0 3 * * 1-5"'
_NON_POSIX = re.compile(r"[LW#?H]", re.IGNORECASE)
_NAMES = re.compile(r"[a-z]{3}", re.IGNORECASE)


@dataclass(frozen=True)
class CronExpr:
    """A parsed 5-field POSIX cron expression; `next_after` walks naive wall-clock time.

    Day matching follows POSIX and Vixie cron: when both day-of-month and day-of-week are
    restricted (neither field starts with `*`) a day matching either one fires; otherwise both
    must match (and the `*` one always does).
    """

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    day_star: bool
    weekday_star: bool
    hour_star: bool  # hourly or finer: such a cron fires in both passes of a repeated DST hour
    day_list: tuple[int, ...] = ()  # `days`, sorted
    every_day: bool = False  # no day-of-month or day-of-week restriction

    def __hash__(self) -> int:
        # Equal expressions have equal text, and a str caches its hash: the slot memo
        # (`first_instant_after`) hashes an expression per due slot.
        return hash(self.text)

    def matches_day(self, day: date) -> bool:
        dom = day.day in self.days
        dow = day.isoweekday() % 7 in self.weekdays
        if self.day_star or self.weekday_star:
            return dom and dow
        return dom or dow

    def next_after(self, wall: datetime) -> datetime:
        """The first naive wall-clock minute strictly after `wall` that the expression matches."""
        start = wall.replace(second=0, microsecond=0) + timedelta(minutes=1)
        day, hour, minute = start.date(), start.hour, start.minute
        for _ in range(1000):
            found_day = self._next_day(day)
            if found_day != day:
                day, hour, minute = found_day, 0, 0
            found = self._time_from(hour, minute)
            if found is not None:
                return datetime.combine(day, time(*found))
            day, hour, minute = day + timedelta(days=1), 0, 0
        raise ValueError(f"cron {self.text!r} has no slot after {wall}")

    def _next_day(self, day: date) -> date:
        # Validation guarantees a matching day within 8 years (29 February); months jump whole.
        for _ in range(12 * 9):
            if day.month in self.months:
                found = self._day_in_month(day)
                if found is not None:
                    return found
            day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
        raise ValueError(f"cron {self.text!r} matches no day")

    def _day_in_month(self, day: date) -> date | None:
        if self.every_day:
            return day
        last = calendar.monthrange(day.year, day.month)[1]
        and_mode = self.day_star or self.weekday_star
        use_dom = not and_mode or len(self.weekdays) == 7
        use_dow = not and_mode or (len(self.days) == 31 and not use_dom)
        if and_mode and not use_dom and not use_dow:  # rare: "*/2 * 1" ANDs two restrictions
            return next((d for d in (day.replace(day=n) for n in range(day.day, last + 1))
                         if self.matches_day(d)), None)
        found = []
        if use_dom:
            i = bisect.bisect_left(self.day_list, day.day)
            if i < len(self.day_list) and self.day_list[i] <= last:
                found.append(day.replace(day=self.day_list[i]))
        if use_dow:
            today = day.isoweekday() % 7
            ahead = min((w - today) % 7 for w in self.weekdays)
            if day.day + ahead <= last:
                found.append(day + timedelta(days=ahead))
        return min(found) if found else None

    def _time_from(self, hour: int, minute: int) -> tuple[int, int] | None:
        i = bisect.bisect_left(self.hours, hour)
        if i < len(self.hours) and self.hours[i] == hour:
            j = bisect.bisect_left(self.minutes, minute)
            if j < len(self.minutes):
                return hour, self.minutes[j]
            i += 1
        if i < len(self.hours):
            return self.hours[i], self.minutes[0]
        return None




def is_valid_cron(expression: str) -> bool:
    """Whether croniter accepts `expression` (the check pipeline.json's cron fields use)."""
    from croniter import croniter  # see _parse_cron_text

    return bool(croniter.is_valid(expression))


def parse_cron(value: Any) -> CronExpr:
    """Parse a 5-field POSIX cron expression or @macro into a `CronExpr`; raises `Invalid`.

    One text gives one shared object, so the slot memo compares expressions by identity."""
    if not isinstance(value, str):
        raise Invalid(f"{show(value)} is not a cron expression; {CRON_EXAMPLE}")
    text = " ".join(value.split())
    known = _PARSED.get(text)
    if known is None:
        if len(_PARSED) >= 4096:  # expressions come from config: a few; never grow unbounded
            _PARSED.clear()
        known = _PARSED[text] = _parse_cron_text(text, value)
    return known


_PARSED: dict[str, CronExpr] = {}


def _parse_cron_text(text: str, value: str) -> CronExpr:
    # croniter (~12 ms to import) only when a cron is read: `fastflow run` of a pipeline
    # without one, and every command that reads no schedule, start without it.
    from croniter import croniter

    expanded = CRON_MACROS.get(text.lower(), text)
    if expanded.startswith("@"):
        raise Invalid(f"{show(value)} is not a cron macro; use one of {', '.join(CRON_MACROS)}")
    fields = expanded.split(" ")
    if len(fields) == 6:
        raise Invalid(
            f"{show(value)} has 6 fields; Fast-Flow crons have 5 and no seconds field: "
            f"remove the seconds, {CRON_EXAMPLE}"
        )
    if len(fields) != 5:
        raise Invalid(f"{show(value)} has {len(fields)} fields; {CRON_EXAMPLE}")
    marker = _NON_POSIX.search(_NAMES.sub("", expanded))
    if marker:
        raise Invalid(
            f'{show(value)} uses "{marker.group()}", an extension outside POSIX cron; use '
            "numbers, names, *, ranges (1-5), lists (1,3) and steps (*/15)"
        )
    try:
        sets, _ = croniter.expand(expanded)
    except Exception as exc:  # croniter raises several unrelated classes for bad fields
        raise Invalid(f"{show(value)} is not a valid cron expression ({exc}); {CRON_EXAMPLE}") from None
    full = [range(60), range(24), range(1, 32), range(1, 13), range(7)]
    values = [tuple(sorted(full[i] if s == ["*"] else {int(v) for v in s})) for i, s in enumerate(sets)]
    expr = CronExpr(
        text=text, minutes=values[0], hours=values[1], days=frozenset(values[2]),
        months=frozenset(values[3]), weekdays=frozenset(values[4]),
        day_star=fields[2].startswith("*"), weekday_star=fields[4].startswith("*"),
        hour_star=fields[1].startswith("*") and len(values[1]) == 24, day_list=values[2],
        every_day=len(values[2]) == 31 and len(values[4]) == 7,
    )
    _check_possible(expr, value)
    return expr


def _check_possible(expr: CronExpr, value: str) -> None:
    # Only a day-of-month restriction combined with a month can be impossible (e.g. 31 February);
    # when day-of-week is also restricted, POSIX ORs the two and some weekday always comes.
    if not expr.weekday_star and not expr.day_star:
        return
    for month in expr.months:
        longest = calendar.monthrange(2024, month)[1]  # 2024 is a leap year: 29 February counts
        if any(day <= longest for day in expr.days):
            return
    raise Invalid(
        f"{show(value)} never fires: none of its months has any of its days of the month; "
        "fix the day-of-month or month field"
    )




@dataclass(frozen=True)
class CronSlot:
    """One firing: the instant (UTC) and, when DST moved it, the nominal wall time it stands for."""

    at: datetime
    nominal: datetime | None = None  # naive local wall time; set only when moved by DST

    @property
    def moved_by_dst(self) -> bool:
        return self.nominal is not None


def resolve_wall(wall: datetime, tz: ZoneInfo) -> tuple[datetime, datetime | None, bool]:
    """(first instant, second instant or None, moved) for a naive wall time in `tz`.

    Normal times have one instant. In a fold the second instant is the repeat. In a gap there is
    no such instant: the first instant after the gap is returned with `moved` true.
    """
    steady = _steady_offset(tz, wall.date())
    if steady is not None:  # fast path: no transition near this day
        return (wall - steady).replace(tzinfo=UTC), None, False
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return first, None, False
    if first < second:  # fold: fold=0 takes the earlier (pre-transition) offset
        return first, second, False
    return _transition(second, first, tz), None, True


@functools.lru_cache(maxsize=1 << 16)
def _steady_offset(tz: ZoneInfo, day: date) -> timedelta | None:
    """The UTC offset of every wall time of `day` in `tz`, or None when a transition is near.

    Comparing the offsets at noon the day before and noon the day after is enough: zones change
    offset at most twice a year, never twice within two days.
    """
    before = datetime.combine(day - timedelta(days=1), time(12), tzinfo=tz).utcoffset()
    after = datetime.combine(day + timedelta(days=1), time(12), tzinfo=tz).utcoffset()
    return before if before == after else None


def _transition(low: datetime, high: datetime, tz: ZoneInfo) -> datetime:
    # In a gap, zoneinfo's fold=1 reading (low) is before the transition and fold=0 (high) after
    # it; bisect whole seconds for the first instant carrying the new offset.
    after_offset = high.astimezone(tz).utcoffset()
    lo, hi = int(low.timestamp()), int(high.timestamp())
    while lo < hi:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == after_offset:
            hi = mid
        else:
            lo = mid + 1
    return datetime.fromtimestamp(lo, UTC)


@functools.lru_cache(maxsize=1 << 14)
def first_instant_after(expr: CronExpr, tz: ZoneInfo, after: datetime) -> CronSlot:
    """The first firing of `expr` in `tz` strictly after the instant `after` (`cron_instants`).

    Memoized: schedules sharing an expression and a zone come due together (every `0 * * * *`
    at the hour), and each due slot asks for the slot after it; the first asks computes it, the
    rest find it. Keys are (expression, zone, instant), so a hit is the same answer.
    """
    return next(cron_instants(expr, tz, after))


def cron_instants(expr: CronExpr, tz: ZoneInfo, after: datetime) -> Iterator[CronSlot]:
    """Every firing of `expr` in `tz` strictly after the instant `after`, in increasing order.

    Instants can arrive out of wall-clock order around a fold (the repeat of 01:30 comes after
    the first 01:59), so candidates pass through a small heap and leave it only when no later
    wall time can produce an earlier instant. Equal instants are merged (a moved gap slot and a
    real slot at the gap's end fire once), keeping the unmoved one.
    """
    local = after.astimezone(tz)
    wall = local.replace(tzinfo=None)
    if _steady_offset(tz, wall.date()) is None and resolve_wall(wall, tz)[1] is not None:
        # `after` lies in a repeated hour: walls before it may still fire in the second pass.
        wall -= timedelta(hours=3)
    pending: list[tuple[datetime, bool, datetime]] = []
    last: datetime | None = None
    while True:
        wall = expr.next_after(wall)
        first, second, moved = resolve_wall(wall, tz)
        while pending and pending[0][0] < first:
            at, was_moved, nominal = heapq.heappop(pending)
            if at != last:
                last = at
                yield CronSlot(at, nominal if was_moved else None)
        if not pending and second is None and not moved:
            # The common case: nothing held back and a plain instant; no later wall time can
            # map before it, so it leaves at once (no look-ahead to the next slot).
            if first > after and first != last:
                last = first
                yield CronSlot(first)
            continue
        for instant in (first, second if expr.hour_star else None):
            if instant is not None and instant > after:
                heapq.heappush(pending, (instant, moved, wall))
