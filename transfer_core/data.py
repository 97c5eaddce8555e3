"""The data path: one entry, ``create_loader``, that turns a prepared split into device batches.

Array datasets (CIFAR, npz, digits) are moved to the device once as uint8; every batch is indexed,
augmented (random crop with padding, flip) and normalised there in whole-batch tensor ops, so there are
no DataLoader workers and the same code runs on CPU and CUDA. Image folders are decoded by torchvision
in a DataLoader, to uint8 at a fixed size, and then go through the same batched augmentation.
Every loader yields ``(images, labels)`` on the device: images (B, C, H, W) normalised floats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from .datasets import ArraySplit, Augmentation, FileSplit, PreparedData, Split


@dataclass(frozen=True)
class BatchFormat:
    """How batches leave the loader: device, memory layout and normalisation."""

    device: torch.device
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool = False


def _seeded_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def augment_batch(images: torch.Tensor, augmentation: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Per-image random crop (reflect padding) and horizontal flip of a float batch (B, C, H, W)."""
    batch, _, height, width = images.shape
    device = images.device
    pad = augmentation.crop_padding
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (batch,), device=device, generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (batch,), device=device, generator=generator)
        rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]  # (B, 1, 1, W)
        channels = torch.arange(images.shape[1], device=device)[None, :, None, None]
        images = padded[torch.arange(batch, device=device)[:, None, None, None], channels, rows, cols]
    if augmentation.flip:
        flip = torch.rand(batch, device=device, generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    return images


class EpochBatches:
    """What every loader shares: a size in batches and an epoch counter that reseeds shuffling.

    In training the last partial batch is dropped (a tiny batch makes a noisy BatchNorm step); in
    evaluation it is kept so every example is scored once.
    """

    def __init__(self, num_examples: int, batch_size: int, train: bool, seed: int):
        self.num_examples, self.batch_size, self.train, self.seed = num_examples, batch_size, train, seed
        self.epoch = 0

    def __len__(self) -> int:
        n = self.num_examples
        return n // self.batch_size if self.train else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def epoch_seed(self) -> int:
        return self.seed * 100_003 + self.epoch


class DeviceBatches(EpochBatches):
    """Batches of in-memory tensors on the device, shuffled per epoch by a seeded device permutation."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int, train: bool, seed: int = 0):
        super().__init__(len(labels), batch_size, train, seed)
        self.inputs, self.labels = inputs, labels

    def _prepare(self, inputs: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        return inputs

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.labels.device
        generator = _seeded_generator(device, self.epoch_seed) if self.train else None
        order = torch.randperm(len(self.labels), device=device, generator=generator) if self.train else None
        for i in range(len(self)):
            index = slice(i * self.batch_size, (i + 1) * self.batch_size)
            picked = order[index] if order is not None else index
            yield self._prepare(self.inputs[picked], generator), self.labels[picked]


class DeviceArrayLoader(DeviceBatches):
    """A uint8 NHWC split kept whole on the device; augmentation and normalisation per batch."""

    def __init__(self, split: ArraySplit, fmt: BatchFormat, batch_size: int, train: bool,
                 augmentation: Augmentation, seed: int = 0):
        # uint8 on the device: 4x less memory and transfer than floats, converted per batch
        super().__init__(split.images.to(fmt.device), split.labels.to(fmt.device), batch_size, train, seed)
        self.fmt, self.augmentation = fmt, augmentation
        self._mean, self._std = _pixel_scale_stats(fmt)

    def _prepare(self, inputs: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        return to_model_input(inputs, self.fmt, self._mean, self._std, self.augmentation if self.train else None, generator)


def _pixel_scale_stats(fmt: BatchFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std in 0-255 units, shaped (1, C, 1, 1): normalising uint8 pixels needs no prior division."""
    return (torch.tensor(fmt.mean, device=fmt.device).view(1, -1, 1, 1) * 255,
            torch.tensor(fmt.std, device=fmt.device).view(1, -1, 1, 1) * 255)


def to_model_input(uint8_nhwc: torch.Tensor, fmt: BatchFormat, mean_255: torch.Tensor, std_255: torch.Tensor,
                   augmentation: Optional[Augmentation], generator: Optional[torch.Generator]) -> torch.Tensor:
    images = uint8_nhwc.permute(0, 3, 1, 2).float()  # (B, C, H, W)
    images = (images - mean_255) / std_255
    if augmentation is not None:
        images = augment_batch(images, augmentation, generator)
    if fmt.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


class _DecodedFiles(torch.utils.data.Dataset):
    """Decodes one image file to uint8 HWC at a fixed size; the batch is augmented later, on the device."""

    def __init__(self, split: FileSplit):
        from torchvision import transforms

        self.split = split
        self.resize = transforms.Compose([transforms.Resize(split.image_size), transforms.CenterCrop(split.image_size)])

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path = self.split.paths[i]
        try:
            with Image.open(path) as image:
                image = self.resize(image.convert("RGB"))
        except Exception as e:
            raise ValueError(f"cannot decode image {path}: {e}") from None
        return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(image.height, image.width, 3), int(self.split.labels[i])


class FolderLoader(EpochBatches):
    """Image files through torchvision + DataLoader workers, then the shared batched augmentation."""

    def __init__(self, split: FileSplit, fmt: BatchFormat, batch_size: int, train: bool,
                 augmentation: Augmentation, seed: int = 0, workers: int = 0):
        super().__init__(len(split), batch_size, train, seed)
        self.split, self.fmt, self.augmentation, self.workers = split, fmt, augmentation, workers
        self._mean, self._std = _pixel_scale_stats(fmt)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed = self.epoch_seed
        loader = torch.utils.data.DataLoader(
            _DecodedFiles(self.split), batch_size=self.batch_size, shuffle=self.train, drop_last=self.train,
            num_workers=self.workers, generator=torch.Generator().manual_seed(seed),
            pin_memory=self.fmt.device.type == "cuda",
        )
        generator = _seeded_generator(self.fmt.device, seed) if self.train else None
        for images, labels in loader:
            images = images.to(self.fmt.device, non_blocking=True)
            augmentation = self.augmentation if self.train else None
            yield to_model_input(images, self.fmt, self._mean, self._std, augmentation, generator), labels.to(self.fmt.device)


def create_loader(data: PreparedData, split: str, fmt: BatchFormat, batch_size: int, train: bool,
                  augmentation: Augmentation, seed: int = 0, workers: int = 0):
    """The one entry to the data path: a loader of device batches for ``data``'s train/val/test split."""
    chosen: Optional[Split] = getattr(data, split)
    if chosen is None:
        raise ValueError(f"{data.name} has no {split} split")
    if isinstance(chosen, ArraySplit):
        return DeviceArrayLoader(chosen, fmt, batch_size, train, augmentation, seed)
    return FolderLoader(chosen, fmt, batch_size, train, augmentation, seed, workers)
