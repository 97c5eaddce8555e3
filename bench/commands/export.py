"""``bench export DATASET OUT``: an array dataset written as an image folder, or a CIFAR subset in
torchvision's layout."""

from pathlib import Path

from ..errors import SuiteError
from .common import add_data_root, require_array_dataset

NAME, ORDER = "export", 50
HELP = (
    "write an array dataset as an image folder (train/ and test/, one folder per class), "
    "or a CIFAR subset in torchvision's layout (--format cifar)"
)


def add_arguments(parser) -> None:
    parser.add_argument("dataset")
    parser.add_argument("out", help="new folder to write")
    add_data_root(parser, help="folder with the datasets (default BENCH_DATA_ROOT or data)")
    parser.add_argument(
        "--format",
        choices=["jpg", "png", "cifar"],
        default="jpg",
        help="image files, or cifar: a data root holding cifar-10-batches-py/ or cifar-100-python/",
    )
    parser.add_argument("--classes", help="comma-separated class ids or names (default all)")
    parser.add_argument("--per-class", type=int, help="train images per class (default all)")
    parser.add_argument("--test-per-class", type=int, help="test images per class (default all)")


def run(args) -> int:
    from transfer_core.datasets import (
        DataUnavailableError,
        Selection,
        create_dataset_reader,
        prepare_dataset,
        write_image_folder,
    )

    from ..suite import data_root

    require_array_dataset(args.dataset)
    root = data_root(None, args.data_root)
    out = Path(args.out)
    if out.exists() and args.format != "cifar" and any(out.iterdir()):
        raise SuiteError(f"{out} exists and is not empty; choose a new folder")
    classes = tuple(int(c) if c.isdigit() else c for c in args.classes.split(",")) if args.classes else None
    try:
        data = prepare_dataset(
            args.dataset,
            create_dataset_reader(args.dataset).Options(),
            Selection(classes=classes, per_class=args.per_class, test_per_class=args.test_per_class),
            root,
            download=False,
        )
    except DataUnavailableError as e:
        raise SuiteError(f"{args.dataset}: {e}") from None
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
