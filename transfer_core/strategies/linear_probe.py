"""Linear probe: the source backbone frozen, a new linear head fit on its target features.

Features are computed once and the head is fit on the cached features (Kornblith et al. 2019), not by
running the frozen backbone every epoch. Features are standardised for a well-conditioned fit, and the
standardisation is folded back into the head so the result is a plain ``body -> Linear`` model.
"""
import dataclasses
import time

import torch

from ..data import DeviceBatches
from ..training import TrainStats, count_flops_per_image, predict, train
from .base import Fitted, Strategy, TargetTask, register_strategy


@register_strategy("linear_probe")
class LinearProbe(Strategy):
    # a linear head on fixed features: more epochs are cheap, and smoothing only blurs a convex fit
    recipe_defaults = {"epochs": 40, "lr": 0.05, "batch_size": 256, "label_smoothing": 0.0}
    gpu_share = 0.25  # one pass of the frozen backbone, then a linear head: a fraction of a GPU

    def fit(self, task: TargetTask, source, ingredients) -> Fitted:
        model = source
        for p in model.body.parameters():
            p.requires_grad_(False)
        # features at the head's batch size, which is in this model's key (the evaluation batch size is not)
        train_images = task.loader("train", train=False, batch_size=self.recipe.batch_size)
        task.runtime.synchronize()
        started = time.perf_counter()
        features, labels = predict(model.body, train_images, task.runtime)  # (N, F), once
        task.runtime.synchronize()
        extract_s = time.perf_counter() - started
        first_batch = next(iter(task.loader("train", train=False, batch_size=8, whole=True)))[0]  # a rank's part may be empty
        extract_flops = count_flops_per_image(model.body, first_batch, backward=False, runtime=task.runtime) * len(labels)

        device = task.runtime.device
        mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
        standardised = ((features - mean) / std).to(device)
        torch.manual_seed(task.seed)
        head = torch.nn.Linear(model.num_features, task.target.num_classes).to(device)
        batches = DeviceBatches(standardised, labels.to(device), self.recipe.batch_size, train=True, seed=task.seed)
        # the head is too small for compilation to pay off
        head_stats = train(head, batches, self.recipe, dataclasses.replace(task.runtime, compile=False), desc="linear_probe")

        # fold the standardisation into the head: W((f - mu) / sigma) + b = (W / sigma) f + (b - (W / sigma) mu)
        with torch.no_grad():
            weight = head.weight / std.to(device)
            head.bias -= weight @ mean.to(device)
            head.weight.copy_(weight)
        model.head = head
        stats = TrainStats(
            train_s=extract_s + head_stats.train_s, images=len(labels), steps=head_stats.steps,
            flops=extract_flops + head_stats.flops, final_loss=head_stats.final_loss,
        )
        return Fitted(model, stats)
