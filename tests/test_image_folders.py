"""Image folders through both backends (DALI's CPU pipeline and the torchvision fallback), and bad files."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, write_cifar10

from transfer_core.data import Augmentation, BatchFormat, create_loader, dali_available, resolve_data_backend
from transfer_core.datasets import BadImageError, Cifar10, ImageFolder, Selection, prepare_dataset, write_image_folder
from transfer_core.distributed import Shard

BACKENDS = ["torch", pytest.param("dali", marks=pytest.mark.skipif(not dali_available(), reason="DALI not installed"))]


@pytest.fixture
def cifar_folder(tmp_path):
    """CIFAR-layout arrays written as a PNG folder (lossless, so decoded pixels can be compared)."""
    write_cifar10(tmp_path, n_train_batches=1, per_batch=40, n_test=18)
    arrays = prepare_dataset("cifar10", Cifar10.Options(), Selection(), tmp_path, download=False)
    write_image_folder(arrays, tmp_path / "folder", image_format="png")
    return tmp_path, arrays


def folder_data(root, resolution=32, **options):
    return prepare_dataset(
        "image_folder",
        ImageFolder.Options(path="folder", **options),
        Selection(),
        root,
        download=False,
        resolution=resolution,
    )


def test_write_image_folder_keeps_classes_and_counts(cifar_folder):
    root, arrays = cifar_folder
    data = folder_data(root)
    assert data.class_names == arrays.class_names
    assert data.sizes() == arrays.sizes() == {"train": 40, "val": 0, "test": 18}


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluation_batches_are_every_image_normalised(cifar_folder, backend):
    root, arrays = cifar_folder
    data = folder_data(root)
    fmt = BatchFormat(torch.device("cpu"), arrays.mean, arrays.std)
    loader = create_loader(data, "test", fmt, 5, train=False, augmentation=Augmentation(), backend=backend, workers=2)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [5, 5, 5, 3] and len(loader) == 4  # the partial batch kept, no padding
    images, labels = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    expected = create_loader(arrays, "test", fmt, 18, train=False, augmentation=Augmentation())
    expected_images, expected_labels = next(iter(expected))

    # the folder is written class by class, so compare as sets keyed by label and pixel sum
    def order(x, y):
        return torch.argsort(y * 1e6 + x.flatten(1).sum(1).double())

    torch.testing.assert_close(
        images[order(images, labels)], expected_images[order(expected_images, expected_labels)], atol=1e-4, rtol=1e-4
    )
    assert torch.equal(labels.sort().values, expected_labels.sort().values)


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_batches_are_seeded_full_and_resized(cifar_folder, backend):
    root, arrays = cifar_folder
    data = folder_data(root, resolution=24)
    fmt = BatchFormat(torch.device("cpu"), arrays.mean, arrays.std, channels_last=True)
    augmentation = Augmentation(crop_padding=2, random_resized_crop=0.5, cutout=4)

    def epoch(seed, n):
        loader = create_loader(data, "train", fmt, 16, True, augmentation, seed=seed, backend=backend, workers=2)
        loader.set_epoch(n)
        return list(loader)

    first = epoch(0, 0)
    assert [len(y) for _, y in first] == [16, 16]  # 40 images: the partial batch dropped
    images = first[0][0]
    assert images.shape == (16, 3, 24, 24) and images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images, epoch(0, 0)[0][0])
    assert not torch.equal(images, epoch(0, 1)[0][0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("train", [False, True])
def test_ranks_read_disjoint_shards_of_the_files(cifar_folder, backend, train):
    """Under torchrun each rank gets its part, passed explicitly: in evaluation a contiguous part of the
    split, in training a disjoint part of every epoch, the same number of steps on every rank."""
    root, arrays = cifar_folder
    data = folder_data(root)
    fmt = BatchFormat(torch.device("cpu"), arrays.mean, arrays.std)
    plain = Augmentation(crop_padding=0, flip="none")  # each file's pixels fixed: a file is known by its pixel sum
    split = "train" if train else "test"

    def sums(shard):
        loader = create_loader(data, split, fmt, 8, train, plain, seed=1, backend=backend, workers=1, shard=shard)
        loader.set_epoch(3)
        batches = list(loader)
        assert len(batches) == len(loader)
        return [round(v, 2) for x, _ in batches for v in x.double().flatten(1).sum(1).tolist()]

    ranks = [sums(Shard(rank, 2)) for rank in range(2)]
    assert not set(ranks[0]) & set(ranks[1])
    if train:  # 40 images, global batch 8: 5 steps of 4 images on each rank
        assert len(ranks[0]) == len(ranks[1]) == 20
    else:  # 18 images: 9 each, every one scored once
        assert sorted(ranks[0] + ranks[1]) == sorted(sums(Shard()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_batches_do_not_depend_on_the_number_of_workers(cifar_folder, backend):
    root, arrays = cifar_folder
    data = folder_data(root, resolution=24)
    fmt = BatchFormat(torch.device("cpu"), arrays.mean, arrays.std)
    augmentation = Augmentation(random_resized_crop=0.3)

    def epoch(workers):
        loader = create_loader(data, "train", fmt, 8, True, augmentation, seed=3, backend=backend, workers=workers)
        loader.set_epoch(1)
        return torch.cat([x for x, _ in loader])

    first = epoch(1)
    for workers in [0, 2] if backend == "torch" else [2]:  # DALI takes at least one thread
        assert torch.equal(first, epoch(workers)), f"{workers} workers gave other batches than 1"


def test_a_non_image_file_is_named_at_load(cifar_folder):
    root, _ = cifar_folder
    bad = root / "folder" / "test" / "dog" / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(BadImageError, match="notes.jpg.*not a JPEG"):
        folder_data(root)
    data = folder_data(root, bad_files="skip")
    assert data.skipped_files == (str(bad),) and data.sizes()["test"] == 18


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])  # a valid header and a cut-off body


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_truncated_image_is_named_when_decoding_fails(cifar_folder, backend):
    root, arrays = cifar_folder
    victim = sorted((root / "folder" / "test" / "cat").iterdir())[0]
    truncate(victim)
    data = folder_data(root)  # the header is fine, so loading succeeds
    fmt = BatchFormat(torch.device("cpu"), arrays.mean, arrays.std)
    loader = create_loader(data, "test", fmt, 4, False, Augmentation(), backend=backend, workers=2)
    with pytest.raises(BadImageError, match=victim.name):
        list(loader)
    skipped = folder_data(root, bad_files="skip")  # skip decodes every file at load
    assert skipped.skipped_files == (str(victim),)
    assert len(list(create_loader(skipped, "test", fmt, 4, False, Augmentation(), backend=backend))) == 5


def test_backend_resolution(monkeypatch):
    assert resolve_data_backend("torch") == "torch"
    monkeypatch.setattr("transfer_core.data.dali_available", lambda: False)
    assert resolve_data_backend("auto") == "torch"
    with pytest.raises(ModuleNotFoundError, match="pip install nvidia-dali"):
        resolve_data_backend("dali")


@pytest.mark.slow
def test_the_fallback_runs_a_folder_suite_with_dali_uninstalled(cifar_folder, tmp_path):
    """A process where ``import nvidia.dali`` fails, as when it is not installed: auto picks torch."""
    root, _ = cifar_folder
    suite = tmp_path / "folder.yaml"
    suite.write_text(
        "schema_version: 1\nname: folder-fallback\n"
        "source: {dataset: cifar10, epochs: 1}\n"
        "targets: [{dataset: image_folder, path: folder, resolution: 16, val_fraction: 0.25}]\n"
        "backbones: [resnet8]\nstrategies: {scratch: {epochs: 1}}\n"
        "train: {batch_size: 8}\nruntime: {device: cpu, data_backend: auto, workers: 1}\n"
    )
    hide_dali = (
        "import sys, runpy; sys.modules['nvidia.dali'] = None; sys.argv = ['bench'] + sys.argv[1:]; "
        "runpy.run_module('bench', run_name='__main__')"
    )
    result = subprocess.run(
        # in this process, where DALI is hidden (a worker process would import it)
        [sys.executable, "-c", hide_dali, "run", str(suite), "--data-root", str(root), "--out", str(tmp_path / "out")]
        + ["--executor", "local"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = (tmp_path / "out" / "records.jsonl").read_text()
    assert '"data_backend": "torch"' in records and '"status": "ok"' in records


def folder_suite(path: str) -> dict:
    return {
        "schema_version": 1,
        "name": "folder-keys",
        "source": {"dataset": "cifar10", "epochs": 1},
        "targets": [{"dataset": "image_folder", "path": path, "resolution": 16, "val_fraction": 0.25}],
        "backbones": ["resnet8"],
        "strategies": {"scratch": {"epochs": 1}, "full_finetune": {"epochs": 1}},
        "runtime": {"device": "cpu", "data_backend": "torch"},
    }


def planned_keys(raw: dict, root: Path, cache: Path) -> set[str]:
    from bench.pipeline.runner import Runner
    from bench.pipeline.suite import expand_cells, parse_suite
    from transfer_core.runtime import resolve_runtime

    suite = parse_suite(raw)
    runner = Runner(suite, root, root / "out", cache, resolve_runtime("cpu"), log=lambda m: None)
    return set(runner.plan(expand_cells(suite)).artifacts)


@pytest.mark.slow
def test_an_image_edited_in_place_changes_the_keys_and_a_moved_folder_does_not(cifar_folder, monkeypatch):
    import os
    import shutil

    from PIL import Image

    from transfer_core.datasets import file_hashes

    root, _ = cifar_folder
    cache = root / "cache"
    image = sorted((root / "folder" / "train").rglob("*.png"))[0]
    pixels = np.asarray(Image.open(image).convert("RGB")).copy()
    Image.fromarray(pixels).save(image, compress_level=0)  # stored, not deflated: its size is its shape's alone
    before = planned_keys(folder_suite("folder"), root, cache)
    # the same images elsewhere: the path is where the data is, not what it is
    shutil.copytree(root / "folder", root / "moved", copy_function=shutil.copy2)
    assert planned_keys(folder_suite("moved"), root, cache) == before
    # one image rewritten in place with other pixels at the same size: other data, other keys
    image = root / "moved" / image.relative_to(root / "folder")
    stat = image.stat()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(image, compress_level=0)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a later mtime, as an editor leaves
    assert image.stat().st_size == stat.st_size
    after = planned_keys(folder_suite("moved"), root, cache)
    assert after != before and len(after & before) > 0  # the source's keys stay: it does not read the folder
    # the hashes are kept per file version (in the store once a run starts): a new process hashes nothing
    file_hashes.flush()
    monkeypatch.setattr(file_hashes, "_known", {})
    monkeypatch.setattr(file_hashes, "_sha256", lambda path: pytest.fail(f"hashed {path} again"))
    assert planned_keys(folder_suite("moved"), root, cache) == after
