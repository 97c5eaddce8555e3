"""Alpha-mix: P_target(y|x) = P_source(y|x) + alpha * P_diff(y|x), made concrete as in WiSE-FT
(Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): theta_alpha = (1 - alpha) * theta_0 +
alpha * theta_ft.

theta_0 is the source backbone with the linear-probe head (the head must come from the target, whose
labels differ from the source's) and theta_ft the model fine-tuned from it: LP-FT by default, so that both
ends share the probe's head and the path between them is the one WiSE-FT takes (``finetune:
full_finetune`` fine-tunes from a random head instead). Three spaces:
- ``weights`` interpolates every parameter. BatchNorm is handled one way along the whole path
  (``batchnorm``): ``interpolate`` (default, as WiSE-FT mixes every tensor) mixes the running statistics
  like any buffer, so alpha=0 and alpha=1 are exactly the two ingredients; ``reestimate`` recomputes them
  on the target's training images at every alpha, the ends included.
- ``logits`` mixes the two models' logits (``outputs`` is its old name).
- ``probs`` mixes their softmax probabilities: the formula above taken literally.
Alpha is chosen on validation; every alpha's test accuracy is kept for the alpha curve. The search time
counts the validation work only (interpolating, re-estimating, scoring validation); test scoring is the
record's, not the method's.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch

from ..checks import check_range
from ..training import reestimate_batchnorm
from .base import Evaluation, Fitted, Strategy, TargetTask, register_strategy, total_cost


def interpolate_weights(model_0: torch.nn.Module, model_1: torch.nn.Module, alpha: float) -> torch.nn.Module:
    """A copy of ``model_0`` whose every floating-point parameter and buffer is (1-alpha)*theta_0 + alpha*theta_1."""
    state_0, state_1 = model_0.state_dict(), model_1.state_dict()
    mixed = {}
    for key, value_0 in state_0.items():
        value_1 = state_1[key]
        if value_0.is_floating_point():
            mixed[key] = (
                torch.lerp(value_0, value_1, alpha) if 0 < alpha < 1 else (value_0 if alpha == 0 else value_1).clone()
            )
        else:  # integer buffers (BatchNorm's batch counters) cannot be mixed: take the nearer endpoint
            mixed[key] = (value_0 if alpha < 0.5 else value_1).clone()
    model = copy.deepcopy(model_0)
    model.load_state_dict(mixed)
    return model


@register_strategy("alpha_mix")
class AlphaMix(Strategy):
    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)
    table_order = 50
    plot_marker = "D"
    trains = False  # it combines the two fitted models; its compute is theirs plus its own search
    selects_on_validation = True  # alpha

    @dataclass
    class Options:
        alphas: list[float] = field(
            default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0]
        )  # mixing weights to try, each in [0, 1]
        finetune: Literal["lp_ft", "full_finetune"] = (
            "lp_ft"  # theta_ft: fine-tuned from the probe, or from a random head
        )
        space: Literal["weights", "logits", "probs", "outputs"] = (
            "weights"  # what is mixed; outputs = logits (old name)
        )
        # weights space: BatchNorm statistics mixed like any buffer (WiSE-FT's own rule; the ends exact), or
        # re-estimated on the target's training images at every alpha
        batchnorm: Literal["interpolate", "reestimate"] = "interpolate"
        bn_reestimate: Optional[bool] = None  # old name: true = reestimate, false = interpolate

        def __post_init__(self):
            if not self.alphas:
                raise ValueError("alphas: at least one alpha is needed")
            for i, alpha in enumerate(self.alphas):
                check_range(f"alphas[{i}]", alpha, 0, 1)
            if self.space == "outputs":
                self.space = "logits"
            if self.bn_reestimate is not None:
                old = "reestimate" if self.bn_reestimate else "interpolate"
                if self.batchnorm != "interpolate" and self.batchnorm != old:  # both given, and they disagree
                    raise ValueError(
                        f"bn_reestimate: {self.bn_reestimate} contradicts batchnorm: {self.batchnorm}; "
                        "keep batchnorm only"
                    )
                self.batchnorm, self.bn_reestimate = old, None

    @classmethod
    def ingredients_of(cls, options) -> tuple[str, ...]:
        return ("linear_probe", options.finetune)

    @classmethod
    def key_settings(cls, options, recipe) -> dict:
        settings = dataclasses.asdict(options)
        if options.space != "weights":  # BatchNorm statistics matter only when weights are mixed
            del settings["batchnorm"]
        return {"options": settings, "recipe": None}

    def evaluate(self, task: TargetTask, models: dict[str, Fitted]) -> list[Evaluation]:
        probe, finetuned = models["linear_probe"].model, models[self.options.finetune].model
        has_val = task.target.val is not None
        search_s = 0.0  # validation work only
        points = []
        if self.options.space == "weights":
            for alpha in self.options.alphas:
                started = time.perf_counter()
                model = interpolate_weights(probe, finetuned, alpha)
                if self.options.batchnorm == "reestimate":
                    reestimate_batchnorm(model, task.loader("train", train=False, whole=True), task.runtime)
                val = task.logits(model, "val") if has_val else None
                search_s += time.perf_counter() - started
                test = task.logits(model, "test")
                points.append((alpha, task.metrics_from_logits(val, test), task.test_correct(test)))
        else:
            started = time.perf_counter()
            val_ends = [task.logits(m, "val") for m in (probe, finetuned)] if has_val else None
            search_s += time.perf_counter() - started
            test_ends = [task.logits(m, "test") for m in (probe, finetuned)]
            for alpha in self.options.alphas:
                started = time.perf_counter()
                val = self._mix(val_ends, alpha) if has_val else None
                search_s += time.perf_counter() - started
                test = self._mix(test_ends, alpha)
                points.append((alpha, task.metrics_from_logits(val, test), task.test_correct(test)))
        # choose on validation only (test when there is no validation split would leak; fall back to the
        # first alpha listed, and say so in the details)
        scores = [m["val_top1_pct"] if has_val else float("-inf") for _, m, _ in points]
        best = max(range(len(points)), key=lambda i: (scores[i], -i))  # ties: the earlier alpha
        details = {
            "selected_on": "val_top1_pct" if has_val else "none (no validation split)",
            "finetune": self.options.finetune,
            "space": self.options.space,
        }
        if self.options.space == "weights":
            details["batchnorm"] = self.options.batchnorm
        cost = total_cost(models)
        # the search's forward passes: the validation split once per alpha mixed in weight space (and the training
        # split once more where BatchNorm is re-estimated), or once per end where outputs are mixed
        passes = len(self.options.alphas) if self.options.space == "weights" else 2
        search_flops = task.forward_flops(probe, "val") * passes if has_val else 0.0
        if self.options.space == "weights" and self.options.batchnorm == "reestimate":
            search_flops += task.forward_flops(probe, "train") * len(self.options.alphas)
        return [
            Evaluation(
                metrics,
                cost,
                selection_s=search_s,
                selection_flops=search_flops,
                alpha=alpha,
                selected=i == best,
                details=details,
                test_correct=correct,
            )
            for i, (alpha, metrics, correct) in enumerate(points)
        ]

    def _mix(self, ends: list[tuple[torch.Tensor, torch.Tensor]], alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, labels) of the alpha-mix of two models' (logits, labels)."""
        (logits_0, labels), (logits_1, _) = ends
        if self.options.space == "probs":
            return torch.lerp(logits_0.softmax(1), logits_1.softmax(1), alpha), labels
        return torch.lerp(logits_0, logits_1, alpha), labels
