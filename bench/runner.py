"""The runner: turns cells into the plan's artifacts, builds what is missing, records every evaluated cell.

Order of work: prepare the data every cell reads (failing fast if any is missing; its fingerprints are
part of the keys), build the plan, skip cells whose key already has an ``ok`` record, then schedule the
artifacts the others need. An artifact is ready when its dependencies are done; before it is built it is
claimed (a file lock beside it in the cache, or beside the records for a cell), so two runs on one cache
and one results folder never build the same thing: a run finding an artifact claimed works on something
else meanwhile, or waits for it, and then finds it built. A lock whose holder died is free again (the
kernel releases it), and the next claimant builds the artifact. Only this process writes records.
Under torchrun, rank 0 makes every claim and tells the other ranks; all ranks build together.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from transfer_core.cache import ModelCache, content_key
from transfer_core.datasets import DataUnavailableError, PreparedData
from transfer_core.distributed import broadcast
from transfer_core.strategies import uses_source

from .build import Builder, BuildEnv, Outcome
from .executors import Executor, ExecutorOptions, create_executor
from .plan import Artifact, EvaluationArtifact, Plan, build_plan
from .records import ResultsStore
from .suite import Cell, Suite, SuiteError

CACHE_FOLDERS = {"source": "sources", "fitted": "models"}  # where each kind of model lives in the cache
POLL_S = 0.5  # how often a run waiting for another run's artifact looks again


@dataclass
class RunSummary:
    ran: int = 0
    skipped: int = 0  # cells already done when the run started
    elsewhere: int = 0  # cells another run finished while this one ran
    failed: list[str] = field(default_factory=list)


class Claims:
    """The claims of one run: which artifacts it may build now, and which turn out to be built already."""

    def __init__(self, cache: ModelCache, store: ResultsStore, runtime):
        self.cache, self.store, self.shard = cache, store, runtime.shard
        self.records_at_start = {key: sum(statuses.values()) for key, statuses in store.tally().items()}

    def take(self, artifact: Artifact):
        """The artifact's lock, or None while another process holds it (rank 0 decides for all ranks)."""
        lock = None
        if self.shard.is_main:
            if isinstance(artifact, EvaluationArtifact):
                lock = self.store.claim(artifact.key)
            else:
                lock = self.cache.claim(CACHE_FOLDERS[artifact.kind], artifact.key)
        if not broadcast(lock is not None, self.shard):
            return None
        return lock or _NoLock()

    def built(self, artifact: Artifact) -> Optional[Outcome]:
        """After taking its claim: the artifact's outcome if it is built already (by an earlier run, or by
        another run while this one waited), else None."""
        found = None
        if self.shard.is_main:
            if isinstance(artifact, EvaluationArtifact):  # a cell is done when another run recorded it meanwhile
                records = sum(self.store.tally().get(artifact.key, {}).values())
                found = Outcome(cached=True) if records > self.records_at_start.get(artifact.key, 0) else None
            else:
                cached = self.cache.load(CACHE_FOLDERS[artifact.kind], artifact.key)
                found = Outcome(meta=cached[1], cached=True) if cached is not None else None
        return broadcast(found, self.shard)


class _NoLock:
    """What ranks other than 0 hold: rank 0 holds the real lock for them."""

    def release(self) -> None:
        pass


class Runner:
    def __init__(self, suite: Suite, root: Path, out_dir: Path, cache_dir: Path, runtime, force: bool = False,
                 command: str = "", log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                 executor: Optional[Executor] = None):
        self.suite, self.root, self.runtime, self.force, self.command = suite, root, runtime, force, command
        self.shard = runtime.shard
        self.log = log if self.shard.is_main else (lambda m: None)  # under torchrun rank 0 speaks for all
        self.executor = executor or create_executor("local", ExecutorOptions(), self.log)
        self.store = ResultsStore(out_dir)
        self.cache = ModelCache(cache_dir)
        self.env = BuildEnv(suite.name, Path(root), suite.data.download, Path(cache_dir).resolve(), runtime, command)
        self._data: dict[str, PreparedData] = {}  # shared with the local executor's builder

    # --- data and plan ----------------------------------------------------------------------------

    def prepare_data(self, cells: list[Cell]) -> None:
        """Loads (or downloads) every dataset the cells read; a problem is a SuiteError, before any training."""
        builder = Builder(self.env, self.log, self._data)
        for cell in cells:
            reads_source = uses_source(cell.strategy.name)
            for role, spec in [("target", cell.target)] + ([("source", cell.source.data)] if reads_source else []):
                try:
                    builder.data(spec)
                except DataUnavailableError as e:
                    raise SuiteError(f"{self.suite.path}: {role} {spec.label}: {e}") from None
            if reads_source:
                source_data, target = builder.data(cell.source.data), builder.data(cell.target)
                if source_data.channels != target.channels:
                    raise SuiteError(f"{self.suite.path}: source {source_data.name} has {source_data.channels}-channel images, "
                                     f"target {target.name} {target.channels}-channel; a backbone cannot take both")

    def plan(self, cells: list[Cell]) -> Plan:
        self.prepare_data(cells)
        return build_plan(self.suite, cells, self.runtime, lambda spec: self._data[content_key(spec.describe())],
                          self.executor.threads())

    def pending(self, plan: Plan, cells: list[Cell]) -> list[EvaluationArtifact]:
        """The evaluations of ``cells`` still to run: all of them with --force, else those without an ok record."""
        wanted = {cell.cell_id for cell in cells}
        evaluations = [e for e in plan.evaluations if e.cell.cell_id in wanted]
        if self.force:
            return evaluations
        done = self.store.done_hashes()
        return [e for e in evaluations if e.key not in done]

    # --- running ----------------------------------------------------------------------------------

    def run(self, cells: list[Cell], all_cells: Optional[list[Cell]] = None) -> RunSummary:
        """Runs the pending cells among ``cells``. ``all_cells`` (the whole suite) sets source amortisation."""
        plan = self.plan(all_cells or cells)
        if self.shard.is_main:
            self.store.write_plan(self.suite.name, [_plan_entry(e) for e in plan.evaluations])
        claims = Claims(self.cache, self.store, self.runtime)  # before ``pending``: what others record after this counts as theirs
        todo = self.pending(plan, cells)
        summary = RunSummary(skipped=len(cells) - len(todo))
        if summary.skipped:
            self.log(f"{summary.skipped} of {len(cells)} cells already done (ok records in {self.store.path}); skipping them")
        if not todo:
            return summary
        self.executor.start(self.env, self._data)
        try:
            self._schedule(plan.closure(e.key for e in todo), claims, summary)
        finally:
            self.executor.close()
        return summary

    def _schedule(self, artifacts: list[Artifact], claims: Claims, summary: RunSummary) -> None:
        pending, running, outcomes = list(artifacts), {}, {}
        started = 0
        while pending or running:
            claimed_elsewhere = False
            for artifact in list(pending):
                if self.executor.capacity is not None and len(running) >= self.executor.capacity:
                    break
                if not all(dep in outcomes for dep in artifact.deps):
                    continue
                claim = claims.take(artifact)
                if claim is None:  # another run is building it: work on something else, come back later
                    claimed_elsewhere = True
                    continue
                pending.remove(artifact)
                found = claims.built(artifact)
                if found is not None:
                    claim.release()
                    outcomes[artifact.key] = found
                    if isinstance(artifact, EvaluationArtifact):
                        summary.elsewhere += 1
                        self.log(f"  {artifact.name}: recorded by another run")
                    continue
                started += 1
                self.log(f"[{started}] {artifact.kind} {artifact.name} ({artifact.key[:12]})")
                running[artifact.key] = (artifact, claim)
                self.executor.submit(artifact, {dep: outcomes[dep] for dep in artifact.deps})
            if running:
                for key, outcome in self.executor.wait(timeout=POLL_S if claimed_elsewhere else None):
                    artifact, claim = running.pop(key)
                    outcomes[key] = outcome
                    try:
                        self._finished(artifact, outcome, summary)
                    finally:
                        claim.release()
            elif pending:
                time.sleep(POLL_S)  # all that is ready is being built by other runs: wait for them

    def _finished(self, artifact: Artifact, outcome: Outcome, summary: RunSummary) -> None:
        if not isinstance(artifact, EvaluationArtifact):
            if not outcome.ok:
                self.log(f"  {artifact.name}: {outcome.status}: {outcome.error}")
            return
        if self.shard.is_main:
            self.store.append(outcome.records)
        summary.ran += 1
        head = next(r for r in outcome.records if r.get("selected"))
        if head["status"] == "ok":
            alpha = f" (alpha={head['alpha']})" if head["alpha"] is not None else ""
            self.log(f"  {artifact.name}: ok{alpha}: test top-1 {head['metrics']['test_top1_pct']:.2f}%, "
                     f"target train {head['compute']['target_train_s']:.1f}s")
        else:
            summary.failed.append(artifact.name)
            self.log(f"  {artifact.name}: {head['status']}: {head['error']}")

    # --- the dry run ------------------------------------------------------------------------------

    def describe(self, cells: list[Cell], all_cells: Optional[list[Cell]] = None) -> tuple[list[list], int]:
        """The graph ``cells`` need, one row per artifact: kind, name, key, dependencies, state, needs."""
        plan = self.plan(all_cells or cells)
        todo = {e.key for e in self.pending(plan, cells)}
        wanted = {cell.cell_id for cell in cells}
        names = {key: a.name for key, a in plan.artifacts.items()}
        rows = []
        for artifact in plan.closure(e.key for e in plan.evaluations if e.cell.cell_id in wanted):
            if isinstance(artifact, EvaluationArtifact):
                state = "to run" if artifact.key in todo else "done"
            else:
                state = "cached" if self.cache.has(CACHE_FOLDERS[artifact.kind], artifact.key) else "to build"
            rows.append([artifact.kind, artifact.name, artifact.key[:12], ", ".join(names[d] for d in artifact.deps) or "—",
                         state, str(artifact.needs)])
        return rows, len(todo)


def _plan_entry(evaluation: EvaluationArtifact) -> dict:
    cell = evaluation.cell
    return {"cell_id": cell.cell_id, "source": cell.source.data.label, "target": cell.target.label,
            "backbone": cell.backbone, "strategy": cell.strategy.name, "seed": cell.seed, "config_hash": evaluation.key}
