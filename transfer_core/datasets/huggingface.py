"""Hugging Face datasets, offline: ``dataset: hf:NAME`` (a Hub dataset already in the local cache) or
``dataset: hf`` with ``path:`` (a folder of parquet or arrow files, or one written by ``save_to_disk``).

The ``datasets`` library reads them into its memory-mapped Arrow tables; nothing is decoded here. Each split is an
``EncodedSplit`` over its table: the image column's encoded bytes are read row by row by the data path, which
decodes them (DALI's decoder on the DALI backend, PIL in DataLoader workers otherwise). The image and label
columns are declared or found by type (the ``Image`` column; the ``ClassLabel`` column, else ``label``/``labels``);
class names come from the ``ClassLabel`` feature, or are the sorted distinct labels.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import torch

from .base import DATASETS, DatasetReader, DataUnavailableError, EncodedSplit, RawDataset

LABEL_COLUMN_NAMES = ("label", "labels")


class ArrowImages:
    """One split's image column in its Arrow table: a container of encoded images, read by row."""

    def __init__(self, table, column: str, split: str, where: str):
        self.table, self.column, self.split, self.where = table, column, split, where
        self._values = None  # the column, opened on first read in each process
        files = [f["filename"] for f in table.cache_files]
        if files:  # the content of its Arrow files, hashed once per file version and remembered
            from .file_hashes import content_hashes

            content = ";".join(f"{os.path.basename(f)}:{h}" for f, h in zip(files, content_hashes(files)))
        else:  # held in memory: the fingerprint ``datasets`` keeps of how the table was made
            content = table._fingerprint
        self.identity = hashlib.sha256(f"arrow:{column}:{content}".encode()).hexdigest()
        self.files = files

    def __getstate__(self):  # sent to DataLoader workers without the opened column
        return {**self.__dict__, "_values": None}

    def read(self, row: int) -> bytes:
        if self._values is None:
            self._values = self.table.data.column(self.column)
        value = self._values[row].as_py()
        if value.get("bytes") is not None:
            return value["bytes"]
        if value.get("path"):  # an image kept by path, next to the table
            with open(value["path"], "rb") as file:
                return file.read()
        raise DataUnavailableError(f"{self.item_name(row)}: no image bytes and no path")

    def item_name(self, row: int) -> str:
        return f"{self.where} {self.split} row {row}"

    def manifest(self) -> dict:
        return {
            "format": "arrow",
            "split": self.split,
            "column": self.column,
            "rows": len(self.table),
            "files": [{"name": os.path.basename(f), "bytes": os.path.getsize(f)} for f in self.files],
            "sha256": self.identity,
        }


def _offline_datasets():
    """The ``datasets`` library, told never to reach the network: a run reads what is on disk."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise DataUnavailableError("Hugging Face datasets need the datasets package: pip install datasets") from None
    import huggingface_hub.constants

    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()  # "using the cached version" on every offline load
    return datasets


def _column(features, declared: str, kind: str, where: str) -> str:
    """The image or label column (``kind``): the one declared, else the first of its type (images: ``Image``;
    labels: ``ClassLabel``, else a column named label or labels)."""
    import datasets

    if declared:
        if declared not in features:
            raise DataUnavailableError(f"{where}: no column {declared!r}; columns: {', '.join(features)}")
        return declared
    wanted = datasets.Image if kind == "image" else datasets.ClassLabel
    found = [name for name, feature in features.items() if isinstance(feature, wanted)]
    if kind == "label" and not found:
        found = [name for name in LABEL_COLUMN_NAMES if name in features]
    if not found:
        raise DataUnavailableError(
            f"{where}: no column of {kind}s; columns: {', '.join(features)}. Name it with {kind}_column"
        )
    return found[0]


@DATASETS.register("hf")
class HuggingFace(DatasetReader):
    """A Hugging Face dataset read offline, its images decoded by the data path."""

    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)

    array_backed = False
    named_by: ClassVar[str] = "source"
    location_options = ("path",)

    @dataclass
    class Options:
        source: str = ""  # a Hub dataset's name (``hf:NAME``), read from the local Hugging Face cache
        path: str = ""  # or a folder of parquet / arrow files (split by file name), or a save_to_disk folder
        config: str = ""  # the dataset's configuration (subset), where it has several
        train_split: str = "train"  # the split trained on
        val_split: str = ""  # the dataset's own validation split ("validation"), used instead of val_fraction
        test_split: str = "test"  # the split tested on
        image_column: str = ""  # "": the column of type Image
        label_column: str = ""  # "": the ClassLabel column, else one named label or labels

        def __post_init__(self):
            for name in ("train_split", "test_split"):
                if not getattr(self, name):
                    raise ValueError(f"{name}: the name of the dataset's split is needed (e.g. {name[:-6]})")
            if bool(self.source) == bool(self.path):
                raise ValueError(
                    "source: give one of dataset: hf:NAME (a Hub dataset in the local cache) or path: (a folder of "
                    "parquet or arrow files)"
                )

    def has_official_val(self, options) -> bool:
        return bool(options.val_split)

    def _where(self, options) -> str:
        return f"hf:{options.source}" if options.source else options.path

    def _open(self, options):
        datasets = _offline_datasets()
        where = self._where(options)
        try:
            if options.path:
                folder = Path(options.path)
                if not folder.exists():
                    raise DataUnavailableError(f"{where}: no such file or folder")
                if (folder / "dataset_dict.json").exists() or (folder / "dataset_info.json").exists():
                    return datasets.load_from_disk(str(folder))
                return datasets.load_dataset(str(folder), options.config or None)
            return datasets.load_dataset(options.source, options.config or None)
        except DataUnavailableError:
            raise
        except Exception as e:  # not in the cache, no files that datasets reads, a config it lacks: one line
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            fetch = " Fetch it while online with `python -m bench fetch SUITE`." if options.source else ""
            raise DataUnavailableError(f"{where}: cannot be read offline ({reason}).{fetch}") from None

    def check(self, root: Path, options, download: bool) -> None:
        if options.path and not Path(options.path).exists():
            raise DataUnavailableError(f"{self._where(options)}: no such file or folder")
        if options.source and not download:
            self._open(options)  # in the local cache (memory-mapped: cheap), or one line naming the fetch

    def load(self, root: Path, options, download: bool) -> RawDataset:
        if download and options.source:
            fetch_hub_dataset(options)
        splits = self._open(options)
        where = self._where(options)
        if not hasattr(splits, "keys"):  # one split (save_to_disk of a Dataset): nothing to choose between
            raise DataUnavailableError(
                f"{where}: one split only; it needs {options.train_split} and {options.test_split}"
            )
        wanted = {"train": options.train_split, "test": options.test_split, "val": options.val_split}
        missing = [name for name in wanted.values() if name and name not in splits]
        if missing:
            raise DataUnavailableError(
                f"{where}: no split {', '.join(missing)}; it has {', '.join(splits)} (set train_split, val_split, "
                "test_split)"
            )
        train = splits[options.train_split]
        image_column = _column(train.features, options.image_column, "image", where)
        label_column = _column(train.features, options.label_column, "label", where)
        feature = train.features[label_column]
        names: Optional[tuple[str, ...]] = tuple(feature.names) if hasattr(feature, "names") else None
        if names is None:  # plain labels: the sorted distinct values of the training split name the classes
            names = tuple(str(v) for v in sorted(set(train.data.column(label_column).to_pylist())))
        read = {}
        for ours, theirs in wanted.items():
            if theirs:
                table = splits[theirs]
                if table._indices is not None:  # a selected or shuffled table: its rows in order
                    table = table.flatten_indices()
                read[ours] = self._split(table, image_column, label_column, names, theirs, where)
        return RawDataset(read["train"], read["test"], names, channels=3, location=where, val=read.get("val"))

    def _split(self, table, image_column: str, label_column: str, names, split: str, where: str) -> EncodedSplit:
        import datasets

        values = table.data.column(label_column).to_pylist()
        if isinstance(table.features[label_column], datasets.ClassLabel):  # class numbers already
            labels = np.asarray([-1 if v is None else v for v in values], dtype=np.int64)
        else:  # plain values, named as the training split's classes are
            number = {name: i for i, name in enumerate(names)}
            labels = np.asarray([number.get(str(v), -1) for v in values], dtype=np.int64)
        if (labels < 0).any() or (labels >= len(names)).any():
            unknown = sorted({str(v) for v, y in zip(values, labels) if y < 0 or y >= len(names)})
            raise DataUnavailableError(
                f"{where} {split}: labels {', '.join(unknown[:5])} are not classes of its train split"
            )
        container = ArrowImages(table, image_column, split, where)
        rows = np.stack([np.zeros(len(labels), dtype=np.int64), np.arange(len(labels), dtype=np.int64)], axis=1)
        return EncodedSplit((container,), rows, torch.from_numpy(labels))


def fetch_hub_dataset(options) -> None:
    """Downloads a Hub dataset into the local cache (``bench fetch``; needs internet)."""
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "0"
    import datasets
    import huggingface_hub.constants

    # both libraries read the variables once, when imported (a check before may have imported them offline)
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = False
    try:
        datasets.load_dataset(options.source, options.config or None)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataUnavailableError(f"hf:{options.source}: download failed ({reason})") from None
