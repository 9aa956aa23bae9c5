"""The daemon's inbox: a folder of one-file messages that other processes drop for `fastflow serve`.

`<state_dir>/inbox/` holds two kinds of message, each written atomically (`files.write_atomic`: a
hidden temporary file in the inbox, then a rename into its final name), so a reader never sees
half a message:

- `push-<time_ns>-<rand>`: written by the `post-receive` hook (`hooks/post-receive`) when a push
  updates the followed branch. Its content is the hook's stdin, one `<old> <new> <ref>` line per
  updated ref; it may be empty.
- `run-<time_ns>-<rand>.json`: a run request (`fastflow run NAME --remote`), a JSON object with
  `pipeline`, `env`, `run_config`, `requested_at` (ISO 8601 with offset) and `request_id`; a
  request of the webhook intake also has `webhook` (`record.WebhookInput.to_json`: delivery id,
  payload file, selected headers, env), and its run's trigger is `webhook`. Requests written
  before webhooks have no `webhook` key and read as before.
- `supervise-<time_ns>-<rand>.json`: a supervision request (`fastflow supervise reset NAME`), a
  JSON object with `action` (`reset`), `pipeline` and `requested_at`; acknowledged once the
  daemon journalled the new supervision state (docs/supervision.md).

Run requests from a thread of the daemon's own process (the webhook intake, whose store
`daemon.payloads` is the durable copy) are handed over in memory (`Inbox.hand_run_request`): no
file, read and acknowledged like the others, and a waiter wakes at once.

`Inbox.read()` returns every message in arrival order (by `time_ns`, then name) and leaves it
in place; the daemon `acknowledge`s (deletes) a message only once what it asked for is durable:
a run request once its run is journalled (or its refusal recorded), a push once the sync it asked
for is done. So a `kill -9` at any moment loses no message: the next start reads it again, and
the run id of a request is deterministic (`record.request_run_id`), so the journal and the
results branch tell whether it was already accepted. `Inbox.drain()` is `read` + `acknowledge`
for callers that need no such care. Files that cannot be parsed are moved to `inbox/bad/` with a
logged warning, never raised.
`Inbox.waiter()` blocks the daemon until a message lands: inotify through watchdog, so an idle
daemon uses no CPU and wakes within milliseconds; a polling observer when inotify is unavailable.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Union

from fastflow.daemon.watch import FolderWaiter
from fastflow.defaults import STATE_INBOX, STATE_INBOX_BAD
from fastflow.files import write_atomic
from fastflow.record import WebhookInput, run_stamp

log = logging.getLogger(__name__)

# Seconds between directory scans when inotify is unavailable (the fallback observer).

_NAME = re.compile(r"^(?P<kind>push|run|supervise)-(?P<ns>[0-9]{1,20})-(?P<rand>[A-Za-z0-9_]{1,32})(?P<ext>\.json)?$")
_SHA = r"[0-9a-f]{40}(?:[0-9a-f]{24})?"  # SHA-1 or SHA-256 object ids
_REF_LINE = re.compile(rf"^(?P<old>{_SHA}) (?P<new>{_SHA}) (?P<ref>\S+)$")
_RUN_KEYS = {"pipeline", "env", "run_config", "requested_at", "request_id"}
_SUPERVISE_ACTIONS = ("reset",)


@dataclass(frozen=True)
class RefUpdate:
    """One line of `post-receive` input: `old` and `new` commit ids (all zeros for create/delete)."""

    old: str
    new: str
    ref: str


@dataclass(frozen=True)
class PushMessage:
    """A push notification: the refs the push updated (maybe none: "something was pushed")."""

    name: str
    posted_ns: int
    updates: tuple[RefUpdate, ...] = ()

    def updates_ref(self, ref: str) -> bool:
        """True when this push updated `ref` (e.g. `refs/heads/main`), or named no ref at all."""
        return not self.updates or any(u.ref == ref for u in self.updates)


@dataclass(frozen=True)
class RunRequestMessage:
    """A request to queue one run of `pipeline` on the daemon (`fastflow run NAME --remote`)."""

    name: str
    posted_ns: int
    request_id: str
    pipeline: str
    env: dict[str, str] = field(default_factory=dict)
    run_config: str | None = None
    requested_at: datetime | None = None
    webhook: WebhookInput | None = None  # a request of the webhook intake
    params: dict | None = None  # a flow's run: its params (docs/flows.md)
    rerun_of: str | None = None  # `fastflow flow rerun`: the flow run to run again


@dataclass(frozen=True)
class SuperviseMessage:
    """A request to the daemon's supervision (`fastflow supervise reset NAME`)."""

    name: str
    posted_ns: int
    action: str
    pipeline: str
    requested_at: datetime


Message = Union[PushMessage, RunRequestMessage, SuperviseMessage]


class MalformedMessage(ValueError):
    """A file in the inbox that is not a valid message; the reason is the text."""


def _ns_of(now: datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime, exactly (no float rounding)."""
    delta = now - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def parse_ref_lines(text: str) -> tuple[RefUpdate, ...]:
    """Parse `post-receive` input (`<old> <new> <ref>` lines); `MalformedMessage` on a bad line."""
    updates = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _REF_LINE.match(line.strip())
        if match is None:
            raise MalformedMessage(f"line {number} is not '<old> <new> <ref>': {line[:200]!r}")
        updates.append(RefUpdate(match["old"], match["new"], match["ref"]))
    return tuple(updates)


def _parse_run_request(name: str, ns: int, raw: bytes) -> RunRequestMessage:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"expected a JSON object, got {type(data).__name__}")
    missing = sorted(_RUN_KEYS - data.keys())
    if missing:
        raise MalformedMessage(f"missing key(s) {', '.join(missing)}")
    for key in ("pipeline", "request_id", "requested_at"):
        if not isinstance(data[key], str) or not data[key]:
            raise MalformedMessage(f"{key!r} must be a non-empty string, got {data[key]!r}")
    env = data["env"]
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise MalformedMessage(f"'env' must map strings to strings, got {env!r}")
    if data["run_config"] is not None and not isinstance(data["run_config"], str):
        raise MalformedMessage(f"'run_config' must be a string or null, got {data['run_config']!r}")
    try:
        requested_at = datetime.fromisoformat(data["requested_at"])
    except ValueError:
        raise MalformedMessage(f"'requested_at' is not an ISO 8601 time: {data['requested_at']!r}") from None
    webhook = None
    if data.get("webhook") is not None:
        try:
            webhook = WebhookInput.from_json(data["webhook"])
        except ValueError as exc:
            raise MalformedMessage(str(exc)) from None
    params, rerun_of = data.get("params"), data.get("rerun_of")
    if params is not None and not isinstance(params, dict):
        raise MalformedMessage(f"'params' must be an object or null, got {params!r}")
    if rerun_of is not None and (not isinstance(rerun_of, str) or not rerun_of):
        raise MalformedMessage(f"'rerun_of' must be a flow run id or null, got {rerun_of!r}")
    return RunRequestMessage(name, ns, data["request_id"], data["pipeline"], dict(env), data["run_config"], requested_at,
                             webhook, params, rerun_of)


def _parse_supervise(name: str, ns: int, raw: bytes) -> SuperviseMessage:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"expected a JSON object, got {type(data).__name__}")
    if data.get("action") not in _SUPERVISE_ACTIONS:
        raise MalformedMessage(f"'action' must be one of {', '.join(_SUPERVISE_ACTIONS)}, "
                               f"got {data.get('action')!r}")
    if not isinstance(data.get("pipeline"), str) or not data["pipeline"]:
        raise MalformedMessage(f"'pipeline' must be a non-empty string, got {data.get('pipeline')!r}")
    try:
        requested_at = datetime.fromisoformat(data["requested_at"])
    except (KeyError, TypeError, ValueError):
        raise MalformedMessage(f"'requested_at' is not an ISO 8601 time: {data.get('requested_at')!r}") from None
    return SuperviseMessage(name, ns, data["action"], data["pipeline"], requested_at)


def parse_message(name: str, raw: bytes) -> Message:
    """Parse one inbox file from its name and content; `MalformedMessage` says why it is not one."""
    match = _NAME.match(name)
    if match is None or (match["kind"] != "push") != bool(match["ext"]):
        raise MalformedMessage("the name is neither push-<time_ns>-<rand> nor run-<time_ns>-<rand>.json "
                               "nor supervise-<time_ns>-<rand>.json")
    ns = int(match["ns"])
    if match["kind"] == "run":
        return _parse_run_request(name, ns, raw)
    if match["kind"] == "supervise":
        return _parse_supervise(name, ns, raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"not UTF-8 text ({exc})") from None
    return PushMessage(name, ns, parse_ref_lines(text))


def _sort_key(name: str) -> tuple[int, str]:
    match = _NAME.match(name)
    return (int(match["ns"]) if match else 0, name)


class Inbox:
    """The inbox folder of one state dir; creates `<state_dir>/inbox/` when it does not exist."""

    def __init__(self, state_dir: Path | str) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / STATE_INBOX
        self.path.mkdir(parents=True, exist_ok=True)
        self._handed: dict[str, RunRequestMessage] = {}  # in memory: name -> message
        self._handed_lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._waiters: list[FolderWaiter] = []

    def __repr__(self) -> str:
        return f"Inbox({str(self.state_dir)!r})"

    # -- writing ---------------------------------------------------------------------------------
    def _post(self, final_name: str, data: bytes, durable: bool) -> Path:
        """Write `data` to `final_name` in the inbox atomically (hidden temp file, then rename)."""
        final = self.path / final_name
        write_atomic(final, data, durable=durable, exclusive=True)
        return final

    def post_push(self, ref_lines: str, posted_ns: int | None = None) -> Path:
        """Drop a push notification carrying `ref_lines` (post-receive input, may be empty).

        The shell hook is the usual writer; this twin serves tests and Python callers. The file is
        named by `posted_ns` (default: the current time) so messages drain in arrival order.
        """
        parse_ref_lines(ref_lines)  # refuse to write what drain() would move aside
        ns = time.time_ns() if posted_ns is None else posted_ns
        return self._post(f"push-{ns}-{secrets.token_hex(4)}", ref_lines.encode("utf-8"), durable=False)

    def post_run_request(
        self, pipeline: str, env: dict[str, str], run_config: str | None, now: datetime,
        *, webhook: WebhookInput | None = None, request_id: str | None = None,
        params: dict | None = None, rerun_of: str | None = None,
    ) -> str:
        """Queue a run of `pipeline` on the daemon; returns the request id.

        `now` (aware) is the request time: it goes into the message and its file name, which is
        what orders it among other messages. The file is fsynced: a request is a user's intent.
        `webhook`: what a webhook request gives the run (its trigger is then `webhook`).
        `request_id` (`<stamp>-<suffix>`, default a fresh one) makes the run id
        (`record.request_run_id`) deterministic, e.g. from a webhook's delivery id.
        """
        request_id = request_id or f"{run_stamp(now)}-{secrets.token_hex(4)}"
        body = {
            "pipeline": pipeline,
            "env": {str(k): str(v) for k, v in env.items()},
            "run_config": run_config,
            "requested_at": now.isoformat(),
            "request_id": request_id,
        }
        if webhook is not None:
            body["webhook"] = webhook.to_json()
        if params is not None:  # a flow's run (`params`), or a rerun of a flow run
            body["params"] = dict(params)
        if rerun_of is not None:
            body["rerun_of"] = rerun_of
        data = json.dumps(body, indent=2, sort_keys=True).encode("utf-8")
        self._post(f"run-{_ns_of(now)}-{secrets.token_hex(4)}.json", data, durable=True)
        return request_id

    def post_supervise(self, action: str, pipeline: str, now: datetime) -> Path:
        """Ask the daemon's supervision to `action` (`reset`) `pipeline`; fsynced (a user's
        intent), read at the daemon's next round or its next start."""
        if action not in _SUPERVISE_ACTIONS:
            raise ValueError(f"unknown supervision action {action!r}")
        body = {"action": action, "pipeline": pipeline, "requested_at": now.isoformat()}
        data = json.dumps(body, indent=2, sort_keys=True).encode("utf-8")
        return self._post(f"supervise-{_ns_of(now)}-{secrets.token_hex(4)}.json", data, durable=True)

    def hand_run_request(
        self, pipeline: str, run_config: str | None, now: datetime, *, request_id: str,
        webhook: WebhookInput | None = None, params: dict | None = None,
    ) -> RunRequestMessage:
        """Queue a run of `pipeline` from this process, in memory (module doc): for a caller
        that keeps the request durably itself and hands it again after a restart. Wakes the
        waiters; returns the message."""
        message = RunRequestMessage(
            name=f"hand-{_ns_of(now)}-{next(self._numbers)}", posted_ns=_ns_of(now),
            request_id=request_id, pipeline=pipeline, env={}, run_config=run_config,
            requested_at=now, webhook=webhook, params=dict(params) if params is not None else None)
        with self._handed_lock:
            self._handed[message.name] = message
            waiters = list(self._waiters)
        for waiter in waiters:
            waiter.wake()
        return message

    def handed(self) -> list[RunRequestMessage]:
        """The run requests handed in memory and not acknowledged yet, oldest first."""
        with self._handed_lock:
            return sorted(self._handed.values(), key=lambda m: (m.posted_ns, m.name))

    # -- reading ---------------------------------------------------------------------------------
    def _names(self) -> list[str]:
        try:
            with os.scandir(self.path) as entries:
                names = [e.name for e in entries if not e.name.startswith(".") and e.name != STATE_INBOX_BAD]
        except FileNotFoundError:
            return []
        return sorted(names, key=_sort_key)

    def pending(self) -> bool:
        """True when at least one message (or malformed file) waits in the inbox."""
        return bool(self._handed) or bool(self._names())

    def _set_aside(self, name: str, reason: str) -> None:
        bad = self.path / STATE_INBOX_BAD
        bad.mkdir(exist_ok=True)
        target = bad / name
        if target.exists():
            target = bad / f"{name}.{secrets.token_hex(4)}"
        try:
            os.rename(self.path / name, target)
        except FileNotFoundError:
            return
        log.warning("inbox: %s is not a valid message (%s); moved to %s", self.path / name, reason, target)

    def drain(self) -> list[Message]:
        """Read and delete every message, oldest first (`read`, then `acknowledge` each)."""
        messages = self.read()
        for message in messages:
            self.acknowledge(message)
        return messages

    def acknowledge(self, message: Message) -> None:
        """Delete `message` from the inbox: what it asked for is done or durably journalled.
        Acknowledging twice (or a message another reader took) is harmless."""
        with self._handed_lock:
            if self._handed.pop(message.name, None) is not None:
                return
        (self.path / message.name).unlink(missing_ok=True)

    def read(self) -> list[Message]:
        """Every message, oldest first, left in the inbox until `acknowledge`d; malformed files
        go to `inbox/bad/`.

        Never raises for a bad file: it is moved aside with a logged warning naming it and the
        reason, and the other messages are still returned.
        """
        messages: list[Message] = []
        for name in self._names():
            path = self.path / name
            try:
                if not path.is_file() or path.is_symlink():
                    raise MalformedMessage("not a regular file")
                raw = path.read_bytes()
                message = parse_message(name, raw)
            except FileNotFoundError:
                continue  # taken by another drain (one daemon per state dir, but be safe)
            except (MalformedMessage, OSError) as exc:
                self._set_aside(name, str(exc))
                continue
            messages.append(message)
        handed = self.handed()
        if handed:
            messages = sorted(messages + handed, key=lambda m: (m.posted_ns, m.name))
        return messages

    def waiter(self, polling: bool = False) -> FolderWaiter:
        """A started waiter on this inbox (inotify; `polling=True` forces the fallback): its
        `wait` returns True when a message landed (already pending ones included)."""
        waiter = FolderWaiter(self.path, pending=self.pending, ignore=(STATE_INBOX_BAD,),
                              polling=polling)
        with self._handed_lock:
            self._waiters.append(waiter)
        return waiter
