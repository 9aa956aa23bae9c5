"""Overhead of a flow run against the same five containers started by hand (not a timed test).

A 5-task diamond (`a` -> `b`, `c`, `d` -> `e`), each task a script that sleeps `--sleep` seconds,
measured in one run, alternating:
- `fastflow flow run diamond --repo DIR` through the installed entry point, start to exit: every
  task an ordinary Fast-Flow run in its own hardened container (limits, overlay cache, record);
- by hand: `docker run --rm` of the same image with the same user, mounts (the tasks folder
  read-only, a workspace read-write) and `uv run` command, the critical path respected: `a`,
  then `b`, `c` and `d` side by side, then `e` (the baseline).

Target: the flow's wall time <= 1.2x the baseline (the ratio is printed). Figures on the shared
2-core machine this was written on (load 10-12): 1.23x and 1.21x over 3 rounds, 1.18x over 5
(by hand 14.6 s, flow 17.2 s: about 1 s of CLI start, 0.1-0.2 s per task level more than a bare
`docker run --rm`); the default is 5 rounds, as a lone round swings by seconds there.

    python bench/flow_overhead.py [--rounds 5] [--sleep 3] [--image fastflow-runner:py3.11]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

from fastflow.defaults import DEFAULT_IMAGE, DEFAULT_PYTHON
from fastflow.executors.docker import runner_image

TARGET = 1.2
STEP = ("import os, sys, time\n"
        "time.sleep(float(sys.argv[2]))\n"
        "open(os.path.join(os.environ['TMP_DIR'], sys.argv[1]), 'w').write('done')\n"
        "print(sys.argv[1], 'done')\n")
LEVELS = (("a",), ("b", "c", "d"), ("e",))  # the critical path: a, then three side by side, e


def make_repo(root: Path, sleep: float) -> Path:
    tasks = root / ".fastflow" / "flows" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "step.py").write_text(STEP)
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["a"], "e": ["b", "c", "d"]}
    flow = {"name": "diamond", "python_version": DEFAULT_PYTHON, "tasks": [
        {"id": t, "script": "step.py", "args": [t, str(sleep)], "depends_on": d}
        for t, d in deps.items()]}
    (root / ".fastflow" / "flows" / "diamond.json").write_text(json.dumps(flow))
    (root / ".fastflow" / "config.yaml").write_text("max_concurrent_runs: 4\n")
    for path in (root, *root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)
    return tasks


def by_hand(image: str, tasks: Path, sleep: float, work: Path) -> float:
    """The five containers with `docker run --rm`, level by level; returns the wall time."""
    workspace = Path(tempfile.mkdtemp(dir=work))
    workspace.chmod(0o777)

    def one(task: str) -> None:
        cmd = ["docker", "run", "--rm", "-u", "10001:10001",
               "-v", f"{tasks}:/work/diamond:ro", "-w", "/work/diamond",
               "-v", f"{workspace}:/workspace", "-e", "TMP_DIR=/workspace",
               "-e", "UV_CACHE_DIR=/tmp/uv", "-e", "HOME=/tmp", image,
               "uv", "run", "--no-project", "--python", DEFAULT_PYTHON, "step.py", task, str(sleep)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"docker run of {task}: exit {done.returncode}\n{done.stderr}")

    begin = time.perf_counter()
    for level in LEVELS:
        threads = [threading.Thread(target=one, args=(t,)) for t in level]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    took = time.perf_counter() - begin
    missing = [t for level in LEVELS for t in level if not (workspace / t).exists()]
    if missing:
        raise RuntimeError(f"by hand: tasks {missing} wrote nothing")
    return took


def through_fastflow(repo: Path, env: dict) -> float:
    script = Path(sysconfig.get_path("scripts")) / "fastflow"
    if not script.is_file():
        sys.exit(f"{script} is missing: install the package first (pip install -e .)")
    begin = time.perf_counter()
    done = subprocess.run([str(script), "flow", "run", "diamond", "--repo", str(repo)], env=env,
                          capture_output=True, text=True)
    took = time.perf_counter() - begin
    if done.returncode != 0:
        raise RuntimeError(f"fastflow flow run: exit {done.returncode}\n{done.stderr[-3000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sleep", type=float, default=3.0, help="seconds each task sleeps")
    parser.add_argument("--image", default=runner_image(DEFAULT_IMAGE, DEFAULT_PYTHON))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fastflow-flow-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        repo = root / "repo"
        repo.mkdir()
        tasks = make_repo(repo, args.sleep)
        env = {**os.environ, "FASTFLOW_CACHE_DIR": str(root / "cache")}
        through_fastflow(repo, env)  # warm: the cache, the image's layers
        by_hand(args.image, tasks, args.sleep, root)
        flow_times, hand_times = [], []
        for _ in range(args.rounds):
            hand_times.append(by_hand(args.image, tasks, args.sleep, root))
            flow_times.append(through_fastflow(repo, env))
    flow, hand = statistics.median(flow_times), statistics.median(hand_times)
    ideal = len(LEVELS) * args.sleep
    ratio = flow / hand
    print(f"diamond of 5 tasks, {args.sleep:g}s each, critical path {ideal:g}s of sleep, "
          f"{args.rounds} rounds (median)")
    print(f"  by hand (docker run --rm, level by level): {hand:6.2f}s  "
          f"{' '.join(f'{t:.2f}' for t in hand_times)}")
    print(f"  fastflow flow run:                         {flow:6.2f}s  "
          f"{' '.join(f'{t:.2f}' for t in flow_times)}")
    print(f"  ratio flow / by hand: {ratio:.2f}x (target <= {TARGET}x: "
          f"{'met' if ratio <= TARGET else 'NOT met'})")


if __name__ == "__main__":
    main()
