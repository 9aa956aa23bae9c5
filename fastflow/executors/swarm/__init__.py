"""The Swarm executor package: attempts as one-shot Swarm jobs (docs/swarm.md).

- `executor`: `SwarmExecutor` (execute, re-attach, pre-heat), built from `service` (an
  attempt's job: configs, hardening, limits, placement) and `logs` (its output through the
  manager); `entry` is the step that runs first in every task (unpack, verify, drop root)
- `jobs`: what runs where, for `fastflow ps` / `fastflow cancel` (`running_runs`,
  `cancel_anywhere`: this engine's containers and, on a manager, the Swarm jobs)
- `nodes`: the runner image on every node (`push_image_to_nodes`)
"""
from fastflow.executors.swarm.executor import SwarmExecutor, check_manager
from fastflow.executors.swarm.jobs import cancel_anywhere, running_runs
from fastflow.executors.swarm.nodes import PushedImage, push_image_to_nodes

__all__ = ["PushedImage", "SwarmExecutor", "cancel_anywhere", "check_manager",
           "push_image_to_nodes", "running_runs"]
