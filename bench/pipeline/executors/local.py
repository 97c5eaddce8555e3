"""The local executor: every artifact built in this process, one at a time, on its device (under torchrun,
by all ranks together)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from bench.pipeline.executors.base import Executor, register_executor

if TYPE_CHECKING:
    from bench.pipeline.build import BuildEnv, Outcome
    from bench.pipeline.plan import Artifact


@register_executor("local")
class LocalExecutor(Executor):
    one_at_a_time = True

    def start(self, env: BuildEnv, data: dict) -> None:
        import torch

        from bench.pipeline.build import Builder

        self._saved_threads = torch.get_num_threads()
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        self._builder = Builder(env, self.log, data)
        self._finished: list[tuple[str, Outcome]] = []

    def threads(self) -> int:
        import torch

        return self.options.threads or torch.get_num_threads()

    def has_room(self, artifact: Artifact) -> bool:
        return not self._finished  # one at a time: the last one's outcome collected first

    def submit(self, artifact: Artifact, inputs: dict[str, Outcome]) -> None:
        self._finished.append((artifact.key, self._builder.build(artifact, inputs)))

    def wait(self, timeout: Optional[float]) -> list[tuple[str, Outcome]]:
        finished, self._finished = self._finished, []
        return finished

    def close(self) -> None:
        if hasattr(self, "_saved_threads"):
            import torch

            torch.set_num_threads(self._saved_threads)
