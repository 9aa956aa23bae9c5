"""Latency from `git push` to the pipeline's container starting, under `fastflow serve` (not a test).

Sets up a bare repository with the post-receive hook (`fastflow hooks install`), starts
`fastflow serve` on it in a subprocess (Docker executor, a long poll interval so only the hook
wakes it), then N times: changes the code of a `run_on_change: true` pipeline (its
requirements never change), `git push`es with the git CLI, and measures from the moment the
push returned to the engine's `start` event of the run's container (and to the pipeline's
first output line, which it prints as `time.time()`). Waits for the run to end between pushes.

Baseline, measured in the same run: a bare `docker run --rm` of the same image, from the
moment the command is launched to the engine's `start` event of its container. Prints
median / p90 of both and their ratio; target: push-to-start median < 1 s.

    python bench/push_to_start.py [--pushes 10] [--image fastflow-runner:py3.11]
"""
from __future__ import annotations

import argparse
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fastflow.defaults import DEFAULT_IMAGE, DEFAULT_PYTHON
from fastflow.executors.docker import connect, runner_image

MAIN = "import time\nprint(repr(time.time()), flush=True)  # v{n}\n"
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@b"}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout.strip()


class StartEvents:
    """The engine's container `start` / `destroy` events, as (kind, action, time, attributes)."""

    def __init__(self) -> None:
        self.client = connect()
        self.events: queue.Queue = queue.Queue()
        self.stream = self.client.events(decode=True, filters={
            "type": "container", "event": ["start", "destroy"]})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self.stream:
                attrs = event.get("Actor", {}).get("Attributes", {})
                kind = ("fastflow" if attrs.get("org.fastflow.pipeline") == "bench"
                        else "baseline" if attrs.get("fastflow.bench") == "baseline" else None)
                if kind:
                    self.events.put((kind, event["Action"], event["timeNano"] / 1e9, attrs))
        except Exception:  # noqa: BLE001 - closed at the end
            pass

    def next(self, kind: str, action: str, timeout: float = 60.0) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind} {action} event within {timeout}s")
            got_kind, got_action, at, attrs = self.events.get(timeout=left)
            if (got_kind, got_action) == (kind, action):
                return at, attrs

    def close(self) -> None:
        self.stream.close()


def setup(root: Path, files: dict[str, str] | None = None) -> tuple[Path, Path, Path]:
    """A bare repository with the post-receive hook, its clone and a state dir; the first commit
    holds `files` (path -> text), by default the `bench` pipeline (`run_on_change`)."""
    bare, work, state = root / "origin.git", root / "work", root / "state"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=root)
    git("clone", "-q", str(bare), str(work), cwd=root)
    git("checkout", "-q", "-b", "main", cwd=work)
    if files is None:
        files = {"pipelines/bench/main.py": MAIN.format(n=0),
                 "pipelines/bench/pipeline.json": '{"run_on_change": true}\n'}
    for path, text in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    git("add", "-A", cwd=work)
    git("commit", "-qm", "bench v0", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    subprocess.run([sys.executable, "-m", "fastflow", "hooks", "install", str(bare),
                    "--state-dir", str(state)], check=True, capture_output=True)
    return bare, work, state


def push_once(work: Path, n: int) -> float:
    """Change the pipeline's code, commit, push; the wall time when the push returned."""
    (work / "pipelines" / "bench" / "main.py").write_text(MAIN.format(n=n))
    git("commit", "-qam", f"bench v{n}", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    return time.time()


def first_output_time(state: Path, run_id: str) -> float | None:
    """The `time.time()` the pipeline printed first, from the daemon's live log (if still there)."""
    live = state / "live" / f"{run_id}.log"
    try:
        for line in live.read_text().splitlines():
            if " stdout | " in line:
                return float(line.split(" stdout | ", 1)[1])
    except (OSError, ValueError):
        return None
    return None


def baseline(events: StartEvents, image: str) -> float:
    begin = time.time()
    subprocess.run(["docker", "run", "--rm", "--label", "fastflow.bench=baseline", image,
                    "sh", "-c", "echo started"],
                   check=True, capture_output=True)
    at, _ = events.next("baseline", "start")
    return at - begin


def summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return (f"{name}: median {statistics.median(values):.3f}s  p90 {p90:.3f}s  "
            f"min {ordered[0]:.3f}s  max {ordered[-1]:.3f}s  (n={len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=10)
    parser.add_argument("--image", default=runner_image(DEFAULT_IMAGE, DEFAULT_PYTHON))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fastflow-bench-push-"))
    events = StartEvents()
    daemon = None
    try:
        bare, work, state = setup(root)
        env = {**os.environ, "FASTFLOW_CACHE_DIR": str(root / "cache")}
        log = open(root / "serve.log", "w")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "fastflow", "serve", "--repo", str(bare), "--state-dir",
             str(state), "--poll-interval", "600"], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (state / "status.json").exists():
            if time.monotonic() > deadline or daemon.poll() is not None:
                sys.exit(f"the daemon did not start:\n{(root / 'serve.log').read_text()}")
            time.sleep(0.05)
        baseline(events, args.image)  # warm-up: image, engine
        to_start, to_output, bare_run = [], [], []
        for n in range(1, args.pushes + 2):  # push 1 is a warm-up
            pushed = push_once(work, n)
            started, attrs = events.next("fastflow", "start")
            run_id = attrs.get("org.fastflow.run_id", "")
            output = None
            for _ in range(100):  # the first line reaches the live log shortly after the start
                output = first_output_time(state, run_id)
                if output is not None:
                    break
                time.sleep(0.01)
            events.next("fastflow", "destroy")  # the run was collected: the next push is alone
            if n > 1:
                to_start.append(started - pushed)
                if output is not None:
                    to_output.append(output - pushed)
                bare_run.append(baseline(events, args.image))
        print(f"pushes: {args.pushes} (after 1 warm-up), image {args.image}")
        print(summary("git push returned -> container started", to_start))
        if to_output:
            print(summary("git push returned -> first output line", to_output))
        print(summary("baseline: docker run launched -> container started", bare_run))
        print(f"ratio of medians (push-to-start / docker run): "
              f"{statistics.median(to_start) / statistics.median(bare_run):.2f}; "
              f"target: push-to-start median < 1 s "
              f"({'met' if statistics.median(to_start) < 1 else 'NOT met'})")
    finally:
        events.close()
        if daemon is not None:
            daemon.terminate()
            daemon.wait(60)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
