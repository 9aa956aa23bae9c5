"""The webhook intake against the real server on loopback (docs/webhooks.md).

A real daemon follows a real repository; its waitress server listens on 127.0.0.1 (port 0: a
free one) and the tests talk to it with http.client, or raw sockets for what a well-behaved
client never sends. Every status code, the body cap, a slow-loris client, replay after a
restart, 1,000 fuzzed requests and a burst of 200 are checked here; a run started by webhook
through `fastflow serve` runs with the local executor and once in Docker.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import Origin, make_daemon, make_intake, start_serve, utc_now, wait_for

from fastflow.config.repo import read_repo_config
from fastflow.daemon.payloads import AcceptedRequests, delivery_digest
from fastflow.daemon.runs import RunJournal, RunOrder
from fastflow.daemon.segmentlog import SegmentLog
from fastflow.daemon.webhooks.intake import Target
from fastflow.daemon.webhooks.limits import RateLimit, retry_after
from fastflow.daemon.webhooks.server import SWITCH_INTERVAL
from fastflow.errors import RepositoryError
from fastflow.model import RunStatus
from fastflow.record import Trigger
from fastflow.results.store import ResultsStore
from fastflow.secrets.age import X25519Identity
from fastflow.secrets.store import grant_secret, init_secrets, set_secret

pytestmark = pytest.mark.timeout(60)

KEY, PROD_KEY, OFF_KEY = "k-hook-3f9a", "k-prod-77c1", "k-off-0b2e"
PIPELINES = {
    "pipelines/hook/main.py": "import os\nprint('trigger', os.environ['FASTFLOW_TRIGGER'], 'source',"
                              " os.environ.get('SOURCE'), 'stage', os.environ.get('STAGE'))\n",
    "pipelines/hook/pipeline.json": json.dumps({
        "webhook_key": KEY, "webhook_env": ["SOURCE"],
        "schedules": [{"id": "prod", "webhook_key": PROD_KEY, "default_env": {"STAGE": "prod"}},
                      {"id": "paused", "webhook_key": "k-paused-9d", "enabled": False}]}),
    "pipelines/off/main.py": "print('off')\n",
    "pipelines/off/pipeline.json": json.dumps({"webhook_key": OFF_KEY, "enabled": False}),
    "pipelines/nokey/main.py": "print('nokey')\n",
}


def config(**webhooks) -> dict[str, str]:
    settings = {"rate_limit_per_client": 6000, "burst_per_client": 1000,
                "rate_limit_per_pipeline": 6000, **webhooks}
    lines = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in settings.items())
    return {".fastflow/config.yaml": f"max_concurrent_runs: 4\nwebhooks:\n{lines}"}


class Served:
    """A daemon serving in a thread of this process, with its webhook intake on loopback."""

    def __init__(self, origin: Origin, state: Path, *, loop: bool = True,
                 environ: dict | None = None) -> None:
        self.daemon = make_daemon(origin.bare, state, webhooks_listen="127.0.0.1:0",
                                  environ=environ)
        self.daemon.start()
        self.thread = None
        if loop:
            self.thread = threading.Thread(target=self.daemon.serve, name="serve")
            self.thread.start()
            wait_for(lambda: self.daemon.webhooks is not None, 10, "the webhook server")
        else:
            self.daemon._start_webhooks()  # listen, but no loop reads the inbox
        self.host, self.port = self.daemon.webhooks.address

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read(), dict(resp.getheaders())
        finally:
            conn.close()

    def post(self, path: str, body: bytes = b"{}", **headers):
        status, data, _ = self.request("POST", path, body, {k.replace("_", "-"): v
                                                            for k, v in headers.items()})
        return status, json.loads(data)

    def record(self, run_id: str, pipeline: str = "hook"):
        try:
            return self.daemon.store.read_run(run_id, pipeline=pipeline)
        except RepositoryError:
            return None

    def finished(self, run_id: str, pipeline: str = "hook"):
        return wait_for(lambda: self.record(run_id, pipeline), 30, f"the record of {run_id}")

    def close(self) -> None:
        if self.thread is not None:
            self.daemon.request_stop()
            self.thread.join(30)
        self.daemon.stop(grace=20)


@pytest.fixture
def served(origin, tmp_path):
    origin.push({**PIPELINES, **config()}, "pipelines")
    made = []

    def make(loop: bool = True) -> Served:
        made.append(Served(origin, tmp_path / "state", loop=loop))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_accepted_repeated_not_found_and_the_run_it_starts(served, caplog):
    s = served()
    sent = b'{"env": {"SOURCE": "github", "STAGE": "not allowed", "PATH": "/evil"}}'
    status, body = s.post(f"/api/webhooks/hook/{KEY}", sent, Idempotency_Key="delivery-1")
    assert status == 202 and body == {"run_id": body["run_id"],
                                      "status_url": f"/api/runs/{body['run_id']}"}
    assert s.post(f"/api/webhooks/hook/{KEY}", Idempotency_Key="delivery-1") == (200, body)
    record = s.finished(body["run_id"])
    assert record.status is RunStatus.SUCCEEDED and record.trigger.kind == "webhook"
    assert record.trigger.delivery_id == "delivery-1" and record.run_config is None
    # only what webhook_env allows: SOURCE; STAGE and PATH are not set from the body
    assert "trigger webhook source github stage None" in s.daemon.store.read_log(body["run_id"])
    status, data, _ = s.request("GET", body["status_url"])
    shown = json.loads(data)
    assert status == 200 and shown["status"] == "succeeded" and shown["trigger"]["kind"] == "webhook"
    assert shown["pipeline"] == "hook" and shown["exit_code"] == 0 and "env" not in shown
    # after the run: still the same run, nothing new
    assert s.post(f"/api/webhooks/hook/{KEY}", Idempotency_Key="delivery-1") == (200, body)
    # nothing to probe: one body for an unknown pipeline, a wrong key, a disabled pipeline or
    # run configuration, a pipeline without a key, an unknown path
    for path in ("/api/webhooks/nope/" + KEY, "/api/webhooks/hook/wrong", "/api/webhooks/hook/"
                 + KEY[:-1], f"/api/webhooks/off/{OFF_KEY}", "/api/webhooks/hook/k-paused-9d",
                 "/api/webhooks/nokey/x", "/api/webhooks/hook", "/", "/hooks/nokey",
                 "/hooks/hook", "/api/runs/20261201T000000Z-hook-wh0123456789abcdef"):
        method = "GET" if path.startswith("/api/runs") else "POST"
        status, data, _ = s.request(method, path, b"{}")
        assert (status, data) == (404, b'{"error": "not found"}\n'), path
    assert "Traceback" not in caplog.text


def test_a_run_configurations_key_starts_that_run_configuration(served):
    s = served()
    status, body = s.post(f"/api/webhooks/hook/{PROD_KEY}")
    assert status == 202
    record = s.finished(body["run_id"])
    assert record.run_config == "prod" and record.status is RunStatus.SUCCEEDED


def test_malformed_delivery_ids_methods_and_healthz(served):
    s = served()
    assert sys.getswitchinterval() <= SWITCH_INTERVAL  # short GIL waits for the HTTP threads
    for value in ("x" * 201, "with space", "tab\tin"):
        status, body = s.post(f"/api/webhooks/hook/{KEY}", Idempotency_Key=value)
        assert status == 400 and "Idempotency-Key must be 1 to 200 visible ASCII" in body["error"]
    status, _, headers = s.request("GET", f"/api/webhooks/hook/{KEY}")
    assert status == 405 and headers["Allow"] == "POST"
    status, data, _ = s.request("GET", "/healthz")
    health = json.loads(data)
    assert status == 200 and health["status"] == "ok" and 0 <= health["last_tick_age_s"] < 60
    assert s.request("POST", "/healthz")[0] == 405


def test_a_body_at_the_cap_is_accepted_and_one_byte_over_is_413(origin, tmp_path):
    origin.push({**PIPELINES, **config(max_body="4k")}, "pipelines")
    s = Served(origin, tmp_path / "state")
    try:
        status, body = s.post(f"/api/webhooks/hook/{KEY}", b"a" * 4096)
        assert status == 202
        payload = s.daemon.state_dir / "webhooks" / "payload" / body["run_id"]
        assert not payload.exists() or payload.read_bytes() == b"a" * 4096
        status, _, _ = s.request("POST", f"/api/webhooks/hook/{KEY}", b"a" * 4097)
        assert status == 413
        s.finished(body["run_id"])
    finally:
        s.close()


def test_rate_limits_answer_429_with_retry_after_and_failures_count(origin, tmp_path):
    origin.push({**PIPELINES, **config(rate_limit_per_client=1, burst_per_client=3)}, "p")
    s = Served(origin, tmp_path / "state", loop=False)
    try:
        assert s.post("/api/webhooks/hook/wrong")[0] == 404  # a wrong key costs a token too
        assert s.post(f"/api/webhooks/hook/{KEY}")[0] == 202
        assert s.post("/api/webhooks/nope/x")[0] == 404
        status, data, headers = s.request("POST", f"/api/webhooks/hook/{KEY}", b"{}")
        assert status == 429 and json.loads(data) == {"error": "rate limited"}
        assert 1 <= int(headers["Retry-After"]) <= 60
        # health is never rate limited; with no loop ticking it says so
        status, data, _ = s.request("GET", "/healthz")
        assert (status, json.loads(data)) == (503, {"status": "stale", "last_tick_age_s": None})
    finally:
        s.close()


def test_the_queue_cap_answers_429_and_nothing_accepted_is_lost(origin, tmp_path):
    origin.push({**PIPELINES, **config(max_queued_per_pipeline=3)}, "pipelines")
    s = Served(origin, tmp_path / "state", loop=False)  # nobody reads the inbox yet
    accepted = [s.post(f"/api/webhooks/hook/{KEY}", Idempotency_Key=f"q-{i}")[1]["run_id"]
                for i in range(3)]
    status, data, headers = s.request("POST", f"/api/webhooks/hook/{KEY}", b"{}")
    assert status == 429 and json.loads(data) == {"error": "queue full"} and "Retry-After" in headers
    assert s.post(f"/api/webhooks/hook/{PROD_KEY}")[0] == 429  # per pipeline, every key
    assert s.post(f"/api/webhooks/hook/{KEY}", Idempotency_Key="q-0")[0] == 200  # a repeat: fine
    status, data, _ = s.request("GET", f"/api/runs/{accepted[0]}")
    waiting = json.loads(data)
    assert status == 200 and waiting == {
        "pipeline": "hook", "run_id": accepted[0], "status": "queued",
        "trigger": {"kind": "webhook", "schedule_id": None, "parent_run_id": None,
                    "delivery_id": "q-0"},
        "started_at": None, "finished_at": None, "duration_s": None, "attempts": 0,
        "exit_code": None, "error": None, "downstream": []}
    s.close()
    again = Served(origin, tmp_path / "state")  # the loop takes them up
    try:
        for run_id in accepted:
            assert again.finished(run_id).status is RunStatus.SUCCEEDED
        done = json.loads(again.request("GET", f"/api/runs/{accepted[0]}")[1])
        assert done.keys() == waiting.keys() and done["status"] == "succeeded"
        assert done["trigger"] == waiting["trigger"] and done["attempts"] == 1
        assert again.post(f"/api/webhooks/hook/{KEY}")[0] == 202  # room again
    finally:
        again.close()


def test_a_standby_daemon_answers_503_so_the_lease_holder_gets_the_requests(origin, tmp_path):
    origin.push({**PIPELINES, **config()}, "pipelines")
    holder = Served(origin, tmp_path / "holder")
    standby = Served(origin, tmp_path / "standby")
    try:
        assert standby.daemon.lease.held is False
        status, data, headers = standby.request("POST", f"/api/webhooks/hook/{KEY}", b"{}")
        assert (status, json.loads(data), headers["Retry-After"]) == (503, {"error": "standby"}, "30")
        wait_for(lambda: standby.daemon.last_tick_at is not None, 10, "the standby's first tick")
        status, data, _ = standby.request("GET", "/healthz")
        assert status == 503 and json.loads(data)["status"] == "standby"
        assert not list((tmp_path / "standby" / "inbox").glob("run-*.json"))
        status, body = holder.post(f"/api/webhooks/hook/{KEY}")
        assert status == 202 and holder.finished(body["run_id"]).status is RunStatus.SUCCEEDED
    finally:
        standby.close()
        holder.close()


def test_a_delivery_replayed_after_a_restart_starts_nothing(origin, tmp_path):
    origin.push({**PIPELINES, **config()}, "pipelines")
    s = Served(origin, tmp_path / "state")
    status, body = s.post(f"/api/webhooks/hook/{KEY}", X_GitHub_Delivery="72d3162e-cc78")
    assert status == 202
    s.finished(body["run_id"])
    s.close()
    again = Served(origin, tmp_path / "state")
    try:
        assert again.post(f"/api/webhooks/hook/{KEY}", X_GitHub_Delivery="72d3162e-cc78") == \
            (200, body)
        # the same pipeline through another key: the same delivery
        assert again.post(f"/api/webhooks/hook/{PROD_KEY}", X_GitHub_Delivery="72d3162e-cc78") == \
            (200, body)
        time.sleep(1.0)
        runs = again.daemon.store.list_run_ids("hook", 100)
        assert runs == [body["run_id"]]
    finally:
        again.close()


def test_an_accepted_request_the_daemon_never_took_is_handed_again_at_the_next_start(
        origin, tmp_path):
    """An accept is one record flushed in the log, and the daemon gets it in memory: no file
    per request. A stop before the daemon journalled it (kill -9, power cut) loses only the
    handoff: the next start hands it again from the log, the run gets the body and runs once;
    once recorded, a repeat of its delivery still gets its run id."""
    origin.push({**PIPELINES, **config()}, "pipelines")
    state = tmp_path / "state"
    s = Served(origin, state, loop=False)
    status, body = s.post(f"/api/webhooks/hook/{KEY}", b'{"env": {"SOURCE": "kept"}}',
                          Idempotency_Key="crash-window")
    assert status == 202 and s.daemon.requests.pending(body["run_id"]) is not None
    s.close()  # nobody took the handoff
    assert not list((state / "inbox").glob("run-*")) and not (state / "webhooks" / "deliveries").exists()
    assert not list((state / "webhooks" / "payload").glob("*"))  # the run start writes it
    segments = list((state / "webhooks" / "log").glob("*.log"))
    assert segments and all(p.stat().st_mode & 0o777 == 0o600 for p in segments)  # bodies
    again = Served(origin, state)
    try:
        record = again.finished(body["run_id"])
        assert record.status is RunStatus.SUCCEEDED
        assert "source kept" in again.daemon.store.read_log(body["run_id"], "hook")
        wait_for(lambda: again.daemon.requests.pending(body["run_id"]) is None, 10, "settled")
        assert again.post(f"/api/webhooks/hook/{KEY}", Idempotency_Key="crash-window") == \
            (200, body)
        assert again.daemon.store.list_run_ids("hook", 100) == [body["run_id"]]
    finally:
        again.close()


def test_a_settle_lost_with_the_power_is_made_again_at_the_next_start(origin, tmp_path):
    """A settle record is not flushed on its own. Lost in a power cut (here: the log cut
    where it began), the next start finds the run recorded on the results branch: it settles
    it again, runs nothing twice, and keeps the delivery's claim."""
    origin.push({**PIPELINES, **config()}, "pipelines")
    state = tmp_path / "state"
    s = Served(origin, state)
    try:
        status, body = s.post(f"/api/webhooks/hook/{KEY}", b"once", Idempotency_Key="late")
        assert status == 202 and s.finished(body["run_id"]).status is RunStatus.SUCCEEDED
        wait_for(lambda: s.daemon.requests.pending(body["run_id"]) is None, 10, "settled")
    finally:
        s.close()
    records = SegmentLog(state / "webhooks" / "log").open()
    [settle] = [r for r in records if r.meta.get("settle") == body["run_id"]]
    path = state / "webhooks" / "log" / f"{settle.location.seq:012d}.log"
    with open(path, "r+b") as handle:  # everything from the settle on never reached the disk
        handle.seek(settle.location.offset)
        handle.write(bytes(path.stat().st_size - settle.location.offset))
    again = Served(origin, state)
    try:
        assert again.daemon.requests.pending(body["run_id"]) is None
        assert again.daemon.store.list_run_ids("hook", 100) == [body["run_id"]]
        assert again.post(f"/api/webhooks/hook/{KEY}", b"once", Idempotency_Key="late") == \
            (200, body)
        assert not list((state / "webhooks" / "payload").glob("*"))
    finally:
        again.close()


def test_a_request_without_delivery_id_leaves_nothing_once_recorded(origin, tmp_path):
    """Without a delivery id nothing needs remembering: once the run is recorded it is settled
    (no claim kept) and its payload file is gone."""
    origin.push({**PIPELINES, **config()}, "pipelines")
    state = tmp_path / "state"
    s = Served(origin, state)
    try:
        status, body = s.post(f"/api/webhooks/hook/{KEY}", b"plain")
        assert status == 202 and s.finished(body["run_id"]).status is RunStatus.SUCCEEDED
        wait_for(lambda: s.daemon.requests.pending(body["run_id"]) is None, 10, "settled")
        assert not s.daemon.requests._claims
        assert not list((state / "webhooks" / "payload").glob("*"))
    finally:
        s.close()


def test_a_full_state_dir_takes_what_fits_in_the_log_then_answers_503_and_loses_nothing(
        origin, tmp_path):
    """A real full filesystem (a 64 MiB tmpfs as the state dir; needs root for mount). The
    log's segment was made, full of zeros, before the disk filled: the requests that fit in it
    are durable, so they are accepted (their runs wait for room: the daemon pauses). The first
    that needs a new segment cannot be made durable: 503, and nothing of it stays. Once there
    is room every accepted run runs, and the retry is accepted."""
    origin.push({**PIPELINES, **config()}, "pipelines")
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(state)], check=True)
    s, filler = None, state / "filler"
    try:
        s = Served(origin, state)
        wait_for(lambda: s.daemon.requests.log.ready, 10, "the log's first segment")
        fd, size = os.open(filler, os.O_WRONLY | os.O_CREAT), 1 << 20
        while size >= 512:  # smaller and smaller writes, to the last free block
            try:
                os.write(fd, b"\0" * size)
            except OSError:
                size //= 2
        os.close(fd)
        accepted, answer = [], None
        for n in range(40):  # 1,000,000-byte bodies: about 16 fit in the 16 MiB segment
            status, data, headers = s.request("POST", f"/api/webhooks/hook/{KEY}",
                                              b"x" * 1_000_000, {"Idempotency-Key": f"full-{n}"})
            if status != 202:
                answer = (n, status, json.loads(data), headers["Retry-After"])
                break
            accepted.append(json.loads(data)["run_id"])
        assert answer is not None and answer[1:] == (503, {"error": "unavailable"}, "60")
        assert 10 <= len(accepted) == answer[0] <= 16
        assert all(s.daemon.requests.pending(run_id) for run_id in accepted)
        assert s.daemon.requests.claim(delivery_digest("hook", f"full-{answer[0]}")) is None
        assert not list((state / "webhooks" / "payload").glob("*"))
        filler.unlink()
        status, body = s.post(f"/api/webhooks/hook/{KEY}", b"x" * 1_000_000,
                              Idempotency_Key=f"full-{answer[0]}")  # in a new segment
        assert status == 202
        for run_id in accepted + [body["run_id"]]:
            assert s.finished(run_id).status is RunStatus.SUCCEEDED
        # The first segment is no longer written and every run of it is recorded: it goes,
        # its claims kept.
        log = s.daemon.requests.log
        wait_for(lambda: 1 not in log.segments(), 10, "the settled first segment dropped")
        claims = json.loads((state / "webhooks" / "claims" / f"{1:012d}.json").read_text())
        assert claims["claims"][delivery_digest("hook", "full-0")][0] == accepted[0]
        assert s.post(f"/api/webhooks/hook/{KEY}", Idempotency_Key="full-0") == \
            (200, {"run_id": accepted[0], "status_url": f"/api/runs/{accepted[0]}"})
    finally:
        filler.unlink(missing_ok=True)
        if s is not None:
            s.close()
        subprocess.run(["umount", "-l", str(state)], check=False)


def test_a_slow_loris_client_holds_no_worker_and_is_cut_off(origin, tmp_path):
    origin.push({**PIPELINES, **config(threads=1, read_timeout=4)}, "pipelines")
    s = Served(origin, tmp_path / "state")
    slow = []
    try:
        for _ in range(5):  # five clients sending their headers a byte at a time
            sock = socket.create_connection((s.host, s.port), timeout=10)
            sock.sendall(b"POST /api/webhooks/hook/" + KEY.encode() + b" HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        silent = socket.create_connection((s.host, s.port), timeout=10)
        started = time.monotonic()
        status, body = s.post(f"/api/webhooks/hook/{KEY}")
        assert status == 202 and time.monotonic() - started < 2.5  # not after read_timeout
        assert silent.recv(1) == b""  # closed by the server after read_timeout
        assert 3.5 < time.monotonic() - started < 12
        s.finished(body["run_id"])
    finally:
        for sock in slow:
            sock.close()
        s.close()


MALFORMED = [
    b"\x00\x01\x02garbage\r\n\r\n",
    b"POST /api/webhooks/hook/x HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    b"POST /api/webhooks/hook/x HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"POST /api/webhooks/hook/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    b"POST /hooks/hook?run_config=a&run_config=b HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"POST /api/webhooks/%ff%fe/%00 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"POST /api/webhooks/hook/" + KEY.encode() + b" HTTP/1.1\r\nIdempotency-Key: \xff\xfe\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"BREW /healthz HTCPCP/1.0\r\n\r\n",
    # pipelined on one connection: a valid request, then garbage, then another
    b"POST /api/webhooks/hook/" + KEY.encode() + b" HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
    b"\x16\x03\x01\x02\x00\x01\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
    # a valid chunked body
    b"POST /api/webhooks/hook/" + KEY.encode() + b" HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n2\r\n{}\r\n0\r\n\r\n",
    b"POST /api/webhooks/hook/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nX: " + b"y" * 70000 + b"\r\n\r\n",
]


def raw_status(host: str, port: int, data: bytes) -> int | None:
    """Send `data` on a fresh connection; the status of the answer (None: closed, no answer)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return int(match.group(1)) if match else None


def fuzz_request(rng: random.Random, key: str) -> bytes:
    """One random request: a mutated valid one, random bytes, or odd but parseable HTTP."""
    kind = rng.random()
    if kind < 0.2:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
    method = rng.choice([b"POST", b"GET", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"P\x00ST"])
    path = rng.choice([b"/api/webhooks/hook/" + key.encode(), b"/api/webhooks/hook/", b"/hooks/hook",
                       b"/hooks/", b"/api/runs/" + bytes(rng.choice(b"0123456789Tabc-/%.")
                                                        for _ in range(30)),
                       b"/healthz", b"/../../etc/passwd", b"/api/webhooks/%2e%2e/x",
                       b"/hooks/hook?run_config=" + bytes(rng.getrandbits(8) for _ in range(8))])
    body = rng.choice([b"", b"{}", b'{"env": {"SOURCE": 1, "PATH": "/x"}}', b'{"env": [',
                       b"[" * 5000, bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 2000)))])
    headers = [b"Host: 127.0.0.1"]
    choices = [b"Idempotency-Key: " + bytes(rng.choice(b"abc\x7f\x80 ") for _ in range(8)),
               b"X-GitHub-Delivery: " + str(rng.random()).encode(),
               b"X-Hub-Signature-256: sha256=" + b"0" * 64,
               b"webhook-id: msg_1", b"webhook-timestamp: " + str(rng.randint(-10, 10**12)).encode(),
               b"webhook-signature: v1," + bytes(rng.choice(b"abc=+/ ,") for _ in range(20)),
               b"Content-Type: application/json", b"Transfer-Encoding: chunked",
               b"Expect: 100-continue", b"Connection: keep-alive"]
    headers += rng.sample(choices, rng.randint(0, 4))
    if rng.random() < 0.8:
        length = len(body) + rng.choice([0, 0, 0, -1, 1, 10**9])
        headers.append(b"Content-Length: " + str(length).encode())
    request = method + b" " + path + b" HTTP/1." + rng.choice([b"1", b"0", b"9"]) + b"\r\n"
    request += b"\r\n".join(headers) + b"\r\n\r\n" + body
    if rng.random() < 0.2:  # cut somewhere
        request = request[:rng.randint(1, len(request))]
    return request


def serve_log_port(log: Path) -> int:
    found = wait_for(lambda: re.search(r"webhooks: listening on http://127\.0\.0\.1:(\d+)",
                                       log.read_text()), 30, "the listening line")
    return int(found.group(1))


def test_1000_fuzzed_requests_no_5xx_no_traceback_and_schedules_keep_running(origin, tmp_path):
    origin.push({**PIPELINES, **config(threads=4, read_timeout=2, max_body="64k"),
                 "pipelines/tick/main.py": "print('tick')\n",
                 "pipelines/tick/pipeline.json": json.dumps({"schedule_interval_seconds": 2})},
                "pipelines")
    state, log = tmp_path / "state", tmp_path / "serve.log"
    serve = start_serve(origin.bare, state, log, "--local", "--webhooks", "127.0.0.1:0")
    try:
        port = serve_log_port(log)
        store = ResultsStore(state / "mirror.git" if (state / "mirror.git").exists()
                             else origin.bare, tmp_path / "reader", utc_now)
        before = len(store.list_run_ids("tick", 1000))
        rng = random.Random(20261201)
        statuses: dict[int | None, int] = {}
        for i in range(1000):
            data = MALFORMED[i % len(MALFORMED)] if i % 10 == 0 else fuzz_request(rng, KEY)
            status = raw_status("127.0.0.1", port, data)
            statuses[status] = statuses.get(status, 0) + 1
            assert status is None or status < 500, (status, data[:300])
        assert statuses.get(202, 0) > 0 and statuses.get(404, 0) > 0, statuses
        wait_for(lambda: len(store.list_run_ids("tick", 1000)) >= before + 2, 30,
                 "the schedule's runs after the fuzzing")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(40)
    text = log.read_text()
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]
    assert serve.returncode == 0


def test_a_burst_of_200_in_5_seconds_is_202_or_429_and_each_202_recorded_once(origin, tmp_path):
    origin.push({**PIPELINES, **config(rate_limit_per_client=600, burst_per_client=40,
                                       threads=8)}, "pipelines")
    s = Served(origin, tmp_path / "state")
    try:
        answers: list[tuple[int, dict]] = []
        lock = threading.Lock()

        def send(i: int) -> None:
            time.sleep(i * 5.0 / 200)  # spread over 5 s
            result = s.post(f"/api/webhooks/hook/{KEY}", Idempotency_Key=f"burst-{i}")
            with lock:
                answers.append(result)

        started = time.monotonic()
        threads = [threading.Thread(target=send, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert time.monotonic() - started < 15 and len(answers) == 200
        assert {status for status, _ in answers} <= {202, 429}
        accepted = [body["run_id"] for status, body in answers if status == 202]
        assert len(accepted) == len(set(accepted)) >= 40
        wait_for(lambda: not set(accepted) - set(s.daemon.store.list_run_ids("hook", 1000)),
                 45, "every accepted run recorded")
        recorded = s.daemon.store.list_run_ids("hook", 1000)
        assert sorted(recorded) == sorted(accepted)  # each once, and nothing else
    finally:
        s.close()


@pytest.mark.timeout(240)
def test_a_kill_9_during_a_burst_loses_no_202_and_runs_each_once(origin, tmp_path):
    """A real `fastflow serve` killed with SIGKILL while 8 clients send: every request answered
    202 before the kill runs exactly once after the restart (from the log: the handoff to the
    loop was in memory), and sending every request again starts nothing for those."""
    origin.push({**PIPELINES, **config(threads=8)}, "pipelines")
    state, log = tmp_path / "state", tmp_path / "serve.log"
    serve = start_serve(origin.bare, state, log, "--local", "--webhooks", "127.0.0.1:0")
    port = serve_log_port(log)
    answered: dict[str, str] = {}  # Idempotency-Key -> run id of a 202
    lock, killed = threading.Lock(), threading.Event()

    def client(n: int) -> None:
        for i in range(40):
            key = f"kill-{n}-{i}"
            try:
                status, data, _ = Client(port).request(key)
            except OSError:
                if killed.is_set():
                    return
                continue
            if status == 202:
                with lock:
                    answered[key] = json.loads(data)["run_id"]
                    if len(answered) >= 60 and not killed.is_set():
                        killed.set()
                        serve.send_signal(signal.SIGKILL)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    serve.wait(10)
    assert killed.is_set() and len(answered) >= 60
    log = tmp_path / "serve-again.log"
    serve = start_serve(origin.bare, state, log, "--local", "--webhooks", "127.0.0.1:0")
    try:
        store = ResultsStore(origin.bare, tmp_path / "reader", utc_now)
        wait_for(lambda: not set(answered.values()) - set(store.list_run_ids("hook", 2000)),
                 150, "every run answered 202 before the kill recorded")
        port = serve_log_port(log)
        for key, run_id in sorted(answered.items()):  # the senders' retries
            status, data, _ = Client(port).request(key)
            assert (status, json.loads(data)["run_id"]) == (200, run_id)
        recorded = store.list_run_ids("hook", 2000)
        assert sorted(recorded) == sorted(set(recorded)) and set(answered.values()) <= set(recorded)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(40)


class Client:
    """One request to the intake on a fresh connection: (status, body, headers)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, key: str):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", f"/api/webhooks/hook/{KEY}", body=b"{}",
                         headers={"Idempotency-Key": key})
            resp = conn.getresponse()
            return resp.status, resp.read(), dict(resp.getheaders())
        finally:
            conn.close()


def test_fastflow_serve_webhooks_sigterm_stops_listening_and_exits(origin, tmp_path):
    origin.push({**PIPELINES, **config()}, "pipelines")
    state, log = tmp_path / "state", tmp_path / "serve.log"
    serve = start_serve(origin.bare, state, log, "--local", "--webhooks", "127.0.0.1:0")
    port = serve_log_port(log)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", f"/api/webhooks/hook/{KEY}", body=b"{}")
    resp = conn.getresponse()
    assert resp.status == 202
    run_id = json.loads(resp.read())["run_id"]
    store = ResultsStore(origin.bare, tmp_path / "reader", utc_now)
    wait_for(lambda: run_id in store.list_run_ids("hook", 10), 30, f"{run_id} recorded")
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(40) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    text = log.read_text()
    assert "webhooks: stopped listening" in text and "Traceback" not in text


def test_a_stop_closes_the_listener_first_and_answers_the_request_in_flight(served):
    s = served()
    intake = s.daemon.webhooks.app.intake
    answers = []
    with intake._lock:  # the request is read and in the intake, held there
        sender = threading.Thread(target=lambda: answers.append(s.post(f"/api/webhooks/hook/{KEY}")))
        sender.start()
        wait_for(lambda: s.daemon.webhooks.in_flight() == 1, 5, "the request in a worker")
        stopper = threading.Thread(target=s.daemon.webhooks.stop)
        stopper.start()

        def refused() -> bool:
            try:
                socket.create_connection((s.host, s.port), timeout=1).close()
            except OSError:
                return True
            return False

        wait_for(refused, 5, "the listener closed")
        assert answers == [] and stopper.is_alive()
    sender.join(10)
    stopper.join(20)
    assert answers[0][0] == 202
    assert s.finished(answers[0][1]["run_id"]).status is RunStatus.SUCCEEDED


def test_a_listen_address_in_use_is_an_error_naming_it(origin, tmp_path):
    origin.push({**PIPELINES, **config()}, "pipelines")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = make_daemon(origin.bare, tmp_path / "state", webhooks_listen=f"127.0.0.1:{port}")
        daemon.start()
        try:
            with pytest.raises(Exception) as caught:
                daemon.serve()
            assert str(caught.value) == (
                f"--webhooks: cannot listen on '127.0.0.1:{port}': Address already in use; pick "
                "a free port and an address of this machine (e.g. 127.0.0.1:8787)")
        finally:
            daemon.stop(grace=5)
        origin.push(config(listen=f"127.0.0.1:{port}"), "listen from config.yaml")
        daemon = make_daemon(origin.bare, tmp_path / "state")
        daemon.start()
        try:
            with pytest.raises(Exception) as caught:
                daemon.serve()
            assert str(caught.value).startswith(
                f".fastflow/config.yaml: webhooks.listen: cannot listen on '127.0.0.1:{port}': ")
        finally:
            daemon.stop(grace=5)


def test_config_yaml_webhooks_listen_starts_the_intake_and_no_address_starts_none(origin,
                                                                                  tmp_path):
    origin.push({**PIPELINES, **config(listen="127.0.0.1:0",
                                       public_url="https://ci.example.org")}, "pipelines")
    daemon = make_daemon(origin.bare, tmp_path / "state")
    daemon.start()
    thread = threading.Thread(target=daemon.serve)
    thread.start()
    try:
        wait_for(lambda: daemon.webhooks is not None, 10, "the webhook server")
        host, port = daemon.webhooks.address
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("POST", f"/api/webhooks/hook/{KEY}", b"{}")
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 202
        assert body["status_url"] == f"https://ci.example.org/api/runs/{body['run_id']}"
    finally:
        daemon.request_stop()
        thread.join(30)
        daemon.stop(grace=20)
    origin.push(config(), "no listen")  # neither config.yaml nor --webhooks: nothing listens
    daemon = make_daemon(origin.bare, tmp_path / "state")
    daemon.start()
    thread = threading.Thread(target=daemon.serve)
    thread.start()
    try:
        wait_for(lambda: daemon.last_tick_at is not None, 10, "a tick")
        assert daemon.webhooks is None
    finally:
        daemon.request_stop()
        thread.join(30)
        daemon.stop(grace=20)


@pytest.mark.slow
@pytest.mark.docker
def test_a_webhook_starts_a_docker_run_through_fastflow_serve(origin, tmp_path, runner_image):
    origin.push({**PIPELINES, **config()}, "pipelines")
    state, log = tmp_path / "state", tmp_path / "serve.log"
    serve = start_serve(origin.bare, state, log, "--webhooks", "127.0.0.1:0")
    try:
        port = serve_log_port(log)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", f"/api/webhooks/hook/{PROD_KEY}", body=b'{"env": {"SOURCE": "ci"}}',
                     headers={"X-GitHub-Delivery": "d0cker-1", "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 202
        run_id = json.loads(resp.read())["run_id"]
        store = ResultsStore(origin.bare, tmp_path / "reader", utc_now)
        wait_for(lambda: run_id in store.list_run_ids("hook", 10), 55, f"{run_id} recorded")
        record = store.read_run(run_id, "hook")
        assert record.status is RunStatus.SUCCEEDED, store.read_log(run_id, "hook")
        assert record.trigger.kind == "webhook" and record.trigger.delivery_id == "d0cker-1"
        assert record.run_config == "prod" and record.environment.image_id
        assert "trigger webhook" in store.read_log(run_id, "hook")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(40)
    assert "Traceback" not in log.read_text()



def test_the_webhooks_section_defaults_and_its_messages():
    config, problems = read_repo_config("")
    assert config.webhooks.listen is None and config.webhooks.max_body_bytes == 1024**2
    assert (config.webhooks.client_rate_per_minute, config.webhooks.client_burst,
            config.webhooks.pipeline_rate_per_minute, config.webhooks.max_queued_per_pipeline,
            config.webhooks.read_timeout, config.webhooks.threads) == (60, 20, 120, 100, 10.0, 4)
    text = ("webhooks:\n  listen: localhost\n  public_url: ftp://x\n  max_body: 65m\n"
            "  threads: 0\n  lisen: x\n")
    config, problems = read_repo_config(text)
    assert config is None
    assert [str(p) for p in problems] == [
        '.fastflow/config.yaml: webhooks.lisen: unknown key, ignored; did you mean "listen"?',
        '.fastflow/config.yaml: webhooks.listen: "localhost" is not HOST:PORT; write e.g. '
        '"127.0.0.1:8787" (or null: off)',
        '.fastflow/config.yaml: webhooks.public_url: "ftp://x" is not an http(s) URL; write e.g. '
        '"https://ci.example.org"',
        '.fastflow/config.yaml: webhooks.max_body: "65m" is above the maximum of "64m"; use a '
        'smaller size',
        ".fastflow/config.yaml: webhooks.threads: 0 is not a whole number >= 1",
    ]


# --- the signed form --------------------------------------------------------------------------

GH_SECRET, GH_OLD_SECRET = "It's a Secret to Everybody", "the-old-one-4c1d"
STD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-key-32-bytes!!").decode()
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def github_headers(body: bytes, secret: str, delivery: str | None = None) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": "push",
               "Content-Type": "application/json"}
    return {**headers, "X-GitHub-Delivery": delivery} if delivery else headers


def standard_headers(body: bytes, secret: str, msg_id: str, at: float) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{int(at)}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at)),
            "webhook-signature": f"v1,{base64.b64encode(b'x' * 32).decode()} v1,{signature}"}


@pytest.fixture
def signed(origin, tmp_path):
    identity = X25519Identity.generate()
    path = origin.work / ".fastflow" / "secrets.enc.yaml"
    init_secrets(path, [identity.recipient], NOW, origin.work)
    for name, value in (("GH_HOOK", GH_SECRET), ("GH_HOOK_OLD", GH_OLD_SECRET),
                        ("STD_HOOK", STD_SECRET)):
        set_secret(path, name, value, [identity], NOW)
    grant_secret(path, "GH_HOOK", ["gh"], [identity], NOW)
    grant_secret(path, "GH_HOOK_OLD", ["gh"], [identity], NOW)
    grant_secret(path, "STD_HOOK", ["std"], [identity], NOW)
    origin.push({**PIPELINES, **config(),
                 "pipelines/gh/main.py": "print('gh')\n",
                 "pipelines/gh/pipeline.json": json.dumps({
                     "webhook_secret": ["GH_HOOK", "GH_HOOK_OLD"],
                     "schedules": [{"id": "prod"}, {"id": "paused", "enabled": False}]}),
                 "pipelines/std/main.py": "print('std')\n",
                 "pipelines/std/pipeline.json": json.dumps({"webhook_secret": "STD_HOOK"})},
                "signed pipelines")
    environ = {**os.environ, "SOPS_AGE_KEY": identity.to_string(), "SOPS_AGE_KEY_FILE": "",
               "SOPS_AGE_KEY_CMD": ""}
    made = []

    def make(environ=environ) -> Served:
        made.append(Served(origin, tmp_path / "state", environ=environ))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_github_signatures_with_either_secret_are_accepted_and_bad_ones_are_401(signed):
    s = signed()
    body = b'{"ref": "refs/heads/main"}'
    status, first = s.post("/hooks/gh", body, **github_headers(body, GH_SECRET, "gh-delivery-1"))
    assert status == 202
    assert s.post("/hooks/gh", body, **github_headers(body, GH_SECRET, "gh-delivery-1")) == \
        (200, first)
    status, old = s.post("/hooks/gh", body, **github_headers(body, GH_OLD_SECRET, "gh-2"))
    assert status == 202  # rotation: the old secret still works
    for headers, sent in ((github_headers(body, "wrong secret", "gh-3"), body),
                          (github_headers(body, GH_SECRET, "gh-4"), body + b" "),  # tampered
                          ({"X-GitHub-Delivery": "gh-5"}, body),  # unsigned
                          ({"X-Hub-Signature-256": "sha256=zz"}, body)):
        status, data, _ = s.request("POST", "/hooks/gh", sent, headers)
        assert (status, data) == (401, b'{"error": "bad signature"}\n'), headers
    for run_id in (first["run_id"], old["run_id"]):
        record = s.finished(run_id, "gh")
        assert record.status is RunStatus.SUCCEEDED and record.trigger.kind == "webhook"
    assert s.finished(first["run_id"], "gh").trigger.delivery_id == "gh-delivery-1"
    assert sorted(s.daemon.store.list_run_ids("gh", 10)) == sorted([first["run_id"], old["run_id"]])


def test_standard_webhooks_signatures_timestamps_and_run_configurations(signed):
    s = signed()
    body, now = b'{"type": "invoice.paid"}', time.time()
    status, first = s.post("/hooks/std", body, **standard_headers(body, STD_SECRET, "msg_1", now))
    assert status == 202
    assert s.post("/hooks/std", body, **standard_headers(body, STD_SECRET, "msg_1", now)) == \
        (200, first)
    stale = standard_headers(body, STD_SECRET, "msg_2", now - 301)
    assert s.post("/hooks/std", body, **stale) == (401, {"error": "bad signature"})
    assert s.finished(first["run_id"], "std").trigger.delivery_id == "msg_1"
    gh_body = b"{}"
    status, prod = s.post("/hooks/gh?run_config=prod", gh_body, **github_headers(gh_body, GH_SECRET))
    assert status == 202 and s.finished(prod["run_id"], "gh").run_config == "prod"
    for path in ("/hooks/gh?run_config=paused", "/hooks/gh?run_config=nope", "/hooks/nokey",
                 "/hooks/hook"):  # disabled, unknown, no secret, a key but no secret
        status, data, _ = s.request("POST", path, gh_body, github_headers(gh_body, GH_SECRET))
        assert (status, data) == (404, b'{"error": "not found"}\n'), path
    status, data, _ = s.request("POST", "/hooks/gh?other=1", gh_body, github_headers(gh_body, GH_SECRET))
    assert status == 400


def test_secrets_that_cannot_be_read_answer_503_and_say_why_in_the_log(signed, caplog):
    s = signed(environ={**os.environ, "SOPS_AGE_KEY": "", "SOPS_AGE_KEY_FILE": "/nonexistent",
                        "SOPS_AGE_KEY_CMD": ""})
    body = b"{}"
    status, data, headers = s.request("POST", "/hooks/gh", body, github_headers(body, GH_SECRET))
    assert (status, json.loads(data), headers["Retry-After"]) == (503, {"error": "unavailable"}, "60")
    assert s.request("POST", "/hooks/gh", body, github_headers(body, GH_SECRET))[0] == 503
    logged = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert logged == [  # once, not once per request
        "webhook: the secrets of pipeline gh cannot be read: SOPS_AGE_KEY_FILE: the identity "
        "file /nonexistent does not exist; fix the variable or create the file with `fastflow "
        "secrets keygen`; signed requests to it are answered 503"]


def test_a_token_bucket_refills_at_its_rate_with_the_clock_given():
    limit = RateLimit(per_minute=60, burst=2)  # one a second, two at once
    assert [limit.take("a", 100.0) for _ in range(2)] == [0.0, 0.0]
    assert limit.take("a", 100.0) == pytest.approx(1.0)  # refused: one refills in 1 s
    assert limit.take("a", 100.5) == pytest.approx(0.5)  # refused again, takes nothing
    assert limit.take("a", 101.0) == 0.0
    assert limit.take("b", 101.0) == 0.0  # every key has its own bucket
    assert limit.take("a", 1000.0) == 0.0 and limit.take("a", 1000.0) == 0.0  # full, not more
    assert limit.take("a", 1000.0) > 0
    assert retry_after(0.01) == "1" and retry_after(2.2) == "3"


def test_x_forwarded_for_names_the_client_only_from_the_trusted_proxy(origin, tmp_path):
    origin.push({**PIPELINES, **config(rate_limit_per_client=1, burst_per_client=2,
                                       trusted_proxy="127.0.0.1")}, "pipelines")
    s = Served(origin, tmp_path / "state", loop=False)
    try:
        for client in ("10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2"):
            assert s.post("/api/webhooks/hook/wrong", X_Forwarded_For=client)[0] == 404
        assert s.post("/api/webhooks/hook/wrong", X_Forwarded_For="10.0.0.1")[0] == 429
        assert s.post("/api/webhooks/hook/wrong", X_Forwarded_For="10.0.0.3")[0] == 404
    finally:
        s.close()
    origin.push(config(rate_limit_per_client=1, burst_per_client=2), "no proxy")
    s = Served(origin, tmp_path / "state2", loop=False)
    try:  # without trusted_proxy the header is the client's word: ignored
        assert [s.post("/api/webhooks/hook/wrong", X_Forwarded_For=f"10.0.0.{i}")[0]
                for i in range(3)] == [404, 404, 429]
    finally:
        s.close()


def test_the_queue_cap_counts_each_pipelines_requests_not_started(tmp_path):
    """The cap counts a pipeline's accepted requests whose runs have not started: another
    pipeline's do not fill it, a started run frees its place, a settled one too."""
    intake = make_intake(tmp_path, 2)
    hook, other = (Target(SimpleNamespace(name=n), None) for n in ("my-hook", "other"))
    assert [intake.accept(other, f"o-{n}", b"{}", {}, {}) is not None for n in range(2)] == \
        [True, True]
    first = intake.accept(hook, "h-0", b"{}", {}, {})
    assert intake.accept(hook, "h-1", b"{}", {}, {}) is not None
    assert intake.accept(hook, "h-2", b"{}", {}, {}) is None  # my-hook's two wait: full
    assert intake.queued("my-hook") == 2 and intake.queued("other") == 2
    [message] = [m for m in intake.inbox.handed() if m.request_id.endswith(first.run_id[-16:])]
    intake.requests.materialize(first.run_id, message.webhook)  # its run starts
    assert intake.queued("my-hook") == 1
    assert intake.accept(hook, "h-2", b"{}", {}, {}) is not None
    assert intake.accept(hook, "h-3", b"{}", {}, {}) is None
    intake.requests.settle(first.run_id)  # started already: nothing changes
    assert intake.queued("my-hook") == 2


def test_api_runs_of_a_journalled_webhook_run_says_running_from_the_journal(tmp_path):
    from fastflow.daemon.webhooks.view import DaemonLooks

    now = utc_now()
    run_id = "20261201T000000Z-hook-wh0123456789abcdef"
    RunJournal(tmp_path).write(RunOrder(
        run_id=run_id, pipeline="hook", commit="c" * 40, root_tree="d" * 40, tree="e" * 40,
        queued_at=now, trigger=Trigger("webhook", delivery_id="d-1"), started_at=now))
    view = DaemonLooks(state_dir=tmp_path, deployment=lambda: None, repository=None,
                       snapshots=tmp_path / "snapshots", store=None, environ={},
                       last_tick_at=lambda: None, standby=lambda: False,
                       requests=AcceptedRequests(tmp_path))
    assert view.run_status(run_id) == {
        "pipeline": "hook", "run_id": run_id, "status": "running",
        "trigger": {"kind": "webhook", "schedule_id": None, "parent_run_id": None,
                    "delivery_id": "d-1"},
        "started_at": now.isoformat(), "finished_at": None, "duration_s": None, "attempts": 0,
        "exit_code": None, "error": None, "downstream": []}
