"""Time values of the schedule files: IANA zones, durations ("15m", "1h30m") and instants
(ISO 8601 dates and date-times, naive ones read in a zone). Each checker raises `Invalid` with a
one-line message saying what to write instead."""
from __future__ import annotations

import functools
import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from fastflow.errors import Invalid
from fastflow.humanize import did_you_mean, show

UTC = timezone.utc
HOST_ZONE_FILES = ("localtime", "posixrules")  # files of the zoneinfo folder, not IANA names
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_FIX = 'use seconds or a number with a unit s, m, h, d or w, such as "30s", "15m" or "6h"'
# Bounds far below where datetime overflows (such values used to validate, then crash the
# planner or the site): durations up to 100 years, instants in these years once in UTC.
MAX_SECONDS = 3_155_760_000  # 100 years (36525 days)
YEARS = (1970, 9999)
DATETIME_FIX = "use ISO 8601 such as 2026-12-01T12:00:00Z, 2026-12-01T12:00 (in the schedule's zone) or 2026-12-01"


@functools.lru_cache(maxsize=None)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name (cached: zones are looked up on every slot)."""
    return ZoneInfo(name)


# --- value checkers (raise Invalid with a one-line message) ---------------------------------


def parse_duration(value: Any) -> int:
    """Whole seconds for "30s", "15m", "6h", "1d", "1w", "1h30m" or a plain number of seconds."""
    if isinstance(value, bool):
        raise Invalid(f"{show(value)} is not a duration; {DURATION_FIX}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        raw = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", raw):
            seconds = float(raw)
        elif re.fullmatch(f"(?:{_DURATION_PART.pattern})+", raw):
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(raw))
        else:
            raise Invalid(f"{show(value)} is not a duration; {DURATION_FIX}")
    else:
        raise Invalid(f"{show(value)} is not a duration; {DURATION_FIX}")
    if seconds > MAX_SECONDS:
        raise Invalid(f'{show(value)} is above the maximum of "36525d" (100 years); {DURATION_FIX}')
    if not seconds > 0 or seconds != int(seconds):
        raise Invalid(f"{show(value)} is not a whole number of seconds > 0; {DURATION_FIX}")
    return int(seconds)


def format_duration(seconds: int | float) -> str:
    """The shortest exact spelling of a duration ("15m", "1h30m", "45s")."""
    rest, parts = int(seconds), []
    for unit in ("d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def check_zone(value: Any) -> str:
    """An IANA time zone name that zoneinfo knows; raises `Invalid` with a did-you-mean."""
    if not isinstance(value, str):
        raise Invalid(f'{show(value)} is not a time zone; use an IANA name such as "Europe/Berlin"')
    if value.startswith("/") or value in HOST_ZONE_FILES:
        raise Invalid(_zone_path_message(value))
    try:
        zone(value)
    except (ZoneInfoNotFoundError, ValueError):
        hint = did_you_mean(value, available_timezones() - set(HOST_ZONE_FILES))
        raise Invalid(
            f'{show(value)} is not a known IANA time zone; use a name such as '
            f'"Europe/Berlin", "America/New_York" or "UTC"{hint}'
        ) from None
    return value


def _zone_path_message(value: str) -> str:
    # /etc/localtime names the host's zone, which differs between machines (and zoneinfo's
    # folder holds a "localtime" file too): the schedule must say which zone it means.
    name = value.partition("/zoneinfo/")[2]
    hint = f'; did you mean "{name}"?' if name and name in available_timezones() else ""
    return (f'{show(value)} is a file of this machine, not a time zone name; use an IANA name such '
            f'as "Europe/Berlin" (`timedatectl` shows the machine\'s){hint}')


def parse_instant(value: Any, tz: ZoneInfo, *, end_of_day: bool = False) -> datetime:
    """An aware datetime from YAML (datetime, date or ISO string); naive values are in `tz`.

    A bare date means its midnight, or with `end_of_day` the last microsecond of that day, so
    `end: 2026-12-31` includes the whole of 31 December.
    """
    written = value
    if isinstance(value, str):
        raw = value.strip()
        try:
            value = date.fromisoformat(raw) if len(raw) == 10 else datetime.fromisoformat(
                raw[:-1] + "+00:00" if raw[-1:] in "Zz" else raw)
        except ValueError:
            raise Invalid(f"{show(value)} is not a date or date-time; {DATETIME_FIX}") from None
    try:
        if isinstance(value, datetime):
            moment = (value if value.tzinfo is not None else value.replace(tzinfo=tz)).astimezone(UTC)
        elif isinstance(value, date):
            day = value + timedelta(days=1) if end_of_day else value
            midnight = datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)
            moment = midnight - timedelta(microseconds=1) if end_of_day else midnight
        else:
            raise Invalid(f"{show(value)} is not a date or date-time; {DATETIME_FIX}")
    except OverflowError:
        moment = None
    return in_years(written, moment)


def in_years(value: Any, moment: datetime | None) -> datetime:
    """`moment` when it falls in the years of `YEARS` once in UTC; else `Invalid` naming `value`.

    Near year 1 or 9999 a zone's offset leaves datetime's range (9999-12-31T23:59 west of UTC
    is in the year 10000: None here) and every later step (planning, pages) would crash on it.
    """
    try:
        year = None if moment is None else moment.astimezone(UTC).year
    except OverflowError:
        year = None
    if year is None or not YEARS[0] <= year <= YEARS[1]:
        raise Invalid(f"{show(value)} is outside the years {YEARS[0]} to {YEARS[1]} (in UTC); "
                      f"{DATETIME_FIX}")
    return moment
