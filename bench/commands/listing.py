"""``bench list``: the datasets, backbones, strategies and estimators known, with their options; ``bench list fields``:
the metrics and compute fields a record carries (``bench/results/fields.py``), as ``docs/results.md``'s table."""

import dataclasses

NAME, ORDER = "list", 100
HELP = (
    "list the datasets, backbones, strategies and estimators known (or, with `fields`, the metrics and compute fields)"
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "what",
        nargs="?",
        choices=["plugins", "fields"],
        default="plugins",
        help="plugins (the default): datasets, backbones, strategies; fields: the records' numbers, as markdown",
    )


def run(args) -> int:
    if args.what == "fields":
        from bench.results.fields import markdown_table

        print(markdown_table())
        return 0
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
    from transfer_core.estimators import ESTIMATORS

    print("estimators:")
    for name in ESTIMATORS.names():
        cls = ESTIMATORS.get(name)
        print(f"  {name:<16} options: {options(cls.Options)}; {cls.paper}")
    return 0
