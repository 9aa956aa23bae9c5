"""A new pipelines repository (`fastflow init`): its files, written without replacing any.

`new_repository(root)` writes `.fastflow/config.yaml` and `.fastflow/schedules.yaml` (every key
shown as a commented example: a line of `#` and a key, or `#` and an indented list item, is a
setting; `# ` and a word is prose), the example pipeline `pipelines/hello/` and a `.gitignore`,
and makes a git repository of `root` when it is in none. It checks every path first and writes nothing when
one exists, so it never leaves half a repository behind.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fastflow import repo as git
from fastflow.defaults import (
    CONFIG_FILE,
    DEFAULT_AUTHOR_EMAIL,
    DEFAULT_AUTHOR_NAME,
    DEFAULT_BRANCH,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_IMAGE,
    DEFAULT_LEASE_TIMEOUT,
    DEFAULT_LOG_CAP_BYTES,
    DEFAULT_MAX_CONCURRENT_RUNS,
    DEFAULT_PIPELINES_DIR,
    DEFAULT_PYTHON,
    DEFAULT_RESULTS_BRANCH,
    DEFAULT_SECRETS_FILE,
    DEFAULT_TMP_SIZE_BYTES,
    SCHEDULES_FILE,
)
from fastflow.errors import ScaffoldError
from fastflow.files import write_atomic

EXAMPLE = "hello"
MIB = 1024 * 1024

CONFIG_YAML = f"""\
# {CONFIG_FILE}: the settings of this pipelines repository (docs/config-yaml.md).
# Every key is optional. The lines below show the defaults: remove the "#" to change one.
#pipelines_dir: {DEFAULT_PIPELINES_DIR}
#branch: {DEFAULT_BRANCH}
#results_branch: {DEFAULT_RESULTS_BRANCH}
#image: {DEFAULT_IMAGE}
# Quote Python versions: 3.10 unquoted is the number 3.1.
#default_python: "{DEFAULT_PYTHON}"
#max_concurrent_runs: {DEFAULT_MAX_CONCURRENT_RUNS}
# Seconds; 0 means no timeout.
#default_timeout: 0
#default_retry_attempts: 0
#grace_period: {DEFAULT_GRACE_PERIOD:g}
#log_cap: {DEFAULT_LOG_CAP_BYTES // MIB}m
#tmp_size: {DEFAULT_TMP_SIZE_BYTES // MIB}m
#lease_timeout: {DEFAULT_LEASE_TIMEOUT:g}
#secrets_file: {DEFAULT_SECRETS_FILE}
#results_author: {{name: {DEFAULT_AUTHOR_NAME}, email: {DEFAULT_AUTHOR_EMAIL}}}
# Examples without a default: limits of every pipeline that sets none, and how long runs are kept.
#default_limits: {{cpu_hard_limit: 1, mem_hard_limit: 1g}}
#retention: {{keep_runs: 1000, keep_days: 90}}
"""

SCHEDULES_YAML = f"""\
# {SCHEDULES_FILE}: when pipelines run (docs/schedules.md). Remove the "#" of an entry
# to schedule it; `fastflow schedule next` shows the slots to come.
# The zone of the entries (an IANA name; default UTC):
#timezone: Europe/Berlin
schedules:
#  - pipeline: {EXAMPLE}
#    id: {EXAMPLE}-nightly
#    cron: "0 3 * * *"
#    env: {{GREETING: "good night"}}
#  - pipeline: {EXAMPLE}
#    id: {EXAMPLE}-every-15m
#    interval: 15m
#    overlap: skip
"""

MAIN_PY = '''\
"""The example pipeline: print a greeting and the run's context."""
import os

greeting = os.environ.get("GREETING", "hello")
print(f"{greeting} from {os.environ['FASTFLOW_PIPELINE']} "
      f"(run {os.environ['FASTFLOW_RUN_ID']}, attempt {os.environ['FASTFLOW_ATTEMPT']})")
'''

PIPELINE_JSON = json.dumps({
    "_comment": "Every field is optional (docs/pipeline-json.md); keys starting with _ are "
                "comments. Add a requirements.txt next to main.py for packages.",
    "description": "The example pipeline: prints a greeting",
    "tags": ["example"],
    "timeout": 60,
    "default_env": {"GREETING": "hello"},
}, indent=2) + "\n"

GITIGNORE = """\
# Python caches and virtual environments
__pycache__/
*.py[cod]
.venv/
venv/
.ipynb_checkpoints/
# Local artifacts: files of `fastflow run --record-json/--log-file`, environment files
*.log
.env
# Editors and systems
.idea/
.vscode/
.DS_Store
"""

FILES = {
    CONFIG_FILE: CONFIG_YAML,
    SCHEDULES_FILE: SCHEDULES_YAML,
    f"{DEFAULT_PIPELINES_DIR}/{EXAMPLE}/main.py": MAIN_PY,
    f"{DEFAULT_PIPELINES_DIR}/{EXAMPLE}/pipeline.json": PIPELINE_JSON,
    ".gitignore": GITIGNORE,
}


@dataclass(frozen=True)
class NewRepository:
    """What `new_repository` did: the files it wrote (relative to `root`, sorted), and the git
    repository `root` is in: `git_root` with its `branch`, `git_created` when it made it."""

    root: Path
    created: tuple[str, ...]
    git_root: Path
    branch: str | None
    git_created: bool


def new_repository(root: Path) -> NewRepository:
    """Write a new pipelines repository into `root` (made when missing), never replacing a file;
    `ScaffoldError` names every path in the way and writes nothing."""
    root = Path(root).absolute()
    _check_free(root)
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_atomic(path, text, exclusive=True)
        except FileExistsError:  # created meanwhile by someone else: still never replaced
            raise ScaffoldError(_taken_message(root, [rel])) from None
    found = git.find_repo(root)
    created = found is None
    if found is None:
        found = git.init_repo(root, initial_branch=DEFAULT_BRANCH)
    return NewRepository(root, tuple(sorted(FILES)), Path(found.path).absolute(),
                         git.head_branch(found), created)


def _check_free(root: Path) -> None:
    """Raise `ScaffoldError` unless every file can be created: none exists, no folder on the
    way is a file."""
    if root.exists() and not root.is_dir():
        raise ScaffoldError(f"{root}: is a file, not a folder; give a new or existing folder")
    taken = []
    for rel in sorted(FILES):
        parts = Path(rel).parts
        for depth in range(1, len(parts) + 1):
            path = root.joinpath(*parts[:depth])
            last = depth == len(parts)
            if path.is_symlink() or (path.exists() and (last or not path.is_dir())):
                taken.append("/".join(parts[:depth]))
                break
    if taken:
        raise ScaffoldError(_taken_message(root, list(dict.fromkeys(taken))))


def _taken_message(root: Path, taken: list[str]) -> str:
    verb, them = ("exists", "it") if len(taken) == 1 else ("exist", "them")
    return (f"{root}: {', '.join(taken)} {verb} already; fastflow init never replaces a file: "
            f"move {them} away or init a new folder")
