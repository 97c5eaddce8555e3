"""Every registered strategy, run on tiny digits data, plus alpha-mix's exact endpoints."""

import copy
from pathlib import Path

import pytest
import torch

from transfer_core.backbones import create_backbone
from transfer_core.data import Augmentation, BatchFormat, create_loader
from transfer_core.datasets import Digits, Selection, prepare_dataset
from transfer_core.runtime import resolve_runtime
from transfer_core.strategies import STRATEGIES, TargetTask
from transfer_core.strategies.alpha_mix import AlphaMix, interpolate_weights
from transfer_core.training import TrainRecipe, predict, reestimate_batchnorm, train

RUNTIME = resolve_runtime("cpu", eval_batch_size=64)
NO_AUGMENT = Augmentation(crop_padding=0, flip="none")


@pytest.fixture(scope="module")
def source_model():
    data = prepare_dataset(
        "digits", Digits.Options(), Selection(classes=(0, 1, 2, 3, 4), per_class=40), Path("."), False
    )
    torch.manual_seed(0)
    model = RUNTIME.prepare(create_backbone("resnet8", data.num_classes, 1))
    loader = create_loader(data, "train", BatchFormat(RUNTIME.device, data.mean, data.std), 32, True, NO_AUGMENT)
    train(model, loader, TrainRecipe(epochs=3, lr=0.05, batch_size=32), RUNTIME)
    return model


@pytest.fixture(scope="module")
def target():
    return prepare_dataset(
        "digits",
        Digits.Options(),
        Selection(classes=(5, 6, 7, 8, 9), per_class=24, val_fraction=0.25, test_per_class=12),
        Path("."),
        False,
    )


RECIPE = TrainRecipe(epochs=2, lr=0.05, batch_size=16)


class Fits:
    """Fitted models of one task, each strategy fitted once from exactly what it depends on: the way the
    runner hands them over, without the runner."""

    def __init__(self, source_model, target):
        self.source_model, self.task, self.models = (
            source_model,
            TargetTask(target, "resnet8", 0, RUNTIME, NO_AUGMENT),
            {},
        )

    def fitted(self, name):
        if name not in self.models:
            cls = STRATEGIES.get(name)
            source = copy.deepcopy(self.source_model) if cls.uses_source else None
            ingredients = {i: self.fitted(i) for i in cls.ingredients_of(cls.Options())}
            self.models[name] = cls(cls.Options(), RECIPE).fit(self.task, source, ingredients)
        return self.models[name]

    def closure(self, name, options):
        """What a cell of ``name`` is built from: its own fitted model and its ingredients', recursively."""
        cls = STRATEGIES.get(name)
        names = [name] if cls.trains else []
        for ingredient in cls.ingredients_of(options):
            names += [n for n in self.closure(ingredient, STRATEGIES.get(ingredient).Options()) if n not in names]
        return names

    def evaluate(self, strategy):
        return strategy.evaluate(
            self.task, {name: self.fitted(name) for name in self.closure(strategy.name, strategy.options)}
        )


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


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_linear_probe_folded_head_matches_the_standardised_fit(source_model, target, solver, monkeypatch):
    """The standardisation folded into the head leaves predictions unchanged: the folded head on raw features
    gives the logits the head fitted on standardised features gave, for both solvers."""
    from transfer_core.strategies import linear_probe

    fitted_heads = []  # the head as the solver left it, before the fold rewrites it in place
    real_lbfgs, real_train = linear_probe.LinearProbe._fit_lbfgs, linear_probe.train

    def lbfgs(self, head, *args, **kwargs):
        result = real_lbfgs(self, head, *args, **kwargs)
        fitted_heads.append(copy.deepcopy(head))
        return result

    def sgd(head, *args, **kwargs):
        result = real_train(head, *args, **kwargs)
        fitted_heads.append(copy.deepcopy(head))
        return result

    monkeypatch.setattr(linear_probe.LinearProbe, "_fit_lbfgs", lbfgs)
    monkeypatch.setattr(linear_probe, "train", sgd)
    task = TargetTask(target, "resnet8", 0, RUNTIME, NO_AUGMENT)
    options = STRATEGIES.get("linear_probe").Options(solver=solver)
    probe = STRATEGIES.get("linear_probe")(options, RECIPE).fit(task, copy.deepcopy(source_model), {}).model
    (standardised_head,) = fitted_heads
    features, labels = predict(probe.body, task.loader("train", train=False), RUNTIME)
    mean, std = features.mean(0), features.std(0)
    std = std.clamp_min(1e-2 * std.mean().item() + 1e-12)  # the probe's floor on barely varying features
    with torch.no_grad():
        expected = standardised_head((features - mean) / std)
        folded = probe.head(features)
    torch.testing.assert_close(folded, expected, atol=1e-4, rtol=1e-4)
    assert (folded.argmax(1) == labels).float().mean().item() > 0.5  # a trained probe (chance is 0.2)


@pytest.mark.parametrize("space", ["weights", "logits", "probs"])
@pytest.mark.parametrize("finetune", ["lp_ft", "full_finetune"])
def test_alpha_mix_endpoints_are_exactly_its_ingredients(space, finetune, source_model, target):
    ctx = Fits(source_model, target)
    task = ctx.task
    probe, finetuned = ctx.fitted("linear_probe").model, ctx.fitted(finetune).model
    if space == "weights":
        at_0, at_1 = interpolate_weights(probe, finetuned, 0.0), interpolate_weights(probe, finetuned, 1.0)
        assert torch.equal(task.logits(at_0, "test")[0], task.logits(probe, "test")[0])
        assert torch.equal(task.logits(at_1, "test")[0], task.logits(finetuned, "test")[0])
    mix = AlphaMix(
        AlphaMix.Options(alphas=[0.0, 0.5, 1.0], space=space, finetune=finetune, batchnorm="interpolate"), TrainRecipe()
    )
    evaluations = {e.alpha: e for e in ctx.evaluate(mix)}
    assert evaluations[0.0].metrics == task.evaluate(probe)
    assert evaluations[1.0].metrics == task.evaluate(finetuned)
    best = max(e.metrics["val_top1_pct"] for e in evaluations.values())
    selected = [e for e in evaluations.values() if e.selected]
    assert len(selected) == 1 and selected[0].metrics["val_top1_pct"] == best
    # alpha-mix trains nothing itself: its cost is its ingredients' (the probe once, though LP-FT is built
    # from it too) plus its own search
    probe_stats, finetune_stats = ctx.fitted("linear_probe").stats, ctx.fitted(finetune).stats
    assert selected[0].stats.train_s == pytest.approx(probe_stats.train_s + finetune_stats.train_s)
    assert selected[0].stats.images == probe_stats.images + finetune_stats.images
    assert selected[0].selection_s > 0
    assert selected[0].details["finetune"] == finetune and selected[0].details["space"] == space


def test_alpha_mix_reestimates_batchnorm_at_every_alpha_including_the_ends(source_model, target):
    ctx = Fits(source_model, target)
    task = ctx.task
    probe, finetuned = ctx.fitted("linear_probe").model, ctx.fitted("lp_ft").model
    mix = AlphaMix(AlphaMix.Options(alphas=[0.0, 1.0], batchnorm="reestimate"), TrainRecipe())
    evaluations = {e.alpha: e for e in ctx.evaluate(mix)}
    for alpha, model in [(0.0, probe), (1.0, finetuned)]:
        reestimated = copy.deepcopy(model)
        reestimate_batchnorm(reestimated, task.loader("train", train=False, whole=True), RUNTIME)
        assert evaluations[alpha].metrics == task.evaluate(reestimated)
        assert evaluations[alpha].details["batchnorm"] == "reestimate"
    # the probe's body keeps the source's statistics, which re-estimation on the target replaces
    reestimated_probe = copy.deepcopy(probe)
    reestimate_batchnorm(reestimated_probe, task.loader("train", train=False, whole=True), RUNTIME)
    assert not torch.equal(reestimated_probe.body.stem[1].running_mean, probe.body.stem[1].running_mean)


def test_alpha_mix_old_option_names_still_read():
    options = AlphaMix.Options(space="outputs", bn_reestimate=False)
    assert options.space == "logits" and options.batchnorm == "interpolate"
    assert AlphaMix.Options(bn_reestimate=True).batchnorm == "reestimate"
    with pytest.raises(ValueError, match="bn_reestimate: False contradicts batchnorm: reestimate"):
        AlphaMix.Options(batchnorm="reestimate", bn_reestimate=False)


def test_probs_space_mixes_softmax_probabilities():
    mix = AlphaMix(AlphaMix.Options(space="probs"), TrainRecipe())
    logits_0, logits_1 = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    labels = torch.tensor([0])
    scores, _ = mix._mix([(logits_0, labels), (logits_1, labels)], 0.5)
    torch.testing.assert_close(scores, 0.5 * logits_0.softmax(1) + 0.5 * logits_1.softmax(1))
    # where the two spaces disagree: a confident class 0 at one end, a milder class 1 at the other
    logits_0, logits_1 = torch.tensor([[10.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    by_probs, _ = mix._mix([(logits_0, labels), (logits_1, labels)], 0.8)
    by_logits, _ = AlphaMix(AlphaMix.Options(space="logits"), TrainRecipe())._mix(
        [(logits_0, labels), (logits_1, labels)], 0.8
    )
    assert by_probs.argmax().item() == 1 and by_logits.argmax().item() == 0


def test_interior_alpha_interpolates_every_float_tensor(source_model):
    a = create_backbone("resnet8", 3, 1)
    b = create_backbone("resnet8", 3, 1)
    for p in b.parameters():
        p.data.add_(1.0)
    mid = interpolate_weights(a, b, 0.25)
    for (key, va), vb, vm in zip(a.state_dict().items(), b.state_dict().values(), mid.state_dict().values()):
        if va.is_floating_point():
            torch.testing.assert_close(vm, 0.75 * va + 0.25 * vb, msg=key)


def test_lp_ft_starts_from_the_probe_and_leaves_it_untouched(source_model, target):
    ctx = Fits(source_model, target)
    fitted = ctx.fitted("linear_probe")
    probe_state = copy.deepcopy(fitted.model.state_dict())
    started_from = []
    original_train = train

    def record_start(model, *args, **kwargs):
        started_from.append(copy.deepcopy(model.state_dict()))
        return original_train(model, *args, **kwargs)

    import transfer_core.strategies.base as base

    base.train, saved = record_start, base.train
    try:
        lp_ft = ctx.fitted("lp_ft").model
    finally:
        base.train = saved
    for key, value in probe_state.items():
        assert torch.equal(started_from[0][key], value), f"LP-FT did not start from the probe ({key})"
        assert torch.equal(fitted.model.state_dict()[key], value), f"LP-FT changed the probe ({key})"
    assert all(p.requires_grad for p in lp_ft.parameters())  # every weight fine-tuned, the body included
    assert not torch.equal(lp_ft.body.stem[0].weight, fitted.model.body.stem[0].weight)
    assert not torch.equal(lp_ft.head.weight, fitted.model.head.weight)


def test_freeze_stages_keeps_the_stem_and_its_batchnorm(source_model, target):
    from transfer_core.strategies.full_finetune import FullFinetune

    task = TargetTask(target, "resnet8", 0, RUNTIME, NO_AUGMENT)
    model = FullFinetune(FullFinetune.Options(freeze_stages=2), RECIPE).fit(task, copy.deepcopy(source_model), {}).model
    stem, first_stage = source_model.body.stem, source_model.body.stages[0]
    for before, after in [(stem, model.body.stem), (first_stage, model.body.stages[0])]:
        for (name, value), moved in zip(before.state_dict().items(), after.state_dict().values()):
            assert torch.equal(value, moved), f"a frozen part changed ({name})"
    assert not torch.equal(model.body.stages[1].conv1.weight, source_model.body.stages[1].conv1.weight)
    with pytest.raises(ValueError, match="freeze_stages: 9, but backbone resnet8 has 4 parts"):
        FullFinetune(FullFinetune.Options(freeze_stages=9), RECIPE).fit(task, copy.deepcopy(source_model), {})


def test_which_parameters_train_and_which_statistics_update_are_separate_choices(source_model, target):
    """A bias-only fine-tune (BitFit-like) through ``finetune``: the weights it does not train stay, and the
    BatchNorm statistics update or not as the strategy says, whatever trains."""
    from transfer_core.strategies.base import FinetuneOptions, finetune

    task = TargetTask(target, "resnet8", 0, RUNTIME, NO_AUGMENT)
    biases = lambda name: name.endswith(".bias") or name.startswith("head.")  # noqa: E731
    for frozen_statistics in ((), None):
        model = copy.deepcopy(source_model)
        finetune(model, task, RECIPE, FinetuneOptions(), "bitfit", trains=biases, frozen_statistics=frozen_statistics)
        assert torch.equal(model.body.stem[0].weight, source_model.body.stem[0].weight)
        assert not torch.equal(model.body.stem[1].bias, source_model.body.stem[1].bias)
        moved = not torch.equal(model.body.stem[1].running_mean, source_model.body.stem[1].running_mean)
        assert moved  # nothing frozen whole (no freeze_stages): every BatchNorm layer follows the target
    stem_norm = "body.stem.1"
    model = copy.deepcopy(source_model)
    finetune(model, task, RECIPE, FinetuneOptions(), "bitfit", trains=biases, frozen_statistics={stem_norm})
    assert torch.equal(model.body.stem[1].running_mean, source_model.body.stem[1].running_mean)
    assert not torch.equal(model.body.stem[1].bias, source_model.body.stem[1].bias)  # its shift still trains
    assert not torch.equal(model.body.stages[1].bn1.running_mean, source_model.body.stages[1].bn1.running_mean)
    with pytest.raises(ValueError, match="'body.stem.0', which is not a BatchNorm layer"):
        finetune(copy.deepcopy(source_model), task, RECIPE, FinetuneOptions(), "x", frozen_statistics={"body.stem.0"})


def test_backbone_lr_scale_slows_the_body_only(source_model, target):
    from transfer_core.strategies.full_finetune import FullFinetune

    task = TargetTask(target, "resnet8", 0, RUNTIME, NO_AUGMENT)

    def body_shift(scale):
        model = (
            FullFinetune(FullFinetune.Options(backbone_lr_scale=scale), RECIPE)
            .fit(task, copy.deepcopy(source_model), {})
            .model
        )
        return (model.body.stem[0].weight - source_model.body.stem[0].weight).norm().item()

    assert body_shift(0.01) < 0.1 * body_shift(1.0)


def test_l2_sp_penalty_is_zero_at_the_source_and_pulls_toward_it(source_model, target):
    from transfer_core.strategies.l2_sp import L2SP

    task = TargetTask(target, "resnet8", 0, RUNTIME, NO_AUGMENT)
    penalties = []
    import transfer_core.strategies.l2_sp as l2_sp_module

    def spy(model, task, recipe, options, desc, penalty=None):
        penalties.append(penalty().item())
        head_l2 = sum(p.pow(2).sum() for p in model.head.parameters()).item()
        assert penalties[0] == pytest.approx(0.5 * options.head_weight * head_l2)  # the body is still at w0
        with torch.no_grad():
            model.body.stem[0].weight.add_(1.0)
        moved = model.body.stem[0].weight.numel()
        assert penalty().item() == pytest.approx(penalties[0] + 0.5 * options.sp_weight * moved, rel=1e-5)
        return saved_finetune(model, task, recipe, options, desc, penalty)

    saved_finetune, l2_sp_module.finetune = l2_sp_module.finetune, spy
    try:
        L2SP(L2SP.Options(), RECIPE).fit(task, copy.deepcopy(source_model), {})
    finally:
        l2_sp_module.finetune = saved_finetune
    assert len(penalties) == 1


def test_strong_l2_sp_stays_nearer_the_source_than_a_plain_fine_tune(source_model, target):
    from transfer_core.strategies.l2_sp import L2SP

    task = TargetTask(target, "resnet8", 0, RUNTIME, NO_AUGMENT)

    def distance(model):
        return sum((p - q).pow(2).sum() for p, q in zip(model.body.parameters(), source_model.body.parameters())).item()

    weak = L2SP(L2SP.Options(sp_weight=0.0, head_weight=0.0), RECIPE).fit(task, copy.deepcopy(source_model), {}).model
    strong = L2SP(L2SP.Options(sp_weight=10.0), RECIPE).fit(task, copy.deepcopy(source_model), {}).model
    assert distance(strong) < 0.5 * distance(weak)


def test_lbfgs_probe_chooses_its_l2_on_validation_only(source_model, target):
    from transfer_core.strategies.linear_probe import LinearProbe

    task = TargetTask(target, "resnet8", 0, RUNTIME, NO_AUGMENT)
    splits_read = []
    loader = task.loader

    def spying_loader(split, *args, **kwargs):
        splits_read.append(split)
        return loader(split, *args, **kwargs)

    task.loader = spying_loader
    grid = [1e-4, 1e-2, 1.0, 100.0]
    fitted = LinearProbe(LinearProbe.Options(solver="lbfgs", l2_grid=grid, max_iter=50), RECIPE).fit(
        task, copy.deepcopy(source_model), {}
    )
    assert "test" not in splits_read and "val" in splits_read
    scores = fitted.details["val_top1_pct_by_l2"]
    assert sorted(scores) == sorted(f"{g:g}" for g in grid)
    best = max(scores.values())
    assert scores[f"{fitted.details['l2']:g}"] == best
    # ties go to the strongest regularisation among the best
    assert fitted.details["l2"] == max(g for g in grid if scores[f"{g:g}"] == best)
    # the head kept is the one chosen: its validation top-1 is the recorded best
    task.loader = loader
    # (folding the standardisation into the head reorders float sums: one borderline example of 30 may flip)
    assert task.evaluate(fitted.model)["val_top1_pct"] == pytest.approx(best, abs=100 / 30 + 1e-6)
    assert fitted.stats.train_s > 0 and fitted.stats.steps > 0 and fitted.stats.flops > 0


def test_lbfgs_probe_needs_a_validation_split(source_model):
    from transfer_core.strategies.linear_probe import LinearProbe

    no_val = prepare_dataset(
        "digits", Digits.Options(), Selection(classes=(5, 6, 7, 8, 9), per_class=20, val_fraction=0.0), Path("."), False
    )
    task = TargetTask(no_val, "resnet8", 0, RUNTIME, NO_AUGMENT)
    with pytest.raises(ValueError, match="solver lbfgs chooses its L2 strength on validation"):
        LinearProbe(LinearProbe.Options(solver="lbfgs"), RECIPE).fit(task, copy.deepcopy(source_model), {})


@pytest.mark.parametrize(
    "name, first_frozen, first_trained",
    [
        ("timm:vit_tiny_patch16_224", "cls_token", "blocks.1.norm1.weight"),
        ("timm:efficientnet_b0", "conv_stem.weight", "blocks.1.0.conv_pw.weight"),
        ("torchvision:resnet18", "bn1.weight", "layer2.0.conv1.weight"),
    ],
)
def test_freeze_stages_knows_the_stages_of_timm_and_torchvision_models(name, first_frozen, first_trained):
    from transfer_core.backbones import stage_groups

    body = create_backbone(name, 10, 3).body
    groups = stage_groups(body)
    frozen = {n for group in groups[:2] for n in group}  # freeze_stages: 2 = the stem and the first stage
    assert first_frozen in frozen and first_trained not in frozen
    assert len(groups) > 3 and sum(len(g) for g in groups) == len({n for n, _ in body.named_parameters()})


def test_freeze_stages_refuses_an_architecture_whose_stages_are_unknown():
    from transfer_core.backbones import stage_groups

    with pytest.raises(ValueError, match="the stages of a VGG are not known"):
        stage_groups(create_backbone("torchvision:vgg11", 10, 3).body)


def test_a_backbone_whose_stages_are_unknown_still_fine_tunes_whole(target):
    """freeze_stages needs the stages; a fine-tune without it must not, or VGG-like bodies could not train."""
    from transfer_core.backbones import Classifier
    from transfer_core.strategies.full_finetune import FullFinetune

    body = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    source = RUNTIME.prepare(Classifier(body, 8, 5))
    task = TargetTask(target, "resnet8", 0, RUNTIME, NO_AUGMENT)
    fitted = FullFinetune(FullFinetune.Options(), RECIPE).fit(task, source, {})
    assert fitted.stats.steps > 0 and all(p.requires_grad for p in fitted.model.parameters())
    with pytest.raises(ValueError, match="the stages of a Sequential are not known"):
        FullFinetune(FullFinetune.Options(freeze_stages=1), RECIPE).fit(
            task, RUNTIME.prepare(Classifier(body, 8, 5)), {}
        )


def test_a_step_budget_trains_that_many_steps_whatever_the_data_size():
    import dataclasses

    from transfer_core.data import Augmentation
    from transfer_core.datasets import Digits, Selection, prepare_dataset
    from transfer_core.runtime import resolve_runtime
    from transfer_core.strategies import TargetTask
    from transfer_core.training import TrainRecipe, train

    runtime = resolve_runtime("cpu")
    steps = {}
    for per_class in (6, 30):  # 1 and 5 batches of 30 per pass: 7 steps are 7 passes, or 2 (the last cut short)
        selection = Selection(classes=(0, 1, 2, 3, 4), per_class=per_class)
        data = prepare_dataset("digits", Digits.Options(), selection, None, False)
        task = TargetTask(data, "resnet8", 0, runtime, Augmentation())
        recipe = dataclasses.replace(TrainRecipe(), batch_size=30, steps=7, epochs=1)
        stats = train(task.new_model(), task.loader("train", True, recipe.batch_size), recipe, runtime)
        steps[per_class] = (stats.steps, stats.images)
    assert steps == {6: (7, 7 * 30), 30: (7, 7 * 30)}
