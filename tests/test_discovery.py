"""discovery: real folders in tmp_path; every message exact; one bad pipeline never hides others."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import write_files

from fastflow.config import default_repo_config, parse_repo_config
from fastflow.deploy.discovery import discover, find_pipeline, resolved_view
from fastflow.errors import PipelineNotFound
from fastflow.model import PipelineType, Severity

MAIN = "print('hi')\n"


def scan(root: Path, config_text: str | None = None):
    config = default_repo_config() if config_text is None else parse_repo_config(config_text)[0]
    return discover(root, config)


def messages(discovery, name: str) -> list[str]:
    return [str(p) for p in discovery.invalid[name].problems]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    return root


def test_folders_with_an_entry_point_are_pipelines_and_the_rest_is_skipped(repo: Path):
    write_files(repo, {
        "pipelines/a/main.py": MAIN,
        "pipelines/b/main.py": MAIN,
        "pipelines/b/pipeline.json": '{"timeout": 5}',
        "pipelines/b/requirements.txt": "requests\n",
        "pipelines/docs/README.md": "not a pipeline",
        "pipelines/_shared/main.py": MAIN,
        "pipelines/.hidden/main.py": MAIN,
        "pipelines/notes.txt": "a file, not a folder",
    })
    found = scan(repo)
    assert sorted(found.pipelines) == ["a", "b"] and found.invalid == {} and found.problems == ()
    a, b = found.pipelines["a"], found.pipelines["b"]
    assert a.path == repo.resolve() / "pipelines/a" and a.entry == "main.py" and a.metadata_file is None
    assert a.requirements is None and b.requirements == repo.resolve() / "pipelines/b/requirements.txt"
    assert b.timeout == 5.0 and b.sources["timeout"] == "pipelines/b/pipeline.json"


def test_metadata_without_entry_point_is_invalid(repo: Path):
    write_files(repo, {"pipelines/etl/pipeline.json": "{}", "pipelines/ok/main.py": MAIN})
    found = scan(repo)
    assert messages(found, "etl") == [
        'pipelines/etl: has pipeline.json but no main.py; add main.py (or main.ipynb with "type": "notebook")'
    ]
    assert list(found.pipelines) == ["ok"]


def test_notebook_type_without_notebook_is_invalid(repo: Path):
    write_files(repo, {"pipelines/nb/pipeline.json": '{"type": "notebook"}', "pipelines/nb/main.py": MAIN})
    assert messages(scan(repo), "nb") == [
        'pipelines/nb/pipeline.json: type: is "notebook" but the folder has no main.ipynb; add '
        'main.ipynb or set "type": "script"'
    ]


def test_notebook_without_notebook_type_is_invalid(repo: Path):
    write_files(repo, {"pipelines/nb/main.ipynb": "{}"})
    assert messages(scan(repo), "nb") == [
        'pipelines/nb: has main.ipynb but no main.py; add "type": "notebook" to pipeline.json to run the notebook'
    ]


def test_notebook_pipeline(repo: Path):
    write_files(repo, {"pipelines/nb/main.ipynb": "{}", "pipelines/nb/pipeline.json": '{"type": "notebook"}'})
    nb = scan(repo).pipelines["nb"]
    assert (nb.entry, nb.type) == ("main.ipynb", PipelineType.NOTEBOOK)


@pytest.mark.parametrize("name", ["bad name", "-dash", "ünï", "x" * 64])
def test_illegal_names_are_invalid(repo: Path, name: str):
    write_files(repo, {f"pipelines/{name}/main.py": MAIN})
    assert messages(scan(repo), name) == [
        f'pipelines/{name}: "{name}" is not a valid pipeline name; rename the folder using 1-63 '
        "letters, digits, '_', '.' or '-', starting with a letter or digit"
    ]


def test_a_folder_name_that_is_not_utf8_is_invalid_and_shown_escaped(repo: Path):
    """Issue 12: the name is never a lone surrogate (it stopped every journal flush)."""
    write_files(repo, {"pipelines/good/main.py": MAIN})
    folder = repo / os.fsdecode(b"pipelines/bad\xff")
    write_files(folder, {"main.py": MAIN, "pipeline.json": "{"})
    found = scan(repo)
    assert list(found.invalid) == ["bad\\xff"] and list(found.pipelines) == ["good"]
    assert messages(found, "bad\\xff") == [
        'pipelines/bad\\xff: "bad\\xff" is not a valid pipeline name (it is not UTF-8); rename '
        "the folder using 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"
    ]
    assert found.invalid["bad\\xff"].path == folder.resolve()


def test_custom_metadata_name_and_the_ignored_duplicate(repo: Path):
    write_files(repo, {
        "pipelines/one/main.py": MAIN,
        "pipelines/one/one.json": '{"description": "from one.json"}',
        "pipelines/two/main.py": MAIN,
        "pipelines/two/pipeline.json": '{"description": "from pipeline.json"}',
        "pipelines/two/two.json": '{"description": "ignored"}',
    })
    found = scan(repo)
    one, two = found.pipelines["one"], found.pipelines["two"]
    assert one.description == "from one.json" and one.sources["description"] == "pipelines/one/one.json"
    assert two.description == "from pipeline.json"
    assert [str(w) for w in two.warnings] == [
        "pipelines/two/two.json: ignored because pipeline.json exists; merge it into pipeline.json or delete it"
    ]
    assert found.warnings == two.warnings


def test_symlinks_leaving_the_repository_are_invalid(repo: Path, tmp_path: Path):
    outside = write_files(tmp_path / "outside", {"main.py": MAIN, "requirements.txt": "x\n", "p/main.py": MAIN})
    write_files(repo, {"pipelines/reqs/main.py": MAIN, "pipelines/inside/real.py": MAIN})
    (repo / "pipelines/main_link").mkdir()
    (repo / "pipelines/main_link/main.py").symlink_to(outside / "main.py")
    (repo / "pipelines/reqs/requirements.txt").symlink_to(outside / "requirements.txt")
    (repo / "pipelines/folder_link").symlink_to(outside / "p")
    (repo / "pipelines/inside/main.py").symlink_to("real.py")  # inside the repository: fine
    found = scan(repo)
    out = outside.resolve()
    assert messages(found, "main_link") == [
        f"pipelines/main_link/main.py: is a symlink to {out}/main.py, outside the repository; "
        "copy the file into the repository instead"
    ]
    assert messages(found, "reqs") == [
        f"pipelines/reqs/requirements.txt: is a symlink to {out}/requirements.txt, outside the "
        "repository; copy the file into the repository instead"
    ]
    assert messages(found, "folder_link") == [
        f"pipelines/folder_link: is a symlink to {out}/p, outside the repository; move the "
        "pipeline into the repository"
    ]
    assert "inside" in found.pipelines


def test_an_escaping_main_py_is_reported_once(repo: Path, tmp_path: Path):
    outside = write_files(tmp_path / "outside", {"main.py": MAIN})
    (repo / "pipelines/evil").mkdir(parents=True)
    (repo / "pipelines/evil/main.py").symlink_to(outside / "main.py")
    assert messages(scan(repo), "evil") == [
        f"pipelines/evil/main.py: is a symlink to {outside.resolve()}/main.py, outside the "
        "repository; copy the file into the repository instead"
    ]


def test_link_loops_are_reported_as_loops_never_as_missing(repo: Path):
    """Issue 12: a link to itself was "does not exist" (a file) or skipped silently (a folder)."""
    write_files(repo, {"pipelines/ok/main.py": MAIN})
    (repo / "pipelines/self").symlink_to("self")
    (repo / "pipelines/ok/pipeline.json").symlink_to("pipeline.json")
    found = scan(repo)
    assert messages(found, "self") == [
        "pipelines/self: is a symlink loop (self); point it into the repository or remove it"]
    assert messages(found, "ok") == ["pipelines/ok/pipeline.json: is a symlink loop "
                                     "(pipeline.json); point it into the repository or remove it"]


def test_self_trigger_is_an_error(repo: Path):
    write_files(repo, {
        "pipelines/etl/main.py": MAIN,
        "pipelines/etl/pipeline.json": json.dumps({"downstream_triggers": [{"pipeline": "etl"}]}),
    })
    assert messages(scan(repo), "etl") == [
        'pipelines/etl/pipeline.json: downstream_triggers[0].pipeline: "etl" is this pipeline '
        "itself; a pipeline cannot trigger itself"
    ]


def test_triggers_to_missing_or_invalid_pipelines_stay_inert_with_a_warning(repo: Path):
    write_files(repo, {
        "pipelines/etl/main.py": MAIN,
        "pipelines/etl/pipeline.json": json.dumps({"downstream_triggers": [
            {"pipeline": "reprot"}, {"pipeline": "broken"}, {"pipeline": "report", "run_config_id": "nigthly"},
            {"pipeline": "report", "run_config_id": "nightly"},
        ]}),
        "pipelines/report/main.py": MAIN,
        "pipelines/report/pipeline.json": json.dumps({"schedules": [{"id": "nightly"}]}),
        "pipelines/broken/main.py": MAIN,
        "pipelines/broken/pipeline.json": "{",
    })
    found = scan(repo)
    etl = found.pipelines["etl"]
    assert [t.inert_reason for t in etl.downstream] == [
        'no pipeline named "reprot"', 'pipeline "broken" is invalid',
        'pipeline "report" has no run configuration "nigthly"', None,
    ]
    assert [str(w) for w in etl.warnings] == [
        'pipelines/etl/pipeline.json: downstream_triggers[0].pipeline: no pipeline named "reprot"; '
        'this trigger will not fire; did you mean "report"?',
        'pipelines/etl/pipeline.json: downstream_triggers[1].pipeline: pipeline "broken" is invalid; '
        "this trigger will not fire",
        'pipelines/etl/pipeline.json: downstream_triggers[2].pipeline: pipeline "report" has no run '
        'configuration "nigthly"; this trigger will not fire; did you mean "nightly"?',
    ]
    assert all(w.severity is Severity.WARNING and w.pipeline == "etl" for w in etl.warnings)


def test_duplicate_webhook_keys_across_pipelines_invalidate_both(repo: Path):
    write_files(repo, {
        "pipelines/a/main.py": MAIN,
        "pipelines/a/pipeline.json": '{"webhook_key": "same-key"}',
        "pipelines/b/main.py": MAIN,
        "pipelines/b/pipeline.json": '{"schedules": [{"id": "hook", "webhook_key": "same-key"}]}',
        "pipelines/c/main.py": MAIN,
        "pipelines/c/pipeline.json": '{"webhook_key": "other-key"}',
    })
    found = scan(repo)
    assert list(found.pipelines) == ["c"]
    assert messages(found, "a") == [
        'pipelines/a/pipeline.json: webhook_key: is the same webhook key as pipeline "b" '
        '(schedules[0] (id "hook").webhook_key); webhook keys must be unique across pipelines'
    ]
    assert messages(found, "b") == [
        'pipelines/b/pipeline.json: schedules[0] (id "hook").webhook_key: is the same webhook key as '
        'pipeline '
        '"a" (webhook_key); webhook keys must be unique across pipelines'
    ]


def test_one_invalid_pipeline_never_hides_the_others(repo: Path):
    write_files(repo, {
        "pipelines/a/main.py": MAIN,
        "pipelines/b/main.py": MAIN,
        "pipelines/b/pipeline.json": '{"timeout": 1,\n "tags": [}',
        "pipelines/c/main.py": MAIN,
        "pipelines/c/pipeline.json": '{"mem_hard_limit": "12x", "retry_attempts": -1}',
        "pipelines/d/main.py": MAIN,
    })
    found = scan(repo)
    assert sorted(found.pipelines) == ["a", "d"] and sorted(found.invalid) == ["b", "c"]
    assert messages(found, "b") == [
        "pipelines/b/pipeline.json: invalid JSON at line 2, column 11: Expecting value"
    ]
    assert messages(found, "c") == [
        'pipelines/c/pipeline.json: mem_hard_limit: "12x" is not a memory size; use a number with '
        'a unit such as "512m", "1.5g" or "2Gi"',
        "pipelines/c/pipeline.json: retry_attempts: -1 is not a whole number >= 0",
    ]
    assert [p.pipeline for p in found.all_problems()] == ["b", "c", "c"]


def test_pipelines_at_the_repository_root(repo: Path):
    write_files(repo, {
        ".fastflow/config.yaml": "pipelines_dir: .\n",
        ".git/HEAD": "ref: refs/heads/main\n",
        ".git/hooks/main.py": MAIN,
        "etl/main.py": MAIN,
        "report/main.py": MAIN,
        "report/report.json": '{"tags": ["x"]}',
        "docs/index.md": "# docs",
        "src/pkg/__init__.py": "",
        "_lib/main.py": MAIN,
    })
    found = scan(repo, "pipelines_dir: .\n")
    assert sorted(found.pipelines) == ["etl", "report"] and found.invalid == {}
    assert found.pipelines["report"].tags == ("x",)


def test_a_missing_pipelines_dir(repo: Path):
    """Without pipelines/ the root is searched; finding nothing there is a warning. A folder
    set in config.yaml that does not exist is an error (the root is never searched instead)."""
    found = scan(repo)
    assert found.pipelines == {} and [str(p) for p in found.problems] == [
        '.fastflow/config.yaml: pipelines_dir: there is no "pipelines" folder and no folder at the '
        "repository root has a main.py; create pipelines/<name>/main.py or set pipelines_dir in "
        ".fastflow/config.yaml"
    ]
    assert found.problems[0].severity is Severity.WARNING
    write_files(repo, {"etl/main.py": MAIN})
    explicit = scan(repo, "pipelines_dir: flows\n")
    assert explicit.pipelines == {} and [str(p) for p in explicit.problems] == [
        '.fastflow/config.yaml: pipelines_dir: "flows" is not a folder of the repository; '
        "create it or set pipelines_dir in .fastflow/config.yaml"
    ]
    assert explicit.problems[0].severity is Severity.ERROR


def test_a_pipelines_dir_linked_outside_is_named_as_the_link_is_written(repo: Path, tmp_path):
    """The same message on a working tree and on the daemon's snapshot (never a resolved path)."""
    write_files(tmp_path / "elsewhere", {"etl/main.py": MAIN})
    (repo / "pipelines").symlink_to("../elsewhere")
    found = scan(repo)
    assert found.pipelines == {} and [str(p) for p in found.problems] == [
        '.fastflow/config.yaml: pipelines_dir: "pipelines" is a symlink to ../elsewhere, outside '
        "the repository; use a folder inside it"
    ]


def test_find_pipeline_explains_invalid_and_misspelled_names(repo: Path):
    write_files(repo, {
        "pipelines/etl/main.py": MAIN,
        "pipelines/bad/main.py": MAIN,
        "pipelines/bad/pipeline.json": '{"timeout": -1, "max_instances": 0}',
    })
    found = scan(repo)
    assert find_pipeline(found, "etl").name == "etl"
    with pytest.raises(PipelineNotFound) as info:
        find_pipeline(found, "bad")
    assert str(info.value) == (
        'pipeline "bad" is invalid; fix it first:\n'
        "  pipelines/bad/pipeline.json: timeout: -1 is not a number of seconds >= 0; use a number such as 300\n"
        "  pipelines/bad/pipeline.json: max_instances: 0 is not a whole number >= 1"
    )
    with pytest.raises(PipelineNotFound) as info:
        find_pipeline(found, "elt")
    assert str(info.value) == 'no pipeline named "elt" in "pipelines"; did you mean "etl"?'
    with pytest.raises(PipelineNotFound) as info:
        find_pipeline(found, "zzz")
    assert str(info.value) == 'no pipeline named "zzz" in "pipelines"'


def test_find_pipeline_in_an_empty_root_repository(repo: Path):
    with pytest.raises(PipelineNotFound) as info:
        find_pipeline(scan(repo, "pipelines_dir: .\n"), "etl")
    assert str(info.value) == 'no pipeline named "etl" in the repository root; it has no pipelines'


def test_resolved_view_shows_values_and_sources(repo: Path):
    write_files(repo, {
        "pipelines/etl/main.py": MAIN,
        "pipelines/etl/pipeline.json": json.dumps({
            "mem_hard_limit": "1.5g", "webhook_key": "secret-key",
            "schedules": [{"id": "n", "schedule_cron": "0 3 * * *", "webhook_key": "other"}],
        }),
    })
    pipeline = scan(repo, "default_timeout: 60\n").pipelines["etl"]
    rows = {field: (value, source) for field, value, source in resolved_view(pipeline)}
    assert rows["mem_hard_limit"] == ("1.5g", "pipelines/etl/pipeline.json")
    assert rows["timeout"] == (60.0, ".fastflow/config.yaml")
    assert rows["cpu_hard_limit"] == (None, "default")
    assert rows["python_version"] == ("3.11", "default")
    assert rows["entry"] == ("main.py", "folder")
    assert rows["webhook_key"] == ("***", "pipelines/etl/pipeline.json")
    assert rows["schedules"][0] == [{"id": "n", "enabled": True, "schedule_cron": "0 3 * * *", "webhook_key": "***"}]
    assert rows["retry_strategy"][0] == {"type": "fixed_delay", "delay": 60.0}  # Fast-Flow's wait
    assert json.dumps([list(r) for r in resolved_view(pipeline)])  # JSON-compatible throughout


def test_the_example_gallery_is_valid(project_root: Path):
    from fastflow.config import load_repo_config

    config, _ = load_repo_config(project_root)
    found = discover(project_root, config)
    assert found.invalid == {} and found.problems == ()
    assert "minimal" in found.pipelines and found.pipelines["notebook"].type is PipelineType.NOTEBOOK
    assert found.warnings == ()


def test_an_unreadable_metadata_file(repo: Path):
    write_files(repo, {"pipelines/etl/main.py": MAIN})
    (repo / "pipelines/etl/pipeline.json").write_bytes(b'{"description": "\xff"}')
    assert messages(scan(repo), "etl") == [
        "pipelines/etl/pipeline.json: is not UTF-8 text; save it as UTF-8"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file; permissions cannot be tested")
def test_permission_denied_metadata(repo: Path):  # pragma: no cover - root in CI
    write_files(repo, {"pipelines/etl/main.py": MAIN, "pipelines/etl/pipeline.json": "{}"})
    (repo / "pipelines/etl/pipeline.json").chmod(0)
    assert "cannot be read" in messages(scan(repo), "etl")[0]


# --- pipelines at the root without configuration (the original Fast-Flow's template) -----------

TEMPLATE = Path(__file__).parent / "fixtures" / "fastflow-template"
TEMPLATE_PIPELINES = sorted(p.name for p in TEMPLATE.iterdir() if p.is_dir())

# What else sits at the root of such a repository: none of it is a pipeline, and none is reported.
NOT_PIPELINES = {
    ".git/hooks/main.py": MAIN,
    ".github/workflows/ci.yml": "on: push\n",
    ".venv/main.py": MAIN,
    "__pycache__/main.py": MAIN,
    "_shared/main.py": MAIN,
    "docs/index.md": "# docs",
    "tests/test_etl.py": "def test(): pass\n",
    "data/data.json": '{"rows": []}',
    "src/pkg/__init__.py": "",
    "README.md": "# readme",
}


def test_without_pipelines_folder_the_root_holds_the_pipelines_like_fastflows_template(repo: Path):
    shutil.copytree(TEMPLATE, repo, dirs_exist_ok=True)
    write_files(repo, NOT_PIPELINES)
    found = scan(repo)
    assert found.names == TEMPLATE_PIPELINES and found.problems == ()
    assert (found.pipelines_dir, found.pipelines_dir_source) == (".", "default, there is no pipelines/ folder")
    assert found.location == "the repository root"
    assert found.pipelines["extract"].path == repo.resolve() / "extract"
    with pytest.raises(PipelineNotFound) as info:
        find_pipeline(found, "extrakt")
    assert str(info.value) == ('no pipeline named "extrakt" in the repository root (there is no '
                               'pipelines/ folder); did you mean "extract"?')


def test_at_the_root_pipeline_json_makes_a_pipeline_and_a_name_json_alone_does_not(repo: Path):
    """pipelines/x/x.json without main.py is a broken pipeline; at the root x/x.json is data."""
    write_files(repo, {"etl/main.py": MAIN, "data/data.json": "{}", "half/pipeline.json": "{}"})
    for found in (scan(repo), scan(repo, "pipelines_dir: .\n")):
        assert found.names == ["etl", "half"] and list(found.pipelines) == ["etl"]
        assert messages(found, "half") == [
            'half: has pipeline.json but no main.py; add main.py (or main.ipynb with "type": "notebook")'
        ]


def test_a_pipelines_folder_or_pipelines_dir_keeps_the_root_out(repo: Path):
    write_files(repo, {"pipelines/a/main.py": MAIN, "rooted/main.py": MAIN, "flows/b/main.py": MAIN})
    found = scan(repo)
    assert found.names == ["a"] and (found.pipelines_dir, found.pipelines_dir_source) == ("pipelines", "default")
    configured = scan(repo, "pipelines_dir: flows\n")
    assert configured.names == ["b"]
    assert (configured.pipelines_dir, configured.pipelines_dir_source) == ("flows", ".fastflow/config.yaml")
    at_root = scan(repo, "pipelines_dir: .\n")
    assert at_root.names == ["rooted"] and at_root.pipelines_dir_source == ".fastflow/config.yaml"


# --- trigger cycles ------------------------------------------------------------------------------


def triggers(*targets: str | dict) -> str:
    return json.dumps({"downstream_triggers": [
        t if isinstance(t, dict) else {"pipeline": t} for t in targets]})


def test_a_cycle_of_two_makes_both_pipelines_invalid_naming_the_cycle(repo: Path):
    write_files(repo, {
        "pipelines/a/main.py": MAIN, "pipelines/a/pipeline.json": triggers("b"),
        "pipelines/b/main.py": MAIN, "pipelines/b/pipeline.json": triggers("c", "a"),
        "pipelines/c/main.py": MAIN,
        "pipelines/up/main.py": MAIN, "pipelines/up/pipeline.json": triggers("a"),
    })
    found = scan(repo)
    assert sorted(found.pipelines) == ["c", "up"] and sorted(found.invalid) == ["a", "b"]
    assert messages(found, "a") == [
        "pipelines/a/pipeline.json: downstream_triggers[0].pipeline: the triggers form a cycle "
        "a -> b -> a; a run would trigger itself forever; remove one of the triggers"
    ]
    assert messages(found, "b") == [
        "pipelines/b/pipeline.json: downstream_triggers[1].pipeline: the triggers form a cycle "
        "b -> a -> b; a run would trigger itself forever; remove one of the triggers"
    ]
    # a trigger into the cycle is inert (its target is invalid), never part of a chain
    (warning,) = found.pipelines["up"].warnings
    assert str(warning) == ('pipelines/up/pipeline.json: downstream_triggers[0].pipeline: '
                            'pipeline "a" is invalid; this trigger will not fire')
    assert found.pipelines["up"].downstream[0].inert_reason == 'pipeline "a" is invalid'


def test_a_cycle_through_a_run_configuration_and_a_longer_cycle_are_errors(repo: Path):
    prod = json.dumps({"schedules": [{"id": "prod", "schedule_interval_seconds": 60}],
                       "downstream_triggers": [{"pipeline": "x", "on_failure": True}]})
    write_files(repo, {
        "pipelines/x/main.py": MAIN,
        "pipelines/x/pipeline.json": triggers({"pipeline": "y", "run_config_id": "prod"}),
        "pipelines/y/main.py": MAIN, "pipelines/y/pipeline.json": prod,
        "pipelines/p/main.py": MAIN, "pipelines/p/pipeline.json": triggers("q"),
        "pipelines/q/main.py": MAIN, "pipelines/q/pipeline.json": triggers("r"),
        "pipelines/r/main.py": MAIN, "pipelines/r/pipeline.json": triggers({"pipeline": "p", "on_route": "again"}),
    })
    found = scan(repo)
    assert found.pipelines == {}
    cycle = "; a run would trigger itself forever; remove one of the triggers"
    assert [str(p) for p in found.all_problems()] == [
        f"pipelines/p/pipeline.json: downstream_triggers[0].pipeline: the triggers form a cycle p -> q -> r -> p{cycle}",
        f"pipelines/q/pipeline.json: downstream_triggers[0].pipeline: the triggers form a cycle q -> r -> p -> q{cycle}",
        f"pipelines/r/pipeline.json: downstream_triggers[0].pipeline: the triggers form a cycle r -> p -> q -> r{cycle}",
        f"pipelines/x/pipeline.json: downstream_triggers[0].pipeline: the triggers form a cycle x -> y -> x{cycle}",
        f"pipelines/y/pipeline.json: downstream_triggers[0].pipeline: the triggers form a cycle y -> x -> y{cycle}",
    ]


def test_triggers_that_cannot_fire_close_no_cycle(repo: Path):
    """A trigger to a run configuration the target lacks, or one that fires on nothing, is inert
    (a warning): the chain it would close can never run."""
    write_files(repo, {
        "pipelines/a/main.py": MAIN, "pipelines/a/pipeline.json": triggers("b"),
        "pipelines/b/main.py": MAIN,
        "pipelines/b/pipeline.json": triggers({"pipeline": "a", "run_config_id": "nope"}),
        "pipelines/c/main.py": MAIN, "pipelines/c/pipeline.json": triggers("d"),
        "pipelines/d/main.py": MAIN,
        "pipelines/d/pipeline.json": triggers({"pipeline": "c", "on_success": False}),
    })
    found = scan(repo)
    assert sorted(found.pipelines) == ["a", "b", "c", "d"] and found.invalid == {}
