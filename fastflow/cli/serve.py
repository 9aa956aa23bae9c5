"""`fastflow serve` and `fastflow sync`: follow a repository; `git push` is the deploy."""
from __future__ import annotations

import json
import logging
import signal
from datetime import datetime, timezone
from pathlib import Path

import click

from fastflow import repo as git
from fastflow.cli.common import (
    configure_logging,
    echo_json,
    host_environment,
    verbosity_options,
)
from fastflow.config.repo import listen_address
from fastflow.daemon.loop import Daemon, ServeOptions
from fastflow.daemon.statedir import default_state_dir
from fastflow.errors import Invalid
from fastflow.executors import choose_executor

logger = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def source_options(func):
    """`--repo PATH_OR_URL`, `--branch`, `--state-dir`, `--local`: shared by serve and sync."""
    func = click.option("--local", is_flag=True,
                        help="Run pipelines on the host with uv instead of in Docker containers.")(func)
    func = click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=None,
                        help="Where the daemon keeps its local state "
                             "[default: ~/.local/state/fastflow/<repository name>].")(func)
    func = click.option("--branch", default="main", show_default=True,
                        help="The branch to follow.")(func)
    func = click.option("--repo", "source", default=".", show_default=True,
                        help="The repository to follow: a local path (bare or not) or a URL.")(func)
    return func


def _daemon(source: str, branch: str, state_dir: Path | None, local: bool,
            poll_interval: float, max_concurrent: int | None,
            lease_timeout: float | None = None, webhooks: str | None = None,
            executor: str | None = None) -> Daemon:
    environ = host_environment()
    options = ServeOptions(
        source=source, state_dir=state_dir or default_state_dir(source, environ), branch=branch,
        poll_interval=poll_interval, max_concurrent_runs=max_concurrent,
        lease_timeout=lease_timeout, webhooks_listen=webhooks,
    )
    # The executor is built from the configuration at the branch head once the daemon has
    # read it; until then we need one for reconciliation, so build it lazily.
    return Daemon(options, clock=utc_now, environ=environ,
                  executor_factory=lambda config: choose_executor(
                      config, local=local, environ=environ, clock=utc_now, kind=executor),
                  credentials=git.credentials_from_env(environ))


def _listen_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check `--webhooks` as config.yaml's `webhooks.listen` is checked."""
    if value is None:
        return None
    try:
        return listen_address(value)
    except Invalid as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("serve")
@source_options
@click.option("--poll-interval", type=float, default=60.0, show_default=True,
              help="Seconds between polls of the branch (a post-receive hook wakes it at once).")
@click.option("--max-concurrent-runs", type=int, default=None,
              help="Override max_concurrent_runs of .fastflow/config.yaml.")
@click.option("--lease-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds a standby daemon waits for a dead lease holder before it takes over "
                   "[default: lease_timeout of .fastflow/config.yaml, else 180].")
@click.option("--webhooks", metavar="HOST:PORT", default=None, callback=_listen_option,
              help="Listen for webhooks there (e.g. 127.0.0.1:8787; port 0: any free one) "
                   "[default: webhooks.listen of .fastflow/config.yaml, else off].")
@click.option("--executor", type=click.Choice(["docker", "swarm"]), default=None,
              help="Where runs go: containers on this engine, or one-shot jobs on its Swarm "
                   "(docs/swarm.md) [default: executor of .fastflow/config.yaml, else docker].")
@verbosity_options
@click.pass_context
def serve(ctx: click.Context, source: str, branch: str, state_dir: Path | None, local: bool,
          poll_interval: float, max_concurrent_runs: int | None, lease_timeout: float | None,
          webhooks: str | None, executor: str | None, verbose: int, quiet: bool) -> None:
    """Follow a branch of a repository: sync on every push, pre-heat, run pipelines on time.

    It logs to stderr, one timestamped line for its start, each sync, each run queued, started
    and ended, and every warning and error; -v adds Fast-Flow's debug lines, -q keeps only
    warnings and errors.
    """
    given = ctx.obj or {}  # `fastflow -v serve` counts like `fastflow serve -v`
    configure_logging(verbose + given.get("verbose", 0), quiet or given.get("quiet", False),
                      default=logging.INFO, timestamps=True)
    daemon = _daemon(source, branch, state_dir, local, poll_interval, max_concurrent_runs,
                     lease_timeout, webhooks, executor)
    logger.info("following %s of %s (state dir %s, executor %s)", branch, source,
                daemon.state_dir, "local" if local else executor or "from config.yaml")
    logger.debug("poll interval %gs, max concurrent runs %s, lease timeout %s", poll_interval,
                 max_concurrent_runs or "from config.yaml", lease_timeout or "from config.yaml")
    for note in daemon.start():
        logger.info("reconciled %s", note)

    def handler(signum, frame):  # noqa: ARG001 - only sets flags
        daemon.request_stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    try:
        daemon.serve()
    finally:
        logger.info("stopping (running runs get the grace period)")
        daemon.stop()


@click.command("sync")
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print the change set as JSON.")
def sync(source: str, branch: str, state_dir: Path | None, local: bool, as_json: bool) -> None:
    """Sync once: deploy the branch head, pre-heat what changed, print the change set."""
    daemon = _daemon(source, branch, state_dir, local, 60.0, None)
    deployment = daemon.sync_once()
    if as_json:
        echo_json(deployment.to_json() if deployment else {"changes": None})
        return
    if deployment is None:
        click.echo("up to date: the branch did not move since the last sync")
        return
    click.echo(f"synced {deployment.commit}")
    click.echo(json.dumps(deployment.changes.to_json() if deployment.changes else {}, indent=2))
    for problem in deployment.errors:
        click.echo(f"error: {problem}", err=True)
    for name, state in sorted(daemon.preheater.states().items()):
        click.echo(f"dependencies of {name}: {state.status} ({state.message})")



