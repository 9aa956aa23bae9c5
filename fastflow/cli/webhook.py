"""`fastflow webhook send|url`: sign and send a webhook, list a pipeline's webhook URLs
(docs/webhooks.md "The CLI")."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from fastflow.cli.common import FastflowGroup, echo_json, host_environment, repo_option
from fastflow.daemon.webhooks.client import (
    WebhookSendError,
    base_url,
    prepare_request,
    send_request,
    webhook_urls,
)
from fastflow.daemon.webhooks.signatures import GITHUB, STANDARD
from fastflow.deploy.workspace import open_workspace


@click.group(cls=FastflowGroup)
def webhook() -> None:
    """Send signed webhooks to `fastflow serve --webhooks` and list a pipeline's URLs."""


@webhook.command()
@click.argument("pipeline")
@click.option("--url", required=True,
              help="The intake's address (http://127.0.0.1:8787: the signed URL /hooks/PIPELINE "
                   "is used) or a full URL, e.g. the key URL `webhook url --show-keys` prints.")
@click.option("--secret-env", "secret_env", metavar="VAR",
              help="Sign with the secret held by environment variable VAR (never pass a secret "
                   "on the command line).")
@click.option("--data", "data", default="{}", show_default=True, metavar="@FILE|TEXT",
              help="The body: TEXT as it is, @FILE the file's bytes, @- standard input.")
@click.option("--github", "scheme", flag_value=GITHUB,
              help="Sign as GitHub does (X-Hub-Signature-256); the default unless the secret "
                   "starts with whsec_.")
@click.option("--standard", "scheme", flag_value=STANDARD,
              help="Sign as Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature); "
                   "the default for a whsec_ secret.")
@click.option("--idempotency-key", "idempotency_key", metavar="KEY",
              help="Sent as Idempotency-Key (and as webhook-id with --standard): a repeat with "
                   "the same key starts nothing new.")
@click.option("--run-config", "run_config", metavar="ID",
              help="Start this run configuration (adds ?run_config=ID to the signed URL).")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds to wait for the answer.")
def send(pipeline: str, url: str, secret_env: str | None, data: str, scheme: str | None,
         idempotency_key: str | None, run_config: str | None, timeout: float) -> None:
    """Send a webhook for PIPELINE to URL; print the answer's status code and body.

    Exit 1 when the answer is not 2xx or nothing answers."""
    secret = _secret(secret_env) if secret_env is not None else None
    request = prepare_request(pipeline, url, _body(data), secret=secret, scheme=scheme,
                              idempotency_key=idempotency_key, run_config=run_config,
                              now=time.time())
    answer = send_request(request, timeout=timeout)
    click.echo(answer.status)
    if answer.body:
        click.echo(answer.body, nl=not answer.body.endswith("\n"))
    if not answer.ok:
        sys.exit(1)


@webhook.command()
@click.argument("pipeline")
@repo_option
@click.option("--url", "base", metavar="URL",
              help="The intake's address; default: webhooks.public_url, else webhooks.listen "
                   "of .fastflow/config.yaml.")
@click.option("--show-keys", is_flag=True, help="Print the webhook keys instead of ***.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def url(pipeline: str, repo: Path, base: str | None, show_keys: bool, as_json: bool) -> None:
    """Print every URL PIPELINE answers to (keys shown as *** unless --show-keys)."""
    workspace = open_workspace(repo)
    found = workspace.pipeline(pipeline)
    settings = workspace.config.webhooks
    address = base or base_url(settings.public_url, settings.listen)
    if address is None:
        raise WebhookSendError(
            ".fastflow/config.yaml: webhooks.listen is not set, so `fastflow serve` answers no "
            "webhooks; set it (e.g. listen: 127.0.0.1:8787) or pass --url")
    urls = webhook_urls(found, address, show_keys=show_keys)
    if as_json:
        echo_json([{"url": u.url, "starts": u.starts, "form": u.form} for u in urls])
        return
    if not urls:
        click.echo(f"Pipeline {pipeline} answers to no webhook: give it a webhook_key or a "
                   "webhook_secret in its pipeline.json")
        return
    for item in urls:
        note = "signed" if item.form == "signed" else "key in the URL"
        click.echo(f"{item.url}  ({item.starts}, {note})")


def _secret(variable: str) -> str:
    value = host_environment().get(variable)
    if not value:
        raise WebhookSendError(f"--secret-env: the environment variable {variable} is not set "
                               "or empty; export the webhook secret in it first")
    return value


def _body(data: str) -> bytes:
    if not data.startswith("@"):
        return data.encode("utf-8")
    if data == "@-":
        return sys.stdin.buffer.read()
    path = Path(data[1:])
    try:
        return path.read_bytes()
    except OSError as exc:
        raise WebhookSendError(f"--data: {path}: cannot be read ({exc.strerror or exc}); "
                               "name a readable file after @") from None
