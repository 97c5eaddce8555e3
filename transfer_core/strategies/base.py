"""What a transfer strategy is, and the target task it works on.

A strategy is one class in one file, registered by name. It receives everything it depends on as
arguments and never calls back into whatever runs it:
- ``fit(task, source, ingredients)`` trains a model (strategies with ``trains = True``): ``source`` is a
  fresh copy of the source model (source head included) when the strategy ``uses_source``, and
  ``ingredients`` the fitted models of the strategies it names in ``ingredients``;
- ``evaluate(task, models)`` turns fitted models into evaluations (one per alpha for alpha-mix). ``models``
  holds every fitted model the strategy's result is built from: its own (if it trains) and its
  ingredients', recursively. A strategy that trains is evaluated on its own model; one that does not
  (alpha-mix) on its ingredients'. The evaluation's training cost is the sum over all of them, each
  counted once (LP-FT's includes its linear probe; alpha-mix's the probe once, not twice).
The plan (``bench/pipeline/plan.py``) makes each fit and each evaluation an artifact with a content key.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Collection, Optional

import numpy as np
import torch

from ..backbones import Classifier, create_backbone, stage_groups
from ..checks import check_range
from ..data import Augmentation
from ..datasets import PreparedData
from ..registry import Registry
from ..runtime import Runtime
from ..training import TrainRecipe, TrainStats, batchnorm_layers, count_flops_per_image, predict, top_k_pct, train

# The version of the evaluation every strategy shares (``TargetTask``: its logits, metrics and per-image
# results): in the key of whatever scores a model on the target. Raise it in any change that moves a metric.
EVALUATION_VERSION = 1


@dataclass
class Fitted:
    """A trained model and what training it cost."""

    model: Classifier
    stats: TrainStats
    details: dict = field(default_factory=dict)  # what the fit chose (the probe's L2 strength, ...): into the records


@dataclass
class Evaluation:
    """One evaluated model: a record's metrics and compute."""

    metrics: dict[str, Optional[float]]
    stats: TrainStats  # target training cost behind this model
    selection_s: float = 0.0  # the strategy's own evaluation work beyond training (alpha-mix's search)
    selection_flops: float = 0.0  # the forward passes of that work
    alpha: Optional[float] = None
    selected: bool = True  # for sweeps: whether this point is the one chosen on validation
    details: dict = field(default_factory=dict)
    grid_point: Optional[dict] = None  # the settings of a grid point (``{"lr": 0.03}``), when the strategy has a grid
    test_correct: Optional[dict] = None  # which test images it got right (``TargetTask.test_correct``)


class TargetTask:
    """The target a strategy fits and evaluates on: its data, the backbone, the seed and the runtime."""

    def __init__(self, target: PreparedData, backbone: str, seed: int, runtime: Runtime, augmentation: Augmentation):
        self.target, self.backbone, self.seed, self.runtime, self.augmentation = (
            target,
            backbone,
            seed,
            runtime,
            augmentation,
        )

    def loader(self, split: str, train: bool, batch_size: Optional[int] = None, whole: bool = False):
        """Device batches of a split (``batch_size`` defaults to the runtime's evaluation batch); ``whole``:
        every example on every rank under torchrun, for work each rank repeats."""
        return self.runtime.loader(
            self.target, split, batch_size or self.runtime.eval_batch_size, train, self.augmentation, self.seed, whole
        )

    def new_model(self) -> Classifier:
        """A randomly initialised backbone with a head for the target, seeded by the task's seed."""
        torch.manual_seed(self.seed)
        return self.runtime.prepare(create_backbone(self.backbone, self.target.num_classes, self.target.channels))

    def forward_flops(self, model: torch.nn.Module, split: str) -> float:
        """FLOPs of one forward pass of ``model`` over a split (what scoring it on validation costs)."""
        images = next(iter(self.loader(split, train=False, batch_size=8, whole=True)))[0]
        data = getattr(self.target, split)
        return count_flops_per_image(model, images, backward=False, runtime=self.runtime) * len(data)

    def logits(self, model: torch.nn.Module, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return predict(model, self.loader(split, train=False), self.runtime)

    def metrics_from_logits(self, val: Optional[tuple], test: tuple) -> dict[str, Optional[float]]:
        test_logits, test_labels = test
        return {
            "test_top1_pct": top_k_pct(test_logits, test_labels, 1),
            # top-5 says nothing when there are five classes or fewer
            "test_top5_pct": top_k_pct(test_logits, test_labels, 5) if self.target.num_classes > 5 else None,
            "val_top1_pct": top_k_pct(*val, 1) if val is not None else None,
        }

    @staticmethod
    def test_correct(test: tuple) -> dict:
        """Which test images the model's top-1 got right, in the test split's order, one bit each (numpy's
        ``packbits``, base64): two runs of a cell on the same images can then be compared image by image
        (McNemar's test in ``bench compare``) at about 1.3 KB per 10,000 images."""
        logits, labels = test
        right = (logits.argmax(1) == labels).cpu().numpy()
        return {"images": int(len(right)), "bits": base64.b64encode(np.packbits(right).tobytes()).decode()}

    def outputs(self, model: torch.nn.Module) -> tuple[Optional[tuple], tuple]:
        """(logits, labels) on validation (None without it) and on test."""
        val = self.logits(model, "val") if self.target.val is not None else None
        return val, self.logits(model, "test")

    def evaluate(self, model: torch.nn.Module) -> dict[str, Optional[float]]:
        """Top-1 on validation, top-1 and top-5 on test: the same code for every strategy."""
        return self.metrics_from_logits(*self.outputs(model))


class Strategy:
    """Base of registered strategies. ``Options`` lists the strategy's own suite keys; ``recipe_defaults``
    its own training defaults, which win over the suite's ``train`` section (its own section wins over them)."""

    name: ClassVar[str]
    # the version of its fit and evaluation, in the key of each of its models and records: raise it in any
    # change to the strategy that moves a number (registering a strategy without one is an error)
    version: ClassVar[int]
    uses_source: ClassVar[bool] = True  # fit starts from the source model
    trains: ClassVar[bool] = True  # fits a model of its own (false: combines its ingredients' models)
    ingredients: ClassVar[tuple[str, ...]] = ()  # other strategies whose fitted models this one takes
    # the strategy's own training defaults: they win over the suite's ``train`` section (its own section
    # overrides them); a strategy with none takes ``train`` as it is
    recipe_defaults: ClassVar[dict] = {}
    gpu_share: ClassVar[float] = 1.0  # share of a GPU a scheduler gives its fit (evaluations take less)
    selects_on_validation: ClassVar[bool] = False  # chooses among candidates on the target's validation split
    # what a suite's ``tuning:`` searches by default (bench/pipeline/tuning.py): setting -> list of values, or
    # {"log": [low, high]} / {"uniform": [low, high]}; docs/strategies.md names the paper each follows
    search_space: ClassVar[dict] = {}
    # how results show it: every record carries these (``display``), so a report needs no registry to order rows
    baseline: ClassVar[bool] = False  # the reference the other rows' paired Δ is measured against
    table_order: ClassVar[int] = 100  # rows sort by it, then by name
    plot_marker: ClassVar[str] = ""  # a matplotlib marker; "" takes a spare one

    @dataclass
    class Options:
        pass

    def __init__(self, options, recipe: TrainRecipe):
        self.options, self.recipe = options, recipe

    def fit(self, task: TargetTask, source: Optional[Classifier], ingredients: dict[str, Fitted]) -> Fitted:
        raise NotImplementedError(f"{self.name} does not train a model of its own")

    @classmethod
    def refit_options(cls, options, details: dict):
        """The options that retrain, on train + validation, the model a fit chose with ``options`` and recorded
        in ``details``: what the fit chose on validation (the probe's L2 strength) fixed, as validation is
        then training data. Most strategies choose nothing inside their fit."""
        return options

    def evaluate(self, task: TargetTask, models: dict[str, Fitted]) -> list[Evaluation]:
        started = time.perf_counter()
        val, test = task.outputs(models[self.name].model)
        metrics = task.metrics_from_logits(val, test)
        details = {**models[self.name].details, "eval_s": time.perf_counter() - started}
        return [Evaluation(metrics, total_cost(models), details=details, test_correct=task.test_correct(test))]

    @classmethod
    def key_settings(cls, options, recipe: TrainRecipe) -> dict:
        """What of its options and recipe bears on its numbers: the part of its settings its keys hash."""
        return {"options": dataclasses.asdict(options), "recipe": dataclasses.asdict(recipe) if cls.trains else None}

    @classmethod
    def chooses_on_validation(cls, options) -> bool:
        """Whether, under ``options``, it chooses among candidates on the target's validation split."""
        return cls.selects_on_validation

    @classmethod
    def ingredients_of(cls, options) -> tuple[str, ...]:
        """The strategies whose fitted models this one is built from, under ``options``."""
        return cls.ingredients

    @classmethod
    def display(cls, options) -> dict:
        """What a report needs to know of it, stored in each of its records (``strategy_info``)."""
        return {
            "baseline": cls.baseline,
            "table_order": cls.table_order,
            "plot_marker": cls.plot_marker,
            "ingredients": list(cls.ingredients_of(options)),
        }


def total_cost(models: dict[str, Fitted]) -> TrainStats:
    """The training cost of a result built from ``models``: each model's own fit, summed once."""
    total = TrainStats()
    for fitted in models.values():
        total += fitted.stats
    return total


@dataclass
class FinetuneOptions:
    """Options of every strategy that fine-tunes the source body."""

    backbone_lr_scale: float = 1.0  # the body's learning rate as a share of the head's (discriminative fine-tuning)
    freeze_stages: int = 0  # the first k parts of the body kept frozen, the stem first (partial fine-tuning)

    def __post_init__(self):
        check_range("backbone_lr_scale", self.backbone_lr_scale, 0, None, low_open=True)
        check_range("freeze_stages", self.freeze_stages, 0, None)


def finetune(
    model: Classifier,
    task: TargetTask,
    recipe: TrainRecipe,
    options: FinetuneOptions,
    desc: str,
    penalty: Optional[Callable[[], torch.Tensor]] = None,
    trains: Callable[[str], bool] = lambda name: True,
    frozen_statistics: Optional[Collection[str]] = None,
) -> TrainStats:
    """Fine-tunes ``model``, two choices made explicit (a change here that moves numbers raises the version of
    each strategy that calls it: full_finetune, lp_ft, l2_sp; their fingerprints fail until it does):
    - which parameters train: those ``trains`` accepts (by name: ``body.…``, ``head.…``; default every one),
      less those of the first ``options.freeze_stages`` body parts; the others are frozen;
    - which BatchNorm layers keep their running statistics: ``frozen_statistics`` (module names), by default
      those of the frozen stages (a partially fine-tuned network's frozen stages are frozen whole). A strategy
      that trains only some parameters (biases, say) and wants the statistics to follow the target passes ``()``.
    """
    frozen_stages: set[str] = set()
    if options.freeze_stages:  # only then must the body's stages be known: any backbone fine-tunes whole
        groups = stage_groups(model.body)
        if options.freeze_stages > len(groups):
            raise ValueError(
                f"freeze_stages: {options.freeze_stages}, but backbone {task.backbone} has {len(groups)} parts "
                "(its stem and stages)"
            )
        frozen_stages = {f"body.{name}" for group in groups[: options.freeze_stages] for name in group}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(trains(name) and name not in frozen_stages)
    if frozen_statistics is None:
        frozen_statistics = batchnorm_layers(model, frozen_stages)
    return train(
        model,
        task.loader("train", train=True, batch_size=recipe.batch_size),
        recipe,
        task.runtime,
        desc=desc,
        body_lr_scale=options.backbone_lr_scale,
        penalty=penalty,
        frozen_statistics=frozen_statistics,
    )


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", versioned=True)


register_strategy = STRATEGIES.register_class
