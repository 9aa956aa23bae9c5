"""The runner images (one per Python): Dockerfile generation, build (bootstrap path), check,
which image a Python needs, `fastflow validate`'s image check, and the CLI commands.

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
from fastflow.cli.pipelines import validate
from fastflow.config.repo import parse_repo_config
from fastflow.defaults import DEFAULT_IMAGE
from fastflow.deploy.discovery import discover
from fastflow.errors import ConfigError, ExecutorError
from fastflow.executors.docker import (
    ImageStatus,
    bootstrap_base,
    build_image,
    check_image,
    connect,
    find_uv_binary,
    missing_runner_images,
    render_dockerfile,
    runner_image,
    runner_image_problem,
    suite_for_python,
    uv_version,
)
from fastflow.model import Severity

TEST_TAG = "fastflow-runner:pytest"


def cli() -> FastflowGroup:
    return FastflowGroup(commands={"image": image, "ps": ps, "cancel": cancel,
                                   "validate": validate})


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
                           "with `fastflow image build --bootstrap --python 3.11` (or `--base "
                           "IMAGE`)")
    other = ImageStatus("x:1", True, "sha256:1", "3.11", "0.13.9", "runner", "0.13.9", "3.13")
    assert not other.matches
    assert other.problem == ("the image 'x:1' has Python 3.11, not 3.13; rebuild it with "
                             "`fastflow image build --bootstrap --python 3.13` (or `--base IMAGE`)")
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
        assert result.output == (
            "Error: the runner image 'fastflow-nope:2' of Python 3.11 does not exist; build it "
            "with `fastflow image build --bootstrap --python 3.11` (or `--base IMAGE`) "
            "(default_python)\n")

    def test_bootstrap_of_python_313_is_debian_trixie_and_uv_finds_it_offline(
            self, runner_image_py313):
        status = check_image(runner_image_py313, uv_version(find_uv_binary()), python="3.13")
        assert status.matches and (status.tag, status.python) == ("fastflow-runner:py3.13", "3.13")
        # No download is possible in a run: no network, UV_OFFLINE=1. uv takes the system Python.
        out = connect().containers.run(
            runner_image_py313, ["uv", "run", "--no-project", "--python", "3.13", "python", "-c",
                                 "import sys; print(sys.executable, sys.version_info[:2])"],
            environment={"UV_OFFLINE": "1"}, remove=True, network_mode="none").decode()
        assert out.strip() == "/usr/bin/python3.13 (3, 13)"
        base = connect().images.get("fastflow-base:trixie")
        assert base.id  # the imported Debian base is kept for rebuilds

    def test_build_command_tags_the_image_of_its_python_from_the_suite_shipping_it(
            self, tmp_path, runner_image_py313):
        # The trixie base is reused and the build is cached: the same image comes out.
        before = connect().images.get(runner_image_py313).id
        result = CliRunner().invoke(cli(), ["image", "build", "--bootstrap", "--python", "3.13",
                                            "--repo", str(tmp_path)])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert "reusing the Debian base image fastflow-base:trixie" in lines
        assert lines[-2].startswith("built fastflow-runner:py3.13 (")
        assert lines[-2].endswith(f"): python 3.13, uv {uv_version(find_uv_binary())}")
        assert lines[-1] == before

    def test_check_command_checks_the_image_of_every_python_the_pipelines_use(
            self, make_repo, runner_image, runner_image_py313):
        repo = make_repo({"pipelines/old/main.py": "print(1)\n",
                          "pipelines/new/main.py": "print(2)\n",
                          "pipelines/new/pipeline.json": '{"python_version": "3.13"}'})
        result = CliRunner().invoke(cli(), ["image", "check", "--repo", str(repo)])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[0].startswith("fastflow-runner:py3.11: ok (python 3.11, uv ")
        assert lines[0].endswith(" (pipelines: old)")
        assert lines[1].startswith("fastflow-runner:py3.13: ok (python 3.13, uv ")
        assert lines[1].endswith(" (pipelines: new)")
        (repo / "pipelines" / "gap").mkdir()
        (repo / "pipelines" / "gap" / "main.py").write_text("print(3)\n")
        (repo / "pipelines" / "gap" / "pipeline.json").write_text('{"python_version": "3.12"}')
        result = CliRunner().invoke(cli(), ["image", "check", "--repo", str(repo)])
        assert result.exit_code == 1
        assert result.output.splitlines()[-1] == (
            "Error: the runner image 'fastflow-runner:py3.12' of Python 3.12 does not exist; build "
            "it with `fastflow image build --base python:3.12-slim --python 3.12` (no Debian suite "
            "ships Python 3.12 for --bootstrap) (pipelines: gap)")

    def test_validate_names_a_python_without_an_image_and_the_fix(
            self, make_repo, runner_image, runner_image_py313):
        repo = make_repo({"pipelines/old/main.py": "print(1)\n",
                          "pipelines/new/main.py": "print(2)\n",
                          "pipelines/new/pipeline.json": '{"python_version": "3.13"}'})
        result = CliRunner().invoke(cli(), ["validate", "--repo", str(repo)])
        assert (result.exit_code, result.output) == (0, "ok: the repository is valid\n")
        (repo / "pipelines" / "gap").mkdir()
        (repo / "pipelines" / "gap" / "main.py").write_text("print(3)\n")
        (repo / "pipelines" / "gap" / "pipeline.json").write_text('{"python_version": "3.12"}')
        result = CliRunner().invoke(cli(), ["validate", "--repo", str(repo)])
        assert result.exit_code == 1
        assert result.output == (
            "error: pipelines/gap/pipeline.json: python_version: \"3.12\": the runner image "
            "'fastflow-runner:py3.12' of Python 3.12 does not exist; build it with `fastflow image "
            "build --base python:3.12-slim --python 3.12` (no Debian suite ships Python 3.12 for "
            "--bootstrap)\n")
        result = CliRunner().invoke(cli(), ["validate", "--repo", str(repo), "--json"])
        problem = json.loads(result.output)["problems"][0]
        assert (problem["file"], problem["field"], problem["pipeline"]) == (
            "pipelines/gap/pipeline.json", "python_version", "gap")

    def test_validate_refuses_another_python_than_a_single_images(self, make_repo, runner_image):
        repo = make_repo({".fastflow/config.yaml": f"image: {runner_image}\n",
                          "pipelines/old/main.py": "print(1)\n",
                          "pipelines/new/main.py": "print(2)\n",
                          "pipelines/new/pipeline.json": '{"python_version": "3.13"}'})
        result = CliRunner().invoke(cli(), ["validate", "--repo", str(repo)])
        assert result.exit_code == 1
        assert result.output == (
            "error: pipelines/new/pipeline.json: python_version: \"3.13\": the image "
            "'fastflow-runner:py3.11' (`image` of .fastflow/config.yaml, one image for every "
            "Python) has Python 3.11 (label org.fastflow.python), not 3.13; write {python} in "
            "`image` (e.g. fastflow-runner:py{python}) for one image per Python and build it with "
            "`fastflow image build --bootstrap --python 3.13` (or `--base IMAGE`), or set "
            "python_version (or default_python) to \"3.11\"\n")

    def test_ps_and_cancel_commands(self):
        result = CliRunner().invoke(cli(), ["ps", "--json"])
        assert result.exit_code == 0
        assert isinstance(json.loads(result.output), list)
        result = CliRunner().invoke(cli(), ["cancel", "no-such-run"])
        assert result.exit_code == 1
        assert result.output == ("Error: no running run has the id 'no-such-run'; "
                                 "`fastflow ps` lists the running runs\n")


def test_default_image_name_is_one_image_per_python():
    assert DEFAULT_IMAGE == "fastflow-runner:py{python}"
    assert runner_image(DEFAULT_IMAGE, "3.13") == "fastflow-runner:py3.13"
    assert runner_image(DEFAULT_IMAGE, "3.11.4") == "fastflow-runner:py3.11"  # per minor version
    assert runner_image(DEFAULT_IMAGE, None) == "fastflow-runner:py3.11"  # the default Python
    assert runner_image("my-runner:1", "3.13") == "my-runner:1"  # one image for every Python


def test_the_image_key_knows_only_the_python_placeholder():
    config, _ = parse_repo_config("image: registry.example/runner:py{python}-slim\n")
    assert config.image == "registry.example/runner:py{python}-slim"
    with pytest.raises(ConfigError) as err:
        parse_repo_config("image: runner:{version}\n")
    assert str(err.value) == (
        '.fastflow/config.yaml: image: "runner:{version}" has a placeholder other than {python}; '
        "write {python} (replaced by a run's Python version, e.g. fastflow-runner:py{python}) "
        "or no braces (one image for every Python)")


def test_each_python_has_its_debian_suite():
    assert suite_for_python("3.11") == "bookworm"
    assert suite_for_python("3.13.5") == "trixie"
    with pytest.raises(ExecutorError) as err:
        suite_for_python("3.12")
    assert str(err.value) == (
        "no Debian suite ships Python 3.12 for --bootstrap (they provide 3.9 (bullseye), "
        "3.11 (bookworm), 3.13 (trixie)); for Python 3.12 finish a registry image instead: "
        "`fastflow image build --base python:3.12-slim --python 3.12`")


def test_image_build_refuses_a_python_no_debian_suite_ships(tmp_path):
    # Refused before anything is fetched or built (no engine, root or mirror is asked).
    with pytest.raises(ExecutorError) as err:
        build_image("fastflow-runner:py3.12", bootstrap=True, python_version="3.12")
    assert str(err.value).startswith("no Debian suite ships Python 3.12 for --bootstrap ")
    result = CliRunner().invoke(cli(), ["image", "build", "--bootstrap", "--python", "3.12",
                                        "--repo", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == (
        "Error: no Debian suite ships Python 3.12 for --bootstrap (they provide 3.9 (bullseye), "
        "3.11 (bookworm), 3.13 (trixie)); for Python 3.12 finish a registry image instead: "
        "`fastflow image build --base python:3.12-slim --python 3.12`\n")


def test_the_judge_of_a_pythons_image():
    template, fixed = "fastflow-runner:py{python}", "my-runner:1"
    assert runner_image_problem(template, "3.13", {"org.fastflow.python": "3.13"}) is None
    assert runner_image_problem(template, "3.13.5", {"org.fastflow.python": "3.13"}) is None
    assert runner_image_problem(fixed, "3.13", {}) is None  # no label: uv inside decides
    assert runner_image_problem(template, "3.13", None) == (
        "the runner image 'fastflow-runner:py3.13' of Python 3.13 does not exist; build it with "
        "`fastflow image build --bootstrap --python 3.13` (or `--base IMAGE`)")
    assert runner_image_problem(template, "3.12", None) == (
        "the runner image 'fastflow-runner:py3.12' of Python 3.12 does not exist; build it with "
        "`fastflow image build --base python:3.12-slim --python 3.12` (no Debian suite ships "
        "Python 3.12 for --bootstrap)")
    assert runner_image_problem(template, "3.13", {"org.fastflow.python": "3.11"}) == (
        "the runner image 'fastflow-runner:py3.13' has Python 3.11 (label org.fastflow.python), "
        "not 3.13; rebuild it with `fastflow image build --bootstrap --python 3.13` (or "
        "`--base IMAGE`)")
    # One image for every Python: another Python is refused, never run on the image's.
    assert runner_image_problem(fixed, "3.13", {"org.fastflow.python": "3.11"}) == (
        "the image 'my-runner:1' (`image` of .fastflow/config.yaml, one image for every Python) "
        "has Python 3.11 (label org.fastflow.python), not 3.13; write {python} in `image` (e.g. "
        "fastflow-runner:py{python}) for one image per Python and build it with `fastflow image "
        "build --bootstrap --python 3.13` (or `--base IMAGE`), or set python_version (or "
        "default_python) to \"3.11\"")


def test_validate_warns_once_when_no_engine_answers(make_repo):
    repo = make_repo({"pipelines/a/main.py": "print(1)\n",
                      "pipelines/b/main.py": "print(2)\n",
                      "pipelines/b/pipeline.json": '{"python_version": "3.12"}'})
    config, _ = parse_repo_config("")
    pipelines = discover(repo, config).pipelines.values()
    found = missing_runner_images(config, pipelines, repo, base_url="unix:///nonexistent.sock")
    assert len(found) == 1 and found[0].severity is Severity.WARNING
    assert str(found[0]).startswith(".fastflow/config.yaml: image: the runner images could not "
                                    "be checked: no Docker engine answers (")
