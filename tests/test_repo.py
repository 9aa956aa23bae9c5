"""The pygit2 adapter, against real repositories made with the git CLI (playing the user)."""
from __future__ import annotations

import os
import stat
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import git

from fastflow import repo as g
from fastflow.deploy.changes import change_set
from fastflow.errors import RepositoryError

WHEN = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)
AUTHOR = ("Fast-Flow", "fastflow@localhost")


def commit_files(work: Path, files: dict[str, str | None], message: str = "c") -> str:
    for rel, text in files.items():
        p = work / rel
        if text is None:
            git("rm", "-rq", rel, cwd=work)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    git("add", "-A", cwd=work)
    git("commit", "-qm", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    w = tmp_path / "work"
    w.mkdir()
    git("init", "-qb", "main", cwd=w)
    return w


def test_open_errors_name_the_path(tmp_path):
    with pytest.raises(RepositoryError) as exc:
        g.open_repo(tmp_path / "nope")
    assert str(exc.value).startswith(f"{tmp_path / 'nope'}: not a git repository (")
    assert str(exc.value).endswith("); pass the path of a repository with --repo")


def test_resolve_read_list_and_metadata(work):
    sha = commit_files(work, {"pipelines/a/main.py": "print(1)\n", "README.md": "hi\n"}, "first\n")
    r = g.open_repo(work)
    assert not r.bare
    assert g.resolve_branch(r, "main") == sha
    assert g.branch_head(r, "missing") is None
    with pytest.raises(RepositoryError) as exc:
        g.resolve_branch(r, "develop")
    assert str(exc.value) == (f"{work}: branch 'develop' does not exist; push it first or set "
                              "`branch` in .fastflow/config.yaml")
    assert g.read_blob(r, sha, "pipelines/a/main.py") == b"print(1)\n"
    assert g.read_blob(r, sha, "pipelines/a/none.py") is None
    assert [(i.name, i.kind) for i in g.list_tree(r, sha, "pipelines")] == [("a", "tree")]
    assert g.list_tree(r, sha, "absent") == []
    info = g.commit_info(r, sha)
    assert (info.sha, info.message, info.parents) == (sha, "first\n", ())
    assert info.tree == git("rev-parse", "HEAD^{tree}", cwd=work)
    assert info.time.tzinfo is not None
    assert g.tree_id(r, sha, "pipelines/a") == git("rev-parse", "HEAD:pipelines/a", cwd=work)
    with pytest.raises(RepositoryError) as exc:
        g.commit_info(r, "0" * 40)
    assert str(exc.value) == f"{work}: no commit '{'0' * 40}' in the repository"


def test_changed_paths_and_change_set(work):
    first = commit_files(work, {"pipelines/a/main.py": "1", "pipelines/b/main.py": "1",
                                "pipelines/b/requirements.txt": "x"})
    second = commit_files(work, {"pipelines/a/main.py": "2", "pipelines/b": None,
                                 "pipelines/c/main.py": "1", ".fastflow/config.yaml": "{}"})
    r = g.open_repo(work)
    assert {(c.path, c.status) for c in g.changed_paths(r, None, first)} == {
        ("pipelines/a/main.py", "A"), ("pipelines/b/main.py", "A"),
        ("pipelines/b/requirements.txt", "A")}
    changes = {(c.path, c.status) for c in g.changed_paths(r, first, second)}
    assert ("pipelines/b/requirements.txt", "D") in changes and ("pipelines/a/main.py", "M") in changes
    cs = change_set(r, first, second, "pipelines")
    assert (cs.added, cs.removed, [c.name for c in cs.changed]) == (("c",), ("b",), ["a"])
    assert cs.config_files == (".fastflow/config.yaml",)
    assert change_set(r, None, first, "pipelines").added == ("a", "b")


def test_build_tree_rewrites_only_changed_paths(tmp_path):
    r = g.init_repo(tmp_path / "r.git", bare=True)
    t1 = g.build_tree(r, None, {"runs/a/2026/11/x.json": b"1", "runs/b/2026/11/y.json": b"2",
                                "summary.json": b"{}"})
    t2 = g.build_tree(r, t1, {"runs/a/2026/11/z.json": b"3", "summary.json": b"{1}"})
    assert g.tree_id(r, t1, "runs/b") == g.tree_id(r, t2, "runs/b")  # untouched subtree shared
    assert [i.name for i in g.list_tree(r, t2, "runs/a/2026/11")] == ["x.json", "z.json"]
    t3 = g.build_tree(r, t2, {"runs/a/2026/11/x.json": None, "runs/a/2026/11/z.json": None})
    assert [i.name for i in g.list_tree(r, t3, "runs")] == ["b"]  # emptied folders disappear
    t4 = g.build_tree(r, t3, {"runs/b": None, "summary.json": None})
    assert g.list_tree(r, t4) == []
    with pytest.raises(RepositoryError) as exc:
        g.build_tree(r, None, {"../x": b""})
    assert str(exc.value) == "invalid path '../x' in a tree update; use a relative path"


def test_objects_read_and_written_are_not_kept_in_libgit2s_cache(tmp_path):
    # The daemon commits every run: with libgit2's object cache (256 MiB by default) its memory
    # grew with every commit's new trees (bench/daemon_memory.py); fastflow.repo turns it off.
    import pygit2

    r = g.init_repo(tmp_path / "r.git", bare=True)
    tree = None
    for n in range(20):
        tree = g.build_tree(r, tree, {f"runs/a/2026/11/{n}.json": b"{}", "summary.json": b"%d" % n})
        assert [i.name for i in g.list_tree(r, tree, "runs/a")] == ["2026"]
    assert pygit2.settings.cached_memory[0] == 0


def test_commit_and_compare_and_swap(tmp_path):
    r = g.init_repo(tmp_path / "r.git", bare=True)
    tree = g.build_tree(r, None, {"a": b"1"})
    c1 = g.make_commit(r, tree, [], "one\n", AUTHOR, WHEN)
    g.update_ref(r, "fastflow/results", c1, None)
    c2 = g.make_commit(r, tree, [c1], "two\n", AUTHOR, WHEN)
    with pytest.raises(g.RefConflict) as exc:
        g.update_ref(r, "fastflow/results", c2, None)
    assert str(exc.value) == (f"{tmp_path / 'r.git'}: branch 'fastflow/results' is at {c1}, "
                              "expected None; it was updated concurrently, rebuild the commit "
                              "on the new head")
    g.update_ref(r, "fastflow/results", c2, c1)
    info = g.commit_info(r, g.resolve_branch(r, "fastflow/results"))
    assert info.parents == (c1,) and info.author == "Fast-Flow <fastflow@localhost>"
    assert info.time == WHEN


def test_snapshot_modes_symlinks_reuse_and_gc(work, tmp_path):
    p = work / "pipelines/a"
    p.mkdir(parents=True)
    (p / "main.py").write_text("print(1)\n")
    (p / "run.sh").write_text("#!/bin/sh\n")
    (p / "run.sh").chmod(0o755)
    (p / "sub").mkdir()
    (p / "sub/data.txt").write_text("d")
    os.symlink("sub/data.txt", p / "inside")
    os.symlink("../../README.md", p / "outside")
    os.symlink("/etc/passwd", p / "absolute")
    (work / "README.md").write_text("r")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "c", cwd=work)
    sha = git("rev-parse", "HEAD", cwd=work)
    r = g.open_repo(work)
    dest = tmp_path / "snaps"
    snap = g.snapshot_tree(r, sha, "pipelines/a", dest)
    assert snap == dest / git("rev-parse", "HEAD:pipelines/a", cwd=work)
    assert (snap / "main.py").read_text() == "print(1)\n"
    assert os.access(snap / "run.sh", os.X_OK) and not os.access(snap / "main.py", os.X_OK)
    assert (snap / "inside").is_symlink() and (snap / "inside").read_text() == "d"
    # Links leading out are kept as git holds them: discovery judges them (test_discovery.py)
    assert os.readlink(snap / "outside") == "../../README.md"
    assert os.readlink(snap / "absolute") == "/etc/passwd"
    assert not stat.S_IMODE((snap / "main.py").stat().st_mode) & 0o222
    assert g.snapshot_tree(r, sha, "pipelines/a", dest) == snap  # reused
    whole = g.snapshot_tree(r, sha, "", dest)
    assert (whole / "pipelines/a/main.py").exists()
    with pytest.raises(RepositoryError) as exc:
        g.snapshot_tree(r, sha, "pipelines/zz", dest)
    assert str(exc.value) == f"{work}: no folder 'pipelines/zz' at {sha}; check `pipelines_dir`"
    with g.pin_snapshot(dest, snap.name):
        assert g.gc_snapshots(dest, keep=set()) == [whole.name]
        assert snap.is_dir()
    assert g.gc_snapshots(dest, keep={"x"}) == [snap.name]
    assert not snap.exists()


def test_pin_from_another_process_blocks_gc(work, tmp_path):
    sha = commit_files(work, {"pipelines/a/main.py": "1"})
    dest = tmp_path / "snaps"
    snap = g.snapshot_tree(g.open_repo(work), sha, "pipelines/a", dest)
    code = ("import sys,time; from fastflow import repo as g\n"
            f"with g.pin_snapshot({str(dest)!r}, {snap.name!r}):\n"
            "    print('pinned', flush=True); time.sleep(30)\n")
    proc = subprocess.Popen(["python", "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "pinned"
        assert g.gc_snapshots(dest) == []
    finally:
        proc.kill()
        proc.wait()
    assert g.gc_snapshots(dest) == [snap.name]  # a dead process pins nothing


def bare_with_branches(tmp_path: Path, work: Path) -> Path:
    commit_files(work, {"a": "1"})
    git("branch", "fastflow/results", cwd=work)
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    git("push", "-q", str(remote), "main", "fastflow/results", cwd=work)
    return remote


@pytest.mark.parametrize("as_url", [False, True])
def test_mirror_fetch(tmp_path, work, as_url):
    remote = bare_with_branches(tmp_path, work)
    url = f"file://{remote}" if as_url else str(remote)
    mirror = tmp_path / "mirror.git"
    first = g.mirror_fetch(url, mirror, protect=["fastflow/results"])
    main_sha = git("rev-parse", "main", cwd=work)
    assert first == {"refs/heads/main": (None, main_sha),
                     "refs/fastflow/upstream/fastflow/results": (None, main_sha)}
    assert g.mirror_fetch(url, mirror, protect=["fastflow/results"]) == {}
    new = commit_files(work, {"b": "2"})
    git("push", "-q", str(remote), "main", cwd=work)
    git("push", "-q", str(remote), "main:feature", cwd=work)
    changed = g.mirror_fetch(url, mirror, protect=["fastflow/results"])
    assert changed == {"refs/heads/main": (main_sha, new), "refs/heads/feature": (None, new)}
    git("push", "-q", str(remote), ":feature", cwd=work)
    assert g.mirror_fetch(url, mirror) ["refs/heads/feature"] == (new, None)
    config = (mirror / "config").read_text()
    assert str(remote) not in config  # anonymous remote: the URL is never stored


def test_mirror_fetch_unreachable(tmp_path):
    with pytest.raises(RepositoryError) as exc:
        g.mirror_fetch(str(tmp_path / "absent.git"), tmp_path / "m.git")
    assert str(exc.value).startswith(f"{tmp_path / 'absent.git'}: cannot fetch (")
    assert str(exc.value).endswith("); check the URL and credentials")


def test_push_pushed_rejected_unreachable(tmp_path, work):
    remote = bare_with_branches(tmp_path, work)
    r = g.open_repo(work)
    head = g.resolve_branch(r, "fastflow/results")
    tree = g.build_tree(r, head, {"x": b"1"})
    mine = g.make_commit(r, tree, [head], "mine\n", AUTHOR, WHEN)
    g.update_ref(r, "fastflow/results", mine, head)
    assert g.push_branch(r, str(remote), "fastflow/results") == (g.PushResult.PUSHED, "")
    assert git("rev-parse", "fastflow/results", cwd=remote) == mine
    other = g.make_commit(r, tree, [head], "other\n", AUTHOR, WHEN)  # diverges from `mine`
    g.update_ref(r, "fastflow/results", other, mine)
    result, detail = g.push_branch(r, str(remote), "fastflow/results")
    assert result is g.PushResult.REJECTED and detail
    assert g.fetch_branch(r, str(remote), "fastflow/results") == mine
    assert g.fetch_branch(r, str(remote), "nothing") is None
    assert g.push_branch(r, str(tmp_path / "gone.git"), "fastflow/results")[0] \
        is g.PushResult.UNREACHABLE


def test_credentials_from_env_never_shows_secrets():
    creds = g.credentials_from_env({"FASTFLOW_GIT_USERNAME": "bot", "FASTFLOW_GIT_PASSWORD": "tok",
                                    "FASTFLOW_GIT_SSH_KEY": "/k/id"})
    assert (creds.username, creds.password, str(creds.ssh_key)) == ("bot", "tok", "/k/id")
    assert "tok" not in repr(creds)
    assert g.credentials_from_env({}) == g.Credentials()
