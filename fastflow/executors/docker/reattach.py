"""What a run container says about its attempt, for a process that did not create it.

`DockerExecutor` puts everything a later process needs on the container itself (labels for
the run id, pipeline, attempt, timeout, grace period and limits; the engine's json-file copy
of the output; the scratch folder as a mount), so that `DockerExecutor.reattach` can
supervise an attempt whose owner died (`kill -9` of the daemon) without any state of ours.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import docker.types

from fastflow.executors.base import AttemptSpec, OutputLine, OutputSink
from fastflow.executors.docker.cache import read_requirements
from fastflow.executors.docker.engine import (
    KIND_RUN,
    LABEL_ATTEMPT,
    LABEL_GRACE_PERIOD,
    LABEL_KIND,
    LABEL_LIMITS,
    LABEL_PIPELINE,
    LABEL_PYTHON,
    LABEL_RUN_ID,
    LABEL_TIMEOUT,
    LABEL_UV,
    DockerError,
)
from fastflow.model import Limits, PipelineType
from fastflow.record import Environment

CONTAINER_ROUTE_DIR = "/run/fastflow"
LOG_MAX_FILES = 2  # json-file: the engine keeps between 1 and 2 times the log cap per attempt
MIN_LOG_FILE_BYTES = 1024 * 1024


class SkipDelivered:
    """A sink that drops the first `left` lines (those the dead owner delivered already)."""

    def __init__(self, sink: OutputSink, left: int) -> None:
        self.sink, self.left = sink, max(int(left), 0)
        self.seen = 0  # lines received, skipped or not

    def __call__(self, line: OutputLine) -> None:
        self.seen += 1
        if self.left > 0:
            self.left -= 1
            return
        self.sink(line)


def log_config(cap_bytes: int) -> docker.types.LogConfig:
    """The engine's bounded copy of the output: `LOG_MAX_FILES` files of the log cap each."""
    size_kib = max(int(cap_bytes), MIN_LOG_FILE_BYTES) // 1024
    return docker.types.LogConfig(type="json-file", config={
        "max-size": f"{size_kib}k", "max-file": str(LOG_MAX_FILES)})


def labels_of(spec: AttemptSpec) -> dict[str, str]:
    """The labels of an attempt's container (`spec_from_container` reads them back)."""
    return {LABEL_KIND: KIND_RUN, LABEL_RUN_ID: spec.run_id, LABEL_PIPELINE: spec.pipeline,
            LABEL_ATTEMPT: str(spec.attempt), LABEL_TIMEOUT: f"{spec.timeout:g}",
            LABEL_GRACE_PERIOD: f"{spec.grace_period:g}",
            LABEL_LIMITS: json.dumps(spec.limits.to_json(), sort_keys=True)}


def spec_from_container(attrs: dict) -> AttemptSpec:
    """The parts of an attempt's spec that supervising it needs, read back from its labels."""
    config = attrs.get("Config") or {}
    return spec_from_labels(config.get("Labels") or {}, Path(config.get("WorkingDir") or "/"))


def spec_from_labels(labels: dict, workdir: Path = Path("/")) -> AttemptSpec:
    """The spec of an attempt from the labels `labels_of` gave it (a container's, or a
    Swarm service's)."""
    try:
        limits = Limits(**json.loads(labels.get(LABEL_LIMITS) or "{}"))
    except (ValueError, TypeError):
        limits = Limits()
    return AttemptSpec(
        run_id=labels.get(LABEL_RUN_ID, ""), pipeline=labels.get(LABEL_PIPELINE, ""),
        attempt=int(labels.get(LABEL_ATTEMPT, "1") or 1),
        workdir=workdir, entry="", type=PipelineType.SCRIPT,
        python_version=None, requirements=None, env={}, limits=limits,
        timeout=float(labels.get(LABEL_TIMEOUT) or 0),
        grace_period=float(labels.get(LABEL_GRACE_PERIOD) or 10),
    )


def name_of(listed: dict) -> str:
    """A container's name from the engine's list (without the leading slash)."""
    names = listed.get("Names") or ["/"]
    return names[0].lstrip("/")


def scratch_of(attrs: dict, scratch_dir: Path) -> Path | None:
    """The attempt's scratch folder (the host side of /run/fastflow), when it is ours."""
    for mount in attrs.get("Mounts") or ():
        if mount.get("Destination") == CONTAINER_ROUTE_DIR and mount.get("Source"):
            scratch = Path(mount["Source"]).parent
            if scratch.parent.resolve() == scratch_dir.resolve():
                return scratch
    return None


def environment_of(api, attrs: dict) -> Environment:
    """The record's environment of a container this process did not create."""
    config = attrs.get("Config") or {}
    cmd = list(config.get("Cmd") or ())
    try:
        labels = (api.inspect_image(attrs["Image"]).get("Config") or {}).get(
            "Labels") or {}
    except DockerError:
        labels = {}
    text = None
    if "--with-requirements" in cmd[:-1]:
        name = cmd[cmd.index("--with-requirements") + 1]
        for mount in attrs.get("Mounts") or ():
            if mount.get("Destination") == config.get("WorkingDir") and mount.get("Source"):
                text = read_requirements(Path(mount["Source"]), name)
    python = cmd[cmd.index("--python") + 1] if "--python" in cmd[:-1] else labels.get(LABEL_PYTHON)
    return Environment(image=config.get("Image"), image_id=attrs.get("Image"), python=python,
                       uv_version=labels.get(LABEL_UV),
                       requirements_hash=sha256_text(text) if text is not None else None)


def sha256_text(text: str) -> str:
    """The record's `requirements_hash` of a requirements text."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
