"""The one generic runner image: build it (from a Python base image or by debootstrap) and check it.

The image holds Python, the host's exact uv binary (so a uv cache filled on either side is valid
on both), a non-root user `runner` (uid 10001) and the mount points runs use (`/work`, `/cache`,
`/run/fastflow`, `/opt/fastflow`). Its labels record the Python and uv versions; `check_image`
compares them with the host's uv. Nothing pipeline-specific is ever baked in: pipelines get
their packages from the shared uv cache at run time.

Two ways to build:
- `base=IMAGE` (e.g. `python:3.11-slim`): a generated Dockerfile on that image (needs a registry).
- `bootstrap=True`: `debootstrap` a minimal Debian (variant minbase, with python3) from Debian
  packages, `docker import` it as `fastflow-base:<suite>` (kept and reused), then the same
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
from typing import Callable

import docker
import docker.errors

try:  # the `uv` Python package ships the binary (a dependency of fastflow, but may be absent)
    import uv as uv_package
except ImportError:  # pragma: no cover - depends on the installation
    uv_package = None

from fastflow.errors import ExecutorError
from fastflow.executors.docker.engine import (
    LABEL_KIND,
    LABEL_PYTHON,
    LABEL_UV,
    DockerError,
    connect,
)

logger = logging.getLogger(__name__)

RUNNER_UID = 10001
IMAGE_KIND = "runner"
DEFAULT_SUITE = "bookworm"
# No built-in mirror: None means the host's apt sources decide (`host_debian_mirror`).
DEFAULT_MIRROR: str | None = None
# Where the host's apt sources live; a parameter so tests can point at a folder of their own.
DEFAULT_APT_DIR = Path("/etc/apt")
# Suites of the main Debian archive (codenames and aliases). An apt entry for one of these, with
# the component main, is the archive debootstrap needs; `bookworm-security`, `bookworm-updates`,
# `bookworm-backports`, another distribution's suites (`jammy`) and third-party repositories
# (`nodistro`, `cloud-sdk-bookworm`) are not.
DEBIAN_SUITES = frozenset({
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
})
# URL schemes debootstrap can fetch from (apt's `mirror+file:`, `cdrom:`, `tor+http:` it cannot).
_MIRROR_SCHEMES = ("http://", "https://", "file:/")
SUITE_PYTHON = {"bookworm": "3.11", "trixie": "3.13", "bullseye": "3.9"}
BOOTSTRAP_PACKAGES = ("python3", "ca-certificates")
# Trimmed from the debootstrapped tree before import: not needed to run Python.
_TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
         "usr/share/info", "usr/share/locale")

Log = Callable[[str], None]


@dataclass(frozen=True)
class ImageStatus:
    """What `check_image` found: whether the image exists and matches the host's uv."""

    tag: str
    exists: bool
    image_id: str | None = None
    python: str | None = None
    uv_version: str | None = None
    kind: str | None = None
    host_uv_version: str | None = None

    @property
    def matches(self) -> bool:
        return (self.exists and self.kind == IMAGE_KIND
                and self.uv_version is not None and self.uv_version == self.host_uv_version)

    @property
    def problem(self) -> str | None:
        """Why the image cannot be used as is, with the fix; None when it matches."""
        fix = "rebuild it with `fastflow image build --bootstrap` (or `--base IMAGE`)"
        if not self.exists:
            return f"the runner image {self.tag!r} does not exist; build it with " \
                   f"`fastflow image build --bootstrap` (or `--base IMAGE`)"
        if self.kind != IMAGE_KIND:
            return f"the image {self.tag!r} is not a Fast-Flow runner image " \
                   f"(label {LABEL_KIND}={self.kind!r}); {fix}"
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


@dataclass(frozen=True)
class AptEntry:
    """One source of an apt sources file: its types (`deb`, `deb-src`), URIs, suites, components."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]


def debian_mirror_in(text: str, *, deb822: bool) -> str | None:
    """The URL of the main Debian archive in the text of one apt sources file, or None.

    `deb822` says the format: a `*.sources` file (stanzas of `Types:`, `URIs:`, `Suites:`,
    `Components:`; `Enabled: no` is skipped) or a one-line `sources.list` / `*.list` file
    (`deb [options] URI SUITE COMPONENT...`). The first `deb` entry with a suite of
    `DEBIAN_SUITES`, the component main and a URL debootstrap can fetch from wins; its URL is
    returned without a trailing slash. Pure: the caller reads the files.
    """
    entries = _deb822_entries(text) if deb822 else _one_line_entries(text)
    for entry in entries:
        if ("deb" in entry.types and "main" in entry.components
                and DEBIAN_SUITES.intersection(entry.suites)):
            for uri in entry.uris:
                if uri.startswith(_MIRROR_SCHEMES):
                    return uri.rstrip("/")
    return None


def host_debian_mirror(apt_dir: Path = DEFAULT_APT_DIR) -> str:
    """The main Debian archive the host's apt uses, read from `apt_dir` (`/etc/apt`).

    Files are read in apt's order: `sources.list`, then `sources.list.d/*.list` and `*.sources`
    by name; the first file naming the archive (`debian_mirror_in`) wins. None found (not a
    Debian host, or only security and third-party sources) is an `ExecutorError` naming
    `--mirror`.
    """
    for path, deb822 in _apt_source_files(apt_dir):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:  # an unreadable file is not a reason to stop looking
            logger.debug("skipping apt sources file %s: %s", path, exc)
            continue
        mirror = debian_mirror_in(text, deb822=deb822)
        if mirror:
            logger.debug("Debian mirror %s (from %s)", mirror, path)
            return mirror
    raise ExecutorError(
        f"found no Debian mirror for --bootstrap in the host's apt sources ({apt_dir}/sources.list, "
        f"{apt_dir}/sources.list.d/*.list and *.sources have no `deb` entry for a Debian suite "
        f"such as {DEFAULT_SUITE} with the component main); give one with "
        f"`fastflow image build --bootstrap --mirror URL`"
    )


def _apt_source_files(apt_dir: Path) -> list[tuple[Path, bool]]:
    """The sources files under `apt_dir` in the order apt reads them, each with its format."""
    files = [(apt_dir / "sources.list", False)]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += [(path, path.suffix == ".sources") for path in sorted(parts.iterdir())
                  if path.suffix in (".list", ".sources")]
    return [(path, deb822) for path, deb822 in files if path.is_file()]


def _one_line_entries(text: str) -> list[AptEntry]:
    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[1].startswith("["):  # options: `[arch=amd64 signed-by=...]`
            while words[1:] and not words[1].endswith("]"):
                del words[1]
            del words[1:2]
        if len(words) >= 3:
            entries.append(AptEntry((words[0],), (words[1],), (words[2],), tuple(words[3:])))
    return entries


def _deb822_entries(text: str) -> list[AptEntry]:
    stanzas: list[dict[str, str]] = [{}]
    key = None
    for line in text.splitlines():
        if not line.strip():  # a blank line ends a stanza
            if stanzas[-1]:
                stanzas.append({})
            key = None
        elif line.startswith("#"):
            continue
        elif line[0] in " \t":  # a continuation line of the field before
            if key:
                stanzas[-1][key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            stanzas[-1][key] = value.strip()
    return [AptEntry(*(tuple(fields.get(name, "").split())
                       for name in ("types", "uris", "suites", "components")))
            for fields in stanzas
            if fields and fields.get("enabled", "yes").lower() not in ("no", "false", "off")]


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


def check_image(tag: str, host_uv_version: str,
                client: docker.DockerClient | None = None) -> ImageStatus:
    """Whether the image `tag` exists, its labels, and whether its uv is the host's."""
    client = connect(client)
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return ImageStatus(tag=tag, exists=False, host_uv_version=host_uv_version)
    labels = image.labels or {}
    return ImageStatus(
        tag=tag, exists=True, image_id=image.id, python=labels.get(LABEL_PYTHON),
        uv_version=labels.get(LABEL_UV), kind=labels.get(LABEL_KIND),
        host_uv_version=host_uv_version,
    )


def build_image(tag: str, *, base: str | None = None, bootstrap: bool = False,
                python_version: str = "3.11", uv_binary: Path | None = None,
                suite: str = DEFAULT_SUITE, mirror: str | None = DEFAULT_MIRROR,
                apt_dir: Path = DEFAULT_APT_DIR, deb_cache_dir: Path | None = None,
                fresh_base: bool = False,
                log: Log = logger.info, client: docker.DockerClient | None = None) -> str:
    """Build the runner image `tag` from `base` or by debootstrap; returns the image id.

    Exactly one of `base` and `bootstrap` is given. With `bootstrap`, the imported Debian base
    `fastflow-base:<suite>` is reused when present (unless `fresh_base`), so a rebuild for a new
    uv takes seconds; debootstrap fetches from `mirror`, by default the host's own Debian mirror
    (read from `apt_dir`). `log` receives progress lines.
    """
    if bool(base) == bool(bootstrap):
        raise ExecutorError("give exactly one of --base IMAGE and --bootstrap to `fastflow image build`")
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
