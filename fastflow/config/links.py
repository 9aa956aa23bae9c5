"""Symlinks in a repository: which ones a file Fast-Flow reads must not be followed through.

One judge for every reader (pipeline folders and their files, `.fastflow/config.yaml`,
`.fastflow/schedules.yaml`), on a working tree (`fastflow validate`) and on the daemon's
snapshot of a commit alike: the snapshot holds each symlink as git has it, so both reach the
same verdict, and a message names the link as it is written (`os.readlink`), never where it
happens to resolve on this machine.
"""
from __future__ import annotations

import os
from pathlib import Path

from fastflow.humanize import without_surrogates


def link_problem(root: Path, path: Path,
                 fix: str = "copy the file into the repository instead") -> str | None:
    """Why `path` (a file under the repository at `root`) must not be read, or None.

    None when `path` is not a symlink, or its chain of links ends at an existing file or folder
    inside `root`. Otherwise `is a symlink to <target>, outside the repository; <fix>`,
    `is a symlink to <target>, which does not exist`, or `is a symlink loop (<target>); ...`.
    """
    root = Path(os.path.realpath(root))
    if not os.path.islink(path):
        if os.path.lexists(path) and not _inside(root, Path(os.path.realpath(path))):
            return f"is in a folder linked outside the repository; {fix}"
        return None
    text = without_surrogates(os.readlink(path))
    try:
        target = Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:
        target = None
    except OSError:  # ELOOP: the chain comes back to itself
        return f"is a symlink loop ({text}); point it into the repository or remove it"
    lexical = Path(os.path.realpath(path))  # where a dangling chain would end
    if not _inside(root, target or lexical):
        return f"is a symlink to {text}, outside the repository; {fix}"
    if target is None:
        return f"is a symlink to {text}, which does not exist"
    return None


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents
