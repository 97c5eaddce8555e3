"""scikit-learn's 8x8 digits: ship inside its wheel, need no download."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checks import check_range
from .base import (
    DATASETS,
    ArraySplit,
    DatasetReader,
    DataUnavailableError,
    RawDataset,
    stratified_split,
)


@functools.lru_cache(maxsize=1)
def _digits_file() -> tuple[np.ndarray, np.ndarray]:
    """(pixels, labels) of the digits file inside scikit-learn's wheel, read as ``load_digits`` reads it but
    without importing scikit-learn (most of a second), and once per process however many targets use it."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError(
            "the digits dataset ships inside scikit-learn, which is not installed: pip install scikit-learn"
        )
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    data = np.loadtxt(path, delimiter=",")
    data.flags.writeable = False  # shared by every caller
    return data[:, :-1], data[:, -1]


@DATASETS.register("digits")
class Digits(DatasetReader):
    """scikit-learn's 8x8 handwritten digits (1,797 images, grey levels 0-16), split into train/test here."""

    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)

    @dataclass
    class Options:
        test_fraction: float = 0.3  # share of each class held out as the test set (fixed split)

        def __post_init__(self):
            check_range("test_fraction", self.test_fraction, 0, 1, low_open=True, high_open=True)

    augmentation_defaults = {"crop_padding": 1, "flip": "none"}  # a flipped 2 is not a 2

    def load(self, root: Path, options, download: bool) -> RawDataset:
        pixels, target = _digits_file()
        # 0..16 grey levels -> 0..255 so every dataset shares one uint8 convention
        images = torch.from_numpy((pixels.reshape(-1, 8, 8) * (255.0 / 16.0)).round().astype(np.uint8))[..., None]
        labels = torch.from_numpy(target.astype(np.int64))
        train_idx, test_idx = stratified_split(labels, options.test_fraction, seed=0)
        everything = ArraySplit(images, labels)
        names = tuple(str(n) for n in range(10))  # load_digits names its classes 0..9
        return RawDataset(
            everything.select(train_idx), everything.select(test_idx), names, 1, "sklearn.datasets.load_digits"
        )
