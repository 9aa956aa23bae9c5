"""Per-run overhead of the Swarm executor against the plain Docker executor (not a timed test).

In one run, alternating, the same one-line pipeline (no requirements) is executed `--rounds`
times by `DockerExecutor.execute` (a container on this engine) and by `SwarmExecutor.execute`
(a one-shot `replicated-job` service on this engine's swarm: configs for the code, scheduling,
the task, its output read back through the manager, the service removed). Prints each median,
the difference (the Swarm overhead per run) and the ratio.

The engine must be a Swarm manager; with `--init` the bench runs `docker swarm init` itself and
`docker swarm leave --force` at the end (only when it was not in a swarm before).

    python bench/swarm_overhead.py [--rounds 7] [--image fastflow-runner:py3.11] [--init]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from fastflow.defaults import DEFAULT_IMAGE, DEFAULT_PYTHON
from fastflow.executors.base import AttemptSpec
from fastflow.executors.docker import DockerExecutor, runner_image
from fastflow.executors.swarm import SwarmExecutor
from fastflow.model import PipelineType, RunStatus


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def spec(folder: Path, n: int) -> AttemptSpec:
    return AttemptSpec(run_id=f"20261202T000000Z-bench-{n:04d}", pipeline="bench", attempt=1,
                       workdir=folder, entry="main.py", type=PipelineType.SCRIPT,
                       python_version=None, requirements=None, env={"PYTHONUNBUFFERED": "1"})


def timed(executor, folder: Path, n: int) -> float:
    begin = time.perf_counter()
    result = executor.execute(spec(folder, n), lambda line: None, threading.Event())
    took = time.perf_counter() - begin
    if result.status is not RunStatus.SUCCEEDED:
        raise SystemExit(f"{executor.name} run {n} ended {result.status.value}: {result.error}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--image", default=runner_image(DEFAULT_IMAGE, DEFAULT_PYTHON))
    parser.add_argument("--init", action="store_true", help="docker swarm init / leave around the bench")
    args = parser.parse_args()
    state = subprocess.run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
                           capture_output=True, text=True, check=True).stdout.strip()
    joined = False
    if state != "active":
        if not args.init:
            raise SystemExit("this engine is not in a swarm: pass --init (init, then leave)")
        subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
                       capture_output=True, check=True)
        joined = True
    try:
        folder = Path(tempfile.mkdtemp()) / "bench"
        folder.mkdir()
        (folder / "main.py").write_text("print('hello')\n")
        folder.chmod(0o755)
        with tempfile.TemporaryDirectory() as cache:
            docker = DockerExecutor(clock=utc_now, cache_dir=Path(cache), image=args.image)
            swarm = SwarmExecutor(clock=utc_now, image=args.image)
            timed(docker, folder, 9000), timed(swarm, folder, 9001)  # warm both paths
            plain, jobs = [], []
            for n in range(args.rounds):
                plain.append(timed(docker, folder, 2 * n))
                jobs.append(timed(swarm, folder, 2 * n + 1))
    finally:
        if joined:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)
    docker_s, swarm_s = statistics.median(plain), statistics.median(jobs)
    print(f"docker executor: median {docker_s:.2f}s over {args.rounds} runs "
          f"(min {min(plain):.2f}s, max {max(plain):.2f}s)")
    print(f"swarm executor:  median {swarm_s:.2f}s over {args.rounds} runs "
          f"(min {min(jobs):.2f}s, max {max(jobs):.2f}s)")
    print(f"swarm overhead per run: {swarm_s - docker_s:+.2f}s, ratio {swarm_s / docker_s:.2f}x")


if __name__ == "__main__":
    main()
