"""The `fastflow` command line: thin click commands over library functions.

Each command parses its options, calls one library function and formats the result. Commands
live in sibling modules (one per topic) and are attached to the `main` group here by name:
a command's module is imported only when that command runs (or help lists it), so
`fastflow run` does not pay for the daemon, the site renderer or git.
"""
from __future__ import annotations

import importlib

import click

from fastflow import __version__
from fastflow.cli.common import FastflowGroup, configure_logging, verbosity_options

# command name -> "module:attribute" (modules under fastflow.cli)
COMMANDS = {
    "init": "init:init",
    "list": "pipelines:list_pipelines",
    "validate": "pipelines:validate",
    "show": "pipelines:show",
    "run": "run:run",
    "secrets": "secrets:secrets",
    "serve": "serve:serve",
    "sync": "serve:sync",
    "image": "image:image",
    "ps": "image:ps",
    "cancel": "image:cancel",
    "schedule": "schedule:schedule",
    "hooks": "hooks:hooks",
    "status": "results:status",
    "history": "results:history",
    "logs": "results:logs",
    "site": "results:site_group",
    "results": "results:results_group",
    "webhook": "webhook:webhook",
    "flow": "flow:flow_group",
    "supervise": "supervise:supervise",
    "notify": "notify:notify",
}


class LazyGroup(FastflowGroup):
    """The top-level group: commands from `COMMANDS`, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(f"fastflow.cli.{module}"), attribute)
        if command.name != name:  # e.g. `site` is the function site_group
            raise AssertionError(f"fastflow.cli.{module}:{attribute} is named {command.name!r}")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fastflow")
@verbosity_options
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Fast-Flow: a git-native pipeline runner configured entirely by files."""
    ctx.obj = {"verbose": verbose, "quiet": quiet}  # `serve` logs at info level by default
    configure_logging(verbose, quiet)
