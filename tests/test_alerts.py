"""When to notify whom (daemon.alert_rules), with a fixed clock; how a message reads (notify.message);
and what config.yaml's and pipeline.json's `notifications` accept and refuse, by exact text."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from helpers import sample_record

from fastflow.config.pipeline import parse_pipeline_metadata
from fastflow.config.repo import parse_repo_config, read_repo_config
from fastflow.daemon.alert_rules import (
    Groups,
    Tally,
    missed_slots,
    run_events,
    soft_limit_events,
    stuck_events,
    stuck_limit,
)
from fastflow.daemon.alerts import record_path
from fastflow.errors import SecretsError
from fastflow.model import NotificationTarget, NotifyEvent, RunStatus
from fastflow.notify.courier import Courier, Parcel
from fastflow.notify.delivery import DeliveryFailed
from fastflow.notify.message import Event, compose, tail_lines
from fastflow.record import ErrorInfo, Resources
from fastflow.schedule.spec import Schedule, ScheduleKind
from fastflow.secrets.age import X25519Identity
from fastflow.secrets.runtime import notification_urls
from fastflow.secrets.store import grant_secret, init_secrets, set_secret
from fastflow.site import SiteData
from fastflow.site.render import render_overview

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
E = NotifyEvent


def target(*events: NotifyEvent, **options) -> NotificationTarget:
    return NotificationTarget(name=options.pop("name", "ops"), url="json://127.0.0.1:9/hook",
                              events=events, **options)


def run(status: RunStatus, i: int = 0, **changes):
    return sample_record("etl", i, RunStatus(status), **changes)


def kinds_over(statuses, tgt, *, step=timedelta(minutes=1)):
    """Feed runs of `statuses` one minute apart; the kinds `tgt` hears for each."""
    tally, heard, now = Tally(), [], NOW
    for i, status in enumerate(statuses):
        tally, found = run_events(tally, run(status, i), [tgt], now)
        heard.append([kind for _, kind, _ in found])
        now += step
    return heard


def test_failure_is_sent_once_per_streak_and_recovery_once_after_it():
    heard = kinds_over(["succeeded", "failed", "failed", "timed_out", "succeeded", "succeeded",
                        "oom_killed"], target(E.FAILURE, E.RECOVERY))
    assert heard == [[], ["failure"], [], [], ["recovery"], [], ["failure"]]


def test_the_first_outcome_known_may_be_a_failure_and_cancelled_or_skipped_change_nothing():
    heard = kinds_over(["failed", "cancelled", "skipped", "failed", "cancelled", "succeeded"],
                       target(E.FAILURE, E.RECOVERY))
    assert heard == [["failure"], [], [], [], [], ["recovery"]]


def test_a_refused_request_never_ran_and_changes_nothing():
    refused = run("failed", error=ErrorInfo("refused", "pipeline 'etl' is disabled"))
    tally = Tally(last="success", failures=0)
    assert run_events(tally, refused, [target(E.FAILURE, E.EVERY_FAILURE)], NOW) == (tally, [])


def test_every_failure_after_n_and_lost_counts_as_a_failure():
    assert kinds_over(["failed", "lost", "failed"], target(E.EVERY_FAILURE)) == \
        [["every_failure"]] * 3
    assert kinds_over(["failed", "failed", "failed", "failed", "succeeded", "failed", "failed",
                       "failed"], target(E.AFTER, after=3)) == \
        [[], [], ["after"], [], [], [], [], ["after"]]


def test_a_run_matches_one_kind_per_target_the_most_specific():
    heard = kinds_over(["failed", "failed", "failed"],
                       target(E.FAILURE, E.AFTER, E.EVERY_FAILURE, after=2))
    assert heard == [["failure"], ["after"], ["every_failure"]]


def test_repeat_sends_a_failure_again_only_once_repeat_seconds_passed():
    tgt = target(E.FAILURE, repeat=3600)
    heard = kinds_over(["failed"] * 6, tgt, step=timedelta(minutes=30))
    assert heard == [["failure"], [], ["failure"], [], ["failure"], []]
    assert kinds_over(["failed"] * 3, target(E.FAILURE), step=timedelta(hours=5)) == \
        [["failure"], [], []]


def test_the_detail_says_how_many_failures_a_recovery_ends():
    tally = Tally(last="failure", failures=3)
    _, found = run_events(tally, run("succeeded"), [target(E.RECOVERY)], NOW)
    assert [(k, d) for _, k, d in found] == [("recovery", "after 3 failed runs")]
    tally, found = run_events(Tally(last="success"), run("failed"), [target(E.FAILURE)], NOW)
    assert (tally.last, tally.failures, found[0][2]) == ("failure", 1, "")


def test_soft_limit_is_heard_for_a_run_that_went_over_one():
    events = ({"t": 12.0, "kind": "memory", "value": 420, "limit": 384},
              {"t": 20.0, "kind": "cpu", "value": 2.1, "limit": 1.5})
    record = run("succeeded", resources=Resources(soft_limit_events=events))
    _, found = run_events(Tally(), record, [target(E.SOFT_LIMIT)], NOW)
    assert [(k, d) for _, k, d in found] == [
        ("soft_limit", "first over its memory soft limit (420 > 384) 12.0 s into the run; "
                       "2 excesses in all")]
    _, found = run_events(Tally(), run("succeeded"), [target(E.SOFT_LIMIT)], NOW)
    assert found == []


def test_a_soft_limit_told_while_running_is_heard_once_and_not_again_with_the_record():
    first = {"t": 3.0, "kind": "cpu", "value": 0.6, "limit": 0.2}
    ops, other = target(E.SOFT_LIMIT), target(E.FAILURE, name="other")
    record = run("succeeded", resources=Resources(soft_limit_events=(first,)))
    tally, found = soft_limit_events(Tally(), record.run_id, first, [ops, other], NOW)
    assert [(t.name, k, d) for t, k, d in found] == [
        (ops.name, "soft_limit", "first over its cpu soft limit (0.6 > 0.2) 3.0 s into the run")]
    again, found = soft_limit_events(tally, record.run_id, first, [ops], NOW)
    assert found == [] and again == tally  # a second excursion of the same run: nothing
    tally, found = run_events(tally, record, [ops], NOW)
    assert found == []  # told already, while it ran
    assert not any(record.run_id in key for key in tally.sent)  # forgotten once it ended


def test_durations_of_succeeded_runs_feed_the_stuck_median():
    tally = Tally()
    for i, duration in enumerate([10.0, 20.0, 30.0, 1000.0]):
        status = "succeeded" if duration < 1000 else "failed"
        tally, _ = run_events(tally, run(status, i, duration_s=duration), [], NOW)
    assert tally.durations == (10.0, 20.0, 30.0)
    assert stuck_limit(target(E.STUCK, stuck_factor=3), tally.durations) == 60.0
    assert stuck_limit(target(E.STUCK, stuck_after=5), ()) == 5
    assert stuck_limit(target(E.STUCK), (10.0, 20.0)) is None  # too few runs for a median


def test_stuck_is_heard_once_per_run_unless_repeat():
    tally = Tally(durations=(10.0, 20.0, 30.0))
    started = NOW - timedelta(seconds=61)
    tgt = target(E.STUCK)
    tally, found = stuck_events(tally, "r1", started, [tgt], NOW)
    assert [(k, d) for _, k, d in found] == [
        ("stuck", "running for 61 s, limit 60 s, 3 x the median of 20 s")]
    _, again = stuck_events(tally, "r1", started, [tgt], NOW + timedelta(hours=1))
    assert again == []
    _, early = stuck_events(Tally(durations=(10.0, 20.0, 30.0)), "r2", NOW, [tgt], NOW)
    assert early == []
    tally2, _ = stuck_events(tally, "r1", started, [replace(tgt, repeat=600)], NOW)
    _, repeated = stuck_events(tally2, "r1", started, [replace(tgt, repeat=600)],
                               NOW + timedelta(seconds=601))
    assert len(repeated) == 1


def test_a_run_that_ended_is_forgotten_by_stuck():
    tally = Tally(durations=(10.0, 20.0, 30.0))
    record = run("succeeded", duration_s=100.0)
    tally, _ = stuck_events(tally, record.run_id, NOW - timedelta(seconds=90), [target(E.STUCK)],
                            NOW)
    assert f"ops/stuck/{record.run_id}" in tally.sent
    tally, _ = run_events(tally, record, [target(E.STUCK)], NOW)
    assert tally.sent == {}


def test_missed_slots_are_those_without_a_started_run_once_the_grace_passed():
    schedule = Schedule(id="etl", pipeline="etl", kind=ScheduleKind.INTERVAL, interval=600)
    since = NOW - timedelta(minutes=40)
    started = {s for s in []}
    until, missed = missed_slots(schedule, since, 300, NOW, lambda run_id: run_id in started)
    # slots at -30, -20, -10 min; the one at 0 is still within its 5 minutes of grace
    assert missed == [NOW - timedelta(minutes=m) for m in (30, 20, 10)]
    assert until == NOW - timedelta(minutes=10)
    ran = {f"{(NOW - timedelta(minutes=20)):%Y%m%dT%H%M%SZ}-etl"}
    _, missed = missed_slots(schedule, since, 300, NOW, lambda run_id: run_id in ran)
    assert missed == [NOW - timedelta(minutes=30), NOW - timedelta(minutes=10)]


def test_groups_hold_a_targets_events_for_its_window_then_give_them_once():
    groups, tgt = Groups(), target(E.FAILURE, group_window=30)
    other = target(E.FAILURE, name="mail", group_window=0)
    ev = [Event("failure", NOW + timedelta(seconds=s), "etl") for s in (0, 10, 25)]
    assert groups.add(tgt, ev[0], NOW) is True
    assert groups.add(tgt, ev[1], NOW + timedelta(seconds=10)) is False
    assert groups.add(other, ev[1], NOW + timedelta(seconds=10)) is True
    assert groups.next_at == NOW + timedelta(seconds=10)
    assert [g.target.name for g in groups.due(NOW + timedelta(seconds=10))] == ["mail"]
    groups.add(tgt, ev[2], NOW + timedelta(seconds=25))
    assert groups.due(NOW + timedelta(seconds=29)) == []
    [group] = groups.due(NOW + timedelta(seconds=30))
    assert group.events == [ev[0], ev[1], ev[2]] and groups.next_at is None


def test_a_message_names_pipeline_status_run_commit_duration_link_and_log_lines():
    event = Event("failure", NOW, "etl", run_id="20261123T090000Z-etl-ab12", status="failed",
                  commit="0123456789abcdef", duration_s=12.3, detail="",
                  log_tail=("step 1", "Traceback: boom"),
                  run_url="https://ci.example.org/runs/etl/2026/11/20261123T090000Z-etl-ab12.html")
    message = compose([event])
    assert message.title == "Fast-Flow: etl: failed"
    assert message.type == "failure"
    assert message.body == (
        "etl: failed\n"
        "status failed, run 20261123T090000Z-etl-ab12, commit 0123456789ab, took 12.3s\n"
        "https://ci.example.org/runs/etl/2026/11/20261123T090000Z-etl-ab12.html\n"
        "at 2026-11-23T09:00:00+00:00\n"
        "last lines of the log:\n"
        "    step 1\n"
        "    Traceback: boom")


def test_a_group_is_one_message_listing_its_events_in_order():
    events = [Event("recovery", NOW + timedelta(seconds=5), "etl", detail="after 1 failed run"),
              Event("failure", NOW, "etl")]
    message = compose(events)
    assert message.title == "Fast-Flow: 2 events: etl: failed; etl: recovered"
    assert message.type == "failure"
    assert message.body.index("etl: failed") < message.body.index("etl: recovered")
    assert compose([events[0]]).type == "success"
    assert tail_lines("a\n\nb\nc\n", 2) == ("b", "c")
    assert "\x1b" not in compose([Event("failure", NOW, "etl", log_tail=("\x1b[31mred",))]).body


def test_a_delivery_record_lives_in_the_month_of_its_id():
    assert record_path("20261123T090000Z-ops-ab12") == \
        "notifications/2026/11/20261123T090000Z-ops-ab12.json"


# --- configuration ------------------------------------------------------------------------------

FILE = ".fastflow/config.yaml"


def errors(text: str) -> list[str]:
    config, problems = read_repo_config(text)
    assert config is None
    return [str(p) for p in problems]


def test_config_yaml_targets_with_defaults_names_and_options():
    config, warnings = parse_repo_config(
        "site_url: https://ci.example.org/ff/\n"
        "notifications:\n"
        "  - url: json://127.0.0.1:8080/hook\n"
        "  - url: json://127.0.0.1:8081/hook\n"
        "    events: [failure, after, stuck]\n"
        "    after: 2\n"
        "    stuck_after: 600\n"
        "    group_window: 0\n"
        "  - {secret: SLACK_URL, name: slack, repeat: 3600, missed_grace: 60}\n")
    first, second, third = config.notifications
    assert (first.name, first.events, first.group_window) == (
        "json", (E.FAILURE, E.RECOVERY, E.GIVEN_UP, E.SCHEDULER_STALE), 30.0)
    assert (second.name, second.events, second.after, second.stuck_after,
            second.group_window) == ("json-2", (E.FAILURE, E.AFTER, E.STUCK), 2, 600.0, 0.0)
    assert (third.name, third.secret, third.url, third.repeat) == ("slack", "SLACK_URL", None,
                                                                     3600.0)
    assert config.site_url == "https://ci.example.org/ff"
    assert [str(w) for w in warnings] == [
        f'{FILE}: notifications[2] (name "slack").missed_grace: has no effect without "missed" '
        "in events; add it to events or remove the key"]


@pytest.mark.parametrize("text, message", [
    ("notifications: {slack: x}",
     'notifications: {"slack": "x"} is not a list of targets; write [{"url": ...}] or '
     '[{"secret": "SLACK_URL"}] (docs/notifications.md)'),
    ("notifications: [json://x]",
     'notifications[0]: "json://x" is not a target; write {"url": ...} or '
     '{"secret": "SLACK_URL"}'),
    ("notifications: [{url: 'hooks.example.org/x?token=s3cr3t'}]",
     'notifications[0].url: is not a notification URL (scheme://...); write one such as '
     '"json://hooks.example.org/fastflow" or "mailto://user:pass@example.org", or keep it in '
     'the secrets file and write {"secret": "NAME"}'),
    ("notifications: [{url: 'json://a', secret: A}]",
     "notifications[0].secret: cannot be combined with url; give the URL in the file or the "
     "name of the secret holding it, not both"),
    ("notifications: [{events: [failure]}]",
     'notifications[0]: has neither url nor secret; write {"url": ...} or {"secret": '
     '"SLACK_URL"} (a secrets-file entry holding the URL)'),
    ("notifications: [{url: 'json://a', events: [failure, recover]}]",
     'notifications[0].events: item 1: "recover" is not one of "failure" or "recovery" or '
     '"every_failure" or "after" or "missed" or "stuck" or "soft_limit" or "given_up" or '
     '"scheduler_stale"; did you mean "recovery"?'),
    ("notifications: [{url: 'json://a', events: []}]",
     'notifications[0].events: [] is not a non-empty list of events; write ["failure", '
     '"recovery"]'),
    ("notifications: [{url: 'json://a', name: ops}, {url: 'json://b', name: ops}]",
     'notifications[1] (name "ops").name: "ops" names another target already; give each '
     "target its own name"),
    ("notifications: [{url: 'json://a', events: [after], after: 0}]",
     "notifications[0].after: 0 is not a whole number >= 1"),
    ("notifications: [{url: 'json://a', repeat: 0}]",
     "notifications[0].repeat: 0 is not a number of seconds > 0; use a number such as 60"),
    ("notifications: [{secret: 'FASTFLOW_X'}]",
     'notifications[0].secret: "FASTFLOW_X" is not a valid secret name; use letters, digits '
     "and '_', not starting with a digit or FASTFLOW_"),
    ("site_url: ci.example.org",
     'site_url: "ci.example.org" is not an http(s) URL; write e.g. "https://ci.example.org"'),
])
def test_config_yaml_notification_errors_name_the_file_the_field_and_the_fix(text, message):
    assert errors(text) == [f"{FILE}: {message}"]


def test_a_token_in_a_bad_url_is_never_echoed():
    [message] = errors("notifications: [{url: 'hooks.example.org/x?token=s3cr3t'}]")
    assert "s3cr3t" not in message


def pipeline_targets(metadata: dict, config_text: str = ""):
    config, _ = parse_repo_config(config_text)
    meta = parse_pipeline_metadata(json.dumps(metadata), name="etl",
                                   file="pipelines/etl/pipeline.json", config=config)
    return meta, [(t.name, t.pipeline) for t in meta.values.get("notifications", ())]


DEFAULTS = "notifications:\n  - {url: 'json://127.0.0.1:1/a', name: ops}\n"


def test_pipeline_json_adds_to_the_defaults_or_replaces_them():
    assert pipeline_targets({}, DEFAULTS)[1] == [("ops", None)]
    assert pipeline_targets({"notifications": [{"secret": "ETL_HOOK"}]}, DEFAULTS)[1] == [
        ("ops", None), ("ETL_HOOK", "etl")]
    assert pipeline_targets({"notifications": {"inherit": False, "targets": [
        {"url": "mailto://etl@example.org", "name": "etl-mail"}]}}, DEFAULTS)[1] == [
        ("etl-mail", "etl")]
    assert pipeline_targets({"notifications": {"inherit": False}}, DEFAULTS)[1] == []


@pytest.mark.parametrize("value, message", [
    ("json://x", 'notifications: "json://x" is not a list of targets or an object; write '
                 '[{"url": ...}] (added to config.yaml\'s) or {"inherit": false, "targets": '
                 '[...]} (instead of them)'),
    ([{"url": "json://b", "name": "ops"}],
     'notifications[0] (name "ops").name: "ops" names another target already; give each '
     "target its own name"),
    ({"inherit": "no"},
     'notifications.inherit: "no" is not a boolean; use true or false (without quotes)'),
])
def test_pipeline_json_notification_errors(value, message):
    meta, _ = pipeline_targets({"notifications": value}, DEFAULTS)
    assert [str(p) for p in meta.problems] == [f"pipelines/etl/pipeline.json: {message}"]


def test_the_overview_lists_the_last_deliveries():
    deliveries = [
        {"id": "20261123T090000Z-ops-ab12", "target": "ops", "to": "secret OPS_HOOK",
         "outcome": "failed", "queued_at": NOW.isoformat(),
         "events": [{"kind": "failure", "pipeline": "etl"}],
         "attempts": [{"n": 1, "outcome": "failed", "error": "no answer within 20 s"}] * 4},
        {"id": "20261123T085900Z-mail-cd34", "target": "mail", "to": "mailto://h/<x>",
         "outcome": "delivered", "queued_at": NOW.isoformat(),
         "events": [{"kind": "recovery", "pipeline": "etl"}], "attempts": [{"n": 1}]}]
    html = render_overview(SiteData(now=NOW, notifications=deliveries))["index.html"].decode()
    section = html[html.index('id="notifications-title"'):]
    assert section.index(">ops<") < section.index(">mail<")
    assert '<span class="tag tag-bad">failed</span> <span class="muted">4 attempts</span>' in section
    assert "no answer within 20 s" in section and "etl failure" in section
    assert "mailto://h/&lt;x&gt;" in section and "1 attempt<" in section
    assert "notifications-title" not in render_overview(SiteData(now=NOW))["index.html"].decode()


def test_the_courier_retries_reports_every_attempt_and_never_records_a_token():
    token = "TIiajkdnlazkcOXrIdevi7FQ"
    url = f"slack://T1JJ3T3L2/A1BRTD4JD/{token}/#ops"
    calls, reports = [], []

    def refuse(to, message, timeout):
        calls.append((to, timeout))
        raise DeliveryFailed(f"Failed to send to https://hooks.slack.com/services/T1JJ3T3L2/"
                             f"A1BRTD4JD/{token}: 404 - no_team")

    courier = Courier(reports.append, lambda: NOW, attempts=3, retry_delay=0.01, timeout=7,
                      send=refuse)
    message = compose([Event("failure", NOW, "etl")])
    courier.post(Parcel("20261123T090000Z-slack-ab12", "slack", "slack://T...2/A...D/T...Q/",
                        url, message, NOW))
    assert courier.wait_idle(10)
    courier.stop()
    assert calls == [(url, 7)] * 3
    assert [r["outcome"] for r in reports] == ["pending", "pending", "failed"]
    last = reports[-1]
    assert [a["n"] for a in last["attempts"]] == [1, 2, 3]
    assert last["attempts"][0]["error"] == \
        "Failed to send to https://hooks.slack.com/services/***/***/***: 404 - no_team"
    assert token not in json.dumps(reports) and last["to"] == "slack://T...2/A...D/T...Q/"


def test_a_url_the_library_does_not_know_is_not_retried():
    reports = []
    courier = Courier(reports.append, lambda: NOW, attempts=4, retry_delay=0.01)
    courier.post(Parcel("20261123T090000Z-x-ab12", "x", "nope://...", "nope://h/x",
                        compose([Event("failure", NOW, "etl")]), NOW))
    assert courier.wait_idle(10)
    courier.stop()
    [report] = reports
    assert (report["outcome"], len(report["attempts"])) == ("failed", 1)
    assert report["attempts"][0]["error"].startswith(
        "the notification library knows no service for this URL")


@pytest.fixture
def secrets_repo(tmp_path):
    identity = X25519Identity.generate()
    path = tmp_path / ".fastflow" / "secrets.enc.yaml"
    init_secrets(path, [identity.recipient], NOW, tmp_path)
    set_secret(path, "OPS_URL", "json://hooks/ops-Zq9", [identity], NOW)
    set_secret(path, "ETL_URL", "json://hooks/etl-Zq9", [identity], NOW)
    grant_secret(path, "ETL_URL", ["etl"], [identity], NOW)
    return tmp_path, {"SOPS_AGE_KEY": identity.to_string(), "SOPS_AGE_KEY_FILE": "",
                      "SOPS_AGE_KEY_CMD": ""}


def test_a_targets_url_comes_from_the_secrets_file_granted_as_for_runs(secrets_repo):
    root, environ = secrets_repo
    config = parse_repo_config("")[0]
    assert notification_urls(root, config, {"OPS_URL": None, "ETL_URL": "etl"}, environ) == {
        "OPS_URL": "json://hooks/ops-Zq9", "ETL_URL": "json://hooks/etl-Zq9"}
    with pytest.raises(SecretsError) as refused:
        notification_urls(root, config, {"OPS_URL": "etl"}, environ)
    assert str(refused.value) == (
        ".fastflow/secrets.enc.yaml: notifications of a pipeline name secrets not granted to "
        "it: OPS_URL (pipeline etl) (grant with `fastflow secrets grant NAME PIPELINE`)")
    with pytest.raises(SecretsError) as missing:
        notification_urls(root, config, {"SLACK_URL": None}, environ)
    assert str(missing.value) == (
        ".fastflow/secrets.enc.yaml: notifications name secrets that do not exist: SLACK_URL "
        "(create them with `fastflow secrets set NAME`)")
    (root / ".fastflow" / "secrets.enc.yaml").unlink()
    with pytest.raises(SecretsError) as none:
        notification_urls(root, config, {"SLACK_URL": None}, environ)
    assert str(none.value) == (
        ".fastflow/secrets.enc.yaml: does not exist, but notifications name secrets SLACK_URL; "
        "create it with `fastflow secrets init` and `fastflow secrets set NAME`")
