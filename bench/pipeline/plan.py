"""The plan: a suite's cells as a graph of content-keyed artifacts.

The artifacts, each built once and then reused by everything that depends on it:
- a **source model** per source dataset, recipe, backbone and seed, trained on the source task; or per
  pretrained weights file (its sha256 in the key), loaded;
- a **fitted model** per strategy that trains, target, backbone, seed and source: what ``Strategy.fit``
  returns. It depends on the source model (if the strategy starts from it) and on the fitted models of
  the strategy's ingredients. A strategy trained over a grid (``lr: [0.01, 0.1]``) has one per grid point,
  and a **selection**: the point best on the target's validation split, saved as a fitted model of its
  own, which is what the strategy's dependants (and its cells' selected records) take;
- an **evaluation** per cell: the cell's records. It depends on every fitted model the cell's result is
  built from (its cost is theirs), and on the source model for the record's accounting. Cells of a
  strategy that ignores the source (scratch), planned under several sources, share one evaluation, which
  writes the records of each;
- an **estimate** per source model and target (``estimators:``): the suite's transferability estimators on one
  forward pass of the target's training images through the source model, recorded, nothing fine-tuned.

An artifact's key hashes its own resolved settings, among them the versions of exactly the code it runs
(``code``: ``transfer_core/versions.py``), and its dependencies' keys, so a change anywhere upstream changes
the key of exactly the artifacts that depend on it. A setting enters a key only where it bears on that
artifact's numbers: the data's content (its fingerprint), selection, augmentation and resolution; the recipe;
the precision, compile mode, memory layout and device type; the data backend only for image folders; the
evaluation batch size only for evaluations (it sets the BatchNorm re-estimation batches); the major.minor
release of each library whose code computes its numbers (``library_versions``: torch always, timm or
torchvision for their models, DALI where it decodes). Names, descriptions and paths enter none. Nor does the
execution environment, which each record's provenance holds instead: the machine, the number of threads (it
reorders float sums) and of data workers (results do not depend on them). The number of torchrun ranks is in
the keys of what trains under it, whose BatchNorm statistics each rank takes over its own part of a batch
(``transfer_core/distributed.py``).

Longer than 400 lines on purpose: the kinds of artifact and the builder that makes them (``PlanBuilder``, one
method per kind) side by side, so that a new kind is a dataclass and a method read together with the keys'
rule above.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Optional

import torch

from bench.pipeline.estimates import ESTIMATE_RECORDS, Estimate, estimates_of
from bench.pipeline.shifts import CorruptionShift, Shift
from bench.pipeline.suite import Cell, DatasetSpec, SourceSpec, StrategySpec, Suite
from bench.results.records import point_label
from transfer_core.backbones import backbone_library
from transfer_core.cache import content_key
from transfer_core.datasets import PreparedData, create_dataset_reader, fingerprints
from transfer_core.pretrained import sha256, weights_file
from transfer_core.runtime import Runtime
from transfer_core.shifts import corrupted_side
from transfer_core.shifts.corruptions import constants_for
from transfer_core.strategies import STRATEGIES
from transfer_core.versions import code_versions

EVALUATION_GPU_SHARE = 0.25  # forward passes only: a fraction of a GPU


@dataclass(frozen=True)
class Needs:
    """What an artifact asks a scheduler for."""

    gpus: float = 0.0
    cpus: int = 1

    def __str__(self) -> str:
        return f"{self.gpus:g} GPU + {self.cpus} CPU" if self.gpus else f"{self.cpus} CPU"


@dataclass(frozen=True, eq=False)
class Artifact:
    key: str
    name: str  # how logs and the dry run name it
    deps: tuple[str, ...]  # keys of the artifacts it is built from
    settings: dict  # its own resolved settings: what its key hashes besides its dependencies' keys
    needs: Needs
    kind: ClassVar[str]


@dataclass(frozen=True, eq=False)
class SourceArtifact(Artifact):
    source: SourceSpec
    backbone: str
    seed: Optional[int]  # None for pretrained weights, which no seed changes
    kind: ClassVar[str] = "source"
    cache_folder: ClassVar[str] = "sources"  # where in the model cache it is saved


@dataclass(frozen=True, eq=False)
class FittedArtifact(Artifact):
    strategy: StrategySpec
    target: DatasetSpec
    backbone: str
    seed: int
    source_key: Optional[str]  # the source model it starts from
    ingredient_keys: dict  # strategy name -> key of that strategy's fitted model
    kind: ClassVar[str] = "fitted"
    cache_folder: ClassVar[str] = "models"


@dataclass(frozen=True, eq=False)
class SelectionArtifact(Artifact):
    """The grid point of a strategy best on validation, saved (a copy of its model) as the strategy's model."""

    strategy: StrategySpec  # the grid's spec
    target: DatasetSpec
    backbone: str
    seed: int
    points: tuple[tuple[dict, str], ...]  # (grid point, key of its fitted model), in grid order
    kind: ClassVar[str] = "selection"
    cache_folder: ClassVar[str] = "models"  # a fitted model like any other to whoever loads it


@dataclass(frozen=True, eq=False)
class RefitArtifact(Artifact):
    """The strategy's chosen model (its only fit, or the grid point or trial best on validation) trained again,
    at the chosen settings, on the target's train and validation splits together (``tuning: {refit: true}``)."""

    strategy: StrategySpec
    target: DatasetSpec
    backbone: str
    seed: int
    chosen_key: str  # the fitted model (or selection) whose settings are retrained
    source_key: Optional[str]
    ingredient_keys: dict  # strategy name -> key of that ingredient's refit model
    kind: ClassVar[str] = "refit"
    cache_folder: ClassVar[str] = "models"


@dataclass(frozen=True, eq=False)
class EvaluationArtifact(Artifact):
    cells: list[Cell]  # whose records it writes: one, or a source-free strategy's cells under several sources
    source_key: Optional[str]
    model_keys: dict  # strategy name -> key of the fitted model the evaluation takes
    grid: tuple[
        tuple[dict, str], ...
    ]  # the cell's strategy trained over a grid: (point, fitted key) of each, to record each
    source_cells_sharing: int  # cells of the suite that reuse the source model: its cost is split between them
    config: dict  # the resolved settings of the evaluation and of everything it is built from: the records' config
    kind: ClassVar[str] = "evaluation"
    records_file: ClassVar[str] = "records.jsonl"

    @property
    def cell(self) -> Cell:
        """The cell it is built for (the others sharing it differ in identity only)."""
        return self.cells[0]


@dataclass(frozen=True, eq=False)
class CorruptionArtifact(Artifact):
    """A target's test split corrupted at one severity (``transfer_core/shifts/corruptions.py``), saved as uint8
    images: keyed by the split's content, the corruption, its severity, seed and constants, nothing else."""

    target: DatasetSpec
    shift: CorruptionShift
    kind: ClassVar[str] = "corruption"
    cache_folder: ClassVar[str] = "corrupted"


@dataclass(frozen=True, eq=False)
class ShiftEvaluationArtifact(Artifact):
    """The models of a cell's result scored on one shifted test set: its records go to ``shifts.jsonl``. Its key
    is the cell's evaluation settings with the shift's description added, so two shift evaluations of one cell
    differ in the shift alone."""

    cells: list[Cell]
    shift: Shift
    evaluation_key: str  # the cell's own (in-distribution) evaluation, whose records say what was selected
    model_keys: dict  # as the cell's evaluation
    grid: tuple[tuple[dict, str], ...]  # the baseline's trials: the models the effective-robustness fit is made on
    corrupted_key: Optional[str]  # the CorruptionArtifact it scores, for a corruption
    kind: ClassVar[str] = "shift evaluation"
    records_file: ClassVar[str] = "shifts.jsonl"

    @property
    def cell(self) -> Cell:
        return self.cells[0]


@dataclass(frozen=True, eq=False)
class EstimatorArtifact(Artifact):
    """A source model scored for a target by every estimator the suite lists, from one forward pass of the
    target's training images: its records (one per estimator) go to ``estimates.jsonl``."""

    cells: list  # the Estimates whose records it writes: one, or every seed's where seeds share source and data
    estimators: tuple  # the suite's EstimatorSpecs, in its order
    target: DatasetSpec
    backbone: str
    seed: int
    source_key: str
    kind: ClassVar[str] = "estimate"
    records_file: ClassVar[str] = ESTIMATE_RECORDS


RECORDED = (EvaluationArtifact, ShiftEvaluationArtifact, EstimatorArtifact)  # the artifacts that write records


@dataclass
class Plan:
    artifacts: dict[str, Artifact] = field(default_factory=dict)  # by key, in an order where dependencies come first
    cells: list[tuple[Cell, EvaluationArtifact]] = field(default_factory=list)  # each cell and its evaluation, in order
    # each cell and its shift evaluations, in order: ``cells`` holds the in-distribution ones
    shifted: list[tuple[Cell, ShiftEvaluationArtifact]] = field(default_factory=list)
    # each source, target, backbone and seed the cells make, with the artifact of its transferability estimates
    estimates: list[tuple[Estimate, EstimatorArtifact]] = field(default_factory=list)

    def closure(self, keys: Iterable[str]) -> list[Artifact]:
        """These artifacts and everything they depend on, each after its dependencies, in the order of ``keys``."""
        ordered: list[Artifact] = []
        seen: set[str] = set()

        def visit(key: str) -> None:
            if key not in seen:
                seen.add(key)
                for dep in self.artifacts[key].deps:
                    visit(dep)
                ordered.append(self.artifacts[key])

        for key in keys:
            visit(key)
        return ordered

    @staticmethod
    def most_awaited_first(artifacts: list[Artifact]) -> list[Artifact]:
        """``artifacts`` (each after its dependencies) in the order to offer the ready ones to an executor: those
        that write records, and a grid's selection (a copy of its best point), first (they are short, and a
        cell's record comes as soon as it can), then those that more of the others wait on, directly or not (a
        source model before a scratch training), so an executor building several at once starts the long chains
        early instead of leaving a worker idle at the end. Ties keep the given order."""
        awaiting: dict[str, set[str]] = {artifact.key: set() for artifact in artifacts}
        for artifact in reversed(artifacts):
            for dep in artifact.deps:
                if dep in awaiting:
                    awaiting[dep] |= {artifact.key} | awaiting[artifact.key]
        quick = (*RECORDED, SelectionArtifact)
        return sorted(artifacts, key=lambda a: (not isinstance(a, quick), -len(awaiting[a.key])))

    def _add(self, cls, settings: dict, deps: tuple[str, ...], **fields) -> Artifact:
        key = content_key({"settings": settings, "deps": deps, "libraries": library_versions(settings)})
        if key not in self.artifacts:
            self.artifacts[key] = cls(key=key, deps=deps, settings=settings, **fields)
        return self.artifacts[key]


def _release(version: str) -> str:
    """major.minor of a version string ("2.14.1+cu130" -> "2.14")."""
    return ".".join(version.split("+")[0].split(".")[:2])


@functools.cache
def _installed(distribution_prefix: str) -> Optional[str]:
    """The version of the installed distribution whose name starts with the prefix (DALI's wheels are named
    per CUDA version), found without importing it."""
    for found in importlib.metadata.distributions():
        if (found.metadata["Name"] or "").lower().startswith(distribution_prefix):
            return found.version
    return None


def library_versions(settings: dict) -> dict:
    """The libraries whose release enters an artifact's key, by the rule: a library's major.minor release where
    its code computes the artifact's numbers: torch's everywhere (kernels and defaults change between minor
    releases), timm's or torchvision's where they define the backbone or load the weights, DALI's where it
    decodes the images. Patch releases do not enter (they fix bugs; a run on 2.14.1 reuses 2.14.0's models),
    and the versions of the rest (numpy, scipy, ...) none. Every record's provenance has the exact versions."""
    versions = {"torch": _release(torch.__version__)}
    backbone, weights = settings.get("backbone"), settings.get("pretrained") or {}
    library = weights.get("library") if weights else (backbone_library(backbone) if backbone else None)
    if library == "checkpoint":  # a file saved from one of ours, or from a timm / torchvision model
        library = backbone_library(weights["model"])
    if library in ("timm", "torchvision"):
        versions[library] = _release(_installed(library) or "unknown")
    if (settings.get("runtime") or {}).get("data_backend") == "dali":
        versions["dali"] = _release(_installed("nvidia-dali") or "unknown")
    return versions


def key_runtime(runtime: Runtime, datasets: Iterable[DatasetSpec], evaluates: bool) -> dict:
    """The runtime switches that bear on an artifact reading ``datasets``."""
    datasets = list(datasets)
    settings = {
        "device": runtime.device.type,
        "amp": runtime.amp,
        "compile": runtime.compile,
        "channels_last": runtime.channels_last,
        "input_dtype": str(runtime.input_dtype).removeprefix("torch."),
    }
    if runtime.compile:
        settings["compile_mode"] = runtime.compile_mode
        if runtime.compile_when != "always":  # compiled only where measured steps say it pays: a part may run eager
            settings["compile_when"] = runtime.compile_when
    if runtime.device.type == "cuda":
        settings["cudnn_benchmark"] = runtime.cudnn_benchmark and not runtime.deterministic
    if runtime.deterministic:  # other algorithms: other numbers (on CPU too, where a few kernels differ)
        settings["deterministic"] = True
    if not all(create_dataset_reader(spec.dataset).array_backed for spec in datasets):
        settings["data_backend"] = runtime.data_backend  # DALI and torchvision decode and resize differently
    if evaluates:
        settings["eval_batch_size"] = runtime.eval_batch_size
    elif runtime.shard.world > 1:  # trained by several ranks: BatchNorm statistics over each rank's part of a batch
        settings["ranks"] = runtime.shard.world
    return settings


class PlanBuilder:
    """Builds the artifacts of a suite's cells, one method per kind: ``source_model``, ``point_model`` (a fitted
    model), ``fitted_model`` (a strategy's model: its only point, or the selection among its grid's), ``refit_model``,
    ``corrupted_split``, ``shift_evaluation``, ``evaluation`` and ``estimate``. Each artifact is made once: a large
    suite asks for the same one thousands of times, and its specs and cells, which all live while the plan is
    built, are remembered by identity.

    ``prepared`` gives a dataset's prepared data, whose content hashes are part of every key that reads it, so
    changed files are never mistaken for the old ones; ``weights_sha256`` a pretrained source's file hash
    (default: the file's; a dry run before ``bench fetch`` marks it unfetched)."""

    def __init__(
        self,
        suite: Suite,
        runtime: Runtime,
        prepared: Callable[[DatasetSpec], PreparedData],
        cpus_per_task: int = 1,
        weights_sha256: Optional[Callable] = None,
    ):
        self.suite, self.runtime, self.prepared = suite, runtime, prepared
        self.cpus_per_task, self.weights_sha256 = cpus_per_task, weights_sha256
        self.on_gpu = runtime.device.type == "cuda"
        self.plan = Plan()
        self._memo: dict[tuple, object] = {}  # keyed by the ids of specs and cells

    def build(self, cells: list[Cell]) -> Plan:
        """The artifacts ``cells`` need, in an order where dependencies come first."""
        sources = {id(c): self.source_model(c) if self.suite.uses_source(c.strategy.name) else None for c in cells}
        sharing = Counter(s.key for s in sources.values() if s is not None)
        for cell in cells:
            self.evaluation(cell, sources[id(cell)], sharing)
        for estimate in estimates_of(cells) if self.suite.estimators else ():
            self.estimate(estimate)
        return self.plan

    def _once(self, key: tuple, make: Callable[[], object]):
        """A large suite asks for the same artifact thousands of times: each is described and hashed once."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def _data(self, spec: DatasetSpec, test_split: bool = True) -> dict:
        """A dataset as a key sees it: a fit reads the train and validation splits only, so the test split
        is not part of a fitted model's key (scoring more test images retrains nothing)."""

        def describe() -> dict:
            found = self.prepared(spec)
            return {
                **spec.describe(test_split, located=False),  # the fingerprint names the data, not its path
                "fingerprint": found.fingerprint if test_split else found.train_fingerprint,
            }

        return self._once(("data", id(spec), test_split), describe)

    def _runtime_settings(self, spec: DatasetSpec, evaluates: bool) -> dict:
        return self._once(("runtime", id(spec), evaluates), lambda: key_runtime(self.runtime, [spec], evaluates))

    def _code(self, parts: list[str], datasets: list[DatasetSpec], backbone: Optional[str], **components) -> dict:
        """The versions of the code an artifact runs, reading ``datasets`` through the data path."""
        return code_versions(
            parts,
            datasets=[d.dataset for d in datasets],
            data_backend=self.runtime.data_backend,
            backbone=backbone,
            **components,
        )

    def _needs(self, gpu_share: float, reads: DatasetSpec) -> Needs:
        # image folders are decoded by data workers (or DALI threads) beside the training threads
        loader_cpus = 0 if create_dataset_reader(reads.dataset).array_backed else self.runtime.workers
        return Needs(gpu_share if self.on_gpu else 0.0, self.cpus_per_task + loader_cpus)

    def source_model(self, cell: Cell) -> Artifact:
        return self._once(
            ("source", id(cell.source), id(cell.target) if cell.source.pretrained else None, cell.backbone, cell.seed),
            lambda: self._new_source_model(cell),
        )

    def _new_source_model(self, cell: Cell) -> Artifact:
        source = cell.source
        if source.pretrained:  # loaded, not trained: the same for every seed; the file's content in the key
            digest = (self.weights_sha256 or (lambda spec: sha256(weights_file(spec))))(source.pretrained)
            weights = {**source.pretrained.describe(), "sha256": digest}
            # "head": the file's classifier is kept with the body (estimators read the source's predictions)
            settings = {
                "pretrained": weights,
                "channels": self.prepared(cell.target).channels,
                "head": "kept",
                "code": code_versions(["pretrained"], backbone=cell.backbone),
            }
            # loading is light, but a GPU runtime needs a GPU where it runs (Ray hides GPUs from a task without one)
            return self.plan._add(
                SourceArtifact,
                settings,
                (),
                name=f"source {source.label} (pretrained)",
                needs=Needs(EVALUATION_GPU_SHARE if self.on_gpu else 0.0, 1),
                source=source,
                backbone=cell.backbone,
                seed=None,
            )
        settings = {
            "data": self._data(source.data),
            "recipe": dataclasses.asdict(source.recipe),
            "backbone": cell.backbone,
            "seed": cell.seed,
            "runtime": self._runtime_settings(source.data, False),
            "code": self._code(["training"], [source.data], cell.backbone),
        }
        return self.plan._add(
            SourceArtifact,
            settings,
            (),
            name=f"source {source.data.label}/{cell.backbone}/seed{cell.seed}",
            needs=self._needs(1.0, source.data),
            source=source,
            backbone=cell.backbone,
            seed=cell.seed,
        )

    def _cell_key(self, cell: Cell) -> tuple:
        return id(cell.source), id(cell.target), cell.backbone, cell.seed

    def point_model(self, spec: StrategySpec, cell: Cell) -> Artifact:
        return self._once(("point", id(spec), *self._cell_key(cell)), lambda: self._new_point_model(spec, cell))

    def _new_point_model(self, spec: StrategySpec, cell: Cell) -> Artifact:
        """The model of one setting of a strategy (a grid's point, or its only setting)."""
        cls = STRATEGIES.get(spec.name)
        source = self.source_model(cell) if cls.uses_source else None
        ingredients = {name: self.fitted_model(name, cell) for name in cls.ingredients_of(spec.options)}
        settings = {
            "strategy": spec.name,
            **self._once(("key_settings", id(spec)), lambda: cls.key_settings(spec.options, spec.recipe)),
            "target": self._data(cell.target, test_split=False),
            "backbone": cell.backbone,
            "seed": cell.seed,
            "runtime": self._runtime_settings(cell.target, False),
            # a fit trains (the probe choosing its L2 strength on validation scores with the training loop's helpers)
            "code": self._code(["training"], [cell.target], cell.backbone, strategies=[spec.name]),
        }
        deps = ((source.key,) if source else ()) + tuple(a.key for a in ingredients.values())
        origin = f"{cell.source.label}->" if self.suite.uses_source(spec.name) else ""
        point = f"[{point_label(spec.point)}]" if spec.point else ""
        return self.plan._add(
            FittedArtifact,
            settings,
            deps,
            name=f"{spec.name}{point} {origin}{cell.target.label}/{cell.backbone}/seed{cell.seed}",
            needs=self._needs(cls.gpu_share, cell.target),
            strategy=spec,
            target=cell.target,
            backbone=cell.backbone,
            seed=cell.seed,
            source_key=source.key if source else None,
            ingredient_keys={n: a.key for n, a in ingredients.items()},
        )

    def grid_models(self, strategy: str, cell: Cell) -> tuple[tuple[dict, str], ...]:
        spec = self.suite.strategy(strategy)
        if not spec.searched:
            return ()
        points = self._once(("points", id(spec)), spec.points)  # the same spec objects for every cell: memoised by id
        return tuple((point.point, self.point_model(point, cell).key) for point in points)

    def fitted_model(self, strategy: str, cell: Cell) -> Artifact:
        return self._once(("fitted", strategy, *self._cell_key(cell)), lambda: self._new_fitted_model(strategy, cell))

    def _new_fitted_model(self, strategy: str, cell: Cell) -> Artifact:
        """The strategy's model in ``cell``: its only one, or the selection among its grid's."""
        spec = self.suite.strategy(strategy)
        if not spec.searched:
            return self.point_model(spec, cell)
        points = self.grid_models(strategy, cell)
        # validation forward passes only, at the evaluation batch size
        settings = {
            "select": "val_top1_pct",
            "strategy": strategy,
            "grid": [point for point, _ in points],
            "target": self._data(cell.target, test_split=False),
            "runtime": self._runtime_settings(cell.target, True),
            "code": self._code(["training", "evaluation"], [cell.target], cell.backbone),
        }
        origin = f"{cell.source.label}->" if self.suite.uses_source(strategy) else ""
        return self.plan._add(
            SelectionArtifact,
            settings,
            tuple(key for _, key in points),
            name=f"{strategy} {origin}{cell.target.label}/{cell.backbone}/seed{cell.seed}",
            needs=self._needs(EVALUATION_GPU_SHARE, cell.target),
            strategy=spec,
            target=cell.target,
            backbone=cell.backbone,
            seed=cell.seed,
            points=points,
        )

    def refit_model(self, strategy: str, cell: Cell) -> Artifact:
        return self._once(("refit", strategy, *self._cell_key(cell)), lambda: self._new_refit_model(strategy, cell))

    def _new_refit_model(self, strategy: str, cell: Cell) -> Artifact:
        """The chosen model retrained on train + validation; its ingredients are their own refit models."""
        spec, cls = self.suite.strategy(strategy), STRATEGIES.get(strategy)
        chosen = self.fitted_model(strategy, cell)
        source = self.source_model(cell) if cls.uses_source else None
        ingredients = {name: self.refit_model(name, cell) for name in cls.ingredients_of(spec.options)}
        settings = {
            "refit": "train+val",
            "strategy": strategy,
            "target": self._data(cell.target, test_split=False),
            "backbone": cell.backbone,
            "seed": cell.seed,
            "runtime": self._runtime_settings(cell.target, False),
            "code": self._code(["training"], [cell.target], cell.backbone, strategies=[strategy]),
        }
        deps = (chosen.key,) + ((source.key,) if source else ()) + tuple(a.key for a in ingredients.values())
        origin = f"{cell.source.label}->" if self.suite.uses_source(strategy) else ""
        return self.plan._add(
            RefitArtifact,
            settings,
            deps,
            name=f"{strategy} refit {origin}{cell.target.label}/{cell.backbone}/seed{cell.seed}",
            needs=self._needs(cls.gpu_share, cell.target),
            strategy=spec,
            target=cell.target,
            backbone=cell.backbone,
            seed=cell.seed,
            chosen_key=chosen.key,
            source_key=source.key if source else None,
            ingredient_keys={n: a.key for n, a in ingredients.items()},
        )

    def cell_models(self, cell: Cell) -> dict[str, Artifact]:
        """The models a cell's result is built from. Under refit, a strategy that trains is evaluated on refit
        models; one that does not (alpha-mix) combines the models chosen on validation, as its own choice (alpha)
        is made there."""
        refit = self.suite.tuning.refit and STRATEGIES.get(cell.strategy.name).trains
        made = self.refit_model if refit else self.fitted_model
        return {name: made(name, cell) for name in self.suite.fitted_models(cell.strategy.name)}

    def test_split_key(self, spec: DatasetSpec) -> dict:
        """The target's test split as a corruption's key sees it: its own content, at the side it is corrupted at."""

        def describe() -> dict:
            found = self.prepared(spec)
            side = corrupted_side(found)
            return {"fingerprint": fingerprints(found.test)[0], "resolution": found.resolution, "side": side}

        return self._once(("test split", id(spec)), describe)

    def corrupted_split(self, cell: Cell, shift: CorruptionShift) -> Artifact:
        split = self.test_split_key(cell.target)
        settings = {
            "corruption": shift.corruption,
            "severity": shift.severity,
            "seed": shift.seed,
            "constants": constants_for(split["side"], shift.constants),  # auto resolved: the table is the content
            "test_split": split,
            # the split's pixels as its reader gives them, without a loader
            "code": code_versions(["corruptions"], datasets=[cell.target.dataset]),
        }
        return self.plan._add(
            CorruptionArtifact,
            settings,
            (),
            name=f"{shift.label} of {cell.target.label} test (seed{cell.seed})",
            needs=self._needs(EVALUATION_GPU_SHARE, cell.target),
            target=cell.target,
            shift=shift,
        )

    def shift_evaluation(self, cell, shift, evaluation, settings: dict, deps: tuple, grid: tuple) -> Artifact:
        """The cell's models scored on one shifted test set: its evaluation's settings with the shift added."""
        corrupted = self.corrupted_split(cell, shift) if isinstance(shift, CorruptionShift) else None
        described = shift.describe()
        if corrupted is None:  # another dataset: its content, not its path
            described["data"]["fingerprint"] = self.prepared(shift.data).fingerprint
            if not create_dataset_reader(shift.data.dataset).array_backed:  # DALI and torchvision decode differently
                described["data_backend"] = self.runtime.data_backend
        shift_settings = {**settings, "shift": described, "grid_scored": [point for point, _ in grid]}
        if corrupted is None:  # the shift's dataset is read too
            shift_settings["code"] = {**settings["code"], **self._code([], [shift.data], None)}
        shift_deps = tuple(d for d in deps if d not in {key for _, key in evaluation.grid} - {k for _, k in grid})
        shift_deps += (corrupted.key,) if corrupted is not None else ()
        return self.plan._add(
            ShiftEvaluationArtifact,
            shift_settings,
            shift_deps,
            name=f"{cell.cell_id} on {shift.label}",
            needs=self._needs(EVALUATION_GPU_SHARE, cell.target),
            cells=[],
            shift=shift,
            evaluation_key=evaluation.key,
            model_keys=evaluation.model_keys,
            grid=grid,
            corrupted_key=corrupted.key if corrupted is not None else None,
        )

    def evaluation(self, cell: Cell, source: Optional[Artifact], sharing: Counter) -> Artifact:
        """A cell's evaluation, and its shift evaluations: the artifacts that write its records."""
        cls = STRATEGIES.get(cell.strategy.name)
        models = self.cell_models(cell)
        # each point of a grid is evaluated and recorded, the selected one marked
        grid = self.grid_models(cell.strategy.name, cell)
        settings = {
            "strategy": cell.strategy.name,
            # a strategy that trains uses its options to fit (they are in its fitted model's key); one that
            # does not (alpha-mix) uses them here
            "options": None if cls.trains else cls.key_settings(cell.strategy.options, cell.strategy.recipe)["options"],
            "target": self._data(cell.target),
            "backbone": cell.backbone,
            "seed": cell.seed,
            "runtime": self._runtime_settings(cell.target, True),
            "code": self._code(
                ["training", "evaluation"], [cell.target], cell.backbone, strategies=[cell.strategy.name]
            ),
        }
        deps = ((source.key,) if source else ()) + tuple(a.key for a in models.values()) + tuple(key for _, key in grid)
        config = {a.name: {"kind": a.kind, "key": a.key, **a.settings} for a in self.plan.closure(deps)}
        config["evaluation"] = {"kind": "evaluation", **settings}
        evaluation = self.plan._add(
            EvaluationArtifact,
            settings,
            deps,
            name=cell.cell_id,
            needs=self._needs(EVALUATION_GPU_SHARE, cell.target),
            cells=[],
            source_key=source.key if source else None,
            model_keys={n: a.key for n, a in models.items()},
            grid=grid,
            source_cells_sharing=sharing[source.key] if source else 0,
            config=config,
        )
        evaluation.cells.append(cell)
        self.plan.cells.append((cell, evaluation))
        for shift in cell.target.shifts:
            shifted = self.shift_evaluation(cell, shift, evaluation, settings, deps, grid if cls.baseline else ())
            shifted.cells.append(cell)
            self.plan.shifted.append((cell, shifted))
        return evaluation

    def estimate(self, estimate: Estimate) -> Artifact:
        """A source's transferability estimates for a target, by every estimator the suite lists."""
        source = self.source_model(estimate)
        settings = {
            "estimators": [e.describe() for e in self.suite.estimators],
            "features": "target train split",
            "target": self._data(estimate.target, test_split=False),
            "backbone": estimate.backbone,
            "runtime": self._runtime_settings(estimate.target, True),
            # one forward pass (the training loop's ``predict``), then every estimator
            "code": self._code(
                ["training"], [estimate.target], estimate.backbone, estimators=[e.name for e in self.suite.estimators]
            ),
        }  # no seed: nothing in an estimate is random, so seeds that share the source model and data share it
        artifact = self.plan._add(
            EstimatorArtifact,
            settings,
            (source.key,),
            name=estimate.cell_id.replace("/estimate/", "/"),
            needs=self._needs(EVALUATION_GPU_SHARE, estimate.target),
            cells=[],
            estimators=self.suite.estimators,
            target=estimate.target,
            backbone=estimate.backbone,
            seed=estimate.seed,
            source_key=source.key,
        )
        artifact.cells.append(estimate)  # a pretrained source's estimate is every seed's where the data is one
        self.plan.estimates.append((estimate, artifact))
        return artifact


def build_plan(
    suite: Suite,
    cells: list[Cell],
    runtime: Runtime,
    prepared: Callable[[DatasetSpec], PreparedData],
    cpus_per_task: int = 1,
    weights_sha256: Optional[Callable] = None,
) -> Plan:
    """The artifacts ``cells`` need (``PlanBuilder``)."""
    return PlanBuilder(suite, runtime, prepared, cpus_per_task, weights_sha256).build(cells)
