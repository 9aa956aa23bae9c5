"""Webhook intake under `fastflow serve --webhooks`: answer latency and request-to-start (not a test).

Sets up a bare repository with the post-receive hook, starts `fastflow serve --webhooks` on it
(Docker executor, a long poll interval so only the hook and the inbox wake it; rate limits
raised in config.yaml so the load is not answered 429), then:

1. Request -> container start against push -> container start, in the same run: N times,
   alternately, `git push` a change of a `run_on_change: true` pipeline and POST to its key URL
   (`/api/webhooks/bench/<key>`); from the moment the push returned / the request was sent to the
   engine's `start` event of the run's container. Waits for each run to end before the next.
   Target: request -> start median within 1.2x of push -> start.
2. Answer latency at an offered load: R requests per second (default 200) for S seconds to
   another pipeline's key URL, each with its own Idempotency-Key, open loop (sent on schedule
   whatever the answers), from 8 client threads with keep-alive connections; p50/p99 of the
   answers of accepted (202) requests, from the moment each request was sent. Baseline in the
   same run and at the same rate: `GET /healthz` (the server's own minimum). Target: p99 < 50 ms.
3. Throughput: the same requests closed loop (8 clients, each sending the next on the answer),
   requests per second answered 202.
4. The group commit: requests stored durably per flush of the intake's log (from the daemon's
   log line at its stop).

    python bench/webhooks.py [--starts 10] [--rate 200] [--seconds 5] [--image fastflow-runner:py3.11]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from push_to_start import StartEvents, push_once  # noqa: E402
from push_to_start import setup as push_to_start_setup  # noqa: E402

from fastflow.defaults import DEFAULT_IMAGE, DEFAULT_PYTHON  # noqa: E402
from fastflow.executors.docker import runner_image  # noqa: E402

BENCH_KEY = "bench-key-0123456789"
LOAD_KEY = "load-key-0123456789"
CLIENTS = 8
CONFIG = """max_concurrent_runs: 1
webhooks:
  rate_limit_per_client: 1000000
  burst_per_client: 100000
  rate_limit_per_pipeline: 1000000
  max_queued_per_pipeline: 1000000
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(root: Path) -> tuple[Path, Path, Path]:
    return push_to_start_setup(root, {
        ".fastflow/config.yaml": CONFIG,
        "pipelines/bench/main.py": "import time\nprint(repr(time.time()), flush=True)  # v0\n",
        "pipelines/bench/pipeline.json": json.dumps({"run_on_change": True,
                                                     "webhook_key": BENCH_KEY}),
        "pipelines/load/main.py": "print('load')\n",
        "pipelines/load/pipeline.json": json.dumps({"webhook_key": LOAD_KEY}),
    })


class Client:
    """One keep-alive HTTP connection to the intake."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):  # a keep-alive connection the server closed is opened again
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def post_webhook(client: Client, key: str, pipeline: str, n: int | str) -> int:
    status, _ = client.request("POST", f"/api/webhooks/{pipeline}/{key}", body=b'{"n": 1}',
                               headers={"Content-Type": "application/json",
                                        "Idempotency-Key": f"bench-{pipeline}-{n}"})
    return status


def wait_ready(port: int, daemon: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            status, _ = Client(port).request("GET", "/healthz")
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline or daemon.poll() is not None:
            sys.exit(f"the daemon did not start answering:\n{log.read_text()}")
        time.sleep(0.1)


def starts(events: StartEvents, work: Path, port: int, rounds: int) -> tuple[list, list]:
    """Alternate push and webhook; (push -> start, request -> start) in seconds."""
    client = Client(port)
    by_push, by_hook = [], []
    for n in range(1, rounds + 2):  # round 1 is a warm-up
        pushed = push_once(work, n)
        started, _ = events.next("fastflow", "start")
        events.next("fastflow", "destroy")
        sent = time.time()
        status = post_webhook(client, BENCH_KEY, "bench", n)
        if status != 202:
            sys.exit(f"the webhook for bench was answered {status}, not 202")
        hooked, _ = events.next("fastflow", "start")
        events.next("fastflow", "destroy")
        if n > 1:
            by_push.append(started - pushed)
            by_hook.append(hooked - sent)
    return by_push, by_hook


def open_loop(port: int, rate: float, seconds: float, send) -> tuple[list, dict, float]:
    """`send(client, i)` at `rate` per second for `seconds`, on schedule; (latencies of the
    answers counted as accepted, status counts, the seconds the last answer came after t0)."""
    total = int(rate * seconds)
    latencies: list[float] = [0.0] * total
    accepted = [False] * total
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    start = time.perf_counter() + 0.2
    last = [start]

    def worker(index: int) -> None:
        client = Client(port)
        for i in range(index, total, CLIENTS):
            due = start + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            sent = time.perf_counter()
            status = send(client, i)
            took = time.perf_counter() - sent
            latencies[i], accepted[i] = took, status in (200, 202)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                last[0] = max(last[0], time.perf_counter())

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # In the order sent: whether the answer time grows with the number of runs already queued.
    return [t for t, ok in zip(latencies, accepted) if ok], statuses, last[0] - start


def closed_loop(port: int, total: int, offset: int) -> tuple[int, float, dict]:
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def worker(index: int) -> None:
        client = Client(port)
        for i in range(index, total, CLIENTS):
            status = post_webhook(client, LOAD_KEY, "load", offset + i)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses.get(202, 0), time.perf_counter() - began, statuses


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    return (f"{name}: median {statistics.median(values) * scale:.3f}{unit}  "
            f"p90 {quantile(values, 0.9) * scale:.3f}{unit}  p99 {quantile(values, 0.99) * scale:.3f}"
            f"{unit}  max {max(values) * scale:.3f}{unit}  (n={len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--image", default=runner_image(DEFAULT_IMAGE, DEFAULT_PYTHON))
    parser.add_argument("--keep", action="store_true",
                        help="Keep the temporary folder (repository, state dir, serve.log).")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fastflow-bench-webhooks-"))
    if args.keep:
        print(f"temporary folder: {root}", flush=True)
    events = StartEvents()
    daemon = None
    port = free_port()
    try:
        bare, work, state = setup(root)
        env = {**os.environ, "FASTFLOW_CACHE_DIR": str(root / "cache")}
        log_path = root / "serve.log"
        log = open(log_path, "w")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "fastflow", "serve", "--repo", str(bare), "--state-dir",
             str(state), "--poll-interval", "600", "--webhooks", f"127.0.0.1:{port}"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_ready(port, daemon, log_path)

        by_push, by_hook = starts(events, work, port, args.starts)

        health, health_statuses, _ = open_loop(
            port, args.rate, args.seconds, lambda c, i: c.request("GET", "/healthz")[0])
        accepted, statuses, span = open_loop(
            port, args.rate, args.seconds, lambda c, i: post_webhook(c, LOAD_KEY, "load", i))
        done, took, closed_statuses = closed_loop(port, int(args.rate * args.seconds),
                                                  offset=10**6)

        print(f"image {args.image}; {CLIENTS} client threads with keep-alive; loopback")
        print(f"1. starts ({args.starts} of each, after 1 warm-up, alternating)")
        print("   " + summary("git push returned -> container started", by_push))
        print("   " + summary("webhook request sent -> container started", by_hook))
        ratio = statistics.median(by_hook) / statistics.median(by_push)
        print(f"   ratio of medians (request-to-start / push-to-start): {ratio:.2f}; target "
              f"<= 1.2 ({'met' if ratio <= 1.2 else 'NOT met'})")
        print(f"2. offered {args.rate:g} req/s for {args.seconds:g} s "
              f"({int(args.rate * args.seconds)} requests)")
        print(f"   statuses: webhook {dict(sorted(statuses.items()))}, healthz "
              f"{dict(sorted(health_statuses.items()))}")
        print("   " + summary("baseline: GET /healthz answer", health, " ms", 1000))
        print("   " + summary("accepted webhook (202) answer", accepted, " ms", 1000))
        tenth = max(1, len(accepted) // 10)
        print(f"   accepted answer median of the first {tenth} sent: "
              f"{statistics.median(accepted[:tenth]) * 1000:.3f} ms, of the last {tenth}: "
              f"{statistics.median(accepted[-tenth:]) * 1000:.3f} ms")
        print(f"   answered {len(accepted) / span:.0f} accepted req/s; ratio of p99 "
              f"(webhook / healthz): {quantile(accepted, 0.99) / quantile(health, 0.99):.2f}; "
              f"ratio of medians: {statistics.median(accepted) / statistics.median(health):.2f}; "
              f"target p99 < 50 ms ({'met' if quantile(accepted, 0.99) < 0.050 else 'NOT met'})")
        print(f"3. closed loop: {done} accepted in {took:.2f} s = {done / took:.0f} req/s "
              f"(statuses {dict(sorted(closed_statuses.items()))})")
        daemon.terminate()
        daemon.wait(120)
        daemon = None
        found = re.search(r"(\d+) records appended, (\d+) of them durable, in (\d+) flushes",
                          log_path.read_text())
        if found:
            durable, flushes = int(found[2]), int(found[3])
            print(f"4. the intake's log: {durable} requests stored durably in {flushes} flushes "
                  f"({durable / max(flushes, 1):.1f} requests per flush: the group commit)")
    finally:
        events.close()
        if daemon is not None:
            daemon.terminate()
            daemon.wait(120)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
