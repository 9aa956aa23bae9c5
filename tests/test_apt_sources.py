"""The Debian mirror for `fastflow image build --bootstrap`, read from the host's apt sources.

`debian_mirror_in` is pure (one file's text in, the main archive's URL out); `host_debian_mirror`
reads the files of an apt folder, here one in tmp_path. The mirror host names below are made up
(`.example`, RFC 2606): no real mirror is named in the repository.
"""
from __future__ import annotations

import pytest
from helpers import write_files

from fastflow.errors import ExecutorError
from fastflow.executors.docker.aptsources import debian_mirror_in, host_debian_mirror

# A Debian 12 container's /etc/apt/sources.list.d/debian.sources: comments inside stanzas.
DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.mirror.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.mirror.example/archive/debian-security/20250520T000000Z
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

# A Debian 11 /etc/apt/sources.list: deb-src, options, the old and new security suites.
BULLSEYE_LIST = """\
# See sources.list(5)
deb-src http://src.example/debian bullseye main
deb http://security.example/debian-security bullseye-security main contrib
deb http://security.example/debian-security bullseye/updates main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian/ bullseye main contrib non-free
deb http://mirror.example/debian bullseye-updates main
"""

UBUNTU_LIST = """\
deb http://ubuntu.example/ubuntu/ jammy main restricted
deb http://ubuntu.example/ubuntu/ jammy-security main restricted
"""

THIRD_PARTY_SOURCES = """\
Types: deb
URIs: https://nodejs.example/node_20.x
Suites: nodistro
Components: main
Architectures: amd64
"""


@pytest.mark.parametrize("text, deb822, mirror", [
    (DEBIAN_SOURCES, True, "http://mirror.example/debian"),
    (BULLSEYE_LIST, False, "http://mirror.example/debian"),
    (UBUNTU_LIST, False, None),
    (THIRD_PARTY_SOURCES, True, None),
    ("deb https://cloud.example/apt cloud-sdk-bookworm main\n", False, None),
    ("# deb http://mirror.example/debian bookworm main\n", False, None),
    ("deb-src http://mirror.example/debian bookworm main\n", False, None),
    ("deb http://mirror.example/debian bookworm contrib\n", False, None),
    ("deb [ arch=amd64 ] https://local.example/debian/ trixie main # comment\n", False,
     "https://local.example/debian"),
    ("deb file:/srv/debian stable main\n", False, "file:/srv/debian"),
    ("", True, None),
    ("", False, None),
], ids=["debian12-deb822", "bullseye-one-line", "ubuntu", "third-party", "suffix-is-not-a-suite",
        "commented", "deb-src-only", "no-main", "options-with-spaces", "file-url", "empty-deb822",
        "empty-one-line"])
def test_debian_mirror_in(text, deb822, mirror):
    assert debian_mirror_in(text, deb822=deb822) == mirror


def test_security_first_then_main_archive_and_disabled_stanzas():
    text = """\
Types: deb
URIs: http://security.example/debian-security
Suites: trixie-security
Components: main

Types: deb
URIs: http://old.example/debian
Suites: trixie
Components: main
Enabled: no

Types: deb deb-src
URIs: mirror+file:/etc/apt/mirrors/debian.list
  https://mirror.example/debian/
Suites: trixie
  trixie-updates
Components: main non-free-firmware
"""
    # mirror+file: is apt's own list of mirrors: debootstrap cannot read it, the next URI serves.
    assert debian_mirror_in(text, deb822=True) == "https://mirror.example/debian"


def test_host_mirror_in_apt_order(tmp_path):
    apt = write_files(tmp_path, {
        "sources.list": "# moved to sources.list.d\n",
        "sources.list.d/a-nodesource.sources": THIRD_PARTY_SOURCES,
        "sources.list.d/b-cloud.list": "deb https://cloud.example/apt cloud-sdk-bookworm main\n",
        "sources.list.d/c-debian.sources": DEBIAN_SOURCES,
        "sources.list.d/d-other.list": "deb http://other.example/debian bookworm main\n",
        "sources.list.d/0-old.list.save": "deb http://stale.example/debian bookworm main\n",
    })
    assert host_debian_mirror(apt) == "http://mirror.example/debian"
    (apt / "sources.list").write_text(BULLSEYE_LIST.replace("mirror.example", "first.example"))
    assert host_debian_mirror(apt) == "http://first.example/debian"


def test_no_mirror_in_the_host_sources_names_the_option(tmp_path):
    write_files(tmp_path, {"sources.list.d/ubuntu.list": UBUNTU_LIST,
                     "sources.list.d/debian.sources.disabled": DEBIAN_SOURCES})
    with pytest.raises(ExecutorError) as err:
        host_debian_mirror(tmp_path)
    assert str(err.value) == (
        f"found no Debian mirror for --bootstrap in the host's apt sources ({tmp_path}/sources.list, "
        f"{tmp_path}/sources.list.d/*.list and *.sources have no `deb` entry for a Debian suite "
        "such as bookworm with the component main); give one with "
        "`fastflow image build --bootstrap --mirror URL`"
    )
    with pytest.raises(ExecutorError):
        host_debian_mirror(tmp_path / "absent")
