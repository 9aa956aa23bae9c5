"""`fastflow image build|check`, `fastflow ps`, `fastflow cancel`: thin commands over the Docker
executor's library functions (fastflow.executors.docker).
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click

from fastflow.cli.common import FastflowGroup, echo_json, repo_option
from fastflow.config.repo import load_repo_config
from fastflow.defaults import DEFAULT_GRACE_PERIOD, DEFAULT_PYTHON
from fastflow.errors import FastflowError
from fastflow.executors.docker import (
    build_image,
    cancel_run,
    check_image,
    find_uv_binary,
    list_running,
    uv_version,
)


@click.group(cls=FastflowGroup)
def image() -> None:
    """Build and check the generic runner image every Docker run starts from."""


@image.command("build")
@click.option("--base", metavar="IMAGE", help="Finish a Python base image (e.g. python:3.11-slim; "
              "needs a registry).")
@click.option("--bootstrap", is_flag=True, help="Make the base with debootstrap from Debian "
              "packages (no registry; needs root).")
@click.option("--tag", help="Image name:tag (default: `image` of .fastflow/config.yaml).")
@click.option("--python", "python_version", help="Python version of the image "
              "(default: `default_python` of the config).")
@click.option("--mirror", metavar="URL", help="Debian mirror for --bootstrap (default: the main "
              "Debian archive of the host's apt sources, /etc/apt/sources.list[.d]).")
@click.option("--fresh-base", is_flag=True, help="Re-run debootstrap even if the Debian base "
              "image exists.")
@repo_option
def build(base: str | None, bootstrap: bool, tag: str | None, python_version: str | None,
          mirror: str | None, fresh_base: bool, repo: Path) -> None:
    """Build the runner image (Python, the host's uv, a non-root user)."""
    if bool(base) == bool(bootstrap):
        raise click.UsageError("give exactly one of --base IMAGE and --bootstrap")
    config, _ = load_repo_config(repo)
    image_id = build_image(
        tag or config.image, base=base, bootstrap=bootstrap, mirror=mirror, fresh_base=fresh_base,
        python_version=python_version or config.default_python or DEFAULT_PYTHON,
        log=click.echo,
    )
    click.echo(image_id)


@image.command("check")
@click.option("--tag", help="Image name:tag (default: `image` of .fastflow/config.yaml).")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@repo_option
def check(tag: str | None, as_json: bool, repo: Path) -> None:
    """Say whether the runner image exists and carries the host's uv (exit 1 when not)."""
    config, _ = load_repo_config(repo)
    status = check_image(tag or config.image, uv_version(find_uv_binary()))
    if as_json:
        echo_json({"tag": status.tag, "exists": status.exists, "image_id": status.image_id,
                   "python": status.python, "uv_version": status.uv_version,
                   "host_uv_version": status.host_uv_version, "matches": status.matches})
    elif status.matches:
        click.echo(f"{status.tag}: ok (python {status.python}, uv {status.uv_version}, "
                   f"{status.image_id[:19]})")
    if not status.matches:
        raise FastflowError(status.problem)


@click.command("ps")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def ps(as_json: bool) -> None:
    """List the runs whose containers are running now."""
    runs = list_running()
    if as_json:
        echo_json([{"run_id": r.run_id, "pipeline": r.pipeline, "attempt": r.attempt,
                    "started": r.started.isoformat() if r.started else None} for r in runs])
        return
    if not runs:
        click.echo("no runs are running")
        return
    now = datetime.now(timezone.utc)
    click.echo(f"{'RUN ID':<44} {'PIPELINE':<24} {'ATTEMPT':>7} {'RUNNING':>9}")
    for r in runs:
        age = f"{(now - r.started).total_seconds():.0f}s" if r.started else "-"
        click.echo(f"{r.run_id:<44} {r.pipeline:<24} {r.attempt:>7} {age:>9}")


@click.command("cancel")
@click.argument("run_id")
@click.option("--grace", type=float, default=DEFAULT_GRACE_PERIOD, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
def cancel(run_id: str, grace: float) -> None:
    """Cancel a running run: stop its container (SIGTERM, grace, SIGKILL); it ends `cancelled`."""
    cancel_run(run_id, grace_period=grace)
    click.echo(f"cancelled {run_id}")
