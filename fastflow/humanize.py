"""Words for people: sizes ("512 MiB"), durations ("4m05s"), times ("5 min ago", "in 3 h"), values in messages and
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


# C0 controls but tab, DEL and C1 controls: what a terminal obeys (ESC[2J clears it, OSC sets
# its title, BEL rings) and what HTML must not hold. `\r` as the run log writes it.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))
             if code != 0x09}
_CONTROLS.update({0x0A: "\\n", 0x0D: "\\r"})
_KEEP_NEWLINE = {code: shown for code, shown in _CONTROLS.items() if code != 0x0A}


def visible_controls(text: str, *, lines: bool = True) -> str:
    """`text` with every control character but tab (and newline, when `lines`) shown as its
    escape (`\\x1b`, `\\x07`, `\\x00`, `\\r`), for a terminal or a page: output a pipeline
    wrote must never drive the reader's terminal. The one home of this neutralising; what is
    stored (the run log) keeps the bytes."""
    return text.translate(_KEEP_NEWLINE if lines else _CONTROLS)


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to `word` (a likely misspelling of it), or None when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """ '; did you mean "x"?' for the closest choice, or "" when none is close."""
    close = closest(word, choices)
    return f'; did you mean "{close}"?' if close else ""


def format_bytes(value: float | None) -> str:
    """A byte count, binary units, one decimal when it matters: `512 B`, `1.5 KiB`, `512 MiB`,
    `1.5 GiB`; `-` for None (not measured)."""
    if value is None:
        return "-"
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= size:
            return f"{value / size:.1f} {unit}".replace(".0 ", " ")
    return f"{value:.0f} B"


def format_cores(value: float) -> str:
    """CPU in cores: `0.25 cores`, `1 core`, `2 cores`."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{text} core" if text == "1" else f"{text} cores"


def without_surrogates(text: str) -> str:
    """`text` with each lone surrogate written as an escape: `\\xff` for a byte that is not
    UTF-8 (how Python reads such a file name), `\\ud800` for any other. The one spelling of a
    name that is not UTF-8 wherever it is shown or stored (JSON, git, pages): a lone surrogate
    cannot be encoded, so it would stop the write. Other text is returned unchanged."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join(_surrogate_escape(c) for c in text)


def _surrogate_escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if 0xD800 <= code <= 0xDFFF else char


def format_seconds(value: float) -> str:
    """A duration for a chart axis, a tooltip or a page: `850 ms`, `12.3 s`, `4m05s`, `1h02m`."""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s".replace(".0 s", " s")
    seconds = int(round(value))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_elapsed(seconds: float | None) -> str:
    """A run's duration in a terminal table, to the second: `12.5s`, `4m05s`, `1h02m03s`;
    `-` for None."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_roughly(seconds: float) -> str:
    """A duration to its two largest units, for reasons in messages: `1d2h`, `5m30s`, `0s`."""
    rest, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size or (unit == "s" and not parts):
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts[:2])


def format_time(moment: datetime | None, zone: str = "UTC", *, seconds: bool = True) -> str:
    """`moment` in `zone` as `2026-11-22 14:30:05 CET`; an empty string for None."""
    if moment is None:
        return ""
    local = moment.astimezone(ZoneInfo(zone))
    pattern = "%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z"
    return local.strftime(pattern)


def _span(seconds: float) -> str:
    """A span of at least a minute in its largest unit: `5 min`, `3 h`, `1 day`, `2 days`."""
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h"
    days = int(seconds // 86400)
    return "1 day" if days == 1 else f"{days} days"


def format_ago(moment: datetime | None, now: datetime) -> str:
    """How long before `now` `moment` was: `just now`, `5 min ago`, `3 h ago`, `2 days ago`."""
    if moment is None:
        return ""
    seconds = (now - moment).total_seconds()
    if seconds < 0:
        return "in the future"
    return "just now" if seconds < 60 else f"{_span(seconds)} ago"


def format_until(moment: datetime, now: datetime) -> str:
    """How long after `now` `moment` is: `in 5 min`, `in 3 h`, `in 2 days`, `due now`."""
    seconds = (moment - now).total_seconds()
    return "due now" if seconds < 60 else f"in {_span(seconds)}"
