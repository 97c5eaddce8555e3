"""Scratch: random initialisation, trained on the target only -- the baseline every transfer must beat."""

from ..training import train
from .base import Fitted, Strategy, TargetTask, register_strategy


@register_strategy("scratch")
class Scratch(Strategy):
    baseline = True  # the paired Δ of every other row is against training from scratch
    table_order = 0
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
