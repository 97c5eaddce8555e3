"""Strategy registry. Each strategy is one module; importing this package registers them all."""
from . import alpha_mix, full_finetune, linear_probe, scratch  # noqa: F401  (registration side effects)
from .base import STRATEGIES, Evaluation, Fitted, Strategy, TargetTask, register_strategy, uses_source

__all__ = ["STRATEGIES", "Evaluation", "Fitted", "Strategy", "TargetTask", "register_strategy", "uses_source"]
