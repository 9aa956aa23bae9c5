"""`fastflow init [DIR]`: a new pipelines repository with an example pipeline."""
from __future__ import annotations

import shlex
from pathlib import Path

import click

from fastflow.defaults import DEFAULT_BRANCH
from fastflow.deploy.scaffold import EXAMPLE, NewRepository, new_repository


def next_commands(made: NewRepository, typed: str) -> list[str]:
    """The three commands to type next, from the current directory, each with why."""
    here = made.root == Path.cwd().absolute()
    repo = "" if here else f" --repo {shlex.quote(typed)}"
    git = "git" if here else f"git -C {shlex.quote(typed)}"
    branch = made.branch or DEFAULT_BRANCH
    serve = f"fastflow serve{repo}" + ("" if branch == DEFAULT_BRANCH else f" --branch {branch}")
    return [
        f"fastflow run {EXAMPLE} --local{repo}    # run the example on this machine now",
        f'{git} add -A && {git} commit -m "A Fast-Flow pipelines repository"'
        "    # the daemon runs what is committed",
        f"{serve}    # follow branch {branch}: runs in Docker (or add --local)",
    ]


@click.command("init")
@click.argument("directory", metavar="[DIR]", default=".",
                type=click.Path(dir_okay=True, file_okay=False))
def init(directory: str) -> None:
    """Create a pipelines repository in DIR (default: the current folder; made if missing).

    Writes .fastflow/config.yaml and .fastflow/schedules.yaml (with commented examples), the
    example pipeline pipelines/hello/ and a .gitignore, and makes DIR a git repository unless
    it is inside one (nothing is committed). An existing file is never replaced: the command
    names the files in the way and writes nothing.
    """
    made = new_repository(Path(directory))
    click.echo(f"Created a Fast-Flow pipelines repository in {made.root}:")
    for rel in made.created:
        click.echo(f"  {rel}")
    if made.git_created:
        click.echo(f"Made it a git repository (branch {made.branch}); nothing is committed yet.")
    else:
        click.echo(f"It is in the git repository {made.git_root}; nothing was committed.")
        if made.git_root != made.root:
            click.echo(f"Note: fastflow serve reads .fastflow/ at the root of the repository "
                       f"it follows, {made.git_root}, not {made.root}: run `fastflow init` at "
                       "the repository's root or in a folder of its own to deploy it.")
    click.echo("Next:")
    for command in next_commands(made, directory):
        click.echo(f"  {command}")
