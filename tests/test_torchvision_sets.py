"""torchvision's transfer datasets through the adapter, offline, on miniatures of their real on-disk formats:
official splits (and the official validation split), class names from the dataset, the test split carved out
where there is none, a missing dataset as one line naming the files and the fetch command, and a suite that
trains on one end to end."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision_miniatures as mini
import yaml
from conftest import read_records, tiny_suite, write_cifar10
from test_cli_end_to_end import bench

from bench.pipeline.suite import SuiteError, check_data, parse_suite
from transfer_core.datasets import DATASETS, DataUnavailableError, Selection, create_dataset_reader, prepare_dataset


def prepared(name: str, root: Path, **selection):
    reader = create_dataset_reader(name)
    return prepare_dataset(name, reader.Options(), Selection(**selection), root, False, resolution=8)


def test_flowers102_has_its_official_train_val_and_test_splits_read_from_its_mat_files(tmp_path):
    expected = mini.flowers102(tmp_path)
    data = prepared("flowers102", tmp_path, val_fraction=0.5)  # the official val is used, not a carved one
    for split in ("train", "val", "test"):
        assert getattr(data, split).labels.tolist() == expected[split], split
    assert data.class_names[:3] == ("pink primrose", "hard-leaved pocket orchid", "canterbury bells")
    assert all(Path(p).name.startswith("image_") for p in data.train.paths)

    # official_val: false joins the official val to train and carves val_fraction out of the whole
    carved = prepared("flowers102", tmp_path, val_fraction=0.5, official_val=False)
    assert (len(carved.train), len(carved.val)) == (6, 6)
    assert set(carved.train.paths) | set(carved.val.paths) == set(data.train.paths) | set(data.val.paths)


def test_dtd_reads_its_partition_files_and_names_its_classes(tmp_path):
    mini.dtd(tmp_path, partition=2)
    reader = create_dataset_reader("dtd")
    data = prepare_dataset("dtd", reader.Options(partition=2), Selection(), tmp_path, False, resolution=8)
    assert data.class_names == mini.DTD_CLASSES
    assert {len(data.train), len(data.val), len(data.test)} == {6}
    for split in (data.train, data.val, data.test):  # each file sits in its class's folder
        assert [mini.DTD_CLASSES[y] for y in split.labels.tolist()] == [Path(p).parent.name for p in split.paths]
    with pytest.raises(DataUnavailableError):  # partition 1 was not written
        prepare_dataset("dtd", reader.Options(partition=1), Selection(), tmp_path, False, resolution=8)


def test_oxford_pets_reads_its_annotation_lists(tmp_path):
    mini.oxford_pets(tmp_path)
    data = prepared("oxford_pets", tmp_path)
    assert data.class_names == ("Abyssinian", "American Bulldog", "Bengal")
    assert data.val is None and (len(data.train), len(data.test)) == (6, 6)
    for split in (data.train, data.test):
        breeds = [Path(p).stem.rsplit("_", 1)[0] for p in split.paths]
        assert [mini.PETS_BREEDS[y][0] for y in split.labels.tolist()] == breeds


def test_svhn_is_held_as_arrays_with_the_digit_zero_labelled_zero(tmp_path):
    images = mini.svhn(tmp_path)
    assert create_dataset_reader("svhn").array_backed
    data = prepared("svhn", tmp_path)
    assert data.train.images.shape == (40, 32, 32, 3)
    assert torch.equal(data.train.images, torch.from_numpy(images["train"]))
    assert data.train.labels.tolist() == [d for d in range(10) for _ in range(4)]
    assert data.class_names == tuple(str(d) for d in range(10))


def test_pcam_reads_its_hdf5_files_whole_as_arrays_with_the_official_validation_split(tmp_path):
    written = mini.pcam(tmp_path)
    data = prepared("pcam", tmp_path)
    for split in ("train", "val", "test"):
        images, labels = written[split]
        assert torch.equal(getattr(data, split).images, torch.from_numpy(images)), split
        assert getattr(data, split).labels.tolist() == labels.tolist(), split
    assert data.class_names == ("no tumour", "tumour")


@pytest.mark.parametrize(
    "name, sizes, first_classes",
    [
        ("food101", {"train": 6, "val": 0, "test": 6}, ("apple_pie", "baklava")),
        ("sun397", {"train": 12, "val": 0, "test": 3}, ("abbey", "bakery/shop")),  # test carved out: 20%
        ("fgvc_aircraft", {"train": 6, "val": 6, "test": 6}, ("707-320", "A300B4")),
        ("stanford_cars", {"train": 4, "val": 0, "test": 4}, ("AM General Hummer SUV 2000", "Acura RL Sedan 2012")),
        ("country211", {"train": 6, "val": 6, "test": 6}, ("AD", "AE")),
        ("stl10", {"train": 20, "val": 0, "test": 20}, ("airplane", "bird")),
    ],
)
def test_each_set_reads_its_own_file_formats_with_its_official_splits_and_class_names(
    tmp_path, name, sizes, first_classes
):
    getattr(mini, name)(tmp_path)
    data = prepared(name, tmp_path)
    assert data.sizes() == sizes and data.class_names[:2] == first_classes
    for split in (data.train, data.val, data.test):  # every class in every split, in class order
        if split is not None:
            assert sorted(set(split.labels.tolist())) == list(range(len(data.class_names)))


def test_gtsrb_reads_ppm_class_folders_for_train_and_its_csv_for_test(tmp_path):
    mini.gtsrb(tmp_path)
    data = prepared("gtsrb", tmp_path)
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert data.test.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(p.endswith(".ppm") for p in data.train.paths + data.test.paths)
    assert data.train.pixels(8).shape == (9, 8, 8, 3)  # decoded by the data path


@pytest.mark.parametrize("name, write", [("eurosat", mini.eurosat), ("caltech101", mini.caltech101)])
def test_a_set_without_an_official_test_split_gets_one_carved_out_stratified_and_fixed(tmp_path, name, write):
    write(tmp_path)
    data = prepared(name, tmp_path)
    assert len(data.class_names) == 3 and "BACKGROUND_Google" not in data.class_names
    assert np.bincount(data.test.labels.numpy()).tolist() == [1, 1, 1]  # 20% of each class's 5
    assert not set(data.train.paths) & set(data.test.paths)
    again = prepared(name, tmp_path)
    assert again.test.paths == data.test.paths and again.fingerprint == data.fingerprint
    reader = create_dataset_reader(name)
    half = prepare_dataset(name, reader.Options(test_fraction=0.4), Selection(), tmp_path, False, resolution=8)
    assert len(half.test) == 6


def test_every_adapted_set_is_registered_and_a_missing_one_is_one_line_naming_its_files_and_the_fetch_command(
    tmp_path,
):
    from transfer_core.datasets.torchvision_sets import SETS

    for spec in SETS:
        assert spec.name in DATASETS
        with pytest.raises(DataUnavailableError) as raised:
            create_dataset_reader(spec.name).check(tmp_path, create_dataset_reader(spec.name).Options(), False)
        message = str(raised.value)
        assert "\n" not in message and spec.files[0] in message, message
        assert ("bench fetch" in message) == spec.downloads, message

    suite = parse_suite(tiny_suite(targets=[{"dataset": "flowers102", "resolution": 16}]), Path("s.yaml"))
    with pytest.raises(SuiteError, match=r"targets\[0\] \(flowers102\): flowers102 not found .*bench fetch"):
        check_data(suite, tmp_path)


def test_a_strategy_that_chooses_on_validation_accepts_a_dataset_with_an_official_validation_split():
    # no val_fraction: flowers102's own validation split is what alpha_mix chooses on
    target = {"dataset": "flowers102", "resolution": 16, "val_fraction": 0}
    parse_suite(tiny_suite(targets=[target], strategies={"alpha_mix": {}}), Path("s.yaml"))
    with pytest.raises(SuiteError, match="chooses on validation data"):
        parse_suite(
            tiny_suite(targets=[{**target, "official_val": False}], strategies={"alpha_mix": {}}), Path("s.yaml")
        )


@pytest.mark.slow
def test_a_suite_trains_on_flowers102_from_the_command_line_with_the_official_splits(tmp_path):
    expected = mini.flowers102(tmp_path / "data", per_split=6)
    write_cifar10(tmp_path / "data", n_train_batches=1, per_batch=100, n_test=10)
    suite = tiny_suite(
        source={"dataset": "cifar10", "classes": [0, 1, 2], "epochs": 1},
        targets=[{"dataset": "flowers102", "classes": [0, 1, 2], "resolution": 16}],
        strategies={"linear_probe": {"solver": "sgd", "epochs": 1}, "full_finetune": {"epochs": 1}},
    )
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    result = bench("run", str(path), "--out", str(out), "--data-root", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = read_records(out)
    assert {r["status"] for r in records} == {"ok"} and len(records) == 2
    target = records[0]["provenance"]["data"]["target"]
    assert target["sizes"] == {"train": 18, "val": 18, "test": 18} == {k: len(v) for k, v in expected.items()}
    assert target["num_classes"] == 3


@pytest.mark.parametrize(
    "suite_name, cells, sources",
    [("transfer12", 2 * 10 * 2 * 3, 2), ("vtab1k", 2 * 9 * 2 * 3, 2), ("zoo-pretrained", 8 * 3 * 2 * 3, 8)],
)
@pytest.mark.slow
def test_the_published_gpu_suites_plan_against_miniatures_of_every_dataset(tmp_path, suite_name, cells, sources):
    """The suites as written, their data read from miniatures of each set's real files: the dry run reads every
    dataset, fingerprints it and plans every cell. The ImageNet weights cannot be downloaded here: the dry run
    plans without them and names them."""
    root = tmp_path / "data"
    for name in ("food101", "sun397", "fgvc_aircraft", "stanford_cars", "cifar100", "flowers102", "dtd"):
        getattr(mini, name)(root)
    for name in ("oxford_pets", "caltech101", "svhn", "eurosat", "pcam"):
        getattr(mini, name)(root)
    write_cifar10(root, n_train_batches=1, per_batch=40, n_test=10)
    suite = Path(__file__).parents[1] / "suites" / f"{suite_name}.yaml"
    result = bench("run", str(suite), "--dry-run", "--data-root", str(root), "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{cells} of {cells} cells to run" in result.stdout
    assert f"{sources} pretrained sources' weights are not on this machine" in result.stdout
    assert result.stdout.count("| weights to fetch |") == sources
    assert not (tmp_path / "out" / "records.jsonl").exists()


@pytest.mark.slow
def test_a_run_that_is_not_dry_needs_the_weights(tmp_path):
    write_cifar10(tmp_path, n_train_batches=1, per_batch=40, n_test=10)
    mini.cifar100(tmp_path)
    suite = Path(__file__).parents[1] / "suites" / "pretrained.yaml"
    result = bench("run", str(suite), "--data-root", str(tmp_path), "--out", "out", cwd=tmp_path)
    assert result.returncode == 2 and "are not on this machine" in result.stderr and "bench fetch" in result.stderr
    assert "\n" not in result.stderr.strip()


def test_fetch_downloads_a_missing_set_with_torchvision_and_a_failed_download_is_one_line(
    tmp_path, monkeypatch, capsys
):
    """torchvision's own download (here: writing the miniature, as no network is reachable) is what ``bench
    fetch`` calls for a set not on disk; a set already there is left alone, and a download that fails is one
    line naming the set."""
    import torchvision.datasets as tvd

    from bench.cli import main

    downloads = []

    def download(self):  # as torchvision's: nothing to do when the files are there (each split asks)
        if self._check_integrity():
            return
        downloads.append(self.root)
        mini.flowers102(Path(self.root))

    monkeypatch.setattr(tvd.Flowers102, "download", download)
    monkeypatch.setattr(tvd.Flowers102, "_check_integrity", lambda self: Path(self.root, "flowers-102").exists())
    suite = tiny_suite(targets=[{"dataset": "flowers102", "resolution": 16}])
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    root = tmp_path / "data"
    assert main(["fetch", str(tmp_path / "suite.yaml"), "--data-root", str(root)]) == 0
    assert downloads == [str(root)] and "flowers102: fetched" in capsys.readouterr().out
    check_data(parse_suite(suite, Path("s.yaml")), root)  # on disk now: the run's check passes

    assert main(["fetch", str(tmp_path / "suite.yaml"), "--data-root", str(root)]) == 0
    assert downloads == [str(root)] and "flowers102: already here" in capsys.readouterr().out

    def unreachable(self):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(tvd.Flowers102, "download", unreachable)
    assert main(["fetch", str(tmp_path / "suite.yaml"), "--data-root", str(tmp_path / "elsewhere")]) == 2
    error = capsys.readouterr().err.strip()
    assert (
        error.startswith("bench: error: ") and "targets[0] (flowers102): flowers102: download failed (<urlopen" in error
    )
