"""Strategy registry. Each strategy is one module of this package, registered by name; importing the
package imports every module in it, so a new strategy is a new file and nothing else."""

import importlib
import pkgutil

from .base import STRATEGIES, Evaluation, Fitted, Strategy, TargetTask, register_strategy, total_cost


def discover() -> None:
    """Imports each module of this package (a module registers its strategy when imported)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


discover()

__all__ = [
    "STRATEGIES",
    "Evaluation",
    "Fitted",
    "Strategy",
    "TargetTask",
    "discover",
    "register_strategy",
    "total_cost",
]
