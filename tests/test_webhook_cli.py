"""`fastflow webhook send` and `fastflow webhook url`: exact output and exit codes.

`send` talks to a recording HTTP server on loopback (a test double of the intake: it keeps the
raw request and answers what the test says); the signatures it received are checked here by
hand with hmac/hashlib/base64, not with the module that made them. The last tests send to the
real intake of a daemon serving on loopback (SOPS secrets, real records): what `send` signs
and what `url` prints is what the server accepts.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import threading
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import make_daemon, wait_for

from fastflow.cli import main
from fastflow.errors import RepositoryError
from fastflow.secrets.age import X25519Identity
from fastflow.secrets.store import grant_secret, init_secrets, set_secret

GH_SECRET = "It's a Secret to Everybody"
SW_KEY = b"\x8a\x10standard-key-bytes\x00\xff"
SW_SECRET = "whsec_" + base64.b64encode(SW_KEY).decode()


class Recorder:
    """A loopback HTTP server that records each request and answers `status` with `body`."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 202
        self.body = b'{"run_id": "r-1", "status_url": "/api/runs/r-1"}'
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                recorder.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                          "body": self.rfile.read(length)})
                self.send_response(recorder.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(recorder.body)))
                self.end_headers()
                self.wfile.write(recorder.body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def recorder():
    server = Recorder()
    yield server
    server.close()


def invoke(*args: str, env: dict | None = None, input: bytes | None = None):
    return CliRunner().invoke(main, list(args), env=env, input=input)


def test_send_signs_as_github_with_the_secret_from_the_environment(recorder):
    result = invoke("webhook", "send", "etl", "--url", recorder.url, "--secret-env", "HOOK",
                    "--data", '{"env": {"DATE": "2026-12-01"}}', env={"HOOK": GH_SECRET})
    assert result.exit_code == 0, result.output
    assert result.stdout == '202\n{"run_id": "r-1", "status_url": "/api/runs/r-1"}\n'
    (request,) = recorder.requests
    assert request["path"] == "/hooks/etl"
    assert request["body"] == b'{"env": {"DATE": "2026-12-01"}}'
    expected = "sha256=" + hmac.new(GH_SECRET.encode(), request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["x-hub-signature-256"] == expected
    assert request["headers"]["content-type"] == "application/json"
    assert GH_SECRET not in json.dumps(request["headers"])


def test_the_published_github_example_goes_out_as_published(recorder, tmp_path):
    body = tmp_path / "body.txt"
    body.write_bytes(b"Hello, World!")
    result = invoke("webhook", "send", "etl", "--url", recorder.url + "/", "--secret-env", "S",
                    "--data", f"@{body}", "--github", env={"S": GH_SECRET})
    assert result.exit_code == 0, result.output
    (request,) = recorder.requests
    assert request["headers"]["x-hub-signature-256"] == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
    assert request["headers"]["content-type"] == "application/octet-stream"


def test_send_signs_as_standard_webhooks_for_a_whsec_secret(recorder):
    result = invoke("webhook", "send", "etl", "--url", recorder.url, "--secret-env", "HOOK",
                    "--idempotency-key", "order-42", "--run-config", "prod",
                    env={"HOOK": SW_SECRET})
    assert result.exit_code == 0, result.output
    (request,) = recorder.requests
    headers = request["headers"]
    assert request["path"] == "/hooks/etl?run_config=prod"
    assert request["body"] == b"{}"
    assert headers["webhook-id"] == "order-42" and headers["idempotency-key"] == "order-42"
    content = f"order-42.{headers['webhook-timestamp']}.".encode() + request["body"]
    expected = base64.b64encode(hmac.new(SW_KEY, content, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    assert "x-hub-signature-256" not in headers


def test_standard_without_a_key_gets_a_random_webhook_id_each_time(recorder):
    for _ in range(2):
        assert invoke("webhook", "send", "etl", "--url", recorder.url, "--secret-env", "H",
                      "--standard", env={"H": "raw-secret"}).exit_code == 0
    first, second = (r["headers"]["webhook-id"] for r in recorder.requests)
    assert first.startswith("msg_") and first != second
    ts = recorder.requests[0]["headers"]["webhook-timestamp"]
    content = f"{first}.{ts}.{{}}".encode()
    expected = base64.b64encode(hmac.new(b"raw-secret", content, hashlib.sha256).digest()).decode()
    assert recorder.requests[0]["headers"]["webhook-signature"] == f"v1,{expected}"


def test_send_to_a_key_url_without_a_secret_sends_it_as_it_is(recorder):
    result = invoke("webhook", "send", "etl", "--url", recorder.url + "/api/webhooks/etl/k-1",
                    "--data", "@-", input=b'{"env": {}}')
    assert result.exit_code == 0, result.output
    (request,) = recorder.requests
    assert request["path"] == "/api/webhooks/etl/k-1" and request["body"] == b'{"env": {}}'
    assert not any(k.lower().startswith(("webhook-", "x-hub")) for k in request["headers"])


def test_a_non_2xx_answer_is_printed_and_exits_1(recorder):
    recorder.status, recorder.body = 401, b'{"error": "bad signature"}'
    result = invoke("webhook", "send", "etl", "--url", recorder.url, "--secret-env", "H",
                    env={"H": "wrong"})
    assert result.exit_code == 1
    assert result.stdout == '401\n{"error": "bad signature"}\n'


def test_a_repeat_answered_200_exits_0(recorder):
    recorder.status = 200
    result = invoke("webhook", "send", "etl", "--url", recorder.url, "--secret-env", "H",
                    "--idempotency-key", "k", env={"H": "s"})
    assert result.exit_code == 0 and result.stdout.startswith("200\n")


def test_the_secret_must_be_in_the_named_variable():
    result = invoke("webhook", "send", "etl", "--url", "http://127.0.0.1:9", "--secret-env",
                    "NOPE_HOOK", env={"NOPE_HOOK": ""})
    assert result.exit_code == 1
    assert result.stderr == ("Error: --secret-env: the environment variable NOPE_HOOK is not set "
                             "or empty; export the webhook secret in it first\n")


def test_there_is_no_option_taking_the_secret_itself():
    result = invoke("webhook", "send", "etl", "--url", "http://127.0.0.1:9", "--secret", "x")
    assert result.exit_code == 2 and "No such option '--secret'" in result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_answering_is_an_error_not_a_traceback():
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke("webhook", "send", "etl", "--url", url, "--secret-env", "H", env={"H": "s"})
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {url}/hooks/etl: no answer (")
    assert result.stderr.endswith("); is `fastflow serve --webhooks HOST:PORT` running there?\n")


@pytest.mark.parametrize("args, message", [
    (["--url", "ftp://x"], "--url: 'ftp://x' is not an http(s) URL; write e.g. "
                           "http://127.0.0.1:8787 (`fastflow webhook url` prints the URLs)"),
    (["--url", "http://127.0.0.1:9"],
     "--url: 'http://127.0.0.1:9' has no path and no --secret-env is given; pass the full URL "
     "with the key (`fastflow webhook url etl --show-keys` prints it) or sign the request with "
     "--secret-env VAR"),
    (["--url", "http://127.0.0.1:9/api/webhooks/etl/k", "--standard"],
     "--standard: signing needs a secret; name the environment variable holding it with "
     "--secret-env VAR"),
    (["--url", "http://127.0.0.1:9/api/webhooks/etl/k", "--run-config", "prod"],
     "--run-config: only with a --url without a path (the signed URL gets ?run_config=ID); a "
     "key URL already names what it starts"),
    (["--url", "http://127.0.0.1:9", "--secret-env", "H", "--data", "@/nonexistent/body.json"],
     "--data: /nonexistent/body.json: cannot be read (No such file or directory); name a "
     "readable file after @"),
    (["--url", "http://127.0.0.1:9", "--secret-env", "BADW"],
     "--secret-env: a whsec_ secret must be whsec_ followed by base64 (as the sender shows it); "
     "copy it again from the sender"),
])
def test_send_errors_name_the_option_and_the_fix(args, message):
    result = invoke("webhook", "send", "etl", *args, env={"H": "s", "BADW": "whsec_*"})
    assert result.exit_code == 1, result.output
    assert result.stderr == f"Error: {message}\n"


# -- url ---------------------------------------------------------------------------------------

@pytest.fixture()
def repo(make_repo) -> Path:
    return make_repo({
        ".fastflow/config.yaml": "webhooks:\n  listen: 127.0.0.1:8787\n",
        "pipelines/etl/main.py": "print(1)\n",
        "pipelines/etl/pipeline.json": json.dumps({
            "webhook_key": "k-main", "webhook_secret": "HOOK",
            "schedules": [{"id": "prod", "webhook_key": "k-prod"}, {"id": "nightly"}],
        }),
        "pipelines/plain/main.py": "print(1)\n",
    })


def test_url_lists_every_url_with_keys_masked(repo):
    result = invoke("webhook", "url", "etl", "--repo", str(repo))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "http://127.0.0.1:8787/api/webhooks/etl/***  (pipeline, key in the URL)\n"
        'http://127.0.0.1:8787/api/webhooks/etl/***  (run configuration "prod", key in the URL)\n'
        "http://127.0.0.1:8787/hooks/etl  (pipeline, signed)\n"
        'http://127.0.0.1:8787/hooks/etl?run_config=prod  (run configuration "prod", signed)\n'
        'http://127.0.0.1:8787/hooks/etl?run_config=nightly  (run configuration "nightly", '
        "signed)\n")
    assert "k-main" not in result.output and "k-prod" not in result.output


def test_url_show_keys_and_public_url(repo):
    (repo / ".fastflow/config.yaml").write_text(
        "webhooks:\n  listen: 127.0.0.1:8787\n  public_url: https://ci.example.org/\n")
    result = invoke("webhook", "url", "etl", "--repo", str(repo), "--show-keys", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[:2] == [
        {"url": "https://ci.example.org/api/webhooks/etl/k-main", "starts": "pipeline",
         "form": "key"},
        {"url": "https://ci.example.org/api/webhooks/etl/k-prod",
         "starts": 'run configuration "prod"', "form": "key"},
    ]
    result = invoke("webhook", "url", "etl", "--repo", str(repo), "--url", "http://h:1")
    assert result.stdout.splitlines()[0] == \
        "http://h:1/api/webhooks/etl/***  (pipeline, key in the URL)"


def test_url_of_a_pipeline_without_webhooks_says_how_to_give_it_one(repo):
    result = invoke("webhook", "url", "plain", "--repo", str(repo))
    assert result.exit_code == 0
    assert result.stdout == ("Pipeline plain answers to no webhook: give it a webhook_key or a "
                             "webhook_secret in its pipeline.json\n")


def test_url_without_a_listen_address_says_what_to_set(repo):
    (repo / ".fastflow/config.yaml").write_text("branch: main\n")
    result = invoke("webhook", "url", "etl", "--repo", str(repo))
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: .fastflow/config.yaml: webhooks.listen is not set, so `fastflow serve` answers "
        "no webhooks; set it (e.g. listen: 127.0.0.1:8787) or pass --url\n")
    missing = invoke("webhook", "url", "nope", "--repo", str(repo))
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: ")


# -- against the real intake (a daemon serving on loopback) ------------------------------------

E2E_KEY = "k-e2e-5b1d"


@pytest.fixture()
def intake(origin, tmp_path):
    """A daemon (host executor) following `origin`, its intake on a free loopback port;
    pipeline `gh` is signed with the SOPS secret GH_HOOK, `std` with a whsec_ one, `keyed`
    has a webhook_key. Yields (base URL, daemon, the work tree)."""
    now = datetime(2026, 12, 1, 23, 0, tzinfo=timezone.utc)
    identity = X25519Identity.generate()
    path = origin.work / ".fastflow" / "secrets.enc.yaml"
    init_secrets(path, [identity.recipient], now, origin.work)
    set_secret(path, "GH_HOOK", GH_SECRET, [identity], now)
    set_secret(path, "STD_HOOK", SW_SECRET, [identity], now)
    grant_secret(path, "GH_HOOK", ["gh"], [identity], now)
    grant_secret(path, "STD_HOOK", ["std"], [identity], now)
    origin.push({
        ".fastflow/config.yaml": "webhooks:\n  listen: 127.0.0.1:0\n",
        "pipelines/gh/main.py": "print('gh')\n",
        "pipelines/gh/pipeline.json": json.dumps({"webhook_secret": "GH_HOOK",
                                                  "schedules": [{"id": "prod"}]}),
        "pipelines/std/main.py": "print('std')\n",
        "pipelines/std/pipeline.json": json.dumps({"webhook_secret": "STD_HOOK"}),
        "pipelines/keyed/main.py": "print('keyed')\n",
        "pipelines/keyed/pipeline.json": json.dumps({"webhook_key": E2E_KEY}),
    }, "webhook pipelines")
    environ = {**os.environ, "SOPS_AGE_KEY": identity.to_string(), "SOPS_AGE_KEY_FILE": "",
               "SOPS_AGE_KEY_CMD": ""}
    daemon = make_daemon(origin.bare, tmp_path / "state", webhooks_listen="127.0.0.1:0",
                         environ=environ)
    daemon.start()
    thread = threading.Thread(target=daemon.serve, name="serve")
    thread.start()
    try:
        wait_for(lambda: daemon.webhooks is not None, 10, "the webhook server")
        host, port = daemon.webhooks.address
        yield f"http://{host}:{port}", daemon, origin.work
    finally:
        daemon.request_stop()
        thread.join(30)
        daemon.stop(grace=20)


def recorded(daemon, run_id: str, pipeline: str):
    def read():
        try:
            return daemon.store.read_run(run_id, pipeline=pipeline)
        except RepositoryError:
            return None

    return wait_for(read, 30, f"the record of {run_id}")


def test_send_github_signed_to_the_real_intake_starts_one_run_and_a_repeat_none(intake):
    base, daemon, _ = intake
    args = ("webhook", "send", "gh", "--url", base, "--secret-env", "GH", "--idempotency-key",
            "cli-delivery-1", "--run-config", "prod")
    first = invoke(*args, env={"GH": GH_SECRET})
    assert first.exit_code == 0, first.output
    status, body = first.stdout.split("\n", 1)
    answer = json.loads(body)
    assert status == "202" and answer["status_url"] == f"/api/runs/{answer['run_id']}"
    repeat = invoke(*args, env={"GH": GH_SECRET})
    assert repeat.exit_code == 0 and repeat.stdout == "200\n" + body
    # Queued, running or recorded: /api/runs names the delivery, as fastflow history --json does.
    with urllib.request.urlopen(base + answer["status_url"], timeout=10) as response:
        assert json.loads(response.read())["trigger"]["delivery_id"] == "cli-delivery-1"
    record = recorded(daemon, answer["run_id"], "gh")
    assert (record.trigger.kind, record.trigger.delivery_id, record.run_config) == \
        ("webhook", "cli-delivery-1", "prod")
    wrong = invoke("webhook", "send", "gh", "--url", base, "--secret-env", "GH",
                   env={"GH": "not the secret"})
    assert wrong.exit_code == 1 and wrong.stdout == '401\n{"error": "bad signature"}\n'


def test_send_standard_signed_to_the_real_intake(intake):
    base, daemon, _ = intake
    result = invoke("webhook", "send", "std", "--url", base, "--secret-env", "STD",
                    "--data", '{"hello": 1}', env={"STD": SW_SECRET})
    assert result.exit_code == 0, result.output
    status, body = result.stdout.split("\n", 1)
    assert status == "202"
    record = recorded(daemon, json.loads(body)["run_id"], "std")
    assert record.trigger.kind == "webhook" and record.trigger.delivery_id.startswith("msg_")


def test_the_key_url_that_url_prints_is_the_one_the_intake_answers(intake):
    base, daemon, work = intake
    printed = invoke("webhook", "url", "keyed", "--repo", str(work), "--url", base,
                     "--show-keys")
    assert printed.exit_code == 0, printed.output
    (line,) = printed.stdout.splitlines()
    url = line.split("  ")[0]
    assert url == f"{base}/api/webhooks/keyed/{E2E_KEY}"
    sent = invoke("webhook", "send", "keyed", "--url", url)
    assert sent.exit_code == 0 and sent.stdout.startswith("202\n")
    masked = invoke("webhook", "url", "keyed", "--repo", str(work), "--url", base)
    wrong = invoke("webhook", "send", "keyed", "--url", masked.stdout.split("  ")[0])
    assert wrong.exit_code == 1 and wrong.stdout == '404\n{"error": "not found"}\n'
