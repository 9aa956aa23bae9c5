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
from fastflow.deploy.workspace import open_workspace
from fastflow.errors import FastflowError
from fastflow.executors.docker import (
    ImageStatus,
    build_image,
    check_image,
    check_runner_image,
    check_runner_images,
    find_uv_binary,
    runner_image,
    uv_version,
)
from fastflow.executors.swarm import cancel_anywhere, push_image_to_nodes, running_runs


@click.group(cls=FastflowGroup)
def image() -> None:
    """Build and check the runner images (one per Python) Docker runs start from."""


@image.command("build")
@click.option("--base", metavar="IMAGE", help="Finish a Python base image (e.g. python:3.11-slim; "
              "needs a registry).")
@click.option("--bootstrap", is_flag=True, help="Make the base with debootstrap from Debian "
              "packages (no registry; needs root).")
@click.option("--tag", help="Image name:tag (default: `image` of .fastflow/config.yaml, its "
              "{python} replaced by the version).")
@click.option("--python", "python_version", help="Python version of the image, e.g. 3.13; "
              "--bootstrap takes the Debian suite that ships it (default: `default_python` of "
              "the config).")
@click.option("--mirror", metavar="URL", help="Debian mirror for --bootstrap (default: the main "
              "Debian archive of the host's apt sources, /etc/apt/sources.list[.d]).")
@click.option("--fresh-base", is_flag=True, help="Re-run debootstrap even if the Debian base "
              "image exists.")
@repo_option
def build(base: str | None, bootstrap: bool, tag: str | None, python_version: str | None,
          mirror: str | None, fresh_base: bool, repo: Path) -> None:
    """Build the runner image of one Python (Python, the host's uv, a non-root user)."""
    if bool(base) == bool(bootstrap):
        raise click.UsageError("give exactly one of --base IMAGE and --bootstrap")
    config, _ = load_repo_config(repo)
    python = python_version or config.default_python or DEFAULT_PYTHON
    image_id = build_image(
        tag or runner_image(config.image, python), base=base, bootstrap=bootstrap, mirror=mirror,
        fresh_base=fresh_base, python_version=python, log=click.echo,
    )
    click.echo(image_id)


@image.command("check")
@click.option("--tag", help="Check this image name:tag only.")
@click.option("--python", "python_version", help="Check the runner image of this Python only "
              "(with --tag: that the image has it).")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@repo_option
def check(tag: str | None, python_version: str | None, as_json: bool, repo: Path) -> None:
    """Say whether the runner images of every Python the pipelines use exist and carry the
    host's uv (exit 1 when not)."""
    host_uv = uv_version(find_uv_binary())
    if tag:
        status = check_image(tag, host_uv, python=python_version)
        if as_json:
            echo_json(_status_json(status))
        elif status.matches:
            click.echo(_ok_line(status))
        if not status.matches:
            raise FastflowError(status.problem)
        return
    if python_version:
        config, _ = load_repo_config(repo)
        checks = [check_runner_image(config.image, python_version, host_uv)]
    else:
        workspace = open_workspace(repo)
        checks = check_runner_images(workspace.config, workspace.discovery.pipelines.values(),
                                     host_uv)
    if as_json:
        echo_json([{**_status_json(c.status), "for_python": c.python, "ok": c.problem is None,
                    "pipelines": list(c.pipelines), "problem": c.problem} for c in checks])
    else:
        for c in checks:
            if c.problem is None:
                click.echo(_ok_line(c.status) + _used_by(c.pipelines, python_version))
    problems = [c.problem + _used_by(c.pipelines, python_version) for c in checks if c.problem]
    if problems:
        raise FastflowError("\n".join(problems))


def _status_json(status: ImageStatus) -> dict:
    return {"tag": status.tag, "exists": status.exists, "image_id": status.image_id,
            "python": status.python, "uv_version": status.uv_version,
            "host_uv_version": status.host_uv_version, "matches": status.matches}


def _ok_line(status: ImageStatus) -> str:
    return (f"{status.tag}: ok (python {status.python}, uv {status.uv_version}, "
            f"{status.image_id[:19]})")


def _used_by(pipelines: tuple[str, ...], asked: str | None) -> str:
    """Which pipelines need an image (nothing when the image of one Python was asked for)."""
    if asked:
        return ""
    if not pipelines:
        return " (default_python)"
    shown = ", ".join(pipelines[:5]) + (f" and {len(pipelines) - 5} more" if len(pipelines) > 5 else "")
    return f" (pipelines: {shown})"


@image.command("push-to-nodes")
@click.option("--engine", "engines", metavar="URL", multiple=True, required=True,
              help="The Docker engine of a Swarm node (tcp://HOST:2376, ssh://USER@HOST, "
                   "unix:///PATH); repeat for every node.")
@click.option("--tag", "tags", multiple=True, help="Push this image only (repeatable; default: "
              "the runner image of every Python the pipelines use).")
@repo_option
def push_to_nodes(engines: tuple[str, ...], tags: tuple[str, ...], repo: Path) -> None:
    """Copy the runner images from this engine to the engines of Swarm nodes (docker save /
    load through their APIs, no registry); images already there are left alone."""
    if not tags:
        workspace = open_workspace(repo)
        tags = tuple(sorted({c.status.tag for c in check_runner_images(
            workspace.config, workspace.discovery.pipelines.values(), None)}))
    for pushed in push_image_to_nodes(list(tags), list(engines)):
        state = "loaded" if pushed.loaded else "already there"
        click.echo(f"{pushed.node} ({pushed.engine}): {pushed.image} {state} "
                   f"({pushed.image_id[:19]})")


@click.command("ps")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def ps(as_json: bool) -> None:
    """List the runs running now: containers of this engine, and on a Swarm manager the Swarm
    jobs of every node (NODE names it; `-`: this engine)."""
    runs = running_runs()
    if as_json:
        echo_json([{"run_id": r.run_id, "pipeline": r.pipeline, "attempt": r.attempt,
                    "started": r.started.isoformat() if r.started else None,
                    "node": r.node} for r in runs])
        return
    if not runs:
        click.echo("no runs are running")
        return
    now = datetime.now(timezone.utc)
    click.echo(f"{'RUN ID':<44} {'PIPELINE':<24} {'ATTEMPT':>7} {'RUNNING':>9}  NODE")
    for r in runs:
        age = f"{(now - r.started).total_seconds():.0f}s" if r.started else "-"
        click.echo(f"{r.run_id:<44} {r.pipeline:<24} {r.attempt:>7} {age:>9}  {r.node or '-'}")


@click.command("cancel")
@click.argument("run_id")
@click.option("--grace", type=float, default=DEFAULT_GRACE_PERIOD, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
def cancel(run_id: str, grace: float) -> None:
    """Cancel a running run: stop its container (SIGTERM, grace, SIGKILL); it ends `cancelled`."""
    cancel_anywhere(run_id, grace_period=grace)
    click.echo(f"cancelled {run_id}")
