"""The Ray executor: every artifact a Ray task, with the resources it needs, on any node of the cluster.

Without an address it starts a Ray instance on this machine with all its GPUs and cores; with one
(``auto`` or ``HOST:PORT``) it joins that cluster. A task that trains asks for a whole GPU, a linear probe
or an evaluation for a share of one (``Needs`` in ``bench/plan.py``), and on a CPU-only cluster for its
threads' CPUs. The runner starts a task once its dependencies are done and holds the artifact's claim
meanwhile, so a model is built once however many tasks need it. Tasks hand models to one another through
the model cache, so ``--cache-dir`` must be storage every node reads and writes (checked at start);
outcomes (a model's meta, a cell's records) come back to the driver, the only writer of records. A task
whose worker or node dies is started again, up to ``max_retries`` times; its half-written files never
appear under a model's name.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

import torch

from ..build import BuildEnv, Builder, Outcome
from ..plan import Artifact, SourceArtifact
from ..suite import SuiteError
from . import Executor, register_executor

KILL_GRACE_S = 30.0  # past its time limit, a task that has not ended itself has its worker killed

_BUILDERS: dict[BuildEnv, Builder] = {}  # per worker process: its datasets stay loaded between tasks


def build_in_worker(env: BuildEnv, artifact: Artifact, inputs: dict[str, Outcome]) -> Outcome:
    import torch

    torch.set_num_threads(max(1, int(artifact.needs.cpus)))
    env.runtime.apply_backend_flags()
    if env not in _BUILDERS:
        _BUILDERS[env] = Builder(env, log=lambda m: print(m, file=sys.stderr, flush=True))
    return _BUILDERS[env].build(artifact, inputs)


def probe_shared_folder(folder: str, token: str, data_root: str) -> dict:
    """Run on each node: can it read the driver's token in ``folder``, and write one back? Does it see the data?"""
    from transfer_core.versions import every_version

    answer = {
        "host": socket.gethostname(),
        "code_versions": every_version(),
        "read": None,
        "wrote": None,
        "data_root": Path(data_root).is_dir(),
    }
    try:
        answer["read"] = (Path(folder) / f".probe-{token}").read_text() == token
        reply = Path(folder) / f".probe-{token}-{uuid.uuid4().hex}"
        reply.write_text(token)
        answer["wrote"] = str(reply)
    except OSError as e:
        answer["error"] = f"{type(e).__name__}: {e}"
    return answer


def shared_folder_problems(folder: Path, answers: dict[str, dict], code_versions: dict, data_root: Path) -> list[str]:
    """What the nodes' answers to ``probe_shared_folder`` say is wrong, one phrase per node."""
    problems = []
    for node, answer in answers.items():
        if data_root.is_dir() and not answer["data_root"]:
            problems.append(f"node {node} does not see the data root {data_root}")
        if answer.get("error") or not answer["read"]:
            problems.append(f"node {node} cannot read the cache ({answer.get('error') or 'it sees other files there'})")
        elif not answer["wrote"] or not Path(answer["wrote"]).is_file():
            problems.append(f"node {node} writes to the cache where this machine does not see it")
        elif answer["code_versions"] != code_versions:
            differing = sorted(set(answer["code_versions"].items()) ^ set(code_versions.items()))
            components = sorted({component for component, _ in differing})
            problems.append(
                f"node {node} runs other code (other versions of {', '.join(components)}); "
                "install the same version on every node"
            )
    return problems


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
            _check_reachable(options.ray_address)
            try:
                ray.init(address=options.ray_address, include_dashboard=False, logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise SuiteError(
                    f"--ray-address {options.ray_address}: cannot join a Ray cluster there ({str(e).splitlines()[0]})"
                ) from None
        self._running: dict = {}  # object ref -> the artifact it builds
        self._deadlines: dict = {}  # object ref -> when its worker is killed (with a time limit)
        self._done: list = []  # (key, outcome) of artifacts built on the driver, not yet handed back

    def cuda_available(self) -> bool:
        return self._ray.cluster_resources().get("GPU", 0) > 0

    def start(self, env: BuildEnv, data: dict) -> None:
        # workers may start in another folder; the driver has prepared (and downloaded) every dataset already
        self._env = dataclasses.replace(env, data_root=env.data_root.resolve(), download=False)
        self._task = self._ray.remote(build_in_worker)
        self._check_shared_storage(self._env)
        resources = self._ray.cluster_resources()
        self._cluster = (resources.get("CPU", 0), resources.get("GPU", 0))
        self.log(
            f"ray: {len([n for n in self._ray.nodes() if n['Alive']])} node(s), {self._cluster[0]:g} CPUs, "
            f"{self._cluster[1]:g} GPUs; model cache {env.cache_dir}"
        )

    def _check_shared_storage(self, env: BuildEnv) -> None:
        """Fails in one line unless every node reads what this machine writes to the cache, and the reverse,
        runs this code, and sees the data root if this machine has one."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from transfer_core.versions import every_version

        ray, cache_dir = self._ray, env.cache_dir
        token = uuid.uuid4().hex
        remote_probe = ray.remote(probe_shared_folder)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            (cache_dir / f".probe-{token}").write_text(token)
            nodes = {
                node["NodeID"]: f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})"
                for node in ray.nodes()
                if node["Alive"]
            }
            refs = {
                remote_probe.options(
                    num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
                ).remote(str(cache_dir), token, str(env.data_root)): node_id
                for node_id in nodes
            }
            ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=300)
            answers = {nodes[refs[ref]]: ray.get(ref) for ref in ready}
            problems = shared_folder_problems(cache_dir, answers, every_version(), env.data_root)
            problems += [f"node {nodes[refs[ref]]} did not answer within 300 s" for ref in late]
        except ray.exceptions.RayError as e:  # a node that cannot even run the probe (another version, say)
            problems = [
                f"a node could not run the check ({str(e).strip().splitlines()[-1]}); "
                "install the same version on every node"
            ]
        except OSError as e:
            raise SuiteError(f"--cache-dir {cache_dir}: cannot write there ({e.strerror})") from None
        finally:
            for stale in cache_dir.glob(f".probe-{token}*"):
                stale.unlink(missing_ok=True)
        if problems:
            raise SuiteError(
                f"every Ray node must read and write --cache-dir {cache_dir} and read the data: {'; '.join(problems)}"
            )

    def has_room(self, artifact: Artifact) -> bool:
        """Room in the cluster's CPUs and GPUs beside what is in flight. Ray would queue more, but tasks
        queued early would run in submission order, every cell's training before any cell's evaluation."""
        if not self._running:
            return True  # whatever it asks for, Ray places it or says why not
        cpus = sum(a.needs.cpus for a in self._running.values()) + artifact.needs.cpus
        gpus = sum(a.needs.gpus for a in self._running.values()) + artifact.needs.gpus
        return cpus <= self._cluster[0] and gpus <= self._cluster[1]

    def submit(self, artifact: Artifact, inputs: dict[str, Outcome]) -> None:
        if isinstance(artifact, SourceArtifact) and artifact.source.pretrained:
            # published weights are loaded, not trained, and the run found them on this machine before it
            # started: loaded here (on the CPU) into the shared cache, so no node needs the weights file
            cpu = dataclasses.replace(
                self._env, runtime=dataclasses.replace(self._env.runtime, device=torch.device("cpu"))
            )
            self._done.append((artifact.key, Builder(cpu, log=self.log).build(artifact, inputs)))
            return
        ref = self._task.options(
            num_cpus=artifact.needs.cpus,
            num_gpus=artifact.needs.gpus,
            max_retries=self.options.max_retries,
            name=artifact.name,
        ).remote(self._env, artifact, inputs)
        self._running[ref] = artifact
        if self._env.time_limit_s:
            # the worker's own alarm ends a task on time; this catches one stuck in native code, which no alarm reaches
            self._deadlines[ref] = time.monotonic() + self._env.time_limit_s + KILL_GRACE_S

    def wait(self, timeout: Optional[float]) -> list[tuple[str, Outcome]]:
        if self._done:
            finished, self._done = self._done, []
            return finished
        if not self._running:
            return []
        ray = self._ray
        if self._deadlines:  # wake up for the first deadline
            first = max(0.0, min(self._deadlines.values()) - time.monotonic())
            timeout = first if timeout is None else min(timeout, first)
        ready, _ = ray.wait(list(self._running), num_returns=1, timeout=timeout)
        if ready:  # and whatever else is done already
            ready, _ = ray.wait(list(self._running), num_returns=len(self._running), timeout=0)
        finished = []
        now = time.monotonic()
        for ref, deadline in list(self._deadlines.items()):
            if ref not in ready and now >= deadline:
                ray.cancel(ref, force=True)  # kills its worker: whatever it is stuck in, it stops
                del self._deadlines[ref]
                finished.append(
                    (
                        self._running.pop(ref).key,
                        Outcome(
                            "timeout",
                            f"ran past runtime.cell_timeout_s ({self._env.time_limit_s:g} s); its worker was killed",
                        ),
                    )
                )
        for ref in ready:
            self._deadlines.pop(ref, None)
            key = self._running.pop(ref).key
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # raised past the builder, which turns errors into outcomes
                outcome = Outcome("error", f"{type(e.cause).__name__}: {e.cause}")
            except ray.exceptions.RayError as e:  # its worker or node died, more often than it was started again
                outcome = Outcome(
                    "error",
                    f"{type(e).__name__}: the task's worker was lost {self.options.max_retries + 1} "
                    f"time(s) ({str(e).strip().splitlines()[0] if str(e).strip() else 'no detail'})",
                )
            finished.append((key, outcome))
        return finished

    def close(self) -> None:
        for ref in self._running:
            self._ray.cancel(ref, force=True)
        self._running.clear()
        self._deadlines.clear()
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()
