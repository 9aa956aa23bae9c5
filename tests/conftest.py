"""Shared fixtures (the plain helpers they build on are in helpers.py).

Docker tests are marked `docker`. Where no engine answers they are skipped on a laptop, but
fail in CI (FASTFLOW_REQUIRE_DOCKER=1, set by .ci/run): there they must run, never skip.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest
from helpers import (
    CA_BUNDLE,
    ROOT,
    Origin,
    one_node_swarm,
    require_docker,
    utc_now,
    write_files,
)

from fastflow.defaults import DEFAULT_IMAGE, DEFAULT_PYTHON
from fastflow.executors.docker import (
    DockerExecutor,
    build_image,
    check_image,
    find_uv_binary,
    uv_version,
)
from fastflow.executors.docker import runner_image as image_of_python
from fastflow.executors.swarm import SwarmExecutor


@pytest.fixture
def project_root() -> Path:
    """The Fast-Flow repository itself (it is its own demo repository)."""
    return ROOT


@pytest.fixture
def make_repo(tmp_path: Path):
    """Create a pipelines repository in tmp_path from a {relative path: text} mapping."""

    def make(files: dict[str, str], root: Path | None = None) -> Path:
        return write_files(root or tmp_path / "repo", files)

    return make


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    """A bare repository tmp_path/origin.git (branch main) and its clone tmp_path/work."""
    return Origin(tmp_path)


# --- Docker: the runner image and the uv cache, once per session --------------------------------

@pytest.fixture(scope="session")
def runner_image() -> str:
    """The default runner image (of the default Python), built with --bootstrap unless it
    exists and matches."""
    require_docker()
    tag = image_of_python(DEFAULT_IMAGE, DEFAULT_PYTHON)
    status = check_image(tag, uv_version(find_uv_binary()), python=DEFAULT_PYTHON)
    if not status.matches:
        build_image(tag, bootstrap=True, python_version=DEFAULT_PYTHON)
    return tag


@pytest.fixture(scope="session")
def runner_image_py313(runner_image) -> str:
    """The runner image of Python 3.13 (Debian trixie), built with --bootstrap unless it exists
    and matches: a pipeline on another Python than the default runs in its own image."""
    tag = image_of_python(DEFAULT_IMAGE, "3.13")
    if not check_image(tag, uv_version(find_uv_binary()), python="3.13").matches:
        build_image(tag, bootstrap=True, python_version="3.13")
    return tag


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """The uv cache the Docker tests share (what a long-running daemon would keep)."""
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture
def docker_executor_factory(runner_image, shared_cache) -> Callable[[], DockerExecutor]:
    """Fresh DockerExecutors on the runner image and the shared cache (the contract suite's)."""
    return lambda: DockerExecutor(clock=utc_now, cache_dir=shared_cache, image=runner_image,
                                  ca_bundle=CA_BUNDLE)


@pytest.fixture(scope="session")
def swarm_engine(runner_image):
    """The CI engine as a one-node Swarm manager for the session: `docker swarm init` (an
    engine already in a swarm is used as it is), and ALWAYS `docker swarm leave --force` at
    the end, so the engine other tests share is never left in swarm mode."""
    with one_node_swarm():
        yield


@pytest.fixture
def swarm_executor_factory(swarm_engine, runner_image) -> Callable[[], SwarmExecutor]:
    """Fresh SwarmExecutors on the runner image (the contract suite's), on the one-node swarm."""
    return lambda: SwarmExecutor(clock=utc_now, image=runner_image, ca_bundle=CA_BUNDLE,
                                 schedule_timeout=30)


def pytest_collection_modifyitems(config, items):
    if shutil.which("uv") is None:
        raise pytest.UsageError("uv is not on PATH: run scripts/setup (pip install -e '.[test]')")
