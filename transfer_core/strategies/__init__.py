"""Strategy registry. Each strategy is one module; importing this package registers them all."""
from . import alpha_mix, full_finetune, l2_sp, linear_probe, lp_ft, scratch  # noqa: F401  (registration side effects)
from .base import STRATEGIES, Evaluation, Fitted, Strategy, TargetTask, register_strategy, total_cost

__all__ = ["STRATEGIES", "Evaluation", "Fitted", "Strategy", "TargetTask", "register_strategy", "total_cost"]
