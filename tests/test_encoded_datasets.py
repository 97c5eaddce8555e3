"""Encoded images in containers, offline: Hugging Face datasets (parquet files, a save_to_disk folder, a Hub
dataset in the local cache) and WebDataset tar shards (written by ``bench export``, indexed, read whole by DALI's
webdataset reader or by offset), through both backends, split over torchrun ranks, and broken in the ways such
data breaks."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, read_records, tiny_suite
from test_cli_end_to_end import bench

from bench.pipeline.suite import SuiteError, check_data, parse_suite
from transfer_core.data import Augmentation, BatchFormat, create_loader, dali_available
from transfer_core.datasets import (
    DataUnavailableError,
    Selection,
    create_dataset_reader,
    prepare_dataset,
)
from transfer_core.datasets.webdataset import INDEX_FILE, whole_shards, write_shards

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def own_hugging_face_cache(tmp_path, monkeypatch):
    """The Arrow files ``datasets`` makes of parquet files go to the test's folder, not the user's cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets-cache"))


BACKENDS = ["torch", pytest.param("dali", marks=pytest.mark.skipif(not dali_available(), reason="DALI not installed"))]
CLASSES = ("cat", "dog", "eel")


def arrays(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def write_parquet(folder: Path, per_split: int = 6, labels_as: str = "classlabel") -> dict[str, np.ndarray]:
    """A Hugging Face dataset as the Hub stores it: ``data/<split>-00000-of-00001.parquet`` with an Image column
    (PNG bytes: lossless, so decoded pixels can be compared) and a label column."""
    from PIL import Image

    label_feature = datasets.ClassLabel(names=list(CLASSES)) if labels_as == "classlabel" else datasets.Value("string")
    features = datasets.Features({"picture": datasets.Image(), "fine": label_feature, "note": datasets.Value("string")})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    written = {}
    for i, split in enumerate(("train", "validation", "test")):
        pixels = arrays(i, per_split)
        labels = [k % 3 for k in range(per_split)]
        table = datasets.Dataset.from_dict(
            {
                "picture": [Image.fromarray(p) for p in pixels],
                "fine": labels if labels_as == "classlabel" else [CLASSES[k] for k in labels],
                "note": ["-"] * per_split,
            },
            features=features,
        )
        table.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
        written[split] = pixels
    return written


def hf(**options):
    return prepare_dataset(
        "hf", create_dataset_reader("hf").Options(**options), Selection(), Path("."), False, resolution=8
    )


def test_a_parquet_dataset_is_read_by_path_with_its_splits_columns_and_class_names(tmp_path):
    written = write_parquet(tmp_path / "pets")
    data = hf(path=str(tmp_path / "pets"), val_split="validation")
    assert data.class_names == CLASSES and data.validation == "official"
    assert data.sizes() == {"train": 6, "val": 6, "test": 6}
    assert data.train.labels.tolist() == [0, 1, 2, 0, 1, 2]
    for split, theirs in (("train", "train"), ("val", "validation"), ("test", "test")):
        assert torch.equal(getattr(data, split).pixels(8), torch.from_numpy(written[theirs])), split
    for backend in ("torch", "dali") if dali_available() else ("torch",):  # DALI decodes what external_source hands it
        fmt = BatchFormat(torch.device("cpu"), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        loader = create_loader(data, "val", fmt, 4, False, Augmentation(), backend=backend, workers=1)
        decoded = torch.cat([x for x, _ in loader]).permute(0, 2, 3, 1) * 255
        torch.testing.assert_close(decoded, torch.from_numpy(written["validation"]).float(), atol=1e-3, rtol=0)
    manifest = data.manifest()["splits"]["train"]["containers"][0]
    assert manifest["format"] == "arrow" and manifest["column"] == "picture" and manifest["rows"] == 6

    # without val_split, val_fraction carves one out of train
    carved = prepare_dataset(
        "hf",
        create_dataset_reader("hf").Options(path=str(tmp_path / "pets")),
        Selection(val_fraction=0.5),
        Path("."),
        False,
        resolution=8,
    )
    assert carved.validation == "carved" and carved.sizes() == {"train": 3, "val": 3, "test": 6}


def test_plain_string_labels_are_named_by_the_training_split_and_a_save_to_disk_folder_reads_too(tmp_path):
    write_parquet(tmp_path / "pets", labels_as="string")
    with pytest.raises(DataUnavailableError, match="no column of labels; columns: picture, fine, note"):
        hf(path=str(tmp_path / "pets"))  # neither a ClassLabel nor a column called label(s)
    data = hf(path=str(tmp_path / "pets"), label_column="fine")
    assert data.class_names == CLASSES and data.test.labels.tolist() == [0, 1, 2, 0, 1, 2]

    datasets.load_dataset(str(tmp_path / "pets")).save_to_disk(str(tmp_path / "saved"))
    again = hf(path=str(tmp_path / "saved"), label_column="fine")
    assert torch.equal(again.test.pixels(8), data.test.pixels(8))


def test_a_hub_dataset_is_read_from_the_local_cache_offline_and_a_missing_one_names_the_fetch(tmp_path, monkeypatch):
    """``hf:NAME`` reads what ``datasets`` cached when it was downloaded: the cache folder
    ``<namespace>___<name>/<config>/<version>/<hash>/`` of Arrow files, made here from the parquet files."""
    import shutil

    write_parquet(tmp_path / "pets")
    built = tmp_path / "built"
    datasets.load_dataset(str(tmp_path / "pets"), cache_dir=str(built))
    (made,) = [p for p in built.glob("pets/default/0.0.0/*") if p.is_dir()]
    cache = tmp_path / "hf-cache"
    target = cache / "tiny___pets" / "default" / "0.0.0" / made.name
    shutil.copytree(made, target)  # its Arrow files are named after the dataset: pets-train.arrow...
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))

    suite = parse_suite(tiny_suite(targets=[{"dataset": "hf:tiny/pets", "resolution": 8}]), Path("s.yaml"))
    assert suite.targets[0].label == "hf:tiny/pets" and suite.targets[0].options.source == "tiny/pets"
    check_data(suite, tmp_path)
    assert hf(source="tiny/pets").class_names == CLASSES

    missing = parse_suite(tiny_suite(targets=[{"dataset": "hf:tiny/absent", "resolution": 8}]), Path("s.yaml"))
    with pytest.raises(SuiteError, match=r"hf:tiny/absent: cannot be read offline .*bench fetch SUITE"):
        check_data(missing, tmp_path)
    with pytest.raises(DataUnavailableError) as raised:  # one line where it is made, before SuiteError joins lines
        create_dataset_reader("hf").check(tmp_path, missing.targets[0].options, download=False)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"image_column": "photo"}, "no column 'photo'; columns: picture, fine, note"),
        ({"label_column": "note", "val_split": "validation"}, None),
        ({"test_split": "holdout"}, "no split holdout; it has train, validation, test"),
    ],
)
def test_hugging_face_mistakes_are_one_line_errors(tmp_path, options, message):
    write_parquet(tmp_path / "pets")
    if message is None:  # a label column of one value: one class, read as it is
        assert hf(path=str(tmp_path / "pets"), **options).class_names == ("-",)
        return
    with pytest.raises(DataUnavailableError) as raised:
        hf(path=str(tmp_path / "pets"), **options)
    assert message in str(raised.value) and "\n" not in str(raised.value)


@pytest.fixture
def shards(tmp_path):
    """Digits-like arrays (3 classes) exported as WebDataset shards of PNGs (lossless), 7 samples a shard."""
    prepared = prepare_dataset(
        "digits",
        create_dataset_reader("digits").Options(),
        Selection(classes=[0, 1, 2], per_class=10, test_per_class=6),
        Path("."),
        False,
    )
    written = write_shards(prepared, tmp_path / "shards", images_per_shard=7, image_format="png")
    assert written == {"train": {"shards": 5, "samples": 30}, "test": {"shards": 3, "samples": 18}}
    return tmp_path / "shards", prepared


def shard_data(folder, selection=Selection(), **options):
    reader = create_dataset_reader("webdataset")
    return prepare_dataset(
        "webdataset", reader.Options(path=str(folder), **options), selection, Path("."), False, resolution=8
    )


def test_shards_read_back_the_exported_images_labels_and_class_names_with_an_index_the_scan_agrees_with(shards):
    folder, prepared = shards
    data = shard_data(folder)
    assert data.class_names == prepared.class_names
    assert torch.equal(data.train.labels, prepared.train.labels) and torch.equal(data.test.labels, prepared.test.labels)
    expected = prepared.test.pixels(None).expand(-1, -1, -1, 3)  # grey digits, decoded as RGB
    assert torch.equal(data.test.pixels(8), expected)
    assert (
        whole_shards(data.train) is not None and whole_shards(shard_data(folder, Selection(per_class=5)).train) is None
    )

    exported = dict(np.load(folder / INDEX_FILE))
    (folder / INDEX_FILE).unlink()  # rebuilt by reading every shard: the same entries
    rebuilt = shard_data(folder)
    scanned = dict(np.load(folder / INDEX_FILE))
    for name in ("shards", "shard", "key", "offset", "size", "label"):
        assert np.array_equal(exported[name], scanned[name]), name
    assert rebuilt.fingerprint == data.fingerprint


def test_a_rewritten_shard_changes_the_fingerprint_and_is_indexed_again(shards):
    folder, _ = shards
    before = shard_data(folder)
    shard = folder / "test-000002.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:  # the same samples, the last one's label changed
        for member, payload in members:
            if member.name == members[-1][0].name:
                payload = b"0" if payload != b"0" else b"1"
            member.size = len(payload)
            import io

            tar.addfile(member, io.BytesIO(payload))
    after = shard_data(folder)
    assert after.fingerprint != before.fingerprint
    assert after.test.labels[-1] != before.test.labels[-1]
    assert after.train_fingerprint == before.train_fingerprint  # the training shards did not change


def test_broken_shards_are_one_line_errors_naming_the_shard(shards):
    folder, _ = shards
    (folder / "train-000001.tar").write_bytes(b"not a tar file at all" * 40)
    with pytest.raises(DataUnavailableError, match=r"train-000001.tar: not a readable tar file") as raised:
        shard_data(folder)
    assert "\n" not in str(raised.value)

    with tarfile.open(folder / "train-000001.tar", "w") as tar:  # a sample without its label
        info = tarfile.TarInfo("orphan.jpg")
        info.size = 3
        import io

        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(DataUnavailableError, match=r"1 sample\(s\) lack an image .* first 'orphan'"):
        shard_data(folder)
    with pytest.raises(DataUnavailableError, match=r"no shards for val \(val-\*\.tar\)"):
        shard_data(folder, val_shards="val-*.tar")


def test_a_copy_of_the_shards_elsewhere_is_the_same_data_and_a_broken_index_is_built_again(shards, tmp_path):
    import shutil

    folder, _ = shards
    expected = shard_data(folder).fingerprint
    copy = tmp_path / "copied"
    shutil.copytree(folder, copy)  # new modification times: indexed again, the same data
    os.utime(copy / "train-000000.tar", ns=(1, 1))
    assert shard_data(copy).fingerprint == expected
    (copy / INDEX_FILE).write_bytes(b"cut short")
    assert shard_data(copy).fingerprint == expected
    assert dict(np.load(copy / INDEX_FILE))["shards"].tolist() == sorted(p.name for p in copy.glob("*.tar"))


def test_shards_in_subfolders_upper_case_extensions_and_a_stale_dali_index(tmp_path):
    """Patterns may reach into subfolders (shards are named by their path in the folder); ``0001.JPG`` is an
    image to the index and to DALI alike; a DALI ``.idx`` older than its shard is not trusted."""
    import io

    from PIL import Image

    folder = tmp_path / "nested"
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
        with tarfile.open(folder / split / "000000.tar", "w") as tar:
            for i in range(4):
                buffer = io.BytesIO()
                Image.fromarray(arrays(i, 1)[0]).save(buffer, format="PNG")
                for name, payload in ((f"{i:04d}.PNG", buffer.getvalue()), (f"{i:04d}.cls", str(i % 2).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        (folder / split / "000000.idx").write_text("v1.2 1\npng 0 1 stale.png\n")
        os.utime(folder / split / "000000.idx", ns=(1, 1))  # written before the shard: stale
    data = shard_data(folder, train_shards="train/*.tar", test_shards="test/*.tar")
    assert data.sizes() == {"train": 4, "val": 0, "test": 4} and data.test.labels.tolist() == [0, 1, 0, 1]
    assert [c.name for c in data.train.containers] == ["train/000000.tar"]
    assert whole_shards(data.test)[1] == []  # the stale .idx left out: DALI reads the tar itself
    for backend in ("torch", "dali") if dali_available() else ("torch",):
        fmt = BatchFormat(torch.device("cpu"), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        loader = create_loader(data, "test", fmt, 4, False, Augmentation(), backend=backend, workers=1)
        decoded = torch.cat([x for x, _ in loader]).permute(0, 2, 3, 1) * 255
        expected = np.stack([arrays(i, 1)[0] for i in range(4)])
        torch.testing.assert_close(decoded, torch.from_numpy(expected).float(), atol=1e-3, rtol=0)


def test_a_class_selection_missing_from_a_split_and_a_negative_label(shards):
    folder, _ = shards
    data = shard_data(folder, Selection(classes=[0, 2], test_per_class=None))
    assert sorted(set(data.train.labels.tolist())) == [0, 1]
    with tarfile.open(folder / "test-000000.tar", "a") as tar:
        import io

        info = tarfile.TarInfo("99999999.cls")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"-1"))
    with pytest.raises(DataUnavailableError, match=r"99999999.cls is '-1', not a class number"):
        shard_data(folder)


def test_a_shard_folder_that_cannot_be_written_is_indexed_in_memory(shards, monkeypatch):
    import transfer_core.datasets.webdataset as webdataset

    folder, _ = shards
    expected = shard_data(folder).fingerprint
    (folder / INDEX_FILE).unlink()

    def refused(folder, index):
        raise PermissionError(13, "Permission denied", str(folder / INDEX_FILE))

    monkeypatch.setattr(webdataset, "write_index", refused)
    assert shard_data(folder).fingerprint == expected
    assert not (folder / INDEX_FILE).exists()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("selected", [False, True], ids=["whole-shards", "selected"])
def test_evaluation_reads_every_image_once_in_order_and_training_is_seeded(shards, backend, selected):
    """In evaluation whole shards go through DALI's webdataset reader on the DALI backend; a selection of them,
    training (shuffled whole, as on every backend) and any split on the torch backend are read by offset."""
    folder, prepared = shards
    selection = Selection(classes=[0, 2]) if selected else Selection()
    data = shard_data(folder, selection)
    fmt = BatchFormat(torch.device("cpu"), data.mean, data.std)
    loader = create_loader(data, "test", fmt, 5, train=False, augmentation=Augmentation(), backend=backend, workers=2)
    batches = list(loader)
    assert len(batches) == len(loader)
    labels = torch.cat([y for _, y in batches])
    assert torch.equal(labels, data.test.labels)
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    expected = (data.test.pixels(8).permute(0, 3, 1, 2).float() / 255 - mean) / std  # decoded by PIL
    torch.testing.assert_close(torch.cat([x for x, _ in batches]), expected, atol=1e-4, rtol=1e-4)

    def epoch(n):
        train = create_loader(data, "train", fmt, 4, True, Augmentation(), seed=0, backend=backend, workers=2)
        train.set_epoch(n)
        return list(train)

    first = epoch(0)
    assert len(first) == len(data.train) // 4 and all(len(y) == 4 for _, y in first)
    assert torch.equal(first[0][0], epoch(0)[0][0]) and not torch.equal(first[0][0], epoch(1)[0][0])


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("classes", ["all", "0,2"], ids=["whole-shards", "selected"])
def test_two_torchrun_ranks_read_disjoint_parts_and_together_every_test_image_once(shards, tmp_path, backend, classes):
    folder, _ = shards
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    out = tmp_path / "seen"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            str(REPO / "tests" / "shard_ranks.py"),
            str(folder),
            str(out),
            backend,
            classes,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{k}.json").read_text()) for k in range(2)]
    test = [[tuple(i) for i in r["test"]["images"]] for r in ranks]
    expected = shard_data(folder, Selection() if classes == "all" else Selection(classes=[0, 2]))
    plain = BatchFormat(torch.device("cpu"), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    whole = create_loader(expected, "test", plain, 100, False, Augmentation(crop_padding=0, flip="none"))
    one_process = [
        (round(float(x.double().sum()), 3), int(y)) for images, labels in whole for x, y in zip(images, labels)
    ]
    assert sorted(test[0] + test[1]) == sorted(one_process)  # none missed, none twice
    assert not set(test[0]) & set(test[1])
    train = [[tuple(i) for i in r["train"]["images"]] for r in ranks]
    assert ranks[0]["train"]["steps"] == ranks[1]["train"]["steps"] > 0  # the same steps on both ranks
    assert len(set(train[0]) & set(train[1])) == 0  # an epoch's images split between the ranks


@pytest.mark.slow
def test_export_to_webdataset_from_the_command_line_and_a_suite_trains_on_the_shards(tmp_path):
    result = bench(
        "export",
        "digits",
        str(tmp_path / "shards"),
        "--format",
        "webdataset",
        "--images-per-shard",
        "400",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "train 1258 images in 4 shards, test 539 images in 2 shards" in result.stdout
    assert (
        bench("export", "digits", str(tmp_path / "shards"), "--format", "webdataset", cwd=tmp_path).returncode != 0
    )  # not empty

    suite = tiny_suite(
        source={  # both from the shards: decoded as RGB, where the digits arrays are grey
            "dataset": "webdataset",
            "path": str(tmp_path / "shards"),
            "classes": [0, 1, 2, 3, 4],
            "per_class": 20,
            "resolution": 8,
            "epochs": 1,
        },
        targets=[
            {
                "dataset": "webdataset",
                "path": str(tmp_path / "shards"),
                "classes": [5, 6, 7],
                "per_class": 20,
                "val_fraction": 0.25,
                "test_per_class": 10,
                "resolution": 8,
            }
        ],
        strategies={"linear_probe": {"solver": "sgd", "epochs": 1}},
    )
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    result = bench("run", str(tmp_path / "suite.yaml"), "--out", str(out), "--data-root", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (record,) = read_records(out)
    assert record["status"] == "ok"
    manifest = record["provenance"]["data"]["target"]["manifest"]
    assert manifest["validation"] == "carved"
    shards = manifest["splits"]["test"]["containers"]
    assert [s["file"] for s in shards] == ["test-000000.tar", "test-000001.tar"]
    assert all(s["format"] == "webdataset" and s["bytes"] > 0 and len(s["index_sha256"]) == 64 for s in shards)
