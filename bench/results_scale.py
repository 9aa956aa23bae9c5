"""Time to record one run on the results branch with 1,000 and with 100,000 runs already there.

    python bench/results_scale.py [--repeat 80]

Each recorded run is what the daemon writes, through the daemon's own code: the site pages the
run changes rendered by `SitePublisher.pages_for_run` (overview, pipeline index, newest history
page, run page; reading summary.json and the pipeline's newest 51 records from the branch),
then journal (fsync) + commit of the record, the log, summary.json, the badge and those pages,
then the journal entry removed. The big branches are built in one commit with `build_tree` (one
TreeBuilder per folder), spread like a real deployment: 20 pipelines over 24 months, run pages
where the site puts them (`site/runs/<pipeline>/<YYYY>/<MM>/<run_id>.html`).
Target: the 100,000 case at most 1.5x the 1,000 case, and under 50 ms.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fastflow import repo as g
from fastflow.model import RunStatus
from fastflow.record import RunRecord
from fastflow.results.layout import apply_run_to_summary, log_path, record_path
from fastflow.results.publish import SITE_PREFIX, SitePublisher
from fastflow.results.store import ResultsStore
from fastflow.site import run_path

PIPELINES = [f"pipeline_{i:02d}" for i in range(20)]
START = datetime(2024, 11, 1, tzinfo=timezone.utc)
SPAN = timedelta(days=730)
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def clock() -> datetime:
    return NOW


def make_record(pipeline: str, when: datetime, n: int) -> RunRecord:
    return RunRecord(
        run_id=f"{when:%Y%m%dT%H%M%SZ}-{pipeline}-{n:06x}", pipeline=pipeline,
        status=RunStatus.SUCCEEDED if n % 7 else RunStatus.FAILED, duration_s=12.3,
        started_at=when, finished_at=when + timedelta(seconds=12), queued_at=when,
    )


def page_path(pipeline: str, run_id: str) -> str:
    return SITE_PREFIX + run_path(pipeline, run_id)


def build_branch(root: Path, runs: int) -> Path:
    """A bare repository whose results branch holds `runs` runs, written in one commit."""
    path = root / f"results-{runs}.git"
    repo = g.init_repo(path, bare=True)
    changes: dict[str, bytes] = {}
    summary: dict = {"schema": 1, "pipelines": {}}
    step = SPAN / runs
    for n in range(runs):
        pipeline = PIPELINES[n % len(PIPELINES)]
        rec = make_record(pipeline, START + step * n, n).to_json()
        changes[record_path(pipeline, rec["run_id"])] = json.dumps(rec, indent=2).encode()
        changes[log_path(pipeline, rec["run_id"])] = b"line\n" * 40
        changes[page_path(pipeline, rec["run_id"])] = b"<html>run</html>" * 50
        apply_run_to_summary(summary, rec)
    changes["summary.json"] = json.dumps(summary, indent=2).encode()
    tree = g.build_tree(repo, None, changes)
    sha = g.make_commit(repo, tree, [], f"bench: {runs} runs\n", ("bench", "b@x"), NOW)
    g.update_ref(repo, "fastflow/results", sha, None)
    return path


def time_records(repo_path: Path, journal: Path, repeat: int) -> list[float]:
    store = ResultsStore(repo_path, journal, clock)
    publisher = SitePublisher(store, clock, lambda: None)
    log = "2026-11-22T12:00:00.000000Z stdout | line\n" * 200
    timings = []
    for n in range(repeat):
        pipeline = PIPELINES[n % len(PIPELINES)]
        rec = make_record(pipeline, NOW + timedelta(minutes=n), 10_000_000 + n)
        t0 = time.perf_counter()
        store.record_run(rec, log, publisher.pages_for_run(rec, log))
        timings.append(time.perf_counter() - t0)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=80)
    args = parser.parse_args()
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for runs in (1_000, 100_000):
            t0 = time.perf_counter()
            path = build_branch(root, runs)
            built = time.perf_counter() - t0
            timings = time_records(path, root / f"journal-{runs}", args.repeat)
            medians[runs] = statistics.median(timings)
            print(f"{runs:>7,} runs on the branch (built in {built:5.1f}s): record one run: "
                  f"median {medians[runs] * 1000:6.1f} ms, p90 "
                  f"{sorted(timings)[int(len(timings) * 0.9)] * 1000:6.1f} ms")
    ratio = medians[100_000] / medians[1_000]
    ok = ratio <= 1.5 and medians[100_000] < 0.050
    print(f"ratio 100,000 / 1,000 = {ratio:.2f} (target <= 1.5); "
          f"100,000 case {medians[100_000] * 1000:.1f} ms (target < 50 ms): "
          f"{'OK' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
