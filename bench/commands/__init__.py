"""One module per command (asv's layout). Each has ``NAME``, ``HELP``, ``ORDER`` (its place in ``--help``),
``add_arguments(parser)`` and ``run(args) -> int``; importing this package finds them all, so a new command
is a new file here. ``common.py`` holds the arguments and helpers several commands share.

The commands import what they need when they run: compare and index never load torch, report only for records
written before they carried ``strategy_info``.
"""

import importlib
import pkgutil


def discover() -> list:
    """Every command module of this package, in ``ORDER`` (a module without ``NAME`` and ``run`` is a helper)."""
    modules = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]
    commands = [module for module in modules if hasattr(module, "NAME") and hasattr(module, "run")]
    return sorted(commands, key=lambda module: (getattr(module, "ORDER", 1000), module.NAME))
