"""Executors: where artifacts of the plan are built. The runner decides what to build and in which order
(an artifact is ready when its dependencies are done, and claimed so no two processes build it); an
executor only builds what it is handed, in this process (``local``) or as Ray tasks across the GPUs and
nodes of a cluster (``ray``). A new executor is one module in this package with ``@register_executor``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional

from transfer_core.registry import Registry

from ..build import BuildEnv, Outcome
from ..plan import Artifact


@dataclass(frozen=True)
class ExecutorOptions:
    threads: Optional[int] = None  # torch threads per artifact (None: this machine's cores locally, 1 per Ray task)
    ray_address: Optional[str] = None  # None: start a Ray instance on this machine; "auto" or HOST:PORT: join a cluster
    max_retries: int = 2  # Ray: how often a task whose worker died is started again


class Executor:
    """Builds artifacts handed to it, each from its dependencies' outcomes."""

    name: ClassVar[str]

    def __init__(self, options: ExecutorOptions, log: Callable[[str], None]):
        self.options, self.log = options, log

    def cuda_available(self) -> bool:
        """Whether the machines it builds on have CUDA GPUs (what runtime.device: auto resolves against)."""
        import torch

        return torch.cuda.is_available()

    def threads(self) -> int:
        """CPU threads each artifact runs with: what a scheduler reserves for it."""
        return self.options.threads or 1

    def start(self, env: BuildEnv, data: dict) -> None:
        """Called once before the first ``submit``; ``data`` holds the datasets the driver already prepared."""

    def has_room(self, artifact: Artifact) -> bool:
        """Whether ``artifact`` can start now. The runner offers ready artifacts in the plan's order, which
        puts a cell's evaluation before the next cell's training: records come as cells finish."""
        raise NotImplementedError

    def submit(self, artifact: Artifact, inputs: dict[str, Outcome]) -> None:
        raise NotImplementedError

    def wait(self, timeout: Optional[float]) -> list[tuple[str, Outcome]]:
        """(key, outcome) of artifacts finished since the last call; waits up to ``timeout`` seconds
        (None: until one finishes) when none has."""
        raise NotImplementedError

    def close(self) -> None:
        pass


EXECUTORS: Registry[type[Executor]] = Registry("executor")


register_executor = EXECUTORS.register_class


def create_executor(name: str, options: ExecutorOptions, log: Callable[[str], None]) -> Executor:
    return EXECUTORS.get(name)(options, log)


# every module of this package registers one executor (none imports its engine until it is created)
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
