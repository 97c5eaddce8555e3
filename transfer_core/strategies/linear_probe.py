"""Linear probe (Kornblith, Shlens and Le 2019): the source backbone frozen, a new linear head fit on its
target features.

Features are computed once and the head is fit on the cached features, not by running the frozen
backbone every epoch. Features are standardised for a well-conditioned fit, and the standardisation is
folded back into the head so the result is a plain ``body -> Linear`` model. Two solvers:
- ``lbfgs`` (default): L2-regularised multinomial logistic regression solved by L-BFGS on all features at once,
  once per L2 strength of ``l2_grid`` (strongest first, each warm-started from the last), keeping the
  strength whose head scores best on validation, as Kornblith et al. do. Every strength's validation
  top-1 is recorded; the whole grid's time is the probe's training time. Of the recipe only the batch size
  of the feature pass is used.
- ``sgd``: the recipe's epochs of SGD on mini-batches of features.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from ..checks import check_range
from ..compiling import compile_entry, graph_signature
from ..data import DeviceBatches
from ..training import TrainStats, count_flops_per_image, predict, top_k_pct, train
from .base import Fitted, Strategy, TargetTask, register_strategy


@register_strategy("linear_probe")
class LinearProbe(Strategy):
    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)
    table_order = 10
    plot_marker = "s"
    # a linear head on fixed features: more epochs are cheap, and smoothing only blurs a convex fit; these win
    # over the suite's train: section (meant for networks), and the probe's own section overrides them
    recipe_defaults = {"epochs": 40, "lr": 0.05, "batch_size": 256, "label_smoothing": 0.0}
    gpu_share = 0.25  # one pass of the frozen backbone, then a linear head: a fraction of a GPU

    @dataclass
    class Options:
        solver: Literal["lbfgs", "sgd"] = (
            "lbfgs"  # L-BFGS with L2 chosen on validation, or mini-batch SGD with the recipe
        )
        # lbfgs: L2 strengths to try (penalty l2/2 * ||W||^2 on the mean loss); by default Kornblith et al.'s
        # 45 values log-spaced from 1e-6 to 1e5
        l2_grid: list[float] = field(
            default_factory=lambda: [float(f"{10 ** (-6 + 11 * i / 44):.3g}") for i in range(45)]
        )
        max_iter: int = 200  # lbfgs: iterations per strength

        def __post_init__(self):
            if not self.l2_grid:
                raise ValueError("l2_grid: at least one L2 strength is needed")
            for i, strength in enumerate(self.l2_grid):
                check_range(f"l2_grid[{i}]", strength, 0, None)
            check_range("max_iter", self.max_iter, 1, None)

    @classmethod
    def chooses_on_validation(cls, options) -> bool:
        return options.solver == "lbfgs"

    @classmethod
    def refit_options(cls, options, details: dict):
        # retrained on train + validation at the L2 strength validation chose: nothing left to choose
        return dataclasses.replace(options, l2_grid=[details["l2"]]) if options.solver == "lbfgs" else options

    @classmethod
    def key_settings(cls, options, recipe) -> dict:
        # L-BFGS reads only the feature pass's batch size from the recipe; SGD never reads the L2 grid
        if options.solver == "lbfgs":
            return {"options": dataclasses.asdict(options), "recipe": {"batch_size": recipe.batch_size}}
        return {"options": {"solver": "sgd"}, "recipe": dataclasses.asdict(recipe)}

    def fit(self, task: TargetTask, source, ingredients) -> Fitted:
        model = source
        for p in model.body.parameters():
            p.requires_grad_(False)
        # features at the head's batch size, which is in this model's key (the evaluation batch size is not)
        train_images = task.loader("train", train=False, batch_size=self.recipe.batch_size)
        # compile: auto on CPU leaves the one feature pass eager: a cold compile would cost more than the pass
        compiles = [self._compile_body(model, task)] if task.runtime.compile_always else []
        task.runtime.synchronize()
        started = time.perf_counter()
        features, labels = predict(model.body, train_images, task.runtime)  # (N, F), once
        task.runtime.synchronize()
        extract_s = time.perf_counter() - started
        first_batch = next(iter(task.loader("train", train=False, batch_size=8, whole=True)))[
            0
        ]  # a rank's part may be empty
        extract_flops = count_flops_per_image(model.body, first_batch, backward=False, runtime=task.runtime) * len(
            labels
        )

        device = task.runtime.device
        mean, std = features.mean(0), features.std(0)
        # a feature that barely varies on the training images (a unit the source seldom fires) is not blown
        # up to unit variance: its float noise would become a signal the head fits, and folding 1/std back
        # into the head would multiply that noise on new images (a 1e-6 floor gave heads of |W| ~ 1e5)
        std = std.clamp_min(1e-2 * std.mean().item() + 1e-12)
        standardised = ((features - mean) / std).to(device)
        torch.manual_seed(task.seed)
        head = torch.nn.Linear(model.num_features, task.target.num_classes).to(device)
        details = {"solver": self.options.solver}
        if self.options.solver == "lbfgs":
            head_stats, details["l2"], details["val_top1_pct_by_l2"], val_images = self._fit_lbfgs(
                head, standardised, labels.to(device), model, task, mean, std
            )
            head_stats.flops += extract_flops / len(labels) * val_images  # the validation feature pass
        else:
            # a target smaller than one batch is fit on whole-data batches rather than not at all
            recipe = dataclasses.replace(self.recipe, batch_size=min(self.recipe.batch_size, len(labels)))
            batches = DeviceBatches(standardised, labels.to(device), recipe.batch_size, train=True, seed=task.seed)
            # the head is too small for compilation to pay off
            head_stats = train(
                head, batches, recipe, dataclasses.replace(task.runtime, compile=False), desc="linear_probe"
            )

        # fold the standardisation into the head: W((f - mu) / sigma) + b = (W / sigma) f + (b - (W / sigma) mu)
        with torch.no_grad():
            weight = head.weight / std.to(device)
            head.bias -= weight @ mean.to(device)
            head.weight.copy_(weight)
        model.head = head
        stats = TrainStats(
            train_s=extract_s + head_stats.train_s,
            compile_s=sum(c["compile_s"] for c in compiles),
            compiles=compiles,
            images=len(labels),
            steps=head_stats.steps,
            flops=extract_flops + head_stats.flops,
            final_loss=head_stats.final_loss,
        )
        return Fitted(model, stats, details)

    def _fit_lbfgs(
        self,
        head: torch.nn.Linear,
        features: torch.Tensor,
        labels: torch.Tensor,
        model,
        task: TargetTask,
        mean: torch.Tensor,
        std: torch.Tensor,
    ) -> tuple[TrainStats, float, dict[str, float], int]:
        """Fits ``head`` by L-BFGS at each L2 strength; leaves it at the strength best on validation."""
        if task.target.val is None and len(self.options.l2_grid) == 1:  # one strength: nothing to choose
            return self._fit_lbfgs_at(head, features, labels, self.options.l2_grid[0])
        if task.target.val is None:
            raise ValueError(
                "linear_probe: solver lbfgs chooses its L2 strength on validation, and the target has no "
                "validation split; give it a val_fraction above 0"
            )
        started = time.perf_counter()
        val_features, val_labels = predict(
            model.body, task.loader("val", train=False, batch_size=self.recipe.batch_size), task.runtime
        )
        val_features = ((val_features - mean) / std).to(features.device)
        val_labels = val_labels.to(features.device)
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        by_l2, best_state, best_score, steps, evaluations = {}, None, float("-inf"), 0, 0
        for strength in sorted(self.options.l2_grid, reverse=True):  # strongest first: each warm-starts the next
            state = self._lbfgs(head, features, labels, strength)
            steps, evaluations = steps + state["n_iter"], evaluations + state["func_evals"]
            with torch.no_grad():
                score = top_k_pct(head(val_features).cpu(), val_labels.cpu(), 1)
            by_l2[f"{strength:g}"] = score
            if best_state is None or score > best_score:  # ties keep the stronger regularisation, found first
                best_score, best_state, best_l2 = score, {k: v.clone() for k, v in head.state_dict().items()}, strength
        head.load_state_dict(best_state)
        with torch.no_grad():
            loss = F.cross_entropy(head(features), labels).item()  # the kept head's training loss
        # FLOPs: forward and backward of the head over every feature, per objective evaluation
        flops = 6.0 * features.shape[0] * features.shape[1] * head.out_features * evaluations
        stats = TrainStats(train_s=time.perf_counter() - started, steps=steps, flops=flops, final_loss=loss)
        return stats, best_l2, by_l2, len(val_labels)

    def _fit_lbfgs_at(
        self, head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor, strength: float
    ) -> tuple[TrainStats, float, dict[str, float], int]:
        """Fits ``head`` by L-BFGS at one L2 strength, with no validation to score it on (a refit)."""
        started = time.perf_counter()
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        state = self._lbfgs(head, features, labels, strength)
        with torch.no_grad():
            loss = F.cross_entropy(head(features), labels).item()
        flops = 6.0 * features.shape[0] * features.shape[1] * head.out_features * state["func_evals"]
        stats = TrainStats(train_s=time.perf_counter() - started, steps=state["n_iter"], flops=flops, final_loss=loss)
        return stats, strength, {}, 0

    def _lbfgs(self, head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor, strength: float) -> dict:
        """One L-BFGS solve of the L2-regularised multinomial logistic regression, from the head's current
        weights; returns the optimizer's counters (iterations, objective evaluations)."""
        optimizer = torch.optim.LBFGS(
            head.parameters(),
            lr=1.0,
            max_iter=self.options.max_iter,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-6,
            tolerance_change=1e-9,
        )

        def closure():
            optimizer.zero_grad()
            objective = F.cross_entropy(head(features), labels) + 0.5 * strength * head.weight.pow(2).sum()
            objective.backward()
            return objective

        optimizer.step(closure)
        return optimizer.state[head.weight]  # L-BFGS keeps its counters on the first parameter

    def _compile_body(self, model, task: TargetTask) -> dict:
        """Compiles the body's forward on one batch before the timed feature pass, and says what it cost
        (``compile_entry``): compilation is never counted as training (as ``train`` keeps its first compiled
        step apart)."""
        batch = next(iter(task.loader("train", train=False, batch_size=self.recipe.batch_size, whole=True)))[0]
        model.body.eval()  # the mode of the feature pass, so its graph is the one compiled here
        task.runtime.synchronize()
        started = time.perf_counter()
        with torch.no_grad(), task.runtime.autocast():
            task.runtime.compiled(model.body)(batch)
        task.runtime.synchronize()
        seconds = time.perf_counter() - started
        runtime = task.runtime
        return compile_entry(
            graph_signature(model.body, batch, runtime.amp, runtime.channels_last, runtime.compile_mode), seconds
        )
