"""The selection every dataset shares: classes, per-class and total limits, the validation split,
normalisation statistics and fingerprints, done once for all of them."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..checks import check_range
from .base import (
    ArraySplit,
    BadImageError,
    DataUnavailableError,
    FileSplit,
    Split,
    create_dataset_reader,
    stratified_split,
)
from .file_hashes import content_hashes


@dataclass(frozen=True)
class Selection:
    """The generic part of a dataset spec: which classes, how many images, how much validation."""

    classes: Optional[tuple[Union[int, str], ...]] = None  # ids or names, relabelled 0..k-1 in this order
    per_class: Optional[int] = None  # train images kept per class (class-balanced, seeded)
    examples: Optional[int] = None  # train images kept in all, drawn at random (VTAB-1k style), after per_class
    test_per_class: Optional[int] = None  # test images kept per class
    val_fraction: float = 0.0  # share of each class's train images carved out for validation
    seed: int = 0  # the data seed: the same subsets for every training seed

    def __post_init__(self):
        check_range("per_class", self.per_class, 1, None)
        check_range("examples", self.examples, 1, None)
        check_range("test_per_class", self.test_per_class, 1, None)
        check_range("val_fraction", self.val_fraction, 0, 1, high_open=True)


@dataclass
class PreparedData:
    """A dataset ready to train on: train/val/test splits and what they were made from."""

    name: str
    train: Split
    val: Optional[Split]
    test: Split
    class_names: tuple[str, ...]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    location: str
    fingerprint: str = field(default="")  # of every split
    resolution: Optional[int] = None  # the side the model sees; None = the arrays' own size
    skipped_files: tuple[str, ...] = ()
    train_fingerprint: str = ""  # of the train and validation splits: all that training reads

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val) if self.val is not None else 0, "test": len(self.test)}


def _select_classes(split: Split, class_ids: list[int]) -> Split:
    keep = torch.isin(split.labels, torch.tensor(class_ids))
    selected = split.select(keep.nonzero().flatten())
    remap = torch.full((int(split.labels.max()) + 1,), -1, dtype=torch.int64)
    remap[torch.tensor(class_ids)] = torch.arange(len(class_ids))
    relabelled = remap[selected.labels]
    if isinstance(selected, ArraySplit):
        return ArraySplit(selected.images, relabelled)
    return FileSplit(selected.paths, relabelled)


def _limit_per_class(split: Split, limit: Optional[int], seed: int) -> Split:
    if limit is None:
        return split
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for cls in split.labels.unique(sorted=True).tolist():
        idx = (split.labels == cls).nonzero().flatten()
        keep.append(idx[torch.randperm(len(idx), generator=generator)[:limit]])
    return split.select(torch.cat(keep).sort().values)


def _limit_total(split: Split, limit: Optional[int], seed: int) -> Split:
    """``limit`` images drawn at random (seeded): a smaller limit keeps a subset of a larger one's images."""
    if limit is None or limit >= len(split):
        return split
    generator = torch.Generator().manual_seed(seed)
    return split.select(torch.randperm(len(split), generator=generator)[:limit].sort().values)


def resolve_class_ids(classes, class_names: tuple[str, ...], dataset: str) -> list[int]:
    ids = []
    for c in classes:
        if isinstance(c, str):
            if c not in class_names:
                raise DataUnavailableError(f"{dataset}: unknown class {c!r}")
            ids.append(class_names.index(c))
        elif not 0 <= c < len(class_names):
            raise DataUnavailableError(f"{dataset}: class id {c} outside 0..{len(class_names) - 1}")
        else:
            ids.append(c)
    return ids


def channel_stats(split: Split) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in 0-1 units, over the train split (a fixed sample of files for folders)."""
    if isinstance(split, ArraySplit):
        pixels = split.images.reshape(-1, split.images.shape[-1]).double() / 255
    else:
        from PIL import Image

        def decoded(path: str) -> torch.Tensor:
            try:
                with Image.open(path) as image:
                    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)) / 255
            except Exception as e:
                raise BadImageError(
                    f"{path}: cannot decode ({type(e).__name__}: {e}). Remove it or set bad_files: skip on the dataset"
                ) from None

        pixels = torch.cat([decoded(p) for p in split.paths[:: max(1, len(split) // 256)]])
    std = pixels.std(0).clamp_min(1e-3)  # a constant channel must not divide by zero
    return tuple(round(v, 4) for v in pixels.mean(0).tolist()), tuple(round(v, 4) for v in std.tolist())


def fingerprints(*splits: Split) -> list[str]:
    """Short content hashes (array bytes, or each file's name and content hash for folders) of the first
    split, the first two, ... and all of them: each prefix's hash in one pass."""
    digest, found = hashlib.sha256(), []
    for split in splits:
        if isinstance(split, ArraySplit):
            digest.update(split.images.contiguous().numpy().tobytes())
        else:
            for p, sha in zip(split.paths, content_hashes(split.paths)):
                digest.update(f"{os.path.basename(p)}:{sha};".encode())
        digest.update(split.labels.numpy().tobytes())
        found.append(digest.copy().hexdigest()[:16])
    return found


def prepare_dataset(
    name: str,
    options,
    selection: Selection,
    root: Path,
    download: bool,
    label: str = "",
    resolution: Optional[int] = None,
) -> PreparedData:
    """Reads a registered dataset and applies the selection: the one way any dataset becomes train/val/test."""
    raw = create_dataset_reader(name).load(root, options, download)
    train, test, names = raw.train, raw.test, raw.class_names
    if selection.classes is not None:
        ids = resolve_class_ids(selection.classes, names, name)
        train, test = _select_classes(train, ids), _select_classes(test, ids)
        names = tuple(names[i] for i in ids)
    train = _limit_per_class(train, selection.per_class, selection.seed)
    train = _limit_total(train, selection.examples, selection.seed)
    test = _limit_per_class(test, selection.test_per_class, selection.seed)
    val = None
    if selection.val_fraction > 0:
        train_idx, val_idx = stratified_split(train.labels, selection.val_fraction, selection.seed)
        if len(val_idx) > 0:  # too few images per class to carve any out: no validation split, not an empty one
            train, val = train.select(train_idx), train.select(val_idx)
    mean, std = channel_stats(train)
    splits = [s for s in (train, val, test) if s is not None]
    hashes = fingerprints(*splits)
    return PreparedData(
        label or name,
        train,
        val,
        test,
        names,
        raw.channels,
        mean,
        std,
        raw.location,
        hashes[-1],
        resolution,
        raw.skipped_files,
        train_fingerprint=hashes[-2],
    )
