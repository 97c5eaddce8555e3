"""Transferability estimators: scores of a source model for a target task from one forward pass of the
target's training images, computed before (and instead of) fine-tuning. Each is one module of this package,
registered by name; importing the package imports every module, so a new estimator is a new file."""

import importlib
import pkgutil

from .base import ESTIMATORS, Estimator, EstimatorInputs, register_estimator


def discover() -> None:
    """Imports each module of this package (a module registers its estimator when imported)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


discover()

__all__ = ["ESTIMATORS", "Estimator", "EstimatorInputs", "discover", "register_estimator"]
