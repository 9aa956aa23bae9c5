"""The Swarm executor beyond the shared contract (tests/test_executor_contract.py): hardening and
limits as the task sees them, OOM against a bare 137, the code's tree hash, clear failures
(no node qualifies, the image is not on the node), and nothing left behind. A real one-node
swarm on the CI engine (`swarm_engine`, which always leaves swarm mode)."""
from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import threading
import time

import pytest
from helpers import Lines, git, make_spec, services_of

from fastflow.errors import ExecutorError
from fastflow.executors.docker import connect
from fastflow.executors.swarm.entry import tree_hash
from fastflow.executors.swarm.service import Shipment, pack
from fastflow.model import Limits, NetworkMode, RunStatus

pytestmark = pytest.mark.slow

INSIDE = """
import os, socket
def read(path):
    try:
        return open(path).read().strip()
    except OSError as exc:
        return f"error {exc.errno}"
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
print("uid", os.getuid(), os.getgid())
print("caps", status["CapEff"].strip(), status["CapBnd"].strip(), "nnp", status["NoNewPrivs"].strip())
for path in ("main.py", "/etc/probe", "/tmp/probe"):
    try:
        open(path, "a").write("x")
        print("write", path, "ok")
    except OSError as exc:
        print("write", path, "refused", exc.errno)
try:
    os.chmod("main.py", 0o666)
    print("chmod ok")
except OSError as exc:
    print("chmod refused", exc.errno)
print("docker socket", os.path.exists("/var/run/docker.sock"))
print("pids", read("/sys/fs/cgroup/pids/pids.max"))
print("memory", read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
print("cpu", read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
try:
    socket.create_connection(("192.0.2.1", 80), timeout=3)
    print("route out", "yes")
except OSError as exc:
    print("route out", "no", exc.errno)
"""


def test_the_task_is_hardened_and_limited_as_far_as_swarm_allows(swarm_executor_factory, tmp_path):
    spec = make_spec(tmp_path, INSIDE, limits=Limits(cpu_hard_limit=0.5, mem_hard_limit=256 * 1024**2),
                     network=NetworkMode.NONE)
    sink = Lines()
    result = swarm_executor_factory().execute(spec, sink, threading.Event())
    out = sink.texts("stdout")
    assert result.status is RunStatus.SUCCEEDED, sink.lines
    assert "uid 10001 10001" in out
    assert "caps 0000000000000000 0000000000000000 nnp 1" in out  # the entry step dropped root
    assert "write main.py refused 13" in out and "chmod refused 1" in out  # read-only code
    assert "write /etc/probe refused 30" in out  # read-only root filesystem
    assert "write /tmp/probe ok" in out
    assert "docker socket False" in out
    assert "pids 512" in out
    assert f"memory {256 * 1024**2}" in out
    assert "cpu 50000 100000" in out
    assert "route out no 101" in out  # network none: an internal overlay, no route out
    assert result.environment.node  # the record names the node
    assert services_of(spec.run_id) == []


def test_oom_is_the_kernels_verdict_not_exit_137(swarm_executor_factory, tmp_path):
    hog = make_spec(tmp_path, "x = []\nwhile True:\n    x.append(bytearray(8 << 20))",
                    limits=Limits(mem_hard_limit=96 * 1024**2))
    result = swarm_executor_factory().execute(hog, Lines(), threading.Event())
    assert (result.status, result.exit_code) == (RunStatus.OOM_KILLED, 137)
    assert result.error.kind == "oom"
    self_kill = make_spec(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                          limits=Limits(mem_hard_limit=96 * 1024**2))
    result = swarm_executor_factory().execute(self_kill, Lines(), threading.Event())
    assert (result.status, result.exit_code) == (RunStatus.FAILED, 137)


def test_the_code_is_verified_by_its_git_tree_hash_before_the_pipeline_starts(
        swarm_executor_factory, tmp_path):
    spec = make_spec(tmp_path, "print('ran')")
    (spec.workdir / "lib").mkdir()
    (spec.workdir / "lib" / "__init__.py").write_text("")
    (spec.workdir / "run.sh").write_text("#!/bin/sh\n")
    (spec.workdir / "run.sh").chmod(0o755)
    git("init", "-q", cwd=spec.workdir)
    git("add", ".", cwd=spec.workdir)
    written = git("write-tree", cwd=spec.workdir).strip()
    shutil.rmtree(spec.workdir / ".git")
    assert tree_hash(str(spec.workdir)) == written  # what git would record for the folder
    executor = swarm_executor_factory()
    shipped = pack(spec)
    # the code on the wire differs from what the daemon's snapshot hashes to: refused
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = b"print('not the commit')\n"
        info = tarfile.TarInfo("main.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    service = executor.jobs.create(spec, executor.runner_image_of(spec),
                                   Shipment(gzip.compress(raw.getvalue()), shipped.tree))
    sink = Lines()
    try:
        result = executor._supervise(service, spec, sink, threading.Event(), None,
                                     executor._environment(spec), {})
    finally:
        executor.jobs.remove(executor.api.inspect_service(service)["Spec"]["Name"])
    assert (result.status, result.exit_code, result.error.kind) == (RunStatus.FAILED, 125, "code")
    assert sink.texts("stdout") == []
    refusal = [t for t in sink.texts("stderr") if t.startswith("fastflow: ")]
    assert refusal and f"not {shipped.tree} as sent: refusing to run it" in refusal[0]


def test_no_node_that_qualifies_fails_the_run_clearly(swarm_executor_factory, tmp_path):
    executor = swarm_executor_factory()
    executor.schedule_timeout = 3
    spec = make_spec(tmp_path, "print('never')", placement=("node.labels.gpu==true",))
    begin = time.monotonic()
    with pytest.raises(ExecutorError) as err:
        executor.execute(spec, Lines(), threading.Event())
    assert time.monotonic() - begin < 20
    assert str(err.value) == (
        "no Swarm node started the task of pipeline 'pipe' within 3s (no suitable node "
        "(scheduling constraints not satisfied on 1 node)); check the pipeline's placement and "
        "`docker node ls` (a node must be ready, active and match every constraint)")
    assert services_of(spec.run_id) == []


def test_a_node_without_the_image_fails_the_run_clearly(swarm_executor_factory, tmp_path, runner_image):
    executor = swarm_executor_factory()
    spec = make_spec(tmp_path, "print('never')")
    client = connect()
    client.api.tag(runner_image, "fastflow-runner", "gone-from-nodes")
    client.api.remove_image("fastflow-runner:gone-from-nodes")  # the manager checked, the node has not
    service = executor.jobs.create(spec, "fastflow-runner:gone-from-nodes")
    try:
        with pytest.raises(ExecutorError) as err:
            executor._wait_for_start(service, spec, threading.Event())
    finally:
        executor.jobs.remove(executor.api.inspect_service(service)["Spec"]["Name"])
    node = executor._node(client.api.info()["Swarm"]["NodeID"])
    assert str(err.value) == (
        f"the runner image of pipeline 'pipe' is not on Swarm node {node!r} (No such image: "
        "fastflow-runner:gone-from-nodes); put it on every node with `fastflow image push-to-nodes`")


def test_a_run_leaves_no_service_config_or_network(swarm_executor_factory, tmp_path):
    spec = make_spec(tmp_path, "print('bye')", network=NetworkMode.NONE)
    executor = swarm_executor_factory()
    assert executor.execute(spec, Lines(), threading.Event()).status is RunStatus.SUCCEEDED
    api = executor.api
    label = {"label": f"org.fastflow.run_id={spec.run_id}"}
    assert (services_of(spec.run_id), api.configs(filters=label), api.networks(filters=label)) == (
        [], [], [])


def test_a_pipeline_folder_too_big_for_a_swarm_config_is_refused_with_the_fix(
        swarm_executor_factory, tmp_path):
    spec = make_spec(tmp_path, "print('never')")
    (spec.workdir / "data.bin").write_bytes(os.urandom(1200 * 1024))
    with pytest.raises(ExecutorError) as err:
        swarm_executor_factory().execute(spec, Lines(), threading.Event())
    size = len(pack_size_of(spec)) // 1024
    assert str(err.value) == (
        f"pipeline folder {spec.workdir} is {size} KiB as a gzipped tar; the swarm executor "
        "ships code in a Swarm config, which holds at most 999 KiB: keep data files out of the "
        "pipeline folder (fetch them at run time)")
    assert services_of(spec.run_id) == []


def pack_size_of(spec) -> bytes:
    """The archive `pack` would make of `spec`'s folder, whatever its size."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(spec.workdir.rglob("*")):
            info = tar.gettarinfo(str(path), path.relative_to(spec.workdir).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return gzip.compress(raw.getvalue(), mtime=0)


def test_a_flow_task_runs_on_the_daemons_node_with_its_workspace(swarm_executor_factory,
                                                                  tmp_path):
    """A flow's task shares its flow run's workspace (a folder of the daemon's state dir): it is
    bind-mounted read-write, and the task is placed on this engine's node, where it is."""
    workspace = tmp_path / "workspace"
    (workspace / ".fastflow" / "outputs").mkdir(parents=True)
    (workspace / "input.txt").write_text("from an earlier task\n")
    os.chmod(workspace, 0o777)
    os.chmod(workspace / ".fastflow" / "outputs", 0o777)
    spec = make_spec(tmp_path, """
        import os, pathlib
        root = pathlib.Path(os.environ["TMP_DIR"])
        print(root, (root / "input.txt").read_text().strip())
        (root / "result.txt").write_text("written by the task")
        """, workspace=workspace)
    lines = Lines()
    executor = swarm_executor_factory()
    result = executor.execute(spec, lines, threading.Event())
    assert result.status is RunStatus.SUCCEEDED, lines.texts("stderr") + lines.texts("runner")
    assert lines.texts("stdout") == ["/workspace from an earlier task"]
    assert (workspace / "result.txt").read_text() == "written by the task"
    node = connect().info()["Swarm"]["NodeID"]
    assert executor.jobs._workspace_node(spec) == [f"node.id=={node}"]


def test_soft_limits_are_sampled_from_the_tasks_cgroup(swarm_executor_factory, tmp_path):
    spec = make_spec(tmp_path, "import time\nx = bytearray(80 << 20)\nx[::4096] = b'x' * len(x[::4096])\n"
                               "time.sleep(3.5)\n", limits=Limits(mem_soft_limit=32 * 1024**2))
    result = swarm_executor_factory().execute(spec, Lines(), threading.Event())
    assert result.status is RunStatus.SUCCEEDED
    assert result.resources.peak_memory_bytes > 64 * 1024**2
    assert len(result.resources.samples) >= 3
    assert [(e["kind"], e["limit"]) for e in result.resources.soft_limit_events] == [
        ("memory", 32 * 1024**2)]
