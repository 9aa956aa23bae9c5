"""Schedules in words: "every weekday at 03:00", "every 15 minutes", "once at ...".

Pure functions. `cron_words` covers the common shapes of a 5-field cron expression and falls back
to the expression itself (`cron 7,19 1-5 * * *`) rather than guessing.
"""
from __future__ import annotations

from typing import Sequence

from fastflow.humanize import format_time
from fastflow.model import Pipeline
from fastflow.schedule.cron import CRON_MACROS
from fastflow.schedule.spec import DEFAULT_TIMEZONE, Schedule, ScheduleKind

_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_DAY_NAMES = {name[:3].lower(): i for i, name in enumerate(_DAYS)}
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_MONTH_NAMES = {name[:3].lower(): i + 1 for i, name in enumerate(_MONTHS)}


def _int(field: str, names: dict[str, int] | None = None) -> int | None:
    if field.isdigit():
        return int(field)
    if names and field.lower() in names:
        return names[field.lower()]
    return None


def _weekdays(field: str) -> str | None:
    if field in ("1-5", "mon-fri", "MON-FRI"):
        return "every weekday (Monday to Friday)"
    if field in ("0,6", "6,0", "sat,sun", "SAT,SUN"):
        return "every Saturday and Sunday"
    days = [_int(part, _DAY_NAMES) for part in field.split(",")]
    if any(d is None or d > 7 for d in days):
        return None
    names = [_DAYS[d % 7] for d in days]  # type: ignore[operator]
    return "every " + (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1])


def _at_times(minute: str, hour: str) -> str | None:
    m = _int(minute)
    if m is None or m > 59:
        return None
    hours = [_int(h) for h in hour.split(",")]
    if any(h is None or h > 23 for h in hours):
        return None
    times = [f"{h:02d}:{m:02d}" for h in hours]  # type: ignore[str-format]
    return "at " + (times[0] if len(times) == 1 else ", ".join(times[:-1]) + " and " + times[-1])


def _sub_daily(minute: str, hour: str) -> str | None:
    if minute == "*" and hour == "*":
        return "every minute"
    if minute.startswith("*/") and hour == "*" and minute[2:].isdigit():
        return f"every {int(minute[2:])} minutes"
    m = _int(minute)
    if m is not None and m < 60 and hour == "*":
        return "every hour" if m == 0 else f"every hour at {m} minutes past"
    if m is not None and m < 60 and hour.startswith("*/") and hour[2:].isdigit():
        return f"every {int(hour[2:])} hours at {m} minutes past" if m else \
            f"every {int(hour[2:])} hours"
    return None


def cron_words(expression: str) -> str:
    """A cron expression in words, for the common shapes; otherwise `cron <expression>`."""
    text = CRON_MACROS.get(expression.strip().lower(), expression.strip())
    fields = text.split()
    fallback = f"cron {expression.strip()}"
    if len(fields) != 5:
        return fallback
    minute, hour, dom, month, dow = fields
    if dom == "*" and month == "*" and dow == "*":
        sub = _sub_daily(minute, hour)
        if sub:
            return sub
    at = _at_times(minute, hour)
    if at is None:
        return fallback
    if dom == "*" and month == "*":
        days = "every day" if dow == "*" else _weekdays(dow)
        return f"{days} {at}" if days else fallback
    if dow != "*":
        return fallback
    day = _int(dom)
    if day is None or not 1 <= day <= 31:
        return fallback
    if month == "*":
        return f"on day {day} of every month {at}"
    mon = _int(month, _MONTH_NAMES)
    if mon is None or not 1 <= mon <= 12:
        return fallback
    return f"every year on {_MONTHS[mon - 1]} {day} {at}"


def interval_words(seconds: float) -> str:
    """An interval in words: `every 15 minutes`, `every 2 hours`, `every 90 seconds`."""
    whole = int(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if whole >= size and whole % size == 0:
            count = whole // size
            return f"every {unit}" if count == 1 else f"every {count} {unit}s"
    return "every second" if whole == 1 else f"every {whole} seconds"


def schedule_words(schedule: Schedule) -> str:
    """One validated schedule in words, with its time zone when the time of day matters."""
    if not schedule.enabled:
        prefix = "(disabled) "
    else:
        prefix = ""
    if schedule.kind is ScheduleKind.CRON and schedule.cron is not None:
        words = cron_words(schedule.cron.text)
        return f"{prefix}{words} ({schedule.timezone})"
    if schedule.kind is ScheduleKind.INTERVAL and schedule.interval:
        return prefix + interval_words(schedule.interval)
    if schedule.at is not None:
        return f"{prefix}once at {format_time(schedule.at, schedule.timezone)}"
    return prefix + schedule.describe()


def pipeline_schedule_words(pipeline: Pipeline | None, schedules: Sequence[Schedule]) -> list[str]:
    """Every schedule of a pipeline in words: the validated ones, else pipeline.json's fields."""
    if schedules:
        return [schedule_words(s) for s in sorted(schedules, key=lambda s: s.id)]
    if pipeline is None:
        return []
    out = []
    spec = pipeline.schedule
    if spec.cron:
        out.append(f"{cron_words(spec.cron)} ({DEFAULT_TIMEZONE})")
    if spec.interval_seconds:
        out.append(interval_words(spec.interval_seconds))
    if spec.run_once_at:
        out.append(f"once at {format_time(spec.run_once_at, DEFAULT_TIMEZONE)}")
    for rc in pipeline.run_configs:
        when = (f"{cron_words(rc.cron)} ({DEFAULT_TIMEZONE})" if rc.cron
                else interval_words(rc.interval_seconds) if rc.interval_seconds else None)
        if when:
            out.append(f"{when}, run configuration {rc.id}" + ("" if rc.enabled else " (disabled)"))
    return out
