"""Notifications sent from the command line: `fastflow notify test` (a test message to the
repository's targets now) and `fastflow status --check` (`scheduler_stale` when the daemon's
heartbeat is stale).

The targets are config.yaml's and those of each valid pipeline's pipeline.json, read from the
repository's files as they are (a checkout); a `{"secret": NAME}` target's URL is decrypted
from its secrets file with the age identity of the environment. Each target is tried once,
synchronously, with the delivery timeout, and the outcome says what happened (never the URL's
token). Nothing is recorded on the results branch: that is the daemon's (docs/notifications.md).
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping

from fastflow import defaults
from fastflow import repo as git
from fastflow.config.repo import load_repo_config
from fastflow.daemon.alerts import shown_target
from fastflow.deploy.discovery import discover
from fastflow.errors import FastflowError
from fastflow.files import write_atomic
from fastflow.model import NotificationTarget, NotifyEvent, Problem, Severity
from fastflow.notify import delivery
from fastflow.notify.courier import redact
from fastflow.notify.message import TEST, Event, Message, compose
from fastflow.secrets.runtime import notification_urls


class NoTargets(FastflowError):
    """There is no notification target (or none of the name asked for)."""


@dataclass(frozen=True)
class TestOutcome:
    """What happened to the test message of one target."""

    target: str
    declared_in: str  # the file that declares the target
    to: str  # the URL's private form, or "secret NAME"
    delivered: bool
    error: str | None
    took_s: float

    def to_json(self) -> dict:
        return {"target": self.target, "declared_in": self.declared_in, "to": self.to,
                "delivered": self.delivered, "error": self.error, "took_s": self.took_s}


def repository_targets(root: Path) -> list[NotificationTarget]:
    """config.yaml's targets, then each valid pipeline's own (in name order)."""
    config, _ = load_repo_config(root)
    found = list(config.notifications)
    for name, pipeline in sorted(discover(root, config).pipelines.items()):
        found += [t for t in pipeline.notifications if t.pipeline == name]
    return found


def url_problems(root: Path) -> list[Problem]:
    """A warning for each target whose URL the notification library knows no service for
    (`fastflow validate`): config.yaml stays valid, as for the daemon, which records each such
    delivery as failed. [] when config.yaml is invalid (its errors say why)."""
    try:
        targets = repository_targets(root)
    except FastflowError:
        return []
    problems = []
    for target in targets:
        if target.url is None:
            continue
        try:
            delivery.describe(target.url)
        except delivery.DeliveryFailed as exc:
            problems.append(Problem(target.file, f'notifications (name "{target.name}").url',
                                    str(exc), Severity.WARNING, target.pipeline))
    return problems


def send_test_message(root: Path, environ: Mapping[str, str], now: datetime,
                      target: str | None = None, timeout: float = defaults.NOTIFY_TIMEOUT,
                      send: Callable[[str, Message, float], None] = delivery.send
                      ) -> list[TestOutcome]:
    """Send a test message to every target of the repository at `root` (or those named
    `target`) and say what happened to each. `NoTargets` when there is none to send to."""
    config, _ = load_repo_config(root)
    targets = repository_targets(root)
    if target is not None:
        chosen = [t for t in targets if t.name == target]
        if not chosen:
            names = ", ".join(dict.fromkeys(t.name for t in targets)) or "none"
            raise NoTargets(f'no notification target is named "{target}"; the targets are: '
                            f"{names} (the name key of each, in {defaults.CONFIG_FILE} and the "
                            "pipelines' pipeline.json)")
        targets = chosen
    if not targets:
        raise NoTargets(f"{defaults.CONFIG_FILE}: notifications: no target to send to; add one "
                        'such as - {url: "json://hooks.example.org/fastflow"} '
                        "(docs/notifications.md)")
    return [_try(root, config, t, environ, now, timeout, send) for t in targets]


def heartbeat_problem(daemon: Mapping | None) -> str | None:
    """What `fastflow status --check` fails for: no heartbeat, a stale one, a stopped daemon
    (None: the daemon is alive). `daemon` is the heartbeat as `fastflow status` reads it."""
    if daemon is None:
        return "no daemon heartbeat is recorded; is `fastflow serve` running?"
    if daemon.get("stopped_at"):
        return f"the daemon stopped at {daemon['stopped_at']} (a clean stop); start `fastflow serve`"
    if daemon.get("stale"):
        return (f"the daemon's heartbeat is stale: the last one was {daemon.get('ago')} "
                f"({daemon.get('heartbeat')}), older than {daemon.get('stale_after_s'):g} s; is "
                "`fastflow serve` running?")
    return None


def stale_already_notified(state_dir: Path, heartbeat: str) -> bool:
    """Whether `fastflow status --check` sent `scheduler_stale` for this stale heartbeat or a
    later one (the daemon's next start then does not send it again)."""
    try:
        data = json.loads((Path(state_dir) / defaults.STATE_STALE_NOTIFIED).read_text())
        return datetime.fromisoformat(data["heartbeat"]) >= datetime.fromisoformat(heartbeat)
    except (OSError, ValueError, TypeError, KeyError):
        return False


def notify_stale(repo_path: Path, state_dir: Path, daemon: Mapping | None,
                 environ: Mapping[str, str], now: datetime,
                 timeout: float = defaults.NOTIFY_TIMEOUT,
                 send: Callable[[str, Message, float], None] = delivery.send) -> list[TestOutcome]:
    """`scheduler_stale` to config.yaml's targets that want it, when `daemon` (the heartbeat
    `fastflow status` read) is stale; once per stale heartbeat (remembered in the state dir).
    The targets come from the working tree of `repo_path`, or for a bare repository from the
    commit the daemon deployed last. [] when nothing was sent."""
    if not daemon or not daemon.get("stale"):
        return []
    beat = str(daemon.get("heartbeat"))
    if stale_already_notified(state_dir, beat):
        return []
    detail = (f"the daemon's last heartbeat was {daemon.get('ago')} ({beat}); it is down or "
              "hung (found by `fastflow status --check`)")
    with tempfile.TemporaryDirectory(prefix="fastflow-stale-") as scratch:
        root = _configuration_root(Path(repo_path), Path(scratch))
        if root is None:
            return []
        config, _ = load_repo_config(root)
        event = Event(NotifyEvent.SCHEDULER_STALE.value, now, detail=detail)
        outcomes = [_try(root, config, t, environ, now, timeout, send, event)
                    for t in config.notifications if NotifyEvent.SCHEDULER_STALE in t.events]
    if outcomes:
        path = Path(state_dir) / defaults.STATE_STALE_NOTIFIED
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"heartbeat": beat, "sent_at": now.isoformat()}))
    return outcomes


def _configuration_root(repo_path: Path, scratch: Path) -> Path | None:
    """The files config.yaml and the secrets file are read from: the working tree, or for a
    bare repository a snapshot of the commit the daemon last deployed (None: none known)."""
    repository = git.open_repo(repo_path)
    if not repository.bare:
        return repo_path
    config, _ = load_repo_config(scratch)  # the defaults: where the results branch is
    head = git.branch_head(repository, config.results_branch)
    data = git.read_blob(repository, head, "state/deployment.json") if head else None
    commit = json.loads(data).get("commit") if data else None
    return git.snapshot_tree(repository, commit, "", scratch) if commit else None


def _try(root: Path, config, target: NotificationTarget, environ: Mapping[str, str],
         now: datetime, timeout: float, send, event: Event | None = None) -> TestOutcome:
    shown = shown_target(target)
    message = compose([event or Event(TEST, now, target.pipeline,
                                      detail=f'target "{target.name}" of {target.file}: if you '
                                             "read this, its messages arrive")])
    started, url = time.monotonic(), target.url or ""
    try:
        if target.secret is not None:
            url = notification_urls(root, config, {target.secret: target.pipeline},
                                    environ)[target.secret]
        send(url, message, timeout)
    except FastflowError as exc:
        error = redact(str(exc), url, shown)
        return TestOutcome(target.name, target.file, shown, False, error,
                           round(time.monotonic() - started, 3))
    return TestOutcome(target.name, target.file, shown, True, None,
                       round(time.monotonic() - started, 3))
