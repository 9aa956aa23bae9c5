"""Memory of `fastflow serve` over 1,000 recorded runs with 1,000 schedules (not a test).

Starts `fastflow serve --local` (the local executor: each run is a short `uv run` on the host,
so 1,000 runs take minutes, not an hour of containers) on a fresh repository holding 1,000
schedules whose slots are hours away (`idle_daemon.make_repo`) and one short pipeline
(`max_instances: 4`, `max_concurrent_runs: 4`). Then queues runs through the inbox in batches
(what `fastflow run --remote` does), waits until each batch is recorded on the results branch,
and reads the daemon's resident memory (VmRSS in /proc) after every batch.

The baseline is the RSS after the warm-up batches (first runs, first commits, site pages,
caches filled); the figure is the growth from there to the end. Target: < 10 MiB.

    python bench/daemon_memory.py [--runs 1000] [--batch 50] [--warmup 100]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from idle_daemon import git, make_repo

from fastflow.daemon.statedir import queue_remote_run
from fastflow.defaults import DEFAULT_RESULTS_BRANCH

TARGET_MIB = 10.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def recorded_count(repo: Path) -> int:
    proc = subprocess.run(["git", "ls-tree", "-r", "--name-only", DEFAULT_RESULTS_BRANCH,
                           "runs/job/"], cwd=repo, capture_output=True, text=True)
    return sum(1 for name in proc.stdout.split() if name.endswith(".json"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--schedules", type=int, default=1000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fastflow-bench-memory-"))
    daemon = None
    try:
        repo, state = make_repo(root, args.schedules), root / "state"
        (repo / ".fastflow" / "config.yaml").write_text("max_concurrent_runs: 4\n")
        (repo / "pipelines" / "job" / "pipeline.json").write_text(json.dumps({"max_instances": 4}))
        git("add", "-A", cwd=repo)
        git("commit", "-q", "-m", "bench: concurrency", cwd=repo)
        log = (root / "serve.log").open("w")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "fastflow", "serve", "--repo", str(repo), "--state-dir",
             str(state), "--local", "--poll-interval", "600"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not (state / "status.json").exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                print(f"fastflow serve did not start:\n{(root / 'serve.log').read_text()}",
                      file=sys.stderr)
                return 1
            time.sleep(0.2)
        samples: list[tuple[int, float]] = [(0, rss_mib(daemon.pid))]
        began, done = time.monotonic(), 0
        while done < args.runs:
            size = min(args.batch, args.runs - done)
            for _ in range(size):
                queue_remote_run(state, "job", {}, None, datetime.now(timezone.utc))
            done += size
            wait_until = time.monotonic() + 600
            while recorded_count(repo) < done:
                if daemon.poll() is not None or time.monotonic() > wait_until:
                    print(f"runs not recorded (daemon exit {daemon.poll()}); see the log:\n"
                          f"{(root / 'serve.log').read_text()[-3000:]}", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            samples.append((done, rss_mib(daemon.pid)))
        took = time.monotonic() - began
        warm = next(rss for n, rss in samples if n >= args.warmup)
        end = samples[-1][1]
        growth = end - warm
        print(f"schedules {args.schedules}, runs recorded {done} (local executor, batches of "
              f"{args.batch}) in {took:.0f}s; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores shared with other work)")
        print("RSS after runs: " + ", ".join(f"{n}: {rss:.1f}" for n, rss in samples[::4])
              + f", {samples[-1][0]}: {samples[-1][1]:.1f} MiB")
        print(f"baseline: RSS after {args.warmup} warm-up runs   {warm:7.1f} MiB")
        print(f"RSS after {done} runs                   {end:7.1f} MiB (max {max(r for _, r in samples):.1f})")
        print(f"growth after warm-up                   {growth:7.1f} MiB "
              f"({growth * 1024 / max(done - args.warmup, 1):.1f} KiB/run; ratio end/baseline "
              f"{end / warm:.2f}x)")
        print(f"target growth < {TARGET_MIB:.0f} MiB                  "
              f"{'met' if growth < TARGET_MIB else 'NOT met'}")
        return 0
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(60)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
