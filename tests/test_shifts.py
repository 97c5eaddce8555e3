"""Shifts in a suite: parsed, planned (keys), run through the real command line, reported.

The tiny CIFAR-layout data of ``write_cifar10`` (32 px: corruptions need at least 32 px on a side)."""

import json

import pytest
import yaml
from conftest import plan_of as shared_plan_of
from conftest import read_records, run_with_executor, write_cifar10
from test_cli_end_to_end import bench

from bench.pipeline.shifts import CorruptionShift, DatasetShift
from bench.pipeline.suite import SuiteError, expand_cells, parse_suite

CLASSES = ["dog", "frog", "horse", "ship", "truck"]  # cifar10 classes 5-9, in that order


def shifted_suite(root, shifts, **overrides) -> dict:
    suite = {
        "schema_version": 1,
        "name": "shifted",
        "data": {"root": str(root)},
        "source": {"dataset": "cifar10", "classes": [0, 1, 2, 3, 4], "epochs": 1},
        "targets": [{"dataset": "cifar10", "classes": [5, 6, 7, 8, 9], "val_fraction": 0.25, "shifts": shifts}],
        "backbones": ["resnet8"],
        "strategies": {
            "scratch": {"epochs": 1, "lr": [0.01, 0.1, 0.3]},
            "lp_ft": {"epochs": 1},
            "alpha_mix": {"alphas": [0, 0.5, 1]},
        },
        "train": {"batch_size": 32},
        "runtime": {"device": "cpu"},
        "seeds": [0],
    }
    suite.update(overrides)
    return suite


@pytest.fixture
def data_root(tmp_path):
    write_cifar10(tmp_path / "data", per_batch=60, n_test=40)
    return tmp_path / "data"


def plan_of(raw: dict, tmp_path):
    return shared_plan_of(tmp_path, raw, data_root=raw["data"]["root"])


def test_suite_shifts_parse_into_one_shift_per_corruption_and_severity(data_root):
    suite = parse_suite(shifted_suite(data_root, [{"corruptions": ["noise", "contrast"], "severities": [3, 5]}]))
    shifts = suite.targets[0].shifts
    assert [s.label for s in shifts] == [
        f"{name}/{severity}"
        for name in ("gaussian_noise", "shot_noise", "impulse_noise", "contrast")
        for severity in (3, 5)
    ]
    assert all(isinstance(s, CorruptionShift) and s.constants == "auto" for s in shifts)
    every = parse_suite(shifted_suite(data_root, [{"corruptions": "all"}])).targets[0].shifts
    assert len(every) == 15 * 5


@pytest.mark.parametrize(
    "shifts, message",
    [
        ([{"corruptions": ["blurry"]}], "unknown corruption 'blurry'"),
        ([{"corruptions": ["contrast"], "severities": [6]}], "severities: expected a list of integers from 1 to 5"),
        ([{"corruptions": ["contrast"], "dataset": "cifar10"}], "expected a mapping with corruptions"),
        ([{"corruptions": ["contrast"], "strength": 2}], "unknown key 'strength'"),
        (
            [{"corruptions": ["contrast"]}, {"corruptions": ["contrast"], "severities": [1]}],
            "contrast/1 is listed twice",
        ),
        ([{"dataset": "cifar10", "split": "val"}], "split: expected test or train"),
        ({"corruptions": ["contrast"]}, "expected a list"),
    ],
)
def test_bad_shift_entries_are_one_line_errors(data_root, shifts, message):
    with pytest.raises(SuiteError, match=message) as caught:
        parse_suite(shifted_suite(data_root, shifts))
    assert "targets[0].shifts" in str(caught.value)


def test_shifts_change_no_key_but_their_own(data_root, tmp_path):
    """Adding shifts re-evaluates nothing: every model and in-distribution evaluation keeps its key. A shift
    evaluation's settings are its cell's evaluation's plus the shift; a corrupted split is shared by every cell
    of its seed and keyed by the corruption, severity, seed and table."""
    plain = plan_of(shifted_suite(data_root, None), tmp_path)
    corruptions = [{"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 5]}]
    shifted = plan_of(shifted_suite(data_root, corruptions), tmp_path)
    assert set(plain.artifacts) <= set(shifted.artifacts)
    assert [e.key for _, e in plain.cells] == [e.key for _, e in shifted.cells]
    by_cell = {}
    for cell, evaluation in shifted.shifted:
        by_cell.setdefault(cell.cell_id, []).append(evaluation)
    for cell, evaluation in shifted.cells:
        evaluations = by_cell[cell.cell_id]
        assert len(evaluations) == 4 and len({e.key for e in evaluations}) == 4
        for e in evaluations:
            rest = {k: v for k, v in e.settings.items() if k not in ("shift", "grid_scored")}
            assert rest == evaluation.settings
            assert e.evaluation_key == evaluation.key
    corrupted = [a for a in shifted.artifacts.values() if a.kind == "corruption"]
    assert len(corrupted) == 4  # one per shift: shared by the three strategies' cells
    assert {a.settings["constants"] for a in corrupted} == {"cifar"}  # auto, for 32 px
    again = plan_of(shifted_suite(data_root, [{"corruptions": ["contrast"], "severities": [1], "seed": 1}]), tmp_path)
    reseeded = next(a for a in again.artifacts.values() if a.kind == "corruption")
    same = next(a for a in corrupted if a.settings["corruption"] == "contrast" and a.settings["severity"] == 1)
    assert reseeded.key != same.key
    assert {k: v for k, v in reseeded.settings.items() if k != "seed"} == {
        k: v for k, v in same.settings.items() if k != "seed"
    }
    # the baseline's trials are scored on shifts (the effective-robustness fit), others' are not
    for cell, e in shifted.shifted:
        assert len(e.grid) == (3 if cell.strategy.name == "scratch" else 0)


@pytest.mark.slow
def test_a_shifted_dataset_with_other_class_names_is_refused_before_training(data_root, tmp_path):
    raw = shifted_suite(data_root, [{"dataset": "cifar10", "classes": [0, 5], "name": "planes-and-dogs"}])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = bench("run", str(path), "--out", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "planes-and-dogs" in line and "airplane" in line and "not classes of the target" in line
    assert "Traceback" not in result.stderr and not (tmp_path / "out" / "records.jsonl").exists()


@pytest.mark.slow
def test_run_scores_every_model_on_every_shift_and_the_report_shows_it(data_root, tmp_path):
    """End to end: two corruptions and a dataset shift that is the target's own test split with its classes in
    the opposite order (so its labels must be mapped back by name: its top-1 must equal the in-distribution
    top-1 of the same model, image for image). A rerun runs nothing."""
    shifts = [
        {"corruptions": ["gaussian_noise", "contrast"], "severities": [5]},
        {"dataset": "cifar10", "classes": [9, 8, 7, 6, 5], "name": "reversed"},
    ]
    path = tmp_path / "shifted.yaml"
    path.write_text(yaml.safe_dump(shifted_suite(data_root, shifts)))
    first = bench("run", str(path), "--out", "out", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "3 cells run, 9 shift evaluations" in first.stderr
    out = tmp_path / "out"
    cells = read_records(out)
    shifted = [json.loads(line) for line in (out / "shifts.jsonl").read_text().splitlines()]
    assert all(r["status"] == "ok" for r in cells + shifted)
    from bench.results.fields import BY_NAME

    for r in shifted:  # the results contract covers shift records too
        assert all(BY_NAME[name].section == section for section in ("metrics", "compute") for name in r[section])
    # every model of each result: scratch's chosen model and its three trials, LP-FT's, alpha-mix's three alphas
    per_shift = {"scratch": 4, "lp_ft": 1, "alpha_mix": 3}
    for label in ("gaussian_noise/5", "contrast/5", "reversed"):
        for strategy, n in per_shift.items():
            found = [r for r in shifted if r["shift"]["label"] == label and r["strategy"] == strategy]
            assert len(found) == n, (label, strategy)
    # the reversed test split is the test split: the same top-1 and the same images right, model by model
    in_distribution = {(r["strategy"], r["alpha"], json.dumps(r["grid_point"])): r for r in cells}
    for r in shifted:
        if r["shift"]["label"] != "reversed":
            continue
        point = (
            r["grid_point"]
            if r["trial"]
            else next(c["grid_point"] for c in cells if c["strategy"] == r["strategy"] and c["selected"])
        )
        same = in_distribution[(r["strategy"], r["alpha"], json.dumps(point))]
        assert r["metrics"]["test_top1_pct"] == pytest.approx(same["metrics"]["test_top1_pct"])
        assert r["test_correct"] == same["test_correct"]
    report = (out / "report.md").read_text()
    assert "## Out of distribution" in report and "mCA (%)" in report and "reversed (%)" in report
    assert "α-mix on mCA" in report and "oracle choice" in report
    assert (
        (out / "robustness.csv").is_file()
        and (out / "ood_vs_id.png").is_file()
        and (out / "alpha_shift_curve.png").is_file()
    )
    again = bench("run", str(path), "--out", "out", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 cells run, 3 already done" in again.stderr and "shift evaluations" not in again.stderr
    assert len((out / "shifts.jsonl").read_text().splitlines()) == len(shifted)
    # a shift dropped from the suite leaves the report with its old records (the plan lists the shifts it asks for)
    path.write_text(
        yaml.safe_dump(shifted_suite(data_root, [shifts[0] | {"corruptions": ["gaussian_noise"]}, shifts[1]]))
    )
    dropped = bench("run", str(path), "--out", "out", cwd=tmp_path)
    assert dropped.returncode == 0, dropped.stderr
    assert bench("report", "out", "--write", cwd=tmp_path).returncode == 0
    report = (out / "report.md").read_text()
    assert "gaussian_noise/5 (%)" in report and "contrast/5" not in report
    assert "| scratch" in report.split("## Out of distribution")[1]  # the rows stand on the shifts still asked for


def test_dataset_shifts_are_resampled_with_the_target(data_root):
    raw = shifted_suite(
        data_root,
        [{"dataset": "cifar10", "classes": CLASSES, "test_per_class": 2, "name": "few"}],
        data={"root": str(data_root), "resample": "per_seed"},
        seeds=[0, 1],
    )
    cells = expand_cells(parse_suite(raw))
    seeds = {cell.seed: cell.target.shifts[0] for cell in cells}
    assert all(isinstance(s, DatasetShift) for s in seeds.values())
    assert seeds[0].data.selection.seed != seeds[1].data.selection.seed


def _records(strategy, seed, id_top1, ood_top1, key, grid_point=None, selected=True, alpha=None, baseline=False):
    """An in-distribution record and its two corruption records (their mean is ``ood_top1``)."""
    cell = f"s->t/resnet8/{strategy}/seed{seed}"
    common = {"cell_id": cell, "source": "s", "target": "t", "backbone": "resnet8", "strategy": strategy, "seed": seed}
    info = {"baseline": baseline, "table_order": 0 if baseline else 10, "plot_marker": "", "ingredients": []}
    record = {
        **common,
        "config_hash": key,
        "status": "ok",
        "alpha": alpha,
        "grid_point": grid_point,
        "selected": selected,
        "metrics": {"test_top1_pct": id_top1},
        "details": {},
        "strategy_info": info,
    }
    shifted = [
        {
            **common,
            "config_hash": f"{key}-{label}",
            "evaluation_key": key,
            "status": "ok",
            "alpha": alpha,
            "grid_point": grid_point if not selected else None,
            "trial": not selected,
            "shift": {"label": label, "kind": "corruption", "family": family},
            "metrics": {"test_top1_pct": ood_top1 + offset},
        }
        for label, family, offset in (("gaussian_noise/5", "noise", -2.0), ("contrast/5", "digital", 2.0))
    ]
    return [record], shifted


def test_effective_robustness_is_the_gap_above_the_baselines_logit_fit():
    """Baseline models on an exact logit-linear line (logit OOD = 0.5 logit ID - 1), a row 3 points above it on
    every seed: effective robustness +3.00 with no spread; mCA averages the corruptions; Δ mCA is paired."""
    from bench.results.records import strategy_info
    from bench.results.robustness import MCA, robustness

    def on_line(id_top1):
        import math

        p = id_top1 / 100
        return 100 / (1 + math.exp(-(0.5 * math.log(p / (1 - p)) - 1)))

    ids, shifted = [], []
    for seed in (0, 1, 2):
        key = f"scratch{seed}"
        for i, top1 in enumerate((10.0, 20.0, 40.0)):  # two trials and the chosen model
            r, s = _records(
                "scratch", seed, top1 + seed, on_line(top1 + seed), key, {"lr": i}, selected=i == 2, baseline=True
            )
            ids += r
            shifted += s
        r, s = _records("lp_ft", seed, 50.0 + seed, on_line(50.0 + seed) + 3.0, f"lp{seed}")
        ids += r
        shifted += s
    found = robustness(ids, shifted, strategy_info(ids))
    fitted = found.fits[("s", "t", "resnet8")][MCA]
    assert fitted.slope == pytest.approx(0.5, abs=1e-6) and fitted.intercept == pytest.approx(-1.0, abs=1e-6)
    assert len(fitted.points) == 9
    scratch, lp_ft = found.rows
    assert lp_ft.effective_summary(MCA).mean == pytest.approx(3.0, abs=1e-6)
    assert lp_ft.effective_summary(MCA).std == pytest.approx(0.0, abs=1e-6)
    assert scratch.effective_summary(MCA).mean == pytest.approx(0.0, abs=1e-6)
    assert lp_ft.by_seed["noise"][1] == pytest.approx(on_line(51.0) + 1.0)  # its family: that corruption alone
    expected = [on_line(50.0 + s) + 3.0 - on_line(40.0 + s) for s in (0, 1, 2)]
    assert lp_ft.delta_mca.mean == pytest.approx(sum(expected) / 3)


@pytest.mark.slow
def test_corruptions_on_images_too_small_are_refused_before_training(tmp_path):
    from conftest import tiny_suite

    raw = tiny_suite()  # scikit-learn's 8x8 digits
    raw["targets"][0]["shifts"] = [{"corruptions": ["contrast"], "severities": [1]}]
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = bench("run", str(path), "--out", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "corruptions need test images of at least 32 px on a side, and its are 8 px" in result.stderr
    assert not (tmp_path / "out" / "records.jsonl").exists()


@pytest.mark.slow
def test_shift_evaluations_on_ray_give_the_local_executors_records(data_root, tmp_path):
    """Corrupted splits and shift evaluations built in Ray workers: the same records, number for number, as in
    one process (one thread per artifact in both, so float sums run in the same order)."""
    ray = pytest.importorskip("ray")  # CI installs it and fails without it (.ci/run)
    from bench.results.records import SHIFT_RECORDS, ResultsStore

    suite = parse_suite(shifted_suite(data_root, [{"corruptions": ["contrast", "frost"], "severities": [5]}]))

    def shift_records(executor_name: str, folder) -> dict:
        _, summary, _ = run_with_executor(folder, suite, executor_name, data_root=suite.data.root, threads=1)
        assert summary.shifted == 6
        found = ResultsStore(folder / "out", SHIFT_RECORDS).read()
        return {
            (r["cell_id"], r["shift"]["label"], r["alpha"], json.dumps(r["grid_point"])): (
                r["status"],
                r["metrics"],
                r["test_correct"],
            )
            for r in found
        }

    local = shift_records("local", tmp_path / "local")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")  # never another run's
    try:
        on_ray = shift_records("ray", tmp_path / "ray")
    finally:
        ray.shutdown()
    assert len(local) == 2 * (4 + 1 + 3) and on_ray == local
