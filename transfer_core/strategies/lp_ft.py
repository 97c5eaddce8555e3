"""LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution"): fine-tune every weight starting from the fitted linear probe, its head kept.

A random head's large early gradients distort the source features before the head is any good; starting
from the probe's head, fine-tuning moves the features less. The paper fine-tunes with a smaller learning
rate than a fine-tune from a random head: 0.01 here by default (the suite's ``train`` lr does not apply;
this strategy's own section sets it). Its cost is the probe's plus its own fine-tuning.
"""

import copy

import torch

from .base import FinetuneOptions, Fitted, Strategy, TargetTask, finetune, register_strategy


@register_strategy("lp_ft")
class LinearProbeThenFinetune(Strategy):
    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)
    table_order = 30
    plot_marker = "v"
    uses_source = False  # it starts from the fitted linear probe, which holds the source body
    ingredients = ("linear_probe",)
    recipe_defaults = {"lr": 0.01}
    # Kumar et al. 2022 tune the fine-tuning stage's learning rate as for fine-tuning; the same ranges as
    # full_finetune's, so the two meet on equal terms
    search_space = {"lr": {"log": [1e-4, 0.1]}, "weight_decay": {"log": [1e-6, 1e-3]}}
    Options = FinetuneOptions

    def fit(self, task: TargetTask, source, ingredients) -> Fitted:
        model = copy.deepcopy(ingredients["linear_probe"].model)  # the probe stays as it was fitted
        torch.manual_seed(task.seed)  # dropout and the like draw from here: the same on any executor
        task.runtime.prepare(model)
        return Fitted(model, finetune(model, task, self.recipe, self.options, desc="lp_ft"))
