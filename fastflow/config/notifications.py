"""`notifications` of config.yaml and of pipeline.json -> `NotificationTarget` tuples.

config.yaml's list holds the defaults of every pipeline; a pipeline.json's `"notifications"` is
a list of targets added to them, or `{"inherit": false, "targets": [...]}` to replace them.
Each target is `{"url": ...}` or `{"secret": NAME}` (the secrets-file entry holding the URL, as
URLs carry tokens) with `name`, `events` and the options of its events. Pure: problems are
recorded through `Fields`. Reference: docs/notifications.md.
"""
from __future__ import annotations

import re
from typing import Any

from fastflow import defaults
from fastflow.config.values import (
    MISSING,
    Fields,
    boolean,
    choice,
    integer,
    label,
    name,
    positive_number,
    positive_seconds,
    seconds,
    secret_name,
)
from fastflow.errors import Invalid
from fastflow.humanize import show
from fastflow.model import NotificationTarget, NotifyEvent

EVENT_NAMES = tuple(e.value for e in NotifyEvent)
TARGET_KEYS = ("url", "secret", "name", "events", "after", "repeat", "stuck_after",
               "stuck_factor", "missed_grace", "group_window")
# option -> the event it belongs to (an option without its event has no effect)
EVENT_OPTIONS = {"after": NotifyEvent.AFTER, "stuck_after": NotifyEvent.STUCK,
                 "stuck_factor": NotifyEvent.STUCK, "missed_grace": NotifyEvent.MISSED}
PIPELINE_ONLY_KEYS = ("inherit", "targets")
URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
MAX_STUCK_FACTOR = 1000
MAX_AFTER = 1000
URL_EXAMPLE = '"json://hooks.example.org/fastflow" or "mailto://user:pass@example.org"'


def notification_url(value: Any) -> str:
    """A URL of the notification library: `scheme://...` (which schemes exist is known only to
    the library: `fastflow notify test` and every delivery say when it does not know one). The
    value is never echoed: a URL may carry a token."""
    if not isinstance(value, str) or not URL_RE.fullmatch(value.strip()):
        raise Invalid(f"is not a notification URL (scheme://...); write one such as {URL_EXAMPLE}"
                      ', or keep it in the secrets file and write {"secret": "NAME"}')
    return value.strip()


def event_list(value: Any) -> tuple[NotifyEvent, ...]:
    """`events`: a non-empty list of event names, duplicates dropped."""
    if not isinstance(value, list) or not value:
        raise Invalid(f'{show(value)} is not a non-empty list of events; write ["failure", '
                      '"recovery"]')
    out: list[NotifyEvent] = []
    for index, item in enumerate(value):
        try:
            event = NotifyEvent(choice(EVENT_NAMES)(item))
        except Invalid as exc:
            raise Invalid(f"item {index}: {exc}") from None
        if event not in out:
            out.append(event)
    return tuple(out)


def read_targets(fields: Fields, key: str, pipeline: str | None = None,
                 taken: tuple[str, ...] = ()) -> tuple[NotificationTarget, ...]:
    """The list of targets at `key` of `fields` (absent or null: none); `taken` are names used
    already (config.yaml's, for a pipeline that inherits them)."""
    value = fields.data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        fields.error(key, f'{show(value)} is not a list of targets; write [{{"url": ...}}] or '
                          '[{"secret": "SLACK_URL"}] (docs/notifications.md)')
        return ()
    out: list[NotificationTarget] = []
    names = list(taken)
    for index, item in enumerate(value):
        entry = fields.child({}, key).entry(item if isinstance(item, dict) else {}, index,
                                            label(item, "name") if isinstance(item, dict) else None)
        if not isinstance(item, dict):
            entry.error(None, f'{show(item)} is not a target; write {{"url": ...}} or '
                              '{"secret": "SLACK_URL"}')
            continue
        target = _target(entry, names, pipeline)
        if target is not None:
            names.append(target.name)
            out.append(target)
    return tuple(out)


def pipeline_targets(fields: Fields, inherited: tuple[NotificationTarget, ...],
                     pipeline: str) -> tuple[NotificationTarget, ...]:
    """A pipeline's targets: `inherited` (config.yaml's) and those of its `"notifications"` (a
    list), or only its own when it is `{"inherit": false, "targets": [...]}`."""
    value = fields.data.get("notifications")
    if value is None:
        return inherited
    if isinstance(value, list):
        return inherited + read_targets(fields, "notifications", pipeline,
                                        tuple(t.name for t in inherited))
    if not isinstance(value, dict):
        fields.error("notifications", f'{show(value)} is not a list of targets or an object; '
                     'write [{"url": ...}] (added to config.yaml\'s) or {"inherit": false, '
                     '"targets": [...]} (instead of them)')
        return inherited
    section = fields.child(value, "notifications")
    section.warn_unknown(PIPELINE_ONLY_KEYS)
    inherit = section.get("inherit", boolean)
    inherit = True if inherit is MISSING else inherit
    base = inherited if inherit else ()
    return base + read_targets(section, "targets", pipeline, tuple(t.name for t in base))


def _target(f: Fields, taken: list[str], pipeline: str | None) -> NotificationTarget | None:
    f.warn_unknown(TARGET_KEYS)
    url = f.get("url", notification_url)
    secret = f.get("secret", secret_name)
    if url is not MISSING and secret is not MISSING:
        f.error("secret", "cannot be combined with url; give the URL in the file or the name of "
                          "the secret holding it, not both")
        return None
    if url is MISSING and secret is MISSING and not f.has("url") and not f.has("secret"):
        f.error(None, 'has neither url nor secret; write {"url": ...} or {"secret": '
                      '"SLACK_URL"} (a secrets-file entry holding the URL)')
    events = f.get("events", event_list)
    if events is MISSING:
        events = tuple(NotifyEvent(e) for e in defaults.DEFAULT_NOTIFY_EVENTS)
    options = _options(f, events)
    if url is MISSING and secret is MISSING:
        return None
    target_name = f.get("name", name)
    if target_name is MISSING:
        target_name = _default_name(url if secret is MISSING else None,
                                    None if secret is MISSING else secret, taken)
    elif target_name in taken:
        f.error("name", f'"{target_name}" names another target already; give each target its '
                        "own name")
        return None
    if options is None:
        return None
    return NotificationTarget(
        name=target_name, url=None if url is MISSING else url,
        secret=None if secret is MISSING else secret, events=events, file=f.file,
        pipeline=pipeline, **options)


def _options(f: Fields, events: tuple[NotifyEvent, ...]) -> dict[str, Any] | None:
    checks = {
        "after": integer(1, MAX_AFTER), "repeat": positive_seconds,
        "stuck_after": positive_seconds, "stuck_factor": positive_number(MAX_STUCK_FACTOR),
        "missed_grace": seconds, "group_window": seconds,
    }
    found = {}
    before = len(f.problems)
    for key, check in checks.items():
        value = f.get(key, check, nullable=key in ("repeat", "stuck_after"))
        if value is not MISSING:
            found[key] = value
        if key in EVENT_OPTIONS and f.has(key) and EVENT_OPTIONS[key] not in events:
            f.warn(key, f'has no effect without "{EVENT_OPTIONS[key].value}" in events; add it '
                        "to events or remove the key")
    if any(p for p in f.problems[before:] if p.severity.value == "error"):
        return None
    return {
        "after": found.get("after", defaults.DEFAULT_NOTIFY_AFTER),
        "repeat": found.get("repeat"),
        "stuck_after": found.get("stuck_after"),
        "stuck_factor": found.get("stuck_factor", defaults.DEFAULT_NOTIFY_STUCK_FACTOR),
        "missed_grace": found.get("missed_grace", defaults.DEFAULT_NOTIFY_MISSED_GRACE),
        "group_window": found.get("group_window", defaults.DEFAULT_NOTIFY_GROUP_WINDOW),
    }


def _default_name(url: str | None, secret: str | None, taken: list[str]) -> str:
    """A target's name when it gives none: its secret's name, or its URL's scheme (`json`,
    `mailto`, `slack`), numbered from 2 when taken."""
    base = secret if secret is not None else (url or "target").split("://", 1)[0].lower()
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", base)[:60] or "target"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate
