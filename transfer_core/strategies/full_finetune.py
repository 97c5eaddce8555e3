"""Full fine-tune: the source backbone with a new head for the target; every weight trained on the target
(or all but the first ``freeze_stages`` parts of the body, at ``backbone_lr_scale`` times the head's rate)."""

import torch

from .base import FinetuneOptions, Fitted, Strategy, TargetTask, finetune, register_strategy


@register_strategy("full_finetune")
class FullFinetune(Strategy):
    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)
    table_order = 20
    # Kornblith, Shlens and Le 2019 tune fine-tuning's learning rate over 1e-4..0.1 and weight decay over
    # 1e-6..1e-3, both on log scales
    search_space = {"lr": {"log": [1e-4, 0.1]}, "weight_decay": {"log": [1e-6, 1e-3]}}
    plot_marker = "^"
    Options = FinetuneOptions

    def fit(self, task: TargetTask, source, ingredients) -> Fitted:
        model = source
        torch.manual_seed(task.seed)
        model.reset_head(task.target.num_classes)  # never the source's head: the label spaces differ
        task.runtime.prepare(model)
        return Fitted(model, finetune(model, task, self.recipe, self.options, desc="full_finetune"))
