"""What a transfer strategy is, and the target task it works on.

A strategy is one class in one file, registered by name. It receives everything it depends on as
arguments and never calls back into whatever runs it:
- ``fit(task, source, ingredients)`` trains a model (strategies with ``trains = True``): ``source`` is a
  fresh copy of the source model (source head included) when the strategy ``uses_source``, and
  ``ingredients`` the fitted models of the strategies it names in ``ingredients``;
- ``evaluate(task, models)`` turns fitted models into evaluations (one per alpha for alpha-mix). A
  strategy that trains is evaluated on its own fitted model; one that does not (alpha-mix) on its
  ingredients'.
The plan (``bench/plan.py``) makes each fit and each evaluation an artifact with a content key.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch

from ..backbones import Classifier, create_backbone
from ..data import Augmentation
from ..datasets import PreparedData
from ..registry import Registry
from ..runtime import Runtime
from ..training import TrainRecipe, TrainStats, predict, top_k_pct


@dataclass
class Fitted:
    """A trained model and what training it cost."""

    model: Classifier
    stats: TrainStats


@dataclass
class Evaluation:
    """One evaluated model: a record's metrics and compute."""

    metrics: dict[str, Optional[float]]
    stats: TrainStats  # target training cost behind this model
    selection_s: float = 0.0  # the strategy's own evaluation work beyond training (alpha-mix's search)
    alpha: Optional[float] = None
    selected: bool = True  # for sweeps: whether this point is the one chosen on validation
    details: dict = field(default_factory=dict)


class TargetTask:
    """The target a strategy fits and evaluates on: its data, the backbone, the seed and the runtime."""

    def __init__(self, target: PreparedData, backbone: str, seed: int, runtime: Runtime, augmentation: Augmentation):
        self.target, self.backbone, self.seed, self.runtime, self.augmentation = target, backbone, seed, runtime, augmentation

    def loader(self, split: str, train: bool, batch_size: Optional[int] = None, whole: bool = False):
        """Device batches of a split (``batch_size`` defaults to the runtime's evaluation batch); ``whole``:
        every example on every rank under torchrun, for work each rank repeats."""
        return self.runtime.loader(self.target, split, batch_size or self.runtime.eval_batch_size, train,
                                   self.augmentation, self.seed, whole)

    def new_model(self) -> Classifier:
        """A randomly initialised backbone with a head for the target, seeded by the task's seed."""
        torch.manual_seed(self.seed)
        return self.runtime.prepare(create_backbone(self.backbone, self.target.num_classes, self.target.channels))

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

    def evaluate(self, model: torch.nn.Module) -> dict[str, Optional[float]]:
        """Top-1 on validation, top-1 and top-5 on test: the same code for every strategy."""
        val = self.logits(model, "val") if self.target.val is not None else None
        return self.metrics_from_logits(val, self.logits(model, "test"))


class Strategy:
    """Base of registered strategies. ``Options`` lists the strategy's own suite keys;
    ``recipe_defaults`` its training defaults, which the suite's ``train`` section overrides."""

    name: ClassVar[str]
    uses_source: ClassVar[bool] = True  # fit starts from the source model
    trains: ClassVar[bool] = True  # fits a model of its own (false: combines its ingredients' models)
    ingredients: ClassVar[tuple[str, ...]] = ()  # other strategies whose fitted models this one takes
    recipe_defaults: ClassVar[dict] = {}
    gpu_share: ClassVar[float] = 1.0  # share of a GPU a scheduler gives its fit (evaluations take less)
    selects_on_validation: ClassVar[bool] = False  # chooses among candidates on the target's validation split

    @dataclass
    class Options:
        pass

    def __init__(self, options, recipe: TrainRecipe):
        self.options, self.recipe = options, recipe

    def fit(self, task: TargetTask, source: Optional[Classifier], ingredients: dict[str, Fitted]) -> Fitted:
        raise NotImplementedError(f"{self.name} does not train a model of its own")

    def evaluate(self, task: TargetTask, models: dict[str, Fitted]) -> list[Evaluation]:
        fitted = models[self.name]
        started = time.perf_counter()
        metrics = task.evaluate(fitted.model)
        return [Evaluation(metrics, fitted.stats, details={"eval_s": time.perf_counter() - started})]

    @classmethod
    def evaluated_models(cls) -> tuple[str, ...]:
        """The strategies whose fitted models ``evaluate`` takes."""
        return (cls.name,) if cls.trains else cls.ingredients


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


register_strategy = STRATEGIES.register_class


def uses_source(name: str) -> bool:
    """Whether the strategy, or any model it is built from, starts from the source model."""
    cls = STRATEGIES.get(name)
    return cls.uses_source or any(uses_source(ingredient) for ingredient in cls.ingredients)
