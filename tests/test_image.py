"""The runner image: Dockerfile generation, build (bootstrap path), check, and the CLI commands.

The `--base IMAGE` path needs a registry, which this machine (and CI) cannot reach: it is
tested through the Dockerfile it generates, which the bootstrap path builds for real on top of
the debootstrapped base.
"""
from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner
from helpers import require_docker

from fastflow.cli.common import FastflowGroup
from fastflow.cli.image import cancel, image, ps
from fastflow.defaults import DEFAULT_IMAGE
from fastflow.errors import ExecutorError
from fastflow.executors.docker import (
    ImageStatus,
    bootstrap_base,
    build_image,
    check_image,
    connect,
    find_uv_binary,
    render_dockerfile,
    uv_version,
)

TEST_TAG = "fastflow-runner:pytest"


def cli() -> FastflowGroup:
    return FastflowGroup(commands={"image": image, "ps": ps, "cancel": cancel})


def test_dockerfile_on_a_python_base_image():
    text = render_dockerfile("python:3.11-slim", "3.11", "0.13.9")
    lines = text.splitlines()
    assert lines[0] == "FROM python:3.11-slim"
    assert "COPY uv /usr/local/bin/uv" in lines
    assert "    useradd --uid 10001 --user-group --no-create-home --home-dir /tmp \\" in lines
    assert "USER 10001" in lines
    assert lines[-1] == ('LABEL org.fastflow.kind="runner" org.fastflow.python="3.11" '
                         'org.fastflow.uv="0.13.9"')


def test_host_uv_binary_and_version():
    path = find_uv_binary()
    assert path.read_bytes()[:4] == b"\x7fELF"
    out = subprocess.run(["uv", "--version"], capture_output=True, text=True).stdout
    assert out.startswith(f"uv {uv_version(path)}")


def test_status_problems():
    missing = ImageStatus("x:1", exists=False, host_uv_version="0.13.9")
    assert missing.problem == ("the runner image 'x:1' does not exist; build it with "
                               "`fastflow image build --bootstrap` (or `--base IMAGE`)")
    old = ImageStatus("x:1", True, "sha256:1", "3.11", "0.12.0", "runner", "0.13.9")
    assert not old.matches
    assert old.problem == ("the image 'x:1' has uv 0.12.0, the host has uv 0.13.9; rebuild it "
                           "with `fastflow image build --bootstrap` (or `--base IMAGE`)")
    foreign = ImageStatus("x:1", True, "sha256:1", None, None, None, "0.13.9")
    assert foreign.problem == ("the image 'x:1' is not a Fast-Flow runner image (label "
                               "org.fastflow.kind=None); rebuild it with `fastflow image build "
                               "--bootstrap` (or `--base IMAGE`)")
    good = ImageStatus("x:1", True, "sha256:1", "3.11", "0.13.9", "runner", "0.13.9")
    assert good.matches and good.problem is None


def test_bootstrap_refuses_a_python_debian_does_not_have():
    with pytest.raises(ExecutorError) as err:
        bootstrap_base("bookworm", "3.12")
    assert str(err.value) == ("Debian bookworm provides Python 3.11, not 3.12; build with "
                              "python_version 3.11, or use `--base python:3.12-slim`")
    with pytest.raises(ExecutorError) as err:
        bootstrap_base("sid", "3.11")
    assert str(err.value) == ("unknown Debian suite 'sid' for --bootstrap; use one of: "
                              "bookworm, trixie, bullseye")


def test_mirror_option_defaults_to_the_host_apt_sources():
    result = CliRunner().invoke(cli(), ["image", "build", "--help"])
    assert result.exit_code == 0
    assert "--mirror URL" in result.output
    assert "host's apt sources" in result.output
    assert "http" not in result.output  # no mirror host is built in


def test_build_needs_exactly_one_way():
    with pytest.raises(ExecutorError) as err:
        build_image(TEST_TAG)
    assert str(err.value) == "give exactly one of --base IMAGE and --bootstrap to `fastflow image build`"
    result = CliRunner().invoke(cli(), ["image", "build", "--base", "python:3.11-slim", "--bootstrap"])
    assert result.exit_code == 2
    assert "Error: give exactly one of --base IMAGE and --bootstrap" in result.output


@pytest.mark.docker
@pytest.mark.slow
class TestWithEngine:
    @pytest.fixture(autouse=True)
    def _engine(self):
        require_docker()

    def test_bootstrap_build_labels_user_and_the_same_uv(self):
        # Reuses the debootstrapped base `fastflow-base:bookworm` when present (built otherwise).
        lines: list[str] = []
        image_id = build_image(TEST_TAG, bootstrap=True, log=lines.append)
        assert lines[-1].startswith(f"built {TEST_TAG} (")
        status = check_image(TEST_TAG, uv_version(find_uv_binary()))
        assert status.matches and status.image_id == image_id
        assert (status.python, status.kind) == ("3.11", "runner")
        out = connect().containers.run(
            TEST_TAG, ["sh", "-c", "id -u; uv --version; python3 --version"], remove=True,
            network_mode="none").decode()
        uid, uv_line, python_line = out.splitlines()
        assert uid == "10001"
        assert uv_line.startswith(f"uv {uv_version(find_uv_binary())} ")
        assert python_line.startswith("Python 3.11.")

    def test_bootstrap_without_a_mirror_stops_before_debootstrap(self, tmp_path):
        # A fresh base needs debootstrap, hence a mirror: none in the apt sources is an error
        # naming --mirror, raised before debootstrap, root or the network are needed.
        with pytest.raises(ExecutorError) as err:
            bootstrap_base("bookworm", "3.11", fresh=True, apt_dir=tmp_path)
        assert str(err.value).startswith("found no Debian mirror for --bootstrap in the host's "
                                         f"apt sources ({tmp_path}/sources.list, ")
        assert str(err.value).endswith("give one with `fastflow image build --bootstrap --mirror URL`")

    def test_check_command(self, tmp_path):
        if not check_image(TEST_TAG, uv_version(find_uv_binary())).matches:
            build_image(TEST_TAG, bootstrap=True)
        result = CliRunner().invoke(cli(), ["image", "check", "--tag", TEST_TAG, "--repo", str(tmp_path)])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"{TEST_TAG}: ok (python 3.11, uv ")

    def test_check_command_for_a_missing_image(self, tmp_path):
        result = CliRunner().invoke(cli(), ["image", "check", "--tag", "fastflow-nope:1",
                                            "--repo", str(tmp_path)])
        assert result.exit_code == 1
        assert result.output == ("Error: the runner image 'fastflow-nope:1' does not exist; build "
                                 "it with `fastflow image build --bootstrap` (or `--base IMAGE`)\n")

    def test_default_tag_comes_from_the_config(self, tmp_path):
        (tmp_path / ".fastflow").mkdir()
        (tmp_path / ".fastflow" / "config.yaml").write_text("image: fastflow-nope:2\n")
        result = CliRunner().invoke(cli(), ["image", "check", "--repo", str(tmp_path)])
        assert result.exit_code == 1
        assert "'fastflow-nope:2' does not exist" in result.output

    def test_ps_and_cancel_commands(self):
        result = CliRunner().invoke(cli(), ["ps", "--json"])
        assert result.exit_code == 0
        assert isinstance(json.loads(result.output), list)
        result = CliRunner().invoke(cli(), ["cancel", "no-such-run"])
        assert result.exit_code == 1
        assert result.output == ("Error: no running run has the id 'no-such-run'; "
                                 "`fastflow ps` lists the running runs\n")


def test_default_image_name():
    assert DEFAULT_IMAGE == "fastflow-runner:py3.11"
