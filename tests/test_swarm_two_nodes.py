"""A real two-node swarm on one machine: the CI engine (manager) and a second Docker engine in a
network namespace of its own (`helpers.second_swarm_node`), joined as a worker. A run placed on
the second node gets its pipeline folder at the right commit, its limits and its record, with
the daemon's snapshot deleted before the task starts and nothing of node 1 mounted into it."""
from __future__ import annotations

import subprocess
import threading
import time

import pytest
from helpers import Lines, git, make_spec, second_swarm_node, utc_now

from fastflow.errors import ExecutorError
from fastflow.executors.docker import connect
from fastflow.executors.swarm import SwarmExecutor, push_image_to_nodes
from fastflow.executors.swarm.service import LABEL_TREE, SwarmJobs
from fastflow.model import Limits, RunStatus

pytestmark = pytest.mark.slow

PROBE = """
import socket
print("data", open("data.txt").read().strip())
print("memory", open("/sys/fs/cgroup/memory/memory.limit_in_bytes").read().strip())
print("cpu", open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read().strip())
"""


@pytest.fixture(scope="module")
def node2(swarm_engine, runner_image):
    with second_swarm_node() as node:
        begin = time.monotonic()
        pushed = push_image_to_nodes([runner_image], [node.url])
        node.pushed_s = round(time.monotonic() - begin, 2)
        assert [p.loaded for p in pushed] == [True]
        print(f"\nsecond engine up in {node.started_s}s, joined in {node.joined_s}s, "
              f"runner image pushed in {node.pushed_s}s")
        yield node


class DeletingSnapshot(SwarmJobs):
    """Deletes the daemon's copy of the code once the job is created: the task cannot be
    reading it from node 1."""

    def create(self, spec, image, shipment=None):
        service = super().create(spec, image, shipment)
        subprocess.run(["rm", "-rf", str(spec.workdir)], check=True)
        return service


def test_a_run_on_node_2_gets_its_commit_its_limits_and_its_record(
        node2, swarm_executor_factory, tmp_path):
    repo = tmp_path / "repo"
    (repo / "pipelines" / "probe").mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=repo)
    (repo / "pipelines" / "probe" / "main.py").write_text(PROBE)
    (repo / "pipelines" / "probe" / "data.txt").write_text("commit one\n")
    git("add", ".", cwd=repo)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one", cwd=repo)
    first = git("rev-parse", "HEAD", cwd=repo).strip()
    (repo / "pipelines" / "probe" / "data.txt").write_text("commit two\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two", cwd=repo)
    # the snapshot of the first commit's pipeline folder, as the daemon makes it
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", first, "pipelines/probe"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(snapshot), "--strip-components", "1"], input=archive,
                   check=True)
    spec = make_spec(tmp_path, PROBE, pipeline="probe", placement=(f"node.hostname=={node2.name}",),
                     limits=Limits(cpu_hard_limit=0.5, mem_hard_limit=128 * 1024**2), hold=True)
    spec = type(spec)(**{**spec.__dict__, "workdir": snapshot / "probe"})
    executor = swarm_executor_factory()
    executor.jobs = DeletingSnapshot(executor.api, pids_limit=512, tmp_size=64 * 1024**2,
                                     ca_bundle=None)
    sink = Lines()
    result = executor.execute(spec, sink, threading.Event())
    try:
        assert result.status is RunStatus.SUCCEEDED, sink.lines
        assert sink.texts("stdout") == ["data commit one", f"memory {128 * 1024**2}", "cpu 50000"]
        assert result.environment.node == node2.name  # the record names the node
        assert not (snapshot / "probe").exists()
        service = executor.api.services(filters={"label": f"org.fastflow.run_id={spec.run_id}"})[0]
        assert service["Spec"]["Labels"][LABEL_TREE] == git(
            "rev-parse", f"{first}:pipelines/probe", cwd=repo).strip()  # the commit's tree
        task = executor.api.tasks(filters={"service": service["ID"]})[0]
        container = connect(base_url=node2.url).api.inspect_container(
            task["Status"]["ContainerStatus"]["ContainerID"])
        # nothing of node 1 is mounted: tmpfs and node 2's own cache volume only (the code and
        # the entry step came as Swarm configs, from node 2's own store)
        mounts = {(m["Type"], m["Destination"]): m.get("Source", "") for m in container["Mounts"]}
        assert {kind for kind, _ in mounts} == {"tmpfs", "volume"}, mounts
        assert mounts[("volume", "/cache")].startswith(str(node2.base)), mounts
    finally:
        executor.release(spec)


def test_a_swarm_worker_is_not_enough_for_the_swarm_executor(node2):
    with pytest.raises(ExecutorError) as err:
        SwarmExecutor(clock=utc_now, client=connect(base_url=node2.url))
    assert str(err.value) == (
        "`executor: swarm` needs the Docker engine of a Swarm manager, and this one is a Swarm "
        "worker; run `docker swarm init` here or point DOCKER_HOST at a manager (docs/swarm.md)")
