"""``bench export DATASET OUT``: an array dataset written as an image folder, a CIFAR subset in torchvision's
layout, or any dataset as WebDataset shards."""

from pathlib import Path

from bench.commands.common import add_data_root, require_array_dataset
from bench.errors import SuiteError

NAME, ORDER = "export", 50
HELP = (
    "write an array dataset as an image folder (train/ and test/, one folder per class), "
    "a CIFAR subset in torchvision's layout (--format cifar), or any dataset as WebDataset shards "
    "(--format webdataset)"
)


def add_arguments(parser) -> None:
    parser.add_argument("dataset")
    parser.add_argument("out", help="new folder to write")
    add_data_root(parser, help="folder with the datasets (default BENCH_DATA_ROOT or data)")
    parser.add_argument(
        "--format",
        choices=["jpg", "png", "cifar", "webdataset"],
        default="jpg",
        help="image files; cifar: a data root holding cifar-10-batches-py/ or cifar-100-python/; webdataset: "
        "tar shards of JPEGs with their index (any dataset, hf:NAME too)",
    )
    parser.add_argument("--path", help="the dataset's path option (image_folder, npz, hf, webdataset)")
    parser.add_argument("--images-per-shard", type=int, default=1000, help="webdataset: samples per tar shard")
    parser.add_argument("--classes", help="comma-separated class ids or names (default all)")
    parser.add_argument("--per-class", type=int, help="train images per class (default all)")
    parser.add_argument("--test-per-class", type=int, help="test images per class (default all)")


def run(args) -> int:
    from bench.pipeline.suite import data_root
    from transfer_core.datasets import (
        DataUnavailableError,
        Selection,
        prepare_dataset,
        write_image_folder,
    )

    name, options = _dataset(args)
    if args.format != "webdataset":
        require_array_dataset(name, hint="; --format webdataset writes any dataset")
    root = data_root(None, args.data_root)
    out = Path(args.out)
    if out.exists() and args.format != "cifar" and any(out.iterdir()):
        raise SuiteError(f"{out} exists and is not empty; choose a new folder")
    classes = tuple(int(c) if c.isdigit() else c for c in args.classes.split(",")) if args.classes else None
    try:
        data = prepare_dataset(
            name,
            options,
            Selection(classes=classes, per_class=args.per_class, test_per_class=args.test_per_class),
            root,
            download=False,
        )
    except DataUnavailableError as e:
        raise SuiteError(f"{args.dataset}: {e}") from None
    if args.format == "webdataset":
        from transfer_core.datasets.webdataset import write_shards

        written = write_shards(data, out, images_per_shard=args.images_per_shard)
        size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
        counts = ", ".join(f"{split} {w['samples']} images in {w['shards']} shards" for split, w in written.items())
        val = ", val_shards: val-*.tar" if "val" in written else ""  # the dataset's validation split, kept apart
        print(
            f"wrote {counts} to {out} ({size:.1f} MiB) with its index; read it as dataset: webdataset, path: {out}{val}"
        )
        return 0
    if args.format == "cifar":
        from transfer_core.datasets import write_cifar_subset

        if classes is not None or args.dataset not in ("cifar10", "cifar100"):
            raise SuiteError(
                "--format cifar writes cifar10 or cifar100 subsets with every class (use --per-class, --test-per-class)"
            )
        folder = write_cifar_subset(data, out, args.dataset)
        size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
        print(
            f"wrote {len(data.train)} train and {len(data.test)} test images in torchvision's layout "
            f"to {folder} ({size:.1f} MiB)"
        )
        return 0
    counts = write_image_folder(data, out, image_format=args.format)
    print(
        f"wrote {counts['train']} train and {counts['test']} test images of {data.num_classes} classes "
        f"to {out}/{{train,test}}/<class>/"
    )
    return 0


def _dataset(args):
    """The registered dataset ``args.dataset`` names (``hf:NAME`` too) and its options (``--path``)."""
    from transfer_core.datasets import DATASETS, create_dataset_reader

    name, _, given = args.dataset.partition(":")
    if name not in DATASETS:
        raise SuiteError(f"unknown dataset {args.dataset!r}; known: {', '.join(DATASETS.names())}")
    reader = create_dataset_reader(name)
    values = {}
    if given:
        if not reader.named_by:
            raise SuiteError(f"{args.dataset!r}: {name} takes no name after a colon")
        values[reader.named_by] = given
    if args.path:
        values["path"] = args.path
    try:
        return name, reader.Options(**values)
    except (TypeError, ValueError) as e:
        raise SuiteError(f"{args.dataset}: {e}") from None
