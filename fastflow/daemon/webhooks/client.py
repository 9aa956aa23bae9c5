"""The sending side of webhooks, for `fastflow webhook send` and `fastflow webhook url`.

`webhook_urls` lists every URL a pipeline answers to; `prepare_request` builds a request
(URL, headers, body) signed the way GitHub or Standard Webhooks senders sign; `send_request`
sends it with the standard library and returns the answer. Reference: docs/webhooks.md "The CLI".
"""
from __future__ import annotations

import json
import secrets as token
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from fastflow.daemon.webhooks.signatures import (
    GITHUB,
    STANDARD,
    STANDARD_SECRET_PREFIX,
    sign_github,
    sign_standard,
)
from fastflow.errors import FastflowError
from fastflow.model import Pipeline

KEY_PATH = "/api/webhooks/{pipeline}/{key}"  # Fast-Flow's form: the key is in the URL
SIGNED_PATH = "/hooks/{pipeline}"  # signed requests; `?run_config=ID` picks a run configuration
MASK = "***"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class WebhookSendError(FastflowError):
    """A webhook request could not be built or sent; the message says which option to fix."""


@dataclass(frozen=True)
class WebhookUrl:
    """One URL a pipeline answers to: what it starts and how a request must be made."""

    url: str
    starts: str  # "pipeline" or `run configuration "<id>"`
    form: str  # "key" (Fast-Flow's URL with the key) or "signed"


@dataclass(frozen=True)
class PreparedRequest:
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def base_url(public_url: str | None, listen: str | None) -> str | None:
    """Where the intake is reached: `webhooks.public_url`, else `http://<listen>`; None when
    neither is configured."""
    if public_url:
        return public_url.rstrip("/")
    if listen:
        return f"http://{listen}"
    return None


def webhook_urls(pipeline: Pipeline, base: str, show_keys: bool = False) -> list[WebhookUrl]:
    """Every URL `pipeline` answers to under `base`: the key URL of its `webhook_key` and of
    each run configuration's, then the signed URL (and one per run configuration) when it has a
    `webhook_secret`. Keys are shown as `***` unless `show_keys`: they work like passwords."""
    base = base.rstrip("/")
    name = urllib.parse.quote(pipeline.name, safe="")
    urls = []

    def key_url(key: str) -> str:
        shown = urllib.parse.quote(key, safe="") if show_keys else MASK
        return base + KEY_PATH.format(pipeline=name, key=shown)

    if pipeline.webhook_key:
        urls.append(WebhookUrl(key_url(pipeline.webhook_key), "pipeline", "key"))
    for rc in pipeline.run_configs:
        if rc.webhook_key:
            urls.append(WebhookUrl(key_url(rc.webhook_key), f'run configuration "{rc.id}"', "key"))
    if pipeline.webhook_secret:
        signed = base + SIGNED_PATH.format(pipeline=name)
        urls.append(WebhookUrl(signed, "pipeline", "signed"))
        for rc in pipeline.run_configs:
            query = urllib.parse.urlencode({"run_config": rc.id})
            urls.append(WebhookUrl(f"{signed}?{query}", f'run configuration "{rc.id}"', "signed"))
    return urls


def prepare_request(pipeline: str, url: str, body: bytes, *, secret: str | None = None,
                    scheme: str | None = None, idempotency_key: str | None = None,
                    run_config: str | None = None, now: float, msg_id: str | None = None
                    ) -> PreparedRequest:
    """The request `fastflow webhook send` makes. `url` is the intake's address (then the signed
    path `/hooks/<pipeline>` is added) or a full URL (used as it is). With `secret` the body is
    signed: `scheme` GITHUB or STANDARD, by default STANDARD for a `whsec_` secret and GITHUB
    otherwise; Standard Webhooks' `webhook-id` is `msg_id`, else the idempotency key, else a
    random id, and its timestamp is `now`."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise WebhookSendError(f"--url: {url!r} is not an http(s) URL; write e.g. "
                               "http://127.0.0.1:8787 (`fastflow webhook url` prints the URLs)")
    if parts.path in ("", "/"):
        if secret is None:
            raise WebhookSendError(
                f"--url: {url!r} has no path and no --secret-env is given; pass the full URL with "
                f"the key (`fastflow webhook url {pipeline} --show-keys` prints it) or sign the "
                "request with --secret-env VAR")
        query = f"?{urllib.parse.urlencode({'run_config': run_config})}" if run_config else ""
        url = url.rstrip("/") + SIGNED_PATH.format(pipeline=urllib.parse.quote(pipeline, safe=""))
        url += query
    elif run_config:
        raise WebhookSendError("--run-config: only with a --url without a path (the signed "
                               "URL gets ?run_config=ID); a key URL already names what it starts")
    headers = {"Content-Type": _content_type(body), "User-Agent": "fastflow-webhook-send"}
    if idempotency_key is not None:
        headers[IDEMPOTENCY_HEADER] = idempotency_key
    if secret is not None:
        chosen = scheme or (STANDARD if secret.startswith(STANDARD_SECRET_PREFIX) else GITHUB)
        if chosen == GITHUB:
            headers.update(sign_github(body, secret))
        else:
            delivery = msg_id or idempotency_key or f"msg_{token.token_hex(12)}"
            try:
                headers.update(sign_standard(body, secret, delivery, int(now)))
            except ValueError as exc:
                raise WebhookSendError(f"--secret-env: {exc}") from None
    elif scheme is not None:
        raise WebhookSendError(f"--{scheme}: signing needs a secret; name the environment "
                               "variable holding it with --secret-env VAR")
    return PreparedRequest(url, headers, body)


def send_request(request: PreparedRequest, timeout: float = 30.0) -> Answer:
    """POST `request` and return the answer's status and body (any status: a 4xx is an answer).
    `WebhookSendError` when nothing answers."""
    http = urllib.request.Request(request.url, data=request.body, headers=request.headers,
                                  method="POST")
    opener = urllib.request.build_opener(_NoRedirect)  # a signed body is never re-sent elsewhere
    try:
        with opener.open(http, timeout=timeout) as response:
            return Answer(response.status, _text(response.read()))
    except urllib.error.HTTPError as exc:
        with exc:
            return Answer(exc.code, _text(exc.read()))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WebhookSendError(f"{request.url}: no answer ({reason}); is `fastflow serve "
                               "--webhooks HOST:PORT` running there?") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return None


def _content_type(body: bytes) -> str:
    try:
        json.loads(body)
    except ValueError:
        return "application/octet-stream"
    return "application/json"


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
