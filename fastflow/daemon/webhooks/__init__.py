"""The webhook intake of `fastflow serve` (docs/webhooks.md): HTTP in, queued run requests out.

`server` (waitress, its only user) serves `app` (the WSGI routes), which checks the request
(`signatures`, `limits`) and hands it to `intake` (durable queueing in the daemon's accepted
requests, handed to its inbox; idempotency by delivery id); `view` gives it read-only looks at the daemon. `start_webhooks`
puts them together; the daemon starts it after its own start and stops it first at SIGTERM.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from fastflow.daemon.inbox import Inbox
from fastflow.daemon.payloads import AcceptedRequests
from fastflow.daemon.webhooks.app import DaemonView, WebhookApp
from fastflow.daemon.webhooks.intake import Intake, hand
from fastflow.daemon.webhooks.server import ListenError, WebhookServer
from fastflow.model import WebhookSettings


def start_webhooks(settings: WebhookSettings, view: DaemonView, *, requests: AcceptedRequests,
                   inbox: Inbox, clock: Callable[[], datetime], source: str = "webhooks.listen"
                   ) -> WebhookServer:
    """Listen at `settings.listen`; store what is accepted in `requests` and hand it to
    `inbox`. `ListenError` when the address cannot be bound."""
    requests.warm()  # the log's first segment, made before the first request waits for it
    intake = Intake(requests, inbox, clock, settings.max_queued_per_pipeline)
    server = WebhookServer(WebhookApp(intake, view, settings, clock=clock), settings, source)
    server.start()
    return server


__all__ = ["DaemonView", "ListenError", "WebhookApp", "WebhookServer", "hand", "start_webhooks"]
