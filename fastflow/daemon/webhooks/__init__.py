"""The webhook intake of `fastflow serve` (docs/webhooks.md): HTTP in, queued run requests out.

`server` (waitress, its only user) serves `app` (the WSGI routes), which checks the request
(`signatures`, `limits`) and hands it to `intake` (durable queueing in the daemon's inbox,
idempotency by delivery id); `view` gives it read-only looks at the daemon. `start_webhooks`
puts them together; the daemon starts it after its own start and stops it first at SIGTERM.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable

from fastflow.daemon.webhooks.app import DaemonView, WebhookApp
from fastflow.daemon.webhooks.intake import Intake
from fastflow.daemon.webhooks.server import ListenError, WebhookServer
from fastflow.model import WebhookSettings


def start_webhooks(settings: WebhookSettings, view: DaemonView, *, state_dir: Path,
                   clock: Callable[[], datetime], source: str = "webhooks.listen"
                   ) -> WebhookServer:
    """Listen at `settings.listen` and queue what arrives into the inbox of `state_dir`.
    Accepted requests the daemon had not taken before a stop are posted first (`Intake.recover`).
    `ListenError` when the address cannot be bound."""
    intake = Intake(state_dir, clock, settings.max_queued_per_pipeline)
    intake.recover()
    server = WebhookServer(WebhookApp(intake, view, settings, clock=clock), settings, source)
    server.start()
    return server


__all__ = ["DaemonView", "ListenError", "WebhookApp", "WebhookServer", "start_webhooks"]
