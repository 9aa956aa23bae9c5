"""What a webhook run gets (docs/webhooks.md, "What the run gets"): the `WebhookInput` travels
from the inbox request through the run journal to the executor; the run reads its payload and
headers, gets only the allowed env, and its payload is gone once it is recorded.

Until the HTTP intake queues them, the requests here are written the way it writes them:
`Inbox.post_run_request(..., webhook=WebhookInput(...))` with the body stored in
`statedir.webhook_payload_file`.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from fastflow.daemon.inbox import Inbox
from fastflow.daemon.runs import RunJournal, RunOrder
from fastflow.daemon.statedir import webhook_payload_dir, webhook_payload_file
from fastflow.record import Trigger, WebhookInput

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
WEBHOOK = WebhookInput(
    delivery_id="72d3162e-cc78-11e3-81ab-4c9367dc0958", payload_file="/state/webhooks/payload/r",
    headers={"Content-Type": "application/json", "X-GitHub-Event": "push"},
    env={"SOURCE": "github"},
)


def test_a_webhook_request_round_trips_through_the_inbox(tmp_path: Path):
    inbox = Inbox(tmp_path)
    request_id = inbox.post_run_request("report", {}, None, NOW, webhook=WEBHOOK,
                                        request_id="20261201T120000Z-wh0123456789abcdef")
    assert request_id == "20261201T120000Z-wh0123456789abcdef"
    [message] = inbox.read()
    assert message.webhook == WEBHOOK
    assert message.request_id == request_id


def test_a_run_request_without_webhook_reads_as_before(tmp_path: Path):
    inbox = Inbox(tmp_path)
    inbox.post_run_request("report", {"A": "1"}, None, NOW)
    [name] = [p.name for p in inbox.path.iterdir()]
    assert "webhook" not in json.loads((inbox.path / name).read_text())
    [message] = inbox.read()
    assert message.webhook is None and message.env == {"A": "1"}


def test_a_malformed_webhook_field_sets_the_request_aside(tmp_path: Path):
    inbox = Inbox(tmp_path)
    inbox.post_run_request("report", {}, None, NOW,
                           webhook=WebhookInput(None, "/p", {"X": "1"}, {}))
    [path] = [p for p in inbox.path.iterdir() if p.is_file()]
    data = json.loads(path.read_text())
    data["webhook"]["env"] = {"A": 1}
    path.write_text(json.dumps(data))
    assert inbox.read() == []
    [bad] = (inbox.path / "bad").iterdir()
    assert bad.name == path.name


def order(**changes) -> RunOrder:
    values = dict(run_id="20261201T120000Z-report-wh01", pipeline="report", commit="c" * 40,
                  root_tree="a" * 40, tree="b" * 40, queued_at=NOW,
                  trigger=Trigger(kind="webhook", delivery_id=WEBHOOK.delivery_id),
                  webhook=WEBHOOK)
    return RunOrder(**{**values, **changes})


def test_a_webhook_order_round_trips_through_the_journal(tmp_path: Path):
    journal = RunJournal(tmp_path)
    journal.create(order())
    assert journal.orders() == [order()]


def test_a_journal_entry_written_before_webhooks_still_loads(tmp_path: Path):
    journal = RunJournal(tmp_path)
    old = {  # as daemon/runs.py wrote it before webhooks: no webhook, no trigger.delivery_id
        "run_id": "20261201T120000Z-report-1a2b3c4d", "pipeline": "report", "commit": "c" * 40,
        "root_tree": "a" * 40, "tree": "b" * 40, "queued_at": "2026-12-01T12:00:00+00:00",
        "trigger": {"kind": "manual", "schedule_id": None, "slot": None, "parent_run_id": None},
        "run_config_id": None, "env": {"A": "1"}, "started_at": None,
    }
    (journal.dir / "20261201T120000Z-report-1a2b3c4d.json").write_text(json.dumps(old))
    [loaded] = journal.orders()
    assert loaded.webhook is None and loaded.trigger == Trigger(kind="manual")
    assert loaded.env == {"A": "1"}
    assert not (journal.dir / "bad").exists()


def test_the_payload_of_a_run_is_a_file_named_by_its_run_id(tmp_path: Path):
    assert webhook_payload_dir(tmp_path) == tmp_path / "webhooks" / "payload"
    assert webhook_payload_file(tmp_path, "20261201T120000Z-report-wh01") == \
        tmp_path / "webhooks" / "payload" / "20261201T120000Z-report-wh01"
