"""Pretrained sources, offline: weights files the tests make themselves, found where each library keeps
them, loaded strictly, keyed by their sha256, normalised as they were pretrained."""

import json

import pytest
import torch
from conftest import read_records, tiny_suite

from bench.cli import main
from bench.pipeline.suite import SuiteError, expand_cells, parse_suite
from transfer_core.backbones import create_backbone
from transfer_core.pretrained import (
    PretrainedSpec,
    WeightsUnavailableError,
    input_config,
    load_body,
    sha256,
    weights_file,
)


@pytest.fixture
def checkpoint(tmp_path):
    """A resnet8 trained a little on digits 0-4 and saved as a plain state dict, as a lab would."""
    from transfer_core.data import DeviceBatches
    from transfer_core.datasets import Digits, Selection, prepare_dataset
    from transfer_core.runtime import resolve_runtime
    from transfer_core.training import TrainRecipe, train

    data = prepare_dataset(
        "digits", Digits.Options(), Selection(classes=(0, 1, 2, 3, 4), per_class=30), tmp_path, False
    )
    torch.manual_seed(0)
    model = create_backbone("resnet8", 5, 1)
    images = data.train.images.permute(0, 3, 1, 2).float() / 255
    train(
        model,
        DeviceBatches(images, data.train.labels, 16, train=True),
        TrainRecipe(epochs=2, batch_size=16, lr=0.05),
        resolve_runtime("cpu"),
    )
    path = tmp_path / "lab-digits.pt"
    torch.save(model.state_dict(), path)
    return path, model


def test_a_checkpoint_source_is_loaded_not_trained_and_keyed_by_its_content(tmp_path, checkpoint):
    path, model = checkpoint
    raw = tiny_suite(
        source={"checkpoint": str(path), "backbone": "resnet8"},
        strategies={"linear_probe": {"epochs": 3}, "full_finetune": {"epochs": 1}, "scratch": {"epochs": 1}},
    )
    raw.pop("backbones")  # a pretrained source is its own backbone
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(json.dumps(raw))
    out = tmp_path / "out"
    assert main(["run", str(suite_file), "--out", str(out), "--data-root", str(tmp_path)]) == 0
    records = read_records(out)
    assert {r["status"] for r in records} == {"ok"} and {r["source"] for r in records} == {"checkpoint:lab-digits"}
    probe = next(r for r in records if r["strategy"] == "linear_probe")
    assert probe["source_model"]["weights"]["sha256"] == sha256(path)
    assert probe["compute"]["source_train_s_total"] == 0  # nothing trained for the source
    assert probe["metrics"]["test_top1_pct"] > 20  # chance is 20% on five classes

    # the probe's frozen body is exactly the checkpoint's
    from transfer_core.cache import ModelCache

    fitted = ModelCache(out / "cache").load(
        "models", probe["config"][next(k for k in probe["config"] if k.startswith("linear_probe"))]["key"]
    )
    body = {k.removeprefix("body."): v for k, v in fitted[0].items() if k.startswith("body.")}
    for key, value in model.body.state_dict().items():
        assert torch.equal(body[key], value), key

    # other weights under the same path: a different source; what depends on it reruns, scratch does not
    with torch.no_grad():
        model.body.stem[0].weight.mul_(0.5)
    torch.save(model.state_dict(), path)
    assert main(["run", str(suite_file), "--out", str(out), "--data-root", str(tmp_path)]) == 0
    rerun = read_records(out)[len(records) :]
    assert sorted(r["strategy"] for r in rerun) == ["full_finetune", "linear_probe"]


def test_timm_weights_from_a_file_load_strictly_and_bring_their_input_config(tmp_path):
    import timm

    torch.manual_seed(0)
    published = timm.create_model("resnet10t", pretrained=False)  # stands in for the downloaded weights
    path = tmp_path / "resnet10t.pth"
    torch.save(published.state_dict(), path)
    spec = PretrainedSpec("timm", "resnet10t.c3_in1k", file=str(path), label="r10")
    assert weights_file(spec) == path
    loaded = load_body(spec, path, 3)
    assert loaded.num_features == 512
    for key, value in loaded.body.state_dict().items():
        assert torch.equal(value, published.state_dict()[key]), key
    assert torch.equal(loaded.head.weight, published.fc.weight)  # the classifier kept as the source's head
    mean, std, side = input_config(spec)
    assert mean == (0.485, 0.456, 0.406) and std == (0.229, 0.224, 0.225) and side == 176

    headless = {k: v for k, v in published.state_dict().items() if not k.startswith("fc.")}
    torch.save(headless, path)  # the classifier may be absent: it is never loaded
    assert load_body(spec, path, 3).head is None
    del headless["conv1.0.weight"]
    torch.save(headless, path)
    with pytest.raises(
        WeightsUnavailableError, match=r"keys do not match the model: 1 missing \(e\.g\. conv1\.0\.weight\)"
    ):
        load_body(spec, path, 3)


def _as_users_save(state: dict, form: str, path):
    """``state`` written the ways users write checkpoints; the file's path."""
    if form == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path.with_suffix(".safetensors")))
        return path.with_suffix(".safetensors")
    wrapped = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 7},  # Lightning's and many training scripts' layout
        "model": {"model": state, "optimizer": {}},  # timm's and DeiT's training checkpoints
        "ddp": {f"module.{k}": v for k, v in state.items()},  # saved from a DistributedDataParallel wrapper
    }[form]
    torch.save(wrapped, path)
    return path


@pytest.mark.parametrize("form", ["plain", "state_dict", "model", "ddp", "safetensors"])
@pytest.mark.parametrize("backbone", ["timm:resnet10t", "torchvision:resnet18", "resnet8"])
def test_checkpoints_as_users_save_them_load_with_their_classifier(tmp_path, backbone, form):
    """A whole model's state dict, its classifier included, as timm, torchvision and this harness name it."""
    import timm
    import torchvision

    from transfer_core.pretrained import check_weights

    torch.manual_seed(0)
    library, _, name = backbone.rpartition(":")
    if library == "timm":
        whole = timm.create_model(name, num_classes=10)
    elif library == "torchvision":
        whole = torchvision.models.get_model(name, num_classes=10)
    else:
        whole = create_backbone(name, 10, 3)
    path = _as_users_save(whole.state_dict(), form, tmp_path / "ckpt.pth")
    spec = PretrainedSpec("checkpoint", backbone, file=str(path), label="ckpt")
    check_weights(spec, path, 3)
    loaded = load_body(spec, path, 3)
    images = torch.randn(2, 3, 32, 32)
    whole.eval(), loaded.body.eval(), loaded.head.eval()
    with torch.no_grad():  # body and kept head together compute what the saved model computes
        assert torch.allclose(loaded.head(loaded.body(images)), whole(images), atol=1e-5)


def test_a_checkpoint_that_does_not_fit_its_backbone_stops_the_run_in_one_line_before_anything_trains(
    tmp_path, checkpoint, capsys
):
    path, _ = checkpoint  # a resnet8, named as a resnet20
    raw = tiny_suite(source={"checkpoint": str(path), "backbone": "resnet20"}, strategies={"linear_probe": {}})
    raw.pop("backbones")
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(json.dumps(raw))
    out = tmp_path / "out"
    assert main(["run", str(suite_file), "--out", str(out), "--data-root", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert "source checkpoint:lab-digits" in error and "its keys do not match the model" in error
    assert "of another shape (e.g. stages.1.conv1.weight (32, 16, 3, 3) vs (16, 16, 3, 3))" in error
    assert not (out / "records.jsonl").exists() and not (out / "cache" / "sources").exists()

    torch.save(torch.nn.Linear(2, 2), path)  # a whole pickled model: not read, and the message says what to save
    assert main(["run", str(suite_file), "--out", str(out), "--data-root", str(tmp_path)]) == 2
    assert "save model.state_dict() instead" in capsys.readouterr().err


def test_torchvision_weights_are_found_under_torch_home_or_the_fetch_command_is_named(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = PretrainedSpec("torchvision", "resnet18", weights="IMAGENET1K_V1", label="resnet18")
    with pytest.raises(WeightsUnavailableError, match=r"resnet18-f37072fd\.pth\).*python -m bench fetch"):
        weights_file(spec)
    torch.manual_seed(0)
    saved = torchvision.models.resnet18()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(saved.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    loaded = load_body(spec, weights_file(spec), 3)
    assert loaded.num_features == 512 and torch.equal(loaded.body.conv1.weight, saved.conv1.weight)
    assert torch.equal(loaded.head.bias, saved.fc.bias)
    assert input_config(spec)[2] == 224


def test_missing_weights_stop_the_run_in_one_line_before_anything_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    raw = tiny_suite(source={"pretrained": "timm:resnet10t.c3_in1k"}, strategies={"linear_probe": {}})
    raw.pop("backbones")
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(json.dumps(raw))
    assert main(["run", str(suite_file), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "weights of resnet10t.c3_in1k are not on this machine" in error
    assert "bench fetch" in error and not (tmp_path / "out" / "records.jsonl").exists()


@pytest.mark.parametrize(
    "source, message",
    [
        ({"pretrained": "keras:resnet50"}, "source.pretrained: expected timm:NAME.TAG or torchvision:NAME"),
        ({"pretrained": "timm:resnet10t.c3_in1k", "weights": "X"}, "source.weights: only for torchvision models"),
        (
            {"pretrained": "torchvision:resnet18", "weights": "NOPE"},
            "source: torchvision resnet18 has no weights 'NOPE'",
        ),
        ({"pretrained": "timm:not_a_model"}, "source: unknown timm model 'not_a_model'"),
        ({"checkpoint": "x.pt"}, "source.backbone: missing"),
        ({"checkpoint": "x.pt", "backbone": "resnet8", "epochs": 3}, "source.epochs: unknown key"),
    ],
)
def test_pretrained_source_mistakes_are_one_line_errors(source, message):
    with pytest.raises(SuiteError) as info:
        parse_suite(tiny_suite(source=source))
    assert str(info.value).startswith(message)


def test_two_sources_under_one_name_are_refused_and_torchvision_labels_name_the_weights():
    raw = tiny_suite(
        source=[
            {"dataset": "digits", "classes": [0, 1, 2, 3, 4], "name": "lab"},
            {"checkpoint": "x.pt", "backbone": "resnet8", "name": "lab"},
        ]
    )
    with pytest.raises(SuiteError, match=r"source\[1\]: is named 'lab' like source\[0\]"):
        parse_suite(raw)
    raw = tiny_suite(
        source=[
            {"pretrained": "torchvision:resnet18", "weights": "IMAGENET1K_V1"},
            {"pretrained": "torchvision:resnet18"},
        ]
    )
    raw.pop("backbones")
    assert [s.label for s in parse_suite(raw).sources] == ["resnet18.IMAGENET1K_V1", "resnet18.DEFAULT"]


def test_cells_under_a_timm_source_see_the_target_at_its_input_size_and_normalisation():
    raw = tiny_suite(source={"pretrained": "timm:resnet10t.c3_in1k"}, strategies={"scratch": {}, "linear_probe": {}})
    raw.pop("backbones")
    cells = expand_cells(parse_suite(raw))
    assert {c.backbone for c in cells} == {"timm:resnet10t.c3_in1k"}
    assert {c.target.resolution for c in cells} == {176}  # scratch too: the row compares like with like
    assert {c.target.normalization for c in cells} == {((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
    assert cells[0].cell_id.startswith("resnet10t.c3_in1k->digits[5-9]/timm:resnet10t.c3_in1k/")
