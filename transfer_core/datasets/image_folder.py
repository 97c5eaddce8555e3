"""Image folders (one folder per class), their screening for files that cannot be decoded."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import torch

from ..checks import check_range
from ..cores import usable_cores
from .base import (
    DATASETS,
    BadImageError,
    DatasetReader,
    DataUnavailableError,
    FileSplit,
    RawDataset,
    stratified_split,
)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def image_header_error(path: str) -> Optional[str]:
    """Why ``path`` is not an image file by its first bytes (None if it looks like JPEG, PNG, BMP or
    WebP). Cheap enough for every file at load; truncated bodies are caught when decoding."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        return f"unreadable: {e.strerror}"
    if (
        head.startswith(b"\xff\xd8\xff")
        or head.startswith(b"\x89PNG\r\n\x1a\n")
        or head.startswith(b"BM")
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
    ):
        return None
    return "empty file" if not head else f"not a JPEG, PNG, BMP or WebP file (starts with {head[:8]!r})"


def _scan_class_folders(
    folder: Path, class_names: Optional[tuple[str, ...]] = None
) -> tuple[tuple[str, ...], list[str], list[int]]:
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


def first_undecodable(
    paths: Sequence[str], known_good: frozenset = frozenset()
) -> tuple[Optional[tuple[str, str]], set]:
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
    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        verdicts = pool.map(verdict, paths, chunksize=64)
        for path, (version, why) in zip(
            tqdm(paths, desc="decoding image files", unit="file", leave=False, disable=None), verdicts
        ):
            if why is not None:
                return (path, why), good
            good.add(version)
    return None, good


@DATASETS.register("image_folder")
class ImageFolder(DatasetReader):
    """JPEG/PNG files, one folder per class: ``path/train/<class>/`` and ``path/test/<class>/``, or
    ``path/<class>/`` with a held-out test share. Needs the dataset's ``resolution``."""

    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)

    location_options = ("path",)

    @dataclass
    class Options:
        path: str = ""  # the folder, relative to the data root unless absolute
        test_fraction: float = 0.2  # used only when there is no test/ subfolder
        bad_files: Literal["error", "skip"] = (
            "error"  # error names the first bad file; skip decodes every file once at load and leaves bad ones out
        )

        def __post_init__(self):
            check_range("test_fraction", self.test_fraction, 0, 1, low_open=True, high_open=True)

    array_backed = False
    screens_bad_files = True

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
        for path, label in zip(
            tqdm(paths, desc="checking image files", unit="file", leave=False, disable=None), labels
        ):
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
            train_idx, test_idx = stratified_split(everything.labels, options.test_fraction, seed=0)
            train, test = everything.select(train_idx), everything.select(test_idx)
        if len(train) == 0:
            raise DataUnavailableError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}")
        return RawDataset(train, test, names, channels=3, location=str(folder), skipped_files=tuple(skipped))
