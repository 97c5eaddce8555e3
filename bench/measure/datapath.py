"""``bench datapath``: images/s of each data-path backend against the pipeline users write by hand.

The baseline is the reference example's pipeline: a torchvision ``Dataset`` that makes one PIL image at
a time (as ``torchvision.datasets.CIFAR10`` and ``ImageFolder`` do), torchvision ``transforms``, and a
``DataLoader`` with one worker per core, its batches moved to the device. Every backend is measured in
the same process, on the same images, with the same augmentation, and also inside the real training
loop, where the share of a step spent waiting for data is what matters.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

from transfer_core.data import BatchFormat, create_loader, dali_available
from transfer_core.data.augment import Augmentation
from transfer_core.datasets import (
    PreparedData,
    Selection,
    create_dataset_reader,
    prepare_dataset,
    write_image_folder,
)
from transfer_core.runtime import Runtime

# --- the baseline: what the reference example writes ----------------------------------------------


def baseline_transforms(data: PreparedData, augmentation: Augmentation, resolution: int, decode_resize: bool):
    """torchvision transforms doing what our loaders do: (resize + centre crop for files,) pad-crop, flip,
    (resize for arrays,) to tensor, normalise."""
    from torchvision import transforms as T

    steps = []
    if decode_resize:
        if augmentation.random_resized_crop > 0:
            steps.append(T.RandomResizedCrop(resolution, scale=(augmentation.random_resized_crop, 1.0)))
        else:
            steps += [T.Resize(resolution), T.CenterCrop(resolution)]
    if augmentation.crop_padding > 0:
        size = resolution if decode_resize else tuple(data.train.images.shape[1:3])
        steps.append(
            T.RandomCrop(
                size,
                padding=augmentation.crop_padding,
                padding_mode="reflect" if augmentation.padding_mode == "reflect" else "constant",
            )
        )
    if augmentation.flip != "none":
        steps.append(T.RandomHorizontalFlip())
    if not decode_resize and data.resolution:
        steps.append(T.Resize(resolution))
    steps += [T.ToTensor(), T.Normalize(data.mean, data.std)]
    if augmentation.cutout > 0:
        side = augmentation.cutout / resolution
        steps.append(T.RandomErasing(p=1.0, scale=(side * side, side * side), ratio=(1.0, 1.0), value=0))
    return T.Compose(steps)


class _PilArrays(torch.utils.data.Dataset):
    """What ``torchvision.datasets.CIFAR10.__getitem__`` does: one PIL image per sample, then transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images.numpy(), labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        pixels = self.images[i]
        image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        return self.transform(image), self.labels[i]


class BaselineLoader:
    """A torchvision DataLoader whose batches are moved to the device, as a training script would."""

    def __init__(self, dataset, batch_size: int, workers: int, device: torch.device, seed: int = 0):
        self.dataset, self.batch_size, self.workers, self.device, self.seed = dataset, batch_size, workers, device, seed
        self.num_examples, self.epoch = len(dataset), 0

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.seed + self.epoch),
        )
        for images, labels in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def baseline_array_loader(
    data: PreparedData, augmentation: Augmentation, batch_size: int, workers: int, device: torch.device
):
    transform = baseline_transforms(
        data, augmentation, data.resolution or data.train.images.shape[1], decode_resize=False
    )
    return BaselineLoader(_PilArrays(data.train.images, data.train.labels, transform), batch_size, workers, device)


def baseline_folder_loader(
    folder: Path, data: PreparedData, augmentation: Augmentation, batch_size: int, workers: int, device: torch.device
):
    from torchvision.datasets import ImageFolder

    transform = baseline_transforms(data, augmentation, data.resolution, decode_resize=True)
    return BaselineLoader(ImageFolder(str(folder), transform=transform), batch_size, workers, device)


# --- measuring ---------------------------------------------------------------------------------------


def measure_img_per_s(
    loader, runtime: Runtime, min_seconds: float = 2.0, min_batches: int = 10, repeats: int = 3
) -> tuple[float, list[float]]:
    """Median images/s over ``repeats`` timed runs of at least ``min_seconds`` and ``min_batches`` each.

    Iterates whole epochs (so per-epoch costs such as starting workers or a DALI pipeline count, as
    they do in training), excluding only the very first batch, which pays one-off warm-up.
    """
    if len(loader) == 0:  # training drops the partial batch: an epoch of nothing would loop forever
        raise ValueError(
            f"{loader.num_examples} images make no full batch of {loader.batch_size}; "
            "lower --batch-size or raise --per-class"
        )
    epoch = 0

    def batches() -> Iterable:
        nonlocal epoch
        while True:
            loader.set_epoch(epoch)
            epoch += 1
            yield from loader

    stream = batches()
    first_images, _ = next(stream)  # warm-up
    runs = []
    for _ in range(repeats):
        runtime.synchronize()
        started, images, count = time.perf_counter(), 0, 0
        while count < min_batches or time.perf_counter() - started < min_seconds:
            x, _ = next(stream)
            images += len(x)
            count += 1
        runtime.synchronize()
        runs.append(images / (time.perf_counter() - started))
    del first_images
    return statistics.median(runs), runs


class FirstBatches:
    """The first ``steps`` batches of a loader's epoch: a short training run on a large dataset."""

    def __init__(self, loader, steps: int):
        self.loader, self.steps = loader, steps
        self.num_examples, self.batch_size = loader.num_examples, loader.batch_size

    def __len__(self) -> int:
        return min(len(self.loader), self.steps)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self):
        for _, batch in zip(range(len(self)), self.loader):
            yield batch


def measure_step_share(loader, backbone: str, data: PreparedData, runtime: Runtime, steps: int) -> dict:
    """Trains ``backbone`` for up to ``steps`` steps (one epoch at most) with the real training loop and
    reports the share of that time spent waiting for the loader (``TrainStats.data_s / train_s``)."""
    from transfer_core.backbones import create_backbone
    from transfer_core.training import TrainRecipe, train

    torch.manual_seed(0)
    model = runtime.prepare(create_backbone(backbone, data.num_classes, data.channels))
    recipe = TrainRecipe(epochs=1, batch_size=loader.batch_size, lr=0.05)
    stats = train(model, FirstBatches(loader, steps), recipe, runtime, desc=f"{backbone} steps")
    return {
        "step_ms": 1000 * stats.train_s / stats.steps,
        "data_ms_per_step": 1000 * stats.data_s / stats.steps,
        "data_share_pct": 100 * stats.data_s / stats.train_s,
        "train_img_per_s": stats.images / stats.train_s,
    }


@dataclass
class Row:
    data: str
    backend: str
    pipeline: str
    img_per_s: float
    runs: list
    ratio: Optional[float] = None
    step: Optional[dict] = None


SHARD_IMAGES = 1000  # samples per WebDataset shard the benchmark writes


def run_benchmark(
    dataset: str,
    root: Path,
    runtime: Runtime,
    batch_size: int,
    workers: int,
    resolution: Optional[int],
    augmentation: Optional[Augmentation],
    per_class: Optional[int],
    backends: list[str],
    folder: Optional[Path],
    step_backbone: Optional[str],
    step_count: int,
    min_seconds: float,
    repeats: int,
    log: Callable[[str], None] = print,
) -> list[Row]:
    reader = create_dataset_reader(dataset)
    augmentation = augmentation or Augmentation(**reader.augmentation_defaults)
    # the benchmark reads training images only; one test image per class keeps the written folder small
    data = prepare_dataset(
        dataset,
        reader.Options(),
        Selection(per_class=per_class, test_per_class=1),
        root,
        download=False,
        resolution=resolution,
    )
    device = runtime.device
    fmt = BatchFormat(device, data.mean, data.std, runtime.channels_last, runtime.input_dtype)
    rows: list[Row] = []
    size = resolution or data.train.images.shape[1]
    label = f"{dataset} {len(data.train)} imgs {size}x{size}"

    def add(data_label: str, backend: str, pipeline: str, loader, share_data: PreparedData) -> None:
        log(f"measuring {backend}: {pipeline}")
        img_per_s, runs = measure_img_per_s(loader, runtime, min_seconds, repeats=repeats)
        row = Row(data_label, backend, pipeline, img_per_s, [round(r, 1) for r in runs])
        if step_backbone:
            row.step = measure_step_share(loader, step_backbone, share_data, runtime, step_count)
        rows.append(row)

    if "baseline" in backends:
        add(
            label,
            "baseline",
            f"torchvision Dataset + transforms, DataLoader({workers} workers)",
            baseline_array_loader(data, augmentation, batch_size, workers, device),
            data,
        )
    if "device" in backends:
        add(
            label,
            "device",
            "uint8 on the device, batched gather + normalise",
            create_loader(data, "train", fmt, batch_size, True, augmentation),
            data,
        )

    folder_backends = [b for b in backends if b in ("folder-baseline", "torch", "dali")]
    if folder_backends:
        with tempfile.TemporaryDirectory(prefix="bench-datapath-") as scratch:
            if folder is None:
                folder = Path(scratch) / "jpeg"
                log(f"writing the {len(data.train)} training images as JPEG to {folder}")
                write_image_folder(data, folder, image_format="jpg")
            files = _folder_data(folder, size)
            train_folder = folder / "train" if (folder / "train").is_dir() else folder
            files_label = f"JPEG folder {len(files.train)} files {size}x{size}"
            folder_fmt = BatchFormat(device, files.mean, files.std, runtime.channels_last, runtime.input_dtype)
            if "folder-baseline" in folder_backends:
                add(
                    files_label,
                    "folder-baseline",
                    f"torchvision ImageFolder + transforms, DataLoader({workers} workers)",
                    baseline_folder_loader(train_folder, files, augmentation, batch_size, workers, device),
                    files,
                )
            if "torch" in folder_backends:
                add(
                    files_label,
                    "torch",
                    f"torchvision decode in DataLoader({workers} workers), batched augment",
                    create_loader(
                        files, "train", folder_fmt, batch_size, True, augmentation, backend="torch", workers=workers
                    ),
                    files,
                )
            if "dali" in folder_backends:
                if not dali_available():
                    log("dali: not installed (pip install nvidia-dali-cuda130); skipped")
                else:
                    where = "mixed (GPU) decode" if device.type == "cuda" else "CPU pipeline"
                    add(
                        files_label,
                        "dali",
                        f"DALI {where}, {workers} threads",
                        create_loader(
                            files, "train", folder_fmt, batch_size, True, augmentation, backend="dali", workers=workers
                        ),
                        files,
                    )

    shard_backends = [b for b in backends if b in ("shards-torch", "shards-dali")]
    if shard_backends:
        with tempfile.TemporaryDirectory(prefix="bench-datapath-") as scratch:
            from transfer_core.datasets.webdataset import WebDataset, write_shards

            log(f"writing the {len(data.train)} training images as WebDataset shards of JPEGs to {scratch}")
            written = write_shards(data, Path(scratch), images_per_shard=SHARD_IMAGES, image_format="jpg")
            shards = prepare_dataset(
                "webdataset", WebDataset.Options(path=scratch), Selection(), root, download=False, resolution=size
            )
            shards_label = f"WebDataset {len(shards.train)} JPEGs in {written['train']['shards']} shards {size}x{size}"
            shards_fmt = BatchFormat(device, shards.mean, shards.std, runtime.channels_last, runtime.input_dtype)
            if "shards-torch" in shard_backends:
                add(
                    shards_label,
                    "shards-torch",
                    f"tar members read by offset, torchvision decode in DataLoader({workers} workers), batched augment",
                    create_loader(
                        shards, "train", shards_fmt, batch_size, True, augmentation, backend="torch", workers=workers
                    ),
                    shards,
                )
            if "shards-dali" in shard_backends and dali_available():
                where = "mixed (GPU) decode" if device.type == "cuda" else "CPU pipeline"
                add(
                    shards_label,
                    "shards-dali",
                    f"DALI {where} fed by external_source (bytes read by offset), {workers} threads",
                    create_loader(
                        shards, "train", shards_fmt, batch_size, True, augmentation, backend="dali", workers=workers
                    ),
                    shards,
                )
            elif "shards-dali" in shard_backends:
                log("shards-dali: DALI not installed (pip install nvidia-dali-cuda130); skipped")

    for row in rows:
        baseline = next(
            (r for r in rows if r.data == row.data and r.backend in ("baseline", "folder-baseline", "shards-torch")),
            None,
        )
        row.ratio = row.img_per_s / baseline.img_per_s if baseline else None
    return rows


def _folder_data(folder: Path, resolution: int) -> PreparedData:
    from transfer_core.datasets import ImageFolder

    return prepare_dataset(
        "image_folder",
        ImageFolder.Options(path=str(folder.resolve())),
        Selection(),
        folder,
        download=False,
        resolution=resolution,
    )


def render_table(rows: list[Row], batch_size: int, step_backbone: Optional[str]) -> str:
    """The measurements as a markdown table: images/s per backend, against the baseline, and the training step's
    share spent waiting for data."""
    from tabulate import tabulate

    table = [
        [
            r.data,
            r.backend,
            r.pipeline,
            f"{r.img_per_s:,.0f}",
            f"{r.ratio:.1f}x" if r.ratio else "—",
            f"{1000 * batch_size / r.img_per_s:.2f}",
        ]
        + ([f"{r.step['data_share_pct']:.1f}", f"{r.step['train_img_per_s']:,.0f}"] if step_backbone else [])
        for r in rows
    ]
    headers = ["data", "backend", "pipeline", "images/s", "vs baseline", "ms per batch"]
    if step_backbone:
        headers += [f"{step_backbone} training: % of step waiting for data", f"{step_backbone} training images/s"]
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)
