"""The runner: executes cells, trains each source model once, records every evaluated cell.

Order of work: validate the suite, skip cells whose config hash already has an ``ok`` record, load the
data the remaining cells need (failing fast if any is missing), then run cell by cell. A failing cell
is recorded with its status and error and the suite goes on.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from transfer_core.backbones import Classifier, create_backbone
from transfer_core.cache import ModelCache, content_key
from transfer_core.datasets import DataUnavailableError, PreparedData, create_dataset_reader, prepare_dataset
from transfer_core.runtime import Runtime, measured_bf16_peak_tflops, peak_memory, reset_peak_memory
from transfer_core.strategies import STRATEGIES, Evaluation, Fitted, TransferContext
from transfer_core.training import Diverged, TrainStats, predict, top_k_pct, train

from .provenance import provenance
from .records import DIRECTIONS, RECORD_SCHEMA_VERSION, ResultsStore
from .suite import Cell, DatasetSpec, SourceSpec, Suite, SuiteError


def utilisation(flops: float, seconds: float, device: torch.device) -> dict:
    """Achieved TFLOP/s and, on CUDA, model FLOPs utilisation against the bf16 matmul peak measured in
    this process (None on CPU, where no such peak is measured)."""
    achieved = flops / seconds / 1e12 if seconds > 0 and flops > 0 else None
    peak = measured_bf16_peak_tflops(str(device)) if device.type == "cuda" else None
    return {"target_tflop_per_s": achieved, "device_peak_bf16_tflop_per_s": peak,
            "target_mfu_pct": 100 * achieved / peak if achieved is not None and peak else None}


def _uses_source(strategy: str) -> bool:
    cls = STRATEGIES.get(strategy)
    return cls.uses_source or any(_uses_source(name) for name in cls.ingredients)


@dataclass
class SourceModel:
    state_dict: dict
    meta: dict  # num_classes, channels, train stats, source test accuracy, data fingerprint
    cached: bool  # loaded from the cache rather than trained by this run


@dataclass
class RunSummary:
    ran: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)


class Runner:
    def __init__(self, suite: Suite, root: Path, out_dir: Path, cache_dir: Path, runtime: Runtime,
                 force: bool = False, command: str = "", log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)):
        self.suite, self.root, self.runtime, self.force, self.command, self.log = suite, root, runtime, force, command, log
        self.store = ResultsStore(out_dir)
        self.cache = ModelCache(cache_dir)
        self._data: dict[str, PreparedData] = {}
        self._sources: dict[str, SourceModel | BaseException] = {}
        self._fitted: dict[str, Fitted | BaseException] = {}

    # --- identities and hashes -----------------------------------------------------------------

    @staticmethod
    def uses_source(cell: Cell) -> bool:
        return _uses_source(cell.strategy.name)

    def _runtime_config(self, cell: Cell, uses_source: bool) -> dict:
        return self._runtime_for(cell.target, *((cell.source.data,) if uses_source else ()))

    def _runtime_for(self, *specs: DatasetSpec) -> dict:
        """The runtime as it bears on these datasets: the data backend matters only for image folders, so
        array suites keep their hashes whether or not DALI is installed."""
        described = self.runtime.describe()
        if all(create_dataset_reader(spec.dataset).array_backed for spec in specs):
            del described["data_backend"]
        return described

    def source_key(self, source: SourceSpec, backbone: str, seed: int) -> str:
        return content_key({"data": source.data.describe(), "recipe": dataclasses.asdict(source.recipe),
                            "backbone": backbone, "seed": seed, "runtime": self._runtime_for(source.data)})

    def fitted_key(self, cell: Cell, strategy: str) -> str:
        spec = self.suite.strategy(strategy)
        uses_source = STRATEGIES.get(strategy).uses_source
        return content_key({
            "source": self.source_key(cell.source, cell.backbone, cell.seed) if uses_source else None,
            "target": cell.target.describe(), "backbone": cell.backbone, "strategy": spec.describe(),
            "seed": cell.seed, "runtime": self._runtime_config(cell, uses_source),
        })

    def cell_config(self, cell: Cell) -> dict:
        """Everything that determines a cell's result; its hash decides whether a rerun may skip it."""
        ingredients = STRATEGIES.get(cell.strategy.name).ingredients
        return {
            "source": {"data": cell.source.data.describe(), "recipe": dataclasses.asdict(cell.source.recipe)}
            if _uses_source(cell.strategy.name) else None,
            "target": cell.target.describe(),
            "backbone": cell.backbone,
            "strategy": cell.strategy.describe(),
            "ingredients": {name: self.suite.strategy(name).describe() for name in ingredients},
            "seed": cell.seed,
            "runtime": self._runtime_config(cell, _uses_source(cell.strategy.name)),
        }

    def config_hash(self, cell: Cell) -> str:
        return content_key(self.cell_config(cell))

    def plan_entry(self, cell: Cell) -> dict:
        return {"cell_id": cell.cell_id, "source": cell.source.data.label, "target": cell.target.label,
                "backbone": cell.backbone, "strategy": cell.strategy.name, "seed": cell.seed,
                "config_hash": self.config_hash(cell)}

    def pending(self, cells: list[Cell]) -> list[Cell]:
        if self.force:
            return list(cells)
        done = self.store.done_hashes()
        return [c for c in cells if self.config_hash(c) not in done]

    # --- data -------------------------------------------------------------------------------------

    def data(self, spec: DatasetSpec) -> PreparedData:
        key = content_key(spec.describe())
        if key not in self._data:
            self._data[key] = prepare_dataset(spec.dataset, spec.options, spec.selection, self.root, self.suite.data.download,
                                              spec.label, spec.resolution)
            if self._data[key].skipped_files:
                self.log(f"  {spec.label}: skipped {len(self._data[key].skipped_files)} unreadable file(s), "
                         f"e.g. {self._data[key].skipped_files[0]}")
        return self._data[key]

    def prepare_data(self, cells: list[Cell]) -> None:
        """Loads (or downloads) every dataset the cells need; any problem is a SuiteError, before any training."""
        for cell in cells:
            for role, spec in (("source", cell.source.data), ("target", cell.target)):
                if role == "source" and not _uses_source(cell.strategy.name):
                    continue
                try:
                    self.data(spec)
                except DataUnavailableError as e:
                    raise SuiteError(f"{self.suite.path}: {role} {spec.label}: {e}") from None
            if _uses_source(cell.strategy.name):
                source, target = self.data(cell.source.data), self.data(cell.target)
                if source.channels != target.channels:
                    raise SuiteError(f"{self.suite.path}: source {source.name} has {source.channels}-channel images, "
                                     f"target {target.name} {target.channels}-channel; a backbone cannot take both")

    # --- source models ----------------------------------------------------------------------------

    def source_model(self, cell: Cell) -> SourceModel:
        key = self.source_key(cell.source, cell.backbone, cell.seed)
        if key not in self._sources:
            try:
                self._sources[key] = self._load_or_train_source(cell, key)
            except Exception as e:  # remembered, so cells sharing a failed source do not retrain it
                self._sources[key] = e
        found = self._sources[key]
        if isinstance(found, BaseException):
            raise found
        return found

    def _load_or_train_source(self, cell: Cell, key: str) -> SourceModel:
        data = self.data(cell.source.data)
        cached = self.cache.load("sources", key)
        if cached is not None and cached[1].get("data_fingerprint") == data.fingerprint:
            self.log(f"  source {data.name}/{cell.backbone}/seed{cell.seed}: cached ({key})")
            return SourceModel(cached[0], cached[1], cached=True)
        self.log(f"  source {data.name}/{cell.backbone}/seed{cell.seed}: training {cell.source.recipe.epochs} epochs on {len(data.train)} images")
        torch.manual_seed(cell.seed)
        model = self.runtime.prepare(create_backbone(cell.backbone, data.num_classes, data.channels))
        recipe, augmentation = cell.source.recipe, cell.source.data.augmentation
        loader = self.runtime.loader(data, "train", recipe.batch_size, True, augmentation, cell.seed)
        stats = train(model, loader, recipe, self.runtime, desc=f"source {data.name}")
        test_loader = self.runtime.loader(data, "test", self.suite.runtime.eval_batch_size, False, augmentation)
        logits, labels = predict(model, test_loader, self.runtime)
        meta = {
            "num_classes": data.num_classes, "channels": data.channels, "data_fingerprint": data.fingerprint,
            "data_sizes": data.sizes(), "backbone": cell.backbone, "seed": cell.seed,
            "stats": dataclasses.asdict(stats), "test_top1_pct": top_k_pct(logits, labels, 1),
            "trained_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        self.cache.save("sources", key, model.state_dict(), meta)
        self.log(f"  source trained in {stats.train_s:.1f}s: test top-1 {meta['test_top1_pct']:.1f}%")
        return SourceModel(model.state_dict(), meta, cached=False)

    def _source_classifier(self, cell: Cell) -> Classifier:
        source = self.source_model(cell)
        model = create_backbone(cell.backbone, source.meta["num_classes"], source.meta["channels"])
        model.load_state_dict(source.state_dict)
        return self.runtime.prepare(model)

    # --- fitted target models (shared between strategies, e.g. alpha-mix's ingredients) ---------

    def fitted(self, cell: Cell, ctx: TransferContext, strategy: str) -> Fitted:
        key = self.fitted_key(cell, strategy)
        if key not in self._fitted:
            try:
                self._fitted[key] = self._load_or_fit(cell, ctx, strategy, key)
            except Exception as e:
                self._fitted[key] = e
        found = self._fitted[key]
        if isinstance(found, BaseException):
            raise found
        return found

    def _load_or_fit(self, cell: Cell, ctx: TransferContext, strategy: str, key: str) -> Fitted:
        cached = self.cache.load("models", key)
        if cached is not None and cached[1].get("data_fingerprint") == ctx.target.fingerprint:
            state_dict, meta = cached
            model = create_backbone(cell.backbone, ctx.target.num_classes, ctx.target.channels)
            model.load_state_dict(state_dict)
            return Fitted(self.runtime.prepare(model), TrainStats(**meta["stats"]))
        spec = self.suite.strategy(strategy)
        fitted = STRATEGIES.get(strategy)(spec.options, spec.recipe).fit(ctx)
        self.cache.save("models", key, fitted.model.state_dict(),
                        {"stats": dataclasses.asdict(fitted.stats), "data_fingerprint": ctx.target.fingerprint, "strategy": strategy})
        return fitted

    # --- cells ------------------------------------------------------------------------------------

    def _sharing_counts(self, all_cells: list[Cell]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for cell in all_cells:
            if _uses_source(cell.strategy.name):
                key = self.source_key(cell.source, cell.backbone, cell.seed)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def run(self, cells: list[Cell], all_cells: Optional[list[Cell]] = None) -> RunSummary:
        """Runs the pending cells among ``cells``. ``all_cells`` (the whole suite) sets source amortisation."""
        self.store.write_plan(self.suite.name, [self.plan_entry(c) for c in all_cells or cells])
        todo = self.pending(cells)
        summary = RunSummary(skipped=len(cells) - len(todo))
        if summary.skipped:
            self.log(f"{summary.skipped} of {len(cells)} cells already done (ok records in {self.store.path}); skipping them")
        if not todo:
            return summary
        self.prepare_data(todo)
        sharing = self._sharing_counts(all_cells or cells)
        for number, cell in enumerate(todo, 1):
            self.log(f"[{number}/{len(todo)}] {cell.cell_id}")
            records = self.run_cell(cell, sharing)
            self.store.append(records)
            summary.ran += 1
            head = records[0] if len(records) == 1 else next(r for r in records if r.get("selected"))
            if head["status"] == "ok":
                alpha = f" (alpha={head['alpha']})" if head["alpha"] is not None else ""
                self.log(f"  ok{alpha}: test top-1 {head['metrics']['test_top1_pct']:.2f}%, "
                         f"target train {head['compute']['target_train_s']:.1f}s")
            else:
                summary.failed.append(cell.cell_id)
                self.log(f"  {head['status']}: {head['error']}")
        return summary

    def run_cell(self, cell: Cell, sharing: dict[str, int]) -> list[dict]:
        started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        reset_peak_memory(self.runtime.device)
        target = self.data(cell.target)
        source: Optional[SourceModel] = None
        try:
            if _uses_source(cell.strategy.name):
                source = self.source_model(cell)
            ctx = TransferContext(
                target, cell.backbone, cell.seed, self.runtime, cell.target.augmentation, self.suite.runtime.eval_batch_size,
                load_source=lambda: self._source_classifier(cell), fitted=lambda name: self.fitted(cell, ctx, name),
            )
            strategy = STRATEGIES.get(cell.strategy.name)(cell.strategy.options, cell.strategy.recipe)
            evaluations = strategy.run(ctx)
            status, error = "ok", None
        except Diverged as e:
            evaluations, status, error = [], "diverged", str(e)
        except torch.OutOfMemoryError as e:
            evaluations, status, error = [], "oom", str(e).splitlines()[0]
        except Exception as e:
            evaluations, status, error = [], "error", f"{type(e).__name__}: {e}"
            self.log(traceback.format_exc(limit=-3).rstrip())
        finished_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        common = self._record_base(cell, target, source, sharing, status, error, started_at, finished_at)
        if not evaluations:
            return [{**common, "alpha": None, "selected": True, "metrics": {}, "compute": self._source_compute(cell, source, sharing)}]
        return [
            {**common, "alpha": e.alpha, "selected": e.selected, "metrics": e.metrics,
             "compute": {**self._target_compute(e), **self._source_compute(cell, source, sharing)}, "details": e.details}
            for e in evaluations
        ]

    def _record_base(self, cell, target, source, sharing, status, error, started_at, finished_at) -> dict:
        data_prov = {"target": {"name": target.name, "fingerprint": target.fingerprint, "sizes": target.sizes(),
                                "location": target.location, "mean": target.mean, "std": target.std,
                                "resolution": target.resolution, "skipped_files": len(target.skipped_files)}}
        if source is not None:
            data_prov["source"] = {"name": cell.source.data.label, "fingerprint": source.meta["data_fingerprint"],
                                   "sizes": source.meta["data_sizes"]}
        return {
            "schema_version": RECORD_SCHEMA_VERSION,
            "suite": self.suite.name, "cell_id": cell.cell_id, "source": cell.source.data.label, "target": cell.target.label,
            "backbone": cell.backbone, "strategy": cell.strategy.name, "seed": cell.seed,
            "config_hash": self.config_hash(cell), "config": self.cell_config(cell),
            "status": status, "error": error, "directions": DIRECTIONS,
            "source_model": None if source is None else {
                "key": self.source_key(cell.source, cell.backbone, cell.seed), "cached": source.cached,
                "test_top1_pct": source.meta["test_top1_pct"]},
            "provenance": {**provenance(self.runtime.device), "runtime": self.runtime.describe(), "data": data_prov,
                           "command": self.command, "started_at": started_at, "finished_at": finished_at},
        }

    def _target_compute(self, evaluation: Evaluation) -> dict:
        stats = evaluation.stats
        mem_mib, mem_kind = peak_memory(self.runtime.device)
        return {
            "target_train_s": stats.train_s,
            "target_compile_s": stats.compile_s,
            "target_selection_s": evaluation.selection_s,
            "target_total_s": stats.train_s + stats.compile_s + evaluation.selection_s,
            "target_images": stats.images,
            "target_train_flops": stats.flops,
            "target_img_per_s": stats.images / stats.train_s if stats.train_s > 0 else None,
            "target_data_s": stats.data_s,
            **utilisation(stats.flops, stats.train_s, self.runtime.device),
            "eval_s": evaluation.details.get("eval_s"),
            "peak_mem_mib": mem_mib, "peak_mem_kind": mem_kind,
        }

    def _source_compute(self, cell: Cell, source: Optional[SourceModel], sharing: dict[str, int]) -> dict:
        if source is None:
            return {"source_train_s_total": 0.0, "source_train_s_amortised": 0.0, "source_cells_sharing": 0, "source_train_flops": 0.0}
        stats = source.meta["stats"]
        total_s = stats["train_s"] + stats["compile_s"]
        share = sharing.get(self.source_key(cell.source, cell.backbone, cell.seed), 1)
        return {"source_train_s_total": total_s, "source_train_s_amortised": total_s / share,
                "source_cells_sharing": share, "source_train_flops": stats["flops"], "source_images": stats["images"]}
