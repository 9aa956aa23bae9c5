"""What every CLI command shares: error reporting, output helpers, shared options.

The CLI is the only layer that reads the environment, prints, or exits. Domain errors
(`FastflowError`) become `Error: <message>` on stderr and exit code 1, and so does a full disk
(`OSError` ENOSPC or EDQUOT, never a traceback); usage errors exit 2 (click's own convention).
"""
from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click

from fastflow.errors import FastflowError


class FastflowGroup(click.Group):
    """A click group that turns `FastflowError` into `Error: ...` and exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FastflowError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                raise
            click.echo(f"Error: {disk_full_message(exc)}", err=True)
            ctx.exit(1)


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(exc: OSError) -> str:
    """What a full disk (or quota) means for the user: which file, and the fix."""
    where = f" writing {exc.filename}" if exc.filename else ""
    return (f"no space left on the device{where} ({exc.strerror or exc}); free space on that "
            "disk (for `fastflow serve`, the one holding the state dir) and try again")


def configure_logging(verbose: int = 0, quiet: bool = False, *, default: int = logging.WARNING,
                      timestamps: bool = False) -> None:
    """Where log records go (stderr) and which: Fast-Flow's from `default` up (`-q`: warnings
    and errors; `-v`: its debug lines too); other libraries' (urllib3, docker, watchdog) from
    WARNING, unless `-vv`. With `timestamps` (a daemon's log) each line starts with its UTC time
    and the logger's name: `2026-11-22T10:00:00Z INFO fastflow.daemon.runs: run ...: started`."""
    ours = logging.WARNING if quiet else logging.DEBUG if verbose else default
    handler = logging.StreamHandler(sys.stderr)
    if timestamps:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                      "%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("fastflow: %(levelname)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("fastflow").setLevel(ours)


def verbosity_options(func: Callable) -> Callable:
    """`-v` (repeatable) and `-q`, for the group and for `serve` (`fastflow serve -v`)."""
    func = click.option("-q", "--quiet", is_flag=True,
                        help="Show only warnings and errors.")(func)
    return click.option("-v", "--verbose", count=True,
                        help="Show Fast-Flow's debug messages; -vv: other libraries' too.")(func)


def repo_option(func: Callable) -> Callable:
    """`--repo DIR`: the pipelines repository (default: the current directory)."""

    @click.option(
        "--repo",
        "repo",
        type=click.Path(file_okay=False, path_type=Path),
        default=".",
        show_default=True,
        help="The pipelines repository (its root folder).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["repo"] = Path(kwargs["repo"]).resolve()
        return func(*args, **kwargs)

    return wrapper


def echo_json(data: Any) -> None:
    """Print `data` as indented JSON (for `--json` output)."""
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def host_environment() -> dict[str, str]:
    """The process environment; the only place the CLI's library calls get it from."""
    return dict(os.environ)


def is_terminal() -> bool:
    return sys.stdout.isatty()
