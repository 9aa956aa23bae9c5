"""Shared fixtures.

Docker tests are marked `docker`. Where no engine answers they are skipped on a laptop, but
fail in CI (FASTFLOW_REQUIRE_DOCKER=1, set by .ci/run): there they must run, never skip.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project_root() -> Path:
    """The Fast-Flow repository itself (it is its own demo repository)."""
    return ROOT


@pytest.fixture
def make_repo(tmp_path: Path):
    """Create a pipelines repository in tmp_path from a {relative path: text} mapping."""

    def make(files: dict[str, str], root: Path | None = None) -> Path:
        base = root or tmp_path / "repo"
        base.mkdir(parents=True, exist_ok=True)
        for rel, text in files.items():
            path = base / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return base

    return make


def require_docker() -> None:
    """Skip (locally) or fail (CI) when no Docker engine answers."""
    from fastflow.executors import docker as docker_executor

    if docker_executor.docker_available():
        return
    if os.environ.get("FASTFLOW_REQUIRE_DOCKER"):
        pytest.fail("Docker tests must run in CI, but no Docker engine answers")
    pytest.skip("no Docker engine answers (start dockerd)")


def pytest_collection_modifyitems(config, items):
    if shutil.which("uv") is None:
        raise pytest.UsageError("uv is not on PATH: run scripts/setup (pip install -e '.[test]')")
