"""WebDataset shards: data larger than memory, as POSIX tar files of samples (``<key>.jpg`` + ``<key>.cls``).

``dataset: webdataset`` with ``path:`` a folder of shards; each split is the shards matching its pattern
(``train-*.tar``, ``test-*.tar``, optionally ``val-*.tar``). A sample is the members sharing a key (the name up to
its first dot): one image (``.jpg``, ``.jpeg``, ``.png`` or ``.webp``) and its label as decimal text (``.cls``).

Nothing is decoded or held in memory: the folder's index (``wds-index.npz``: for every sample its shard, key, the
image's byte offset and size, and its label) says where each image is, and the data path reads and decodes
images batch by batch (DALI's webdataset reader where a split is whole shards, else by offset). The index is
written by ``bench export --format webdataset``, or built here by reading every shard once (and kept next to them
where the folder is writable). It is rebuilt when a shard's size or modification time differs from what it
records. A split's fingerprint is its shards' names, sizes and modification times and the index's entries, not
their bytes: planning a suite over a million images reads one index file.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .base import DATASETS, DatasetReader, DataUnavailableError, EncodedSplit, RawDataset

INDEX_FILE = "wds-index.npz"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
LABEL_EXTENSION = "cls"
CLASSES_FILE = "classes.txt"  # optional: one class name per line, in label order
INDEX_ARRAYS = {"shards", "shard_bytes", "shard_mtime_ns", "shard", "key", "offset", "size", "label"}
_read_indexes: dict[tuple, dict[str, np.ndarray]] = {}  # the last index read, by its file's version


class TarShard:
    """One shard's images: a container read by row (seek to the image's offset, read its size)."""

    def __init__(
        self, path: str, name: str, keys: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, labels: np.ndarray
    ):
        self.path, self.name, self.keys, self.offsets, self.sizes, self.labels = (
            path,
            name,
            keys,
            offsets,
            sizes,
            labels,
        )
        stat = os.stat(path)
        self.bytes, self.mtime_ns = stat.st_size, stat.st_mtime_ns
        entries = hashlib.sha256()
        for array in (offsets, sizes, labels):
            entries.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        self.index_sha256 = entries.hexdigest()
        # by its name in the folder, its size and what the index says is in it: no image is read, and a copy of
        # the folder elsewhere (new modification times) is the same data
        self.identity = f"{name}:{self.bytes}:{self.index_sha256}"
        self._file, self._pid = None, None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getstate__(self):  # sent to DataLoader workers without the open file
        return {**self.__dict__, "_file": None, "_pid": None}

    def read(self, row: int) -> bytes:
        if self._file is None or self._pid != os.getpid():  # one open file per process
            self._file, self._pid = open(self.path, "rb"), os.getpid()
        self._file.seek(int(self.offsets[row]))
        return self._file.read(int(self.sizes[row]))

    def item_name(self, row: int) -> str:
        return f"{self.path}:{self.keys[row]}"

    def dali_index(self) -> Optional[str]:
        """DALI's index of this shard (``<shard>.idx``), where one was written after the shard was (an older one
        would send DALI to offsets of a shard that is no longer there)."""
        path = Path(self.path).with_suffix(".idx")
        return str(path) if path.exists() and path.stat().st_mtime_ns >= self.mtime_ns else None

    def manifest(self) -> dict:
        return {
            "format": "webdataset",
            "file": self.name,
            "bytes": self.bytes,
            "mtime_ns": self.mtime_ns,
            "samples": len(self),
            "index_sha256": self.index_sha256,
        }


def whole_shards(split: EncodedSplit) -> Optional[tuple[list[str], list[str]]]:
    """(tar files, DALI index files or []) when ``split`` is every sample of its shards, in order, with the labels
    the shards hold, so DALI's webdataset reader can read the shards themselves; else None."""
    shards = split.containers
    if not shards or not all(isinstance(s, TarShard) for s in shards):
        return None
    expected = np.concatenate([np.stack([np.full(len(s), i), np.arange(len(s))], axis=1) for i, s in enumerate(shards)])
    if split.rows.shape != expected.shape or not np.array_equal(split.rows, expected):
        return None
    if not np.array_equal(split.labels.numpy(), np.concatenate([s.labels for s in shards])):
        return None  # relabelled (a class selection): the labels in the shards are not the ones to train on
    indexes = [s.dali_index() for s in shards]
    return [s.path for s in shards], (indexes if all(indexes) else [])


def scan_shard(path: Path) -> dict[str, np.ndarray]:
    """Reads one shard's members: for every sample its key, its image's data offset and size, and its label."""
    samples: dict[str, dict] = {}
    order: list[str] = []
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile() or os.path.basename(member.name).startswith("."):
                    continue
                folder, name = os.path.split(member.name)
                key, _, extension = name.partition(".")
                key = f"{folder}/{key}" if folder else key
                if key not in samples:
                    samples[key] = {}
                    order.append(key)
                extension = extension.lower()
                if extension in IMAGE_EXTENSIONS and "image" not in samples[key]:  # the first, as DALI takes it
                    samples[key]["image"] = (member.offset_data, member.size)
                elif extension == LABEL_EXTENSION:
                    text = tar.extractfile(member).read().decode(errors="replace").strip()
                    if not text.isdigit():
                        raise DataUnavailableError(f"{path}: {member.name} is {text!r}, not a class number (0, 1, ...)")
                    samples[key]["label"] = int(text)
    except (tarfile.TarError, OSError) as e:
        raise DataUnavailableError(f"{path}: not a readable tar file ({type(e).__name__}: {e})") from None
    incomplete = [key for key in order if set(samples[key]) != {"image", "label"}]
    if incomplete:
        raise DataUnavailableError(
            f"{path}: {len(incomplete)} sample(s) lack an image ({', '.join(IMAGE_EXTENSIONS)}) or a .cls label, "
            f"first {incomplete[0]!r}"
        )
    return {
        "key": np.array(order),
        "offset": np.array([samples[k]["image"][0] for k in order], dtype=np.int64),
        "size": np.array([samples[k]["image"][1] for k in order], dtype=np.int64),
        "label": np.array([samples[k]["label"] for k in order], dtype=np.int64),
    }


def index_arrays(
    folder: Path, shards: list[Path], entries: list[dict[str, np.ndarray]], stats: Optional[list] = None
) -> dict[str, np.ndarray]:
    """A folder's index of ``shards``, from their ``entries`` (``scan_shard``'s, or an exporter's), by the shards'
    paths in the folder; ``stats``: their ``os.stat`` taken before they were read (default: now)."""
    stats = stats or [os.stat(s) for s in shards]
    order = sorted(range(len(shards)), key=lambda i: _name(folder, shards[i]))
    shards, entries, stats = [shards[i] for i in order], [entries[i] for i in order], [stats[i] for i in order]
    arrays = {
        "shards": np.array([_name(folder, s) for s in shards]),
        "shard_bytes": np.array([s.st_size for s in stats], dtype=np.int64),
        "shard_mtime_ns": np.array([s.st_mtime_ns for s in stats], dtype=np.int64),
        "shard": np.concatenate([np.full(len(e["offset"]), i, dtype=np.int32) for i, e in enumerate(entries)]),
    }
    for name in ("key", "offset", "size", "label"):
        arrays[name] = np.concatenate([e[name] for e in entries])
    return arrays


def write_index(folder: Path, index: dict[str, np.ndarray]) -> None:
    temporary = folder / f".{INDEX_FILE}.{os.getpid()}.tmp.npz"
    try:
        np.savez(temporary, **index)
        os.replace(temporary, folder / INDEX_FILE)  # whole or not at all: a reader never sees half an index
    except OSError:  # a full disk: no half-written file left behind
        temporary.unlink(missing_ok=True)
        raise


def _name(folder: Path, shard: Path) -> str:
    return shard.relative_to(folder).as_posix()


def _stored_index(path: Path) -> Optional[dict[str, np.ndarray]]:
    """The index in ``path``, read once per version of the file; None where it is missing or unreadable (a copy
    cut short, another format): it is then built again."""
    try:
        stat = os.stat(path)
        version = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if version not in _read_indexes:  # a suite reads one folder for many datasets: its index once
            with np.load(path) as stored:
                index = {name: stored[name] for name in stored.files}
            missing = {"shards", "shard_bytes", "shard_mtime_ns", "shard", "key", "offset", "size", "label"} - set(
                index
            )
            if missing:
                return None
            _read_indexes.clear()
            _read_indexes[version] = index
        return _read_indexes[version]
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def _index(folder: Path, shards: list[Path]) -> dict[str, np.ndarray]:
    """The folder's index of ``shards``: read from ``wds-index.npz`` when it records each of them at its current
    size and modification time, else built by reading them (once, with a progress bar) and saved where the folder
    is writable."""
    index = _stored_index(folder / INDEX_FILE)
    stats = [os.stat(s) for s in shards]  # before reading them: a shard rewritten meanwhile is read again next time
    if index is not None:
        recorded = {
            name: (size, mtime)
            for name, size, mtime in zip(index["shards"].tolist(), index["shard_bytes"], index["shard_mtime_ns"])
        }
        if all(recorded.get(_name(folder, s)) == (st.st_size, st.st_mtime_ns) for s, st in zip(shards, stats)):
            return index
    from filelock import FileLock
    from tqdm import tqdm

    entries = [scan_shard(s) for s in tqdm(shards, desc=f"indexing {folder}", unit="shard", disable=None)]
    index = index_arrays(folder, shards, entries, stats)
    try:
        with FileLock(str(folder / f".{INDEX_FILE}.lock"), timeout=60):
            write_index(folder, index)
    except OSError:  # a read-only folder: the index lives in memory, and the next run builds it again
        pass
    return index


def shard_split(folder: Path, shards: list[Path], index: dict[str, np.ndarray]) -> EncodedSplit:
    """The split made of ``shards`` (every sample of each, in the index's order)."""
    number = {name: i for i, name in enumerate(index["shards"].tolist())}
    names = [_name(folder, shard) for shard in shards]
    order = np.argsort(index["shard"], kind="stable")  # the samples, grouped by shard (each in its tar order)
    starts = np.searchsorted(index["shard"][order], np.arange(len(number) + 1))
    containers, labels = [], []
    for shard, name in zip(shards, names):
        chosen = order[starts[number[name]] : starts[number[name] + 1]]
        containers.append(
            TarShard(
                str(shard),
                name,
                index["key"][chosen],
                index["offset"][chosen],
                index["size"][chosen],
                index["label"][chosen],
            )
        )
        labels.append(index["label"][chosen])
    rows = np.concatenate(
        [
            np.stack([np.full(len(c), i, dtype=np.int64), np.arange(len(c), dtype=np.int64)], axis=1)
            for i, c in enumerate(containers)
        ]
    )
    return EncodedSplit(tuple(containers), rows, torch.from_numpy(np.concatenate(labels)))


@DATASETS.register("webdataset")
class WebDataset(DatasetReader):
    """WebDataset tar shards, indexed once, read and decoded batch by batch by the data path."""

    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)

    array_backed = False
    location_options = ("path",)

    @dataclass
    class Options:
        path: str = ""  # the folder of shards
        train_shards: str = "train-*.tar"  # the training shards: a file pattern in ``path``
        val_shards: str = ""  # e.g. val-*.tar: the dataset's own validation split, used instead of val_fraction
        test_shards: str = "test-*.tar"  # the test shards: a file pattern in ``path``

        def __post_init__(self):
            if not self.path:
                raise ValueError("path: the folder of WebDataset shards (.tar) is needed")
            for name in ("train_shards", "test_shards"):
                if not getattr(self, name):
                    raise ValueError(f"{name}: a pattern of shard files is needed (e.g. {name[:-7]}-*.tar)")

    def has_official_val(self, options) -> bool:
        return bool(options.val_shards)

    def _shards(self, options) -> dict[str, list[Path]]:
        folder = Path(options.path)
        if not folder.is_dir():
            raise DataUnavailableError(f"{folder}: no such folder of WebDataset shards")
        if not os.access(folder, os.R_OK | os.X_OK):
            raise DataUnavailableError(f"{folder}: cannot be read (permission denied)")
        patterns = {"train": options.train_shards, "val": options.val_shards, "test": options.test_shards}
        found = {split: sorted(folder.glob(pattern)) for split, pattern in patterns.items() if pattern}
        empty = [f"{split} ({patterns[split]})" for split, shards in found.items() if not shards]
        if empty:
            raise DataUnavailableError(f"{folder}: no shards for {', '.join(empty)}")
        return found

    def check(self, root: Path, options, download: bool) -> None:
        self._shards(options)

    def load(self, root: Path, options, download: bool) -> RawDataset:
        folder = Path(options.path)
        found = self._shards(options)
        index = _index(folder, sorted({s for shards in found.values() for s in shards}))
        splits = {name: shard_split(folder, shards, index) for name, shards in found.items()}
        empty = [name for name, split in splits.items() if not len(split)]
        if empty:
            raise DataUnavailableError(f"{folder}: the shards of {', '.join(empty)} hold no samples")
        classes = max(int(s.labels.max()) for s in splits.values()) + 1
        names = tuple(str(i) for i in range(classes))
        if (folder / CLASSES_FILE).exists():
            listed = tuple(line.strip() for line in (folder / CLASSES_FILE).read_text().splitlines() if line.strip())
            if len(listed) < classes:
                raise DataUnavailableError(
                    f"{folder / CLASSES_FILE}: names {len(listed)} classes; the labels go to {classes - 1}"
                )
            names = listed
        return RawDataset(
            splits["train"], splits["test"], names, channels=3, location=str(folder), val=splits.get("val")
        )


def write_shards(
    data, folder: Path, images_per_shard: int = 1000, image_format: str = "jpg", quality: int = 90
) -> dict:
    """Writes a prepared dataset's splits as WebDataset shards (``<split>-000000.tar``...: ``<n>.jpg`` and
    ``<n>.cls`` per sample), each with DALI's index (``.idx``), plus the folder's index and ``classes.txt``.
    Images of array datasets are encoded here; encoded images (files, containers) are copied as they are when
    already in ``image_format``. Returns the number of shards and samples per split."""
    import io

    folder.mkdir(parents=True, exist_ok=True)
    written, shard_paths, entries = {}, [], []
    for split_name in ("train", "val", "test"):
        split = getattr(data, split_name)
        if split is None:
            continue
        pixels = split.pixels(data.resolution) if split.kind == "arrays" else None
        shards = 0
        for start in range(0, len(split), images_per_shard):
            path = folder / f"{split_name}-{shards:06d}.tar"
            keys, offsets, sizes, labels, dali_lines = [], [], [], [], []
            with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
                for i in range(start, min(start + images_per_shard, len(split))):
                    encoded = _encoded(split, i, pixels, image_format, quality)
                    key = f"{i:08d}"
                    label = int(split.labels[i])
                    members = [(f"{key}.{image_format}", encoded), (f"{key}.{LABEL_EXTENSION}", str(label).encode())]
                    line = []
                    for name, payload in members:
                        info = tarfile.TarInfo(name)
                        info.size, info.mode, info.mtime = len(payload), 0o644, 0
                        tar.addfile(info, io.BytesIO(payload))
                        offset = tar.offset - ((len(payload) + 511) // 512) * 512  # where its data begins
                        line.append(f"{name.split('.', 1)[1]} {offset} {len(payload)} {name}")
                        if name.endswith(image_format):
                            offsets.append(offset)
                            sizes.append(len(payload))
                    keys.append(key)
                    labels.append(label)
                    dali_lines.append(" ".join(line))
            path.with_suffix(".idx").write_text(f"v1.2 {len(keys)}\n" + "\n".join(dali_lines) + "\n")
            shard_paths.append(path)
            entries.append(
                {
                    "key": np.array(keys),
                    "offset": np.array(offsets, dtype=np.int64),
                    "size": np.array(sizes, dtype=np.int64),
                    "label": np.array(labels, dtype=np.int64),
                }
            )
            shards += 1
        written[split_name] = {"shards": shards, "samples": len(split)}
    write_index(folder, index_arrays(folder, shard_paths, entries))
    (folder / CLASSES_FILE).write_text("\n".join(data.class_names) + "\n")
    return written


def _encoded(split, i: int, pixels, image_format: str, quality: int) -> bytes:
    """Image ``i`` of ``split`` as ``image_format`` bytes: encoded here from arrays, copied where it already is
    a JPEG and JPEG is asked for, else decoded and encoded again."""
    import io

    from PIL import Image

    if pixels is None:
        raw = split.read(i) if hasattr(split, "read") else Path(split.open(i)).read_bytes()
        if image_format in ("jpg", "jpeg") and raw.startswith(b"\xff\xd8\xff"):
            return raw
        with Image.open(io.BytesIO(raw)) as image:
            image = image.convert("RGB")
    else:
        array = pixels[i].numpy()
        image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    buffer = io.BytesIO()
    jpeg = image_format in ("jpg", "jpeg")
    image.save(buffer, format="JPEG" if jpeg else image_format.upper(), **({"quality": quality} if jpeg else {}))
    return buffer.getvalue()
