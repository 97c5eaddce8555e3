"""Executors: where artifacts of the plan are built. The runner decides what to build and in which order
(an artifact is ready when its dependencies are done, and claimed so no two processes build it); an
executor only builds what it is handed: in this process (``local``), as Ray tasks across the GPUs and nodes
of a cluster (``ray``), or as jobs of a SLURM cluster through submitit (``submitit``).

A new executor is one module in this package: a subclass of ``Executor`` (``base.py``) with
``@register_executor``, declaring its own ``Options`` and command-line arguments. What every executor that
builds away from the driver needs (the shared-cache check, the book of tasks sent away with their time limits,
pretrained sources built on the driver) is in ``remote.py``, written once.
"""

from __future__ import annotations

import importlib
import pkgutil

from bench.pipeline.executors.base import EXECUTORS, Executor, create_executor, executor_options, register_executor

__all__ = ["EXECUTORS", "Executor", "create_executor", "executor_options", "register_executor"]

# every other module of this package registers one executor; none imports torch or its engine until it is
# created, so the command line reads their arguments at once
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in {"base", "remote"}:
        importlib.import_module(f"{__name__}.{_module.name}")
