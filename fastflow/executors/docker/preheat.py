"""Pre-heat: fill the shared uv cache with a pipeline's requirements, the one trusted writer.

A pre-heat container runs `uv run --no-project [--python X] --with-requirements FILE python -c
...` in the runner image, in the same working dir as a run (/work/<pipeline>), with the shared
cache mounted read-write, network allowed and the CA bundle when configured. uv then holds both
the packages and the ready environment for exactly what a run of that pipeline asks, so the
run finds everything in the cache and is started offline (`UV_OFFLINE=1`) and installs nothing.
On success a marker `preheated/<key>.json` is written; its key covers the requirements text,
the Python version and the image id, so a new image or changed requirements pre-heat again.

What a pre-heat trusts: the pipeline's requirements (an sdist's build script runs with write
access to the cache). Pre-heat only what the repository's maintainers committed.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import docker
import docker.errors
import docker.types

from fastflow.errors import ExecutorError
from fastflow.executors.base import DEFAULT_PREHEAT_TIMEOUT, missing_requirements
from fastflow.executors.docker.cache import (
    CONTAINER_CA_BUNDLE,
    CONTAINER_PYTHON_DIR,
    CONTAINER_UV_CACHE,
    CacheLayout,
    read_requirements,
    requirements_key,
    write_marker,
)
from fastflow.executors.docker.container import missing_image
from fastflow.executors.docker.engine import (
    KIND_PREHEAT,
    LABEL_KIND,
    LABEL_PIPELINE,
    DockerError,
    connect,
)
from fastflow.executors.docker.image import RUNNER_UID

logger = logging.getLogger(__name__)

OUTPUT_TAIL_LINES = 50


@dataclass(frozen=True)
class PreheatResult:
    """How a pre-heat ended: its key, success, exit code, the output's tail, duration."""

    key: str
    ok: bool
    exit_code: int | None
    output: str
    duration_s: float
    skipped: bool = False  # already pre-heated (the marker exists)


RESOLVED_PREFIX = "fastflow-resolved: "
# Prints the environment's package set (name==version, sorted) on one marked line: recorded in
# the pre-heat marker and in every run record of that environment (`environment.resolved`).
_REPORT = ("import importlib.metadata as m, json, sys; print(sys.version); "
           "print(" + repr(RESOLVED_PREFIX) + " + json.dumps(sorted({d.metadata['Name'] + '==' + "
           "d.version for d in m.distributions() if d.metadata['Name']})))")


def preheat_command(requirements: str, python_version: str | None) -> list[str]:
    """The uv command that resolves, downloads and builds the environment of a run, then
    reports the package set it resolved."""
    cmd = ["uv", "run", "--no-project"]
    if python_version:
        cmd += ["--python", python_version]
    return cmd + ["--with-requirements", requirements, "python", "-c", _REPORT]


def resolved_packages(output: str) -> list[str]:
    """The package set a pre-heat reported (empty when its output has no report line)."""
    for line in reversed(output.splitlines()):
        if line.startswith(RESOLVED_PREFIX):
            try:
                return [str(p) for p in json.loads(line[len(RESOLVED_PREFIX):])]
            except ValueError:
                return []
    return []


def preheat_requirements(image: str, cache_dir: Path, pipeline_dir: Path, requirements: str,
                         python_version: str | None = None, ca_bundle: Path | None = None, *,
                         timeout: float = DEFAULT_PREHEAT_TIMEOUT, force: bool = False,
                         client: docker.DockerClient | None = None,
                         monotonic: Callable[[], float] = time.monotonic) -> PreheatResult:
    """Install a pipeline's requirements into the shared cache (see the module docstring).

    `requirements` is the file name inside `pipeline_dir`. Skips the work when the marker of the
    same requirements, Python and image exists (unless `force`). Raises `ExecutorError` when no
    container can be run; a failing install is a result (`ok=False`, with the output's tail).
    """
    client = connect(client)
    begin = monotonic()
    try:
        image_id = client.api.inspect_image(image)["Id"]
    except docker.errors.ImageNotFound as exc:
        raise missing_image(image) from exc
    text = read_requirements(pipeline_dir, requirements)
    if text is None:
        raise missing_requirements(pipeline_dir, requirements)
    layout = CacheLayout(Path(cache_dir)).prepare()
    key = requirements_key(text, python_version, image_id)
    if layout.is_preheated(key) and not force:
        return PreheatResult(key, True, 0, "", monotonic() - begin, skipped=True)
    code, output = _run(client, image, layout, pipeline_dir, requirements, python_version,
                        ca_bundle, timeout)
    result = PreheatResult(key, code == 0, code, output, round(monotonic() - begin, 3))
    if result.ok:
        write_marker(layout, key, {"image_id": image_id, "python_version": python_version,
                                   "pipeline": pipeline_dir.name, "requirements": requirements,
                                   "duration_s": result.duration_s,
                                   "resolved": resolved_packages(output)})
    return result


def _run(client, image: str, layout: CacheLayout, pipeline_dir: Path, requirements: str,
         python_version: str | None, ca_bundle: Path | None, timeout: float) -> tuple[int | None, str]:
    workdir = f"/work/{pipeline_dir.name}"
    mounts = [
        docker.types.Mount(workdir, str(pipeline_dir.resolve()), type="bind", read_only=True),
        docker.types.Mount(CONTAINER_UV_CACHE, str(layout.uv.resolve()), type="bind"),
        docker.types.Mount(CONTAINER_PYTHON_DIR, str(layout.python.resolve()), type="bind"),
    ]
    env = {"UV_CACHE_DIR": CONTAINER_UV_CACHE, "UV_PYTHON_INSTALL_DIR": CONTAINER_PYTHON_DIR,
           "HOME": "/tmp", "UV_NO_PROGRESS": "1"}
    if ca_bundle:
        mounts.append(docker.types.Mount(CONTAINER_CA_BUNDLE, str(Path(ca_bundle).resolve()),
                                         type="bind", read_only=True))
        env["SSL_CERT_FILE"] = CONTAINER_CA_BUNDLE
    host_config = client.api.create_host_config(
        mounts=mounts, read_only=True, init=True, cap_drop=["ALL"],
        security_opt=["no-new-privileges"], pids_limit=512,
        tmpfs={"/tmp": "rw,nosuid,nodev,exec,mode=1777"}, network_mode="bridge",
    )
    try:
        container = client.api.create_container(
            image, command=preheat_command(requirements, python_version), working_dir=workdir,
            user=f"{RUNNER_UID}:{RUNNER_UID}", environment=env, host_config=host_config,
            labels={LABEL_KIND: KIND_PREHEAT, LABEL_PIPELINE: pipeline_dir.name},
        )
    except DockerError as exc:
        raise ExecutorError(f"cannot create the pre-heat container for {pipeline_dir.name!r}: {exc}") from exc
    cid = container["Id"]
    try:
        client.api.start(cid)
        try:
            code = client.api.wait(cid, timeout=timeout)["StatusCode"]
        except Exception:  # noqa: BLE001 - requests' ReadTimeout: the install took too long
            client.api.kill(cid)
            code = None
        output = client.api.logs(cid, stdout=True, stderr=True).decode("utf-8", errors="replace")
        tail = "\n".join(output.splitlines()[-OUTPUT_TAIL_LINES:])
        if code is None:
            tail += f"\npre-heat timed out after {timeout:g}s"
        return code, tail
    except DockerError as exc:
        raise ExecutorError(f"the pre-heat container for {pipeline_dir.name!r} failed: {exc}") from exc
    finally:
        try:
            client.api.remove_container(cid, v=True, force=True)
        except DockerError:
            pass
