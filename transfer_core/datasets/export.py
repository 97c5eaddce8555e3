"""Writing a prepared array dataset back out: as an image folder, or as a CIFAR subset in torchvision's layout."""

from __future__ import annotations

import pickle
from pathlib import Path

from .base import ArraySplit, create_dataset_reader
from .cifar import _Cifar
from .prepare import PreparedData


def write_cifar_subset(data: PreparedData, root: Path, dataset: str) -> Path:
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
        return {
            "data": pixels,
            label_key: split.labels.tolist(),
            "filenames": [f"{i:06d}.png" for i in range(len(split))],
        }

    for path, split in ((train_file, data.train), (test_file, data.test)):
        path.write_bytes(pickle.dumps(payload(split), protocol=4))  # bytes stay bytes: 1.4x smaller than protocol 2
    meta_file.write_bytes(pickle.dumps({names_key: list(data.class_names)}, protocol=2))
    return folder


def write_image_folder(
    data: PreparedData, folder: Path, image_format: str = "jpg", quality: int = 90
) -> dict[str, int]:
    """Writes an array dataset's train and test splits as ``folder/{train,test}/<class>/<n>.<format>``:
    the layout ``image_folder`` reads. Returns the number of files per split."""
    from PIL import Image

    counts = {}
    for split_name in ("train", "test"):
        split = getattr(data, split_name)
        for name in data.class_names:
            (folder / split_name / name).mkdir(parents=True, exist_ok=True)
        images = split.pixels(data.resolution).numpy()  # image files: decoded at the dataset's resolution
        for i, label in enumerate(split.labels.tolist()):
            pixels = images[i][..., 0] if images.shape[-1] == 1 else images[i]
            options = {"quality": quality} if image_format in ("jpg", "jpeg") else {}
            Image.fromarray(pixels).save(
                folder / split_name / data.class_names[label] / f"{i:06d}.{image_format}", **options
            )
        counts[split_name] = len(split)
    return counts
