"""`fastflow notify test`: send a test message to the notification targets and say what happened."""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from fastflow.cli.common import FastflowGroup, echo_json, host_environment, repo_option
from fastflow.daemon.alert_check import send_test_message


@click.group("notify", cls=FastflowGroup)
def notify() -> None:
    """Notifications: where messages about failures, recoveries and the like go."""


@notify.command("test")
@repo_option
@click.option("--target", "target", metavar="NAME", default=None,
              help="Only the target of this name [default: every target].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
def test(repo: Path, target: str | None, as_json: bool) -> None:
    """Send a test message to each notification target of the repository (config.yaml's and the
    pipelines' own) and say whether it arrived; exits 1 when one did not."""
    outcomes = send_test_message(repo, host_environment(), datetime.now(timezone.utc), target)
    if as_json:
        echo_json([o.to_json() for o in outcomes])
    else:
        for o in outcomes:
            what = f"delivered in {o.took_s:.1f} s" if o.delivered else f"failed: {o.error}"
            click.echo(f"{o.target} ({o.to}, {o.declared_in}): {what}")
    if not all(o.delivered for o in outcomes):
        sys.exit(1)
