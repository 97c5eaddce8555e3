"""L2-SP (Li, Grandvalet and Davoine 2018, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks"): fine-tune every weight, pulling the body toward its source weights w0 instead of
toward zero.

The loss adds alpha/2 * ||w_body - w0||^2 over the body's trained parameters and beta/2 * ||w_head||^2 over
the new head. Defaults follow TLlib's L2-SP: 0.01 each. The penalties replace plain weight decay, so this
strategy's default ``weight_decay`` is 0 (the suite's ``train`` value does not apply; its own section may
set one).
"""

from dataclasses import dataclass

import torch

from ..checks import check_range
from .base import FinetuneOptions, Fitted, Strategy, TargetTask, finetune, register_strategy


@register_strategy("l2_sp")
class L2SP(Strategy):
    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)
    table_order = 40
    plot_marker = "P"
    recipe_defaults = {"weight_decay": 0.0}
    # Li, Grandvalet and Davoine 2018 search the pull toward the source over powers of ten; 0 is in the space,
    # so the search can drop the pull (plain fine-tuning without decay) if that is best on validation
    search_space = {"lr": {"log": [1e-4, 0.1]}, "sp_weight": [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]}

    @dataclass
    class Options(FinetuneOptions):
        sp_weight: float = 0.01  # alpha: the pull of the body toward the source weights
        head_weight: float = 0.01  # beta: plain L2 on the new head

        def __post_init__(self):
            super().__post_init__()
            check_range("sp_weight", self.sp_weight, 0, None)
            check_range("head_weight", self.head_weight, 0, None)

    def fit(self, task: TargetTask, source, ingredients) -> Fitted:
        model = source
        torch.manual_seed(task.seed)
        model.reset_head(task.target.num_classes)  # never the source's head: the label spaces differ
        task.runtime.prepare(model)
        anchors = [(p, p.detach().clone()) for p in model.body.parameters()]  # w0: the source body as it starts

        def penalty() -> torch.Tensor:
            # frozen parameters never move from w0 and add nothing; the others are counted each step
            moved = [(p - p0).pow(2).sum() for p, p0 in anchors if p.requires_grad]
            head = [p.pow(2).sum() for p in model.head.parameters()]
            zero = model.head.weight.new_zeros(())
            return 0.5 * self.options.sp_weight * sum(moved, zero) + 0.5 * self.options.head_weight * sum(head, zero)

        return Fitted(model, finetune(model, task, self.recipe, self.options, desc="l2_sp", penalty=penalty))
