"""Words for people: sizes ("5.0 MiB"), times ("5 min ago", "in 3 h"), values in messages and
did-you-mean hints. Pure functions, the one home of every formatter a person reads; spellings
that must parse back (config sizes, durations) live with their parsers.
"""
from __future__ import annotations

import difflib
import json
from datetime import datetime
from typing import Any, Iterable
from zoneinfo import ZoneInfo


def show(value: Any) -> str:
    """A value as it would be written in JSON, cut short when long."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """ '; did you mean "x"?' for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def format_size(n: int) -> str:
    """A byte count for people: `512 B`, `64.0 KiB`, `5.0 MiB`."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_time(moment: datetime | None, zone: str = "UTC", *, seconds: bool = True) -> str:
    """`moment` in `zone` as `2026-11-22 14:30:05 CET`; an empty string for None."""
    if moment is None:
        return ""
    local = moment.astimezone(ZoneInfo(zone))
    pattern = "%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z"
    return local.strftime(pattern)


def format_ago(moment: datetime | None, now: datetime) -> str:
    """How long before `now` `moment` was: `just now`, `5 min ago`, `3 h ago`, `2 days ago`."""
    if moment is None:
        return ""
    seconds = (now - moment).total_seconds()
    if seconds < 0:
        return "in the future"
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    return "1 day ago" if days == 1 else f"{days} days ago"


def format_until(moment: datetime, now: datetime) -> str:
    """How long after `now` `moment` is: `in 5 min`, `in 3 h`, `in 2 days`, `due now`."""
    seconds = (moment - now).total_seconds()
    if seconds < 60:
        return "due now"
    if seconds < 3600:
        return f"in {int(seconds // 60)} min"
    if seconds < 86400:
        return f"in {int(seconds // 3600)} h"
    days = int(seconds // 86400)
    return "in 1 day" if days == 1 else f"in {days} days"
