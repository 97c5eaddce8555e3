"""The submitit executor: every artifact a job of a SLURM cluster (or, with ``--submitit-cluster local``, a
process on this machine), submitted and watched through submitit.

A job asks for its artifact's CPUs and, where the nodes have GPUs, one GPU when the artifact needs any share of
one (SLURM hands out whole GPUs; on this machine each job is given the least busy GPU). The driver keeps at most
``--max-jobs`` jobs in the queue, so a cell's evaluation is submitted before the next cell's training, as the
runner offers them. Jobs hand models to one another through the model cache, so ``--cache-dir`` must be storage
the cluster's nodes read and write (checked at start by a job); outcomes come back to the driver, the only
writer of records. submitit keeps each job's pickled task, its pickled result and its logs in
``--submitit-folder`` (default: ``submitit-USER`` beside the model cache's models, made private to the user:
the pickles are code, which no one else may write).
"""

from __future__ import annotations

import getpass
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from bench.errors import SuiteError
from bench.pipeline.executors.base import Executor, register_executor

if TYPE_CHECKING:
    from bench.pipeline.build import BuildEnv, Outcome
    from bench.pipeline.plan import Artifact

POLL_S = 0.5  # how often the jobs' states are read while waiting (submitit reads SLURM's at most every few s)
PROBE_TIMEOUT_S = 900.0  # the shared-cache check waits this long for its job to be scheduled and to answer


@register_executor("submitit")
class SubmititExecutor(Executor):
    @dataclass(frozen=True)
    class Options(Executor.Options):
        cluster: Optional[str] = None  # "slurm" or "local"; None: SLURM where sbatch is found, else local
        partition: Optional[str] = None  # the SLURM partition jobs go to (None: the cluster's default)
        max_jobs: int = 8  # jobs queued or running at once
        folder: Optional[str] = None  # submitit's folder of pickled tasks and job logs (None: <cache>/submitit-USER)
        gpus: bool = False  # SLURM jobs ask for a GPU when an artifact needs one (the driver may have none)
        time_min: Optional[int] = None  # SLURM's time limit of a job (None: twice the cell timeout, else 24 h)

        def __post_init__(self):
            super().__post_init__()
            if self.cluster not in (None, "slurm", "local"):
                raise ValueError(f"--submitit-cluster: expected slurm or local, got {self.cluster}")
            if self.max_jobs < 1:
                raise ValueError(f"--max-jobs: expected a positive number, got {self.max_jobs}")
            if self.time_min is not None and self.time_min < 1:
                raise ValueError(f"--slurm-time-min: expected a positive number of minutes, got {self.time_min}")

    @classmethod
    def add_arguments(cls, group) -> None:
        group.add_argument(
            "--submitit-cluster", dest="cluster", help="slurm or local (default: slurm where sbatch is found)"
        )
        group.add_argument("--slurm-partition", dest="partition", help="the SLURM partition jobs go to")
        group.add_argument("--max-jobs", type=int, dest="max_jobs", help="jobs queued or running at once (default 8)")
        group.add_argument(
            "--submitit-folder", dest="folder", help="job logs and pickled tasks (default <cache>/submitit)"
        )
        group.add_argument(
            "--slurm-gpus",
            action="store_const",
            const=True,
            dest="gpus",
            help="the cluster's nodes have GPUs: jobs that train or evaluate ask for one",
        )
        group.add_argument(
            "--slurm-time-min",
            type=int,
            dest="time_min",
            help="a job's SLURM time limit in minutes (default: twice runtime.cell_timeout_s, else 24 h; a partition "
            "with a lower MaxTime needs it)",
        )

    def __init__(self, options, log):
        super().__init__(options, log)
        try:
            import submitit
        except ModuleNotFoundError:
            raise SuiteError("--executor submitit needs submitit: pip install 'transfer-bench[slurm]'") from None
        self._submitit = submitit
        self._tasks = None  # RemoteTasks, once started

    def cuda_available(self) -> bool:
        if not self._local():
            return self.options.gpus  # the nodes' GPUs, which the driver may not have
        import torch

        return torch.cuda.is_available()

    def _local(self) -> bool:
        return (self.options.cluster or self._submitit.AutoExecutor.which()) == "local"

    def start(self, env: BuildEnv, data: dict) -> None:
        import torch

        from bench.pipeline.executors.remote import RemoteTasks, check_shared_storage

        self._tasks = RemoteTasks(env, self.log)
        folder = Path(self.options.folder) if self.options.folder else env.cache_dir / f"submitit-{getpass.getuser()}"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)  # pickles are code: no one else may write them, nor read the results
        if self._local():
            self._jobs = self._submitit.LocalExecutor(folder=folder)  # the one that takes visible_gpus
            self._gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        else:
            self._jobs = self._submitit.AutoExecutor(folder=folder, cluster="slurm")
            if self.options.partition:
                self._jobs.update_parameters(slurm_partition=self.options.partition)
            self._gpus = 0
        self._gpu_of: dict = {}  # local job -> the GPU it was given
        check_shared_storage(self._tasks.env, self._ask_a_node, "node jobs run on")
        where = "local" if self._local() else "SLURM"
        self.log(f"submitit: {where} jobs, at most {self.options.max_jobs} at once; logs in {folder}")

    def _ask_a_node(self, folder: str, token: str, data_root: str) -> tuple[dict[str, dict], list[str]]:
        """``probe_shared_folder`` run as a job (SLURM places it where it places the others)."""
        from bench.pipeline.executors.remote import probe_shared_folder

        self._jobs.update_parameters(name="cache check", cpus_per_task=1, timeout_min=10, gpus_per_node=0)
        job = self._jobs.submit(probe_shared_folder, folder, token, data_root)
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while not job.done() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if not job.done():
            job.cancel(check=False)
            return {}, [f"the check's job {job.job_id} (not run within {PROBE_TIMEOUT_S:g} s)"]
        try:
            answer = job.result()
        except Exception as e:  # a node that cannot even run it (another environment, say)
            raise SuiteError(f"the cache check's job {job.job_id} failed: {str(e).strip().splitlines()[-1]}") from None
        return {answer["host"]: answer}, []

    def has_room(self, artifact: Artifact) -> bool:
        running = self._tasks.running.values()
        if len(running) >= self.options.max_jobs:
            return False
        # on this machine, jobs share its GPUs as Ray tasks do: shares of one add up to at most one
        return not self._gpus or not running or sum(a.needs.gpus for a in running) + artifact.needs.gpus <= self._gpus

    def submit(self, artifact: Artifact, inputs: dict[str, Outcome]) -> None:
        from bench.pipeline.executors.remote import build_in_worker

        if self._tasks.built_on_driver(artifact, inputs):
            return
        limit_s = self._tasks.time_limit_s
        gpu = None
        if self._local():
            # the least busy GPU, or none for an artifact that needs none (CUDA_VISIBLE_DEVICES empty)
            if self._gpus and artifact.needs.gpus:
                busy = Counter({g: 0.0 for g in range(self._gpus)})
                for job, used in self._gpu_of.items():
                    busy[used] += self._tasks.running[job].needs.gpus
                gpu = min(busy, key=lambda g: (busy[g], g))
            self._jobs.update_parameters(
                gpus_per_node=0 if gpu is None else 1, visible_gpus=() if gpu is None else (gpu,)
            )
        else:
            self._jobs.update_parameters(
                cpus_per_task=int(artifact.needs.cpus),
                gpus_per_node=math.ceil(artifact.needs.gpus) if self.options.gpus else 0,
            )
        self._jobs.update_parameters(
            name=artifact.name,
            # the job's own limit, past the worker's alarm and the driver's kill: the last resort
            timeout_min=self.options.time_min or (math.ceil(2 * limit_s / 60) if limit_s else 24 * 60),
        )
        job = self._jobs.submit(build_in_worker, self._tasks.env, artifact, inputs)
        self._tasks.started(job, artifact, clock=False)  # the clock starts when the job runs, not in the queue
        if gpu is not None:
            self._gpu_of[job] = gpu

    def wait(self, timeout: Optional[float]) -> list[tuple[str, Outcome]]:
        tasks = self._tasks
        finished = tasks.built_here()
        if finished or not tasks.running:
            return finished
        waited_until = None if timeout is None else time.monotonic() + timeout
        while True:  # submitit has no wait-for-any: its jobs' states are polled
            ready = {job for job in tasks.running if job.done()}
            for job in tasks.running:
                if job not in ready and not tasks.clocked(job) and job.state == "RUNNING":
                    tasks.clock(job)
            late = tasks.late(ready)
            if ready or late or (waited_until is not None and time.monotonic() >= waited_until):
                for job in ready | set(late):
                    self._gpu_of.pop(job, None)
                return tasks.collect(ready, late, self._kill, self._result)
            time.sleep(POLL_S)

    @staticmethod
    def _kill(job) -> None:
        job.cancel(check=False)  # scancel

    @staticmethod
    def _result(job) -> Outcome:
        from bench.pipeline.build import Outcome

        try:
            return job.result()
        except Exception as e:  # the job died (killed, out of memory, preempted): the builder never answered
            detail = str(e).strip().splitlines()
            return Outcome(
                "error", f"job {job.job_id} ended without a result ({detail[-1] if detail else 'no detail'})"
            )

    def close(self) -> None:
        if self._tasks is not None:
            self._tasks.close(self._kill)
