"""Full fine-tune: the source backbone with a new head for the target; every weight trained on the target."""
import torch

from ..training import train
from .base import Fitted, Strategy, TargetTask, register_strategy


@register_strategy("full_finetune")
class FullFinetune(Strategy):
    def fit(self, task: TargetTask, source, ingredients) -> Fitted:
        model = source
        torch.manual_seed(task.seed)
        model.reset_head(task.target.num_classes)  # never the source's head: the label spaces differ
        task.runtime.prepare(model)
        stats = train(model, task.loader("train", train=True, batch_size=self.recipe.batch_size), self.recipe, task.runtime,
                      desc="full_finetune")
        return Fitted(model, stats)
