"""Strategies trained over a grid of settings: every point trained and recorded, the best on validation selected."""

import copy

import pytest
from conftest import plan_of, run_suite, tiny_suite

from bench.pipeline.build import Builder
from bench.pipeline.plan import FittedArtifact, SelectionArtifact
from bench.pipeline.runner import Runner
from bench.pipeline.suite import SuiteError, expand_cells, parse_suite
from bench.results.compare import compare, parse_thresholds
from bench.results.records import candidate, latest_records
from bench.results.report import grid_table, summarise_rows
from transfer_core.runtime import resolve_runtime
from transfer_core.strategies import STRATEGIES, TargetTask

LR_GRID = [0.005, 0.05, 0.5]


def grid_suite(**strategies) -> dict:
    return tiny_suite(strategies=strategies or {"full_finetune": {"epochs": 2, "lr": LR_GRID}})


run = run_suite


# --- parsing ---------------------------------------------------------------------------------------


def test_list_valued_keys_make_a_grid_of_every_combination():
    suite = parse_suite(grid_suite(full_finetune={"lr": [0.01, 0.1], "weight_decay": [0, 5e-4], "epochs": 2}))
    spec = suite.strategy("full_finetune")
    points = spec.points()
    assert [p.point for p in points] == [
        {"lr": 0.01, "weight_decay": 0.0},
        {"lr": 0.01, "weight_decay": 5e-4},
        {"lr": 0.1, "weight_decay": 0.0},
        {"lr": 0.1, "weight_decay": 5e-4},
    ]
    assert [(p.recipe.lr, p.recipe.weight_decay, p.recipe.epochs) for p in points] == [
        (0.01, 0.0, 2),
        (0.01, 5e-4, 2),
        (0.1, 0.0, 2),
        (0.1, 5e-4, 2),
    ]
    assert (spec.recipe.lr, spec.recipe.weight_decay) == (0.01, 0.0)  # the spec itself holds the first point
    # a strategy's own options are grid keys too
    l2_sp = parse_suite(grid_suite(l2_sp={"sp_weight": [0.001, 0.1]})).strategy("l2_sp")
    assert [p.options.sp_weight for p in l2_sp.points()] == [0.001, 0.1]


@pytest.mark.parametrize("name", [n for n in STRATEGIES.names() if STRATEGIES.get(n).trains])
def test_every_strategy_that_trains_takes_a_grid(tmp_path, name):
    key, values = ("max_iter", [5, 10]) if name == "linear_probe" else ("lr", [0.01, 0.1])
    plan = plan_of(tmp_path, grid_suite(**{name: {key: values}}))
    fitted = [a for a in plan.artifacts.values() if isinstance(a, FittedArtifact) and a.strategy.name == name]
    selections = [a for a in plan.artifacts.values() if isinstance(a, SelectionArtifact)]
    assert [a.strategy.point for a in fitted] == [{key: v} for v in values]
    assert len(selections) == 1 and set(selections[0].deps) == {a.key for a in fitted}
    ((cell, evaluation),) = plan.cells
    assert [point for point, _ in evaluation.grid] == [{key: v} for v in values]
    assert selections[0].key in evaluation.deps


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda s: s["strategies"].update(full_finetune={"lr": []}),
            "strategies.full_finetune.lr: a grid needs a non-empty list",
        ),
        (lambda s: s["strategies"].update(full_finetune={"lr": [0.1, 0.1]}), "of different values"),
        (
            lambda s: s["strategies"].update(full_finetune={"lr": [0.1, -1]}),
            "strategies.full_finetune.lr[1]: -1.0 is outside",
        ),
        (
            lambda s: s["strategies"].update(full_finetune={"lr": [0.1, "fast"]}),
            "strategies.full_finetune.lr[1]: expected a number",
        ),
        (
            lambda s: s["train"].update(lr=[0.1, 0.2]),
            "train.lr: a list of values is a grid, and grids belong in a strategy's section",
        ),
        (lambda s: s["source"].update(lr=[0.1, 0.2]), "source.lr: a list of values is a grid"),
        (
            lambda s: s["strategies"].update(alpha_mix={"space": ["weights", "logits"]}),
            "alpha_mix trains nothing itself, so it has no grid",
        ),
        (
            lambda s: s["strategies"].update(linear_probe={"lr": [0.01, 0.1]}),
            "linear_probe does not read lr with these settings",
        ),
        (
            lambda s: (
                s.update(strategies={"full_finetune": {"lr": [0.01, 0.1]}}),
                s["targets"][0].update(val_fraction=0),
            ),
            "targets[0].val_fraction: full_finetune chooses on validation data",
        ),
    ],
)
def test_grid_mistakes_are_one_line_errors(mutate, expected):
    raw = tiny_suite()
    mutate(raw)
    with pytest.raises(SuiteError) as error:
        parse_suite(raw)
    assert expected in str(error.value)


# --- the plan ----------------------------------------------------------------------------------------


def test_a_grid_point_is_the_same_model_as_that_setting_alone_and_the_choice_never_reads_the_test_split(tmp_path):
    plan = plan_of(tmp_path, grid_suite())
    alone = plan_of(tmp_path, grid_suite(full_finetune={"epochs": 2, "lr": 0.05}))
    point_keys = {a.strategy.point["lr"]: a.key for a in plan.artifacts.values() if isinstance(a, FittedArtifact)}
    ((_, single),) = [(k, a) for k, a in alone.artifacts.items() if isinstance(a, FittedArtifact)]
    assert point_keys[0.05] == single.key  # a grid reuses what a run of one of its settings trained
    # more test images: the evaluation changes, the selection (validation only) and the models do not
    bigger_test = grid_suite()
    bigger_test["targets"][0]["test_per_class"] = 20
    other = plan_of(tmp_path, bigger_test)

    def keys(p, cls):
        return {a.key for a in p.artifacts.values() if isinstance(a, cls)}

    assert keys(other, SelectionArtifact) == keys(plan, SelectionArtifact)
    assert keys(other, FittedArtifact) == keys(plan, FittedArtifact)
    assert plan.cells[0][1].key != other.cells[0][1].key


# --- running -----------------------------------------------------------------------------------------


def test_every_point_is_recorded_and_the_best_on_validation_selected_from_validation_only(tmp_path, monkeypatch):
    splits_read_choosing = []
    choosing = []
    select, loader = Builder._selection, TargetTask.loader

    def spying_selection(self, *args, **kwargs):
        choosing.append(True)
        try:
            return select(self, *args, **kwargs)
        finally:
            choosing.pop()

    def spying_loader(self, split, *args, **kwargs):
        if choosing:
            splits_read_choosing.append(split)
        return loader(self, split, *args, **kwargs)

    monkeypatch.setattr(Builder, "_selection", spying_selection)
    monkeypatch.setattr(TargetTask, "loader", spying_loader)
    runner, records = run(tmp_path, grid_suite())
    assert set(splits_read_choosing) == {"val"}  # the choice read validation data, and nothing else

    assert [r["grid_point"] for r in records] == [{"lr": lr} for lr in LR_GRID]
    assert [candidate(r) for r in records] == [f"lr={lr:g}" for lr in LR_GRID]
    vals = [r["metrics"]["val_top1_pct"] for r in records]
    selected = [r for r in records if r["selected"]]
    assert len(selected) == 1
    assert selected[0]["metrics"]["val_top1_pct"] == max(vals)
    assert records.index(selected[0]) == vals.index(max(vals))  # ties: the earliest point
    # the whole grid is the strategy's compute: every record carries it, and each point's own time is in its details
    images = {r["compute"]["target_images"] for r in records}
    per_point = [r["details"]["grid_point_train_s"] for r in records]
    assert len(images) == 1 and all(s > 0 for s in per_point)
    assert records[0]["compute"]["target_train_s"] == pytest.approx(sum(per_point))
    assert records[0]["compute"]["target_selection_s"] > 0
    # and its forward passes: each point scored once on validation, the same network: three equal passes
    assert records[0]["compute"]["target_selection_flops"] > 0
    grid = selected[0]["details"]["grid"]
    assert [g["point"] for g in grid] == [{"lr": lr} for lr in LR_GRID]
    # every point's validation top-1 as the selection scored it is what its record says
    assert [g["val_top1_pct"] for g in grid] == pytest.approx(vals)
    (row,) = summarise_rows(latest_records(records))
    assert row.label == f"full_finetune ({candidate(selected[0])})"
    assert row.top1.mean == selected[0]["metrics"]["test_top1_pct"]
    lines = grid_table(records).splitlines()[2:]  # every point, in the grid's order, the selected one counted
    assert [line.split("|")[4].strip() for line in lines] == [f"lr={lr:g}" for lr in LR_GRID]
    assert [line.split("|")[7].strip() for line in lines] == ["1 of 1" if r["selected"] else "0 of 1" for r in records]


def test_a_strategy_built_from_a_grid_takes_the_selected_point_and_pays_for_the_whole_grid(tmp_path):
    raw = grid_suite(lp_ft={"epochs": 2, "lr": [0.001, 0.05]}, alpha_mix={"alphas": [0, 1]})
    _, records = run(tmp_path, raw)
    lp_ft = [r for r in records if r["strategy"] == "lp_ft"]
    mix = {r["alpha"]: r for r in records if r["strategy"] == "alpha_mix"}
    chosen = next(r for r in lp_ft if r["selected"])
    # alpha = 1 is the fine-tuned end: the lp_ft point selected on validation, exactly
    assert mix[1.0]["metrics"]["test_top1_pct"] == chosen["metrics"]["test_top1_pct"]
    # its cost: the probe and every lp_ft point, each once (as lp_ft's own records count them)
    assert mix[1.0]["compute"]["target_images"] == chosen["compute"]["target_images"]
    assert mix[1.0]["compute"]["target_train_s"] == pytest.approx(chosen["compute"]["target_train_s"])


def test_a_rerun_of_a_grid_trains_nothing(tmp_path, monkeypatch):
    runner, records = run(tmp_path, grid_suite())
    import bench.pipeline.build
    import transfer_core.strategies.base as base

    def no_training(*args, **kwargs):
        raise AssertionError("a rerun must not train")

    for module in (bench.pipeline.build, base):
        monkeypatch.setattr(module, "train", no_training)
    again = Runner(
        runner.suite,
        tmp_path / "data",
        tmp_path / "out",
        tmp_path / "cache",
        resolve_runtime("cpu"),
        log=lambda m: None,
        force=True,
    )
    assert not again.run(expand_cells(runner.suite)).failed
    rerun = again.store.read()[len(records) :]
    assert [(r["grid_point"], r["selected"], r["metrics"]) for r in rerun] == [
        (r["grid_point"], r["selected"], r["metrics"]) for r in records
    ]


# --- comparing -----------------------------------------------------------------------------------------


def test_a_changed_grid_point_is_its_own_verdict_and_points_are_matched_one_by_one():
    def record(lr, selected, top1):
        return {
            "cell_id": "a->b/resnet8/full_finetune/seed0",
            "source": "a",
            "target": "b",
            "backbone": "resnet8",
            "strategy": "full_finetune",
            "seed": 0,
            "alpha": None,
            "grid_point": {"lr": lr},
            "selected": selected,
            "status": "ok",
            "config_hash": "h",
            "metrics": {"test_top1_pct": top1},
            "compute": {},
            "provenance": {"device_name": "cpu"},
        }

    base = [record(0.01, True, 50.0), record(0.1, False, 40.0)]
    new = [record(0.01, False, 50.0), record(0.1, True, 52.0)]
    assert len(latest_records(base + new)) == 2  # one identity per point
    comparison = compare(base, new, parse_thresholds("top1:-0.5pp"))
    changed = [c for c in comparison.changes if c.verdict == "selection changed"]
    assert len(changed) == 1 and changed[0].metric == "selected grid point" and changed[0].note == "lr=0.01 → lr=0.1"
    # accuracy is judged on what each run selected (50.0 at lr 0.01, then 52.0 at lr 0.1), not point by point
    judged = [(c.candidate, c.verdict) for c in comparison.changes if c.metric == "test_top1_pct"]
    assert judged == [("selected", "improved")]
    assert not comparison.failed
    unchanged = compare(base, copy.deepcopy(base), parse_thresholds("top1:-0.5pp"))
    assert not [c for c in unchanged.changes if c.verdict == "selection changed"]


def test_build_plan_names_each_point(tmp_path):
    plan = plan_of(tmp_path, grid_suite())
    names = sorted(a.name for a in plan.artifacts.values() if isinstance(a, FittedArtifact))
    assert names == sorted(f"full_finetune[lr={lr:g}] digits[0-4]->digits[5-9]/resnet8/seed0" for lr in LR_GRID)


def test_a_failed_trial_is_a_result_and_the_strategy_fails_only_when_every_trial_did(tmp_path):
    # lr 1e5 diverges; lr 0.05 trains: the search stands on the trial that trained
    _, records = run(tmp_path / "one", grid_suite(full_finetune={"epochs": 2, "lr": [0.05, 1e5]}))
    by_lr = {r["grid_point"]["lr"]: r for r in records}
    assert by_lr[1e5]["status"] == "diverged" and not by_lr[1e5]["selected"] and by_lr[1e5]["error"]
    assert by_lr[0.05]["status"] == "ok" and by_lr[0.05]["selected"]
    scored = {g["point"]["lr"]: g for g in by_lr[0.05]["details"]["grid"]}
    assert scored[1e5]["val_top1_pct"] is None and scored[1e5]["status"] == "diverged"
    (row,) = summarise_rows(latest_records(records))
    assert row.top1 is not None and not row.failed  # the row is the selected trial's, not failed
    # every trial diverges: the strategy does
    suite = parse_suite(grid_suite(full_finetune={"epochs": 2, "lr": [1e4, 1e5]}))
    runner = Runner(
        suite, tmp_path / "data", tmp_path / "all", tmp_path / "cache", resolve_runtime("cpu"), log=lambda m: None
    )
    summary = runner.run(expand_cells(suite))
    assert len(summary.failed) == 1
    assert {r["status"] for r in runner.store.read() if r["selected"]} == {"diverged"}
