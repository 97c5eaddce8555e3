"""``bench datapath``: images/s of every data-path backend against the torchvision ``DataLoader`` pipeline."""

import dataclasses
from pathlib import Path

from bench.commands.common import (
    add_data_root,
    add_device,
    add_measurement_outputs,
    log,
    require_array_dataset,
    resolve_runtime,
    write_measurement,
)
from bench.errors import SuiteError
from transfer_core.cores import usable_cores

NAME, ORDER = "datapath", 40
HELP = "benchmark the data path: images/s of each backend against a torchvision DataLoader"
# baseline / device: the array dataset; folder-baseline / torch / dali: the same images as a JPEG folder;
# shards-torch / shards-dali: the same images as WebDataset shards of JPEGs (the ratio is to shards-torch)
BACKENDS = ("baseline", "device", "folder-baseline", "torch", "dali", "shards-torch", "shards-dali")


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", default="cifar10", help="array dataset to read (default cifar10)")
    add_data_root(parser, help="folder with the datasets (default BENCH_DATA_ROOT or data)")
    parser.add_argument("--per-class", type=int, help="training images per class (default all)")
    parser.add_argument("--resolution", type=int, help="side the images are resized to (default the dataset's own)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--workers",
        type=int,
        default=usable_cores(),
        help="DataLoader workers and DALI threads (default: cores)",
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, from {', '.join(BACKENDS)}")
    parser.add_argument(
        "--folder", help="image folder to measure (default: the training images written as JPEG to a temporary folder)"
    )
    add_device(parser, default="auto", help="device (default auto)")
    parser.add_argument(
        "--step-backbone",
        default="resnet8",
        help="backbone whose train step the loader share is measured against ('none' to skip)",
    )
    parser.add_argument("--steps", type=int, default=30, help="train steps per loader share measurement")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum seconds per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per backend; the median is reported")
    parser.add_argument("--crop-padding", type=int)
    parser.add_argument("--flip", choices=["random", "alternate", "none"])
    parser.add_argument("--cutout", type=int)
    parser.add_argument(
        "--random-resized-crop", type=float, help="image folders: smallest area share (0 = resize + centre crop)"
    )
    add_measurement_outputs(parser)


def _augmentation(args, default):
    overrides = {
        k: v
        for k, v in (
            ("crop_padding", args.crop_padding),
            ("flip", args.flip),
            ("cutout", args.cutout),
            ("random_resized_crop", args.random_resized_crop),
        )
        if v is not None
    }
    try:
        return dataclasses.replace(default, **overrides)
    except ValueError as e:
        raise SuiteError(f"--{str(e).replace('_', '-')}") from None


def run(args) -> int:
    from bench.measure import datapath
    from bench.pipeline.provenance import device_name, provenance
    from bench.pipeline.suite import data_root
    from transfer_core.data.augment import Augmentation
    from transfer_core.datasets import DataUnavailableError, create_dataset_reader

    require_array_dataset(args.dataset, "--dataset: ", " (pass --folder to measure an image folder of your own)")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise SuiteError(f"--backends: unknown {', '.join(sorted(unknown))}; choose from {', '.join(BACKENDS)}")
    runtime = resolve_runtime(args.device, compile="off", input_dtype="float32")
    augmentation = _augmentation(args, Augmentation(**create_dataset_reader(args.dataset).augmentation_defaults))
    step_backbone = None if args.step_backbone == "none" else args.step_backbone
    try:
        rows = datapath.run_benchmark(
            args.dataset,
            data_root(None, args.data_root),
            runtime,
            args.batch_size,
            args.workers,
            args.resolution,
            augmentation,
            args.per_class,
            backends,
            Path(args.folder) if args.folder else None,
            step_backbone,
            args.steps,
            args.seconds,
            args.repeats,
            log=log,
        )
    except (DataUnavailableError, ValueError) as e:
        raise SuiteError(f"{args.dataset}: {e}") from None
    summary = (
        f"device {runtime.device} ({device_name(runtime.device)}), batch {args.batch_size}, "
        f"augmentation {dataclasses.asdict(augmentation)}; "
        f"loader images/s: median of {args.repeats} runs of >= {args.seconds:g} s"
        + (f"; training columns: {args.steps} steps of the real training loop" if step_backbone else "")
    )
    rendered = datapath.render_table(rows, args.batch_size, step_backbone)
    print(summary)
    print(rendered)
    payload = {
        "device": str(runtime.device),
        "batch_size": args.batch_size,
        "workers": args.workers,
        "augmentation": dataclasses.asdict(augmentation),
        "provenance": provenance(runtime.device),
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    write_measurement(args, "datapath", payload, "Data path throughput", f"{summary}.\n\n{rendered}")
    return 0
