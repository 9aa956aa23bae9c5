"""The static status site: run records and configuration -> {relative path: bytes}.

The renderer never touches git or the clock: the store/daemon commits the pages it returns, and
`fastflow site build --out DIR` writes them with `build_site`. See `docs/site.md`.
"""
from __future__ import annotations

from fastflow.schedule.describe import cron_words, interval_words
from fastflow.site.data import (
    DEFAULT_PAGE_SIZE,
    PipelineSummary,
    SiteData,
    summarize_runs,
)
from fastflow.site.flowpages import (
    RECENT_FLOW_RUNS,
    flow_path,
    flow_run_path,
    render_flow_page,
    render_flow_pages,
    render_flow_run_page,
)
from fastflow.site.render import (
    build_site,
    pages_for_new_run,
    pipeline_path,
    render_all,
    render_overview,
    render_pipeline_index,
    render_pipeline_pages,
    render_run_page,
    run_path,
    write_pages,
)

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "RECENT_FLOW_RUNS",
    "flow_path",
    "flow_run_path",
    "render_flow_page",
    "render_flow_pages",
    "render_flow_run_page",
    "write_pages",
    "PipelineSummary",
    "SiteData",
    "build_site",
    "cron_words",
    "interval_words",
    "pages_for_new_run",
    "pipeline_path",
    "render_all",
    "render_overview",
    "render_pipeline_index",
    "render_pipeline_pages",
    "render_run_page",
    "run_path",
    "summarize_runs",
]
