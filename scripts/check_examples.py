"""The main job: the example gallery end to end, the way a team would run it.

1. Makes a demo "server" repository `artifacts/demo/origin.git` (bare) and pushes this
   repository's `pipelines/` and `.fastflow/` to it with git, as a user would.
2. Starts `fastflow serve` on it (Docker executor when an engine answers) and installs the
   post-receive hook.
3. Queues one run of every example with `fastflow run NAME --remote` (a gallery flow of
   `.fastflow/flows/` too: a flow run, whose flow record it waits for), except the examples with a
   `webhook_key`, which are started over HTTP as another system would (`POST
   /api/webhooks/NAME/KEY` to `fastflow serve --webhooks`, a JSON body `{"env": {...}}`), and
   waits until the daemon has committed each record to the results branch (downstream runs of
   `chain_start` included).
   A supervised example (`restart_on_crash`) that crashed is followed to the restart
   supervision starts; its outcome is the restart's.
4. Notifications: the demo server's `.fastflow/config.yaml` gets a target (`json://` to a small
   HTTP receiver this script runs on loopback, events `every_failure` and `recovery`), so each
   failing example is notified; the script checks the receiver heard of `failing` and that the
   deliveries are recorded on the results branch (`notifications/`).
5. Stops the daemon, then runs `SWARM_EXAMPLES` (two pipelines and the `fan_in` flow) again
   on a Docker Swarm: the engine becomes a
   one-node Swarm manager (unless it is one already), a second `fastflow serve --executor
   swarm` (its own state dir) runs them as one-shot Swarm jobs, and the engine leaves swarm mode
   again (`--no-swarm` skips this; docs/swarm.md).
6. Compares each outcome with `pipelines/expected.json`, copies the status site the daemon
   published on the results branch to `artifacts/site/`.

Usage: python3 scripts/check_examples.py [--no-swarm] [NAME ...]    (default: every example)
Exit 0 when every example ended as expected.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ART = ROOT / "artifacts"
DEMO = ART / "demo"
BARE = DEMO / "origin.git"
STATE = DEMO / "state"
SWARM_STATE = DEMO / "state-swarm"
# A success and an OOM kill as one-shot Swarm jobs, and a flow (its tasks on the daemon's node)
SWARM_EXAMPLES = ("minimal", "oom_fails", "fan_in")
SITE = ART / "site"
RESULTS = "fastflow/results"
TIMEOUT = 900  # seconds for every run to be recorded
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "Example user", "GIT_AUTHOR_EMAIL": "user@example.com",
           "GIT_COMMITTER_NAME": "Example user", "GIT_COMMITTER_EMAIL": "user@example.com"}


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True,
                          text=True).stdout


def fastflow(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastflow", *args], cwd=ROOT, text=True, **kw)


class Receiver(ThreadingHTTPServer):
    """A notification receiver on loopback: keeps the body of every POST (apprise's json://)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.bodies.append(json.loads(raw or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server_address[1]}/gallery"


def make_origin(receiver: Receiver) -> None:
    """A bare repository holding the gallery, pushed from a scratch clone; its config.yaml
    notifies `receiver` of every failure and recovery."""
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir(parents=True)
    git("init", "-q", "--bare", "-b", "main", str(BARE))
    work = DEMO / "work"
    git("clone", "-q", str(BARE), str(work))
    git("checkout", "-q", "-b", "main", cwd=work)
    shutil.copytree(ROOT / "pipelines", work / "pipelines")
    shutil.copytree(ROOT / ".fastflow", work / ".fastflow")
    with open(work / ".fastflow" / "config.yaml", "a") as config:
        config.write("# Added by scripts/check_examples.py: its receiver on loopback.\n"
                     "notifications:\n"
                     f"  - {{name: gallery-receiver, url: \"{receiver.url}\", "
                     "events: [every_failure, recovery]}\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "The example gallery", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)


def results_file(path: str) -> str | None:
    try:
        return git("--git-dir", str(BARE), "show", f"{RESULTS}:{path}")
    except subprocess.CalledProcessError:
        return None


def is_flow(name: str) -> bool:
    """A gallery flow (`.fastflow/flows/<name>.json`) rather than a pipeline."""
    return (ROOT / ".fastflow" / "flows" / f"{name}.json").is_file()


def recorded(run_ids: dict[str, str]) -> dict[str, dict]:
    """The records of `run_ids` (pipeline or flow -> run id or flow run id) already on the
    results branch; a flow run's counts once it ended (its record says `running` before)."""
    found = {}
    for name, run_id in run_ids.items():
        month = f"{run_id[:4]}/{run_id[4:6]}"
        folder = "flows" if is_flow(name) else "runs"
        text = results_file(f"{folder}/{name}/{month}/{run_id}.json")
        if text and json.loads(text).get("status") not in ("running", "queued"):
            found[name] = json.loads(text)
    return found


def downstream_of(record: dict) -> list[str]:
    return [d["pipeline"] for d in record.get("downstream") or []]


def restarts_on_crash(name: str) -> bool:
    meta = ROOT / "pipelines" / name / "pipeline.json"
    return meta.exists() and bool(json.loads(meta.read_text()).get("restart_on_crash"))


def restart_of(record: dict) -> dict | None:
    """The recorded run supervision started after the crashed run `record`, if any yet."""
    pipeline, month = record["pipeline"], f"{record['run_id'][:4]}/{record['run_id'][4:6]}"
    try:
        names = git("--git-dir", str(BARE), "ls-tree", "--name-only",
                    f"{RESULTS}:runs/{pipeline}/{month}").split()
    except subprocess.CalledProcessError:
        return None
    for name in names:
        if "-restart-" not in name:
            continue
        child = json.loads(results_file(f"runs/{pipeline}/{month}/{name}") or "{}")
        trigger = child.get("trigger") or {}
        if trigger.get("kind") == "restart" and trigger.get("parent_run_id") == record["run_id"]:
            return child
    return None


def follow_restarts(records: dict[str, dict], daemon: subprocess.Popen) -> None:
    """Replace the crashed record of each supervised example with its restart's, waiting for it."""
    deadline = time.monotonic() + 300
    for name, record in records.items():
        if not restarts_on_crash(name) or record["status"] == "succeeded":
            continue
        while (restart := restart_of(record)) is None:
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit(f"{name} crashed ({record['run_id']}) and no restart was "
                                 f"recorded; see {DEMO}/serve.log")
            time.sleep(1)
        print(f"{name} crashed ({record['status']}, {record['run_id']}); supervision restarted "
              f"it: {restart['run_id']} {restart['status']}", flush=True)
        records[name] = restart


def check_notifications(receiver: Receiver) -> list[str]:
    """What is wrong with the notifications of the run: the receiver must have heard of
    `failing`, and the deliveries must be on the results branch."""
    problems = []
    heard = json.dumps(receiver.bodies)
    print(f"\nNotifications: {len(receiver.bodies)} message(s) received on loopback "
          f"({receiver.url}): " + "; ".join(b.get("title", "?") for b in receiver.bodies))
    if "failing" not in heard:
        problems.append("notifications: the receiver heard nothing of the failing example")
    try:
        delivered = git("--git-dir", str(BARE), "ls-tree", "-r", "--name-only", RESULTS,
                        "notifications/").split()
    except subprocess.CalledProcessError:
        delivered = []
    print(f"Deliveries recorded on the results branch: {len(delivered)} (notifications/)")
    if not delivered:
        problems.append("notifications: no delivery recorded under notifications/ on the "
                        "results branch")
    return problems


def wait_for_records(run_ids: dict[str, str], daemon: subprocess.Popen) -> dict[str, dict]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = recorded(run_ids)
        if len(found) == len(run_ids):
            return found
        if daemon.poll() is not None:
            raise SystemExit(f"fastflow serve exited ({daemon.returncode}); see {DEMO}/serve.log")
        time.sleep(1)
    missing = sorted(set(run_ids) - set(recorded(run_ids)))
    raise SystemExit(f"runs not recorded after {TIMEOUT}s: {', '.join(missing)}")


def copy_site() -> None:
    """Extract `site/` of the results branch (published by the daemon) to artifacts/site/."""
    shutil.rmtree(SITE, ignore_errors=True)
    archive = subprocess.run(["git", "--git-dir", str(BARE), "archive", RESULTS, "site"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(ART, filter="data")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def webhook_key(name: str) -> str | None:
    meta = ROOT / "pipelines" / name / "pipeline.json"
    return json.loads(meta.read_text()).get("webhook_key") if meta.exists() else None


def wait_listening(port: int, daemon: subprocess.Popen) -> None:
    """Until the daemon's webhook intake answers GET /healthz."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                return
        except OSError:
            if daemon.poll() is not None:
                raise SystemExit(f"fastflow serve exited ({daemon.returncode}); see {DEMO}/serve.log")
            time.sleep(0.2)
    raise SystemExit(f"the webhook intake on 127.0.0.1:{port} did not answer within 60 s")


def post_webhook(port: int, name: str, key: str) -> str:
    """Start `name` through its Fast-Flow webhook URL; returns the run id of the 202 answer."""
    body = json.dumps({"env": {"SOURCE": "scripts/run-examples"}, "rows": 42}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/webhooks/{name}/{key}", data=body, method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": f"examples-{time.time_ns()}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        if answer.status != 202:
            raise SystemExit(f"webhook of {name}: HTTP {answer.status}, expected 202")
        return json.loads(answer.read())["run_id"]


def main(argv: list[str]) -> int:
    expected = json.loads((ROOT / "pipelines" / "expected.json").read_text())
    swarm = "--no-swarm" not in argv
    argv = [a for a in argv if a != "--no-swarm"]
    names = argv or list(expected)
    receiver = Receiver()
    make_origin(receiver)
    fastflow("hooks", "install", str(BARE), "--state-dir", str(STATE), check=True,
             stdout=subprocess.DEVNULL)
    port = free_port()
    daemon, log = start_serve(STATE, "serve.log", "--webhooks", f"127.0.0.1:{port}")
    try:
        print(f"fastflow serve follows {BARE.relative_to(ROOT)} (log {DEMO.relative_to(ROOT)}/serve.log)")
        wait_listening(port, daemon)
        run_ids = {}
        for name in names:
            key = webhook_key(name)
            if key:
                run_ids[name] = post_webhook(port, name, key)
                print(f"started {name} by webhook (127.0.0.1:{port}): {run_ids[name]}", flush=True)
                continue
            run_ids[name] = queue_remote(name, STATE)
            print(f"queued {name}: {run_ids[name]}", flush=True)
        records = wait_for_records(run_ids, daemon)
        follow_restarts(records, daemon)
        for record in list(records.values()):
            for child in downstream_of(record):  # chain_start starts chain_publish by its route
                print(f"{record['pipeline']} started {child} (route {record.get('route')!r})")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)
        log.close()
    problems = check_notifications(receiver)
    receiver.shutdown()
    if swarm:
        problems += run_on_swarm(expected)[1]
    copy_site()
    return report(names, expected, records, problems)


def start_serve(state: Path, log_name: str, *extra: str) -> tuple[subprocess.Popen, object]:
    """`fastflow serve` on the demo repository with `state`, once its first deployment is in."""
    log = open(DEMO / log_name, "w")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "fastflow", "serve", "--repo", str(BARE), "--state-dir", str(state),
         "--poll-interval", "5", *extra], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    while not (state / "inbox").is_dir() or not (state / "deployment.json").exists():
        if daemon.poll() is not None:
            raise SystemExit(f"fastflow serve exited ({daemon.returncode}); see {DEMO}/{log_name}")
        time.sleep(0.2)
    return daemon, log


def queue_remote(name: str, state: Path) -> str:
    queued = fastflow("run", name, "--remote", "--state-dir", str(state), check=True,
                      capture_output=True)
    return queued.stdout.split()[1]  # "queued <run id> on the daemon of ..."


def swarm_state() -> str:
    return subprocess.run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def advertise_address() -> str:
    """The host's address on its default route (no packet is sent), else loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def run_on_swarm(expected: dict) -> tuple[dict[str, dict], list[str]]:
    """`SWARM_EXAMPLES` through `fastflow serve --executor swarm` on a one-node Swarm; returns
    their records and what went wrong. Leaves swarm mode afterwards when it entered it."""
    entered = swarm_state() != "active"
    if entered:
        subprocess.run(["docker", "swarm", "init", "--advertise-addr", advertise_address()],
                       check=True, capture_output=True)
    try:
        daemon, log = start_serve(SWARM_STATE, "serve-swarm.log", "--executor", "swarm")
        try:
            run_ids = {name: queue_remote(name, SWARM_STATE) for name in SWARM_EXAMPLES}
            print(f"on a Docker Swarm ({'a one-node swarm made for this' if entered else 'the engine is a manager'}): "
                  + ", ".join(f"{n} {r}" for n, r in run_ids.items()), flush=True)
            records = wait_for_records(run_ids, daemon)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=120)
            log.close()
    finally:
        if entered:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)
    problems = []
    for name, record in records.items():
        if record["status"] != expected[name]:
            problems.append(f"{name} on Swarm: expected {expected[name]}, got {record['status']}")
        if "flow_run_id" in record:  # a flow: its tasks ran as Swarm jobs on the daemon's node
            tasks = ", ".join(f"{t['id']} {t['status']}" for t in record.get("tasks", []))
            print(f"swarm: {name:10} {record['status']:11} flow run {record['flow_run_id']}: {tasks}")
            continue
        node = (record.get("environment") or {}).get("node")
        print(f"swarm: {name:10} {record['status']:11} on node {node}  {record['run_id']}")
        if not node:
            problems.append(f"{name} on Swarm: the record names no node")
    return records, problems


def report(names: list[str], expected: dict, records: dict[str, dict],
           problems: list[str]) -> int:
    print()
    mismatches = list(problems)
    for name in names:
        record = records[name]
        status = record["status"]
        mark = "ok " if status == expected[name] else "BAD"
        if "flow_run_id" in record:  # a flow: its tasks instead of attempts
            tasks = ", ".join(f"{t['id']} {t['status']}" for t in record["tasks"])
            print(f"{mark} {name:16} {status:11} {record.get('duration_s') or 0:6.1f}s  "
                  f"flow run {record['flow_run_id']}: {tasks}")
        else:
            attempts = len(record.get("attempts") or [])
            print(f"{mark} {name:16} {status:11} {record.get('duration_s') or 0:6.1f}s  "
                  f"{attempts} attempt(s)  {record['run_id']}")
        if status != expected[name]:
            mismatches.append(f"{name}: expected {expected[name]}, got {status}")
    print(f"\nResults branch: {RESULTS} of {BARE.relative_to(ROOT)} "
          f"(git --git-dir {BARE.relative_to(ROOT)} log {RESULTS})")
    print(f"Status site:    {(SITE / 'index.html').relative_to(ROOT)}")
    if mismatches:
        print("\nUnexpected outcomes:\n  " + "\n  ".join(mismatches), file=sys.stderr)
        return 1
    print(f"\nAll {len(names)} examples ended as expected.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
