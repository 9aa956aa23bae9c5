"""Packed size of the results branch per recorded run (not a test).

Two branches, each packed with `git repack -adf` and measured in bytes per run:

1. 10,000 runs of 20 pipelines over two years, built in one commit with the store's own file
   layout (`results_scale.build_branch`: record JSON, a 40-line log, a run page), then
   `--sample` more runs recorded one by one through `ResultsStore.record_run` exactly as the
   daemon records them (the site pages `SitePublisher.pages_for_run` renders, one commit per run,
   an injected clock). The figure: packed bytes per run of the whole branch, and the marginal
   packed bytes of one recorded run (its files plus the history of the pages, summary.json and
   badge each commit rewrites).
2. A simulated year of one 5-minute schedule (105,120 runs) under the default retention (none:
   `retention` unset keeps every run), one commit per simulated day (`build_tree`, the store's
   paths). Its bytes per run, compared with case 1: bounded means it does not grow with the count.
   Recording 105,120 runs one commit each takes hours, so the year as the daemon records it is
   projected: the year's files plus case 1's marginal bytes per recorded run for every run.

    python bench/results_size.py [--sample 100] [--days 365]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from results_scale import PIPELINES, build_branch, make_record, page_path

from fastflow import repo as g
from fastflow.results.layout import apply_run_to_summary, log_path, record_path
from fastflow.results.publish import SitePublisher
from fastflow.results.store import ResultsStore

SLOT = timedelta(minutes=5)
LOG = "2026-11-22T12:00:00.000000Z stdout | line\n" * 40


def packed_bytes(path: Path) -> int:
    """Bytes of the repository's packs after `git repack -adf` (every object, deltified)."""
    subprocess.run(["git", "repack", "-adfq"], cwd=path, check=True)
    packs = path / "objects" / "pack"
    return sum(f.stat().st_size for f in packs.iterdir() if f.suffix in (".pack", ".idx"))


def record_sample(path: Path, journal: Path, sample: int) -> float:
    """Record `sample` runs through the store as the daemon does; seconds per run."""
    now = datetime(2026, 11, 22, 12, tzinfo=timezone.utc)
    clock = {"now": now}
    store = ResultsStore(path, journal, lambda: clock["now"])
    publisher = SitePublisher(store, lambda: clock["now"], lambda: None)
    began = time.perf_counter()
    for n in range(sample):
        clock["now"] = now + timedelta(minutes=n)
        record = make_record(PIPELINES[n % len(PIPELINES)], clock["now"], 20_000_000 + n)
        store.record_run(record, LOG, publisher.pages_for_run(record, LOG))
    return (time.perf_counter() - began) / sample


def build_year(root: Path, days: int) -> tuple[Path, int]:
    """A bare repository with `days` daily commits of a 5-minute schedule's runs."""
    path = root / "year.git"
    repo = g.init_repo(path, bare=True)
    start = datetime(2025, 11, 22, tzinfo=timezone.utc)
    summary: dict = {"schema": 1, "pipelines": {}}
    parent, runs = None, 0
    for day in range(days):
        changes: dict[str, bytes] = {}
        for k in range(int(timedelta(days=1) / SLOT)):
            when = start + timedelta(days=day) + SLOT * k
            rec = make_record("every5", when, runs).to_json()
            changes[record_path("every5", rec["run_id"])] = json.dumps(rec, indent=2).encode()
            changes[log_path("every5", rec["run_id"])] = LOG.encode()
            changes[page_path("every5", rec["run_id"])] = b"<html>run</html>" * 50
            apply_run_to_summary(summary, rec)
            runs += 1
        changes["summary.json"] = json.dumps(summary, indent=2).encode()
        tree = g.build_tree(repo, parent, changes)
        parent = g.make_commit(repo, tree, [parent] if parent else [], f"day {day}\n",
                               ("bench", "b@x"), start + timedelta(days=day + 1))
    g.update_ref(repo, "fastflow/results", parent, None)
    return path, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        branch = build_branch(root, args.runs)
        before = packed_bytes(branch)
        per_record = record_sample(branch, root / "journal", args.sample)
        after = packed_bytes(branch)
        marginal = (after - before) / args.sample
        total_runs = args.runs + args.sample
        year, year_runs = build_year(root, args.days)
        year_bytes = packed_bytes(year)
    per_run = after / total_runs
    per_year_run = year_bytes / year_runs
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(2 cores shared with other work)")
    print(f"{total_runs:,} runs (20 pipelines): packed {after / 2**20:7.1f} MiB = "
          f"{per_run:6.0f} bytes/run")
    print(f"  one run recorded as the daemon does ({args.sample} sampled, {per_record * 1000:.0f} ms "
          f"each): +{marginal:6.0f} bytes packed (record, log, pages and their history)")
    print(f"a year of a 5-minute schedule ({year_runs:,} runs, default retention keeps all, "
          f"daily commits): packed {year_bytes / 2**20:7.1f} MiB = {per_year_run:6.0f} bytes/run")
    projected = year_bytes + marginal * year_runs
    print(f"  recorded as the daemon does (one commit per run, pages rewritten), projected from "
          f"the sample: {projected / 2**30:5.2f} GiB = {projected / year_runs:6.0f} bytes/run")
    ratio = per_year_run / per_run
    print(f"ratio bytes/run year / 10,000 case (files only): {ratio:.2f} (bounded: <= 1.5): "
          f"{'met' if ratio <= 1.5 else 'NOT met'}")
    print(f"a year as the daemon records it under 1 GiB: {'met' if projected < 2**30 else 'NOT met'}")


if __name__ == "__main__":
    main()
