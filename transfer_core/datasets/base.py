"""What every dataset shares: the split types, the reader base class and the registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch

from ..registry import Registry


class DataUnavailableError(RuntimeError):
    """The data a suite asks for is not on disk and cannot be fetched. The message says how to fix it."""


class BadImageError(DataUnavailableError):
    """An image file that cannot be decoded. The message names the file."""


@dataclass(frozen=True)
class ArraySplit:
    """A split held as one uint8 tensor: small enough to live whole on the training device."""

    images: torch.Tensor  # (N, H, W, C) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, indices: torch.Tensor) -> "ArraySplit":
        return ArraySplit(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class FileSplit:
    """A split of image files (one folder per class), decoded batch by batch by a loader backend."""

    paths: tuple[str, ...]
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, indices: torch.Tensor) -> "FileSplit":
        return FileSplit(tuple(self.paths[i] for i in indices.tolist()), self.labels[indices])


Split = Union[ArraySplit, FileSplit]


def concatenated(first: Split, second: Split) -> Split:
    """Two splits of one dataset as one (train + validation, for a refit)."""
    labels = torch.cat([first.labels, second.labels])
    if isinstance(first, ArraySplit):
        return ArraySplit(torch.cat([first.images, second.images]), labels)
    return FileSplit(first.paths + second.paths, labels)


@dataclass(frozen=True)
class RawDataset:
    """What a dataset reader returns: its own train/test splits, before any selection."""

    train: Split
    test: Split
    class_names: tuple[str, ...]
    channels: int
    location: str  # the folder or file read, for messages and provenance
    skipped_files: tuple[str, ...] = ()  # unreadable files left out (image folders with bad_files: skip)


class DatasetReader:
    """Base of registered datasets. ``Options`` lists the dataset's own suite keys."""

    @dataclass
    class Options:
        pass

    # how its training images are augmented unless a suite says otherwise: changes to Augmentation's defaults
    augmentation_defaults: dict = {}
    array_backed = True  # False for readers of image files, which need a resolution to decode to
    # options that say where the data is, not what it is: left out of keys, where the content's fingerprint
    # names the data (moving a folder retrains nothing; changing a file does)
    location_options: tuple[str, ...] = ()

    def check(self, root: Path, options, download: bool) -> None:
        """Raise DataUnavailableError if ``load`` is sure to fail for want of files."""

    def load(self, root: Path, options, download: bool) -> RawDataset:
        raise NotImplementedError


DATASETS: Registry[type[DatasetReader]] = Registry("dataset")


def create_dataset_reader(name: str) -> DatasetReader:
    return DATASETS.get(name)()


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits indices into (kept, carved) with ``fraction`` of every class carved out, seeded."""
    generator = torch.Generator().manual_seed(seed)
    kept, carved = [], []
    for cls in labels.unique(sorted=True).tolist():
        idx = (labels == cls).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_carved = int(round(fraction * len(idx)))
        if fraction > 0 and len(idx) > 1:
            n_carved = min(max(n_carved, 1), len(idx) - 1)  # both sides keep every class
        carved.append(idx[:n_carved])
        kept.append(idx[n_carved:])
    return torch.cat(kept).sort().values, torch.cat(carved).sort().values
