"""The runner: turns cells into the plan's artifacts, builds what is missing, records every evaluated cell.

Order of work: prepare the data every cell reads (failing fast if any is missing; its fingerprints are
part of the keys), build the plan, skip cells whose key already has an ``ok`` record, then schedule the
artifacts the others need. An artifact is ready when its dependencies are done; before it is built it is
claimed (a file lock beside it in the cache, or beside the records for a cell), so two runs on one cache
and one results folder never build the same thing: a run finding an artifact claimed works on something
else meanwhile, or waits for it, and then finds it built. A lock whose holder died is free again (the
kernel releases it), and the next claimant builds the artifact. Only this process writes records.
Under torchrun, rank 0 makes every claim and tells the other ranks; all ranks build together.

Longer than 400 lines on purpose: claiming, scheduling, resuming and recording are one loop whose invariants
(each artifact built once, each record written once, by this process) hold only when read together.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from bench.pipeline.build import BuildEnv, Builder, Outcome
from bench.pipeline.estimates import ESTIMATE_RECORDS, estimate_problem, estimates_of
from bench.pipeline.executors import Executor, create_executor
from bench.pipeline.plan import (
    RECORDED,
    Artifact,
    EstimatorArtifact,
    EvaluationArtifact,
    Plan,
    ShiftEvaluationArtifact,
    build_plan,
)
from bench.pipeline.shifts import DatasetShift
from bench.pipeline.suite import Cell, Suite, SuiteError
from bench.results.records import SHIFT_RECORDS, ResultsStore, candidate
from transfer_core.cache import ModelCache
from transfer_core.datasets import (
    DataUnavailableError,
    FileSplit,
    PreparedData,
    create_dataset_reader,
    file_hashes,
    first_undecodable,
)
from transfer_core.distributed import barrier, broadcast, same_on_all_ranks
from transfer_core.files import write_file
from transfer_core.pretrained import WeightsUnavailableError, check_weights, sha256, weights_file
from transfer_core.shifts import corrupted_side
from transfer_core.shifts.corruptions import MIN_SIDE

POLL_S = 0.5  # how often a run waiting for another run's artifact looks again


@dataclass
class _Scheduling:
    """Where one run's scheduling stands: what waits to start, what runs (with its claim), what is done."""

    pending: list[Artifact]
    running: dict[str, tuple[Artifact, object]] = field(default_factory=dict)  # key: (artifact, its claim)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)  # keys seen claimed by another run (logged once)
    started: int = 0


@dataclass
class RunSummary:
    ran: int = 0
    shifted: int = 0  # shift evaluations run (each cell's models on one shifted test set)
    estimated: int = 0  # transferability estimates run (a source model scored for a target)
    skipped: int = 0  # cells already done when the run started
    elsewhere: int = 0  # cells another run finished while this one ran
    failed: list[str] = field(default_factory=list)


class Claims:
    """The claims of one run: which artifacts it may build now, and which turn out to be built already.
    Under torchrun rank 0 decides, and tells the other ranks."""

    def __init__(self, cache: ModelCache, stores: dict[str, ResultsStore], runtime):
        self.cache, self.stores, self.shard = cache, stores, runtime.shard
        self.records_at_start = self._records_by_key()

    def _records_by_key(self) -> dict[str, Counter]:
        by_key: dict[str, Counter] = {}
        for store in self.stores.values():
            for (key, _), statuses in store.tally().items():
                by_key.setdefault(key, Counter()).update(statuses)
        return by_key

    def take(self, artifact: Artifact):
        """The artifact's lock, or None while another process holds it."""
        lock = None
        if self.shard.is_main:
            if isinstance(artifact, RECORDED):
                lock = self.stores[artifact.records_file].claim(artifact.key)
            else:
                lock = self.cache.claim(artifact.cache_folder, artifact.key)
        if not broadcast(lock is not None, self.shard):
            return None
        return lock if lock is not None else _NoLock()

    def built(self, artifact: Artifact) -> Optional[Outcome]:
        """After taking its claim: the artifact's outcome if it is built already (by an earlier run, or by
        another run while this one waited), else None."""
        found = None
        if self.shard.is_main:
            if isinstance(artifact, RECORDED):  # another run recorded it meanwhile, with this status
                now, before = (
                    self._records_by_key().get(artifact.key, Counter()),
                    self.records_at_start.get(artifact.key, Counter()),
                )
                if sum(now.values()) > sum(before.values()):
                    found = Outcome(
                        "ok" if now["ok"] > before["ok"] else "error", "recorded by another run", cached=True
                    )
            else:
                cached = self.cache.load(artifact.cache_folder, artifact.key)
                found = Outcome(meta=cached[1], cached=True) if cached is not None else None
        return broadcast(found, self.shard)


class _NoLock:
    """What ranks other than 0 hold: rank 0 holds the real lock for them."""

    def release(self) -> None:
        pass


UNFETCHED = "not fetched yet"  # a dry run's stand-in for the hash of pretrained weights not on this machine


class Runner:
    def __init__(
        self,
        suite: Suite,
        root: Path,
        out_dir: Path,
        cache_dir: Path,
        runtime,
        force: bool = False,
        command: str = "",
        log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
        executor: Optional[Executor] = None,
        cell_timeout_s: Optional[float] = None,
    ):
        """``executor``: where artifacts are built, closed by whoever created it (default: a local one, here).
        ``cell_timeout_s``: overrides the suite's ``runtime.cell_timeout_s``."""
        self.suite, self.root, self.runtime, self.force, self.command = suite, root, runtime, force, command
        self.shard = runtime.shard
        self.log = log if self.shard.is_main else (lambda m: None)  # under torchrun rank 0 speaks for all
        self.executor = executor or create_executor("local", self.log)
        self._owns_executor = executor is None
        self.store = ResultsStore(out_dir)
        self.stores = {
            "records.jsonl": self.store,
            SHIFT_RECORDS: ResultsStore(out_dir, SHIFT_RECORDS),
            ESTIMATE_RECORDS: ResultsStore(out_dir, ESTIMATE_RECORDS, estimate_problem),
        }
        self.cache = ModelCache(cache_dir)
        time_limit_s = cell_timeout_s if cell_timeout_s is not None else suite.runtime.cell_timeout_s
        self.env = BuildEnv(
            suite.name, Path(root), suite.data.download, Path(cache_dir).resolve(), runtime, command, time_limit_s
        )
        self._data: dict[str, PreparedData] = {}  # shared with the local executor's builder
        self._checked_weights: set = set()  # (pretrained source, channels) whose file was read and fits its model
        # a dry run plans without the weights not fetched yet (their sources' keys are then provisional)
        self.planning_only = False
        self.unfetched: dict[str, str] = {}  # pretrained source label -> why its weights are not here

    # --- data and plan ----------------------------------------------------------------------------

    def prepare_data(self, cells: list[Cell]) -> None:
        """Loads (or downloads) every dataset the cells read; a problem is a SuiteError, before any training.
        Under torchrun rank 0 goes first, so a download happens once."""
        if not self.shard.is_main:
            barrier(self.shard)
        builder = Builder(self.env, self.log, self._data)
        screened: set[str] = set()
        for cell in cells:
            reads_source = self.suite.uses_source(cell.strategy.name) or bool(self.suite.estimators)
            source_data = cell.source.data if reads_source else None
            for role, spec in [("target", cell.target)] + ([("source", source_data)] if source_data else []):
                try:
                    data = builder.data(spec)
                except DataUnavailableError as e:
                    raise SuiteError(f"{self.suite.path}: {role} {spec.label}: {e}") from None
                self._screen_for_dali(role, spec, data, screened)
            for shift in cell.target.shifts:
                if isinstance(shift, DatasetShift):
                    self._check_dataset_shift(builder, cell.target, shift)
                else:
                    self._check_corruptible(builder.data(cell.target), cell.target)
            if reads_source and cell.source.pretrained:
                self._check_pretrained(cell, builder.data(cell.target))
            elif reads_source:
                source_data, target = builder.data(cell.source.data), builder.data(cell.target)
                if source_data.channels != target.channels:
                    raise SuiteError(
                        f"{self.suite.path}: source {source_data.name} has {source_data.channels}-channel images, "
                        f"target {target.name} {target.channels}-channel; a backbone cannot take both"
                    )
        if self.shard.is_main:
            if self.shard.world > 1:  # the data passed its checks: the other ranks read these hashes, not the files
                file_hashes.flush()
            barrier(self.shard)

    def _check_corruptible(self, target, spec) -> None:
        """Before anything trains: the test images are large enough for the corruptions' kernels."""
        side = corrupted_side(target)
        if side < MIN_SIDE:
            raise SuiteError(
                f"{self.suite.path}: target {spec.label}: shifts: corruptions need test images of at least "
                f"{MIN_SIDE} px on a side, and its are {side} px"
            )

    def _check_dataset_shift(self, builder: Builder, target_spec, shift: DatasetShift) -> None:
        """Before anything trains: the shifted dataset is there, and its classes are the target's, by name."""
        from transfer_core.shifts import relabelled

        try:
            other, target = builder.data(shift.data), builder.data(target_spec)
            relabelled(getattr(other, shift.split), other.class_names, target.class_names, shift.label)
        except DataUnavailableError as e:
            raise SuiteError(f"{self.suite.path}: target {target_spec.label}: {e}") from None
        if other.channels != target.channels:
            raise SuiteError(
                f"{self.suite.path}: shift {shift.label}: {other.channels}-channel images, the target "
                f"{target_spec.label} has {target.channels}-channel ones"
            )

    def _screen_for_dali(self, role: str, spec, data, screened: set[str]) -> None:
        """DALI decodes an image whose body is corrupt with warnings (the cell then trains on what came out),
        where the torchvision backend fails on it: under DALI every file of an image folder is decoded once
        here, before anything runs (``bad_files: skip`` has done so at load already)."""
        if (
            self.runtime.data_backend != "dali"
            or not create_dataset_reader(spec.dataset).screens_bad_files
            or spec.options.bad_files != "error"
        ):
            return
        if spec.content_key() in screened:
            return
        screened.add(spec.content_key())
        paths = [p for split in (data.train, data.val, data.test) if isinstance(split, FileSplit) for p in split.paths]
        # files decoded by an earlier run, by path, size and modification time: a large folder is decoded once
        record = self.cache.root / "decoded" / f"{spec.content_key()}.json"
        try:
            known = frozenset(tuple(version) for version in json.loads(record.read_text()))
        except (OSError, ValueError, TypeError):
            known = frozenset()
        bad, good = first_undecodable(paths, known)
        if bad is not None:
            raise SuiteError(
                f"{self.suite.path}: {role} {spec.label}: {bad[0]}: cannot decode ({bad[1]}), and DALI would not "
                "stop on it. Remove it or set bad_files: skip on the dataset"
            )
        if good - known and self.shard.is_main:
            record.parent.mkdir(parents=True, exist_ok=True)
            write_file(record, json.dumps(sorted(good | known)))

    def _check_pretrained(self, cell: Cell, target) -> None:
        """Before anything trains: the weights are on this machine, and the target's images fit the model."""
        spec = cell.source.pretrained
        if (spec, target.channels) in self._checked_weights:
            return
        try:
            path = weights_file(spec)
        except WeightsUnavailableError as e:
            if not self.planning_only or spec.library == "checkpoint":
                raise SuiteError(f"{self.suite.path}: source {spec.label}: {e}") from None
            self.unfetched[spec.label] = str(e)
            path = None
        if spec.library != "checkpoint" and target.channels != 3:
            raise SuiteError(
                f"{self.suite.path}: source {spec.label} takes 3-channel images, target {target.name} has "
                f"{target.channels}-channel ones"
            )
        if path is None:
            return
        try:  # read now and compared with the model by name and shape, so a mismatch stops nothing midway
            check_weights(spec, path, target.channels)
        except (WeightsUnavailableError, ValueError) as e:
            raise SuiteError(f"{self.suite.path}: source {spec.label}: {e}") from None
        self._checked_weights.add((spec, target.channels))

    def plan(self, cells: list[Cell]) -> Plan:
        """The graph of every artifact ``cells`` need. It reads all their data (the keys hold its fingerprints)."""
        self.prepare_data(cells)
        plan = build_plan(
            self.suite,
            cells,
            self.runtime,
            lambda spec: self._data[spec.content_key()],
            self.executor.threads(),
            self._weights_sha256,
        )
        if not same_on_all_ranks(sorted(plan.artifacts), self.shard):
            raise SuiteError(
                "the torchrun ranks planned different artifacts: they read different data or run different code"
            )
        return plan

    def pending(self, plan: Plan, cells: list[Cell], estimates_only: bool = False) -> list[tuple[Cell, Artifact]]:
        """The cells of ``cells`` still to run, with their evaluations (and shift evaluations), and the estimates
        their sources and targets make: all with --force, else those without an ok record. ``estimates_only``:
        the estimates alone. Under torchrun, rank 0's answer."""
        wanted = {cell.cell_id for cell in cells}
        found = [] if estimates_only else [(cell, e) for cell, e in plan.cells + plan.shifted if cell.cell_id in wanted]
        made = {e.cell_id for e in estimates_of(cells)}
        found += [(estimate, e) for estimate, e in plan.estimates if estimate.cell_id in made]
        if not self.force and self.shard.is_main:
            done = set().union(*(store.done_cells() for store in self.stores.values()))
            found = [(cell, e) for cell, e in found if (e.key, cell.cell_id) not in done]
        todo = {(cell.cell_id, e.key) for cell, e in found}
        todo = broadcast(todo, self.shard)
        return [(cell, e) for cell, e in found if (cell.cell_id, e.key) in todo]

    # --- running ----------------------------------------------------------------------------------

    def run(
        self, cells: list[Cell], all_cells: Optional[list[Cell]] = None, estimates_only: bool = False
    ) -> RunSummary:
        """Runs the pending cells among ``cells``. ``all_cells`` (the whole suite) sets source amortisation.
        ``estimates_only``: only the transferability estimates of the cells' sources and targets (``bench rank``)."""
        plan = self.plan(all_cells or cells)
        file_hashes.flush()  # the data passed its checks: what was hashed to plan is kept for the next run
        if self.shard.is_main:
            self.store.write_plan(
                self.suite.name,
                [_plan_entry(cell, e) for cell, e in plan.cells],
                [e.key for _, e in plan.shifted],
                [e.key for _, e in plan.estimates],
            )
        claims = Claims(
            self.cache, self.stores, self.runtime
        )  # before ``pending``: what others record after this counts as theirs
        todo = self.pending(plan, cells, estimates_only)
        summary = RunSummary(
            skipped=0
            if estimates_only
            else len(cells) - len({cell.cell_id for cell, e in todo if isinstance(e, EvaluationArtifact)})
        )
        if summary.skipped:
            self.log(
                f"{summary.skipped} of {len(cells)} cells already done (ok records in {self.store.path}); skipping them"
            )
        if not todo:
            return summary
        check_shared_cache(self.cache.root, self.shard)
        try:
            recording: dict[str, list[Cell]] = {}  # evaluation key -> the cells whose records it writes in this run
            for cell, evaluation in todo:
                recording.setdefault(evaluation.key, []).append(cell)
            order = plan.closure(recording)
            # what is cached is found, not built: the executor hears of the rest
            self.executor.will_build(
                [a for a in order if isinstance(a, RECORDED) or not self.cache.has(a.cache_folder, a.key)]
            )
            self.executor.start(self.env, self._data)  # inside: an executor that fails to start is closed too
            if not self.executor.one_at_a_time:
                order = plan.most_awaited_first(order)
            self._schedule(order, claims, recording, summary)
        finally:
            if self._owns_executor:
                self.executor.close()
        return summary

    def _schedule(
        self, artifacts: list[Artifact], claims: Claims, recording: dict[str, list[Cell]], summary: RunSummary
    ) -> None:
        state = _Scheduling(pending=list(artifacts))
        try:
            while state.pending or state.running:
                claimed_elsewhere = self._start_ready(state, claims, recording, summary)
                if state.running:
                    for key, outcome in self.executor.wait(timeout=POLL_S if claimed_elsewhere else None):
                        artifact, claim = state.running.pop(key)
                        inputs = {dep: state.outcomes[dep] for dep in artifact.deps}
                        state.outcomes[key] = outcome
                        try:
                            self._finished(artifact, inputs, outcome, recording, summary)
                        finally:
                            claim.release()
                elif state.pending:
                    time.sleep(POLL_S)  # all that is ready is being built by other runs: wait for them
        finally:  # on an error, the claims still held go back at once, not when the process ends
            for _, claim in state.running.values():
                claim.release()

    def _start_ready(
        self, state: _Scheduling, claims: Claims, recording: dict[str, list[Cell]], summary: RunSummary
    ) -> bool:
        """Start every pending artifact whose dependencies are done and that the executor has room for, in the
        order given; True if one of them is being built by another run (to look again soon)."""
        claimed_elsewhere, rescan = False, True
        while rescan:  # again after an artifact found built elsewhere: what waits on it may be ready now
            rescan = False
            for artifact in list(state.pending):
                if all(dep in state.outcomes for dep in artifact.deps) and self.executor.has_room(artifact):
                    taken = self._start(artifact, state, claims, recording, summary)
                    claimed_elsewhere |= taken == "claimed elsewhere"
                    rescan |= taken == "built elsewhere"
        return claimed_elsewhere

    def _start(
        self,
        artifact: Artifact,
        state: _Scheduling,
        claims: Claims,
        recording: dict[str, list[Cell]],
        summary: RunSummary,
    ) -> str:
        """Claim ``artifact`` and submit it to the executor: "started", or "claimed elsewhere" (another run is
        building it: work on something else, come back later), or "built elsewhere" (its outcome is taken)."""
        claim = claims.take(artifact)
        if claim is None:
            if artifact.key not in state.waiting:
                state.waiting.add(artifact.key)
                self.log(f"  {artifact.name}: claimed by another run; waiting for it ({artifact.key[:12]})")
            return "claimed elsewhere"
        state.pending.remove(artifact)
        found = claims.built(artifact)
        if found is not None:
            claim.release()
            state.outcomes[artifact.key] = found
            if isinstance(artifact, RECORDED):
                summary.elsewhere += len(recording[artifact.key])
                if not found.ok:
                    summary.failed += [c.cell_id for c in recording[artifact.key]]
                self.log(f"  {artifact.name}: recorded by another run" + ("" if found.ok else ", not ok"))
            return "built elsewhere"
        state.started += 1
        self.log(f"[{state.started}] {artifact.kind} {artifact.name} ({artifact.key[:12]})")
        state.running[artifact.key] = (artifact, claim)
        self.executor.submit(artifact, {dep: state.outcomes[dep] for dep in artifact.deps})
        return "started"

    def _finished(
        self,
        artifact: Artifact,
        inputs: dict[str, Outcome],
        outcome: Outcome,
        recording: dict[str, list[Cell]],
        summary: RunSummary,
    ) -> None:
        if isinstance(artifact, ShiftEvaluationArtifact):
            self._finished_shift(artifact, inputs, outcome, recording, summary)
            return
        if isinstance(artifact, EstimatorArtifact):
            self._finished_estimate(artifact, inputs, outcome, recording, summary)
            return
        if not isinstance(artifact, EvaluationArtifact):
            if outcome.ok:
                self.log(f"  {artifact.name}: built in {outcome.seconds:.1f}s")
            else:
                self.log(f"  {artifact.name}: {outcome.status}: {outcome.error}")
            return
        outcome, cells = self._record(artifact, inputs, outcome, recording)
        for cell_id in sorted(cells):
            summary.ran += 1
            head = next((r for r in outcome.records if r["cell_id"] == cell_id and r.get("selected")), None)
            if head is None:  # no candidate of the cell was chosen (its chosen model could not be loaded)
                summary.failed.append(cell_id)
                self.log(f"  {cell_id}: no selected result")
            elif head["status"] == "ok":
                chosen = f" ({candidate(head)})" if candidate(head) else ""
                self.log(
                    f"  {cell_id}: ok{chosen}: test top-1 {head['metrics']['test_top1_pct']:.2f}%, "
                    f"target train {head['compute']['target_train_s']:.1f}s"
                )
            else:
                summary.failed.append(cell_id)
                self.log(f"  {cell_id}: {head['status']}: {head['error']}")

    def _record(
        self, artifact: Artifact, inputs: dict[str, Outcome], outcome: Outcome, recording: dict[str, list[Cell]]
    ) -> tuple[Outcome, set[str]]:
        """Appends the records of an evaluation (or shift evaluation) for the cells this run records, to its
        store; an outcome lost with its worker first becomes records saying so. The outcome and those cells."""
        if not outcome.records:
            outcome = Builder(self.env, self.log, self._data).failed(artifact, inputs, outcome.status, outcome.error)
        cells = {cell.cell_id for cell in recording[artifact.key]}
        if self.shard.is_main:
            self.stores[artifact.records_file].append([r for r in outcome.records if r["cell_id"] in cells])
        return outcome, cells

    def _finished_shift(
        self,
        artifact: ShiftEvaluationArtifact,
        inputs: dict[str, Outcome],
        outcome: Outcome,
        recording: dict[str, list[Cell]],
        summary: RunSummary,
    ) -> None:
        outcome, cells = self._record(artifact, inputs, outcome, recording)
        summary.shifted += len(cells)
        own = [r for r in outcome.records if not r.get("trial")]
        if outcome.ok and own:
            scores = ", ".join(
                (f"α={r['alpha']:g} " if r.get("alpha") is not None else "") + f"{r['metrics']['test_top1_pct']:.2f}%"
                for r in own
            )
            self.log(f"  {artifact.name}: test top-1 {scores}")
        else:
            summary.failed += [f"{c} on {artifact.shift.label}" for c in sorted(cells)]
            self.log(f"  {artifact.name}: {outcome.status}: {outcome.error}")

    def _finished_estimate(
        self,
        artifact: EstimatorArtifact,
        inputs: dict[str, Outcome],
        outcome: Outcome,
        recording: dict[str, list[Cell]],
        summary: RunSummary,
    ) -> None:
        outcome, recorded = self._record(artifact, inputs, outcome, recording)
        summary.estimated += len(recorded)
        if not outcome.ok:
            summary.failed.append(f"estimates of {artifact.name}")
            self.log(f"  {artifact.name}: {outcome.status}: {outcome.error}")
            return
        first = outcome.records[0]["cell_id"] if outcome.records else None
        scores = ", ".join(
            f"{r['estimator']} {r['score']:.4g}" if r["score"] is not None else f"{r['estimator']} –"
            for r in outcome.records
            if r["cell_id"] == first
        )
        took = outcome.records[0]["compute"] if outcome.records else {}
        self.log(f"  {artifact.name}: {scores} (features {took.get('features_s', 0):.1f}s)")

    # --- the dry run ------------------------------------------------------------------------------

    def _weights_sha256(self, spec) -> str:
        if spec.label in self.unfetched:
            return UNFETCHED
        return sha256(weights_file(spec))

    def describe(self, cells: list[Cell], all_cells: Optional[list[Cell]] = None) -> tuple[list[list], int]:
        """The graph ``cells`` need, one row per artifact: kind, name, key, its dependencies' keys, state, needs.
        An artifact is only "to build" if a cell still to run needs it. Pretrained weights not fetched yet do not
        stop it: their sources are "weights to fetch", and the keys that depend on them provisional."""
        self.planning_only = True
        plan = self.plan(all_cells or cells)
        todo = self.pending(plan, cells)
        needed = {a.key for a in plan.closure(e.key for _, e in todo)}
        wanted = {cell.cell_id for cell in cells}
        rows = []
        made = {e.cell_id for e in estimates_of(cells)}
        recorded = [e.key for cell, e in plan.cells + plan.shifted if cell.cell_id in wanted]
        recorded += [e.key for estimate, e in plan.estimates if estimate.cell_id in made]
        for artifact in plan.closure(recorded):
            if isinstance(artifact, RECORDED):
                state = "to run" if artifact.key in needed else "done"
            elif artifact.settings.get("pretrained", {}).get("sha256") == UNFETCHED:
                state = "weights to fetch"
            elif self.cache.has(artifact.cache_folder, artifact.key):
                state = "cached"
            else:
                state = "to build" if artifact.key in needed else "not needed"
            rows.append(
                [
                    artifact.kind,
                    artifact.name,
                    artifact.key[:12],
                    " ".join(d[:12] for d in artifact.deps) or "—",
                    state,
                    str(artifact.needs),
                ]
            )
        return rows, len({cell.cell_id for cell, e in todo if isinstance(e, EvaluationArtifact)})


def check_shared_cache(cache_dir: Path, shard) -> None:
    """Under torchrun across machines, every rank must read the models rank 0 writes: check it before
    training, in one line, rather than fail in the middle with the other ranks waiting."""
    if shard.world == 1:
        return
    probe = cache_dir / ".ranks-probe"
    if shard.is_main:
        cache_dir.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        probe.write_text(token)
    token = broadcast(token if shard.is_main else None, shard)
    sees = probe.is_file() and probe.read_text() == token
    if not same_on_all_ranks(sees, shard) or not sees:
        raise SuiteError(
            f"--cache-dir {cache_dir}: not every torchrun rank sees what rank 0 writes there; "
            "on several machines it must be shared storage"
        )


def _plan_entry(cell: Cell, evaluation: EvaluationArtifact) -> dict:
    return {
        **cell.identity(),
        "config_hash": evaluation.key,
    }
