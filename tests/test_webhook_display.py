"""Webhook runs as people see them: the status site's run page names the delivery id, the
history tables say `webhook`, `fastflow status` shows how the last run was started and
`fastflow history --json` carries the delivery id. Real results branch, real records."""
from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import SAMPLE_LOG, build_sample, git, utc_now

from fastflow.cli import main
from fastflow.model import RunStatus
from fastflow.record import Attempt, RunRecord, Trigger
from fastflow.results.store import ResultsStore
from fastflow.site import render_pipeline_pages, render_run_page

DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def test_the_run_page_names_the_delivery_id(tmp_path):
    data, runs_by_pipeline, _ = build_sample(tmp_path)
    record = dataclasses.replace(runs_by_pipeline["etl_daily"][0],
                                 trigger=Trigger("webhook", delivery_id=DELIVERY))
    html = render_run_page(data, record, SAMPLE_LOG)[
        f"runs/etl_daily/2026/11/{record.run_id}.html"].decode()
    assert f"<dd>webhook (delivery {DELIVERY})</dd>" in html


def test_a_delivery_id_is_escaped_on_the_run_page(tmp_path):
    data, runs_by_pipeline, _ = build_sample(tmp_path)
    record = dataclasses.replace(runs_by_pipeline["etl_daily"][0],
                                 trigger=Trigger("webhook", delivery_id="<b>x</b>&"))
    html = render_run_page(data, record, SAMPLE_LOG)[
        f"runs/etl_daily/2026/11/{record.run_id}.html"].decode()
    assert "<b>x</b>" not in html
    assert "webhook (delivery &lt;b&gt;x&lt;/b&gt;&amp;)" in html


def test_a_webhook_run_without_a_delivery_id_says_webhook(tmp_path):
    data, runs_by_pipeline, _ = build_sample(tmp_path)
    runs = list(runs_by_pipeline["etl_daily"])
    runs[0] = dataclasses.replace(runs[0], trigger=Trigger("webhook"))
    html = render_run_page(data, runs[0], SAMPLE_LOG)[
        f"runs/etl_daily/2026/11/{runs[0].run_id}.html"].decode()
    assert "<dd>webhook</dd>" in html
    pages = render_pipeline_pages(data, "etl_daily", runs)
    assert "<td>webhook</td>" in pages["pipelines/etl_daily/index.html"].decode()


@pytest.fixture()
def recorded(make_repo, tmp_path) -> tuple[Path, str]:
    repo = make_repo({"pipelines/hook/main.py": "print('hook')\n"})
    git("init", "-q", cwd=repo)
    store = ResultsStore(repo, tmp_path / "writer-journal", utc_now)
    start = utc_now().replace(microsecond=0) - timedelta(hours=1)
    run_id = f"{start:%Y%m%dT%H%M%SZ}-hook-wh0a1b2c3d"
    store.record_run(RunRecord(
        run_id=run_id, pipeline="hook", status=RunStatus.SUCCEEDED,
        trigger=Trigger("webhook", delivery_id=DELIVERY), started_at=start,
        finished_at=start + timedelta(seconds=2), duration_s=2.0, exit_code=0,
        attempts=(Attempt(1, start, start, 0, RunStatus.SUCCEEDED),),
    ), "hi\n")
    return repo, run_id


def test_status_shows_the_last_run_was_started_by_a_webhook(recorded):
    repo, run_id = recorded
    result = CliRunner().invoke(main, ["status", "--repo", str(repo)])
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("hook")]
    assert f"{run_id} (webhook)" in row
    data = json.loads(CliRunner().invoke(main, ["status", "--repo", str(repo), "--json"]).stdout)
    assert data["pipelines"][0]["last_trigger"] == "webhook"


def test_history_says_webhook_and_its_json_carries_the_delivery_id(recorded):
    repo, run_id = recorded
    result = CliRunner().invoke(main, ["history", "hook", "--repo", str(repo)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split()[:3] == [run_id, "succeeded", "webhook"]
    data = json.loads(CliRunner().invoke(main, ["history", "hook", "--repo", str(repo),
                                                "--json"]).stdout)
    assert data["runs"][0]["trigger"] == {"kind": "webhook", "schedule_id": None,
                                          "parent_run_id": None, "delivery_id": DELIVERY}
