"""One module per command (asv's layout). Each has ``NAME``, ``HELP``, ``ORDER`` (its place in ``--help``),
``add_arguments(parser)`` and ``run(args) -> int``; importing this package finds them all, so a new command
is a new file here. ``common.py`` holds the arguments and helpers several commands share.

The commands import what they need when they run: report, compare and index never load torch.
"""

import importlib
import pkgutil


def discover() -> list:
    """Every command module of this package, in ``ORDER``."""
    modules = [
        importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__) if m.name != "common"
    ]
    return sorted(modules, key=lambda module: module.ORDER)
