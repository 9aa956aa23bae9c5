"""Flow pages of the status site: the DAG layout and its SVG, a flow run's page, a flow's page,
the overview's flows, and the pages published from a real results branch."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import SAMPLE_FLOW_RUN, make_daemon, sample_flow_record, utc_now, wait_for

from fastflow import repo as g
from fastflow.daemon.statedir import queue_remote_flow
from fastflow.errors import FastflowError
from fastflow.results.publish import SitePublisher
from fastflow.results.store import ResultsStore
from fastflow.site import (
    SiteData,
    flow_run_path,
    render_flow_pages,
    render_overview,
    views,
)
from fastflow.site.dag import DagNode, dag_svg, layout

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)
ID = SAMPLE_FLOW_RUN


def task_run(task: str) -> str:
    return f"20261202T083000Z-weather.{task}-7f3a09c2"


def record(flow_run_id: str = ID, status: str = "failed") -> dict:
    return sample_flow_record(flow_run_id, status)


def test_the_layout_puts_each_task_one_column_after_its_dependencies():
    nodes = [DagNode("a", (), "succeeded", "succeeded", "ok"),
             DagNode("b", (), "failed", "failed", "bad"),
             DagNode("c", ("a", "b"), "skipped", "skipped", "muted"),
             DagNode("d", ("a",), "running", "running", "info"),
             DagNode("e", ("c", "d"), "pending", "pending", "muted")]
    placed, width, height = layout(nodes)
    assert {k: (p.column, p.row) for k, p in placed.items()} == {
        "a": (0, 0), "b": (0, 1), "c": (1, 1), "d": (1, 0), "e": (2, 0)}  # d next to a
    assert (width, height) == (24 + 3 * 168 + 2 * 56, 24 + 2 * 48 + 18)
    assert placed["e"].y == placed["a"].y + (48 + 18) / 2  # a lone node is centred
    assert dag_svg(nodes, label="x") == dag_svg(nodes, label="x")  # deterministic


def test_a_flow_run_page_draws_the_dag_coloured_by_status_with_links_to_the_runs():
    pages = render_flow_pages(SiteData(now=NOW), "weather", [record()])
    page = pages[f"flows/weather/2026/12/{ID}.html"].decode()
    svg = page[page.index("<svg"):page.index("</svg>")]
    nodes = re.findall(r'<g class="ff-dag-node" data-task="(\w+)" data-status="(\w+)">', svg)
    assert nodes == [("get_a", "succeeded"), ("get_b", "failed"), ("merge", "skipped"),
                     ("report", "succeeded")]
    links = re.findall(r'<a href="([^"]+)" class="ff-dag-link">', svg)
    assert links == [f"../../../../runs/weather.{t}/2026/12/{task_run(t)}.html"
                     for t in ("get_a", "get_b", "report")]  # a skipped task has no run page
    assert svg.count('class="ff-edge"') == 3
    assert "<title>get_b: failed, 1m05s</title>" in svg and "<title>merge: skipped (get_b failed)</title>" in svg
    assert 'class="ff-node-status ff-bad"' in svg and ">failed · 1m05s</text>" in svg
    assert "<dt>Param <code>day</code></dt><dd><code>2026-12-01</code></dd>" in page
    assert '<a href="../../../../flows/weather/index.html">flow weather</a>' in page
    index = pages["flows/weather/index.html"].decode()
    assert f'<a class="mono" href="2026/12/{ID}.html">{ID}</a>' in index
    assert "<strong>1</strong> flow run recorded." in index and "Durations of the last 1 runs of flow weather" in index


def test_the_overview_lists_flows_with_their_last_run():
    page = render_overview(SiteData(now=NOW, flows={"weather": {"last": record()}}))["index.html"]
    text = page.decode()
    assert '<a class="pipe-name" href="flows/weather/index.html">weather</a>' in text
    assert f'<a href="flows/weather/2026/12/{ID}.html"><span class="badge badge-bad badge-sm"' in text


def test_flow_pages_published_from_a_real_results_branch(tmp_path: Path):
    g.init_repo(tmp_path / "repo.git", bare=True)
    store = ResultsStore(tmp_path / "repo.git", tmp_path / "journal", lambda: NOW)
    older = "20261201T083000Z-weather-11111111"
    store.record_flow(record(older, "succeeded") | {"tasks": []})
    publisher = SitePublisher(store, lambda: NOW, lambda: None)
    current = record()
    store.record_flow(current)
    pages = publisher.pages_for_flow_run(current)
    assert sorted(pages) == ["site/flows/weather/2026/12/" + ID + ".html",
                             "site/flows/weather/index.html", "site/index.html", "site/style.css"]
    index = pages["site/flows/weather/index.html"].decode()
    assert index.index(ID) < index.index(older)  # newest first
    assert "<strong>2</strong> flow runs recorded." in index
    assert 'href="flows/weather/index.html"' in pages["site/index.html"].decode()
    store.write_files(pages, "site")
    assert store.flows_on_branch() == ["weather"]
    assert [r["flow_run_id"] for r in store.recent_flow_runs("weather")] == [ID, older]


@pytest.mark.slow
def test_the_daemon_commits_a_flow_runs_pages_with_its_record(tmp_path: Path, origin):
    origin.push({
        "pipelines/hello/main.py": "print('hello')\n",
        ".fastflow/flows/two.json": json.dumps({"tasks": [
            {"id": "first", "script": "t.py"},
            {"id": "second", "script": "t.py", "depends_on": ["first"]}]}),
        ".fastflow/flows/tasks/t.py": "print('task')\n",
    })
    state = tmp_path / "state"
    daemon = make_daemon(origin.bare, state)
    daemon.start()
    try:
        flow_run_id = queue_remote_flow(state, "two", {}, utc_now())
        store = ResultsStore(origin.bare, tmp_path / "reader", utc_now)

        def ended() -> dict | None:
            daemon.tick(utc_now())  # the loop's round: the inbox, due tasks, finished runs
            try:
                record_ = store.read_flow(flow_run_id, "two")
            except FastflowError:
                return None
            return record_ if record_["status"] == "succeeded" else None

        done = wait_for(ended, timeout=120, what=f"flow run {flow_run_id} to succeed")
    finally:
        daemon.stop(grace=30)
    head = store.head()
    page = g.read_blob(store.repo, head, "site/" + flow_run_path("two", flow_run_id)).decode()
    assert '<g class="ff-dag-node" data-task="second" data-status="succeeded">' in page
    second = next(t for t in done["tasks"] if t["id"] == "second")
    assert views.run_page_path("two.second", second["run_id"]) in page
    assert g.read_blob(store.repo, head, "site/" + views.run_page_path("two.second",
                                                                        second["run_id"]))
    index = g.read_blob(store.repo, head, "site/flows/two/index.html").decode()
    assert flow_run_id in index
    assert 'href="flows/two/index.html"' in g.read_blob(store.repo, head, "site/index.html").decode()
