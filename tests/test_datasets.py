import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transfer_core.data import Augmentation, BatchFormat, create_loader
from transfer_core.datasets import (
    Cifar10, Cifar100, DataUnavailableError, Digits, ImageFolder, NpzArrays, Selection, prepare_dataset, read_cifar_pickle,
)

from conftest import SHARED_DATA, write_cifar10


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
    with pytest.raises(pickle.UnpicklingError, match="refusing to load posix.system"):
        prepare_dataset("cifar10", Cifar10.Options(), Selection(), tmp_path, download=False)
    assert not marker.exists()


def test_missing_cifar_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(DataUnavailableError, match="cifar-100-python"):
        prepare_dataset("cifar100", Cifar100.Options(), Selection(), tmp_path, download=False)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="the offline CIFAR subsets are not beside this checkout")
def test_shared_cifar_subsets_read_with_selection():
    data = prepare_dataset("cifar100", Cifar100.Options(), Selection(per_class=10, test_per_class=5, val_fraction=0.2),
                           SHARED_DATA, download=False)
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
    other_seed = prepare_dataset("digits", Digits.Options(), Selection(**{**selection.__dict__, "seed": 1}), Path("."), download=False)
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
    whole = prepare_dataset("npz", NpzArrays.Options(path=str(tmp_path / "whole.npz"), test_fraction=0.2), Selection(), tmp_path, download=False)
    assert whole.sizes() == {"train": 40, "val": 0, "test": 10} and whole.channels == 1
    np.savez(tmp_path / "floats.npz", x=x.astype(np.float32), y=y)
    with pytest.raises(DataUnavailableError, match="must be uint8"):
        prepare_dataset("npz", NpzArrays.Options(path="floats.npz"), Selection(), tmp_path, download=False)


def _write_folder(root: Path, per_class: int = 6, size: int = 20) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, name in enumerate(["cat", "dog", "eel"]):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(rng.integers(0, 80, (size, size + 4, 3)) + 80 * c, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_image_folder_reads_decodes_and_batches(tmp_path):
    _write_folder(tmp_path / "pets")
    data = prepare_dataset("image_folder", ImageFolder.Options(path="pets", image_size=16), Selection(val_fraction=0.34), tmp_path, download=False)
    assert data.class_names == ("cat", "dog", "eel")
    assert data.sizes() == {"train": 12, "val": 6, "test": 18}
    fmt = BatchFormat(torch.device("cpu"), data.mean, data.std)
    loader = create_loader(data, "test", fmt, batch_size=5, train=False, augmentation=Augmentation())
    batches = list(loader)
    assert [len(y) for _, y in batches] == [5, 5, 5, 3]  # the last partial batch is kept in evaluation
    assert batches[0][0].shape == (5, 3, 16, 16)
    # brighter classes stay brighter after normalisation
    images = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert images[labels == 2].mean() > images[labels == 0].mean()


def test_corrupt_image_names_the_file(tmp_path):
    _write_folder(tmp_path / "pets", per_class=2)
    bad = tmp_path / "pets" / "test" / "dog" / "broken.jpg"
    bad.write_bytes(b"not an image")
    data = prepare_dataset("image_folder", ImageFolder.Options(path="pets"), Selection(), tmp_path, download=False)
    loader = create_loader(data, "test", BatchFormat(torch.device("cpu"), data.mean, data.std), 4, False, Augmentation())
    with pytest.raises(ValueError, match="broken.jpg"):
        list(loader)
