"""Scratch: random initialisation, trained on the target only -- the baseline every transfer must beat."""
from ..training import train
from .base import Fitted, Strategy, TransferContext, register_strategy


@register_strategy("scratch")
class Scratch(Strategy):
    uses_source = False

    def fit(self, ctx: TransferContext) -> Fitted:
        model = ctx.new_model()
        stats = train(model, ctx.loader("train", train=True, batch_size=self.recipe.batch_size), self.recipe, ctx.runtime, desc="scratch")
        return Fitted(model, stats)
