"""Change sets from changed paths: pure, no git needed."""
from __future__ import annotations

from fastflow.deploy.changes import (
    compute_changes,
    normalise_pipelines_dir,
    pipeline_of,
    pipelines_in,
)


def test_added_removed_changed_and_kinds():
    paths = [
        "pipelines/new/main.py",
        "pipelines/gone/main.py",
        "pipelines/report/main.py",
        "pipelines/report/lib/util.py",
        "pipelines/deps/requirements.txt",
        "pipelines/meta/pipeline.json",
        "pipelines/named/named.json",
        ".fastflow/config.yaml",
        "README.md",
    ]
    old = {"gone", "report", "deps", "meta", "named", "quiet"}
    new = {"new", "report", "deps", "meta", "named", "quiet"}
    cs = compute_changes(paths, "pipelines", old, new)
    assert cs.added == ("new",)
    assert cs.removed == ("gone",)
    assert [c.name for c in cs.changed] == ["deps", "meta", "named", "report"]
    by = cs.changed_by_name
    assert (by["report"].code, by["report"].requirements, by["report"].metadata) == (True, False, False)
    assert by["report"].paths == ("pipelines/report/lib/util.py", "pipelines/report/main.py")
    assert by["deps"].requirements and not by["deps"].code
    assert by["meta"].metadata and by["named"].metadata
    assert cs.config_files == (".fastflow/config.yaml",)
    assert cs.other_paths == ("README.md",)
    assert cs.needs_preheat() == ("deps", "meta", "named", "new")
    assert not cs.first_sync and not cs.empty


def test_other_json_file_is_code_not_metadata():
    cs = compute_changes(["pipelines/a/data.json"], "pipelines", {"a"}, {"a"})
    assert cs.changed[0].code and not cs.changed[0].metadata


def test_pipelines_at_repository_root():
    paths = ["etl/main.py", ".fastflow/schedules.yaml", "_shared/x.py", ".github/ci.yml", "top.txt"]
    cs = compute_changes(paths, ".", {"etl"}, {"etl"})
    assert [c.name for c in cs.changed] == ["etl"]
    assert cs.config_files == (".fastflow/schedules.yaml",)
    assert cs.other_paths == (".github/ci.yml", "_shared/x.py", "top.txt")


def test_first_sync_everything_added():
    cs = compute_changes(["p/a/main.py", "p/b/main.ipynb"], "p/", None, {"a", "b"})
    assert cs.first_sync and cs.added == ("a", "b") and cs.changed == ()


def test_results_only_change_is_empty():
    cs = compute_changes([], "pipelines", {"a"}, {"a"})
    assert cs.empty and cs.to_json()["changed"] == []


def test_helpers():
    assert normalise_pipelines_dir("./") == ""
    assert normalise_pipelines_dir("/pipelines/") == "pipelines"
    assert pipeline_of("pipelines/a/b/c.py", "pipelines") == ("a", "b/c.py")
    assert pipeline_of("pipelines/readme.md", "pipelines") is None
    assert pipeline_of("other/a/main.py", "pipelines") is None
    assert pipelines_in({"a": ["main.py"], "b": ["x.py"], "_c": ["main.py"], "d": ["main.ipynb"]}) \
        == frozenset({"a", "d"})
