"""The static status site: pages from real pipeline folders (discovered from files) and records
(the sample of `helpers.build_sample`, shared with test_site_browser)."""
from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import html5lib
import pytest
from helpers import SAMPLE_LOG, SAMPLE_NOW, build_sample, sample_record, write_files

from fastflow.config.repo import default_repo_config
from fastflow.deploy.discovery import discover
from fastflow.errors import FastflowError
from fastflow.model import Problem, RunStatus, Severity
from fastflow.record import RunRecord
from fastflow.site import (
    PipelineSummary,
    build_site,
    cron_words,
    interval_words,
    pages_for_new_run,
    render_all,
    render_overview,
    render_pipeline_pages,
    render_run_page,
)


def text(pages: dict[str, bytes], path: str) -> str:
    return pages[path].decode("utf-8")


@pytest.fixture
def sample(tmp_path):
    return build_sample(tmp_path)


@pytest.fixture
def site(sample):
    return render_all(*sample)


# --- the overview ------------------------------------------------------------------------------


def test_overview_lists_every_pipeline_problems_first(site, sample):
    html = text(site, "index.html")
    assert "style.css" in site
    for name in ("etl_daily", "every_15", "minimal", "broken"):
        assert f'href="pipelines/{name}/index.html"' in html
    assert html.index("Needs attention") < html.index("All pipelines")
    assert "schedules[2].cron" in html
    assert "is not a valid cron &lt;expression&gt;" in html
    assert "Invalid pipelines" in html and "timeout" in html


def test_overview_shows_status_rate_sparkline_schedule_and_next_run(site):
    html = text(site, "index.html")
    assert 'data-status="succeeded"' in html and "✓</span> succeeded" in html
    # every_15: succeeded, cancelled, lost, (skipped not counted), failed -> 1 of 4
    assert ">25%<" in html and "1 of 4 recent runs succeeded" in html
    assert 'class="ff-chart ff-spark"' in html
    assert "every weekday (Monday to Friday) at 03:00 (UTC)" in html
    assert "every 15 minutes" in html
    assert "2026-11-22 15:45 CET" in html and "in 15 min" in html
    assert "manual only" in html  # minimal has no schedule


def test_heartbeat_alive_then_stale_then_absent(sample):
    data = sample[0]
    assert "Scheduler: alive" in text(render_overview(data), "index.html")
    stale = dataclasses.replace(data, heartbeat=SAMPLE_NOW - timedelta(minutes=4))
    html = text(render_overview(stale), "index.html")
    assert "heartbeat-stale" in html and "stale: the scheduler may be down" in html
    assert "4 min ago" in html
    none = dataclasses.replace(data, heartbeat=None)
    assert "no heartbeat recorded" in text(render_overview(none), "index.html")


# --- pipeline pages and pagination -------------------------------------------------------------


def test_pipeline_page_has_description_tags_config_schedules_charts_reasons(site):
    html = text(site, "pipelines/etl_daily/index.html")
    assert "Loads yesterday&#39;s orders into the warehouse." in html
    assert '<span class="tag">nightly</span>' in html
    assert "<code>mem_hard_limit</code>" in html and "512m" in html
    assert "/repo/" not in html  # no host paths: the page is the same on every machine
    assert "Durations of the last 50 runs of etl_daily" in html
    assert "Peak memory of the last 50 runs of etl_daily" in html
    assert "hard memory limit: 512 MiB" in html
    assert "failed: failed &lt;b&gt;" in html  # failure reasons, escaped
    assert "120</strong> runs recorded" in html
    assert 'href="history-1.html"' in html and 'href="history-3.html"' in html


def test_invalid_pipeline_page_lists_its_problems(site):
    html = text(site, "pipelines/broken/index.html")
    assert "This pipeline is invalid" in html and "timeout" in html
    assert "No runs yet." in html


def test_history_pages_are_numbered_from_the_oldest(site, sample):
    etl = sample[1]["etl_daily"]
    first = text(site, "pipelines/etl_daily/history-1.html")
    third = text(site, "pipelines/etl_daily/history-3.html")
    assert etl[-1].run_id in first and etl[-50].run_id in first and etl[-51].run_id not in first
    assert etl[0].run_id in third and third.count('<th scope="row"><a class="mono"') == 20
    assert "Runs 101–120" in third
    assert 'href="history-2.html">Older' in third and "Newer runs" not in third
    assert "pipelines/etl_daily/history-4.html" not in site


def test_adding_a_run_changes_only_a_bounded_set_of_pages(sample):
    data, runs_by_pipeline, logs = sample
    before = render_all(data, runs_by_pipeline, logs)
    etl = runs_by_pipeline["etl_daily"]
    new = sample_record("etl_daily", 500, RunStatus.FAILED,
                      run_id="20261122T142900Z-etl_daily-new1")
    after_runs = {**runs_by_pipeline, "etl_daily": [new, *etl]}
    logs = {**logs, new.run_id: "2026-11-22T14:29:00.000Z stderr | oops\n"}
    after = render_all(data, after_runs, logs)
    changed = {p for p in after if before.get(p) != after[p]}
    assert changed == {"index.html", "pipelines/etl_daily/index.html",
                       "pipelines/etl_daily/history-3.html", f"runs/etl_daily/2026/11/{new.run_id}.html"}
    incremental = pages_for_new_run(data, new, logs[new.run_id], [new, *etl[:50]],
                                    total_runs=121)
    assert set(incremental) == changed | {"style.css"}
    assert all(incremental[p] == after[p] for p in incremental)


def test_a_run_that_opens_a_page_also_rerenders_the_previous_page(sample):
    data, runs_by_pipeline, logs = sample
    etl = runs_by_pipeline["etl_daily"][:100]  # 100 runs: pages 1 and 2 are full
    full = render_all(data, {"etl_daily": etl}, logs)
    new = sample_record("etl_daily", 501, RunStatus.SUCCEEDED,
                      run_id="20261122T142900Z-etl_daily-new2")
    pages = pages_for_new_run(data, new, "", [new, *etl[:50]], total_runs=101)
    assert {"pipelines/etl_daily/history-3.html", "pipelines/etl_daily/history-2.html"} <= set(pages)
    assert "pipelines/etl_daily/history-1.html" not in pages
    assert 'href="history-3.html">← Newer' in text(pages, "pipelines/etl_daily/history-2.html")
    assert full["pipelines/etl_daily/history-2.html"] != pages["pipelines/etl_daily/history-2.html"]


def test_pages_for_new_run_refuses_too_short_a_window(sample):
    data, runs_by_pipeline, _ = sample
    etl = runs_by_pipeline["etl_daily"]
    with pytest.raises(ValueError, match="needs the newest 51 runs, got 10"):
        pages_for_new_run(data, etl[0], "", etl[:10], total_runs=120)


def test_a_window_renders_only_complete_history_pages(sample):
    data, runs_by_pipeline, _ = sample
    etl = runs_by_pipeline["etl_daily"]
    pages = render_pipeline_pages(data, "etl_daily", etl[:75], total_runs=120)
    assert sorted(pages) == ["pipelines/etl_daily/history-2.html",  # runs 51-100 of 46-120
                             "pipelines/etl_daily/history-3.html", "pipelines/etl_daily/index.html"]


# --- run pages ---------------------------------------------------------------------------------


def test_run_page_shows_attempts_waits_commit_trigger_and_truncation(sample):
    data, runs_by_pipeline, _ = sample
    record = runs_by_pipeline["etl_daily"][0]
    html = text(render_run_page(data, record, SAMPLE_LOG), f"runs/etl_daily/2026/11/{record.run_id}.html")
    assert '<code title="0123456789abcdef0123456789abcdef01234567">0123456789ab</code>' in html
    assert html.count('<th scope="row" class="num">') == 3
    assert html.count('<td class="num">5 s</td>') == 2  # the waits before attempts 2 and 3
    assert "schedule etl_daily.cron (slot 2026-11-22 13:30:00 UTC)" in html
    assert "Log truncated." in html
    assert "memory reached 400 MiB (soft limit 384 MiB) 20 s after the start" in html
    assert "Memory over time: peak" in html and "soft memory limit 384 MiB" in html
    assert "CPU over time: peak" in html and "hard CPU limit 2 cores" in html


def test_run_log_escapes_html_and_marks_stderr(sample):
    data, runs_by_pipeline, _ = sample
    record = runs_by_pipeline["etl_daily"][0]
    html = text(render_run_page(data, record, SAMPLE_LOG), f"runs/etl_daily/2026/11/{record.run_id}.html")
    assert "<script>" not in html and "<b>boom" not in html
    assert "starting &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert ('<span class="ln ln-stderr"><span class="ts" title="2026-11-22T14:00:01.000Z">'
            '14:00:01.000</span><span class="stream stream-stderr">stderr</span>'
            '<span class="tx">Traceback &amp; &lt;b&gt;boom&lt;/b&gt;</span>\n</span>') in html
    assert '<span class="ln ln-omitted"><span class="tx">--- 12345 bytes omitted' in html
    assert '<span class="ln ln-plain"><span class="tx">a line without prefix</span>' in html


def test_run_page_names_the_node_that_ran_it(sample):
    data, runs_by_pipeline, _ = sample
    record = runs_by_pipeline["etl_daily"][0]
    on_node = dataclasses.replace(record, environment=dataclasses.replace(
        record.environment, node="swarm-node-2"))
    html = text(render_run_page(data, on_node, SAMPLE_LOG), f"runs/etl_daily/2026/11/{record.run_id}.html")
    assert "swarm-node-2" in html and "Node" in html
    plain = text(render_run_page(data, record, SAMPLE_LOG), f"runs/etl_daily/2026/11/{record.run_id}.html")
    assert ">Node<" not in plain  # an executor that does not name the node: no row


def test_run_page_links_the_downstream_runs_it_started_and_says_why_one_was_skipped(sample):
    data, runs_by_pipeline, _ = sample
    record = dataclasses.replace(runs_by_pipeline["etl_daily"][0], downstream=(
        {"pipeline": "report", "run_config_id": "prod", "reason": "route full",
         "run_id": "20261122T150000Z-report-0a1b2c3d", "skipped": None},
        {"pipeline": "archive", "run_config_id": None, "reason": "success", "run_id": None,
         "skipped": "pipeline 'archive' is disabled (\"enabled\": false at commit 0123456789ab); "
                    "enable it and push"},
        {"pipeline": "laptop", "run_config_id": None, "reason": "success"},
    ))
    html = text(render_run_page(data, record, ""), f"runs/etl_daily/2026/11/{record.run_id}.html")
    assert ('<dt>Downstream</dt><dd><a href="../../../../runs/report/2026/11/'
            '20261122T150000Z-report-0a1b2c3d.html">report, run configuration prod (route full): started '
            '20261122T150000Z-report-0a1b2c3d</a></dd>') in html
    assert ("<dt>Downstream</dt><dd>archive (success): skipped: pipeline &#39;archive&#39; is "
            "disabled (&#34;enabled&#34;: false at commit 0123456789ab); enable it and push</dd>") in html
    assert "<dt>Downstream</dt><dd>laptop (success)</dd>" in html


def test_run_page_without_samples_or_log(sample):
    data = sample[0]
    record = RunRecord(run_id="20261122T140000Z-minimal-0001", pipeline="minimal",
                       status=RunStatus.QUEUED)
    html = text(render_run_page(data, record, ""), "runs/minimal/2026/11/20261122T140000Z-minimal-0001.html")
    assert "No resource samples were recorded" in html and "No output was captured." in html
    assert "working tree" in html


def test_unsafe_names_are_refused(sample):
    data = sample[0]
    record = RunRecord(run_id="../../etc/passwd", pipeline="minimal", status=RunStatus.FAILED)
    with pytest.raises(FastflowError) as info:
        render_run_page(data, record, "")
    assert str(info.value) == (
        "cannot render a site page for run id '../../etc/passwd': it must match "
        "[A-Za-z0-9][A-Za-z0-9_.-]* (at most 128 characters); rename it or remove its record")


@pytest.mark.parametrize("folder", ["bad name", "<script>", "tab\there", "new\nline"])
def test_a_folder_name_unsafe_for_a_page_is_listed_as_invalid_without_a_page(tmp_path, folder):
    """Issue 12: one bad folder name never stops the other pipelines' pages (it raised in
    check_name, so no run of any pipeline was recorded while that commit was deployed)."""
    data, runs, logs = build_sample(tmp_path, runs=3)
    root = write_files(tmp_path / "bad", {f"pipelines/{folder}/main.py": "print(1)\n"})
    bad = discover(root, default_repo_config()).invalid
    assert list(bad) == [folder]
    data = dataclasses.replace(data, invalid={**data.invalid, **bad})
    pages = render_all(data, runs, logs)
    html = text(pages, "index.html")
    assert escape(folder) in html and "is not a valid pipeline name" in html
    assert not [p for p in pages if folder in p]
    record = runs["etl_daily"][0]
    new_run = pages_for_new_run(data, record, "", runs["etl_daily"])
    assert "index.html" in new_run and escape(folder) in text(new_run, "index.html")


# --- the whole site ----------------------------------------------------------------------------


def test_output_is_deterministic(tmp_path):
    first = render_all(*build_sample(tmp_path / "a"))
    second = render_all(*build_sample(tmp_path / "b"))
    assert first == second


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append(attrs[key])
        if attrs.get("id"):
            self.ids.add(attrs["id"])


def test_every_relative_link_resolves_to_a_generated_file(site):
    checked = 0
    for path, content in site.items():
        if not path.endswith(".html"):
            continue
        parser = _Links()
        parser.feed(content.decode("utf-8"))
        for link in parser.links:
            url, fragment = urldefrag(link)
            if url.startswith("data:"):
                continue
            assert not urlsplit(url).scheme and not url.startswith("/"), (path, link)
            if not url:
                assert fragment in parser.ids, (path, link)
                continue
            target = (Path("/site") / path).parent.joinpath(url).resolve()
            assert target.relative_to("/site").as_posix() in site, (path, link)
            checked += 1
    assert checked > 500


def test_every_page_parses_as_html5_without_errors(site):
    parser = html5lib.HTMLParser(strict=True)
    for path, content in site.items():
        if path.endswith(".html"):
            parser.parse(content)  # strict: raises on the first parse error


def test_pages_make_no_network_requests_and_carry_no_script(site):
    for path, content in site.items():
        html = content.decode("utf-8")
        assert "<script" not in html, path
        assert not re.search(r'(src|href)="(https?:)?//', html), path


def test_build_site_writes_files_and_keeps_unchanged_ones(tmp_path):
    data, runs, logs = build_sample(tmp_path / "src")
    out = tmp_path / "out"
    written = build_site(data, runs, logs, out)
    assert (out / "index.html").is_file() and (out / "style.css").is_file()
    assert len(written) == len(list(p for p in out.rglob("*") if p.is_file()))
    stamp = (out / "pipelines/minimal/index.html").stat().st_mtime_ns
    build_site(data, runs, logs, out)
    assert (out / "pipelines/minimal/index.html").stat().st_mtime_ns == stamp


# --- words and summaries -----------------------------------------------------------------------


@pytest.mark.parametrize("cron, words", [
    ("* * * * *", "every minute"),
    ("*/5 * * * *", "every 5 minutes"),
    ("0 * * * *", "every hour"),
    ("15 * * * *", "every hour at 15 minutes past"),
    ("0 */6 * * *", "every 6 hours"),
    ("30 2 * * *", "every day at 02:30"),
    ("0 8,18 * * *", "every day at 08:00 and 18:00"),
    ("0 9 * * 1-5", "every weekday (Monday to Friday) at 09:00"),
    ("0 10 * * sat,sun", "every Saturday and Sunday at 10:00"),
    ("0 7 * * 1,3", "every Monday and Wednesday at 07:00"),
    ("0 0 1 * *", "on day 1 of every month at 00:00"),
    ("0 12 25 12 *", "every year on December 25 at 12:00"),
    ("@daily", "every day at 00:00"),
    ("7,19 1-5 * * *", "cron 7,19 1-5 * * *"),
])
def test_cron_words(cron, words):
    assert cron_words(cron) == words


def test_interval_words():
    assert [interval_words(s) for s in (60, 900, 3600, 7200, 86400, 90, 1)] == [
        "every minute", "every 15 minutes", "every hour", "every 2 hours", "every day",
        "every 90 seconds", "every second"]


def test_summary_success_rate_ignores_skipped_and_unfinished():
    summary = PipelineSummary(recent_statuses=(RunStatus.SUCCEEDED, RunStatus.SKIPPED,
                                               RunStatus.RUNNING, RunStatus.FAILED))
    assert summary.success_rate == 0.5
    assert PipelineSummary().success_rate is None


def test_problem_severity_is_shown_in_words(sample):
    data = dataclasses.replace(sample[0], config_problems=[
        Problem("x.yaml", "", "just a warning", Severity.WARNING)])
    assert '<strong class="sev">warning</strong>' in text(render_overview(data), "index.html")
