"""``bench list``: the datasets, backbones and strategies known, with their options."""

import dataclasses

NAME, ORDER = "list", 100
HELP = "list the datasets, backbones and strategies known"


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    from transfer_core.backbones import BACKBONES
    from transfer_core.datasets import DATASETS
    from transfer_core.strategies import STRATEGIES

    def options(cls) -> str:
        fields = dataclasses.fields(cls)
        return ", ".join(f"{f.name}" for f in fields) or "—"

    print("datasets:")
    for name in DATASETS.names():
        print(f"  {name:<16} options: {options(DATASETS.get(name).Options)}")
    print("backbones:")
    for name in BACKBONES.names():
        print(f"  {name}")
    print("  …or any timm or torchvision model name (timm:NAME / torchvision:NAME to choose), randomly initialised")
    print("strategies:")
    for name in STRATEGIES.names():
        print(f"  {name:<16} options: {options(STRATEGIES.get(name).Options)} (plus any train key)")
    return 0
