"""One message to one URL, through the notification library (apprise), the only module that
imports it (tests/test_layout.py).

Fast-Flow writes no per-service client: a target's URL picks the service (`json://`,
`mailto://`, `slack://`, `discord://`, `workflows://`, `ntfy://`, ...; the library's own list).
`describe` gives the form of a URL that is safe to record and show (tokens and passwords
masked by the library); `send` raises `DeliveryFailed` with the library's reason.
"""
from __future__ import annotations

import logging
import threading

import apprise

from fastflow.errors import FastflowError
from fastflow.notify.message import Message

logger = logging.getLogger(__name__)
# The library's own log lines become the reason of a failed delivery (`send`), said once by the
# caller; they do not also go to the daemon's or the CLI's log on their own.
logging.getLogger("apprise").propagate = False

APP_ID = "Fast-Flow"
TYPES = {"info": apprise.NotifyType.INFO, "success": apprise.NotifyType.SUCCESS,
         "warning": apprise.NotifyType.WARNING, "failure": apprise.NotifyType.FAILURE}


class DeliveryFailed(FastflowError):
    """A message did not reach its target; the message says why (never the URL's token)."""


class UnknownUrl(DeliveryFailed):
    """The notification library knows no service for the URL (its scheme, or its form)."""


def _service(url: str):
    service = apprise.Apprise.instantiate(url, asset=apprise.AppriseAsset(app_id=APP_ID))
    if service is None:
        scheme = url.split("://", 1)[0] if "://" in url else url[:0]
        raise UnknownUrl(f'the notification library knows no service for this URL (scheme '
                         f'"{scheme}" or its form); see docs/notifications.md for the URL of '
                         "each service")
    return service


def describe(url: str) -> str:
    """The URL as it may be recorded and shown: the library's private form (tokens and
    passwords masked). `UnknownUrl` when the library knows no such service."""
    return _service(url).url(privacy=True)


def send(url: str, message: Message, timeout: float) -> None:
    """Deliver `message` to `url` within `timeout` seconds; `DeliveryFailed` with the
    library's reason otherwise. A send that hangs past the timeout is left to finish on its
    own (daemon) thread: the caller goes on, the attempt counts as failed."""
    service = _service(url)
    outcome: dict = {}

    def attempt() -> None:
        try:
            with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
                notifier = apprise.Apprise()
                notifier.add(service)
                outcome["ok"] = bool(notifier.notify(title=message.title, body=message.body,
                                                     notify_type=TYPES[message.type]))
                outcome["log"] = captured.getvalue()
        except Exception as exc:  # noqa: BLE001 - a plugin's bug is a failed delivery
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=attempt, name="fastflow-notify-send", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise DeliveryFailed(f"no answer within {timeout:g} s")
    if "error" in outcome:
        raise DeliveryFailed(outcome["error"])
    if not outcome.get("ok"):
        raise DeliveryFailed(_reason(outcome.get("log") or ""))


def _reason(log: str) -> str:
    """The library's last words on a failed send, one line (it logs the service's answer)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "the service refused the message"
