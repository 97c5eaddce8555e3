"""What an executor is: the base every executor derives from, its options and the registry."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Optional

from transfer_core.registry import Registry

if TYPE_CHECKING:  # the command line reads executors' arguments before anything heavy is imported
    from bench.pipeline.build import BuildEnv, Outcome
    from bench.pipeline.plan import Artifact


class Executor:
    """Builds artifacts handed to it, each from its dependencies' outcomes.

    An executor declares its own settings (``Options``, a dataclass whose ``__post_init__`` raises ValueError
    for a bad value) and the command-line arguments that set them (``add_arguments``); ``bench run`` shows each
    executor's arguments in a group of its own and refuses them without ``--executor NAME``."""

    name: ClassVar[str]
    # builds one artifact at a time (the order they come in changes no wall time; the plan's order writes a
    # cell's record soonest); else the runner offers what most others wait on first (``Plan.most_awaited_first``)
    one_at_a_time: ClassVar[bool] = False

    @dataclass(frozen=True)
    class Options:
        threads: Optional[int] = None  # torch threads per artifact (None: the executor's default)

        def __post_init__(self):
            if self.threads is not None and self.threads < 1:
                raise ValueError(f"--threads: expected a positive number, got {self.threads}")

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """Adds the arguments of this executor's own options, each with ``dest`` the option's field and default
        None (an argument left out takes the option's default)."""

    def __init__(self, options: "Executor.Options", log: Callable[[str], None]):
        self.options, self.log = options, log

    def cuda_available(self) -> bool:
        """Whether the machines it builds on have CUDA GPUs (what runtime.device: auto resolves against)."""
        import torch

        return torch.cuda.is_available()

    def threads(self) -> int:
        """CPU threads each artifact runs with: what a scheduler reserves for it."""
        return self.options.threads or 1

    def will_build(self, artifacts: list[Artifact]) -> None:
        """Called once before ``start`` with every artifact the run will offer (``--executor auto`` chooses by
        them)."""

    def start(self, env: BuildEnv, data: dict) -> None:
        """Called once before the first ``submit``; ``data`` holds the datasets the driver already prepared."""

    def has_room(self, artifact: Artifact) -> bool:
        """Whether ``artifact`` can start now. The runner offers ready artifacts in the plan's order (one at a
        time), or evaluations first and then those that more of the others wait on (``Plan.most_awaited_first``)."""
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


def executor_options(name: str, **options) -> Executor.Options:
    """Executor ``name``'s options from ``options`` (fields of its ``Options``; None leaves a field at its
    default). Raises UnknownNameError for an unknown name and ValueError, in one line, for a bad or foreign one."""
    cls = EXECUTORS.get(name)
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    given = {key: value for key, value in options.items() if value is not None}
    foreign = sorted(set(given) - fields)
    if foreign:
        raise ValueError(f"executor {name} has no option {', '.join(foreign)}")
    return cls.Options(**given)


def create_executor(name: str, log: Callable[[str], None], **options) -> Executor:
    """The executor ``name`` with ``options``, as ``executor_options`` reads them."""
    return EXECUTORS.get(name)(executor_options(name, **options), log)
