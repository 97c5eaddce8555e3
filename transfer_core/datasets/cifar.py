"""CIFAR-10 and CIFAR-100 in torchvision's on-disk layout, read without running any pickled code."""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from .base import DATASETS, ArraySplit, DatasetReader, DataUnavailableError, RawDataset


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
    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)
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


@DATASETS.register("cifar100_coarse")
class Cifar100Coarse(Cifar100):
    """CIFAR-100's images under its 20 coarse labels (superclasses: aquatic mammals, fish, flowers, ...)."""

    def _keys(self):
        return "coarse_labels", "coarse_label_names"
