"""What every executor that builds artifacts away from the driver needs, written once: worker processes
building with one ``Builder`` each, the check that the model cache is storage every node shares, pretrained
sources built on the driver, and time limits on tasks past which a task's worker is killed."""

from __future__ import annotations

import dataclasses
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Hashable, Optional

from bench.errors import SuiteError
from bench.pipeline.build import BuildEnv, Builder, Outcome
from bench.pipeline.plan import Artifact, SourceArtifact

KILL_GRACE_S = 30.0  # past its time limit, a task that has not ended itself has its worker killed

_BUILDERS: dict[BuildEnv, Builder] = {}  # per worker process: its datasets stay loaded between tasks


def worker_env(env: BuildEnv) -> BuildEnv:
    """The build environment a worker gets: workers may start in another folder, and the driver has prepared
    (and downloaded) every dataset already."""
    return dataclasses.replace(env, data_root=env.data_root.resolve(), download=False)


def build_in_worker(
    env: BuildEnv, artifact: Artifact, inputs: dict[str, Outcome], log_prefix: str = "", threads: int = 0
) -> Outcome:
    """Builds one artifact in a worker process, with ``threads`` torch threads (0: the CPUs its task reserved,
    its data workers' included); its log lines, after ``log_prefix``, go to standard error."""
    import torch

    torch.set_num_threads(threads or max(1, int(artifact.needs.cpus)))
    env.runtime.apply_backend_flags()
    if env not in _BUILDERS:
        _BUILDERS[env] = Builder(env, log=lambda m: print(log_prefix + m, file=sys.stderr, flush=True))
    return _BUILDERS[env].build(artifact, inputs)


def builds_on_driver(artifact: Artifact) -> bool:
    """Published weights are loaded, not trained, and the run found them on this machine before it started:
    they are loaded on the driver (on the CPU) into the shared cache, so no node needs the weights file."""
    return isinstance(artifact, SourceArtifact) and artifact.source.pretrained is not None


def build_on_driver(env: BuildEnv, artifact: Artifact, inputs: dict[str, Outcome], log) -> Outcome:
    import torch

    cpu = dataclasses.replace(env, runtime=dataclasses.replace(env.runtime, device=torch.device("cpu")))
    return Builder(cpu, log=log).build(artifact, inputs)


# --- the shared cache -----------------------------------------------------------------------------------


def probe_shared_folder(folder: str, token: str, data_root: str) -> dict:
    """Run on each node: can it read the driver's token in ``folder``, and write one back? Does it see the
    data? Which code does it run?"""
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


# each node's answer to probe_shared_folder(folder, token, data_root), by node name, and the nodes that did not
# answer in time; an engine's error (a node that cannot run the probe at all) as an exception
AskEveryNode = Callable[[str, str, str], tuple[dict[str, dict], list[str]]]


def check_shared_storage(env: BuildEnv, ask_every_node: AskEveryNode, where: str) -> None:
    """Fails in one line unless every node reads what this machine writes to the cache, and the reverse, runs
    this code, and sees the data root if this machine has one. ``where`` names the nodes (e.g. "Ray node")."""
    from transfer_core.versions import every_version

    cache_dir = env.cache_dir
    token = uuid.uuid4().hex
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / f".probe-{token}").write_text(token)
        answers, late = ask_every_node(str(cache_dir), token, str(env.data_root))
        problems = shared_folder_problems(cache_dir, answers, every_version(), env.data_root)
        problems += [f"node {node} did not answer in time" for node in late]
    except OSError as e:
        raise SuiteError(f"--cache-dir {cache_dir}: cannot write there ({e.strerror})") from None
    finally:
        for stale in cache_dir.glob(f".probe-{token}*"):
            stale.unlink(missing_ok=True)
    if problems:
        raise SuiteError(
            f"every {where} must read and write --cache-dir {cache_dir} and read the data: {'; '.join(problems)}"
        )


# --- the driver's book of tasks ---------------------------------------------------------------------


class RemoteTasks:
    """What a driver keeps of the tasks it has sent away: the artifact each builds, when each is killed under a
    time limit, and the outcomes of artifacts it built itself meanwhile (pretrained sources), not yet handed
    back. An executor says how to kill a task and how to read its result; the bookkeeping is here, once.

    The time limit: a worker's own alarm ends a task on time (``bench/pipeline/build.py``); a task stuck in
    native code, which no alarm reaches, is killed ``KILL_GRACE_S`` past it."""

    def __init__(self, env: BuildEnv, log):
        self.env, self.log = worker_env(env), log
        self.time_limit_s = env.time_limit_s
        self.running: dict[Hashable, Artifact] = {}
        self._deadlines: dict[Hashable, float] = {}
        self._built_here: list[tuple[str, Outcome]] = []

    def built_on_driver(self, artifact: Artifact, inputs: dict[str, Outcome]) -> bool:
        """Builds ``artifact`` here, if it is one the driver builds (``builds_on_driver``); whether it did."""
        if not builds_on_driver(artifact):
            return False
        self._built_here.append((artifact.key, build_on_driver(self.env, artifact, inputs, self.log)))
        return True

    def started(self, task: Hashable, artifact: Artifact, clock: bool = True) -> None:
        """A task sent away; ``clock``: its time limit runs from now (False: from ``clock``, once it runs: a job
        waiting in a queue is not late)."""
        self.running[task] = artifact
        if clock:
            self.clock(task)

    def clock(self, task: Hashable) -> None:
        """Starts ``task``'s time limit now."""
        if self.time_limit_s:
            self._deadlines[task] = time.monotonic() + self.time_limit_s + KILL_GRACE_S

    def clocked(self, task: Hashable) -> bool:
        return task in self._deadlines

    def built_here(self) -> list[tuple[str, Outcome]]:
        """The outcomes of what the driver built since the last call."""
        finished, self._built_here = self._built_here, []
        return finished

    def wait_at_most(self, timeout: Optional[float]) -> Optional[float]:
        """``timeout`` shortened to wake up for the first deadline."""
        if not self._deadlines:
            return timeout
        first = max(0.0, min(self._deadlines.values()) - time.monotonic())
        return first if timeout is None else min(timeout, first)

    def late(self, finished: set) -> list[Hashable]:
        """The tasks past their deadline that have not finished."""
        now = time.monotonic()
        return [task for task, at in self._deadlines.items() if task not in finished and now >= at]

    def collect(self, ready, late, kill: Callable, result: Callable) -> list[tuple[str, Outcome]]:
        """(key, outcome) of the ``ready`` tasks, read by ``result(task)``, and of the ``late`` ones, killed by
        ``kill(task)``: each forgotten here."""
        finished = []
        for task in late:
            kill(task)  # whatever it is stuck in, it stops
            finished.append((self._forget(task), self.timed_out()))
        for task in ready:
            key = self._forget(task)
            finished.append((key, result(task)))
        return finished

    def timed_out(self) -> Outcome:
        return Outcome("timeout", f"ran past runtime.cell_timeout_s ({self.time_limit_s:g} s); its worker was killed")

    def close(self, kill: Callable) -> None:
        for task in list(self.running):
            kill(task)
            self._forget(task)

    def _forget(self, task: Hashable) -> str:
        self._deadlines.pop(task, None)
        return self.running.pop(task).key
