"""The bodies of webhook requests in the state dir, from the answer to the run's record.

An accepted request is one file, `<state_dir>/webhooks/deliveries/<hash>.json` (`accepted_file`,
`<hash>` the last part of its run id `<stamp>-<pipeline>-wh<hash>`), written by the webhook
intake before it answers: the only fsync of an accept. It holds the request and its body
(`BODY_KEY`, base64) until the run is recorded. The run's payload file
(`statedir.webhook_payload_file`), what `FASTFLOW_WEBHOOK_PAYLOAD` names, is written from it
when the run starts (`materialize_payload`, not fsynced: should it be lost with the machine, the
run starts again from its journal and writes it again), and both go when the run is recorded
(`settle_accepted`): the accepted file of a delivery keeps the run id only (the claim that makes
a repeat start nothing, `DELIVERY_KEEP_S`), one without a delivery id is removed.

Light on purpose (no HTTP, no daemon machinery): `daemon.runs` and the intake both use it.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from fastflow.defaults import STATE_WEBHOOK_DELIVERIES
from fastflow.errors import FastflowError
from fastflow.files import write_atomic
from fastflow.record import WebhookInput

BODY_KEY = "body_base64"  # the body in an accepted file, until the run is recorded
DELIVERY_KEEP_S = 30 * 86_400  # a delivery's claim is dropped 30 days after its request
_HASH = re.compile(r"-wh(?P<hash>[0-9a-f]{16})")


class UnreadableRequest(FastflowError):
    """An accepted webhook request's file is damaged: its run cannot get its body."""


def accepted_dir(state_dir: Path | str) -> Path:
    """`<state_dir>/webhooks/deliveries/`: one file per accepted webhook request (module doc)."""
    return Path(state_dir) / STATE_WEBHOOK_DELIVERIES


def accepted_file(state_dir: Path | str, run_id: str) -> Path | None:
    """The accepted file of webhook run `run_id`, or None when the id is not a webhook's."""
    match = _HASH.search(run_id)
    if match is None or match.end() != len(run_id):
        return None
    return accepted_dir(state_dir) / f"{match['hash']}.json"


def read_accepted(path: Path) -> dict | None:
    """The request in an accepted file, or None when there is none. `ValueError` when the
    file is not JSON of an object."""
    try:
        message = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(message, dict):
        raise ValueError(f"expected a JSON object, got {type(message).__name__}")
    return message


def _own(state_dir: Path | str, run_id: str) -> tuple[Path, dict] | None:
    path = accepted_file(state_dir, run_id)
    message = read_accepted(path) if path is not None else None
    if message is None or message.get("run_id") != run_id:
        return None  # a request posted without one (tests, Python callers), or another's
    return path, message


def materialize_payload(state_dir: Path | str, run_id: str, webhook: WebhookInput) -> None:
    """When webhook run `run_id` starts: write the body kept in its accepted file to its payload
    file (`webhook.payload_file`, mode 0600). Nothing to do without an accepted file holding a
    body (the payload file was written by whoever posted the request). `OSError` when it cannot
    be written; `UnreadableRequest` when the accepted file is not one the intake wrote."""
    path = accepted_file(state_dir, run_id)
    try:
        found = _own(state_dir, run_id)
        if found is None or BODY_KEY not in found[1]:
            return
        body = base64.b64decode(found[1][BODY_KEY], validate=True)
    except (ValueError, TypeError) as exc:
        raise UnreadableRequest(
            f"{path}: the stored webhook request cannot be read ({exc}); the run cannot get "
            "its payload, and the sender must send the request again") from None
    payload = Path(webhook.payload_file)
    payload.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(payload, body, mode=0o600)


def accepted_run_id(path: Path) -> str | None:
    """The run id of the accepted file at `path` while it holds its request's body (the run is
    not recorded yet); None for a claim, a damaged or a missing file."""
    try:
        message = read_accepted(path)
    except (OSError, ValueError):
        return None
    if message is None or BODY_KEY not in message or not isinstance(message.get("run_id"), str):
        return None
    return message["run_id"]


def settle_accepted(state_dir: Path | str, run_id: str) -> None:
    """Once webhook run `run_id` is recorded: its accepted file loses the body. A delivery's
    stays as its claim; one without a delivery id is removed. Not fsynced: a claim lost with the
    machine is only a repeat not recognised."""
    try:
        found = _own(state_dir, run_id)
    except ValueError:
        return  # damaged: left for the intake's start to report
    if found is None or BODY_KEY not in found[1]:
        return
    path, message = found
    webhook = message.get("webhook")
    if not isinstance(webhook, dict) or webhook.get("delivery_id") is None:
        path.unlink(missing_ok=True)
        return
    del message[BODY_KEY]
    write_atomic(path, json.dumps(message), mode=0o600)
