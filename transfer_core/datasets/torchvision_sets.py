"""torchvision's transfer datasets (Kornblith et al. 2019's and VTAB's that torchvision has), read by torchvision's
own classes with their official splits, offline.

One table, one adapter: each entry names the torchvision class, how its official splits are asked for, and the
files it reads (relative to the data root, in torchvision's layout). ``load`` builds torchvision's dataset per
split with its file checks bypassed (this module checks the files exist; ``bench fetch SUITE`` downloads them
with torchvision, which verifies its checksums), then takes the image paths and labels (or the arrays) from it
without decoding anything: the harness's data path decodes, on either backend. A dataset with no official test
split (Caltech-101, SUN397, EuroSAT) gets one carved out of it, stratified, with a fixed seed (``test_fraction``);
say so when you publish, as its numbers are not comparable with a paper's official partition.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..checks import check_range
from .base import DATASETS, ArraySplit, DatasetReader, DataUnavailableError, FileSplit, RawDataset, stratified_split


@dataclass(frozen=True)
class TorchvisionSet:
    name: str  # the suite's name for it
    torchvision_class: str
    # the harness's split -> torchvision's split argument; empty: one set, the test split carved out of it
    splits: dict[str, str]
    files: tuple[str, ...]  # what must be on disk under the data root (torchvision's layout)
    subfolder: str = ""  # the root handed to torchvision, under the data root ("" = the data root itself)
    arrays: bool = False  # torchvision holds it as a uint8 array (SVHN, STL-10): the harness keeps it on the device
    class_names: Optional[tuple[str, ...]] = None  # where torchvision's class has no ``classes``
    # torchvision's keyword arguments that are options of the dataset here: suite key -> (argument, default)
    options: dict[str, tuple[str, Any]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)  # torchvision arguments always passed
    downloads: bool = True  # torchvision can download it (Stanford Cars' links are dead)
    needs: str = ""  # a package torchvision's class imports (PCAM: h5py), named in the error when it is missing
    # how its training images are augmented unless a suite says otherwise (changes to Augmentation's defaults):
    # photographs of any size get an Inception-style random-resized crop instead of a padded crop
    augmentation: Optional[dict] = None
    where_to_get: str = ""  # for a dataset torchvision cannot download


SETS = (
    TorchvisionSet(
        "flowers102",
        "Flowers102",
        {"train": "train", "val": "val", "test": "test"},
        ("flowers-102/jpg", "flowers-102/imagelabels.mat", "flowers-102/setid.mat"),
    ),
    TorchvisionSet(
        "oxford_pets",
        "OxfordIIITPet",
        {"train": "trainval", "test": "test"},
        ("oxford-iiit-pet/images", "oxford-iiit-pet/annotations/trainval.txt", "oxford-iiit-pet/annotations/test.txt"),
        fixed={"target_types": "category"},
    ),
    TorchvisionSet(
        "dtd",
        "DTD",
        {"train": "train", "val": "val", "test": "test"},
        ("dtd/dtd/images", "dtd/dtd/labels"),
        options={"partition": ("partition", 1)},
    ),
    TorchvisionSet("food101", "Food101", {"train": "train", "test": "test"}, ("food-101/images", "food-101/meta")),
    TorchvisionSet(
        "stanford_cars",
        "StanfordCars",
        {"train": "train", "test": "test"},
        (
            "stanford_cars/devkit/cars_meta.mat",
            "stanford_cars/devkit/cars_train_annos.mat",
            "stanford_cars/cars_train",
            "stanford_cars/cars_test",
            "stanford_cars/cars_test_annos_withlabels.mat",
        ),
        downloads=False,
        where_to_get="torchvision cannot download it (its links are dead); see torchvision's StanfordCars docs for "
        "a copy, and place it in torchvision's layout",
    ),
    TorchvisionSet(
        "fgvc_aircraft",
        "FGVCAircraft",
        {"train": "train", "val": "val", "test": "test"},
        ("fgvc-aircraft-2013b/data/images", "fgvc-aircraft-2013b/data/variants.txt"),
        options={"annotation_level": ("annotation_level", "variant")},
    ),
    TorchvisionSet(
        "caltech101", "Caltech101", {}, ("caltech101/101_ObjectCategories",), fixed={"target_type": "category"}
    ),
    TorchvisionSet("sun397", "SUN397", {}, ("SUN397/ClassName.txt",)),
    TorchvisionSet("eurosat", "EuroSAT", {}, ("eurosat/2750",)),
    TorchvisionSet(
        "svhn",
        "SVHN",
        {"train": "train", "test": "test"},
        ("svhn/train_32x32.mat", "svhn/test_32x32.mat"),
        subfolder="svhn",
        arrays=True,
        augmentation={"flip": "none"},  # a mirrored 2 is not a 2
        class_names=tuple(str(i) for i in range(10)),
    ),
    TorchvisionSet(
        "stl10",
        "STL10",
        {"train": "train", "test": "test"},
        ("stl10_binary/train_X.bin", "stl10_binary/train_y.bin", "stl10_binary/test_X.bin", "stl10_binary/test_y.bin"),
        arrays=True,
    ),
    TorchvisionSet(
        "gtsrb",
        "GTSRB",
        {"train": "train", "test": "test"},
        ("gtsrb/GTSRB/Training", "gtsrb/GTSRB/Final_Test/Images", "gtsrb/GT-final_test.csv"),
        class_names=tuple(f"{i:05d}" for i in range(43)),
    ),
    TorchvisionSet(
        "pcam",
        "PCAM",
        {"train": "train", "val": "val", "test": "test"},
        tuple(f"pcam/camelyonpatch_level_2_split_{s}_{xy}.h5" for s in ("train", "valid", "test") for xy in "xy"),
        arrays=True,  # 96x96 patches in HDF5; the training split is 7.2 GB as uint8
        class_names=("no tumour", "tumour"),
        needs="h5py",
    ),
    TorchvisionSet(
        "country211",
        "Country211",
        {"train": "train", "val": "valid", "test": "test"},
        ("country211/train", "country211/valid", "country211/test"),
    ),
)


def _unchecked(cls: type) -> type:
    """torchvision's class with its file checks skipped: ``check`` has found the files, and its checksum test
    (Flowers-102's and SVHN's .mat files, STL-10's binaries) belongs to the download, not to every load."""
    always = {"_check_integrity": lambda self: True, "_check_exists": lambda self: True}
    return type(cls.__name__, (cls,), always)  # the same name: DTD names its folder after its class


def _arrays(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W, C) uint8 images and (N,) labels of a torchvision dataset held as arrays."""
    if hasattr(dataset, "h5py"):  # PCAM reads its HDF5 files image by image: read each file whole, once
        files = {kind: dataset._base_folder / name for kind, (name, *_) in dataset._FILES[dataset._split].items()}
        with dataset.h5py.File(files["images"]) as images, dataset.h5py.File(files["targets"]) as targets:
            return torch.from_numpy(images["x"][:]), torch.from_numpy(targets["y"][:].reshape(-1).astype(np.int64))
    images = np.ascontiguousarray(np.asarray(dataset.data).transpose(0, 2, 3, 1))  # SVHN, STL-10: (N, C, H, W)
    return torch.from_numpy(images), torch.as_tensor(np.asarray(dataset.labels), dtype=torch.int64)


def _paths_and_labels(dataset) -> tuple[list[str], list[int]]:
    """The image files and labels a torchvision dataset holds, by the attributes its classes keep them in."""
    if hasattr(dataset, "_samples"):  # StanfordCars, GTSRB
        pairs = dataset._samples
    elif hasattr(dataset, "samples"):  # ImageFolder's subclasses: EuroSAT, Country211
        pairs = dataset.samples
    elif hasattr(dataset, "_image_files"):  # Flowers102, DTD, Food101, FGVCAircraft, SUN397
        pairs = zip(dataset._image_files, dataset._labels)
    elif hasattr(dataset, "_images"):  # OxfordIIITPet
        pairs = zip(dataset._images, dataset._labels)
    elif hasattr(dataset, "categories") and hasattr(dataset, "index"):  # Caltech101
        folder = os.path.join(dataset.root, "101_ObjectCategories")
        pairs = [
            (os.path.join(folder, dataset.categories[y], f"image_{i:04d}.jpg"), y)
            for i, y in zip(dataset.index, dataset.y)
        ]
    else:
        raise TypeError(f"{type(dataset).__name__}: no image files or labels found on it")
    paths, labels = [], []
    for path, label in pairs:
        paths.append(str(path))
        labels.append(int(label))
    return paths, labels


class TorchvisionReader(DatasetReader):
    """A dataset of ``SETS``; one subclass per entry is registered under its name."""

    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)

    spec: TorchvisionSet

    @dataclass
    class Options:
        test_fraction: float = 0.2  # only for a set without an official test split: carved out, seed 0

        def __post_init__(self):
            check_range("test_fraction", self.test_fraction, 0, 1, low_open=True, high_open=True)

    def check(self, root: Path, options, download: bool) -> None:
        missing = [name for name in self.spec.files if not (Path(root) / name).exists()]
        if not missing or (download and self.spec.downloads):
            return
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        how = (
            self.spec.where_to_get
            if not self.spec.downloads
            else "fetch it with `python -m bench fetch SUITE` while online (torchvision downloads it and checks "
            "its checksums), or point --data-root at a folder that has it"
        )
        raise DataUnavailableError(f"{self.spec.name} not found under {root}: {shown} missing; {how}")

    def _torchvision_kwargs(self, options) -> dict:
        chosen = {argument: getattr(options, key) for key, (argument, _) in self.spec.options.items()}
        return {**self.spec.fixed, **chosen}

    def _open(self, root: Path, options, split: Optional[str], download: bool):
        import torchvision.datasets as tvd

        cls = getattr(tvd, self.spec.torchvision_class)
        folder = Path(root) / self.spec.subfolder if self.spec.subfolder else Path(root)
        arguments = self._torchvision_kwargs(options)
        if split is not None:
            arguments["split"] = split
        if download:
            folder.mkdir(parents=True, exist_ok=True)
            try:
                return cls(str(folder), download=True, **arguments)
            except Exception as e:  # no network, a moved file, a bad checksum, a full disk: one line
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise DataUnavailableError(f"{self.spec.name}: download failed ({reason})") from None
        try:
            return _unchecked(cls)(str(folder), **arguments)
        except RuntimeError as e:  # torchvision's way of saying a package it needs is missing (PCAM: h5py)
            if self.spec.needs and self.spec.needs in str(e):
                raise DataUnavailableError(f"{self.spec.name} needs {self.spec.needs}: pip install {self.spec.needs}")
            raise
        except (OSError, KeyError, ValueError, IndexError) as e:  # a file torchvision reads is missing or malformed
            raise DataUnavailableError(
                f"{self.spec.name} under {folder}: torchvision could not read it ({type(e).__name__}: {e})"
            ) from None

    def _split(self, dataset, split_name: str) -> tuple[Any, tuple[str, ...]]:
        if self.spec.arrays:
            images, labels = _arrays(dataset)
            return ArraySplit(images, labels), tuple(getattr(dataset, "classes", ()) or ())
        paths, labels = _paths_and_labels(dataset)
        if not paths:
            raise DataUnavailableError(f"{self.spec.name}: its {split_name} split has no images")
        names = getattr(dataset, "classes", None) or getattr(dataset, "categories", None) or ()
        return FileSplit(tuple(paths), torch.tensor(labels, dtype=torch.int64)), tuple(names)

    def load(self, root: Path, options, download: bool) -> RawDataset:
        fetch = download and self.spec.downloads and any(not (Path(root) / f).exists() for f in self.spec.files)
        self.check(root, options, download)
        splits, names = {}, ()
        for ours, theirs in (self.spec.splits or {"all": None}).items():
            split, found = self._split(self._open(root, options, theirs, fetch), ours)
            if names and found and found != names:  # a split that names its classes itself (DTD): by name
                split = split.relabelled(_by_name(split.labels, found, names, f"{self.spec.name} {ours}"))
            splits[ours], names = split, names or found
        names = self.spec.class_names or names
        if "all" in splits:
            everything = splits.pop("all")
            if everything.kind == "files":  # SUN397 lists its files in the file system's order: sort them first
                by_path = sorted(range(len(everything)), key=everything.item_name)
                everything = everything.select(torch.tensor(by_path, dtype=torch.int64))
            train_idx, test_idx = stratified_split(everything.labels, options.test_fraction, seed=0)
            splits["train"], splits["test"] = everything.select(train_idx), everything.select(test_idx)
        classes = max(int(s.labels.max()) for s in splits.values()) + 1
        if len(names) < classes:  # no class list, or a short one: the classes are named by number
            names = tuple(str(i) for i in range(classes))
        return RawDataset(
            splits["train"],
            splits["test"],
            names,
            channels=3,
            location=str(Path(root) / (self.spec.subfolder or self.spec.files[0].split("/")[0])),
            val=splits.get("val"),
        )


def _by_name(labels: torch.Tensor, names: tuple[str, ...], wanted: tuple[str, ...], where: str) -> torch.Tensor:
    unknown = sorted(set(names) - set(wanted))
    if unknown:
        raise DataUnavailableError(f"{where}: classes {', '.join(unknown[:5])} are not in its train split")
    return torch.tensor([wanted.index(name) for name in names], dtype=torch.int64)[labels]


def _register(spec: TorchvisionSet) -> None:
    """One reader class per entry, whose Options are the entry's own torchvision arguments (and
    ``test_fraction`` where the test split is carved out)."""
    own = [(key, type(default), default) for key, (_, default) in spec.options.items()]
    bases = () if spec.splits else (TorchvisionReader.Options,)
    splits = ", ".join(spec.splits) if spec.splits else "none (the test split is carved out: test_fraction)"
    name = f"Torchvision{spec.torchvision_class}"
    options = make_dataclass("Options", own, bases=bases)
    # found by pickle under this module, as a class written here would be: specs travel to worker processes
    options.__module__, options.__qualname__ = __name__, f"{name}.Options"
    reader = type(
        name,
        (TorchvisionReader,),
        {
            "spec": spec,
            "Options": options,
            "array_backed": spec.arrays,
            "publishes_val": "val" in spec.splits,
            "augmentation_defaults": spec.augmentation
            if spec.augmentation is not None
            else ({} if spec.arrays else {"crop_padding": 0, "random_resized_crop": 0.35}),
            "__doc__": f"torchvision's {spec.torchvision_class}; official splits: {splits}",
        },
    )
    globals()[name] = reader
    DATASETS.register_class(spec.name)(reader)


for _spec in SETS:
    _register(_spec)
