"""What the webhook intake does with a request once HTTP is done: find the pipeline, queue the
run durably, and keep a repeated delivery from starting a second run.

No HTTP here (that is `app`) and no daemon state: a request becomes a run request in the
daemon's inbox, which the daemon loop reads like every `fastflow run --remote` request and
journals with trigger `webhook`.

One durable write per accept: the request, its body included, is written to its accepted
file (`daemon.payloads`, created exclusively, fsynced with its folder) before the answer; the
inbox request that follows only wakes the daemon and is not fsynced. The body stays in that file
until the run is recorded (the run's payload file is written from it when the run starts). A
stop at any point loses nothing answered: an accepted file holding its body whose run is not
journalled is posted to the inbox again when the intake starts (`recover`), and the daemon starts
nothing twice, as the run id is known to its journal or the results branch.

Idempotency: a request that names a delivery (`X-GitHub-Delivery`, `webhook-id` or
`Idempotency-Key`) gets the run id `<stamp>-<pipeline>-wh<hash>`, `<hash>` from (pipeline,
delivery id), and its accepted file is named by that hash, so a second one of the same delivery
finds the file (or loses the exclusive create) and answers with the same run id; the file stays
for `DELIVERY_KEEP_S`, so this survives a restart. A request without a delivery id gets a random
hash, and its accepted file is removed once the run is recorded.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping

from fastflow.daemon.inbox import Inbox
from fastflow.daemon.payloads import (
    BODY_KEY,
    DELIVERY_KEEP_S,
    accepted_dir,
    accepted_run_id,
)
from fastflow.daemon.requests import start_refusal
from fastflow.daemon.statedir import webhook_payload_dir, webhook_payload_file
from fastflow.defaults import STATE_ACTIVE, STATE_INBOX
from fastflow.deploy.deployment import Deployment
from fastflow.files import write_atomic
from fastflow.model import Pipeline
from fastflow.record import WebhookInput, request_run_id, run_stamp

logger = logging.getLogger(__name__)

DELIVERY_HEADERS = ("X-GitHub-Delivery", "webhook-id", "Idempotency-Key")
# Headers a run sees in FASTFLOW_WEBHOOK_HEADERS: never a signature or Authorization.
SELECTED_HEADERS = ("Content-Type", "User-Agent", "X-GitHub-Event", "X-GitHub-Delivery",
                    "X-GitLab-Event", "webhook-id", "webhook-timestamp")
MAX_DELIVERY_ID = 200  # characters; visible ASCII only
MAX_HEADER_VALUE = 1000  # a selected header longer than this is cut
_SUFFIX = "wh"  # every webhook run id ends in -wh<hex>: the queue cap counts them by name
_VISIBLE = re.compile(r"[\x21-\x7e]+")
_NO_KEY = b"\0" * 32
# The run ids the intake gives: `<stamp>-<pipeline>-wh<16 hex>`; the pipeline is what lies
# between, whatever '-' its name holds.
WEBHOOK_RUN_ID = re.compile(
    rf"\d{{8}}T\d{{6}}Z-(?P<pipeline>[A-Za-z0-9][A-Za-z0-9_.-]{{0,62}})-{_SUFFIX}[0-9a-f]{{16}}")


class BadDelivery(ValueError):
    """The delivery id header is not visible ASCII of at most MAX_DELIVERY_ID characters."""


@dataclass(frozen=True)
class Target:
    """What a request may start: a pipeline (active, enabled) and one of its run configurations,
    or a flow (`flow`, its name; `pipeline` None), whose run takes the body's `params`."""

    pipeline: Pipeline | None
    run_config_id: str | None
    flow: str | None = None

    @property
    def name(self) -> str:
        """The pipeline's name, or the flow's: what the queue counts and the request names."""
        return self.flow or self.pipeline.name


@dataclass(frozen=True)
class Accepted:
    """The answer to an accepted request: `repeat` when the delivery was known already."""

    run_id: str
    repeat: bool


def delivery_id(headers: Mapping[str, str]) -> str | None:
    """The delivery id a request names (first of `DELIVERY_HEADERS` present), or None;
    `BadDelivery` when the value is not bounded visible ASCII."""
    for name in DELIVERY_HEADERS:
        value = headers.get(name.lower())
        if value is not None:
            if len(value) > MAX_DELIVERY_ID or not _VISIBLE.fullmatch(value):
                raise BadDelivery(f"{name} must be 1 to {MAX_DELIVERY_ID} visible ASCII characters")
            return value
    return None


def selected_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers a run gets (`SELECTED_HEADERS`, as sent, each cut to a bound)."""
    found = {}
    for name in SELECTED_HEADERS:
        value = headers.get(name.lower())
        if value is not None:
            found[name] = value[:MAX_HEADER_VALUE]
    return found


def body_params(body: bytes) -> dict[str, object]:
    """The params of a flow run a body `{"params": {...}}` gives (string, number and boolean
    values; anything else, and a body that is not such JSON, gives none)."""
    if not body.lstrip().startswith(b"{"):
        return {}
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    params = data.get("params") if isinstance(data, dict) else None
    if not isinstance(params, dict):
        return {}
    return {str(k): v for k, v in params.items() if isinstance(v, (str, int, float, bool))}


def allowed_env(body: bytes, allowed: tuple[str, ...]) -> dict[str, str]:
    """The variables a Fast-Flow-form body `{"env": {...}}` sets that the pipeline's
    `webhook_env` allows; anything else in it (and any body that is not such JSON) sets none.
    Values that are not strings are written as JSON text (numbers, booleans) like default_env."""
    if not allowed or not body.lstrip().startswith(b"{"):
        return {}
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    env = data.get("env") if isinstance(data, dict) else None
    if not isinstance(env, dict):
        return {}
    out = {}
    for key in allowed:
        value = env.get(key)
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (int, float)):
            out[key] = json.dumps(value)
    return out


def find_by_key(deployment: Deployment | None, pipeline: str, key: str,
                flow_keys: Mapping[str, str] | None = None) -> Target | None:
    """The target of `POST /api/webhooks/<pipeline>/<key>`: the pipeline when `key` is its
    `webhook_key`, the run configuration whose key it is, else None; also None when
    `start_refusal` refuses it (unknown, disabled pipeline or run configuration). A name that
    is no active pipeline may be a flow of `flow_keys` (name -> its `webhook_key`, the valid
    flows of the deployed commit that have one). Every key is compared in constant time."""
    active = deployment.active.get(pipeline) if deployment else None
    given = key.encode("utf-8", "surrogateescape")
    if active is None:  # compared all the same: the time does not tell the pipeline is unknown
        owned = (flow_keys or {}).get(pipeline)
        matched = hmac.compare_digest(given, owned.encode("utf-8") if owned else _NO_KEY)
        return Target(None, None, flow=pipeline) if owned and matched else None
    found: Target | None = None
    candidates = [(active.pipeline.webhook_key, None)]
    candidates += [(rc.webhook_key, rc.id) for rc in active.pipeline.run_configs]
    for owned, rc_id in candidates:  # all compared: the time does not tell which one matched
        if owned and hmac.compare_digest(owned.encode("utf-8"), given) and found is None:
            found = Target(active.pipeline, rc_id)
    if found is None or start_refusal(deployment, pipeline, found.run_config_id) is not None:
        return None
    return found


def find_signed(deployment: Deployment | None, pipeline: str,
                run_config_id: str | None) -> Target | None:
    """The target of `POST /hooks/<pipeline>[?run_config=ID]`: a pipeline with a
    `webhook_secret` that `start_refusal` allows (with that run configuration), else None."""
    active = deployment.active.get(pipeline) if deployment else None
    if active is None or not active.pipeline.webhook_secret:
        return None
    if start_refusal(deployment, pipeline, run_config_id) is not None:
        return None
    return Target(active.pipeline, run_config_id)


class QueueCount:
    """Webhook runs per pipeline accepted but not started: the webhook requests in the inbox and
    the webhook runs journalled without a start time, counted from the files at every call (a
    restart loses nothing). Each file is read once: an inbox message never changes once in
    place, and a journal entry is read again only when it was replaced (its start, seen by its
    inode). A count costs two directory listings and no call per file."""

    def __init__(self, state_dir: Path) -> None:
        self.inbox_dir = Path(state_dir) / STATE_INBOX
        self.active_dir = Path(state_dir) / STATE_ACTIVE
        self._inbox: dict[str, str | None] = {}  # name -> pipeline of a webhook request
        self._active: dict[str, tuple[int, bool]] = {}  # name -> (inode, waiting)

    def count(self, pipeline: str) -> int:
        """How many webhook runs of `pipeline` wait (not thread-safe: the caller holds a lock)."""
        found = 0
        names = set()
        for entry in _entries(self.inbox_dir):
            if entry.name.startswith("run-") and entry.name.endswith(".json"):
                names.add(entry.name)
                if entry.name not in self._inbox:
                    self._inbox[entry.name] = _webhook_pipeline(entry.path)
                found += self._inbox[entry.name] == pipeline
        for gone in self._inbox.keys() - names:
            del self._inbox[gone]
        names = set()
        for entry in _entries(self.active_dir):
            match = WEBHOOK_RUN_ID.fullmatch(entry.name.removesuffix(".json"))
            if match is None or not entry.name.endswith(".json"):
                continue
            names.add(entry.name)
            if match["pipeline"] != pipeline:
                continue
            # A journal entry is replaced whole (write_atomic: a new inode) when its run
            # starts; the inode comes with the directory listing, without a stat call: a
            # syscall per entry would wait for the GIL each time while the loop is busy.
            cached = self._active.get(entry.name)
            if cached is None or cached[0] != entry.inode():
                cached = self._active[entry.name] = (entry.inode(), _not_started(entry.path))
            found += cached[1]
        for gone in self._active.keys() - names:
            del self._active[gone]
        return found

    def bound(self) -> int:
        """At least `count` of any pipeline, cheaply: the entries of both folders (every
        message, every journalled run), listed without a look at one of them. Below the cap,
        an accept needs no more than this."""
        return _size(self.inbox_dir) + _size(self.active_dir)


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _size(folder: Path) -> int:
    try:
        return len(os.listdir(folder))
    except FileNotFoundError:
        return 0


def _webhook_pipeline(path: str) -> str | None:
    """The pipeline of the inbox request at `path` when it is a webhook's, else None."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("webhook") and isinstance(data.get("pipeline"), str):
        return data["pipeline"]
    return None


def _not_started(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("started_at") is None


class Intake:
    """Queues accepted webhook requests in the inbox of `state_dir`; see the module doc."""

    def __init__(self, state_dir: Path, clock: Callable[[], datetime],
                 max_queued_per_pipeline: int) -> None:
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.max_queued = max_queued_per_pipeline
        self.inbox = Inbox(self.state_dir)
        self.deliveries = accepted_dir(self.state_dir)
        self.deliveries.mkdir(parents=True, exist_ok=True)
        self.payloads = webhook_payload_dir(self.state_dir)
        self.payloads.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._count = QueueCount(self.state_dir)
        # Accepts being written right now, per pipeline: counted with the files, so the cap
        # holds while the writes (and their fsyncs) run outside the lock, in parallel.
        self._writing: dict[str, int] = {}
        self._lock = threading.Lock()

    # --- queueing ------------------------------------------------------------------------

    def queued(self, pipeline: str) -> int:
        """Webhook runs of `pipeline` accepted (or being accepted) but not started."""
        with self._lock:
            return self._count.count(pipeline) + self._writing.get(pipeline, 0)

    def known(self, pipeline: str, delivery: str) -> str | None:
        """The run id a delivery of `pipeline` was given already, or None."""
        try:
            return json.loads(self._claim(pipeline, delivery).read_text(encoding="utf-8"))["run_id"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _reserve(self, pipeline: str) -> bool:
        """Take a place in `pipeline`'s queue cap; False when it is full. Counted exactly
        only when the cheap bound (every inbox message, every journalled run, every accept
        being written) reaches the cap: the exact count reads new files, under the lock."""
        with self._lock:
            if (self._count.bound() + sum(self._writing.values()) >= self.max_queued
                    and self._count.count(pipeline) + self._writing.get(pipeline, 0)
                    >= self.max_queued):
                return False
            self._writing[pipeline] = self._writing.get(pipeline, 0) + 1
            return True

    def _release(self, pipeline: str) -> None:
        with self._lock:
            self._writing[pipeline] -= 1
            if not self._writing[pipeline]:
                del self._writing[pipeline]

    def accept(self, target: Target, delivery: str | None, body: bytes,
               headers: Mapping[str, str], env: Mapping[str, str]) -> Accepted | None:
        """Queue the run `target` asks for, durably (fsynced) before returning; None when the
        pipeline has `max_queued_per_pipeline` webhook runs waiting already (a 429: nothing is
        kept). A delivery seen before returns its run id with `repeat` and queues nothing.
        `OSError` (a full disk) when it cannot be written: then nothing of it is left."""
        name = target.name
        if delivery is not None:
            known = self.known(name, delivery)
            if known is not None:
                return Accepted(known, repeat=True)
        if not self._reserve(name):
            return None
        try:
            return self._write(target, delivery, body, headers, env)
        finally:
            self._release(name)  # written (the files count now) or undone

    def _write(self, target: Target, delivery: str | None, body: bytes,
               headers: Mapping[str, str], env: Mapping[str, str]) -> Accepted:
        name, now = target.name, self.clock()
        while True:
            digest = _digest(name, delivery) if delivery is not None else secrets.token_hex(8)
            request_id = f"{run_stamp(now)}-{_SUFFIX}{digest}"
            run_id = request_run_id(name, request_id)
            payload = webhook_payload_file(self.state_dir, run_id)
            webhook = WebhookInput(delivery, str(payload), dict(headers), dict(env))
            message = {"pipeline": name, "run_config": target.run_config_id,
                       "request_id": request_id, "requested_at": now.isoformat(),
                       "webhook": webhook.to_json(), "run_id": run_id,
                       BODY_KEY: base64.b64encode(body).decode("ascii")}
            if target.flow is not None:  # a flow run: the body's params
                message["params"] = body_params(body)
            accepted = self.deliveries / f"{digest}.json"
            try:  # the one durable write of an accept
                write_atomic(accepted, json.dumps(message), durable=True, exclusive=True,
                             mode=0o600)  # it holds the body, as the payload file will
                break
            except FileExistsError:
                if delivery is None:  # two random hashes met: draw again
                    continue
                # the same delivery, at the same moment: its run id is the other's
                return Accepted(self.known(name, delivery) or run_id, repeat=True)
        try:
            self._post(message, now)
        except OSError:  # e.g. a full disk: undo, so that the sender's retry starts afresh
            accepted.unlink(missing_ok=True)
            raise
        logger.info("webhook: queued %s (%s%s)", run_id, name,
                    f", delivery {delivery}" if delivery else "")
        return Accepted(run_id, repeat=False)

    def _post(self, message: dict, now: datetime) -> None:
        webhook = WebhookInput.from_json(message["webhook"])
        self.inbox.post_run_request(message["pipeline"], {}, message["run_config"], now,
                                    webhook=webhook, request_id=message["request_id"],
                                    durable=False,  # the accepted file is the durable copy
                                    params=message.get("params"))

    def _claim(self, pipeline: str, delivery: str) -> Path:
        return self.deliveries / f"{_digest(pipeline, delivery)}.json"

    # --- at start --------------------------------------------------------------------------

    def recover(self) -> int:
        """Post again the accepted requests the daemon had not journalled before a stop (their
        file holds the body, and no journal entry has their run id); drop delivery claims older
        than `DELIVERY_KEEP_S`. Returns how many were posted."""
        posted = 0
        cutoff = time.time() - DELIVERY_KEEP_S
        journalled = self.state_dir / STATE_ACTIVE
        for path in self.deliveries.glob("*.json"):
            try:
                run_id = accepted_run_id(path)
                if run_id is None:  # a claim (or damaged: the daemon's sweep says so)
                    if path.stat().st_mtime < cutoff:
                        path.unlink(missing_ok=True)
                    continue
                if (journalled / f"{run_id}.json").exists():
                    continue  # queued or running: its body goes when it is recorded
                message = json.loads(path.read_text(encoding="utf-8"))
                self._post(message, datetime.fromisoformat(message["requested_at"]))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                logger.warning("webhook: accepted request %s cannot be read (%s); left alone",
                               path, exc)
                continue
            posted += 1
            logger.info("webhook: posted %s again (the daemon had not taken it before a stop)",
                        message["run_id"])
        return posted


def _digest(pipeline: str, delivery: str) -> str:
    """16 hex digits naming (pipeline, delivery id): the claim's file name and run id suffix."""
    return hashlib.sha256(f"{pipeline}\0{delivery}".encode()).hexdigest()[:16]
