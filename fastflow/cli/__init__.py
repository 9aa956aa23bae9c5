"""The `fastflow` command line: thin click commands over library functions.

Each command parses its options, calls one library function and formats the result. Commands
live in sibling modules (one per topic) and are attached to the `main` group here.
"""
from __future__ import annotations

import logging

import click

from fastflow import __version__
from fastflow.cli import pipelines, run, serve
from fastflow.cli.hooks import hooks
from fastflow.cli.image import cancel, image, ps
from fastflow.cli.results import history, logs, results_group, site_group, status
from fastflow.cli.schedule import schedule
from fastflow.cli.secrets import secrets
from fastflow.cli.common import FastflowGroup


@click.group(cls=FastflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fastflow")
@click.option("-v", "--verbose", is_flag=True, help="Show Fast-Flow's debug messages.")
def main(verbose: bool) -> None:
    """Fast-Flow: a git-native pipeline runner configured entirely by files."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="fastflow: %(levelname)s: %(message)s",
    )


for _command in (pipelines.list_pipelines, pipelines.validate, pipelines.show, run.run, secrets,
                 serve.serve, serve.sync, image, ps, cancel, schedule, hooks, status, history,
                 logs, site_group, results_group):
    main.add_command(_command)
