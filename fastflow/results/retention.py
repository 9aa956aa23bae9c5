"""Retention: removing old runs from the results branch, with the site pages that shift.

The one home of retention (`retention` of config.yaml: `keep_runs`, `keep_days`). The store
removes expired records and logs in one commit (`ResultsStore.remove_expired_runs`); this module
adds the run pages to that commit and re-renders the pages that change (the pipeline's index and
every history page, since page 1 holds the oldest runs; the overview). The daemon prunes every
hour (`prune_pipelines`); `fastflow results prune` is `prune_results`. Both differ only in where
the site's data comes from.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable, Iterable

from fastflow.config import CONFIG_FILE
from fastflow.errors import ConfigError, FastflowError
from fastflow.record import RunRecord
from fastflow.results.build import site_data as branch_site_data
from fastflow.results.publish import SITE_PREFIX, runs_recorded
from fastflow.results.read import Results
from fastflow.results.store import ResultsStore
from fastflow.site import (
    DEFAULT_PAGE_SIZE,
    SiteData,
    render_overview,
    render_pipeline_pages,
    run_path,
)
from fastflow.site.views import block_count, history_name

log = logging.getLogger(__name__)

SiteSource = Callable[[], SiteData]


def retention_pages(data: SiteData, name: str, runs: list[RunRecord],
                    runs_before: int) -> dict[str, bytes | None]:
    """The pages to commit after retention removed runs of `name` (`runs`: what is left,
    newest first; `runs_before`: how many there were): its index and every history page (page 1
    holds the oldest runs, so every page shifts), the overview, and deletions of the history
    pages that no longer exist."""
    pages: dict[str, bytes | None] = {**render_overview(data),
                                      **render_pipeline_pages(data, name, runs)}
    for block in range(block_count(len(runs), DEFAULT_PAGE_SIZE) + 1,
                       block_count(runs_before, DEFAULT_PAGE_SIZE) + 1):
        pages[f"pipelines/{name}/{history_name(block)}"] = None
    return {SITE_PREFIX + path: body for path, body in pages.items()}


def apply_retention(store: ResultsStore, name: str, now: datetime, keep_runs: int | None,
                    keep_days: int | None, site_data: SiteSource) -> list[str]:
    """Retention of one pipeline with its site pages: removes records, logs and run pages in
    one commit, then commits `retention_pages`. Returns the removed run ids, oldest first."""
    before = runs_recorded(store.read_summary(), name)
    removed = store.remove_expired_runs(
        name, now, keep_runs, keep_days,
        extra_paths=lambda run_id: [SITE_PREFIX + run_path(name, run_id)])
    if removed:
        runs = store.list_runs(name, limit=10**9)
        store.write_files(retention_pages(site_data(), name, runs, before),
                          f"site after retention of {name}", commit=True)
    return removed


def prune_pipelines(store: ResultsStore, names: Iterable[str], now: datetime,
                    keep_runs: int | None, keep_days: int | None, site_data: SiteSource, *,
                    keep_going: bool = False) -> dict[str, list[str]]:
    """`apply_retention` to each pipeline of `names`; returns the removed run ids per pipeline.

    `keep_going` (the daemon): a pipeline whose retention fails is logged and skipped, to be
    retried at the next round; otherwise the first error is raised (the CLI).
    """
    removed = {}
    for name in names:
        try:
            gone = apply_retention(store, name, now, keep_runs, keep_days, site_data)
        except FastflowError as exc:
            if not keep_going:
                raise
            log.warning("retention of %s failed (retried at the next round): %s", name, exc)
            continue
        if gone:
            log.info("retention: removed %d runs of %s", len(gone), name)
            removed[name] = gone
    return removed


def prune_results(results: Results, now: datetime, keep_runs: int | None = None,
                  keep_days: int | None = None) -> dict[str, list[str]]:
    """Apply retention to every pipeline on the branch (defaults: `retention` of config.yaml):
    removes records, logs and run pages, and re-renders the pages that shift (history, index,
    overview). Returns the removed run ids per pipeline. The twin of `fastflow results prune`."""
    results.require_writable()
    keep_runs = keep_runs if keep_runs is not None else results.config.keep_runs
    keep_days = keep_days if keep_days is not None else results.config.keep_days
    if keep_runs is None and keep_days is None:
        raise ConfigError(
            f"{CONFIG_FILE}: retention: neither keep_runs nor keep_days is set, so nothing would be "
            "removed; set retention.keep_runs or retention.keep_days, or pass --keep-runs/--keep-days"
        )
    return prune_pipelines(results.store, results.pipelines_on_branch(), now, keep_runs, keep_days,
                           lambda: branch_site_data(results, now))
