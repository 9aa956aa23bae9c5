"""The WSGI application of the webhook intake: four routes, every answer JSON.

- `POST /api/webhooks/<pipeline>/<webhook_key>` (Fast-Flow's form): the key is the pipeline's
  or one of its run configurations' (`intake.find_by_key`).
- `POST /hooks/<pipeline>[?run_config=ID]`: signed (`signatures.verify` over the raw body,
  with the pipeline's `webhook_secret`s).
- `GET /healthz`: the daemon is up and its loop ticked recently.
- `GET /api/runs/<run_id>`: the status of a run, as `fastflow history --json` shows it.

Status codes (docs/webhooks.md "Status codes"): 202 queued, 200 a repeated delivery (same
body), 400 a malformed delivery id or query, 401 a bad signature (one body for every
failure), 404 for everything that does not start a run (unknown pipeline, wrong key, disabled,
no key/secret: one body, nothing to probe), 405 a known route with another method, 413 a body
over `max_body` (waitress answers it), 429 rate limited or queue full (`Retry-After`), 503
the pipeline's secrets cannot be read, the daemon's loop is stale, or it is a standby (another
daemon holds the lease: docs/serve.md, "Two daemons on one repository"). A request that fails
inside is logged without a traceback and answered 500; the tests keep it from happening.
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Callable, Iterable, Mapping, Protocol
from urllib.parse import parse_qs

from fastflow.daemon.webhooks import signatures
from fastflow.daemon.webhooks.intake import (
    BadDelivery,
    Intake,
    Target,
    allowed_env,
    delivery_id,
    find_by_key,
    find_signed,
    selected_headers,
)
from fastflow.daemon.webhooks.limits import RateLimit, retry_after
from fastflow.defaults import HEARTBEAT_INTERVAL, HEARTBEAT_STALE_FACTOR
from fastflow.deploy.deployment import Deployment
from fastflow.errors import FastflowError
from fastflow.model import Pipeline, WebhookSettings

logger = logging.getLogger(__name__)

NOT_FOUND = {"error": "not found"}
BAD_SIGNATURE = {"error": "bad signature"}
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
MAX_PATH = 2048


class DaemonView(Protocol):
    """What the intake may ask of the daemon (it owns this interface; `server` builds it from
    the daemon): read-only looks, never a change to the loop's state."""

    def deployment(self) -> Deployment | None: ...

    def webhook_secrets(self, pipeline: Pipeline) -> tuple[str, ...]: ...

    def run_status(self, run_id: str) -> dict | None: ...

    def last_tick_at(self) -> datetime | None: ...

    def standby(self) -> bool: ...

    def flow_keys(self) -> Mapping[str, str]: ...


class Answer(Exception):
    """Stops handling a request with this status, body and extra headers."""

    def __init__(self, status: int, body: Mapping, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, dict(body), list(headers)


class WebhookApp:
    """The WSGI callable; see the module doc. `monotonic` drives the rate limits (tests pass
    their own), `clock` (aware UTC) the signature tolerance and health ages."""

    def __init__(self, intake: Intake, view: DaemonView, settings: WebhookSettings, *,
                 clock: Callable[[], datetime], monotonic: Callable[[], float] = time.monotonic
                 ) -> None:
        self.intake = intake
        self.view = view
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.clients = RateLimit(settings.client_rate_per_minute, settings.client_burst)
        self.pipelines = RateLimit(settings.pipeline_rate_per_minute,
                                   settings.pipeline_rate_per_minute)
        self._logged: dict[str, Exception] = {}  # pipeline -> the secrets failure logged last

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        try:
            status, body, headers = 200, self.route(environ), []
            if isinstance(body, Answer):
                status, headers, body = body.status, body.headers, body.body
        except Answer as answer:
            status, body, headers = answer.status, answer.body, answer.headers
        except Exception as exc:  # noqa: BLE001 - one bad request must not cost the daemon
            logger.error("webhook: %s %s failed: %s: %s", environ.get("REQUEST_METHOD"),
                         str(environ.get("PATH_INFO", ""))[:200], type(exc).__name__, exc)
            status, body, headers = 500, {"error": "internal error"}, []
        data = (json.dumps(body, sort_keys=True) + "\n").encode("utf-8")
        start_response(f"{status} {_REASONS.get(status, '')}".rstrip(), [
            ("Content-Type", "application/json"), ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"), *headers])
        return [data]

    # --- routing ---------------------------------------------------------------------------

    def route(self, environ: dict) -> dict | Answer:
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "") or "/"
        parts = path.split("/")[1:] if len(path) <= MAX_PATH and path.startswith("/") else []
        client = environ.get("REMOTE_ADDR") or "unknown"
        if parts == ["healthz"]:
            self._method(method, "GET")
            return self.health()
        self._limit_client(client)
        if len(parts) == 3 and parts[:2] == ["api", "runs"] and parts[2]:
            self._method(method, "GET")
            found = self.view.run_status(parts[2])
            if found is None:
                raise Answer(404, NOT_FOUND)
            return found
        if len(parts) == 4 and parts[:2] == ["api", "webhooks"] and parts[2] and parts[3]:
            self._method(method, "POST")
            self._working()
            return self.fastflow_form(environ, parts[2], parts[3])
        if len(parts) == 2 and parts[0] == "hooks" and parts[1]:
            self._method(method, "POST")
            self._working()
            return self.signed_form(environ, parts[1])
        raise Answer(404, NOT_FOUND)

    @staticmethod
    def _method(method: str, allowed: str) -> None:
        if method != allowed:
            raise Answer(405, {"error": f"method not allowed; use {allowed}"},
                         [("Allow", allowed)])

    def _working(self) -> None:
        """A standby daemon (another holds the lease) queues nothing: its inbox would wait
        until a takeover. 503, so the sender (or a load balancer) tries the holder."""
        if self.view.standby():
            raise Answer(503, {"error": "standby"}, [("Retry-After", "30")])

    def _limit_client(self, client: str) -> None:
        wait = self.clients.take(client, self.monotonic())
        if wait:
            raise Answer(429, {"error": "rate limited"}, [("Retry-After", retry_after(wait))])

    # --- the two URL forms -----------------------------------------------------------------

    def fastflow_form(self, environ: dict, pipeline: str, key: str) -> dict | Answer:
        target = find_by_key(self.view.deployment(), pipeline, key, self.view.flow_keys())
        if target is None:
            raise Answer(404, NOT_FOUND)
        body = _body(environ)
        env = allowed_env(body, target.pipeline.webhook_env) if target.pipeline else {}
        return self._queue(target, environ, body, env)

    def signed_form(self, environ: dict, pipeline: str) -> dict | Answer:
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True,
                         max_num_fields=20)
        unknown = sorted(set(query) - {"run_config"})
        if unknown or len(query.get("run_config", [])) > 1:
            raise Answer(400, {"error": "the only query parameter is run_config, once"})
        run_config = (query.get("run_config") or [None])[0] or None
        target = find_signed(self.view.deployment(), pipeline, run_config)
        if target is None:
            raise Answer(404, NOT_FOUND)
        try:
            secrets = self.view.webhook_secrets(target.pipeline)
        except FastflowError as exc:
            if self._logged.get(pipeline) is not exc:  # once per failure, not per request
                self._logged[pipeline] = exc
                logger.error("webhook: the secrets of pipeline %s cannot be read: %s; "
                             "signed requests to it are answered 503", pipeline, exc)
            raise Answer(503, {"error": "unavailable"}, [("Retry-After", "60")]) from None
        if not secrets:
            raise Answer(404, NOT_FOUND)
        body = _body(environ)
        headers = _headers(environ)
        try:
            signatures.verify(body, headers, secrets, self.clock().timestamp())
        except signatures.BadSignature as exc:
            logger.warning("webhook: %s: bad signature from %s: %s", pipeline,
                           environ.get("REMOTE_ADDR"), exc)
            raise Answer(401, BAD_SIGNATURE) from None
        return self._queue(target, environ, body, {})

    def _queue(self, target: Target, environ: dict, body: bytes,
               env: Mapping[str, str]) -> dict | Answer:
        headers = _headers(environ)
        try:
            delivery = delivery_id(headers)
        except BadDelivery as exc:
            raise Answer(400, {"error": str(exc)}) from None
        if delivery is not None:
            known = self.intake.known(target.name, delivery)
            if known is not None:  # a retry: same answer, nothing queued, no rate taken
                return Answer(200, self._accepted(known))
        wait = self.pipelines.take(target.name, self.monotonic())
        if wait:
            raise Answer(429, {"error": "rate limited"}, [("Retry-After", retry_after(wait))])
        try:
            accepted = self.intake.accept(target, delivery, body, selected_headers(headers), env)
        except OSError as exc:  # nothing was queued: the sender retries
            logger.error("webhook: a request to %s cannot be queued: %s (state dir %s)",
                         target.name, exc, self.intake.state_dir)
            raise Answer(503, {"error": "unavailable"}, [("Retry-After", "60")]) from None
        if accepted is None:
            raise Answer(429, {"error": "queue full"}, [("Retry-After", "10")])
        return Answer(200 if accepted.repeat else 202, self._accepted(accepted.run_id))

    def _accepted(self, run_id: str) -> dict:
        base = self.settings.public_url or ""
        return {"run_id": run_id, "status_url": f"{base}/api/runs/{run_id}"}

    # --- health ----------------------------------------------------------------------------

    def health(self) -> dict | Answer:
        """`GET /healthz`: 200 while the loop ticked within the stale limit and this daemon
        holds the lease, else 503 (`stale`, `standby`)."""
        last = self.view.last_tick_at()
        age = None if last is None else round((self.clock() - last).total_seconds(), 1)
        stale = age is None or age > HEARTBEAT_STALE_FACTOR * HEARTBEAT_INTERVAL
        status = "stale" if stale else "standby" if self.view.standby() else "ok"
        body = {"status": status, "last_tick_age_s": age}
        return body if status == "ok" else Answer(503, body)


def _headers(environ: dict) -> dict[str, str]:
    """The request headers by lower-case name (WSGI's HTTP_* keys, plus Content-Type)."""
    found = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
             if k.startswith("HTTP_") and isinstance(v, str)}
    if environ.get("CONTENT_TYPE"):
        found["content-type"] = environ["CONTENT_TYPE"]
    return found


def _body(environ: dict) -> bytes:
    """The whole body; waitress has buffered it (and answered 413 beyond the cap)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise Answer(400, {"error": "bad Content-Length"}) from None
    stream = environ.get("wsgi.input")
    return stream.read(length) if stream is not None and length > 0 else b""
