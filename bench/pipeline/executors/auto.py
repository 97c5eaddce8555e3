"""The auto executor: what ``--executor auto`` runs where it would use worker processes (a run on the CPU of a
machine with cores to share). It waits for the plan: a run that builds fewer than ``MIN_MODELS_FOR_WORKERS``
models builds them in this process instead, since starting the workers (about 3 s) costs a small run more than
they save it. Given ``--workers``, it always uses them. Models already in the cache are not counted (they
are found, not built), nor are evaluations and estimates: the measurements below are of trainings, so a run
that only evaluates or estimates (``bench rank`` over pretrained sources) builds in this process.

Measured on 2 Zen 4 cores, the digits suites one run after the other, in this process against two workers:
3 models (a source, a probe, a one-epoch fine-tune) 6.8 s against 11.9-12.9 s; 6 models (``suites/quick.yaml``
with one seed) 11.9-12.4 s against 12.6-12.7 s; 18 models (``suites/quick.yaml``) 29-32 s against 21-24 s.
The threshold sits just above the near tie at 6. A run of a few long trainings loses at most what the workers
would have gained (1.17x on ResNet-8: ``docs/runtime.md#threads-on-a-small-cpu-machine``); a chain of them
gains nothing from workers anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from bench.pipeline.executors.base import Executor, register_executor
from bench.pipeline.executors.local import LocalExecutor
from bench.pipeline.executors.processes import ProcessesExecutor

if TYPE_CHECKING:
    from bench.pipeline.build import BuildEnv, Outcome
    from bench.pipeline.plan import Artifact

MIN_MODELS_FOR_WORKERS = 8  # the fewest models a run must build for workers: the measurements above


def models_to_build(artifacts: list[Artifact]) -> int:
    """The source, fitted and refit models among ``artifacts`` (what trains; a pretrained source is loaded)."""
    from bench.pipeline.plan import FittedArtifact, RefitArtifact, SourceArtifact

    return sum(
        isinstance(a, (FittedArtifact, RefitArtifact)) or (isinstance(a, SourceArtifact) and a.seed is not None)
        for a in artifacts
    )


@register_executor("auto")
class AutoExecutor(Executor):
    Options = ProcessesExecutor.Options  # its arguments are the processes executor's (``--workers``)

    def __init__(self, options, log):
        super().__init__(options, log)
        self.chosen: Executor = ProcessesExecutor(options, log)

    def will_build(self, artifacts: list[Artifact]) -> None:
        self.chosen.close()  # chosen afresh for each run; closing one that never started does nothing
        models = models_to_build(artifacts)
        if models >= MIN_MODELS_FOR_WORKERS or self.options.workers is not None:
            self.chosen = ProcessesExecutor(self.options, self.log)
        else:
            self.chosen = LocalExecutor(LocalExecutor.Options(threads=self.options.threads), self.log)
            self.log(
                f"auto: {models} model(s) to build, fewer than {MIN_MODELS_FOR_WORKERS}: built in this process "
                "(worker processes would take longer to start than they save; --executor processes uses them)"
            )

    @property
    def one_at_a_time(self) -> bool:  # type: ignore[override]  # the chosen executor's
        return self.chosen.one_at_a_time

    def threads(self) -> int:
        return self.chosen.threads()

    def cuda_available(self) -> bool:
        return self.chosen.cuda_available()

    def start(self, env: BuildEnv, data: dict) -> None:
        self.chosen.start(env, data)

    def has_room(self, artifact: Artifact) -> bool:
        return self.chosen.has_room(artifact)

    def submit(self, artifact: Artifact, inputs: dict[str, Outcome]) -> None:
        self.chosen.submit(artifact, inputs)

    def wait(self, timeout: Optional[float]) -> list[tuple[str, Outcome]]:
        return self.chosen.wait(timeout)

    def close(self) -> None:
        self.chosen.close()
