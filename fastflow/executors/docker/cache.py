"""The shared uv cache: its layout, how runs see it (copy-on-write, read-only underneath), pre-heat.

Trust model: *a run must not be able to change cached packages that another pipeline's runs
use.* The shared cache folder on the host is written only by `preheat_requirements` (a trusted
step that installs a pipeline's requirements with the cache mounted read-write). A run sees the
cache through an overlay filesystem mounted by the engine (a `local` volume of type overlay):
the shared folder is the read-only lower layer, and every write the run makes (uv's lock files,
a cold run's downloads) goes to a per-attempt upper layer that is thrown away with the attempt.
uv cannot use a read-only cache directly (astral-sh/uv#15934), which is why the overlay exists.

Host layout of `cache_dir`: `uv/` (UV_CACHE_DIR in containers: /cache/uv), `python/` (uv's
managed Pythons: /cache/python), `preheated/<hash>.json` (markers written after a successful
pre-heat; the executor runs a pipeline whose marker exists with `UV_OFFLINE=1`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import docker.errors
import docker.types

from fastflow.executors.docker.image import RUNNER_UID
from fastflow.files import write_atomic

logger = logging.getLogger(__name__)

CONTAINER_CACHE = "/cache"
CONTAINER_UV_CACHE = "/cache/uv"
CONTAINER_PYTHON_DIR = "/cache/python"
CONTAINER_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class CacheLayout:
    """Where the shared cache lives on the host, and its parts."""

    root: Path

    @property
    def uv(self) -> Path:
        return self.root / "uv"

    @property
    def python(self) -> Path:
        return self.root / "python"

    @property
    def markers(self) -> Path:
        return self.root / "preheated"

    def marker(self, key: str) -> Path:
        return self.markers / f"{key}.json"

    def prepare(self) -> "CacheLayout":
        """Create the folders; give the container user the right to write them (for pre-heat)."""
        for path in (self.root, self.uv, self.python, self.markers):
            path.mkdir(parents=True, exist_ok=True)
        for path in (self.uv, self.python):
            give_to_runner(path)
        return self

    def is_preheated(self, key: str) -> bool:
        return self.marker(key).is_file()

    def resolved(self, key: str) -> tuple[str, ...]:
        """The package set the pre-heat of `key` recorded (empty when none or unreadable)."""
        try:
            data = json.loads(self.marker(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ()
        return tuple(data.get("resolved") or ())


def give_to_runner(path: Path) -> None:
    """Make `path` writable by the container user: chown when we are root, else mode 0777."""
    if os.geteuid() == 0:
        os.chown(path, RUNNER_UID, RUNNER_UID)
    else:
        path.chmod(0o777)


def requirements_key(requirements_text: str | None, python_version: str | None,
                     image_id: str | None) -> str:
    """The pre-heat key of a pipeline's environment: requirements content, Python, image."""
    digest = hashlib.sha256()
    for part in (requirements_text or "", python_version or "", image_id or ""):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def read_requirements(workdir: Path, requirements: str | None) -> str | None:
    """The text of a pipeline's requirements file (None when it has none)."""
    if not requirements:
        return None
    try:
        return (workdir / requirements).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def create_overlay_volume(client, name: str, lower: Path, upper: Path, work: Path,
                          labels: dict[str, str]) -> docker.types.Mount:
    """A named engine volume showing `lower` read-only with writes going to `upper`.

    The engine mounts the overlay when a container using it starts; the caller removes the
    volume (`remove_volume`) after the container. A named volume rather than an anonymous one
    so that it is removed even when someone else removed the container (`docker rm -f`
    without `-v` keeps anonymous volumes), and so that leftovers carry the run's labels.
    """
    client.api.create_volume(name=name, driver="local", labels=labels,
                             driver_opts=overlay_options(lower, upper, work))
    return docker.types.Mount(target=CONTAINER_CACHE, source=name, type="volume")


def overlay_options(lower: Path, upper: Path, work: Path) -> dict[str, str]:
    """The `local` driver options of an overlay of `lower` (read-only) with writes to `upper`."""
    options = f"lowerdir={lower.resolve()},upperdir={upper.resolve()},workdir={work.resolve()}"
    return {"type": "overlay", "device": "overlay", "o": options}


def remove_volume(client, name: str, attempts: int = 50, pause: float = 0.1) -> None:
    """Remove a volume made by `create_overlay_volume` (gone already is fine).

    While someone else is still removing the container (`docker rm -f` racing with us) the
    engine answers 409 "in use": try again for a few seconds.
    """
    for attempt in range(attempts):
        try:
            client.api.remove_volume(name, force=True)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code != 409 or attempt == attempts - 1:
                logger.warning("could not remove volume %s: %s", name, exc)
                return
            time.sleep(pause)


def write_marker(layout: CacheLayout, key: str, data: dict) -> None:
    """Record a successful pre-heat (atomically), so runs of that environment go offline."""
    path = layout.marker(key)
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def remove_tree(path: Path) -> bool:
    """Remove a scratch folder; False when files made by the container user resist (non-root)."""
    shutil.rmtree(path, ignore_errors=True)
    return not path.exists()
