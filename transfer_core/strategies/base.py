"""What a transfer strategy is, and the context it runs in.

A strategy is one class in one file, registered by name. ``fit`` decides what is trained and calls
the shared training loop; ``run`` turns fitted models into evaluations (one per alpha for alpha-mix).
The ``TransferContext`` gives a strategy everything it may use: the target data and its loaders, a
fresh copy of the source model, other strategies' fitted models (cached), and the shared evaluation.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Optional

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


class TransferContext:
    """The target task and the services a strategy may call."""

    def __init__(self, target: PreparedData, backbone: str, seed: int, runtime: Runtime, augmentation: Augmentation,
                 eval_batch_size: int, load_source: Callable[[], Classifier], fitted: Callable[[str], Fitted]):
        self.target, self.backbone, self.seed, self.runtime = target, backbone, seed, runtime
        self.augmentation, self.eval_batch_size = augmentation, eval_batch_size
        self._load_source, self._fitted = load_source, fitted

    def loader(self, split: str, train: bool, batch_size: Optional[int] = None):
        return self.runtime.loader(self.target, split, batch_size or self.eval_batch_size, train, self.augmentation, self.seed)

    def source_model(self) -> Classifier:
        """A fresh copy of the source model (source head included), on the device."""
        return self._load_source()

    def new_model(self) -> Classifier:
        """A randomly initialised backbone with a head for the target, seeded by the cell's seed."""
        torch.manual_seed(self.seed)
        return self.runtime.prepare(create_backbone(self.backbone, self.target.num_classes, self.target.channels))

    def fitted(self, strategy: str) -> Fitted:
        """Another strategy's fitted model for this same target, backbone and seed (trained once, cached)."""
        return self._fitted(strategy)

    def logits(self, model: torch.nn.Module, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return predict(model, self.loader(split, train=False), self.runtime)

    def metrics_from_logits(self, val: Optional[tuple], test: tuple) -> dict[str, Optional[float]]:
        test_logits, test_labels = test
        metrics = {
            "test_top1_pct": top_k_pct(test_logits, test_labels, 1),
            # top-5 says nothing when there are five classes or fewer
            "test_top5_pct": top_k_pct(test_logits, test_labels, 5) if self.target.num_classes > 5 else None,
            "val_top1_pct": top_k_pct(*val, 1) if val is not None else None,
        }
        return metrics

    def evaluate(self, model: torch.nn.Module) -> dict[str, Optional[float]]:
        """Top-1 on validation, top-1 and top-5 on test: the same code for every strategy."""
        val = self.logits(model, "val") if self.target.val is not None else None
        return self.metrics_from_logits(val, self.logits(model, "test"))


class Strategy:
    """Base of registered strategies. ``Options`` lists the strategy's own suite keys;
    ``recipe_defaults`` its training defaults, which the suite's ``train`` section overrides."""

    name: ClassVar[str]
    uses_source: ClassVar[bool] = True
    ingredients: ClassVar[tuple[str, ...]] = ()  # other strategies whose fitted models this one combines
    recipe_defaults: ClassVar[dict] = {}

    @dataclass
    class Options:
        pass

    def __init__(self, options, recipe: TrainRecipe):
        self.options, self.recipe = options, recipe

    def fit(self, ctx: TransferContext) -> Fitted:
        raise NotImplementedError(f"{self.name} does not train a model of its own")

    def run(self, ctx: TransferContext) -> list[Evaluation]:
        fitted = ctx.fitted(self.name)
        started = time.perf_counter()
        metrics = ctx.evaluate(fitted.model)
        return [Evaluation(metrics, fitted.stats, details={"eval_s": time.perf_counter() - started})]


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def register_strategy(name: str):
    def decorator(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        return STRATEGIES.register(name)(cls)

    return decorator
