"""Scratch: random initialisation, trained on the target only -- the baseline every transfer must beat."""

from ..training import train
from .base import Fitted, Strategy, TargetTask, register_strategy


@register_strategy("scratch")
class Scratch(Strategy):
    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)
    baseline = True  # the paired Δ of every other row is against training from scratch
    table_order = 0
    # fine-tuning's ranges (Kornblith et al. 2019) with the learning rate one decade higher, to 1.0: training
    # from random initialisation commonly runs at 0.1 and above (He et al. 2016 train CIFAR ResNets at 0.1)
    search_space = {"lr": {"log": [1e-3, 1.0]}, "weight_decay": {"log": [1e-6, 1e-3]}}
    plot_marker = "o"
    uses_source = False

    def fit(self, task: TargetTask, source, ingredients) -> Fitted:
        model = task.new_model()
        stats = train(
            model,
            task.loader("train", train=True, batch_size=self.recipe.batch_size),
            self.recipe,
            task.runtime,
            desc="scratch",
        )
        return Fitted(model, stats)
