"""What every dataset shares: the split types, the reader base class and the registry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional, Protocol

import numpy as np
import torch

from ..registry import Registry


class DataUnavailableError(RuntimeError):
    """The data a suite asks for is not on disk and cannot be fetched. The message says how to fix it."""


class BadImageError(DataUnavailableError):
    """An image file that cannot be decoded. The message names the file."""


class Split(Protocol):
    """What the rest of the harness asks of a split, whatever holds its images: its length and labels, a subset,
    the same images relabelled or joined with another split of their kind, a content fingerprint, a sample of
    pixels for the normalisation statistics, and the test images as uint8 arrays (for corruptions). ``kind``
    names the loader family (``transfer_core.data.create_loader`` looks up the kind and the backend), and
    ``needs_resolution`` says whether its images only have a size once decoded."""

    kind: ClassVar[str]
    needs_resolution: ClassVar[bool]
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int: ...

    def select(self, indices: torch.Tensor) -> "Split": ...

    def relabelled(self, labels: torch.Tensor) -> "Split": ...

    def concatenated(self, other: "Split") -> "Split": ...

    def update_digest(self, digest) -> None:
        """Feeds the split's content (images and labels) into a hashlib digest."""

    def sample_pixels(self, images: int) -> torch.Tensor:
        """(P, C) float64 pixels in 0-1 from about ``images`` images spread over the split, or all for arrays."""

    def pixels(self, resolution: Optional[int]) -> torch.Tensor:
        """Every image as uint8 (N, H, W, C), decoded as evaluation decodes it where the images are files."""

    def manifest(self) -> dict:
        """What the split is made of, for a record's provenance: its kind, size and (for containers) files."""


@dataclass(frozen=True)
class ArraySplit:
    """A split held as one uint8 tensor: small enough to live whole on the training device."""

    images: torch.Tensor  # (N, H, W, C) uint8
    labels: torch.Tensor  # (N,) int64
    kind: ClassVar[str] = "arrays"
    needs_resolution: ClassVar[bool] = False

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, indices: torch.Tensor) -> "ArraySplit":
        return ArraySplit(self.images[indices], self.labels[indices])

    def relabelled(self, labels: torch.Tensor) -> "ArraySplit":
        return ArraySplit(self.images, labels)

    def concatenated(self, other: "ArraySplit") -> "ArraySplit":
        return ArraySplit(torch.cat([self.images, other.images]), torch.cat([self.labels, other.labels]))

    def update_digest(self, digest) -> None:
        digest.update(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())

    def sample_pixels(self, images: int) -> torch.Tensor:
        return self.images.reshape(-1, self.images.shape[-1]).double() / 255

    def pixels(self, resolution: Optional[int]) -> torch.Tensor:
        return self.images

    def manifest(self) -> dict:
        return {"kind": self.kind, "images": len(self), "shape": list(self.images.shape[1:])}


class EncodedImages:
    """What splits of encoded images share (files on disk, or bytes in a container): each image opened by
    position (``open``: a path or a file object PIL reads) and named for messages (``item_name``); decoded by
    the data path, so they only have a size once decoded."""

    needs_resolution: ClassVar[bool] = True
    labels: torch.Tensor

    def open(self, i: int):
        raise NotImplementedError

    def item_name(self, i: int) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.labels)

    def sample_pixels(self, images: int) -> torch.Tensor:
        from PIL import Image

        def decoded(i: int) -> torch.Tensor:
            try:
                with Image.open(self.open(i)) as image:
                    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)) / 255
            except Exception as e:
                raise BadImageError(
                    f"{self.item_name(i)}: cannot decode ({type(e).__name__}: {e}). Remove it"
                    + (" or set bad_files: skip on the dataset" if self.kind == "files" else "")
                ) from None

        return torch.cat([decoded(i) for i in range(0, len(self), max(1, len(self) // images))])

    def pixels(self, resolution: Optional[int]) -> torch.Tensor:
        from ..data.folders import _DecodedFiles

        decoded = _DecodedFiles(self, resolution, 0.0)
        return torch.stack([decoded[i][0] for i in range(len(decoded))])


@dataclass(frozen=True)
class FileSplit(EncodedImages):
    """A split of image files, decoded batch by batch by a loader backend."""

    paths: tuple[str, ...]
    labels: torch.Tensor  # (N,) int64
    kind: ClassVar[str] = "files"

    def open(self, i: int) -> str:
        return self.paths[i]

    def item_name(self, i: int) -> str:
        return self.paths[i]

    def select(self, indices: torch.Tensor) -> "FileSplit":
        return FileSplit(tuple(self.paths[i] for i in indices.tolist()), self.labels[indices])

    def relabelled(self, labels: torch.Tensor) -> "FileSplit":
        return FileSplit(self.paths, labels)

    def concatenated(self, other: "FileSplit") -> "FileSplit":
        return FileSplit(self.paths + other.paths, torch.cat([self.labels, other.labels]))

    def update_digest(self, digest) -> None:
        from .file_hashes import content_hashes

        # each file by its name and content: moving the folder changes nothing, editing an image does
        for path, sha in zip(self.paths, content_hashes(self.paths)):
            digest.update(f"{os.path.basename(path)}:{sha};".encode())
        digest.update(self.labels.numpy().tobytes())

    def manifest(self) -> dict:
        return {
            "kind": self.kind,
            "images": len(self),
            "folder": os.path.commonpath(self.paths) if self.paths else "",
            "bytes": sum(os.path.getsize(p) for p in self.paths),
        }


class ImageContainer(Protocol):
    """Encoded images kept together in one or more files (a Hugging Face Arrow table, a tar shard), read by
    row. ``identity`` fingerprints the container without reading its images where it is large (names, sizes,
    modification times, an index) and ``manifest`` lists its files for a record's provenance."""

    identity: str

    def read(self, row: int) -> bytes: ...

    def item_name(self, row: int) -> str: ...

    def manifest(self) -> dict: ...


@dataclass(frozen=True, eq=False)
class EncodedSplit(EncodedImages):
    """A split of encoded images (JPEG, PNG...) held in containers: row ``i`` is image ``rows[i, 1]`` of container
    ``rows[i, 0]``. Selecting, relabelling and joining never read an image; loaders decode them batch by
    batch, as they decode files."""

    containers: tuple[ImageContainer, ...]
    rows: np.ndarray  # (N, 2) int64: container number, row in it
    labels: torch.Tensor  # (N,) int64
    kind: ClassVar[str] = "encoded"

    def read(self, i: int) -> bytes:
        container, row = self.rows[i]
        return self.containers[container].read(int(row))

    def open(self, i: int):
        import io

        return io.BytesIO(self.read(i))

    def item_name(self, i: int) -> str:
        container, row = self.rows[i]
        return self.containers[container].item_name(int(row))

    def select(self, indices: torch.Tensor) -> "EncodedSplit":
        return EncodedSplit(self.containers, self.rows[indices.numpy()], self.labels[indices])

    def relabelled(self, labels: torch.Tensor) -> "EncodedSplit":
        return EncodedSplit(self.containers, self.rows, labels)

    def concatenated(self, other: "EncodedSplit") -> "EncodedSplit":
        shifted = other.rows + np.array([len(self.containers), 0])
        return EncodedSplit(
            self.containers + other.containers,
            np.concatenate([self.rows, shifted]),
            torch.cat([self.labels, other.labels]),
        )

    def update_digest(self, digest) -> None:
        for container in self.containers:
            digest.update(f"{container.identity};".encode())
        digest.update(np.ascontiguousarray(self.rows, dtype=np.int64).tobytes())
        digest.update(self.labels.numpy().tobytes())

    def manifest(self) -> dict:
        return {"kind": self.kind, "images": len(self), "containers": [c.manifest() for c in self.containers]}


def concatenated(first: Split, second: Split) -> Split:
    """Two splits of one dataset as one (train + validation, for a refit)."""
    return first.concatenated(second)


@dataclass(frozen=True)
class RawDataset:
    """What a dataset reader returns: its own train/test splits, before any selection."""

    train: Split
    test: Split
    class_names: tuple[str, ...]
    channels: int
    location: str  # the folder or file read, for messages and provenance
    skipped_files: tuple[str, ...] = ()  # unreadable files left out (image folders with bad_files: skip)
    # the dataset's own validation split, where it publishes one: used instead of carving one out of train
    # (``val_fraction``) unless the suite says ``official_val: false``
    val: Optional[Split] = None


class DatasetReader:
    """Base of registered datasets. ``Options`` lists the dataset's own suite keys."""

    @dataclass
    class Options:
        pass

    # how its training images are augmented unless a suite says otherwise: changes to Augmentation's defaults
    augmentation_defaults: dict = {}
    # the version of what it reads (which images, which labels, which split): in the key of everything made
    # from its data; raise it in any change that changes them
    version: ClassVar[int]
    # what the harness asks of a reader, as class attributes (never read from its options):
    array_backed: ClassVar[bool] = True  # False for readers of image files, which need a resolution to decode to
    screens_bad_files: ClassVar[bool] = False  # its Options has ``bad_files: error | skip`` (undecodable files)
    publishes_val: ClassVar[bool] = False  # its ``load`` returns the dataset's own validation split
    # the option a suite may give after a colon: ``dataset: hf:beans`` is ``dataset: hf`` with ``source: beans``
    named_by: ClassVar[str] = ""
    # options that say where the data is, not what it is: left out of keys, where the content's fingerprint
    # names the data (moving a folder retrains nothing; changing a file does)
    location_options: tuple[str, ...] = ()

    def has_official_val(self, options) -> bool:
        """Whether ``load`` returns the dataset's own validation split with these options."""
        return self.publishes_val

    def check(self, root: Path, options, download: bool) -> None:
        """Raise DataUnavailableError if ``load`` is sure to fail for want of files."""

    def load(self, root: Path, options, download: bool) -> RawDataset:
        raise NotImplementedError


DATASETS: Registry[type[DatasetReader]] = Registry("dataset", versioned=True)


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
