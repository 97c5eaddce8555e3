"""Dataset registry and the class/subset/validation-split logic shared by every dataset.

A registered dataset only knows how to find and read its files (``load``) and how to say what is
missing (``check``). Everything else -- class selection, per-class limits, the validation split,
normalisation statistics and fingerprints -- is done once, here, for all of them.
"""
from __future__ import annotations

import codecs
import functools
import hashlib
import importlib.util
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Sequence, Union

import numpy as np
import torch

from .registry import Registry


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


@dataclass(frozen=True)
class RawDataset:
    """What a dataset reader returns: its own train/test splits, before any selection."""

    train: Split
    test: Split
    class_names: tuple[str, ...]
    channels: int
    location: str  # the folder or file read, for messages and provenance
    skipped_files: tuple[str, ...] = ()  # unreadable files left out (image folders with bad_files: skip)


def check_range(name: str, value, low, high, low_open: bool = False, high_open: bool = False) -> None:
    """Raises ValueError("name: ...") when value is outside [low, high] (ends open as asked)."""
    too_low = value is not None and low is not None and (value <= low if low_open else value < low)
    too_high = value is not None and high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{')' if high_open else ']'}"
        raise ValueError(f"{name}: {value} is outside {interval}")


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation, applied per image on the device (DALI does the flips for folders)."""

    crop_padding: int = 4  # pixels of padding before a random crop back to size; 0 = no crop
    padding_mode: Literal["reflect", "zeros"] = "reflect"  # zeros = black border, as torchvision's RandomCrop
    flip: Literal["random", "alternate", "none"] = "random"  # horizontal; alternate = each image mirrored every other epoch (arrays only)
    cutout: int = 0  # side in pixels of one random square per image set to the mean colour; 0 = off
    random_resized_crop: float = 0.0  # image folders: smallest area share of a random-resized crop; 0 = resize + centre crop

    def __post_init__(self):
        check_range("crop_padding", self.crop_padding, 0, None)
        check_range("cutout", self.cutout, 0, None)
        check_range("random_resized_crop", self.random_resized_crop, 0, 1)
        for name, allowed in (("padding_mode", ("reflect", "zeros")), ("flip", ("random", "alternate", "none"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")


class DatasetReader:
    """Base of registered datasets. ``Options`` lists the dataset's own suite keys."""

    @dataclass
    class Options:
        pass

    default_augmentation = Augmentation()
    array_backed = True  # False for readers of image files, which need a resolution to decode to

    def check(self, root: Path, options, download: bool) -> None:
        """Raise DataUnavailableError if ``load`` is sure to fail for want of files."""

    def load(self, root: Path, options, download: bool) -> RawDataset:
        raise NotImplementedError


DATASETS: Registry[type[DatasetReader]] = Registry("dataset")


def create_dataset_reader(name: str) -> DatasetReader:
    return DATASETS.get(name)()


# --- CIFAR -----------------------------------------------------------------------------------

class _CifarUnpickler(pickle.Unpickler):
    """Allows only what CIFAR pickles contain: containers, strings, numbers and numpy arrays.

    A pickle can name any importable callable; refusing everything else means a hostile file in a
    data folder cannot run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
        ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # protocol-2 pickles written by Python 3 rebuild bytes (array buffers) as str.encode: harmless
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not allowed in a CIFAR file") from None


def read_cifar_pickle(path: Path) -> dict:
    """Reads one CIFAR pickle safely; keys come back as str whether written by Python 2 or 3."""
    try:
        with open(path, "rb") as f:
            # latin1 decodes the Python 2 originals' byte strings and numpy buffers losslessly
            obj = _CifarUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except OSError as e:
        raise DataUnavailableError(f"{path}: cannot read it: {e.strerror or e}") from None
    except Exception as e:  # truncated, refused or not a pickle at all: whatever the unpickler says, one line
        raise DataUnavailableError(f"{path}: not a readable CIFAR file: {e}") from None
    if not isinstance(obj, dict):
        raise DataUnavailableError(f"{path}: not a CIFAR file: expected a dict, found {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_arrays(batches: list[dict], label_key: str, path: Path) -> ArraySplit:
    try:
        data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
    except KeyError as e:
        raise DataUnavailableError(f"{path}: CIFAR file lacks the key {e}") from None
    except (ValueError, TypeError, OverflowError) as e:  # data or labels that are not arrays of numbers
        raise DataUnavailableError(f"{path}: CIFAR data or labels of the wrong type: {e}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataUnavailableError(f"{path}: expected data of shape (N, 3072), found {data.shape}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planes -> NHWC
    return ArraySplit(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels))


class _Cifar(DatasetReader):
    folder: str
    torchvision_class: str

    def _paths(self, root: Path) -> tuple[Path, list[Path], Path, Path]:
        raise NotImplementedError

    def check(self, root: Path, options, download: bool) -> None:
        folder, train_files, test_file, meta_file = self._paths(root)
        missing = [p for p in (*train_files, test_file, meta_file) if not p.is_file()]
        if not train_files:
            missing.append(folder / "data_batch_1")
        if missing and not download:
            raise DataUnavailableError(
                f"{self.torchvision_class} not found: {missing[0]} is missing. Either point --data-root (or "
                f"BENCH_DATA_ROOT) at a folder holding torchvision's {self.folder}/, or set data.download: true"
            )

    def _download(self, root: Path) -> None:
        import torchvision.datasets as tvd  # imported only when a download is really needed
        from torchvision.datasets.utils import download_and_extract_archive

        cls = getattr(tvd, self.torchvision_class)
        try:
            download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
        except Exception as e:  # any network or disk failure: one clear message, not a traceback
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataUnavailableError(
                f"{self.torchvision_class} not found in {root / self.folder} and the download failed ({reason}). "
                f"Put torchvision's {self.folder}/ there, or pass --data-root DIR pointing at a copy"
            ) from None

    def load(self, root: Path, options, download: bool) -> RawDataset:
        folder, train_files, test_file, meta_file = self._paths(root)
        if not (train_files and test_file.is_file() and meta_file.is_file()):
            self.check(root, options, download)
            self._download(root)
            folder, train_files, test_file, meta_file = self._paths(root)
        label_key, names_key = self._keys()
        train = _cifar_arrays([read_cifar_pickle(p) for p in train_files], label_key, folder)
        test = _cifar_arrays([read_cifar_pickle(test_file)], label_key, folder)
        names = tuple(read_cifar_pickle(meta_file)[names_key])
        return RawDataset(train, test, names, channels=3, location=str(folder))

    def _keys(self) -> tuple[str, str]:
        raise NotImplementedError


@DATASETS.register("cifar10")
class Cifar10(_Cifar):
    """CIFAR-10 in torchvision's layout; any number of ``data_batch_*`` files (subsets welcome)."""

    folder = "cifar-10-batches-py"
    torchvision_class = "CIFAR10"

    def _paths(self, root):
        folder = root / self.folder
        train = sorted(folder.glob("data_batch_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
        return folder, train, folder / "test_batch", folder / "batches.meta"

    def _keys(self):
        return "labels", "label_names"


@DATASETS.register("cifar100")
class Cifar100(_Cifar):
    """CIFAR-100 (fine labels) in torchvision's layout."""

    folder = "cifar-100-python"
    torchvision_class = "CIFAR100"

    def _paths(self, root):
        folder = root / self.folder
        train = [folder / "train"] if (folder / "train").is_file() else []
        return folder, train, folder / "test", folder / "meta"

    def _keys(self):
        return "fine_labels", "fine_label_names"


def write_cifar_subset(data: "PreparedData", root: Path, dataset: str) -> Path:
    """Writes a prepared CIFAR-10/100 selection back in torchvision's layout (one train file), so a
    small subset can travel where the full download cannot. Returns the folder written."""
    reader = create_dataset_reader(dataset)
    if not isinstance(reader, _Cifar):
        raise ValueError(f"{dataset} is not a CIFAR dataset")
    label_key, names_key = reader._keys()
    folder, _, test_file, meta_file = reader._paths(root)
    folder.mkdir(parents=True, exist_ok=True)
    train_file = folder / ("data_batch_1" if dataset == "cifar10" else "train")

    def payload(split: ArraySplit) -> dict:
        pixels = split.images.permute(0, 3, 1, 2).reshape(len(split), -1).numpy()  # (N, 3072): R, G, B planes
        return {"data": pixels, label_key: split.labels.tolist(), "filenames": [f"{i:06d}.png" for i in range(len(split))]}

    for path, split in ((train_file, data.train), (test_file, data.test)):
        path.write_bytes(pickle.dumps(payload(split), protocol=4))  # bytes stay bytes: 1.4x smaller than protocol 2
    meta_file.write_bytes(pickle.dumps({names_key: list(data.class_names)}, protocol=2))
    return folder


# --- scikit-learn digits: ships inside the wheel, needs no download ---------------------------

def _stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
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


@functools.lru_cache(maxsize=1)
def _digits_file() -> tuple[np.ndarray, np.ndarray]:
    """(pixels, labels) of the digits file inside scikit-learn's wheel, read as ``load_digits`` reads it but
    without importing scikit-learn (most of a second), and once per process however many targets use it."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError("the digits dataset ships inside scikit-learn, which is not installed: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    data = np.loadtxt(path, delimiter=",")
    data.flags.writeable = False  # shared by every caller
    return data[:, :-1], data[:, -1]


@DATASETS.register("digits")
class Digits(DatasetReader):
    """scikit-learn's 8x8 handwritten digits (1,797 images, grey levels 0-16), split into train/test here."""

    @dataclass
    class Options:
        test_fraction: float = 0.3  # share of each class held out as the test set (fixed split)

        def __post_init__(self):
            check_range("test_fraction", self.test_fraction, 0, 1, low_open=True, high_open=True)

    default_augmentation = Augmentation(crop_padding=1, flip="none")  # a flipped 2 is not a 2

    def load(self, root: Path, options, download: bool) -> RawDataset:
        pixels, target = _digits_file()
        # 0..16 grey levels -> 0..255 so every dataset shares one uint8 convention
        images = torch.from_numpy((pixels.reshape(-1, 8, 8) * (255.0 / 16.0)).round().astype(np.uint8))[..., None]
        labels = torch.from_numpy(target.astype(np.int64))
        train_idx, test_idx = _stratified_split(labels, options.test_fraction, seed=0)
        everything = ArraySplit(images, labels)
        names = tuple(str(n) for n in range(10))  # load_digits names its classes 0..9
        return RawDataset(everything.select(train_idx), everything.select(test_idx), names, 1, "sklearn.datasets.load_digits")


# --- npz arrays ---------------------------------------------------------------------------------

@DATASETS.register("npz")
class NpzArrays(DatasetReader):
    """A ``.npz`` with ``x_train``/``y_train`` and ``x_test``/``y_test`` (or ``x``/``y`` and a held-out share).

    ``x`` is uint8 NHWC (or NHW for one channel); ``y`` integer class ids.
    """

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
                raise DataUnavailableError(f"{file}: {y_key} must be a 1-d array of integer class ids, found {y.dtype} {y.shape}")
            return ArraySplit(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))

        if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
            train, test = split("x_train", "y_train"), split("x_test", "y_test")
        elif {"x", "y"} <= arrays.keys():
            everything = split("x", "y")
            train_idx, test_idx = _stratified_split(everything.labels, options.test_fraction, seed=0)
            train, test = everything.select(train_idx), everything.select(test_idx)
        else:
            raise DataUnavailableError(f"{file}: expected arrays x, y (or x_train, y_train, x_test, y_test); found {sorted(arrays)}")
        n_classes = int(max(train.labels.max(), test.labels.max())) + 1
        names = tuple(str(n) for n in arrays["class_names"]) if "class_names" in arrays else tuple(map(str, range(n_classes)))
        return RawDataset(train, test, names, channels=train.images.shape[-1], location=str(file))


# --- image folders ------------------------------------------------------------------------------

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def image_header_error(path: str) -> Optional[str]:
    """Why ``path`` is not an image file by its first bytes (None if it looks like JPEG, PNG, BMP or
    WebP). Cheap enough for every file at load; truncated bodies are caught when decoding."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        return f"unreadable: {e.strerror}"
    if head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"BM") \
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    return "empty file" if not head else f"not a JPEG, PNG, BMP or WebP file (starts with {head[:8]!r})"


def _scan_class_folders(folder: Path, class_names: Optional[tuple[str, ...]] = None) -> tuple[tuple[str, ...], list[str], list[int]]:
    names = class_names or tuple(sorted(p.name for p in folder.iterdir() if p.is_dir()))
    paths, labels = [], []
    for label, name in enumerate(names):
        for file in sorted((folder / name).glob("*")) if (folder / name).is_dir() else []:
            if file.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(str(file))
                labels.append(label)
    return names, paths, labels


def decode_error(path: str) -> Optional[str]:
    """Why ``path`` cannot be decoded as an image (None if it can): a full decode, not just the header."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.convert("RGB").load()
    except Exception as e:  # PIL raises many types for bad files; all mean the same here
        return f"{type(e).__name__}: {e}"
    return None


def first_undecodable(paths: Sequence[str], known_good: frozenset = frozenset()) -> tuple[Optional[tuple[str, str]], set]:
    """(path, why) of the first file of ``paths`` that does not decode fully (or None), and the versions
    (path, size, mtime) of the files that do. Versions in ``known_good`` (decoded by an earlier run) are
    not decoded again; the rest are, in threads (PIL lets go of the GIL while it decodes)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    def verdict(path: str) -> tuple[Optional[tuple], Optional[str]]:
        try:
            stat = os.stat(path)
        except OSError as e:
            return None, f"cannot read it: {e.strerror}"
        version = (path, stat.st_size, stat.st_mtime_ns)
        return version, None if version in known_good else decode_error(path)

    good = set()
    with ThreadPoolExecutor(max_workers=max(1, len(os.sched_getaffinity(0)))) as pool:
        verdicts = pool.map(verdict, paths, chunksize=64)
        for path, (version, why) in zip(tqdm(paths, desc="decoding image files", unit="file", leave=False, disable=None), verdicts):
            if why is not None:
                return (path, why), good
            good.add(version)
    return None, good


@DATASETS.register("image_folder")
class ImageFolder(DatasetReader):
    """JPEG/PNG files, one folder per class: ``path/train/<class>/`` and ``path/test/<class>/``, or
    ``path/<class>/`` with a held-out test share. Needs the dataset's ``resolution``."""

    @dataclass
    class Options:
        path: str = ""  # the folder, relative to the data root unless absolute
        test_fraction: float = 0.2  # used only when there is no test/ subfolder
        bad_files: Literal["error", "skip"] = "error"  # error names the first bad file; skip decodes every file once at load and leaves bad ones out

        def __post_init__(self):
            check_range("test_fraction", self.test_fraction, 0, 1, low_open=True, high_open=True)

    array_backed = False

    def _folder(self, root: Path, options) -> Path:
        path = Path(options.path)
        return path if path.is_absolute() else root / path

    def check(self, root: Path, options, download: bool) -> None:
        if not options.path:
            raise DataUnavailableError("image_folder dataset needs a path: the folder of class folders")
        folder = self._folder(root, options)
        if not folder.is_dir():
            raise DataUnavailableError(f"image folder not found: {folder}")

    @staticmethod
    def _screen(paths: list[str], labels: list[int], bad_files: str) -> tuple[list[str], list[int], list[str]]:
        """Drops (skip) or reports (error) files that are not images; returns kept paths, labels, skipped."""
        from tqdm import tqdm

        kept_paths, kept_labels, skipped = [], [], []
        for path, label in zip(tqdm(paths, desc="checking image files", unit="file", leave=False, disable=None), labels):
            reason = image_header_error(path) or (decode_error(path) if bad_files == "skip" else None)
            if reason is None:
                kept_paths.append(path)
                kept_labels.append(label)
            elif bad_files == "skip":
                skipped.append(path)
            else:
                raise BadImageError(f"{path}: {reason}. Remove it or set bad_files: skip on the dataset")
        return kept_paths, kept_labels, skipped

    def load(self, root: Path, options, download: bool) -> RawDataset:
        self.check(root, options, download)
        folder = self._folder(root, options)
        skipped: list[str] = []

        def split(paths: list[str], labels: list[int]) -> FileSplit:
            paths, labels, bad = self._screen(paths, labels, options.bad_files)
            skipped.extend(bad)
            return FileSplit(tuple(paths), torch.tensor(labels, dtype=torch.int64))

        if (folder / "train").is_dir() and (folder / "test").is_dir():
            names, train_paths, train_labels = _scan_class_folders(folder / "train")
            _, test_paths, test_labels = _scan_class_folders(folder / "test", names)
            train, test = split(train_paths, train_labels), split(test_paths, test_labels)
        else:
            names, paths, labels = _scan_class_folders(folder)
            everything = split(paths, labels)
            train_idx, test_idx = _stratified_split(everything.labels, options.test_fraction, seed=0)
            train, test = everything.select(train_idx), everything.select(test_idx)
        if len(train) == 0:
            raise DataUnavailableError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}")
        return RawDataset(train, test, names, channels=3, location=str(folder), skipped_files=tuple(skipped))


def write_image_folder(data: "PreparedData", folder: Path, image_format: str = "jpg", quality: int = 90) -> dict[str, int]:
    """Writes an array dataset's train and test splits as ``folder/{train,test}/<class>/<n>.<format>``:
    the layout ``image_folder`` reads. Returns the number of files per split."""
    from PIL import Image

    counts = {}
    for split_name in ("train", "test"):
        split = getattr(data, split_name)
        if not isinstance(split, ArraySplit):
            raise ValueError(f"{data.name} is not an array dataset")
        for name in data.class_names:
            (folder / split_name / name).mkdir(parents=True, exist_ok=True)
        images = split.images.numpy()
        for i, label in enumerate(split.labels.tolist()):
            pixels = images[i][..., 0] if images.shape[-1] == 1 else images[i]
            options = {"quality": quality} if image_format in ("jpg", "jpeg") else {}
            Image.fromarray(pixels).save(folder / split_name / data.class_names[label] / f"{i:06d}.{image_format}", **options)
        counts[split_name] = len(split)
    return counts


# --- selection shared by all datasets ------------------------------------------------------------

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

    @property
    def is_array(self) -> bool:
        return isinstance(self.train, ArraySplit)

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
                raise BadImageError(f"{path}: cannot decode ({type(e).__name__}: {e}). Remove it or set bad_files: skip on the dataset") from None

        pixels = torch.cat([decoded(p) for p in split.paths[:: max(1, len(split) // 256)]])
    std = pixels.std(0).clamp_min(1e-3)  # a constant channel must not divide by zero
    return tuple(round(v, 4) for v in pixels.mean(0).tolist()), tuple(round(v, 4) for v in std.tolist())


def fingerprints(*splits: Split) -> list[str]:
    """Short content hashes (array bytes, or file names and sizes for folders) of the first split, the
    first two, ... and all of them: each prefix's hash in one pass."""
    digest, found = hashlib.sha256(), []
    for split in splits:
        if isinstance(split, ArraySplit):
            digest.update(split.images.contiguous().numpy().tobytes())
        else:
            for p in split.paths:
                digest.update(f"{os.path.basename(p)}:{os.path.getsize(p)};".encode())
        digest.update(split.labels.numpy().tobytes())
        found.append(digest.copy().hexdigest()[:16])
    return found



def prepare_dataset(name: str, options, selection: Selection, root: Path, download: bool, label: str = "",
                    resolution: Optional[int] = None) -> PreparedData:
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
        train_idx, val_idx = _stratified_split(train.labels, selection.val_fraction, selection.seed)
        if len(val_idx) > 0:  # too few images per class to carve any out: no validation split, not an empty one
            train, val = train.select(train_idx), train.select(val_idx)
    mean, std = channel_stats(train)
    splits = [s for s in (train, val, test) if s is not None]
    hashes = fingerprints(*splits)
    return PreparedData(label or name, train, val, test, names, raw.channels, mean, std, raw.location,
                        hashes[-1], resolution, raw.skipped_files, train_fingerprint=hashes[-2])
