"""Every registered strategy, run on tiny digits data, plus alpha-mix's exact endpoints."""
import copy
from pathlib import Path

import pytest
import torch

from transfer_core.backbones import create_backbone
from transfer_core.data import BatchFormat, create_loader
from transfer_core.datasets import Augmentation, Digits, Selection, prepare_dataset
from transfer_core.runtime import resolve_runtime
from transfer_core.strategies import STRATEGIES, TargetTask
from transfer_core.strategies.alpha_mix import AlphaMix, interpolate_weights
from transfer_core.training import TrainRecipe, predict, train

RUNTIME = resolve_runtime("cpu", eval_batch_size=64)
NO_AUGMENT = Augmentation(crop_padding=0, flip="none")


@pytest.fixture(scope="module")
def source_model():
    data = prepare_dataset("digits", Digits.Options(), Selection(classes=(0, 1, 2, 3, 4), per_class=40), Path("."), False)
    torch.manual_seed(0)
    model = RUNTIME.prepare(create_backbone("resnet8", data.num_classes, 1))
    loader = create_loader(data, "train", BatchFormat(RUNTIME.device, data.mean, data.std), 32, True, NO_AUGMENT)
    train(model, loader, TrainRecipe(epochs=3, lr=0.05, batch_size=32), RUNTIME)
    return model


@pytest.fixture(scope="module")
def target():
    return prepare_dataset("digits", Digits.Options(), Selection(classes=(5, 6, 7, 8, 9), per_class=24, val_fraction=0.25, test_per_class=12),
                           Path("."), False)


RECIPE = TrainRecipe(epochs=2, lr=0.05, batch_size=16)


class Fits:
    """Fitted models of one task, each strategy fitted once from exactly what it depends on: the way the
    runner hands them over, without the runner."""

    def __init__(self, source_model, target):
        self.source_model, self.task, self.models = source_model, TargetTask(target, "resnet8", 0, RUNTIME, NO_AUGMENT), {}

    def fitted(self, name):
        if name not in self.models:
            cls = STRATEGIES.get(name)
            source = copy.deepcopy(self.source_model) if cls.uses_source else None
            ingredients = {i: self.fitted(i) for i in cls.ingredients}
            self.models[name] = cls(cls.Options(), RECIPE).fit(self.task, source, ingredients)
        return self.models[name]

    def evaluate(self, strategy):
        return strategy.evaluate(self.task, {name: self.fitted(name) for name in strategy.evaluated_models()})


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_trains_and_evaluates(name, source_model, target):
    cls = STRATEGIES.get(name)
    evaluations = Fits(source_model, target).evaluate(cls(cls.Options(), RECIPE))
    assert evaluations and sum(e.selected for e in evaluations) == 1
    for evaluation in evaluations:
        assert 0 <= evaluation.metrics["test_top1_pct"] <= 100
        assert 0 <= evaluation.metrics["val_top1_pct"] <= 100
        assert evaluation.stats.images > 0 and evaluation.stats.flops > 0 and evaluation.stats.train_s > 0


def test_finetune_and_probe_keep_the_source_body_and_size_the_head(source_model, target):
    ctx = Fits(source_model, target)
    probe = ctx.fitted("linear_probe").model
    assert probe.head.out_features == target.num_classes
    for (name, value), original in zip(probe.body.state_dict().items(), source_model.body.state_dict().values()):
        assert torch.equal(value, original), f"the linear probe changed the frozen body ({name})"
    finetuned = ctx.fitted("full_finetune").model
    assert finetuned.head.out_features == target.num_classes
    assert not torch.equal(finetuned.body.stem[0].weight, source_model.body.stem[0].weight)


def test_linear_probe_folded_head_matches_the_standardised_fit(source_model, target):
    """The standardisation folded into the head must leave predictions on raw features unchanged."""
    probe = Fits(source_model, target).fitted("linear_probe").model
    features, labels = predict(probe.body, TargetTask(target, "resnet8", 0, RUNTIME, NO_AUGMENT).loader("train", train=False), RUNTIME)
    logits = probe.head(features)
    assert logits.shape == (len(labels), target.num_classes)
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    assert accuracy > 0.5  # a trained probe, not an untouched random head (chance is 0.2)


@pytest.mark.parametrize("space", ["weights", "outputs"])
def test_alpha_mix_endpoints_are_exactly_its_ingredients(space, source_model, target):
    ctx = Fits(source_model, target)
    task = ctx.task
    probe, finetuned = ctx.fitted("linear_probe").model, ctx.fitted("full_finetune").model
    if space == "weights":
        at_0, at_1 = interpolate_weights(probe, finetuned, 0.0), interpolate_weights(probe, finetuned, 1.0)
        assert torch.equal(task.logits(at_0, "test")[0], task.logits(probe, "test")[0])
        assert torch.equal(task.logits(at_1, "test")[0], task.logits(finetuned, "test")[0])
    mix = AlphaMix(AlphaMix.Options(alphas=[0.0, 0.5, 1.0], space=space), TrainRecipe())
    evaluations = {e.alpha: e for e in ctx.evaluate(mix)}
    assert evaluations[0.0].metrics == task.evaluate(probe)
    assert evaluations[1.0].metrics == task.evaluate(finetuned)
    best = max(e.metrics["val_top1_pct"] for e in evaluations.values())
    selected = [e for e in evaluations.values() if e.selected]
    assert len(selected) == 1 and selected[0].metrics["val_top1_pct"] == best
    # alpha-mix trains nothing itself: its cost is its ingredients' plus its own search
    probe_stats, finetune_stats = ctx.fitted("linear_probe").stats, ctx.fitted("full_finetune").stats
    assert selected[0].stats.train_s == pytest.approx(probe_stats.train_s + finetune_stats.train_s)
    assert selected[0].selection_s > 0


def test_interior_alpha_interpolates_every_float_tensor(source_model):
    a = create_backbone("resnet8", 3, 1)
    b = create_backbone("resnet8", 3, 1)
    for p in b.parameters():
        p.data.add_(1.0)
    mid = interpolate_weights(a, b, 0.25)
    for (key, va), vb, vm in zip(a.state_dict().items(), b.state_dict().values(), mid.state_dict().values()):
        if va.is_floating_point():
            torch.testing.assert_close(vm, 0.75 * va + 0.25 * vb, msg=key)
