"""Throughput: many short runs at once through `fastflow serve` against raw Docker (not a test).

Starts `fastflow serve` (Docker executor, `max_concurrent_runs: 4`) on a fresh repository with
one short pipeline (prints a line, no requirements, `max_instances: 4`), waits for its first sync and one warm-up
run, then queues N runs at once through the daemon's inbox (what `fastflow run --remote` does)
and measures from the first request to the moment every one of them is recorded on the results
branch (`runs/<pipeline>/...` records counted with the git CLI). Every run must have succeeded.

Baseline, measured in the same run: N `docker run --rm` of the same image and command, 4 at a
time (a thread pool), from the first launch to the last exit. Each side is measured `--rounds`
times, alternating; the best round of each counts (the machine is shared).
Target: Fast-Flow's runs/s >= 90% of raw Docker's, and every run recorded.

    python bench/throughput.py [--runs 40] [--rounds 2] [--image fastflow-runner:py3.11]
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
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from fastflow.daemon.statedir import queue_remote_run
from fastflow.defaults import DEFAULT_IMAGE, DEFAULT_PYTHON, DEFAULT_RESULTS_BRANCH
from fastflow.executors.base import AttemptSpec, uv_command
from fastflow.executors.docker import runner_image
from fastflow.model import PipelineType

CONCURRENCY = 4
MAIN = "print('short run')\n"
TARGET = 0.90
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True,
                          capture_output=True, text=True).stdout


def make_repo(root: Path, image: str) -> Path:
    repo = root / "repo"
    (repo / "pipelines" / "short").mkdir(parents=True)
    (repo / "pipelines" / "short" / "main.py").write_text(MAIN)
    # max_instances: 1 by default (one run of a pipeline at a time): the daemon's limit decides
    (repo / "pipelines" / "short" / "pipeline.json").write_text(
        json.dumps({"max_instances": CONCURRENCY}) + "\n")
    (repo / ".fastflow").mkdir()
    (repo / ".fastflow" / "config.yaml").write_text(
        f"max_concurrent_runs: {CONCURRENCY}\nimage: {image}\n")
    for path in (repo, repo / "pipelines", repo / "pipelines" / "short"):
        path.chmod(0o755)
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "bench", cwd=repo)
    return repo


def recorded(repo: Path, run_ids: set[str]) -> dict[str, str]:
    """Status of each of `run_ids` recorded on the results branch (run id -> status)."""
    try:
        names = git("ls-tree", "-r", "--name-only", DEFAULT_RESULTS_BRANCH, "runs/short/",
                    cwd=repo).split()
    except subprocess.CalledProcessError:
        return {}
    found = {}
    for name in names:
        run_id = Path(name).stem
        if run_id in run_ids and name.endswith(".json"):
            data = json.loads(git("show", f"{DEFAULT_RESULTS_BRANCH}:{name}", cwd=repo))
            found[run_id] = data["status"]
    return found


def fastflow_round(repo: Path, state: Path, runs: int, timeout: float = 600) -> float:
    """Seconds from the first of `runs` requests to all of them recorded (and succeeded)."""
    began = time.perf_counter()
    ids = {queue_remote_run(state, "short", {}, None, datetime.now(timezone.utc))
           for _ in range(runs)}
    deadline = time.monotonic() + timeout
    done: dict[str, str] = {}
    while len(done) < len(ids):
        if time.monotonic() > deadline:
            sys.exit(f"only {len(done)} of {len(ids)} runs recorded within {timeout:.0f}s")
        time.sleep(0.05)
        done = recorded(repo, ids)
    took = time.perf_counter() - began
    failed = [run_id for run_id, status in done.items() if status != "succeeded"]
    if failed:
        sys.exit(f"{len(failed)} runs did not succeed, e.g. {failed[0]}")
    return took


def bare_cmd(image: str, repo: Path, cache: Path) -> list[str]:
    """`docker run --rm` of the command a Fast-Flow run of `short` runs, same user and mounts."""
    pipeline = repo / "pipelines" / "short"
    spec = AttemptSpec(run_id="bench", pipeline="short", attempt=1, workdir=pipeline,
                       entry="main.py", type=PipelineType.SCRIPT, python_version=DEFAULT_PYTHON,
                       requirements=None, env={})
    return ["docker", "run", "--rm", "-u", "10001:10001",
            "-v", f"{pipeline}:/work/short:ro", "-w", "/work/short",
            "-v", f"{cache}:/cache", "-e", "UV_CACHE_DIR=/cache/uv", image,
            *uv_command(spec, "/opt/fastflow/notebook.py")]


def docker_round(cmd: list[str], runs: int) -> float:
    """Seconds for `runs` bare `docker run --rm` of `cmd`, 4 at a time."""

    def one(_: int) -> None:
        subprocess.run(cmd, check=True, capture_output=True)

    began = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, range(runs)))
    return time.perf_counter() - began


def start_daemon(repo: Path, state: Path, log: Path, env: dict) -> subprocess.Popen:
    daemon = subprocess.Popen(
        [sys.executable, "-m", "fastflow", "serve", "--repo", str(repo), "--state-dir",
         str(state), "--poll-interval", "600"], env=env, stdout=log.open("w"),
        stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (state / "status.json").exists():
        if time.monotonic() > deadline or daemon.poll() is not None:
            sys.exit(f"fastflow serve did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return daemon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--image", default=runner_image(DEFAULT_IMAGE, DEFAULT_PYTHON))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fastflow-bench-throughput-"))
    daemon = None
    try:
        repo, state = make_repo(root, args.image), root / "state"
        env = {**os.environ, "FASTFLOW_CACHE_DIR": str(root / "cache")}
        daemon = start_daemon(repo, state, root / "serve.log", env)
        fastflow_round(repo, state, 1)  # warm-up: first container, first results commit
        cache = root / "bare-cache"
        cache.mkdir(mode=0o777)
        cache.chmod(0o777)
        bare = bare_cmd(args.image, repo, cache)
        docker_round(bare, CONCURRENCY)
        ours, raw = [], []
        for _ in range(args.rounds):
            raw.append(docker_round(bare, args.runs))
            ours.append(fastflow_round(repo, state, args.runs))
        best_ours, best_raw = min(ours), min(raw)
        ratio = best_raw / best_ours  # runs/s of ours over raw's
        print(f"runs per round {args.runs}, {CONCURRENCY} at a time, rounds {args.rounds} "
              f"(alternating); load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              "(2 cores shared with other work)")
        print(f"docker run --rm x{args.runs} (baseline)  best {best_raw:6.2f}s  "
              f"{args.runs / best_raw:5.2f} runs/s   (rounds: {', '.join(f'{t:.2f}' for t in raw)})")
        print(f"fastflow serve, recorded      best {best_ours:6.2f}s  "
              f"{args.runs / best_ours:5.2f} runs/s   (rounds: {', '.join(f'{t:.2f}' for t in ours)})")
        print(f"every run recorded and succeeded: yes ({args.runs} x {args.rounds})")
        print(f"ratio of runs/s (fastflow / docker): {ratio:.2f} (target >= {TARGET:.2f}): "
              f"{'met' if ratio >= TARGET else 'NOT met'}")
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(60)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
