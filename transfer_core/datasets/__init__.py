"""Datasets: a registry of readers and the class/subset/validation-split logic shared by every dataset.

A registered dataset only knows how to find and read its files (``load``) and how to say what is
missing (``check``); everything else -- class selection, per-class limits, the validation split,
normalisation statistics and fingerprints -- is done once, in ``prepare.py``, for all of them.
``base.py`` holds the split protocol, its two kinds (arrays, files) and the reader base; one module per reader;
``export.py`` writes prepared data back out. A new dataset is one module here: importing the package imports
every module in it (``discover``), as strategies and estimators are found.
"""

import importlib
import pkgutil

from .base import (
    DATASETS,
    ArraySplit,
    BadImageError,
    DatasetReader,
    DataUnavailableError,
    EncodedImages,
    EncodedSplit,
    FileSplit,
    ImageContainer,
    RawDataset,
    Split,
    concatenated,
    create_dataset_reader,
    stratified_split,
)
from .cifar import Cifar10, Cifar100, read_cifar_pickle
from .digits import Digits
from .export import write_cifar_subset, write_image_folder
from .image_folder import (
    IMAGE_SUFFIXES,
    ImageFolder,
    decode_error,
    first_undecodable,
    image_header_error,
)
from .npz import NpzArrays
from .prepare import (
    PreparedData,
    Selection,
    channel_stats,
    fingerprints,
    prepare_dataset,
    resolve_class_ids,
)


def discover() -> None:
    """Imports each module of this package (a reader module registers its dataset when imported)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


discover()

__all__ = [
    "DATASETS",
    "IMAGE_SUFFIXES",
    "ArraySplit",
    "BadImageError",
    "Cifar10",
    "Cifar100",
    "DataUnavailableError",
    "EncodedImages",
    "EncodedSplit",
    "ImageContainer",
    "DatasetReader",
    "Digits",
    "FileSplit",
    "ImageFolder",
    "NpzArrays",
    "PreparedData",
    "RawDataset",
    "Selection",
    "Split",
    "channel_stats",
    "create_dataset_reader",
    "decode_error",
    "fingerprints",
    "first_undecodable",
    "image_header_error",
    "prepare_dataset",
    "read_cifar_pickle",
    "resolve_class_ids",
    "concatenated",
    "discover",
    "stratified_split",
    "write_cifar_subset",
    "write_image_folder",
]
