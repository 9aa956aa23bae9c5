"""`fastflow hooks ...`: install or remove the post-receive hook (see docs/hooks.md)."""
from __future__ import annotations

from pathlib import Path

import click

from fastflow.cli.common import FastflowGroup
from fastflow.daemon import hooks as lib
from fastflow.defaults import DEFAULT_BRANCH

_repo_argument = click.argument(
    "bare_repo", metavar="BARE_REPO", type=click.Path(exists=True, file_okay=False, path_type=Path)
)


@click.group(cls=FastflowGroup)
def hooks() -> None:
    """The post-receive hook that tells `fastflow serve` about pushes."""


@hooks.command()
@_repo_argument
@click.option("--state-dir", "state_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The state dir of the `fastflow serve` that follows this repository.")
@click.option("--branch", default=DEFAULT_BRANCH, show_default=True,
              help="Only pushes to this branch notify the daemon.")
@click.option("--force", is_flag=True,
              help="Replace a post-receive hook not written by fastflow, keeping it as "
                   "post-receive.fastflow-backup-<n>.")
def install(bare_repo: Path, state_dir: Path, branch: str, force: bool) -> None:
    """Install the hook into BARE_REPO (a bare repository, or one with a work tree)."""
    result = lib.install_hook(bare_repo, state_dir.resolve(), branch, force=force)
    if result.backup is not None:
        click.echo(f"Kept the previous hook as {result.backup}")
    if result.changed:
        click.echo(f"Installed {result.path} (branch {lib.check_branch(branch)}, "
                   f"state dir {state_dir.resolve()})")
    else:
        click.echo(f"Already installed: {result.path}")


@hooks.command()
@_repo_argument
def uninstall(bare_repo: Path) -> None:
    """Remove the fastflow hook from BARE_REPO, restoring a hook that --force set aside."""
    result = lib.uninstall_hook(bare_repo)
    if not result.removed:
        click.echo(f"No post-receive hook at {result.path}; nothing to do")
    elif result.restored_from is not None:
        click.echo(f"Removed the fastflow hook; restored {result.path} from {result.restored_from}")
    else:
        click.echo(f"Removed {result.path}")
