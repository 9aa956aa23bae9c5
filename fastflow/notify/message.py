"""Events in words: what one message says about one or more events (pure, no I/O).

A message names, for each event, the pipeline, its status, the run id, the commit, the
duration, the last lines of the run's log (masked as the stored log is) and a link to the run
page when config.yaml has `site_url`. Events grouped into one message are listed in the order
they happened.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Sequence

from fastflow.humanize import format_elapsed, without_surrogates

TEST = "test"  # the kind of `fastflow notify test`'s event (not a selectable event)
# How each event kind reads in a title ("etl: failed", "etl: recovered")
HEADLINES = {
    "failure": "failed", "every_failure": "failed", "after": "failed again",
    "recovery": "recovered", "missed": "missed a scheduled run", "stuck": "is stuck",
    "soft_limit": "went over a soft limit", "given_up": "given up (no more restarts)",
    "scheduler_stale": "the scheduler is stale", TEST: "test message",
}
# Which look the library gives a message (its "type"): the worst of its events wins
TYPES = {"recovery": "success", TEST: "info", "soft_limit": "warning", "stuck": "warning",
         "missed": "warning"}
MAX_LINE = 300  # characters of one log line in a message
TITLE_PREFIX = "Fast-Flow"


@dataclass(frozen=True)
class Event:
    """Something a target hears about: `kind` is a NotifyEvent value (or "test")."""

    kind: str
    at: datetime
    pipeline: str | None = None
    run_id: str | None = None
    status: str | None = None
    commit: str | None = None
    duration_s: float | None = None
    detail: str = ""  # e.g. "3 consecutive failures", "running for 2 h (median 4 min)"
    log_tail: tuple[str, ...] = ()
    run_url: str | None = None

    def to_json(self) -> dict:
        """What a delivery record keeps of the event (no log lines: the run's log is on the
        branch already)."""
        return {"kind": self.kind, "at": self.at.isoformat(), "pipeline": self.pipeline,
                "run_id": self.run_id, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    type: str = "failure"  # the library's notify type: info, success, warning, failure
    events: tuple[Event, ...] = field(default_factory=tuple)


def compose(events: Sequence[Event]) -> Message:
    """The one message for `events` (at least one), oldest first."""
    ordered = sorted(events, key=lambda e: e.at)
    if len(ordered) == 1:
        title = f"{TITLE_PREFIX}: {_headline(ordered[0])}"
    else:
        title = f"{TITLE_PREFIX}: {len(ordered)} events: " + "; ".join(
            _headline(e) for e in ordered)
    body = "\n\n".join(_section(e) for e in ordered)
    return Message(_clean(title), _clean(body), _type(ordered), tuple(ordered))


def _headline(event: Event) -> str:
    words = HEADLINES.get(event.kind, event.kind)
    return f"{event.pipeline}: {words}" if event.pipeline else words


def _section(event: Event) -> str:
    lines = [_headline(event) + (f" ({event.detail})" if event.detail else "")]
    facts = [f"status {event.status}" if event.status else "",
             f"run {event.run_id}" if event.run_id else "",
             f"commit {event.commit[:12]}" if event.commit else "",
             f"took {format_elapsed(event.duration_s)}" if event.duration_s is not None else ""]
    if any(facts):
        lines.append(", ".join(f for f in facts if f))
    if event.run_url:
        lines.append(event.run_url)
    lines.append(f"at {event.at.isoformat(timespec='seconds')}")
    if event.log_tail:
        lines.append("last lines of the log:")
        lines += ["    " + _short(line) for line in event.log_tail]
    return "\n".join(lines)


def _short(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[:MAX_LINE - 1] + "…"


def _type(events: Sequence[Event]) -> str:
    kinds = [TYPES.get(e.kind, "failure") for e in events]
    for kind in ("failure", "warning", "success"):
        if kind in kinds:
            return kind
    return "info"


def _clean(text: str) -> str:
    """No lone surrogates (a log of bytes that were not UTF-8) and no control characters
    besides newlines and tabs: every service's JSON and e-mail encoders accept the text."""
    text = without_surrogates(text)
    return "".join(c for c in text if c in "\n\t" or c >= " " and c != "\x7f")


def tail_lines(log_text: str, count: int) -> tuple[str, ...]:
    """The last `count` non-empty lines of a log."""
    lines = [line.rstrip() for line in log_text.splitlines() if line.strip()]
    return tuple(lines[-count:]) if count > 0 else ()
