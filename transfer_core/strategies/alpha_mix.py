"""Alpha-mix: P_target(y|x) = P_source(y|x) + alpha * P_diff(y|x), made concrete as in WiSE-FT
(Wortsman et al. 2022): theta_alpha = (1 - alpha) * theta_0 + alpha * theta_ft.

theta_0 is the source backbone with the linear-probe head (the head must come from the target, whose
labels differ from the source's) and theta_ft the fully fine-tuned model. ``space: weights`` interpolates
every parameter and buffer, so alpha=0 and alpha=1 are exactly the two ingredients; for interior alphas
BatchNorm statistics are re-estimated on target training data. ``space: outputs`` mixes the two models'
logits instead. Alpha is chosen on validation; every alpha's test accuracy is kept for the alpha curve.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..datasets import check_range
from ..training import TrainStats, reestimate_batchnorm
from .base import Evaluation, Fitted, Strategy, TargetTask, register_strategy


def interpolate_weights(model_0: torch.nn.Module, model_1: torch.nn.Module, alpha: float) -> torch.nn.Module:
    """A copy of ``model_0`` whose every floating-point parameter and buffer is (1-alpha)*theta_0 + alpha*theta_1."""
    state_0, state_1 = model_0.state_dict(), model_1.state_dict()
    mixed = {}
    for key, value_0 in state_0.items():
        value_1 = state_1[key]
        if value_0.is_floating_point():
            mixed[key] = torch.lerp(value_0, value_1, alpha) if 0 < alpha < 1 else (value_0 if alpha == 0 else value_1).clone()
        else:  # integer buffers (BatchNorm's batch counters) cannot be mixed: take the nearer endpoint
            mixed[key] = (value_0 if alpha < 0.5 else value_1).clone()
    model = copy.deepcopy(model_0)
    model.load_state_dict(mixed)
    return model


@register_strategy("alpha_mix")
class AlphaMix(Strategy):
    trains = False  # it combines the two fitted models; its compute is theirs plus its own search
    selects_on_validation = True  # alpha
    ingredients = ("linear_probe", "full_finetune")

    @dataclass
    class Options:
        alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])  # mixing weights to try, each in [0, 1]
        space: Literal["weights", "outputs"] = "weights"  # interpolate weights (WiSE-FT) or mix logits
        bn_reestimate: bool = True  # re-estimate BatchNorm statistics for interior alphas (weights space)

        def __post_init__(self):
            if not self.alphas:
                raise ValueError("alphas: at least one alpha is needed")
            for i, alpha in enumerate(self.alphas):
                check_range(f"alphas[{i}]", alpha, 0, 1)

    def evaluate(self, task: TargetTask, models: dict[str, Fitted]) -> list[Evaluation]:
        probe, finetuned = models["linear_probe"], models["full_finetune"]
        ingredients_stats = TrainStats()
        ingredients_stats += probe.stats
        ingredients_stats += finetuned.stats
        has_val = task.target.val is not None
        started = time.perf_counter()
        points = []
        if self.options.space == "outputs":
            ends = [(task.logits(m.model, "val") if has_val else None, task.logits(m.model, "test")) for m in (probe, finetuned)]
            for alpha in self.options.alphas:
                def mix(pair_0, pair_1):
                    return (torch.lerp(pair_0[0], pair_1[0], alpha), pair_0[1]) if pair_0 is not None else None
                points.append((alpha, task.metrics_from_logits(mix(ends[0][0], ends[1][0]), mix(ends[0][1], ends[1][1]))))
        else:
            for alpha in self.options.alphas:
                model = interpolate_weights(probe.model, finetuned.model, alpha)
                if self.options.bn_reestimate and 0 < alpha < 1:
                    reestimate_batchnorm(model, task.loader("train", train=False, whole=True), task.runtime)
                points.append((alpha, task.evaluate(model)))
        selection_s = time.perf_counter() - started
        # choose on validation only (test when there is no validation split would leak; fall back to the
        # first alpha listed, and say so in the details)
        scores = [m["val_top1_pct"] if has_val else float("-inf") for _, m in points]
        best = max(range(len(points)), key=lambda i: (scores[i], -i))  # ties: the earlier alpha
        return [
            Evaluation(metrics, ingredients_stats, selection_s=selection_s, alpha=alpha, selected=i == best,
                       details={"selected_on": "val_top1_pct" if has_val else "none (no validation split)"})
            for i, (alpha, metrics) in enumerate(points)
        ]
