"""Equal-budget tuning (every strategy that trains gets the same number of trials from its search space) and
refit (the chosen settings retrained on train + validation before the test evaluation)."""

import math

import pytest
from conftest import run_suite, tiny_suite

from bench.pipeline.suite import SuiteError, parse_suite
from bench.results.records import latest_records
from bench.results.report import grid_table, summarise_rows
from transfer_core.runtime import resolve_runtime
from transfer_core.strategies import STRATEGIES


def tuned(tuning: dict, **strategies) -> dict:
    return tiny_suite(
        strategies=strategies or {"scratch": {"epochs": 1}, "full_finetune": {"epochs": 1}}, tuning=tuning
    )


def test_every_strategy_that_trains_gets_the_same_number_of_distinct_trials_drawn_from_its_space():
    raw = tuned({"trials": 5}, scratch={}, l2_sp={}, alpha_mix={})  # alpha_mix: lp_ft and the probe as ingredients
    suite = parse_suite(raw)
    for name in ("scratch", "l2_sp", "lp_ft"):
        spec = suite.strategy(name)
        points = [p.point for p in spec.points()]
        assert len(points) == 5 and len({repr(p) for p in points}) == 5, name
        for point in points:  # inside the strategy's declared space
            assert set(point) == set(STRATEGIES.get(name).search_space)
            if "lr" in point:
                low, high = STRATEGIES.get(name).search_space["lr"]["log"]
                assert low <= point["lr"] <= high
        assert [p.recipe.lr for p in spec.points()] == [p["lr"] for p in points]
        # a Latin hypercube: one learning rate in each fifth of the range, on its log scale
        low, high = STRATEGIES.get(name).search_space["lr"]["log"]
        fifths = sorted(int(5 * math.log(p["lr"] / low) / math.log(high / low) - 1e-9) for p in points)
        assert fifths == [0, 1, 2, 3, 4], name
    assert all(p["sp_weight"] in (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0) for p in suite.strategy("l2_sp").trials)
    # the L-BFGS probe sweeps its own L2 strength; alpha-mix trains nothing: neither gets trials
    assert not suite.strategy("linear_probe").trials and not suite.strategy("alpha_mix").trials
    # seeded: the same suite draws the same points; another tuning seed draws others
    assert parse_suite(raw).strategy("scratch").trials == suite.strategy("scratch").trials
    reseeded = parse_suite(tuned({"trials": 5, "seed": 1}, scratch={}))
    assert reseeded.strategy("scratch").trials != suite.strategy("scratch").trials


def test_the_space_is_overridden_setting_by_setting_and_grid_search_takes_exactly_the_budget():
    suite = parse_suite(tuned({"trials": 3, "space": {"full_finetune": {"lr": [0.01, 0.02, 0.03]}}}))
    points = suite.strategy("full_finetune").trials
    assert sorted(p["lr"] for p in points) == [0.01, 0.02, 0.03]  # 3 trials of 3 choices: each once
    assert all(1e-6 <= p["weight_decay"] <= 1e-3 for p in points)  # the default range for the rest
    grid = tuned(
        {
            "trials": 2,
            "search": "grid",
            "space": {"scratch": {"lr": [0.1, 0.2], "weight_decay": [0.0]}, "full_finetune": {"lr": [0.01, 0.05]}},
        }
    )
    with pytest.raises(SuiteError, match="weight_decay: search: grid takes lists of values"):
        parse_suite(grid)  # full_finetune's weight decay is still the default range
    grid["tuning"]["space"]["full_finetune"]["weight_decay"] = [0.0]
    suite = parse_suite(grid)
    assert [p["lr"] for p in suite.strategy("scratch").trials] == [0.1, 0.2]


@pytest.mark.parametrize(
    "tuning, strategies, message",
    [
        ({"trials": 2, "space": {"alpha_mix": {"lr": [0.1]}}}, None, "tuning.space.alpha_mix: not a strategy"),
        ({"trials": 2, "space": {"scratch": {"sp_weight": [0.1]}}}, None, "scratch has no such setting"),
        ({"trials": 4, "space": {"scratch": {"lr": [0.1, 0.2], "weight_decay": [0.0]}}}, None, "2 distinct points"),
        ({"trials": 2, "space": {"scratch": {"lr": {"log": [0, 1]}}}}, None, "low > 0"),
        ({"trials": 2, "space": {"scratch": {"lr": [-0.1, 0.1]}}}, None, "trial"),
        (
            {"trials": 3, "search": "grid", "space": {"scratch": {"lr": [0.1, 0.2], "weight_decay": [0.0]}}},
            {"scratch": {}},
            "has 2 points",
        ),
        ({"trials": 2}, {"full_finetune": {"lr": [0.01, 0.1]}}, "set its search space in tuning.space"),
        ({"trials": 2, "budget": 3}, None, "tuning.budget: unknown key"),
    ],
)
def test_tuning_mistakes_are_one_line_errors(tuning, strategies, message):
    raw = tuned(tuning, **(strategies or {}))
    with pytest.raises(SuiteError, match=message):
        parse_suite(raw)


def test_refit_needs_a_validation_split():
    raw = tuned({"refit": True})
    raw["targets"][0]["val_fraction"] = 0
    with pytest.raises(SuiteError, match="refit retrains the chosen settings on train"):
        parse_suite(raw)


def run(tmp_path, raw: dict) -> list[dict]:
    return run_suite(tmp_path, raw)[1]


def test_refit_retrains_the_chosen_trial_on_train_and_validation_and_is_the_row(tmp_path, monkeypatch):
    from transfer_core.strategies import TargetTask

    train_sizes = []
    fit_sizes = TargetTask.__init__

    def spying_init(self, target, *args, **kwargs):
        train_sizes.append((len(target.train), target.val is not None))
        fit_sizes(self, target, *args, **kwargs)

    monkeypatch.setattr(TargetTask, "__init__", spying_init)
    probe_fits = []
    probe_fit = STRATEGIES.get("linear_probe").fit

    def spying_probe_fit(self, task, source, ingredients):
        fitted = probe_fit(self, task, source, ingredients)
        has_val = task.target.val is not None
        probe_fits.append(
            (len(self.options.l2_grid), has_val, fitted.details) if has_val else (self.options.l2_grid, False)
        )
        return fitted

    monkeypatch.setattr(STRATEGIES.get("linear_probe"), "fit", spying_probe_fit)
    raw = tuned({"trials": 2, "refit": True}, scratch={"epochs": 1}, lp_ft={"epochs": 1}, alpha_mix={})
    records = run(tmp_path, raw)
    # 24 per class over 5 classes: 90 train + 30 validation; a refit trains on all 120, with no validation
    assert (120, False) in train_sizes and (90, True) in train_sizes

    for strategy in ("scratch", "lp_ft"):
        mine = [r for r in records if r["strategy"] == strategy]
        trials = [r for r in mine if not r["details"].get("refit")]
        (refit,) = [r for r in mine if r["details"].get("refit")]
        assert len(trials) == 2 and not any(r["selected"] for r in trials) and refit["selected"]
        grid = {repr(g["point"]): g["val_top1_pct"] for g in refit["details"]["grid"]}
        best = max(grid.values())
        # the refit retrains the trial best on validation, and its record carries that trial's validation score
        assert grid[repr(refit["grid_point"])] == best == refit["metrics"]["val_top1_pct"]
        assert refit["details"]["refit_images"] == 120
        # its compute: every trial, then the refit (LP-FT's: its probe's fit and refit too)
        own_s = sum(r["details"]["grid_point_train_s"] for r in trials) + refit["details"]["refit_train_s"]
        # the trials' own records carry the search that chose among them, without the refit
        search_s = sum(r["details"]["grid_point_train_s"] for r in trials)
        assert refit["compute"]["target_train_s"] > search_s
        if strategy == "scratch":
            assert refit["compute"]["target_train_s"] == pytest.approx(own_s)
            assert all(r["compute"]["target_train_s"] == pytest.approx(search_s) for r in trials)
            # validation work in FLOPs too: two trials scored, then the chosen one scored again before its refit
            import torch

            from transfer_core.backbones import create_backbone
            from transfer_core.training import count_flops_per_image

            runtime = resolve_runtime("cpu")
            network = runtime.prepare(create_backbone("resnet8", 5, 1)).eval()
            one_pass = count_flops_per_image(network, torch.zeros(8, 1, 8, 8), False, runtime) * 30
            assert refit["compute"]["target_selection_flops"] == pytest.approx(3 * one_pass)
            assert all(r["compute"]["target_selection_flops"] == pytest.approx(2 * one_pass) for r in trials)
        else:
            assert refit["compute"]["target_train_s"] > own_s
    # LP-FT's refit starts from the probe refit at the L2 strength the probe chose on validation
    (chose, refit_probe) = probe_fits
    assert chose[0] > 1 and chose[1] and refit_probe == ([chose[2]["l2"]], False)
    assert chose[2]["val_top1_pct_by_l2"][f"{chose[2]['l2']:g}"] == max(chose[2]["val_top1_pct_by_l2"].values())
    # alpha-mix chooses alpha on validation: it mixes the models chosen there, not refit ones
    assert not any(r["details"].get("refit") for r in records if r["strategy"] == "alpha_mix")
    rows = {r.strategy: r for r in summarise_rows(latest_records(records))}
    assert rows["scratch"].top1.mean == next(
        r["metrics"]["test_top1_pct"] for r in records if r["strategy"] == "scratch" and r["selected"]
    )
    # the refit is a candidate of its own: the latest records keep it beside the trial it retrained
    assert len([r for r in latest_records(records) if r["strategy"] == "scratch"]) == 3
    # the grid table shows each trial as trained, and counts the one the refit retrained as selected
    lines = [line for line in grid_table(latest_records(records)).splitlines()[2:] if "scratch" in line]
    assert sorted(line.split("|")[7].strip() for line in lines) == ["0 of 1", "1 of 1"]


def test_refit_without_a_search_retrains_the_one_fit_and_keeps_the_probes_choice(tmp_path):
    records = run(tmp_path, tuned({"refit": True}, linear_probe={}))
    (probe,) = records
    assert probe["details"]["refit"] and probe["selected"] and probe["details"]["refit_images"] == 120
    by_l2 = probe["details"]["val_top1_pct_by_l2"]
    assert probe["metrics"]["val_top1_pct"] == by_l2[f"{probe['details']['l2']:g}"] == max(by_l2.values())


def test_a_space_the_strategy_does_not_read_and_a_space_for_the_lbfgs_probe_are_refused():
    sgd_probe = tuned(
        {"trials": 2, "space": {"linear_probe": {"max_iter": [100, 200]}}}, linear_probe={"solver": "sgd"}
    )
    with pytest.raises(SuiteError, match="does not read every setting"):
        parse_suite(sgd_probe)
    lbfgs_probe = tuned({"trials": 2, "space": {"linear_probe": {"max_iter": [100, 200]}}}, linear_probe={})
    with pytest.raises(SuiteError, match="the L-BFGS probe gets no trials"):
        parse_suite(lbfgs_probe)


def test_trials_without_refit_need_a_validation_split():
    raw = tuned({"trials": 2}, scratch={"epochs": 1})
    raw["targets"][0]["val_fraction"] = 0
    with pytest.raises(SuiteError, match="chooses on validation data"):
        parse_suite(raw)
