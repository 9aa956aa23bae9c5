"""CPU used by an idle `fastflow serve` between wake-ups (not a timed test).

Starts `fastflow serve --local` on a fresh repository holding 1,000 schedules whose next slots
are hours away, waits until it has synced, then reads the daemon's CPU time (user + system,
from /proc) over a quiet window. The baseline is the same reading, over the same window, of a
Python process that only sleeps, measured in the same run. Target: the idle daemon's CPU is
within a few milliseconds per minute of the baseline (it wakes for its heartbeat and poll only).

    python bench/idle_daemon.py [--window 30] [--poll-interval 60]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True)


def make_repo(root: Path, schedules: int) -> Path:
    repo = root / "repo"
    (repo / "pipelines" / "job").mkdir(parents=True)
    (repo / "pipelines" / "job" / "main.py").write_text("print('job')\n")
    (repo / ".fastflow").mkdir()
    lines = ["schedules:"]
    for i in range(schedules):  # daily slots spread over the night: none due during the bench
        lines += [f"  - pipeline: job\n    id: s{i}\n    cron: \"{i % 60} 3 * * *\"\n"
                  "    timezone: Pacific/Kiritimati"]
    (repo / ".fastflow" / "schedules.yaml").write_text("\n".join(lines) + "\n")
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "bench", cwd=repo)
    return repo


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def measure(pids: tuple[int, ...], window: float) -> list[float]:
    """CPU seconds each process used over the same `window`."""
    before = [cpu_seconds(pid) for pid in pids]
    time.sleep(window)
    return [cpu_seconds(pid) - b for pid, b in zip(pids, before)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=130.0)  # two heartbeats and polls
    parser.add_argument("--poll-interval", type=float, default=60.0)
    parser.add_argument("--schedules", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = make_repo(root, args.schedules)
        state = root / "state"
        daemon = subprocess.Popen(
            [sys.executable, "-m", "fastflow", "serve", "--repo", str(repo), "--state-dir",
             str(state), "--local", "--poll-interval", str(args.poll_interval)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10**6)"])
        try:
            deadline = time.monotonic() + 120
            while not (state / "status.json").exists():
                if daemon.poll() is not None or time.monotonic() > deadline:
                    print("fastflow serve did not start", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            time.sleep(3)  # let start-up work (first sync, site pages) finish
            daemon_cpu, baseline = measure((daemon.pid, sleeper.pid), args.window)
        finally:
            for process in (daemon, sleeper):
                process.terminate()
                process.wait(timeout=60)
    per_minute = daemon_cpu / args.window * 60
    print(f"schedules                       {args.schedules}")
    print(f"quiet window                    {args.window:.0f} s (poll every {args.poll_interval:.0f} s, "
          "heartbeat every 60 s)")
    print(f"idle daemon CPU                 {daemon_cpu * 1000:.0f} ms  ({per_minute * 1000:.1f} ms/min, "
          f"{daemon_cpu / args.window * 100:.3f}% of a core)")
    print(f"baseline: sleeping python       {baseline * 1000:.0f} ms")
    extra = (daemon_cpu - baseline) / args.window * 60 * 1000
    print(f"extra over baseline             {extra:.1f} ms/min")
    print(f"target < 50 ms/min extra        {'OK' if extra < 50 else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
