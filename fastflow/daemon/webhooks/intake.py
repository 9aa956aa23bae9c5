"""What the webhook intake does with a request once HTTP is done: find the pipeline, queue the
run durably, and keep a repeated delivery from starting a second run.

No HTTP here (that is `app`) and no daemon state: an accepted request is stored durably in the
daemon's accepted requests (`daemon.payloads.AcceptedRequests`: one record appended to a log
and flushed with the others arriving meanwhile; no file is created) before the answer, then
handed to the daemon's inbox in memory (`Inbox.hand_run_request`), which the daemon loop reads
like every `fastflow run --remote` request and journals with trigger `webhook`. A stop at any
point loses nothing answered: the daemon's next start hands again every stored request whose
run is neither journalled nor recorded, and starts nothing twice, as the run id is known to its
journal or the results branch.

Idempotency: a request that names a delivery (`X-GitHub-Delivery`, `webhook-id` or
`Idempotency-Key`) gets the run id `<stamp>-<pipeline>-wh<hash>`, `<hash>` from (pipeline,
delivery id) (`payloads.delivery_digest`); the store claims that hash for the run id for
`DELIVERY_KEEP_S` (across restarts), so a repeat answers with the same run id. Two requests of
one delivery at the same moment: the second waits for the first's outcome. A request without a
delivery id gets a random hash.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Mapping

from fastflow.daemon.inbox import Inbox
from fastflow.daemon.payloads import AcceptedRequests, delivery_digest
from fastflow.daemon.requests import start_refusal
from fastflow.daemon.statedir import webhook_payload_file
from fastflow.deploy.deployment import Deployment
from fastflow.model import Pipeline
from fastflow.record import WebhookInput, request_run_id, run_stamp

logger = logging.getLogger(__name__)

DELIVERY_HEADERS = ("X-GitHub-Delivery", "webhook-id", "Idempotency-Key")
# Headers a run sees in FASTFLOW_WEBHOOK_HEADERS: never a signature or Authorization.
SELECTED_HEADERS = ("Content-Type", "User-Agent", "X-GitHub-Event", "X-GitHub-Delivery",
                    "X-GitLab-Event", "webhook-id", "webhook-timestamp")
MAX_DELIVERY_ID = 200  # characters; visible ASCII only
MAX_HEADER_VALUE = 1000  # a selected header longer than this is cut
INFLIGHT_WAIT = 30.0  # seconds a repeat waits for the same delivery's accept under way
_SUFFIX = "wh"  # every webhook run id ends in -wh<hex> (`WEBHOOK_RUN_ID`)
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


class Intake:
    """Stores accepted webhook requests in `requests` and hands them to `inbox`; see the
    module doc."""

    def __init__(self, requests: AcceptedRequests, inbox: Inbox,
                 clock: Callable[[], datetime], max_queued_per_pipeline: int) -> None:
        self.requests = requests
        self.inbox = inbox
        self.state_dir = requests.state_dir
        self.clock = clock
        self.max_queued = max_queued_per_pipeline
        # Accepts being written right now, per pipeline: counted with the stored ones, so the
        # cap holds while the writes (and their flushes) run outside the lock, in parallel.
        self._writing: dict[str, int] = {}
        self._inflight: dict[str, threading.Event] = {}  # a delivery being accepted now
        self._lock = threading.Lock()

    def queued(self, pipeline: str) -> int:
        """Webhook runs of `pipeline` accepted (or being accepted) but not started."""
        with self._lock:
            return self._queued(pipeline)

    def _queued(self, pipeline: str) -> int:
        return self.requests.waiting(pipeline) + self._writing.get(pipeline, 0)

    def known(self, pipeline: str, delivery: str) -> str | None:
        """The run id a delivery of `pipeline` was given already, or None."""
        return self.requests.claim(delivery_digest(pipeline, delivery))

    def accept(self, target: Target, delivery: str | None, body: bytes,
               headers: Mapping[str, str], env: Mapping[str, str]) -> Accepted | None:
        """Queue the run `target` asks for, durably before returning; None when the pipeline
        has `max_queued_per_pipeline` webhook runs waiting already (a 429: nothing is kept). A
        delivery seen before returns its run id with `repeat` and queues nothing. `OSError`
        when it cannot be made durable: then nothing of it counts."""
        name = target.name
        digest = delivery_digest(name, delivery) if delivery is not None else None
        while True:
            with self._lock:
                other = self._inflight.get(digest) if digest else None
                if other is None:
                    known = self.requests.claim(digest) if digest else None
                    if known is not None:
                        return Accepted(known, repeat=True)
                    if self._queued(name) >= self.max_queued:
                        return None
                    self._writing[name] = self._writing.get(name, 0) + 1
                    if digest:
                        self._inflight[digest] = threading.Event()
                    break
            other.wait(INFLIGHT_WAIT)  # the same delivery at the same moment: its outcome
        try:
            return self._store(target, delivery, digest, body, headers, env)
        finally:
            with self._lock:
                self._writing[name] -= 1
                if not self._writing[name]:
                    del self._writing[name]
                done = self._inflight.pop(digest, None) if digest else None
            if done is not None:
                done.set()

    def _store(self, target: Target, delivery: str | None, digest: str | None, body: bytes,
               headers: Mapping[str, str], env: Mapping[str, str]) -> Accepted:
        name, now = target.name, self.clock()
        while True:
            request_id = f"{run_stamp(now)}-{_SUFFIX}{digest or secrets.token_hex(8)}"
            run_id = request_run_id(name, request_id)
            if digest or self.requests.pending(run_id) is None:
                break  # two random hashes met: draw again
        webhook = WebhookInput(delivery, str(webhook_payload_file(self.state_dir, run_id)),
                               dict(headers), dict(env))
        message = {"pipeline": name, "run_config": target.run_config_id,
                   "request_id": request_id, "requested_at": now.isoformat(),
                   "webhook": webhook.to_json(), "run_id": run_id}
        if target.flow is not None:  # a flow run: the body's params
            message["params"] = body_params(body)
        self.requests.add(message, body)  # the one durable write of an accept
        hand(self.inbox, message)
        logger.info("webhook: queued %s (%s%s)", run_id, name,
                    f", delivery {delivery}" if delivery else "")
        return Accepted(run_id, repeat=False)


def hand(inbox: Inbox, message: dict) -> None:
    """Hand a stored request (`AcceptedRequests`) to the daemon's inbox, in memory: after its
    accept, and again at a start for one the daemon had not journalled."""
    inbox.hand_run_request(message["pipeline"], message.get("run_config"),
                           datetime.fromisoformat(message["requested_at"]),
                           request_id=message["request_id"],
                           webhook=WebhookInput.from_json(message["webhook"]),
                           params=message.get("params"))
