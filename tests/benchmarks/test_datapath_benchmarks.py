"""Data-path benchmarks: one epoch of each backend, and one train step for scale.

With ``--benchmark-disable`` (the default in pyproject) each runs once and its output is checked;
``python -m pytest tests/benchmarks --benchmark-enable`` times them. ``python -m bench datapath``
gives the same comparison as a table on real data.
"""

import pytest
import torch
from conftest import write_cifar10

from bench.measure.datapath import baseline_array_loader, baseline_folder_loader
from transfer_core.backbones import create_backbone
from transfer_core.data import Augmentation, BatchFormat, create_loader, dali_available
from transfer_core.datasets import Cifar10, ImageFolder, Selection, prepare_dataset, write_image_folder
from transfer_core.runtime import resolve_runtime
from transfer_core.training import TrainRecipe, train

BATCH = 64
AUGMENT = Augmentation()  # CIFAR's: reflect pad 4, random crop, random flip
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("datapath")
    write_cifar10(root, n_train_batches=2, per_batch=256, n_test=10)
    arrays = prepare_dataset("cifar10", Cifar10.Options(), Selection(), root, download=False)
    write_image_folder(arrays, root / "jpeg")
    files = prepare_dataset(
        "image_folder", ImageFolder.Options(path="jpeg"), Selection(), root, download=False, resolution=32
    )
    return root, arrays, files


def one_epoch(loader):
    loader.set_epoch(0)
    return [(x.shape, y.shape, bool(torch.isfinite(x.float()).all())) for x, y in loader]


def check(batches, images):
    assert len(batches) == images // BATCH
    assert all(x == (BATCH, 3, 32, 32) and y == (BATCH,) and finite for x, y, finite in batches)


def test_device_arrays(benchmark, datasets):
    _, arrays, _ = datasets
    loader = create_loader(arrays, "train", BatchFormat(CPU, arrays.mean, arrays.std, True), BATCH, True, AUGMENT)
    check(benchmark(one_epoch, loader), 512)


def test_baseline_dataloader_arrays(benchmark, datasets):
    _, arrays, _ = datasets
    check(benchmark(one_epoch, baseline_array_loader(arrays, AUGMENT, BATCH, 2, CPU)), 512)


def test_baseline_imagefolder(benchmark, datasets):
    root, _, files = datasets
    check(benchmark(one_epoch, baseline_folder_loader(root / "jpeg" / "train", files, AUGMENT, BATCH, 2, CPU)), 512)


def test_torch_folder(benchmark, datasets):
    _, _, files = datasets
    fmt = BatchFormat(CPU, files.mean, files.std, True)
    check(
        benchmark(one_epoch, create_loader(files, "train", fmt, BATCH, True, AUGMENT, backend="torch", workers=2)), 512
    )


@pytest.mark.skipif(not dali_available(), reason="DALI not installed")
def test_dali_cpu_folder(benchmark, datasets):
    _, _, files = datasets
    fmt = BatchFormat(CPU, files.mean, files.std, True)
    check(
        benchmark(one_epoch, create_loader(files, "train", fmt, BATCH, True, AUGMENT, backend="dali", workers=2)), 512
    )


def test_resnet8_train_step(benchmark, datasets):
    """The step the loader must keep up with: one SGD step of the CPU suites' backbone."""
    _, arrays, _ = datasets
    runtime = resolve_runtime("cpu")
    loader = create_loader(arrays, "train", runtime.batch_format(arrays.mean, arrays.std), BATCH, True, AUGMENT)
    model = runtime.prepare(create_backbone("resnet8", 10, 3))
    before = [p.detach().clone() for p in model.parameters()]

    class OneBatch(list):
        num_examples, batch_size = BATCH, BATCH

        def set_epoch(self, epoch):
            pass

    batch = OneBatch([next(iter(loader))])
    stats = benchmark(
        train, model, batch, TrainRecipe(epochs=1, batch_size=BATCH, lr=0.05, schedule="constant"), runtime
    )
    assert stats.steps == 1 and stats.images == BATCH
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
