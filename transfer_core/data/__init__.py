"""The data path: one entry, ``create_loader``, that turns a prepared split into device batches.

Backends, chosen by the kind of data and the runtime's ``data_backend``:
- array datasets (CIFAR, npz, digits): the whole uint8 split lives on the device; shuffling, crops,
  flips, cutout, resize and normalisation are batched tensor ops there (``arrays.py``), no workers;
- encoded images (image files; bytes in containers: Hugging Face tables, WebDataset shards) with ``dali``: an
  NVIDIA DALI pipeline decodes and normalises (``dali.py``);
- encoded images with ``torch``: torchvision decoding in DataLoader workers, the fallback (``folders.py``).
Every loader yields ``(images, labels)`` on the device: images (B, C, H, W) normalised, in the format's
dtype and memory layout; labels int64. Training loaders drop the last partial batch; evaluation keeps it.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Protocol

import torch

from ..datasets import PreparedData, Split
from ..distributed import WHOLE, Shard
from . import arrays, augment, dali, folders, format
from .arrays import DeviceArrayLoader, DeviceBatches, EpochBatches
from .augment import Augmentation
from .dali import DaliFolderLoader, dali_available
from .folders import TorchFolderLoader
from .format import BatchFormat

DATA_BACKENDS = ("auto", "torch", "dali")


class Loader(Protocol):
    """What ``train`` and ``predict`` ask of a loader: (images, labels) batches on the device, how many there are
    per epoch (``len``), the examples and batch size behind them, and a reseed per epoch. Under torchrun a loader
    also has ``shard`` (this process's part; ``WHOLE`` when absent). Every ``create_loader`` backend is one."""

    num_examples: int
    batch_size: int

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


__all__ = [
    "Augmentation",
    "BatchFormat",
    "DATA_BACKENDS",
    "DeviceArrayLoader",
    "DeviceBatches",
    "EpochBatches",
    "LOADERS",
    "Loader",
    "create_loader",
    "data_path_versions",
    "register_loader",
    "dali_available",
    "resolve_data_backend",
]


def resolve_data_backend(name: str) -> str:
    """``auto`` -> ``dali`` when DALI is installed, else ``torch``; asking for DALI without it is an error."""
    if name not in DATA_BACKENDS:
        raise ValueError(f"unknown data backend {name!r}; choose one of {', '.join(DATA_BACKENDS)}")
    if name == "auto":
        return "dali" if dali_available() else "torch"
    if name == "dali" and not dali_available():
        raise ModuleNotFoundError(
            "data_backend dali needs NVIDIA DALI: pip install nvidia-dali-cuda130 (or use data_backend: torch)"
        )
    return name


LoaderFactory = Callable[..., Loader]
# (split kind, backend) -> a loader of that kind of split; backend None: one loader for every backend
LOADERS: dict[tuple[str, Optional[str]], LoaderFactory] = {}


def register_loader(kind: str, backend: Optional[str] = None):
    """Registers a loader for a split ``kind`` (``Split.kind``) under a data backend (None: any backend). The
    factory takes ``(split, fmt, batch_size, train, augmentation, seed, resolution, workers, shard)``."""

    def add(factory: LoaderFactory) -> LoaderFactory:
        LOADERS[(kind, backend)] = factory
        return factory

    return add


@register_loader("arrays")
def _device_arrays(split, fmt, batch_size, train, augmentation, seed, resolution, workers, shard):
    return DeviceArrayLoader(split, fmt, batch_size, train, augmentation, seed, resolution, shard)


@register_loader("encoded", "dali")
@register_loader("files", "dali")
def _dali_files(split, fmt, batch_size, train, augmentation, seed, resolution, workers, shard):
    return DaliFolderLoader(split, fmt, batch_size, train, augmentation, resolution, seed, workers, shard)


@register_loader("encoded", "torch")
@register_loader("files", "torch")
def _torch_files(split, fmt, batch_size, train, augmentation, seed, resolution, workers, shard):
    return TorchFolderLoader(split, fmt, batch_size, train, augmentation, resolution, seed, workers, shard)


def create_loader(
    data: PreparedData,
    split: str,
    fmt: BatchFormat,
    batch_size: int,
    train: bool,
    augmentation: Augmentation,
    seed: int = 0,
    backend: str = "torch",
    workers: int = 0,
    shard: Shard = WHOLE,
):
    """The one entry to the data path: a loader of device batches for ``data``'s train/val/test split.

    ``backend`` (``torch`` or ``dali``, already resolved) and ``workers`` (DataLoader workers or DALI
    threads) matter only for splits whose loaders differ by backend (image files); array datasets always stay
    on the device. ``shard`` is this process's rank under torchrun, passed explicitly (never inferred from an
    initialised process group): ``batch_size`` stays the global batch and each rank gets its part (see
    ``EpochBatches``).
    """
    chosen: Optional[Split] = getattr(data, split)
    if chosen is None:
        raise ValueError(f"{data.name} has no {split} split")
    if chosen.needs_resolution and data.resolution is None:
        raise ValueError(f"{data.name}: image files need a resolution (the size images are resized and cropped to)")
    factory = LOADERS.get((chosen.kind, backend)) or LOADERS.get((chosen.kind, None))
    if factory is None:
        backends = sorted(b or "any" for k, b in LOADERS if k == chosen.kind)
        raise ValueError(
            f"{data.name}: no loader reads {chosen.kind} splits with data backend {backend!r}"
            + (f" (there are: {', '.join(backends)})" if backends else "")
        )
    return factory(chosen, fmt, batch_size, train, augmentation, seed, data.resolution, workers, shard)


def data_path_versions(array_backed: bool, backend: str) -> dict[str, int]:
    """The versions of the data-path code that reads a dataset (``transfer_core/versions.py``): its loader's
    module (arrays stay on the device whatever the backend; encoded images go through DALI or torchvision), and
    what every loader shares: batching, epochs and ranks (``arrays.EpochBatches``), augmentation, batch format."""
    versions = {"data/arrays": arrays.VERSION, "data/augment": augment.VERSION, "data/format": format.VERSION}
    if not array_backed:
        loader = dali if backend == "dali" else folders
        versions[f"data/{loader.__name__.rsplit('.', 1)[-1]}"] = loader.VERSION
    return versions
