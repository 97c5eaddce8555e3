import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, write_cifar10

from transfer_core.datasets import (
    Cifar10,
    Cifar100,
    DataUnavailableError,
    Digits,
    NpzArrays,
    Selection,
    prepare_dataset,
    read_cifar_pickle,
)


@pytest.mark.parametrize("python2_style", [True, False])
def test_cifar_layout_with_any_number_of_batches(tmp_path, python2_style):
    write_cifar10(tmp_path, n_train_batches=3, per_batch=20, n_test=10, python2_style=python2_style)
    data = prepare_dataset("cifar10", Cifar10.Options(), Selection(), tmp_path, download=False)
    assert data.sizes() == {"train": 60, "val": 0, "test": 10}
    assert data.train.images.shape == (60, 32, 32, 3) and data.train.images.dtype == torch.uint8
    assert data.class_names[0] == "airplane" and data.channels == 3
    # planes -> NHWC: pixel (0, 0) of image 0 has its red, green, blue from offsets 0, 1024, 2048
    raw = read_cifar_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_1")
    assert data.train.images[0, 0, 0].tolist() == [raw["data"][0][0], raw["data"][0][1024], raw["data"][0][2048]]


class _Hostile:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused(tmp_path):
    folder = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    hostile = _Hostile()
    hostile.marker = marker
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": hostile, "labels": [0]}))
    with pytest.raises(
        DataUnavailableError, match="data_batch_1: not a readable CIFAR file: refusing to load posix.system"
    ):
        prepare_dataset("cifar10", Cifar10.Options(), Selection(), tmp_path, download=False)
    assert not marker.exists()


def test_missing_cifar_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(DataUnavailableError, match="cifar-100-python"):
        prepare_dataset("cifar100", Cifar100.Options(), Selection(), tmp_path, download=False)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="the offline CIFAR subsets are not beside this checkout")
def test_shared_cifar_subsets_read_with_selection():
    data = prepare_dataset(
        "cifar100",
        Cifar100.Options(),
        Selection(per_class=10, test_per_class=5, val_fraction=0.2),
        SHARED_DATA,
        download=False,
    )
    assert data.sizes() == {"train": 800, "val": 200, "test": 500}
    assert data.num_classes == 100 and torch.bincount(data.val.labels).tolist() == [2] * 100
    assert abs(data.mean[0] - 0.507) < 0.02  # CIFAR-100's red mean, from the pixels themselves


def test_digits_class_selection_per_class_limits_and_seeded_validation():
    selection = Selection(classes=(5, 6, 7, 8, 9), per_class=20, val_fraction=0.25, seed=0)
    data = prepare_dataset("digits", Digits.Options(), selection, Path("."), download=False)
    assert data.class_names == ("5", "6", "7", "8", "9") and data.channels == 1
    assert torch.bincount(data.train.labels).tolist() == [15] * 5  # relabelled 0..4, balanced
    assert torch.bincount(data.val.labels).tolist() == [5] * 5
    again = prepare_dataset("digits", Digits.Options(), selection, Path("."), download=False)
    assert again.fingerprint == data.fingerprint
    other_seed = prepare_dataset(
        "digits", Digits.Options(), Selection(**{**selection.__dict__, "seed": 1}), Path("."), download=False
    )
    assert other_seed.fingerprint != data.fingerprint
    # train, validation and test never share an image
    train_rows = {bytes(x.numpy()) for x in data.train.images}
    assert not train_rows & {bytes(x.numpy()) for x in data.val.images}


def test_npz_with_and_without_test_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (50, 12, 12, 3), dtype=np.uint8)
    y = np.arange(50) % 5
    np.savez(tmp_path / "split.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    np.savez(tmp_path / "whole.npz", x=x[..., 0], y=y)  # NHW: one channel
    split = prepare_dataset("npz", NpzArrays.Options(path="split.npz"), Selection(), tmp_path, download=False)
    assert split.sizes() == {"train": 40, "val": 0, "test": 10} and split.channels == 3
    whole = prepare_dataset(
        "npz",
        NpzArrays.Options(path=str(tmp_path / "whole.npz"), test_fraction=0.2),
        Selection(),
        tmp_path,
        download=False,
    )
    assert whole.sizes() == {"train": 40, "val": 0, "test": 10} and whole.channels == 1
    np.savez(tmp_path / "floats.npz", x=x.astype(np.float32), y=y)
    with pytest.raises(DataUnavailableError, match="must be uint8"):
        prepare_dataset("npz", NpzArrays.Options(path="floats.npz"), Selection(), tmp_path, download=False)


def test_a_cifar_subset_written_back_reads_the_same(tmp_path):
    from transfer_core.datasets import write_cifar_subset

    write_cifar10(tmp_path / "full")
    subset = prepare_dataset(
        "cifar10", Cifar10.Options(), Selection(per_class=3, test_per_class=2), tmp_path / "full", download=False
    )
    write_cifar_subset(subset, tmp_path / "small", "cifar10")
    again = prepare_dataset("cifar10", Cifar10.Options(), Selection(), tmp_path / "small", download=False)
    assert again.sizes() == {"train": 30, "val": 0, "test": 20} and again.class_names == subset.class_names
    assert torch.equal(again.train.images, subset.train.images) and torch.equal(again.test.labels, subset.test.labels)


def test_too_few_images_to_carve_validation_from_leave_no_validation_split():
    from transfer_core.datasets import Digits

    data = prepare_dataset(
        "digits", Digits.Options(), Selection(classes=(5, 6), per_class=1, val_fraction=0.25), Path("."), False
    )
    assert data.val is None and data.sizes()["train"] == 2  # not an empty split that every score would divide by


def test_digits_read_from_the_wheel_are_scikit_learns_digits():
    import numpy as np
    from sklearn.datasets import load_digits

    from transfer_core.datasets.digits import _digits_file

    bunch = load_digits()
    pixels, labels = _digits_file()
    assert np.array_equal(bunch.images.reshape(len(bunch.images), -1), pixels)
    assert np.array_equal(bunch.target, labels.astype(int))


def _write_every_dataset(root: Path) -> dict[str, dict]:
    """A miniature of every registered dataset under ``root``: name -> the options that read it."""
    import torchvision_miniatures as mini
    from test_encoded_datasets import write_parquet

    from transfer_core.datasets import write_image_folder
    from transfer_core.datasets.webdataset import write_shards

    write_cifar10(root)
    for name in ("cifar100", "flowers102", "dtd", "oxford_pets", "svhn", "gtsrb", "eurosat", "caltech101", "pcam"):
        getattr(mini, name)(root)
    for name in ("food101", "sun397", "fgvc_aircraft", "stanford_cars", "country211", "stl10"):
        getattr(mini, name)(root)
    rng = np.random.default_rng(0)
    np.savez(root / "arrays.npz", x=rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8), y=np.arange(60) % 3)
    digits = prepare_dataset("digits", Digits.Options(), Selection(classes=[0, 1, 2], per_class=12), root, False)
    write_image_folder(digits, root / "folder", image_format="png")
    write_shards(digits, root / "shards", images_per_shard=10, image_format="png")
    write_parquet(root / "parquet")
    return {
        "npz": {"path": str(root / "arrays.npz")},
        "image_folder": {"path": str(root / "folder")},
        "webdataset": {"path": str(root / "shards")},
        "hf": {"path": str(root / "parquet")},
        "dtd": {"partition": 1},
    }


def test_every_datasets_train_validation_and_test_splits_share_no_image(tmp_path, monkeypatch):
    """For each registered reader (a new one without a miniature here fails this test): whatever the selection,
    train, validation (official or carved) and test never hold the same image -- by file or container row for
    encoded images, by content for arrays (every miniature's images are distinct)."""
    import datasets as hf_datasets

    from transfer_core.datasets import DATASETS, create_dataset_reader

    monkeypatch.setattr(hf_datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    options = _write_every_dataset(tmp_path)

    def identities(split) -> list:
        if split.kind == "arrays":
            return [bytes(image.numpy()) for image in split.images]
        return [split.item_name(i) for i in range(len(split))]

    for name in DATASETS.names():
        reader = create_dataset_reader(name)
        for official_val in (True, False):
            selection = Selection(val_fraction=0.3, official_val=official_val, seed=3)
            data = prepare_dataset(
                name, reader.Options(**options.get(name, {})), selection, tmp_path, False, resolution=8
            )
            splits = {"train": identities(data.train), "val": identities(data.val), "test": identities(data.test)}
            assert all(len(ids) == len(set(ids)) > 0 for ids in splits.values()), (name, official_val)
            for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
                shared = set(splits[first]) & set(splits[second])
                assert not shared, f"{name}: {first} and {second} share {len(shared)} images"


@pytest.mark.parametrize("images, step", [(510, 1), (1024, 4), (300, 1)])
def test_the_normalisation_statistics_of_image_files_sample_every_nth_of_about_256(tmp_path, images, step):
    """Image files: the mean and std come from every (N // 256)-th file, about 256 files, so that a large folder
    is not decoded whole at planning time. Each 1x1 file here holds its own grey level (its index mod 256), so
    the statistics name exactly the files they were taken from (510 files: all of them, not every second)."""
    from PIL import Image

    from transfer_core.datasets.base import FileSplit
    from transfer_core.datasets.prepare import channel_stats

    paths = []
    for i in range(images):
        path = tmp_path / f"{i}.png"
        Image.new("L", (1, 1), i % 256).save(path)
        paths.append(str(path))
    mean, std = channel_stats(FileSplit(tuple(paths), torch.zeros(images, dtype=torch.int64)))
    levels = torch.tensor([i % 256 for i in range(0, images, step)], dtype=torch.float64) / 255
    assert mean == (round(levels.mean().item(), 4),) * 3
    assert std == (round(levels.std().item(), 4),) * 3
