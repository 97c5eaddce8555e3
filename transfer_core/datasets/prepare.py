"""The selection every dataset shares: classes, per-class and total limits, the validation split,
normalisation statistics and fingerprints, done once for all of them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch

from ..checks import check_range
from .base import DataUnavailableError, Split, create_dataset_reader, stratified_split

_STATISTICS_IMAGES = 256  # image files decoded for a split's mean and std
# The version of the selection (classes, limits, carved validation, normalisation statistics): in the key of
# everything made from any dataset. Raise it in any change that selects or normalises differently.
VERSION = 1


@dataclass(frozen=True)
class Selection:
    """The generic part of a dataset spec: which classes, how many images, how much validation."""

    classes: Optional[tuple[Union[int, str], ...]] = None  # ids or names, relabelled 0..k-1 in this order
    per_class: Optional[int] = None  # train images kept per class (class-balanced, seeded)
    examples: Optional[int] = None  # train images kept in all, drawn at random (VTAB-1k style), after per_class
    test_per_class: Optional[int] = None  # test images kept per class
    val_fraction: float = 0.0  # share of each class's train images carved out for validation
    # a dataset's own validation split is used where it has one; False joins it to train and carves val_fraction
    official_val: bool = True
    seed: int = 0  # the data seed: the same subsets for every training seed

    def __post_init__(self):
        if self.classes is not None and len(self.classes) < 2:
            raise ValueError(f"classes: expected 2 or more to classify, got {list(self.classes)}")
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
    validation: str = "none"  # where the validation split came from: official, carved (val_fraction) or none

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def manifest(self) -> dict:
        """What the data was made of, for a record: where it was read, its fingerprints, where its validation
        split came from, and per split its kind, size and files (a folder and its bytes; each Arrow file or tar
        shard with its size and hash), so two results can be checked to have read the same data."""
        if "_manifest" in self.__dict__:  # listed once: a folder's bytes are a stat of every file
            return self.__dict__["_manifest"]
        splits = {"train": self.train, "val": self.val, "test": self.test}
        self.__dict__["_manifest"] = {
            "location": self.location,
            "fingerprint": self.fingerprint,
            "train_fingerprint": self.train_fingerprint,
            "validation": self.validation,
            "splits": {name: split.manifest() for name, split in splits.items() if split is not None},
        }
        return self.__dict__["_manifest"]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val) if self.val is not None else 0, "test": len(self.test)}


def _select_classes(split: Split, class_ids: list[int]) -> Split:
    keep = torch.isin(split.labels, torch.tensor(class_ids))
    selected = split.select(keep.nonzero().flatten())
    # sized by the classes asked for and those present: a split may lack the highest class asked for, or be empty
    highest = max(class_ids + ([int(split.labels.max())] if len(split) else []))
    remap = torch.full((highest + 1,), -1, dtype=torch.int64)
    remap[torch.tensor(class_ids)] = torch.arange(len(class_ids))
    return selected.relabelled(remap[selected.labels])


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
    pixels = split.sample_pixels(_STATISTICS_IMAGES)
    std = pixels.std(0).clamp_min(1e-3)  # a constant channel must not divide by zero
    return tuple(round(v, 4) for v in pixels.mean(0).tolist()), tuple(round(v, 4) for v in std.tolist())


def fingerprints(*splits: Split) -> list[str]:
    """Short content hashes of the first split, the first two, ... and all of them: each prefix's hash in one
    pass."""
    digest, found = hashlib.sha256(), []
    for split in splits:
        split.update_digest(digest)
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
    train, official_val, test, names = raw.train, raw.val, raw.test, raw.class_names
    if official_val is not None and not selection.official_val:
        train, official_val = train.concatenated(official_val), None
    if selection.classes is not None:
        ids = resolve_class_ids(selection.classes, names, name)
        train, test = _select_classes(train, ids), _select_classes(test, ids)
        official_val = _select_classes(official_val, ids) if official_val is not None else None
        names = tuple(names[i] for i in ids)
    train = _limit_per_class(train, selection.per_class, selection.seed)
    train = _limit_total(train, selection.examples, selection.seed)
    test = _limit_per_class(test, selection.test_per_class, selection.seed)
    val, validation = official_val, "official" if official_val is not None else "none"
    if official_val is None and selection.val_fraction > 0:
        train_idx, val_idx = stratified_split(train.labels, selection.val_fraction, selection.seed)
        if len(val_idx) > 0:  # too few images per class to carve any out: no validation split, not an empty one
            train, val, validation = train.select(train_idx), train.select(val_idx), "carved"
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
        validation=validation,
    )
