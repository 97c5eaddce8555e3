"""Miniatures of torchvision's transfer datasets in their real on-disk formats (Flowers-102's .mat label and
split files, DTD's partition text files, the Pets' annotation lists, SVHN's .mat arrays, GTSRB's class folders
of .ppm files and its test CSV, EuroSAT's and Caltech-101's class folders), written by the tests: a few tiny
random images per class, read back by torchvision's own classes through the harness's adapter."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 12


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def flowers102(root: Path, classes: int = 3, per_split: int = 2) -> dict[str, list[int]]:
    """``flowers-102/``: jpg/image_00001.jpg..., imagelabels.mat (1-based label per image id), setid.mat (the
    ids of train, val and test). Returns the label (0-based) of each split's images, in setid order."""
    from scipy.io import savemat

    folder = root / "flowers-102"
    ids = {"trnid": [], "valid": [], "tstid": []}
    labels, expected = [], {"train": [], "val": [], "test": []}
    image_id = 0
    for cls in range(classes):
        for key, split in (("trnid", "train"), ("valid", "val"), ("tstid", "test")):
            for _ in range(per_split):
                image_id += 1
                _image(folder / "jpg" / f"image_{image_id:05d}.jpg", image_id)
                ids[key].append(image_id)
                labels.append(cls + 1)
                expected[split].append(cls)
    savemat(folder / "imagelabels.mat", {"labels": np.array(labels)})
    savemat(folder / "setid.mat", {k: np.array(v) for k, v in ids.items()})
    return expected


DTD_CLASSES = ("banded", "blotchy", "braided")


def dtd(root: Path, partition: int = 1, per_split: int = 2) -> None:
    """``dtd/dtd/``: images/<class>/<class>_NNNN.jpg and labels/{train,val,test}<partition>.txt."""
    folder = root / "dtd" / "dtd"
    n = 0
    for split in ("train", "val", "test"):
        lines = []
        for cls in DTD_CLASSES:
            for _ in range(per_split):
                n += 1
                _image(folder / "images" / cls / f"{cls}_{n:04d}.jpg", n)
                lines.append(f"{cls}/{cls}_{n:04d}.jpg")
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        (folder / "labels" / f"{split}{partition}.txt").write_text("\n".join(lines) + "\n")


PETS_BREEDS = (("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1))  # (breed, species: 1 cat, 2 dog)


def oxford_pets(root: Path, per_split: int = 2) -> None:
    """``oxford-iiit-pet/``: images/<Breed>_<n>.jpg and annotations/{trainval,test}.txt ("<id> <class> <species>
    <breed id>", 1-based class)."""
    folder = root / "oxford-iiit-pet"
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    n = 0
    for split in ("trainval", "test"):
        lines = []
        for cls, (breed, species) in enumerate(PETS_BREEDS, 1):
            for _ in range(per_split):
                n += 1
                _image(folder / "images" / f"{breed}_{n}.jpg", n)
                lines.append(f"{breed}_{n} {cls} {species} {cls}")
        (folder / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


def svhn(root: Path, per_split: int = 4) -> dict[str, np.ndarray]:
    """``svhn/{train,test}_32x32.mat``: X (32, 32, 3, N) uint8 and y (N, 1) with the digit 0 labelled 10.
    Returns each split's images as (N, 32, 32, 3)."""
    from scipy.io import savemat

    (root / "svhn").mkdir(parents=True, exist_ok=True)
    images = {}
    for i, split in enumerate(("train", "test")):
        rng = np.random.default_rng(i)
        x = rng.integers(0, 256, (32, 32, 3, per_split * 10), dtype=np.uint8)
        y = np.array([[d if d else 10] for d in range(10) for _ in range(per_split)])
        savemat(root / "svhn" / f"{split}_32x32.mat", {"X": x, "y": y})
        images[split] = x.transpose(3, 0, 1, 2)
    return images


def gtsrb(root: Path, classes: int = 3, per_class: int = 3) -> None:
    """``gtsrb/GTSRB/Training/<class id>/*.ppm``, ``gtsrb/GTSRB/Final_Test/Images/*.ppm`` and
    ``gtsrb/GT-final_test.csv`` (Filename;...;ClassId)."""
    base = root / "gtsrb"
    rows = []
    for cls in range(classes):
        for i in range(per_class):
            _image(base / "GTSRB" / "Training" / f"{cls:05d}" / f"{cls:05d}_{i:05d}.ppm", 100 * cls + i)
            name = f"{len(rows):05d}.ppm"
            _image(base / "GTSRB" / "Final_Test" / "Images" / name, 1000 + len(rows))
            rows.append({"Filename": name, "Width": SIDE, "Height": SIDE, "ClassId": cls})
    with open(base / "GT-final_test.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["Filename", "Width", "Height", "ClassId"], delimiter=";")
        writer.writeheader()
        writer.writerows(rows)


def eurosat(root: Path, classes: tuple[str, ...] = ("Forest", "River", "SeaLake"), per_class: int = 5) -> None:
    """``eurosat/2750/<class>/<class>_<n>.jpg``: one set, no official split."""
    for c, cls in enumerate(classes):
        for i in range(per_class):
            _image(root / "eurosat" / "2750" / cls / f"{cls}_{i + 1}.jpg", 10 * c + i)


def caltech101(root: Path, classes: tuple[str, ...] = ("accordion", "airplanes", "anchor"), per_class: int = 5):
    """``caltech101/101_ObjectCategories/<class>/image_NNNN.jpg``, with the BACKGROUND_Google folder torchvision
    leaves out."""
    folder = root / "caltech101" / "101_ObjectCategories"
    _image(folder / "BACKGROUND_Google" / "image_0001.jpg", 999)
    for c, cls in enumerate(classes):
        for i in range(per_class):
            _image(folder / cls / f"image_{i + 1:04d}.jpg", 10 * c + i)


def pcam(root: Path, per_split: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``pcam/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5``: x (N, 96, 96, 3) uint8 and y (N, 1, 1, 1),
    as PatchCamelyon publishes them. Returns each split's images and labels."""
    import h5py

    (root / "pcam").mkdir(parents=True, exist_ok=True)
    written = {}
    for i, (split, name) in enumerate((("train", "train"), ("val", "valid"), ("test", "test"))):
        rng = np.random.default_rng(i)
        x = rng.integers(0, 256, (per_split, 96, 96, 3), dtype=np.uint8)
        y = (np.arange(per_split) % 2).astype(np.uint8)
        with h5py.File(root / "pcam" / f"camelyonpatch_level_2_split_{name}_x.h5", "w") as f:
            f["x"] = x
        with h5py.File(root / "pcam" / f"camelyonpatch_level_2_split_{name}_y.h5", "w") as f:
            f["y"] = y.reshape(-1, 1, 1, 1)
        written[split] = (x, y)
    return written


def food101(root: Path, classes: tuple[str, ...] = ("apple_pie", "baklava", "churros"), per_split: int = 2) -> None:
    """``food-101/``: images/<class>/<id>.jpg and meta/{train,test}.json ({class: ["<class>/<id>", ...]})."""
    import json

    folder = root / "food-101"
    (folder / "meta").mkdir(parents=True, exist_ok=True)
    n = 0
    for split in ("train", "test"):
        listing = {}
        for cls in classes:
            listing[cls] = []
            for _ in range(per_split):
                n += 1
                _image(folder / "images" / cls / f"{n}.jpg", n)
                listing[cls].append(f"{cls}/{n}")
        (folder / "meta" / f"{split}.json").write_text(json.dumps(listing))


def sun397(root: Path, classes: tuple[str, ...] = ("a/abbey", "b/bakery/shop", "c/canal/natural"), per_class: int = 5):
    """``SUN397/``: ClassName.txt ("/a/abbey" per line) and <class path>/sun_<id>.jpg: one set, no official split."""
    folder = root / "SUN397"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ClassName.txt").write_text("".join(f"/{cls}\n" for cls in classes))
    for c, cls in enumerate(classes):
        for i in range(per_class):
            _image(folder / cls / f"sun_{c}{i:04d}.jpg", 10 * c + i)


def fgvc_aircraft(root: Path, variants: tuple[str, ...] = ("707-320", "A300B4", "F-16A/B"), per_split: int = 2):
    """``fgvc-aircraft-2013b/data/``: images/<id>.jpg, variants.txt and images_variant_{train,val,test}.txt
    ("<id> <variant>" per line; a variant's name may hold spaces and slashes)."""
    folder = root / "fgvc-aircraft-2013b" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "variants.txt").write_text("".join(f"{v}\n" for v in variants))
    n = 1000000
    for split in ("train", "val", "test"):
        lines = []
        for variant in variants:
            for _ in range(per_split):
                n += 1
                _image(folder / "images" / f"{n}.jpg", n)
                lines.append(f"{n} {variant}")
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")


def stanford_cars(
    root: Path, classes: tuple[str, ...] = ("AM General Hummer SUV 2000", "Acura RL Sedan 2012"), per_split=2
):
    """``stanford_cars/``: devkit/cars_meta.mat (class_names), devkit/cars_train_annos.mat and
    cars_test_annos_withlabels.mat (annotations: fname and a 1-based class), cars_train/ and cars_test/."""
    from scipy.io import savemat

    folder = root / "stanford_cars"
    (folder / "devkit").mkdir(parents=True, exist_ok=True)
    savemat(folder / "devkit" / "cars_meta.mat", {"class_names": np.array(classes, dtype=object)})
    n = 0
    for split, annotation_file in (
        ("train", folder / "devkit" / "cars_train_annos.mat"),
        ("test", folder / "cars_test_annos_withlabels.mat"),
    ):
        rows = []
        for c in range(len(classes)):
            for _ in range(per_split):
                n += 1
                _image(folder / f"cars_{split}" / f"{n:05d}.jpg", n)
                rows.append((f"{n:05d}.jpg", c + 1))
        records = np.array(rows, dtype=[("fname", object), ("class", np.int32)])
        savemat(annotation_file, {"annotations": records})


def country211(root: Path, countries: tuple[str, ...] = ("AD", "AE", "AF"), per_split: int = 2) -> None:
    """``country211/{train,valid,test}/<country code>/<id>.jpg``: class folders per split."""
    n = 0
    for split in ("train", "valid", "test"):
        for code in countries:
            for _ in range(per_split):
                n += 1
                _image(root / "country211" / split / code / f"{n}.jpg", n)


def stl10(root: Path, per_split: int = 2) -> None:
    """``stl10_binary/``: {train,test}_X.bin (uint8, N x 3 x 96 x 96, column-major per image) and _y.bin
    (1-based labels), and class_names.txt."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    names = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    for i, split in enumerate(("train", "test")):
        rng = np.random.default_rng(i)
        images = rng.integers(0, 256, (10 * per_split, 3, 96, 96), dtype=np.uint8)
        images.tofile(folder / f"{split}_X.bin")
        np.repeat(np.arange(1, 11, dtype=np.uint8), per_split).tofile(folder / f"{split}_y.bin")


def cifar100(root: Path, per_class: int = 3) -> None:
    """``cifar-100-python/``: train, test and meta pickles (fine and coarse labels) in torchvision's layout."""
    import pickle

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        fine = [c for c in range(100) for _ in range(per_class)]
        payload = {
            b"data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8),
            b"fine_labels": fine,
            b"coarse_labels": [c // 5 for c in fine],
        }
        (folder / split).write_bytes(pickle.dumps(payload))
    meta = {
        b"fine_label_names": [f"fine{i}" for i in range(100)],
        b"coarse_label_names": [f"coarse{i}" for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta))
