"""The Ray executor: every artifact a Ray task, with the resources it needs, on any node of the cluster.

Without an address it starts a Ray instance on this machine with all its GPUs and cores; with one
(``auto`` or ``HOST:PORT``) it joins that cluster. A task that trains asks for a whole GPU, a linear probe
or an evaluation for a share of one (``Needs`` in ``bench/pipeline/plan.py``), and on a CPU-only cluster for its
threads' CPUs. The runner starts a task once its dependencies are done and holds the artifact's claim
meanwhile, so a model is built once however many tasks need it. Tasks hand models to one another through
the model cache, so ``--cache-dir`` must be storage every node reads and writes (checked at start);
outcomes (a model's meta, a cell's records) come back to the driver, the only writer of records. A task
whose worker or node dies is started again, up to ``max_retries`` times; its half-written files never
appear under a model's name.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from bench.errors import SuiteError
from bench.pipeline.executors.base import Executor, register_executor

if TYPE_CHECKING:
    from bench.pipeline.build import BuildEnv, Outcome
    from bench.pipeline.plan import Artifact


def _check_reachable(address: Optional[str]) -> None:
    """A HOST:PORT where nothing listens would keep Ray retrying for many minutes: ask the port first."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise SuiteError(f"--ray-address {address}: expected auto or HOST:PORT, e.g. 10.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise SuiteError(
            f"--ray-address {address}: no Ray cluster answers there ({e.strerror or e}); "
            "start one with ray start --head, or leave --ray-address out to start one here"
        ) from None


@register_executor("ray")
class RayExecutor(Executor):
    @dataclass(frozen=True)
    class Options(Executor.Options):
        address: Optional[str] = None  # None: start a Ray instance on this machine; "auto" or HOST:PORT: join a cluster
        max_retries: int = 2  # how often a task whose worker died is started again

        def __post_init__(self):
            super().__post_init__()
            if self.max_retries < 0:
                raise ValueError(f"--max-retries: expected 0 or more, got {self.max_retries}")

    @classmethod
    def add_arguments(cls, group) -> None:
        group.add_argument(
            "--ray-address",
            dest="address",
            help="join this Ray cluster (auto or HOST:PORT) instead of starting one here",
        )
        group.add_argument(
            "--max-retries", type=int, dest="max_retries", help="restarts of a task whose worker died (default 2)"
        )

    def __init__(self, options, log):
        super().__init__(options, log)
        try:
            import ray
        except ModuleNotFoundError:
            raise SuiteError("--executor ray needs Ray: pip install 'transfer-bench[ray]' (ray 2.60)") from None
        self._ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every worker's progress line, as it comes
            os.environ.setdefault(
                "RAY_COLOR_PREFIX", "1" if sys.stderr.isatty() else "0"
            )  # no escape codes in log files
            # RAY_ADDRESS (set by `ray job submit` and cluster environments) names the cluster to join as
            # --ray-address does; without either, "local": a Ray instance of this run's own, even where another run
            # has one on this machine (which Ray would otherwise join, and lose when that run ends)
            address = options.address or os.environ.get("RAY_ADDRESS") or "local"
            _check_reachable(None if address == "local" else address)
            try:
                ray.init(address=address, include_dashboard=False, logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = (
                    "cannot start a Ray instance here"
                    if address == "local"
                    else f"cannot join a Ray cluster at {address}"
                )
                raise SuiteError(f"--executor ray: {where} ({str(e).splitlines()[0]})") from None
        self._tasks = None  # RemoteTasks, once started

    def cuda_available(self) -> bool:
        return self._ray.cluster_resources().get("GPU", 0) > 0

    def start(self, env: BuildEnv, data: dict) -> None:
        from bench.pipeline.executors.remote import RemoteTasks, build_in_worker, check_shared_storage

        self._tasks = RemoteTasks(env, self.log)
        self._task = self._ray.remote(build_in_worker)
        check_shared_storage(self._tasks.env, self._ask_every_node, "Ray node")
        resources = self._ray.cluster_resources()
        self._cluster = (resources.get("CPU", 0), resources.get("GPU", 0))
        self.log(
            f"ray: {len([n for n in self._ray.nodes() if n['Alive']])} node(s), {self._cluster[0]:g} CPUs, "
            f"{self._cluster[1]:g} GPUs; model cache {env.cache_dir}"
        )

    def _ask_every_node(self, folder: str, token: str, data_root: str) -> tuple[dict[str, dict], list[str]]:
        """``probe_shared_folder`` run on each live node, pinned there."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from bench.pipeline.executors.remote import probe_shared_folder

        ray = self._ray
        remote_probe = ray.remote(probe_shared_folder)
        nodes = {
            node["NodeID"]: f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})"
            for node in ray.nodes()
            if node["Alive"]
        }
        refs = {
            remote_probe.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
            ).remote(folder, token, data_root): node_id
            for node_id in nodes
        }
        try:
            ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=300)
            return {nodes[refs[ref]]: ray.get(ref) for ref in ready}, [nodes[refs[ref]] for ref in late]
        except ray.exceptions.RayError as e:  # a node that cannot even run the probe (another version, say)
            raise SuiteError(
                f"a Ray node could not run the cache check ({str(e).strip().splitlines()[-1]}); "
                "install the same version on every node"
            ) from None

    def has_room(self, artifact: Artifact) -> bool:
        """Room in the cluster's CPUs and GPUs beside what is in flight. Ray would queue more, but tasks
        queued early would run in submission order, every cell's training before any cell's evaluation."""
        running = self._tasks.running.values()
        if not running:
            return True  # whatever it asks for, Ray places it or says why not
        cpus = sum(a.needs.cpus for a in running) + artifact.needs.cpus
        gpus = sum(a.needs.gpus for a in running) + artifact.needs.gpus
        return cpus <= self._cluster[0] and gpus <= self._cluster[1]

    def submit(self, artifact: Artifact, inputs: dict[str, Outcome]) -> None:
        if self._tasks.built_on_driver(artifact, inputs):
            return
        ref = self._task.options(
            num_cpus=artifact.needs.cpus,
            num_gpus=artifact.needs.gpus,
            max_retries=self.options.max_retries,
            name=artifact.name,
        ).remote(self._tasks.env, artifact, inputs)
        self._tasks.started(ref, artifact)

    def wait(self, timeout: Optional[float]) -> list[tuple[str, Outcome]]:
        tasks, ray = self._tasks, self._ray
        finished = tasks.built_here()
        if finished or not tasks.running:
            return finished
        ready, _ = ray.wait(list(tasks.running), num_returns=1, timeout=tasks.wait_at_most(timeout))
        if ready:  # and whatever else is done already
            ready, _ = ray.wait(list(tasks.running), num_returns=len(tasks.running), timeout=0)
        return tasks.collect(ready, tasks.late(set(ready)), self._kill, self._result)

    def _kill(self, ref) -> None:
        self._ray.cancel(ref, force=True)  # kills its worker

    def _result(self, ref) -> Outcome:
        from bench.pipeline.build import Outcome

        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # raised past the builder, which turns errors into outcomes
            return Outcome("error", f"{type(e.cause).__name__}: {e.cause}")
        except ray.exceptions.RayError as e:  # its worker or node died, more often than it was started again
            return Outcome(
                "error",
                f"{type(e).__name__}: the task's worker was lost {self.options.max_retries + 1} "
                f"time(s) ({str(e).strip().splitlines()[0] if str(e).strip() else 'no detail'})",
            )

    def close(self) -> None:
        if self._tasks is not None:
            self._tasks.close(self._kill)
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()
