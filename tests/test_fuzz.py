"""Fuzz: generated hostile repositories never crash Fast-Flow (issue 12's acceptance suite).

A seeded generator (FASTFLOW_FUZZ_SEED replays one; the seed is printed) builds pipelines
repositories from hostile ingredients: folder names (spaces, markup, newlines, bytes that are
not UTF-8, dots, very long), encodings (UTF-16, Latin-1, binary), deep nesting, huge and
non-finite numbers, instants at the edges of the calendar, symlinks (outside the repository, to
themselves), YAML aliases (a "billion laughs"), and output (very long lines, binary bytes,
terminal control sequences). Checks:

- `validate`, `list` and `schedule check` never print a traceback, exit 0 or 1, and every
  problem they report reads `<file>: <field>: <message>` (or `<file>: <message>` for the file
  as a whole);
- a real daemon (`fastflow serve`, Docker) fed such commits one after another keeps running:
  it syncs each one, a run of the canary pipeline beside the hostile ones queued after each
  push is recorded (the daemon still ticks and records), runs with hostile output (a 3 MB line,
  binary bytes, terminal controls) succeed with their output after it kept, and its log holds
  no traceback.

Bounded: about 30 repositories through the CLI and 8 pushes through the daemon.
"""
from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import Origin, start_serve, utc_now, wait_for

from fastflow.daemon.statedir import queue_remote_run
from fastflow.results.store import ResultsStore

SEED = int(os.environ.get("FASTFLOW_FUZZ_SEED") or random.randrange(10**6))
PROBLEM = re.compile(r"^(?:error|warning|Error): [^\s:][^:]*: \S")

NAMES = ["bad name", "<script>alert(1)</script>", "new\nline", "bad\udcffname", "a" * 80,
         "-dash", "..", "ünïcode", "x;rm -rf", "UPPER.case-ok_1"]
NUMBERS = ["1e400", "-1e400", "NaN", "1e26", "-5", "0", "99999999999999999999", "1e300",
           '"12"', "true", '"1.5g"', '"99999999999999999999t"']
INSTANTS = ['"0001-01-01T00:00:00+14:00"', '"9999-12-31T23:59:59"', '"9999-12-31T23:59:59-12:00"',
            '"2026-02-30T00:00:00Z"', '"1969-12-31T23:59:59Z"', '""', '"now"']
FIELDS_NUM = ["timeout", "cpu_hard_limit", "cpu_soft_limit", "retry_attempts", "max_instances",
              "schedule_interval_seconds", "restart_cooldown"]
FIELDS_SIZE = ["mem_hard_limit", "mem_soft_limit"]
BOMB = ('a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
        'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n'
        'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n'
        'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n'
        'schedules: [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n')


def hostile_files(rnd: random.Random, canary: str = "print('canary')\n") -> dict[str, bytes | str]:
    """One hostile repository: a good `canary` pipeline and a few hostile ingredients."""
    files: dict[str, bytes | str] = {"pipelines/canary/main.py": canary}
    for i in range(rnd.randint(2, 4)):
        kind = rnd.choice(["name", "numbers", "instant", "encoding", "nesting", "symlink",
                           "yaml", "schedules", "requirements"])
        folder = f"pipelines/p{i}"
        if kind == "name":
            folder = f"pipelines/{rnd.choice(NAMES)}"
            files[f"{folder}/main.py"] = "print('named')\n"
        elif kind == "numbers":
            pairs = [f'"{f}": {rnd.choice(NUMBERS)}' for f in rnd.sample(FIELDS_NUM, 3)]
            pairs += [f'"{f}": {rnd.choice(NUMBERS)}' for f in rnd.sample(FIELDS_SIZE, 1)]
            pairs.append(f'"retry_strategy": {{"type": "fixed_delay", "delay": {rnd.choice(NUMBERS)}}}')
            pairs.append(f'"default_env": {{"A": "x\\u0000y", "B": {rnd.choice(NUMBERS)}}}')
            files[f"{folder}/main.py"] = "print(1)\n"
            files[f"{folder}/pipeline.json"] = "{" + ", ".join(pairs) + "}"
        elif kind == "instant":
            files[f"{folder}/main.py"] = "print(1)\n"
            files[f"{folder}/pipeline.json"] = (
                f'{{"run_once_at": {rnd.choice(INSTANTS)}, "schedule_start": {rnd.choice(INSTANTS)}}}')
        elif kind == "encoding":
            files[f"{folder}/main.py"] = "print(1)\n"
            files[f"{folder}/pipeline.json"] = rnd.choice([
                '{"description": "é"}'.encode("utf-16"), b'{"description": "\xe9\xff"}',
                bytes(rnd.randrange(256) for _ in range(64))])
        elif kind == "nesting":
            depth = rnd.choice([1000, 20000, 100000])
            files[f"{folder}/main.py"] = "print(1)\n"
            files[f"{folder}/pipeline.json"] = "[" * depth + "]" * depth
        elif kind == "symlink":
            files[f"{folder}/main.py"] = "print(1)\n"
            target = rnd.choice(["/etc/passwd", "../../../outside", "pipeline.json"])
            files[f"{folder}/pipeline.json"] = ("symlink", target)  # type: ignore[assignment]
        elif kind == "yaml":
            files[".fastflow/config.yaml"] = rnd.choice(
                [BOMB, "a:" + " [" * 20000 + "\n", "max_concurrent_runs: 1e400\n",
                 "log_cap: 99999999999999999999t\n", "image: [1, 2]\n", "\x00\x01binary"])
        elif kind == "schedules":
            files[".fastflow/schedules.yaml"] = rnd.choice([
                BOMB, "schedules: 5\n",
                "schedules:\n  - pipeline: canary\n    interval: 99999999999999999999w\n",
                "schedules:\n  - pipeline: canary\n    at: 9999-12-31T23:59:59\n"
                "    timezone: America/Los_Angeles\n",
                "timezone: /etc/localtime\nschedules: []\n",
                "schedules:\n  - pipeline: canary\n    cron: '61 * * * *'\n"])
        else:
            files[f"{folder}/main.py"] = "print(1)\n"
            files[f"{folder}/requirements.txt"] = rnd.choice([
                b"\xff\xfe\x00bad", "--index-url http://example.invalid/simple\nsix\n", "six==1.16.0\n"])
    return files


def write_repo(root: Path, files: dict) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():  # an earlier push's file or link: replace it
            path.unlink()
        if isinstance(content, tuple):
            os.symlink(content[1], path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastflow", *args], cwd=root, capture_output=True,
                          timeout=120)


@pytest.mark.slow
def test_hostile_repositories_through_the_cli(tmp_path):
    print(f"fuzz seed {SEED}")
    rnd = random.Random(SEED)
    findings = []
    for n in range(30):
        root = tmp_path / f"repo{n}"
        files = hostile_files(rnd)
        write_repo(root, files)
        for args in (("validate",), ("list",), ("schedule", "check")):
            proc = cli(root, *args)
            out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
            where = f"repo{n} {' '.join(args)} (files {sorted(files)}):\n{out[-3000:]}"
            if "Traceback" in out or proc.returncode not in (0, 1):
                findings.append(f"crash in {where}")
                continue
            for line in out.splitlines():
                if line.startswith(("error:", "warning:", "Error:")) and not PROBLEM.match(line):
                    findings.append(f"unshaped problem line {line!r} in {where}")
    assert not findings, f"seed {SEED}:\n" + "\n\n".join(findings[:5])


def synced(store: ResultsStore) -> str | None:
    """The commit of the daemon's last sync (state/sync.json on the results branch)."""
    try:
        return (store.read_state("sync") or {}).get("commit")
    except Exception:  # the branch is being written: not yet
        return None


OUTPUTS = {
    "longline": "print('x' * 3_000_000)\nprint('after the long line')\n",
    "binary": "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 100)\nprint()\nprint('after')\n",
    "controls": "print('\\x1b[2J\\x1b]0;pwned\\x07\\x00bell\\x07')\nprint('after')\n",
}


@pytest.mark.docker
@pytest.mark.slow
def test_a_daemon_fed_hostile_commits_keeps_recording_the_others(tmp_path, origin: Origin,
                                                                   runner_image, shared_cache):
    print(f"fuzz seed {SEED}")
    rnd = random.Random(SEED + 1)
    canary: dict[str, str] = {}
    canary.update({f"pipelines/{name}/main.py": code for name, code in OUTPUTS.items()})
    origin.push({**canary, "pipelines/canary/main.py": "print('canary 0')\n"}, "start")
    state = tmp_path / "state"
    state.mkdir()
    proc = start_serve(origin.bare, state, tmp_path / "serve.log", "--poll-interval", "1",
                       env={"FASTFLOW_CACHE_DIR": str(shared_cache)})
    store = ResultsStore(origin.bare, tmp_path / "reader-journal", utc_now)
    try:
        queued = [queue_remote_run(state, name, {}, None, utc_now()) for name in OUTPUTS]
        for n in range(1, 9):
            write_repo(origin.work, hostile_files(rnd, canary=f"print('canary {n}')\n"))
            sha = origin.push({}, f"hostile {n}")
            wait_for(lambda: synced(store) == sha, timeout=60, what=f"the sync of hostile push {n}")
            canary_id = queue_remote_run(state, "canary", {}, None, utc_now())
            wait_for(lambda: canary_id in store.list_run_ids("canary", limit=1000), timeout=60,
                     what=f"the canary's record after hostile push {n}")
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
        for run_id in queued:
            pipeline = run_id.split("-")[1]
            wait_for(lambda: run_id in store.list_run_ids(pipeline, limit=100), timeout=60,
                     what=f"the record of {run_id}")
            record = store.read_run(run_id, pipeline)
            assert record.status.value == "succeeded", (pipeline, record.error)
            assert "after" in store.read_log(run_id, pipeline)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    output = (tmp_path / "serve.log").read_text(errors="replace")
    assert "Traceback" not in output, output[output.index("Traceback") - 500:][:5000]
