"""The accepted webhook requests (`daemon.payloads.AcceptedRequests`) on real files: what a start
hands again, the bodies runs get, segments that go once settled, delivery claims for 30 days
across restarts, a failed flush, and the accepted files of earlier versions.

The daemon-level paths (a stop before the daemon journalled a request, a settle lost with the
power, a full disk) are in tests/test_webhooks_server.py.
"""
from __future__ import annotations

import base64
import errno
import json
import os
from pathlib import Path

import pytest

from fastflow.daemon.payloads import (
    DELIVERY_KEEP_S,
    AcceptedRequests,
    UnreadableRequest,
    delivery_digest,
)
from fastflow.daemon.segmentlog import SegmentLog, segment_name
from fastflow.record import WebhookInput

pytestmark = pytest.mark.timeout(60)
T0 = 1_796_000_000.0  # 2026-11-30, seconds since the epoch


def message(state: Path, name: str, delivery: str | None = None, pipeline: str = "hook") -> dict:
    run_id = f"20261130T000000Z-{pipeline}-wh{name:0>16}"
    return {"pipeline": pipeline, "run_config": None, "request_id": f"20261130T000000Z-wh{name}",
            "requested_at": "2026-11-30T00:00:00+00:00", "run_id": run_id,
            "webhook": WebhookInput(delivery, str(state / "payload" / run_id)).to_json()}


def opened(state: Path, now: float = T0, **kw) -> AcceptedRequests:
    requests = AcceptedRequests(state, now=lambda: now, **kw)
    requests.open()
    return requests


def test_a_start_hands_again_only_what_is_neither_journalled_nor_recorded(tmp_path: Path):
    first = opened(tmp_path)
    names = ["queued", "running", "recorded", "lost"]
    runs = {n: message(tmp_path, n) for n in names}
    for n in names:
        first.add(runs[n], f"body of {n}".encode())
    assert first.waiting("hook") == 4
    first.close()
    again = opened(tmp_path)
    old_segments = again.log.segments()
    handed = again.recover({runs["queued"]["run_id"]: False, runs["running"]["run_id"]: True},
                           lambda run_id: run_id == runs["recorded"]["run_id"])
    assert [m["run_id"] for m in handed] == [runs["lost"]["run_id"]]
    assert again.pending(runs["recorded"]["run_id"]) is None
    assert again.waiting("hook") == 2  # queued and lost; running started
    assert not set(again.log.segments()) & set(old_segments)  # moved forward, then dropped
    again.close()
    third = opened(tmp_path)  # what was moved forward reads back, bodies included
    lost = runs["lost"]
    third.materialize(lost["run_id"], WebhookInput.from_json(lost["webhook"]))
    assert Path(lost["webhook"]["payload_file"]).read_bytes() == b"body of lost"
    assert Path(lost["webhook"]["payload_file"]).stat().st_mode & 0o777 == 0o600
    assert {r for r in ("queued", "running", "lost")
            if third.pending(runs[r]["run_id"])} == {"queued", "running", "lost"}


def test_materialize_counts_the_run_started_and_settle_forgets_it(tmp_path: Path):
    requests = opened(tmp_path)
    hook, other = message(tmp_path, "a"), message(tmp_path, "b", pipeline="other")
    requests.add(hook, b"a")
    requests.add(other, b"b")
    assert (requests.waiting("hook"), requests.waiting("other")) == (1, 1)
    requests.materialize(hook["run_id"], WebhookInput.from_json(hook["webhook"]))
    assert (requests.waiting("hook"), requests.pending(hook["run_id"]) is not None) == (0, True)
    requests.settle(hook["run_id"])
    requests.settle(hook["run_id"])  # twice: harmless
    assert requests.pending(hook["run_id"]) is None and requests.waiting("other") == 1
    requests.materialize("20261130T000000Z-hook-whffffffffffffffff",
                         WebhookInput(None, str(tmp_path / "p")))  # not stored: nothing to do
    assert not (tmp_path / "p").exists()


def test_a_damaged_record_is_an_unreadable_request(tmp_path: Path):
    requests = opened(tmp_path)
    run = message(tmp_path, "a")
    requests.add(run, b"payload")
    location = requests._outstanding[run["run_id"]].location
    with open(tmp_path / "webhooks" / "log" / segment_name(location.seq), "r+b") as handle:
        handle.seek(location.offset + location.length - 3)
        handle.write(b"XYZ")
    with pytest.raises(UnreadableRequest, match="cannot be read .* the sender must send"):
        requests.materialize(run["run_id"], WebhookInput.from_json(run["webhook"]))


def test_settled_segments_go_and_their_claims_stay_for_30_days(tmp_path: Path):
    clock = [T0]
    requests = AcceptedRequests(tmp_path, now=lambda: clock[0], segment_bytes=4096)
    requests.open()
    runs = [message(tmp_path, f"{n}", delivery=f"d-{n}") for n in range(12)]
    for run in runs:
        requests.add(run, b"x" * 600)  # about five to a segment
    for run in runs:
        requests.settle(run["run_id"])
    segments = requests.log.segments()
    assert len(segments) == 2  # the current one and the one made ahead; the rest went
    claims = list((tmp_path / "webhooks" / "claims").glob("*.json"))
    assert claims and all(p.stat().st_mode & 0o777 == 0o600 for p in claims)
    requests.close()
    digest = delivery_digest("hook", "d-0")
    again = AcceptedRequests(tmp_path, now=lambda: clock[0], segment_bytes=4096)
    again.open()
    assert again.claim(digest) == runs[0]["run_id"]  # from a claims file, after a restart
    assert again.claim(delivery_digest("hook", "d-11")) == runs[11]["run_id"]  # from the log
    assert again.claim(delivery_digest("other", "d-0")) is None  # per pipeline
    requested = 1_796_083_200.0 - 86_400  # 2026-11-30T00:00:00Z
    clock[0] = requested + DELIVERY_KEEP_S + 1
    assert again.claim(digest) is None
    again.recover({}, lambda run_id: False)  # compacts the last segments: their claims expire
    again.close()
    assert not list((tmp_path / "webhooks" / "claims").glob("*.json"))


def test_a_failed_flush_leaves_no_request_and_no_claim_after_a_restart(tmp_path: Path):
    def fdatasync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    log = SegmentLog(tmp_path / "webhooks" / "log", fdatasync=fdatasync)
    requests = AcceptedRequests(tmp_path, now=lambda: T0, log=log)
    requests.open()
    run = message(tmp_path, "a", delivery="d-1")
    with pytest.raises(OSError, match="not durable"):
        requests.add(run, b"body")
    assert requests.pending(run["run_id"]) is None
    assert requests.claim(delivery_digest("hook", "d-1")) is None
    log._fdatasync = os.fdatasync  # the disk is back: the void record is flushed at close
    requests.close()
    again = opened(tmp_path)
    assert again.pending(run["run_id"]) is None  # the record may be on disk: void
    assert again.claim(delivery_digest("hook", "d-1")) is None
    assert again.recover({}, lambda run_id: False) == []


def test_accepted_files_of_an_earlier_version_are_read_into_the_log(tmp_path: Path, caplog):
    old = tmp_path / "webhooks" / "deliveries"
    old.mkdir(parents=True)
    waiting = message(tmp_path, "1", delivery="d-waiting")
    (old / "1.json").write_text(json.dumps(
        {**waiting, "body_base64": base64.b64encode(b"old body").decode()}))
    claimed = message(tmp_path, "2", delivery="d-done")
    (old / "2.json").write_text(json.dumps(claimed))  # recorded: only the claim was kept
    (old / "3.json").write_text("{not json")
    requests = opened(tmp_path)
    assert requests.pending(waiting["run_id"]) == waiting
    assert requests.claim(delivery_digest("hook", "d-waiting")) == waiting["run_id"]
    assert requests.claim(delivery_digest("hook", "d-done")) == claimed["run_id"]
    assert sorted(p.name for p in old.iterdir()) == ["3.json"]  # left for a person
    assert "3.json: an accepted webhook request of an earlier version cannot be read" in \
        caplog.text
    requests.close()
    again = opened(tmp_path)
    [handed] = again.recover({}, lambda run_id: False)
    assert handed == waiting
    again.materialize(waiting["run_id"], WebhookInput.from_json(waiting["webhook"]))
    assert Path(waiting["webhook"]["payload_file"]).read_bytes() == b"old body"
    assert again.claim(delivery_digest("hook", "d-done")) == claimed["run_id"]
