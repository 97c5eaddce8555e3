"""Building one artifact of the plan: the only code that trains and evaluates, whichever executor runs it.

Artifacts hand models to one another through the model cache alone: a built model is saved there, and
every artifact that depends on it loads it from there, in this process or on another machine. So a
dependant always receives a model exactly as it was saved, built a second ago or last week.

A failure never raises out of ``Builder.build``: it becomes the outcome's status (``error``, ``diverged``,
``oom``, ``timeout``) and error text, which every dependant inherits, down to the records of the cells it affects.
Under torchrun, where a failure on one rank would leave the others waiting in a collective, only a
divergence (which every rank sees together) is a result; anything else stops all ranks, and a rerun
resumes after the cells recorded.

Longer than the other modules on purpose: it is the one place that builds, one method per kind of artifact
(source, fit, selection, evaluation) and the record each leaves, kept together so their accounting agrees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, TypeVar

import torch

from bench.pipeline.plan import (
    Artifact,
    CorruptionArtifact,
    EstimatorArtifact,
    EvaluationArtifact,
    FittedArtifact,
    RefitArtifact,
    SelectionArtifact,
    ShiftEvaluationArtifact,
    SourceArtifact,
)
from bench.pipeline.provenance import provenance
from bench.pipeline.recent import Recent, model_bytes, tensor_bytes
from bench.pipeline.shifts import CorruptionShift
from bench.pipeline.suite import DatasetSpec
from bench.results.fields import DIRECTIONS
from bench.results.records import RECORD_SCHEMA_VERSION, point_label
from transfer_core.backbones import Classifier, create_backbone
from transfer_core.cache import ModelCache
from transfer_core.datasets import (
    ArraySplit,
    DataUnavailableError,
    PreparedData,
    concatenated,
    file_hashes,
    fingerprints,
    prepare_dataset,
)
from transfer_core.distributed import barrier
from transfer_core.estimators import ESTIMATORS, EstimatorInputs
from transfer_core.pretrained import (
    WeightsUnavailableError,
    load_body,
    sha256,
    weights_file,
)
from transfer_core.runtime import (
    Runtime,
    forget_compiled,
    measured_peak_tflops,
    peak_memory,
    peak_precision,
    reset_peak_memory,
)
from transfer_core.shifts import relabelled
from transfer_core.shifts.corruptions import corrupt
from transfer_core.strategies import STRATEGIES, Evaluation, Fitted, TargetTask
from transfer_core.training import Diverged, TrainStats, predict, top_k_pct, train

Done = TypeVar("Done")  # what a timed piece of work returns


@dataclass(frozen=True)
class BuildEnv:
    """What building needs besides the artifact itself; picklable, so Ray can send it to workers."""

    suite: str
    data_root: Path
    download: bool
    cache_dir: Path
    runtime: Runtime
    command: str = ""
    time_limit_s: Optional[float] = None  # runtime.cell_timeout_s: an artifact building longer ends as ``timeout``


@dataclass
class Outcome:
    """What building an artifact produced: a model's meta (the model itself is in the cache), or a cell's records."""

    status: str = "ok"  # ok, error, diverged, oom
    error: Optional[str] = None
    meta: dict = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    cached: bool = False  # found already built (in the cache, or recorded) rather than built now
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class TimeLimitExceeded(BaseException):
    """Raised in the building thread when its time is up. A BaseException, so no ``except Exception`` on the
    way (a loader's retry, a strategy's fallback) can swallow it."""


@contextlib.contextmanager
def time_limit(seconds: Optional[float]):
    """Raises ``TimeLimitExceeded`` in this thread after ``seconds`` (SIGALRM: the main thread only, and only
    between Python steps; a native call that never returns is stopped by the Ray executor, which kills its
    worker). No limit when ``seconds`` is None or off the main thread."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TimeLimitExceeded(f"ran past runtime.cell_timeout_s ({seconds:g} s)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _models_released():
    """Whatever the build compiled is let go when it ends: its models are in the cache now."""
    try:
        yield
    finally:
        forget_compiled()


def utilisation(flops: float, seconds: float, peaks: dict, amp: str) -> dict:
    """Achieved TFLOP/s and model FLOPs utilisation against the matmul peak of the precision the model trained
    in (bf16 for bf16 or fp16 autocast, fp32 without), measured where it trained (``measured_peaks``)."""
    achieved = flops / seconds / 1e12 if seconds > 0 and flops > 0 else None
    precision = peak_precision(amp)
    peak = peaks.get(f"device_peak_{precision}_tflop_per_s")
    return {
        "target_tflop_per_s": achieved,
        "device_peak_bf16_tflop_per_s": peaks.get("device_peak_bf16_tflop_per_s"),
        "device_peak_fp32_tflop_per_s": peaks.get("device_peak_fp32_tflop_per_s"),
        "target_mfu_pct": 100 * achieved / peak if achieved is not None and peak else None,
        "target_mfu_precision": precision,
    }


def measured_peaks(device: torch.device) -> dict:
    """The device's bf16 and fp32 matmul peaks, measured once per process (MFU's denominators)."""
    return {f"device_peak_{p}_tflop_per_s": measured_peak_tflops(str(device), p) for p in ("bf16", "fp32")}


def _trials(artifact: Artifact) -> set[str]:
    """The keys of the grid points (trials) an artifact chooses among or records: a trial that failed is a
    result (scored as -inf on validation, recorded with its status), not the artifact's failure, as long as
    one trial trained."""
    if isinstance(artifact, SelectionArtifact):
        return {key for _, key in artifact.points}
    if isinstance(artifact, (EvaluationArtifact, ShiftEvaluationArtifact)):
        return {key for _, key in artifact.grid}
    return set()


class _FeaturesAndLogits(torch.nn.Module):
    """A classifier's pooled features and its head's logits, side by side, from one forward pass."""

    def __init__(self, model: Classifier):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.model.body(images)
        return torch.cat([features, self.model.head(features)], dim=1)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Builder:
    def __init__(
        self,
        env: BuildEnv,
        log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
        data: Optional[dict[str, PreparedData]] = None,
    ):
        self.env, self.log = env, log
        # compiled kernels and measured compile costs live beside the models, so every run sharing the cache reuses them
        self.runtime = dataclasses.replace(env.runtime, compile_cache=str(Path(env.cache_dir) / "compile"))
        self.cache = ModelCache(env.cache_dir)
        file_hashes.use_store(Path(env.cache_dir) / "file-hashes.sqlite")  # image files hashed once per version
        self._data = {} if data is None else data  # prepared datasets by spec key, shared with an in-process driver
        # what consecutive shift evaluations read, each read once: corrupted splits (in host memory, for the
        # run) and the models they score (on the device, kept only until an artifact of another kind)
        self._recent_splits, self._recent_models = Recent(), Recent()

    def data(self, spec: DatasetSpec, fingerprint: Optional[str] = None, test_split: bool = True) -> PreparedData:
        """The prepared dataset; with ``fingerprint``, checked to be the content the plan keyed (of every
        split, or with ``test_split=False`` of what training reads): a worker on another machine must not
        build under the plan's key from other files."""
        key = spec.content_key()
        if key not in self._data:
            self._data[key] = prepare_dataset(
                spec.dataset,
                spec.options,
                spec.selection,
                self.env.data_root,
                self.env.download,
                spec.label,
                spec.resolution,
            )
            if spec.normalization is not None:  # a pretrained source's, not the data's own statistics
                mean, std = spec.normalization
                self._data[key] = dataclasses.replace(self._data[key], mean=tuple(mean), std=tuple(std))
            if self._data[key].skipped_files:
                self.log(
                    f"  {spec.label}: skipped {len(self._data[key].skipped_files)} unreadable file(s), "
                    f"e.g. {self._data[key].skipped_files[0]}"
                )
        found = self._data[key]
        if fingerprint is not None and fingerprint != (found.fingerprint if test_split else found.train_fingerprint):
            raise DataUnavailableError(
                f"{spec.label} at {found.location} is not the data the run was planned with "
                "(its content differs here): every worker must read the same files"
            )
        return found

    def build(self, artifact: Artifact, inputs: dict[str, Outcome]) -> Outcome:
        """Builds ``artifact`` from its dependencies' outcomes; failures become the outcome's status."""
        started = time.perf_counter()
        # the shift evaluations' models, kept while a cell's shifts (and the corrupting between them) go on: their
        # memory is free again before anything else, so that it stays out of any other artifact's peak
        if not isinstance(artifact, (ShiftEvaluationArtifact, CorruptionArtifact)):
            self._recent_models.clear()
        reset_peak_memory(self.runtime.device)
        if self.runtime.shard.is_main:  # a worker that prepared data keeps what it hashed for the next one
            file_hashes.flush()
        failed = next((o for key, o in inputs.items() if not o.ok and key not in _trials(artifact)), None)
        if failed is None and isinstance(artifact, SelectionArtifact) and not any(o.ok for o in inputs.values()):
            failed = inputs[artifact.points[-1][1]]  # every trial failed: so has the strategy
        if failed is not None:  # nothing to build from: the dependency's failure is this artifact's too
            return self.failed(artifact, inputs, failed.status, failed.error)
        if not isinstance(artifact, EvaluationArtifact):
            measured_peaks(self.runtime.device)  # once per process, for MFU, and not on the cell's clock
        try:
            with time_limit(self.env.time_limit_s), _models_released():
                if isinstance(artifact, SourceArtifact):
                    outcome = Outcome(meta=self._source(artifact))
                elif isinstance(artifact, FittedArtifact):
                    outcome = Outcome(meta=self._fitted(artifact, inputs))
                elif isinstance(artifact, SelectionArtifact):
                    outcome = Outcome(meta=self._selection(artifact, inputs))
                elif isinstance(artifact, RefitArtifact):
                    outcome = Outcome(meta=self._refit(artifact, inputs))
                elif isinstance(artifact, CorruptionArtifact):
                    outcome = Outcome(meta=self._corruption(artifact))
                elif isinstance(artifact, ShiftEvaluationArtifact):
                    outcome = Outcome(records=self._shift_evaluation(artifact, inputs))
                elif isinstance(artifact, EstimatorArtifact):
                    outcome = Outcome(records=self._estimates(artifact, inputs))
                else:
                    outcome = Outcome(records=self._evaluation(artifact, inputs))
        except TimeLimitExceeded as e:
            if self.runtime.shard.world > 1:  # the ranks' clocks differ: stop them all, a rerun retries
                raise
            self.log(f"  {artifact.name}: {e}")
            return self.failed(artifact, inputs, "timeout", str(e))
        except Diverged as e:
            return self.failed(artifact, inputs, "diverged", str(e))
        except Exception as e:
            if self.runtime.shard.world > 1:  # the other ranks may be inside a collective: stop them all
                print(
                    f"bench: rank {self.runtime.shard.rank}: {artifact.name}: {type(e).__name__}: {e}", file=sys.stderr
                )
                raise
            self.log(traceback.format_exc(limit=-3).rstrip())
            if isinstance(e, torch.OutOfMemoryError):
                return self.failed(artifact, inputs, "oom", str(e).splitlines()[0])
            return self.failed(artifact, inputs, "error", f"{type(e).__name__}: {e}")
        outcome.seconds = time.perf_counter() - started
        return outcome

    def failed(self, artifact: Artifact, inputs: dict[str, Outcome], status: str, error: Optional[str]) -> Outcome:
        """The outcome of an artifact that could not be built: for an evaluation, its cells' records say why."""
        if isinstance(artifact, EvaluationArtifact):
            records = self._records(artifact, inputs, [], status, error, _now())
        elif isinstance(artifact, ShiftEvaluationArtifact):
            records = self._shift_records(artifact, [], status, error, _now(), 0.0)
        elif isinstance(artifact, EstimatorArtifact):
            records = self._estimate_records(artifact, {}, status, error, _now(), {})
        else:
            records = []
        return Outcome(status, error, records=records)

    # --- models -------------------------------------------------------------------------------------

    def _save(self, artifact: Artifact, model: torch.nn.Module, meta: dict) -> None:
        if self.runtime.shard.is_main:  # under torchrun the ranks hold one model: rank 0 writes it
            self.cache.save(artifact.cache_folder, artifact.key, model, meta)
        barrier(self.runtime.shard)

    def _load(self, kind: str, key: str, backbone: str, num_classes: int, channels: int) -> tuple[Classifier, dict]:
        model = create_backbone(backbone, num_classes, channels)
        meta = self.cache.load_into(kind, key, model)
        if meta is None:
            raise FileNotFoundError(
                f"{self.cache.path(kind, key)} is missing or unreadable: the model cache must be "
                "storage every worker reads"
            )
        return self.runtime.prepare(model).eval(), meta  # whoever trains it next switches it to training

    def _load_fitted(self, key: str, target: PreparedData, backbone: str) -> Fitted:
        model, meta = self._load(FittedArtifact.cache_folder, key, backbone, target.num_classes, target.channels)
        return Fitted(model, TrainStats(**meta["stats"]), meta.get("details", {}))

    def _pretrained_source(self, artifact: SourceArtifact) -> dict:
        spec, expected = artifact.source.pretrained, artifact.settings["pretrained"]["sha256"]
        path = weights_file(spec)
        if sha256(path) != expected:
            raise WeightsUnavailableError(f"{path} is not the file the run was planned with (its sha256 differs here)")
        channels = artifact.settings["channels"]
        loaded = load_body(spec, path, channels)
        # every strategy replaces the head; the file's own classifier is kept for the estimators that read the
        # source's predictions (LEEP, NCE), and a one-class stand-in where the file has none
        model = Classifier(loaded.body, loaded.num_features, loaded.head.out_features if loaded.head else 1)
        if loaded.head is not None:
            model.head = loaded.head
        model = self.runtime.prepare(model)
        weights = {**spec.describe(), "file": str(path), "sha256": expected}
        meta = {
            "num_classes": model.head.out_features,
            "source_head": loaded.head is not None,
            "channels": channels,
            "data_fingerprint": None,
            "data_sizes": {},
            "backbone": artifact.backbone,
            "seed": None,
            "stats": dataclasses.asdict(TrainStats()),
            "test_top1_pct": None,
            "trained_at": _now(),
            "weights": weights,
        }
        self._save(artifact, model, meta)
        self.log(f"  {artifact.name}: loaded {path} (sha256 {expected[:12]}…)")
        return meta

    def _source(self, artifact: SourceArtifact) -> dict:
        if artifact.source.pretrained:
            return self._pretrained_source(artifact)
        spec, recipe = artifact.source.data, artifact.source.recipe
        data = self.data(spec, artifact.settings["data"]["fingerprint"])
        length = f"{recipe.steps} steps" if recipe.steps is not None else f"{recipe.epochs} epochs"
        self.log(f"  {artifact.name}: training {length} on {len(data.train)} images")
        torch.manual_seed(artifact.seed)
        model = self.runtime.prepare(create_backbone(artifact.backbone, data.num_classes, data.channels))
        loader = self.runtime.loader(data, "train", recipe.batch_size, True, spec.augmentation, artifact.seed)
        stats = train(model, loader, recipe, self.runtime, desc=f"source {data.name}")
        # scored at the training batch size, which is part of this model's key (the evaluation batch size is not)
        logits, labels = predict(
            model, self.runtime.loader(data, "test", recipe.batch_size, False, spec.augmentation), self.runtime
        )
        meta = {
            "num_classes": data.num_classes,
            "channels": data.channels,
            "data_fingerprint": data.fingerprint,
            "data_sizes": data.sizes(),
            "backbone": artifact.backbone,
            "seed": artifact.seed,
            "stats": dataclasses.asdict(stats),
            "test_top1_pct": top_k_pct(logits, labels, 1),
            "trained_at": _now(),
        }
        self._save(artifact, model, meta)
        self.log(f"  {artifact.name}: trained in {stats.train_s:.1f}s, test top-1 {meta['test_top1_pct']:.1f}%")
        return meta

    def _starts(self, artifact, inputs: dict[str, Outcome], target: PreparedData) -> tuple[Optional[Classifier], dict]:
        """What a fit starts from: a fresh copy of the source model (if it uses one) and its ingredients' models."""
        source = None
        if artifact.source_key is not None:
            source_meta = inputs[artifact.source_key].meta
            source, _ = self._load(
                SourceArtifact.cache_folder,
                artifact.source_key,
                artifact.backbone,
                source_meta["num_classes"],
                source_meta["channels"],
            )
        ingredients = {
            name: self._load_fitted(key, target, artifact.backbone) for name, key in artifact.ingredient_keys.items()
        }
        return source, ingredients

    def _fitted(self, artifact: FittedArtifact, inputs: dict[str, Outcome]) -> dict:
        target = self.data(artifact.target, artifact.settings["target"]["fingerprint"], test_split=False)
        task = TargetTask(target, artifact.backbone, artifact.seed, self.runtime, artifact.target.augmentation)
        source, ingredients = self._starts(artifact, inputs, target)
        spec = artifact.strategy
        fitted = STRATEGIES.get(spec.name)(spec.options, spec.recipe).fit(task, source, ingredients)
        mem_mib, mem_kind = peak_memory(self.runtime.device)
        meta = {
            "strategy": spec.name,
            "stats": dataclasses.asdict(fitted.stats),
            "details": fitted.details,
            "data_fingerprint": target.fingerprint,
            "peak_mem_mib": mem_mib,
            "peak_mem_kind": mem_kind,
            "trained_at": _now(),
            **measured_peaks(self.runtime.device),  # where it trained, for MFU
        }
        self._save(artifact, fitted.model, meta)
        return meta

    def _selection(self, artifact: SelectionArtifact, inputs: dict[str, Outcome]) -> dict:
        """Scores every grid point's model on the validation split, and saves the best (the earliest on a tie)
        as the strategy's model. Its cost is the whole grid's: every point's training, and this choice."""
        target = self.data(artifact.target, artifact.settings["target"]["fingerprint"], test_split=False)
        task = TargetTask(target, artifact.backbone, artifact.seed, self.runtime, artifact.target.augmentation)
        scored, total, best = [], TrainStats(), None
        for index, (point, key) in enumerate(artifact.points):
            if not inputs[key].ok:  # a failed trial scores -inf: recorded, never chosen
                scored.append({"point": point, "val_top1_pct": None, "key": key, "status": inputs[key].status})
                continue
            fitted = self._load_fitted(key, target, artifact.backbone)
            val_top1, scoring_s = self._timed(lambda: top_k_pct(*task.logits(fitted.model, "val"), 1))
            total += fitted.stats
            total.selection_s += scoring_s
            total.selection_flops += task.forward_flops(fitted.model, "val")
            scored.append({"point": point, "val_top1_pct": val_top1, "key": key, "status": "ok"})
            if best is None or val_top1 > best[0]:
                best = (val_top1, index, fitted)
        _, chosen, fitted = best
        details = {
            **fitted.details,
            "grid_point": artifact.points[chosen][0],
            "grid": scored,
            "grid_selected_on": "val_top1_pct",
        }
        meta = {
            "strategy": artifact.strategy.name,
            "stats": dataclasses.asdict(total),
            "details": details,
            "selected_key": artifact.points[chosen][1],
            "data_fingerprint": target.fingerprint,
            "peak_mem_mib": max(inputs[key].meta.get("peak_mem_mib") or 0.0 for _, key in artifact.points),
            "peak_mem_kind": next(o for o in inputs.values() if o.ok).meta.get("peak_mem_kind"),
            "trained_at": _now(),
            **measured_peaks(self.runtime.device),
        }
        self._save(artifact, fitted.model, meta)
        self.log(
            f"  {artifact.name}: {point_label(artifact.points[chosen][0])} best on validation "
            f"({scored[chosen]['val_top1_pct']:.2f}% top-1 of {len(scored)} points)"
        )
        return meta

    def _refit(self, artifact: RefitArtifact, inputs: dict[str, Outcome]) -> dict:
        """Trains the chosen settings again on train + validation. The chosen model is scored on validation
        first (the score the choice was made on, which the refit model, having trained on it, cannot give).
        Its cost is the search's and the refit's."""
        target = self.data(artifact.target, artifact.settings["target"]["fingerprint"], test_split=False)
        chosen_meta = inputs[artifact.chosen_key].meta
        chosen = self._load_fitted(artifact.chosen_key, target, artifact.backbone)
        task = TargetTask(target, artifact.backbone, artifact.seed, self.runtime, artifact.target.augmentation)
        val_top1, scoring_s = self._timed(lambda: top_k_pct(*task.logits(chosen.model, "val"), 1))
        scoring_flops = task.forward_flops(chosen.model, "val")
        del chosen.model
        spec = artifact.strategy
        point = chosen.details.get("grid_point")
        if point is not None:  # the grid point or trial chosen on validation
            spec = next(p for p in spec.points() if p.point == point)
        cls = STRATEGIES.get(spec.name)
        merged = dataclasses.replace(target, train=concatenated(target.train, target.val), val=None)
        refit_task = TargetTask(merged, artifact.backbone, artifact.seed, self.runtime, artifact.target.augmentation)
        source, ingredients = self._starts(artifact, inputs, target)
        fitted = cls(cls.refit_options(spec.options, chosen.details), spec.recipe).fit(refit_task, source, ingredients)
        total = TrainStats()
        total += chosen.stats  # the search,
        total += fitted.stats  # then the refit
        total.selection_s += scoring_s
        total.selection_flops += scoring_flops
        details = {
            **fitted.details,
            **chosen.details,  # what was chosen on validation, and how (the probe's scores per L2 strength)
            "refit": True,
            "refit_train_s": fitted.stats.train_s,
            "refit_images": len(merged.train),
            "selected_val_top1_pct": val_top1,
        }
        mem_mib, mem_kind = peak_memory(self.runtime.device)
        meta = {
            "strategy": spec.name,
            "stats": dataclasses.asdict(total),
            "search_stats": dataclasses.asdict(chosen.stats),  # what the trials' own records carry: no refit in it
            "details": details,
            "selected_key": chosen_meta.get("selected_key", artifact.chosen_key),
            "data_fingerprint": target.fingerprint,
            "peak_mem_mib": max(mem_mib or 0.0, chosen_meta.get("peak_mem_mib") or 0.0),
            "peak_mem_kind": mem_kind,
            "trained_at": _now(),
            **measured_peaks(self.runtime.device),
        }
        self._save(artifact, fitted.model, meta)
        self.log(
            f"  {artifact.name}: refit on {len(merged.train)} images in {fitted.stats.train_s:.1f}s "
            f"(chosen with {val_top1:.2f}% validation top-1)"
        )
        return meta

    # --- shifted test sets ---------------------------------------------------------------------------

    def _test_pixels(self, data: PreparedData) -> torch.Tensor:
        """The test split as uint8 (N, H, W, C): the arrays themselves, or image files decoded as evaluation
        decodes them (resized and centre-cropped to the resolution)."""
        return data.test.pixels(data.resolution)

    def _corruption(self, artifact: CorruptionArtifact) -> dict:
        from tqdm import tqdm

        target = self.data(artifact.target)
        if fingerprints(target.test)[0] != artifact.settings["test_split"]["fingerprint"]:
            raise DataUnavailableError(
                f"{artifact.target.label} at {target.location}: its test split is not the one the run was planned "
                "with (its content differs here): every worker must read the same files"
            )
        shift = artifact.shift
        pixels = self._test_pixels(target)
        self.runtime.synchronize()
        started = time.perf_counter()
        with tqdm(total=len(pixels), desc=artifact.name, unit="img", leave=False, disable=None) as bar:
            corrupted = corrupt(
                pixels,
                shift.corruption,
                shift.severity,
                shift.seed,
                artifact.settings["constants"],
                self.runtime.device,
                progress=lambda done: bar.update(done - bar.n),
            )
        self.runtime.synchronize()
        seconds = time.perf_counter() - started
        meta = {
            "shift": shift.describe(),
            "constants": artifact.settings["constants"],
            "images": len(corrupted),
            "corruption_s": seconds,
            "device": str(self.runtime.device),
            "made_at": _now(),
        }
        if self.runtime.shard.is_main:
            self.cache.save_tensors(
                artifact.cache_folder, artifact.key, {"images": corrupted, "labels": target.test.labels}, meta
            )
        barrier(self.runtime.shard)
        self.log(f"  {artifact.name}: {len(corrupted)} images in {seconds:.1f}s")
        return meta

    def _shifted_target(self, artifact: ShiftEvaluationArtifact, target: PreparedData) -> tuple[PreparedData, dict]:
        """The target with its test split replaced by the shifted set (and no validation: nothing is chosen on
        a shift), at the side the target's models see; and what the records say of the shift beyond the suite's
        words (the table of constants ``auto`` resolved to)."""
        shift = artifact.shift
        side = target.resolution or (None if target.test.needs_resolution else target.test.pixels(None).shape[1])
        if isinstance(shift, CorruptionShift):

            def load() -> tuple[ArraySplit, dict]:
                found = self.cache.load(CorruptionArtifact.cache_folder, artifact.corrupted_key)
                if found is None:
                    raise FileNotFoundError(
                        f"{self.cache.path(CorruptionArtifact.cache_folder, artifact.corrupted_key)} is missing or "
                        "unreadable: the model cache must be storage every worker reads"
                    )
                tensors, meta = found
                split = ArraySplit(tensors["images"].clone(), tensors["labels"].clone())
                return split, {"constants": meta["constants"]}

            test, resolved = self._recent_splits.get(
                ("corrupted", artifact.corrupted_key), load, lambda got: tensor_bytes(got[0].images, got[0].labels)
            )
        else:
            other = self.data(shift.data, artifact.settings["shift"]["data"]["fingerprint"])
            test = relabelled(getattr(other, shift.split), other.class_names, target.class_names, shift.label)
            if other.channels != target.channels:
                raise DataUnavailableError(
                    f"shift {shift.label}: {other.channels}-channel images, the target's are {target.channels}-channel"
                )
            resolved = {}
        return dataclasses.replace(target, val=None, test=test, resolution=side), resolved

    def _shift_evaluation(self, artifact: ShiftEvaluationArtifact, inputs: dict[str, Outcome]) -> list[dict]:
        """Every model of the cell's result (each alpha of alpha-mix; the baseline's trials too) scored on the
        shifted set: one inference pass over it per model, nothing chosen."""
        started_at, cell = _now(), artifact.cell
        target = self.data(cell.target, artifact.settings["target"]["fingerprint"])
        shifted, resolved = self._shifted_target(artifact, target)
        task = TargetTask(shifted, cell.backbone, cell.seed, self.runtime, cell.target.augmentation)
        own = cell.strategy.name
        strategy = STRATEGIES.get(own)(cell.strategy.options, cell.strategy.recipe)
        models = {name: self._scored_model(key, target, cell.backbone) for name, key in artifact.model_keys.items()}
        evaluations, seconds = self._timed(lambda: strategy.evaluate(task, models))  # the scoring alone
        for spec, (point, key) in zip(cell.strategy.points(), artifact.grid):  # the baseline's trials, for the fit
            if inputs[key].ok:
                trial = {**models, own: self._scored_model(key, target, cell.backbone)}
                scored, trial_s = self._timed(
                    lambda: STRATEGIES.get(own)(spec.options, spec.recipe).evaluate(task, trial)
                )
                evaluations += [dataclasses.replace(e, grid_point=point, selected=False) for e in scored]
                seconds += trial_s
        return self._shift_records(artifact, evaluations, "ok", None, started_at, seconds, resolved)

    def _timed(self, work: Callable[[], Done]) -> tuple[Done, float]:
        """``work()`` and its seconds, the device's queue drained before and after."""
        self.runtime.synchronize()
        started = time.perf_counter()
        done = work()
        self.runtime.synchronize()
        return done, time.perf_counter() - started

    def _scored_model(self, key: str, target: PreparedData, backbone: str) -> Fitted:
        """A fitted model a shift evaluation scores: read once for all of its cell's shifts (scoring only reads it;
        α-mix mixes copies)."""
        return self._recent_models.get(
            ("fitted", key), lambda: self._load_fitted(key, target, backbone), lambda fitted: model_bytes(fitted.model)
        )

    def _shift_records(
        self,
        artifact: ShiftEvaluationArtifact,
        evaluations: list[Evaluation],
        status: str,
        error: Optional[str],
        started_at: str,
        seconds: float,
        resolved: Optional[dict] = None,
    ) -> list[dict]:
        """One record per scored model: which cell, model (alpha, grid point) and shift, its top-1 there."""
        shift = artifact.shift
        provenance_now = {
            **provenance(self.runtime.device),
            "runtime": self.runtime.describe(),
            "command": self.env.command,
            "started_at": started_at,
            "finished_at": _now(),
        }
        common = {
            "schema_version": RECORD_SCHEMA_VERSION,
            "suite": self.env.suite,
            "shift": {"label": shift.label, "family": shift.family, **shift.describe(), **(resolved or {})},
            "config_hash": artifact.key,
            "evaluation_key": artifact.evaluation_key,
            "status": status,
            "error": error,
            "directions": DIRECTIONS,
            "provenance": provenance_now,
        }
        records = []
        for cell in artifact.cells:
            if not evaluations:
                records.append(
                    {**common, **cell.identity(), "alpha": None, "grid_point": None, "metrics": {}, "compute": {}}
                )
            for e in evaluations:
                records.append(
                    {
                        **common,
                        **cell.identity(),
                        "alpha": e.alpha,
                        "grid_point": e.grid_point,
                        "trial": e.grid_point is not None,  # a baseline trial, scored for the fit only
                        "metrics": {k: v for k, v in e.metrics.items() if k != "val_top1_pct"},
                        "test_correct": e.test_correct,
                        # one inference pass per model: the artifact's time, shared by its models' records
                        "compute": {
                            "shift_eval_s": seconds,
                            "shift_models": len(evaluations),
                            "shift_images": e.test_correct["images"],
                        },
                        "details": {"refit": bool(e.grid_point is None and e.details.get("refit"))},
                    }
                )
        return records

    # --- transferability estimates ---------------------------------------------------------------------

    def _estimates(self, artifact: EstimatorArtifact, inputs: dict[str, Outcome]) -> list[dict]:
        """One forward pass of the target's training images through the source model (its body's features and
        its own classifier's softmax together), then every estimator of the suite on them, each timed."""
        started_at = _now()
        target = self.data(artifact.target, artifact.settings["target"]["fingerprint"], test_split=False)
        meta = inputs[artifact.source_key].meta
        model, _ = self._load(
            SourceArtifact.cache_folder, artifact.source_key, artifact.backbone, meta["num_classes"], meta["channels"]
        )
        loader = self.runtime.loader(
            target, "train", self.runtime.eval_batch_size, False, artifact.target.augmentation, artifact.seed
        )
        (both, labels), features_s = self._timed(lambda: predict(_FeaturesAndLogits(model), loader, self.runtime))
        features = both[:, : model.num_features].double()
        probabilities = torch.softmax(both[:, model.num_features :].double(), dim=1)
        has_head = meta.get("source_head", True)  # a source trained here has its own; a file may hold none
        inputs_ = EstimatorInputs(
            features.numpy(), labels.numpy().astype("int64"), probabilities.numpy() if has_head else None
        )
        scores = {}
        for spec in artifact.estimators:
            estimator = ESTIMATORS.get(spec.name)(spec.options)
            if estimator.reads_source_head and not has_head:
                scores[spec.name] = (None, 0.0, "the source's weights file holds no classifier to read")
                continue
            started = time.perf_counter()
            value = estimator.score(inputs_)
            scores[spec.name] = (value, time.perf_counter() - started, None)
        compute = {"features_s": features_s, "images": len(labels), "feature_width": model.num_features}
        return self._estimate_records(artifact, scores, "ok", None, started_at, compute)

    def _estimate_records(
        self, artifact: EstimatorArtifact, scores: dict, status: str, error: Optional[str], started_at: str, compute
    ) -> list[dict]:
        """One record per estimator: which source, target, backbone and seed, its score and what it took."""
        common = {
            "schema_version": RECORD_SCHEMA_VERSION,
            "suite": self.env.suite,
            "config_hash": artifact.key,
            "source_key": artifact.source_key,
            "provenance": {
                **provenance(self.runtime.device),
                "runtime": self.runtime.describe(),
                "command": self.env.command,
                "started_at": started_at,
                "finished_at": _now(),
            },
        }
        records = []
        for estimate in artifact.cells:
            for spec in artifact.estimators:
                score, seconds, missing = scores.get(spec.name, (None, 0.0, None))
                records.append(
                    {
                        **common,
                        **estimate.identity(),
                        "estimator": spec.name,
                        "options": dataclasses.asdict(spec.options),
                        "score": score,
                        "status": "skipped" if missing else status,
                        "error": missing or error,
                        "compute": {**compute, "estimator_s": seconds} if compute else {},
                        "details": ESTIMATORS.get(spec.name).describe(),
                    }
                )
        return records

    # --- evaluations and their records ---------------------------------------------------------------

    def _evaluation(self, artifact: EvaluationArtifact, inputs: dict[str, Outcome]) -> list[dict]:
        started_at, cell = _now(), artifact.cell
        target = self.data(cell.target, artifact.settings["target"]["fingerprint"])
        task = TargetTask(target, cell.backbone, cell.seed, self.runtime, cell.target.augmentation)
        own = cell.strategy.name
        models = {
            name: self._load_fitted(key, target, cell.backbone)
            for name, key in artifact.model_keys.items()
            if not (artifact.grid and name == own)
        }  # a grid's points are loaded one by one below
        own_meta = inputs[artifact.model_keys[own]].meta if own in artifact.model_keys else {}
        refit = own_meta.get("details", {}).get("refit", False)
        if not artifact.grid:
            evaluations = STRATEGIES.get(own)(cell.strategy.options, cell.strategy.recipe).evaluate(task, models)
            if refit:
                evaluations = [self._refit_scored(e, own_meta) for e in evaluations]
            return self._records(artifact, inputs, evaluations, "ok", None, started_at)
        # every point of the grid is evaluated and recorded; each record carries the whole grid's cost (what
        # choosing the selected point took), and the selected one is marked (under refit, the refit model's
        # record is, and every point's is not; the points' records carry the search without the refit)
        selection = own_meta
        grid_cost = TrainStats(**selection.get("search_stats", selection["stats"]))
        evaluations = []
        failed_trials = []
        for spec, (point, key) in zip(cell.strategy.points(), artifact.grid):
            if not inputs[key].ok:  # recorded with its status below; the cell stands on the trials that trained
                failed_trials.append((point, inputs[key]))
                continue
            fitted = self._load_fitted(key, target, cell.backbone)
            point_details = {
                **fitted.details,
                "grid_point_train_s": fitted.stats.train_s,
                "grid": selection["details"]["grid"],
            }
            for evaluation in STRATEGIES.get(own)(spec.options, spec.recipe).evaluate(
                task, {**models, own: Fitted(fitted.model, grid_cost, point_details)}
            ):
                evaluations.append(
                    dataclasses.replace(
                        evaluation, grid_point=point, selected=not refit and key == selection["selected_key"]
                    )
                )
        if refit:
            fitted = self._load_fitted(artifact.model_keys[own], target, cell.backbone)
            for evaluation in STRATEGIES.get(own)(cell.strategy.options, cell.strategy.recipe).evaluate(
                task, {**models, own: fitted}
            ):
                evaluation = dataclasses.replace(evaluation, grid_point=fitted.details["grid_point"], selected=True)
                evaluations.append(self._refit_scored(evaluation, selection))
        records = self._records(artifact, inputs, evaluations, "ok", None, started_at)
        for point, outcome in failed_trials:
            failed = self._records(artifact, inputs, [], outcome.status, outcome.error, started_at)
            records += [{**record, "grid_point": point, "selected": False} for record in failed]
        return records

    @staticmethod
    def _refit_scored(evaluation: Evaluation, refit_meta: dict) -> Evaluation:
        """A refit model's evaluation: its validation top-1 is the chosen model's, the score the choice was made
        on (the refit model trained on those images)."""
        metrics = {**evaluation.metrics, "val_top1_pct": refit_meta["details"]["selected_val_top1_pct"]}
        return dataclasses.replace(evaluation, metrics=metrics, details={**evaluation.details, "refit": True})

    def _records(
        self,
        artifact: EvaluationArtifact,
        inputs: dict[str, Outcome],
        evaluations: list[Evaluation],
        status: str,
        error: Optional[str],
        started_at: str,
    ) -> list[dict]:
        """The records of each cell the evaluation serves: one per evaluated model (per alpha), or one saying
        why there is none."""
        source = inputs.get(artifact.source_key) if artifact.source_key else None
        fitted_metas = [inputs[key].meta for key in artifact.model_keys.values()]
        provenance_now = {
            **provenance(self.runtime.device),
            "runtime": self.runtime.describe(),
            "data": self._data_provenance(artifact, source),
            "command": self.env.command,
            "started_at": started_at,
            "finished_at": _now(),
        }
        source_compute = self._source_compute(artifact, source)
        source_compiles = source.meta["stats"].get("compiles", []) if source is not None and source.ok else []
        records = []
        for cell in artifact.cells:
            common = {
                "schema_version": RECORD_SCHEMA_VERSION,
                "suite": self.env.suite,
                **cell.identity(),
                "strategy_info": STRATEGIES.get(cell.strategy.name).display(cell.strategy.options),
                "target_family": cell.target.family,  # the data-size sweep the target belongs to, if any
                "config_hash": artifact.key,
                "config": artifact.config,
                "status": status,
                "error": error,
                "directions": DIRECTIONS,
                "source_model": None
                if source is None or not source.ok
                else {
                    "key": artifact.source_key,
                    "cached": source.cached,
                    "test_top1_pct": source.meta["test_top1_pct"],
                    **({"weights": source.meta["weights"]} if source.meta.get("weights") else {}),
                },
                "provenance": provenance_now,
            }
            if not evaluations:
                records.append(
                    {
                        **common,
                        "alpha": None,
                        "grid_point": None,
                        "selected": True,
                        "metrics": {},
                        "compute": source_compute,
                    }
                )
            records += [
                {
                    **common,
                    "alpha": e.alpha,
                    "grid_point": e.grid_point,
                    "selected": e.selected,
                    "metrics": e.metrics,
                    "test_correct": e.test_correct,  # per test image, for compare's McNemar test
                    "compute": {**self._target_compute(e, fitted_metas), **source_compute},
                    # compile: auto on CPU: what the training measured and decided (transfer_core/compiling.py);
                    # every compile behind the record, the source's included, for the report's compile line
                    "details": {
                        **e.details,
                        **({"compile_decision": e.stats.compile_decision} if e.stats.compile_decision else {}),
                        **({"compiles": compiles} if (compiles := e.stats.compiles + source_compiles) else {}),
                    },
                }
                for e in evaluations
            ]
        return records

    def _data_provenance(self, artifact: EvaluationArtifact, source: Optional[Outcome]) -> dict:
        try:
            target = self.data(artifact.cell.target)
        except Exception:  # the record of a cell whose data could not be read says so in its error
            return {}
        provenance = {
            "target": {
                "name": target.name,
                "fingerprint": target.fingerprint,
                "sizes": target.sizes(),
                "num_classes": target.num_classes,
                "location": target.location,
                "mean": target.mean,
                "std": target.std,
                "resolution": target.resolution,
                "skipped_files": len(target.skipped_files),
                "manifest": target.manifest(),
            }
        }
        if source is not None and source.ok and source.meta.get("weights"):
            provenance["source"] = {"name": artifact.cell.source.label, "weights": source.meta["weights"]}
        elif source is not None and source.ok:
            provenance["source"] = {
                "name": artifact.cell.source.label,
                "fingerprint": source.meta["data_fingerprint"],
                "sizes": source.meta["data_sizes"],
            }
        return provenance

    def _target_compute(self, evaluation: Evaluation, fitted_metas: list[dict]) -> dict:
        stats = evaluation.stats
        # the cell's peak: its own evaluation's, or the fit of a model it evaluates, whichever is higher
        mem_mib, mem_kind = peak_memory(self.runtime.device)
        mem_mib = max([mem_mib] + [m.get("peak_mem_mib", 0.0) for m in fitted_metas])
        # the highest peak of the machines the cell's models trained on (one, unless Ray spread them)
        peaks = {
            name: max([m[name] for m in fitted_metas if m.get(name)], default=None)
            for name in ("device_peak_bf16_tflop_per_s", "device_peak_fp32_tflop_per_s")
        }
        selection_s = evaluation.selection_s + stats.selection_s  # alpha-mix's search, a grid's choice
        return {
            "target_train_s": stats.train_s,
            "target_compile_s": stats.compile_s,
            "target_selection_s": selection_s,
            # forward passes of that work: a grid's or tuning's choice, a refit's scoring, alpha-mix's search
            "target_selection_flops": evaluation.selection_flops + stats.selection_flops,
            # compiling is charged to no row: which training meets a graph first is an accident of order
            "target_total_s": stats.train_s + selection_s,
            "target_images": stats.images,
            "target_steps": stats.steps,
            "target_train_flops": stats.flops,
            "target_img_per_s": stats.images / stats.train_s if stats.train_s > 0 else None,
            "target_data_s": stats.data_s,
            "target_compiled_steps": stats.compiled_steps,
            **utilisation(stats.flops, stats.train_s, peaks, self.runtime.amp),
            "eval_s": evaluation.details.get("eval_s"),
            "peak_mem_mib": mem_mib,
            "peak_mem_kind": mem_kind,
        }

    @staticmethod
    def _source_compute(artifact: EvaluationArtifact, source: Optional[Outcome]) -> dict:
        if source is None or not source.ok:
            return {
                "source_train_s_total": 0.0,
                "source_train_s_amortised": 0.0,
                "source_cells_sharing": 0,
                "source_train_flops": 0.0,
            }
        stats = source.meta["stats"]
        total_s = stats["train_s"]  # its compile, like a target's, is reported on its own
        share = max(1, artifact.source_cells_sharing)
        return {
            "source_train_s_total": total_s,
            "source_train_s_amortised": total_s / share,
            "source_cells_sharing": share,
            "source_train_flops": stats["flops"],
            "source_compile_s": stats["compile_s"],
            "source_images": stats["images"],
        }
