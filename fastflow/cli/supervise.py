"""`fastflow supervise reset NAME`: clear a supervised pipeline's crash count and given-up state."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click

from fastflow.cli.common import FastflowGroup, host_environment, repo_option
from fastflow.daemon.statedir import default_state_dir, queue_supervise_reset


@click.group("supervise", cls=FastflowGroup)
def supervise() -> None:
    """Supervision of long-running pipelines (restart_on_crash, restart_interval)."""


@supervise.command("reset")
@repo_option
@click.argument("name")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The daemon's state dir [default: as `fastflow serve --repo`].")
def reset(repo: Path, name: str, state_dir: Path | None) -> None:
    """Reset the supervision of pipeline NAME: its crash count and given-up state are cleared,
    and a given-up pipeline is started again (trigger `restart`, reason `reset`)."""
    state = state_dir or default_state_dir(str(repo), host_environment())
    queue_supervise_reset(state, name, datetime.now(timezone.utc))
    click.echo(f"asked the daemon of {state} to reset the supervision of {name} (a running "
               "daemon does it at once, otherwise at its next start); `fastflow status` shows it")
