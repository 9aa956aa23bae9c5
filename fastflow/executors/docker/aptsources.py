"""The host's apt sources: which Debian mirror `fastflow image build --bootstrap` fetches from.

No host name of a mirror is written in Fast-Flow: debootstrap fetches from the main Debian
archive the host's apt already uses (`host_debian_mirror`), so a machine behind its own mirror or
proxy never reaches past it. `debian_mirror_in` is the pure part (one file's text in, the URL or
None out). Reference: docs/docker.md, "The Debian mirror of `--bootstrap`".
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fastflow.errors import ExecutorError

logger = logging.getLogger(__name__)

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
        f"such as bookworm with the component main); give one with "
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
