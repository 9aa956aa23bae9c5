"""The runner images, one per Python version: build them (from a Python base image or by
debootstrap), check them, and say which image a pipeline's Python needs.

The image holds Python, the host's exact uv binary (so a uv cache filled on either side is valid
on both), a non-root user `runner` (uid 10001) and the mount points runs use (`/work`, `/cache`,
`/run/fastflow`, `/opt/fastflow`). Its labels record the Python and uv versions; `check_image`
compares them with the host's uv. Nothing pipeline-specific is ever baked in: pipelines get
their packages from the shared uv cache at run time.

One image per Python: `image` of config.yaml may hold `{python}` (the default,
`fastflow-runner:py{python}`), replaced by the major.minor of a run's Python (`runner_image`).
An `image` without it is one image for every Python; a pipeline asking for another Python than
the image's label is then refused (`runner_image_problem`), never run on the wrong interpreter.

Two ways to build:
- `base=IMAGE` (e.g. `python:3.11-slim`): a generated Dockerfile on that image (needs a registry).
- `bootstrap=True`: `debootstrap` a minimal Debian (variant minbase, with python3) of the suite
  that ships the asked Python (`SUITE_PYTHON`: bookworm 3.11, trixie 3.13) from Debian packages, `docker import` it as `fastflow-base:<suite>` (kept and reused), then the same
  Dockerfile on top. Needs root and a Debian mirror, no registry. The mirror is the one the
  host's apt already uses (`host_debian_mirror`), or `mirror=URL`: no host name of a mirror is
  written in Fast-Flow, so a machine behind its own mirror or proxy never reaches past it.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import docker
import docker.errors

try:  # the `uv` Python package ships the binary (a dependency of fastflow, but may be absent)
    import uv as uv_package
except ImportError:  # pragma: no cover - depends on the installation
    uv_package = None

from fastflow.defaults import CONFIG_FILE, DEFAULT_PYTHON, IMAGE_PYTHON_PLACEHOLDER
from fastflow.errors import EngineUnavailable, ExecutorError
from fastflow.executors.docker.aptsources import DEFAULT_APT_DIR, host_debian_mirror
from fastflow.executors.docker.engine import (
    LABEL_KIND,
    LABEL_PYTHON,
    LABEL_UV,
    DockerError,
    connect,
)
from fastflow.model import Pipeline, Problem, RepoConfig, Severity

logger = logging.getLogger(__name__)

RUNNER_UID = 10001
IMAGE_KIND = "runner"
DEFAULT_SUITE = "bookworm"
# No built-in mirror: None means the host's apt sources decide (`host_debian_mirror`).
DEFAULT_MIRROR: str | None = None
# The Python (major.minor) each Debian suite ships as python3: what `--bootstrap --python X`
# can build. Another version needs `--base IMAGE` (a registry image such as python:3.12-slim).
SUITE_PYTHON = {"bookworm": "3.11", "trixie": "3.13", "bullseye": "3.9"}
# Replaced in `image` of config.yaml by the major.minor of a run's Python.
PYTHON_PLACEHOLDER = IMAGE_PYTHON_PLACEHOLDER
BOOTSTRAP_PACKAGES = ("python3", "ca-certificates")
# Trimmed from the debootstrapped tree before import: not needed to run Python.
_TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
         "usr/share/info", "usr/share/locale")

Log = Callable[[str], None]


def python_minor(version: str) -> str:
    """The major.minor of a Python version: "3.13.1" -> "3.13" (images are per minor version)."""
    return ".".join(version.split(".")[:2])


def runner_image(image: str, python: str | None) -> str:
    """The runner image of Python `python` under `image` of config.yaml: `{python}` replaced by
    its major.minor (`fastflow-runner:py{python}` -> `fastflow-runner:py3.13`); an `image`
    without `{python}` is the same image for every Python. `python` None: `DEFAULT_PYTHON`."""
    return image.replace(PYTHON_PLACEHOLDER, python_minor(python or DEFAULT_PYTHON))


def suite_for_python(python: str) -> str:
    """The Debian suite whose python3 is `python` (major.minor), for `--bootstrap`; another
    version is an `ExecutorError` listing what the suites provide and naming `--base`."""
    minor = python_minor(python)
    for suite, provided in SUITE_PYTHON.items():
        if provided == minor:
            return suite
    provided = ", ".join(f"{v} ({s})" for s, v in sorted(SUITE_PYTHON.items(),
                                                         key=lambda item: _version_key(item[1])))
    raise ExecutorError(
        f"no Debian suite ships Python {python} for --bootstrap (they provide {provided}); "
        f"for Python {minor} finish a registry image instead: "
        f"`fastflow image build --base python:{minor}-slim --python {minor}`"
    )


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def build_hint(python: str | None) -> str:
    """The command that builds the runner image of `python` (None: of the default Python)."""
    if python is None:
        return "`fastflow image build --bootstrap` (or `--base IMAGE`)"
    minor = python_minor(python)
    if minor in SUITE_PYTHON.values():
        return f"`fastflow image build --bootstrap --python {minor}` (or `--base IMAGE`)"
    return (f"`fastflow image build --base python:{minor}-slim --python {minor}` (no Debian "
            f"suite ships Python {minor} for --bootstrap)")


def runner_image_problem(image: str, python: str | None,
                         labels: Mapping[str, str] | None) -> str | None:
    """Why Python `python` cannot run in its runner image under `image` of config.yaml, with the
    fix; None when it can. `labels` are the image's labels, None when it does not exist.

    The one judge of run start (`DockerExecutor`), pre-heat and `fastflow validate`
    (`missing_runner_images`), so all three say the same. An image without a Python label
    (not built by Fast-Flow) is not judged: uv inside it says whether the Python is there.
    """
    minor = python_minor(python or DEFAULT_PYTHON)
    tag = runner_image(image, minor)
    if labels is None:
        return (f"the runner image {tag!r} of Python {minor} does not exist; build it with "
                f"{build_hint(minor)}")
    has = labels.get(LABEL_PYTHON)
    if not has or python_minor(has) == minor:
        return None
    if PYTHON_PLACEHOLDER in image:
        return (f"the runner image {tag!r} has Python {has} (label {LABEL_PYTHON}), not "
                f"{minor}; rebuild it with {build_hint(minor)}")
    return (f"the image {tag!r} (`image` of {CONFIG_FILE}, one image for every Python) has "
            f"Python {has} (label {LABEL_PYTHON}), not {minor}; write {PYTHON_PLACEHOLDER} in "
            f"`image` (e.g. fastflow-runner:py{PYTHON_PLACEHOLDER}) for one image per Python and "
            f"build it with {build_hint(minor)}, or set python_version (or default_python) to \"{python_minor(has)}\"")


def pipeline_python(config: RepoConfig, pipeline: Pipeline) -> str:
    """The Python a pipeline's runs use: its `python_version`, else `default_python`, else
    `DEFAULT_PYTHON` (the image of the run is that Python's)."""
    return pipeline.python_version or config.default_python or DEFAULT_PYTHON


def missing_runner_images(config: RepoConfig, pipelines: Iterable[Pipeline], root: Path,
                          client: docker.DockerClient | None = None,
                          base_url: str | None = None) -> list[Problem]:
    """`fastflow validate`'s check of this machine's engine: one error per pipeline whose Python
    has no usable runner image (`runner_image_problem`), naming its metadata file (paths
    relative to `root`), `python_version` and the command that builds the image. Without an
    engine: one warning that the images could not be checked. `client` / `base_url` as for
    `connect`."""
    try:
        client = connect(client, base_url)
    except EngineUnavailable as exc:
        return [Problem(CONFIG_FILE, "image", f"the runner images could not be checked: {exc}",
                        Severity.WARNING)]
    labels: dict[str, Mapping[str, str] | None] = {}
    problems = []
    for pipeline in sorted(pipelines, key=lambda p: p.name):
        python = pipeline_python(config, pipeline)
        tag = runner_image(config.image, python)
        if tag not in labels:
            labels[tag] = _labels(client, tag)
        problem = runner_image_problem(config.image, python, labels[tag])
        if problem:
            where = pipeline.metadata_file or pipeline.path
            try:
                file = where.relative_to(root).as_posix()
            except ValueError:
                file = str(where)
            problems.append(Problem(file, "python_version",
                                    f"{_python_said(pipeline, python)}: {problem}",
                                    pipeline=pipeline.name))
    return problems


def _python_said(pipeline: Pipeline, python: str) -> str:
    """The pipeline's Python as validate shows it: its own value, or where the default is from."""
    source = pipeline.sources.get("python_version")
    if source == CONFIG_FILE:
        return f"{python} (default_python of {CONFIG_FILE})"
    if pipeline.python_version is None or source == "default":
        return f"{python} (the default Python)"
    return f'"{pipeline.python_version}"'


def _labels(client: docker.DockerClient, tag: str) -> Mapping[str, str] | None:
    try:
        return client.api.inspect_image(tag).get("Config", {}).get("Labels") or {}
    except docker.errors.ImageNotFound:
        return None
    except DockerError as exc:
        raise ExecutorError(f"cannot inspect the image {tag!r}: {exc}") from exc


@dataclass(frozen=True)
class ImageStatus:
    """What `check_image` found: whether the image exists, matches the host's uv and, when
    `wanted` (the Python it is checked for) is given, has that Python."""

    tag: str
    exists: bool
    image_id: str | None = None
    python: str | None = None
    uv_version: str | None = None
    kind: str | None = None
    host_uv_version: str | None = None
    wanted: str | None = None

    @property
    def matches(self) -> bool:
        return (self.exists and self.kind == IMAGE_KIND
                and self.uv_version is not None and self.uv_version == self.host_uv_version
                and not self._other_python)

    @property
    def _other_python(self) -> bool:
        return bool(self.wanted and self.python
                    and python_minor(self.python) != python_minor(self.wanted))

    @property
    def problem(self) -> str | None:
        """Why the image cannot be used as is, with the fix; None when it matches."""
        fix = f"rebuild it with {build_hint(self.wanted or self.python)}"
        if not self.exists:
            return f"the runner image {self.tag!r} does not exist; build it with " \
                   f"{build_hint(self.wanted)}"
        if self.kind != IMAGE_KIND:
            return f"the image {self.tag!r} is not a Fast-Flow runner image " \
                   f"(label {LABEL_KIND}={self.kind!r}); {fix}"
        if self._other_python:
            return f"the image {self.tag!r} has Python {self.python}, not {self.wanted}; {fix}"
        if self.uv_version != self.host_uv_version:
            return f"the image {self.tag!r} has uv {self.uv_version}, the host has uv " \
                   f"{self.host_uv_version}; {fix}"
        return None


def find_uv_binary() -> Path:
    """The host's real uv executable (the `uv` package's binary, else `uv` on PATH, shims resolved)."""
    candidates: list[str] = []
    if uv_package is not None:
        try:
            candidates.append(uv_package.find_uv_bin())
        except FileNotFoundError:
            pass
    if shutil.which("uv"):
        candidates.append(shutil.which("uv"))
    for candidate in candidates:
        path = Path(candidate).resolve()
        if path.is_file() and path.read_bytes()[:4] == b"\x7fELF":
            return path  # a shell shim (pyenv, asdf) is not a binary we can copy into an image
    raise ExecutorError(
        "no uv executable found on the host (looked for the `uv` Python package and `uv` on "
        "PATH); install it with `pip install uv`"
    )


def uv_version(uv_binary: Path) -> str:
    """The version of a uv executable, e.g. "0.13.9"."""
    try:
        out = subprocess.run([str(uv_binary), "--version"], capture_output=True, text=True,
                             check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ExecutorError(f"cannot run {uv_binary} --version: {exc}") from exc
    match = re.search(r"uv (\d+\.\d+\.\d+\S*)", out)
    if not match:
        raise ExecutorError(f"unexpected output of {uv_binary} --version: {out.strip()!r}")
    return match.group(1)


def render_dockerfile(base: str, python_version: str, uv_version: str) -> str:
    """The Dockerfile that finishes a runner image on `base` (any Debian-like image with python3).

    The build context holds only the uv binary, so the build needs no network.
    """
    return f"""\
FROM {base}
COPY uv /usr/local/bin/uv
RUN set -eu; \\
    chmod 0755 /usr/local/bin/uv; \\
    command -v python3 >/dev/null; \\
    useradd --uid {RUNNER_UID} --user-group --no-create-home --home-dir /tmp \\
        --shell /usr/sbin/nologin runner; \\
    mkdir -p /work /cache /run/fastflow /opt/fastflow; \\
    chown {RUNNER_UID}:{RUNNER_UID} /cache /run/fastflow
ENV UV_CACHE_DIR=/cache/uv UV_PYTHON_INSTALL_DIR=/cache/python UV_NO_PROGRESS=1 \\
    HOME=/tmp PYTHONUNBUFFERED=1 LANG=C.UTF-8
USER {RUNNER_UID}
WORKDIR /work
LABEL {LABEL_KIND}="{IMAGE_KIND}" {LABEL_PYTHON}="{python_version}" {LABEL_UV}="{uv_version}"
"""


def check_image(tag: str, host_uv_version: str, client: docker.DockerClient | None = None,
                *, python: str | None = None) -> ImageStatus:
    """Whether the image `tag` exists, its labels, whether its uv is the host's and, with
    `python`, whether it is that Python's image."""
    client = connect(client)
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return ImageStatus(tag=tag, exists=False, host_uv_version=host_uv_version, wanted=python)
    labels = image.labels or {}
    return ImageStatus(
        tag=tag, exists=True, image_id=image.id, python=labels.get(LABEL_PYTHON),
        uv_version=labels.get(LABEL_UV), kind=labels.get(LABEL_KIND),
        host_uv_version=host_uv_version, wanted=python,
    )


@dataclass(frozen=True)
class RunnerImageCheck:
    """One Python a repository needs: its runner image's status, the pipelines on it, and why
    it cannot be used (None when it can)."""

    python: str
    status: ImageStatus
    pipelines: tuple[str, ...]
    problem: str | None


def check_runner_images(config: RepoConfig, pipelines: Iterable[Pipeline], host_uv_version: str,
                        client: docker.DockerClient | None = None) -> list[RunnerImageCheck]:
    """`fastflow image check` of a repository: the runner image of every Python its pipelines
    (and `default_python`) need, judged as a run would judge it (`runner_image_problem`), and
    for the host's uv (`ImageStatus.problem`)."""
    client = connect(client)
    return [check_runner_image(config.image, python, host_uv_version, client, names)
            for python, names in needed_pythons(config, pipelines).items()]


def check_runner_image(image: str, python: str, host_uv_version: str,
                       client: docker.DockerClient | None = None,
                       pipelines: Iterable[str] = ()) -> RunnerImageCheck:
    """The runner image of `python` under `image` of config.yaml, judged as a run would judge
    it (`runner_image_problem`), then for the host's uv (`ImageStatus.problem`)."""
    status = check_image(runner_image(image, python), host_uv_version, client, python=python)
    labels = {LABEL_PYTHON: status.python or ""} if status.exists else None
    problem = runner_image_problem(image, python, labels) or status.problem
    return RunnerImageCheck(python_minor(python), status, tuple(pipelines), problem)


def needed_pythons(config: RepoConfig, pipelines: Iterable[Pipeline]) -> dict[str, list[str]]:
    """The Pythons (major.minor) the pipelines run on, each with its pipelines' names, sorted by
    version; the default Python is always there (a pipeline added later gets it)."""
    needed: dict[str, list[str]] = {python_minor(config.default_python or DEFAULT_PYTHON): []}
    for pipeline in sorted(pipelines, key=lambda p: p.name):
        needed.setdefault(python_minor(pipeline_python(config, pipeline)), []).append(pipeline.name)
    return dict(sorted(needed.items(), key=lambda item: _version_key(item[0])))


def build_image(tag: str, *, base: str | None = None, bootstrap: bool = False,
                python_version: str = DEFAULT_PYTHON, uv_binary: Path | None = None,
                suite: str | None = None, mirror: str | None = DEFAULT_MIRROR,
                apt_dir: Path = DEFAULT_APT_DIR, deb_cache_dir: Path | None = None,
                fresh_base: bool = False,
                log: Log = logger.info, client: docker.DockerClient | None = None) -> str:
    """Build the runner image `tag` from `base` or by debootstrap; returns the image id.

    Exactly one of `base` and `bootstrap` is given. With `bootstrap`, the Debian suite is the one
    shipping `python_version` (`suite_for_python`; an unknown version is refused before any
    work) unless `suite` is given; the imported Debian base `fastflow-base:<suite>` is reused when present (unless `fresh_base`), so a rebuild for a new
    uv takes seconds; debootstrap fetches from `mirror`, by default the host's own Debian mirror
    (read from `apt_dir`). `log` receives progress lines.
    """
    if bool(base) == bool(bootstrap):
        raise ExecutorError("give exactly one of --base IMAGE and --bootstrap to `fastflow image build`")
    if bootstrap and suite is None:
        suite = suite_for_python(python_version)
    client = connect(client)
    uv_binary = uv_binary or find_uv_binary()
    version = uv_version(uv_binary)
    if bootstrap:
        base = bootstrap_base(suite, python_version, mirror=mirror, apt_dir=apt_dir,
                              deb_cache_dir=deb_cache_dir, fresh=fresh_base, log=log,
                              client=client)
    with tempfile.TemporaryDirectory(prefix="fastflow-image-") as context:
        shutil.copy2(uv_binary, Path(context) / "uv")
        (Path(context) / "Dockerfile").write_text(render_dockerfile(base, python_version, version))
        image_id = _docker_build(client, context, tag, log)
    log(f"built {tag} ({image_id[:19]}): python {python_version}, uv {version}")
    return image_id


def bootstrap_base(suite: str, python_version: str, *, mirror: str | None = DEFAULT_MIRROR,
                   apt_dir: Path = DEFAULT_APT_DIR, deb_cache_dir: Path | None = None,
                   fresh: bool = False, log: Log = logger.info,
                   client: docker.DockerClient | None = None) -> str:
    """The tag of a Debian base image made by debootstrap and `docker import` (reused when present).

    The mirror is looked up only when debootstrap has to run: `mirror`, else the host's apt
    sources under `apt_dir` (`host_debian_mirror`), so reusing the base needs neither.
    """
    provided = SUITE_PYTHON.get(suite)
    if provided is None:
        raise ExecutorError(f"unknown Debian suite {suite!r} for --bootstrap; "
                            f"use one of: {', '.join(SUITE_PYTHON)}")
    if python_version != provided:
        raise ExecutorError(
            f"Debian {suite} provides Python {provided}, not {python_version}; build with "
            f"python_version {provided}, or use `--base python:{python_version}-slim`"
        )
    client = connect(client)
    tag = f"fastflow-base:{suite}"
    if not fresh and _image_exists(client, tag):
        log(f"reusing the Debian base image {tag}")
        return tag
    if not mirror:
        mirror = host_debian_mirror(apt_dir)
        log(f"Debian mirror {mirror} (from the host's apt sources; --mirror URL overrides)")
    if shutil.which("debootstrap") is None:
        raise ExecutorError("`debootstrap` is not installed; install it with "
                            "`sudo apt-get install debootstrap`, or build with `--base IMAGE`")
    if os.geteuid() != 0:
        raise ExecutorError("`fastflow image build --bootstrap` needs root (debootstrap creates "
                            "device files and chroots); run it with sudo, or use `--base IMAGE`")
    with tempfile.TemporaryDirectory(prefix="fastflow-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _debootstrap(suite, rootfs, mirror, deb_cache_dir, log)
        for sub in _TRIM:
            shutil.rmtree(rootfs / sub, ignore_errors=True)
            (rootfs / sub).mkdir(parents=True, exist_ok=True)
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."],
                       check=True)
        log(f"importing the root filesystem as {tag}")
        try:
            client.api.import_image_from_file(str(tarball), repository="fastflow-base", tag=suite)
        except DockerError as exc:
            raise ExecutorError(f"docker import of the Debian root filesystem failed: {exc}") from exc
    return tag


def _debootstrap(suite: str, rootfs: Path, mirror: str, deb_cache_dir: Path | None,
                 log: Log) -> None:
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(BOOTSTRAP_PACKAGES)}"]
    if deb_cache_dir:
        deb_cache_dir.mkdir(parents=True, exist_ok=True)
        cmd.append(f"--cache-dir={deb_cache_dir.resolve()}")
    cmd += [suite, str(rootfs), mirror]
    log("running " + " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    for line in proc.stdout or ():
        line = line.rstrip("\n")
        tail = (tail + [line])[-20:]
        if line.startswith(("I: Retrieving", "I: Extracting", "I: Installing", "I: Base", "E:", "W:")):
            log(line)
    if proc.wait() != 0:
        raise ExecutorError(
            f"debootstrap of Debian {suite} from {mirror} failed (exit {proc.returncode}); "
            f"check that the mirror is reachable (http_proxy is honoured). Last output:\n"
            + "\n".join(tail)
        )


def _docker_build(client: docker.DockerClient, context: str, tag: str, log: Log) -> str:
    try:
        for chunk in client.api.build(path=context, tag=tag, rm=True, forcerm=True, pull=False,
                                      decode=True, network_mode="none"):
            if "error" in chunk:
                raise ExecutorError(f"docker build of {tag} failed: {chunk['error'].strip()}")
            text = (chunk.get("stream") or "").rstrip("\n")
            if text.strip():
                log(text)
        return client.images.get(tag).id
    except DockerError as exc:
        raise ExecutorError(f"docker build of {tag} failed: {exc}") from exc


def _image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True
