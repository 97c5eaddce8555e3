"""The results contract's numbers: every metric and compute figure a record carries, declared once with its
direction, unit and meaning. ``bench compare`` takes directions from here, every record stores them, the
field table of ``docs/results.md`` is this list (``python -m bench list fields`` prints it; a test checks
the page holds it), and a test checks that a run writes no number missing from it. A new figure is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional


@dataclass(frozen=True)
class Field:
    name: str  # its key in the record's section
    section: Literal["metrics", "compute"]
    direction: Optional[Literal["higher", "lower"]]  # which way is better; None: a description, not gated
    unit: str  # "%", "s", "FLOPs", ...; "" for a count or a word
    meaning: str

    @property
    def column(self) -> str:
        """The record's field as ``bench.results.frame.frame`` names its column."""
        return f"{self.section}.{self.name}"


def _metric(name: str, unit: str, meaning: str) -> Field:
    return Field(name, "metrics", "higher", unit, meaning)


def _compute(name: str, direction: Optional[Literal["higher", "lower"]], unit: str, meaning: str) -> Field:
    return Field(name, "compute", direction, unit, meaning)


FIELDS: tuple[Field, ...] = (
    _metric("test_top1_pct", "%", "top-1 accuracy on the target's test split (or its limited test subset)"),
    _metric("test_top5_pct", "%", "top-5 accuracy on test; null with 5 classes or fewer"),
    _metric(
        "val_top1_pct",
        "%",
        "top-1 on the validation split the candidate was chosen on (under refit: the chosen model's, before it "
        "was retrained on train + validation)",
    ),
    _compute(
        "target_train_s",
        "lower",
        "s",
        "target training seconds of every model the cell is built from, each once (LP-FT: the probe and its "
        "fine-tune; a search: every trial and the refit), steady state: from the first step (or, when compiling, "
        "the first after it) to the last, CUDA events on GPU and `perf_counter` on CPU; includes waiting for "
        "data; excludes evaluation, FLOP counting and checkpointing (linear probe: feature pass + head fit)",
    ),
    _compute(
        "target_compile_s",
        "lower",
        "s",
        "compiling, kept apart from training and from every total: a compiled training's first compiled step "
        "(compilation + warm-up) and the probe's compiled feature pass; 0 when nothing compiled. Each compile "
        "is also in `details.compiles` (graph, seconds, whether it was the graph's first in its process)",
    ),
    _compute("target_compiled_steps", None, "", "training steps run by the compiled model (0: eager throughout)"),
    _compute(
        "target_selection_s",
        "lower",
        "s",
        "validation work: α-mix's search (interpolation, BatchNorm re-estimation, scoring validation), a "
        "search's scoring of its trials, a refit's scoring of the chosen model",
    ),
    _compute("target_selection_flops", "lower", "FLOPs", "the forward FLOPs of that validation work"),
    _compute(
        "target_total_s",
        "lower",
        "s",
        "training and selection seconds, compilation excluded: the table's target compute",
    ),
    _compute(
        "target_images",
        None,
        "",
        "images passed through the network in training (each epoch's; the linear probe: its one feature pass)",
    ),
    _compute(
        "target_steps",
        None,
        "",
        "optimisation steps of every model the row is built from (L-BFGS iterations for the probe)",
    ),
    _compute(
        "target_train_flops",
        "lower",
        "FLOPs",
        "training FLOPs, forward + backward (the probe's pass forward only): torch.utils.flop_counter on a "
        "batch, times the images",
    ),
    _compute(
        "target_img_per_s",
        "higher",
        "images/s",
        "`target_images / target_train_s`: one definition for every strategy",
    ),
    _compute(
        "target_data_s",
        "lower",
        "s",
        "of `target_train_s`, host seconds spent waiting for the loader's next batch (0 for cached features)",
    ),
    _compute("target_tflop_per_s", "higher", "TFLOP/s", "achieved: `target_train_flops / target_train_s / 1e12`"),
    _compute(
        "target_mfu_pct",
        "higher",
        "%",
        "model FLOPs utilisation against the measured dense matmul rate of the precision the model trained in",
    ),
    _compute("target_mfu_precision", None, "", "that precision: `bf16` under bf16 or fp16 autocast, `fp32` without"),
    _compute(
        "device_peak_bf16_tflop_per_s",
        None,
        "TFLOP/s",
        "bf16 matmul rate measured in the process that trained the model (CUDA: 8192² matmuls timed with CUDA "
        "events; CPU: 1024² on every torch thread; the best of 5 rounds of 5), not a datasheet figure",
    ),
    _compute("device_peak_fp32_tflop_per_s", None, "TFLOP/s", "the same in fp32"),
    _compute("eval_s", "lower", "s", "scoring the cell's model on validation and test"),
    _compute(
        "peak_mem_mib",
        "lower",
        "MiB",
        "CUDA peak allocation of the cell's evaluation or of the fit of a model it evaluates, whichever is "
        "higher; on CPU the peak RSS of the process that ran them",
    ),
    _compute("peak_mem_kind", None, "", "`cuda` or `rss`: which peak `peak_mem_mib` is"),
    _compute("source_train_s_total", "lower", "s", "the source model's training seconds, compilation excluded"),
    _compute(
        "source_train_s_amortised",
        "lower",
        "s",
        "`source_train_s_total` divided by the suite's cells that reuse the source model",
    ),
    _compute("source_cells_sharing", None, "", "those cells"),
    _compute("source_train_flops", "lower", "FLOPs", "the source model's training FLOPs"),
    _compute("source_images", None, "", "images passed through the network in the source's training"),
    _compute("source_compile_s", "lower", "s", "the source training's compiling, apart from its seconds"),
    # shift records (shifts.jsonl): the metrics above on the shifted set, and what scoring it took
    _compute(
        "shift_eval_s",
        "lower",
        "s",
        "a shift record: scoring every model of its cell on the shifted set (reading them not timed)",
    ),
    _compute(
        "shift_models", None, "", "a shift record: the models that scoring covered (each α, the baseline's trials)"
    ),
    _compute("shift_images", None, "", "a shift record: images in the shifted set"),
    # estimate records (estimates.jsonl): a source model scored for a target by one estimator
    _compute(
        "features_s",
        "lower",
        "s",
        "an estimate record: the forward pass of the target's training images through the source model, shared "
        "by the estimate's estimators",
    ),
    _compute("estimator_s", "lower", "s", "an estimate record: the estimator's own work on those features"),
    _compute("images", None, "", "an estimate record: the target's training images passed"),
    _compute("feature_width", None, "", "an estimate record: the source body's feature width"),
)

BY_NAME = {f.name: f for f in FIELDS}
# which way is better, for every number a comparison may gate on
DIRECTIONS = {f.name: f.direction for f in FIELDS if f.direction is not None}


def markdown_table() -> str:
    """The table of metrics and compute fields in ``docs/results.md``."""
    lines = ["| field | better | unit | meaning |", "| --- | --- | --- | --- |"]
    for f in FIELDS:
        lines.append(f"| `{f.column}` | {f.direction or '–'} | {f.unit or '–'} | {f.meaning} |")
    return "\n".join(lines)
