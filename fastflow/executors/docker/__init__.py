"""The Docker executor package: the only code that imports the `docker` SDK.

- `engine`: connecting (`connect`, `docker_available`), labels, `list_running`, `cancel_run`
- `image`: the runner images, one per Python (`build_image`, `check_image`, `runner_image`,
  `check_runner_images`, `missing_runner_images`, `render_dockerfile`)
- `aptsources`: the host's Debian mirror for `--bootstrap` (`host_debian_mirror`)
- `cache`: the shared uv cache, its copy-on-write view in runs (trust model)
- `preheat`: `preheat_requirements` fills the shared cache for a pipeline
- `executor`: `DockerExecutor` (execute, pre-heat, re-attach), built from `container` (an
  attempt's hardened container), `supervisor` (following it to its verdict) and `reattach`
  (reading a container back); `stats` and `streams` serve the supervisor
"""
from fastflow.executors.docker.cache import CacheLayout, requirements_key
from fastflow.executors.docker.engine import (
    ENGINE_HINT,
    RunningRun,
    cancel_run,
    connect,
    docker_available,
    list_running,
)
from fastflow.executors.docker.executor import DockerExecutor
from fastflow.executors.docker.image import (
    DEFAULT_MIRROR,
    DEFAULT_SUITE,
    IMAGE_KIND,
    PYTHON_PLACEHOLDER,
    RUNNER_UID,
    SUITE_PYTHON,
    ImageStatus,
    RunnerImageCheck,
    bootstrap_base,
    build_image,
    check_image,
    check_runner_image,
    check_runner_images,
    find_uv_binary,
    missing_runner_images,
    render_dockerfile,
    runner_image,
    runner_image_problem,
    suite_for_python,
    uv_version,
)
from fastflow.executors.docker.preheat import PreheatResult, preheat_requirements

__all__ = [
    "CacheLayout", "bootstrap_base", "DEFAULT_MIRROR", "DEFAULT_SUITE", "DockerExecutor", "ENGINE_HINT", "IMAGE_KIND",
    "ImageStatus", "PreheatResult", "RUNNER_UID", "RunningRun", "build_image", "cancel_run",
    "check_image", "connect", "docker_available", "find_uv_binary", "list_running",
    "preheat_requirements", "render_dockerfile", "requirements_key", "uv_version",
    "PYTHON_PLACEHOLDER", "SUITE_PYTHON", "RunnerImageCheck", "check_runner_image", "check_runner_images",
    "missing_runner_images", "runner_image", "runner_image_problem", "suite_for_python",
]
