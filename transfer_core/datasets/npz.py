"""Arrays of images and labels in an .npz file."""

from __future__ import annotations

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


@DATASETS.register("npz")
class NpzArrays(DatasetReader):
    """A ``.npz`` with ``x_train``/``y_train`` and ``x_test``/``y_test`` (or ``x``/``y`` and a held-out share).

    ``x`` is uint8 NHWC (or NHW for one channel); ``y`` integer class ids.
    """

    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)

    location_options = ("path",)

    @dataclass
    class Options:
        path: str = ""  # the .npz file, relative to the data root unless absolute
        test_fraction: float = 0.2  # used only when the file has no test arrays

        def __post_init__(self):
            check_range("test_fraction", self.test_fraction, 0, 1, low_open=True, high_open=True)

    def _file(self, root: Path, options) -> Path:
        path = Path(options.path)
        return path if path.is_absolute() else root / path

    def check(self, root: Path, options, download: bool) -> None:
        if not options.path:
            raise DataUnavailableError("npz dataset needs a path: the .npz file to read")
        if not self._file(root, options).is_file():
            raise DataUnavailableError(f"npz file not found: {self._file(root, options)}")

    def load(self, root: Path, options, download: bool) -> RawDataset:
        self.check(root, options, download)
        file = self._file(root, options)
        try:
            with np.load(file, allow_pickle=False) as npz:  # no pickles: arrays only
                arrays = {k: npz[k] for k in npz.files}
        except Exception as e:  # not a zip, truncated, an object array: one line naming the file
            raise DataUnavailableError(f"{file}: not a readable .npz of arrays: {e}") from None

        def split(x_key: str, y_key: str) -> ArraySplit:
            x, y = arrays[x_key], arrays[y_key]
            if x.dtype != np.uint8:
                raise DataUnavailableError(f"{file}: {x_key} must be uint8, found {x.dtype}")
            if x.ndim == 3:
                x = x[..., None]
            if x.ndim != 4 or len(x) != len(y):
                raise DataUnavailableError(f"{file}: {x_key} must be (N, H, W[, C]) with N = len({y_key})")
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                raise DataUnavailableError(
                    f"{file}: {y_key} must be a 1-d array of integer class ids, found {y.dtype} {y.shape}"
                )
            return ArraySplit(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))

        if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
            train, test = split("x_train", "y_train"), split("x_test", "y_test")
        elif {"x", "y"} <= arrays.keys():
            everything = split("x", "y")
            train_idx, test_idx = stratified_split(everything.labels, options.test_fraction, seed=0)
            train, test = everything.select(train_idx), everything.select(test_idx)
        else:
            raise DataUnavailableError(
                f"{file}: expected arrays x, y (or x_train, y_train, x_test, y_test); found {sorted(arrays)}"
            )
        n_classes = int(max(train.labels.max(), test.labels.max())) + 1
        names = (
            tuple(str(n) for n in arrays["class_names"])
            if "class_names" in arrays
            else tuple(map(str, range(n_classes)))
        )
        return RawDataset(train, test, names, channels=train.images.shape[-1], location=str(file))
