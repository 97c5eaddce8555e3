"""Full fine-tune: the source backbone with a new head for the target; every weight trained on the target."""
import torch

from ..training import train
from .base import Fitted, Strategy, TransferContext, register_strategy


@register_strategy("full_finetune")
class FullFinetune(Strategy):
    def fit(self, ctx: TransferContext) -> Fitted:
        model = ctx.source_model()
        torch.manual_seed(ctx.seed)
        model.reset_head(ctx.target.num_classes)  # never the source's head: the label spaces differ
        ctx.runtime.prepare(model)
        stats = train(model, ctx.loader("train", train=True, batch_size=self.recipe.batch_size), self.recipe, ctx.runtime, desc="full_finetune")
        return Fitted(model, stats)
