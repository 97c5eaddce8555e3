"""Shifts in a suite: parsed, planned (keys), run through the real command line, reported.

The tiny CIFAR-layout data of ``write_cifar10`` (32 px: corruptions need at least 32 px on a side)."""

import json
import math

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


def test_recent_reads_keep_the_latest_within_their_byte_budget():
    from bench.pipeline.recent import Recent

    loads = []

    def loader(name):
        return lambda: loads.append(name) or name

    recent = Recent(max_bytes=10)
    size = {"a": 4, "b": 4, "c": 4, "huge": 11}.get
    assert [recent.get((n,), loader(n), size) for n in ("a", "b", "a", "c", "a", "b", "huge", "huge")] == [
        "a",
        "b",
        "a",
        "c",
        "a",
        "b",
        "huge",
        "huge",
    ]
    # "c" pushed out "b" (least recently used, "a" was read since), "b" again pushed out "c"; "huge" never fits
    assert loads == ["a", "b", "c", "b", "huge", "huge"] and (recent.hits, recent.misses) == (2, 6)


def test_a_cells_shift_evaluations_read_each_model_and_corrupted_split_once(data_root, tmp_path, monkeypatch):
    """Three shifts of three cells: each model a shift evaluation scores, and each corrupted split, is read from
    the cache once (not once per shift, nor per cell). Read every time instead (no memory kept), the records are
    the same number for number, and ``shift_eval_s`` still leaves the reading out."""
    import time
    from collections import Counter

    from conftest import run_suite

    from bench.pipeline import recent
    from bench.pipeline.build import Builder
    from transfer_core.cache import ModelCache

    reads, inside = Counter(), []
    shift_evaluation, load = Builder._shift_evaluation, ModelCache.load  # every read of the cache is a load

    def counted_shift_evaluation(self, artifact, inputs):
        inside.append(artifact)
        try:
            return shift_evaluation(self, artifact, inputs)
        finally:
            inside.pop()

    def counted_load(self, kind, key):
        reads[(kind, key)] += bool(inside)
        return load(self, kind, key)

    monkeypatch.setattr(Builder, "_shift_evaluation", counted_shift_evaluation)
    monkeypatch.setattr(ModelCache, "load", counted_load)
    raw = shifted_suite(data_root, [{"corruptions": ["contrast"], "severities": [1, 3, 5]}])
    runner, _ = run_suite(tmp_path, raw, data_root=data_root)
    shift_file = tmp_path / "out" / "shifts.jsonl"
    kept = runner.stores["shifts.jsonl"].read()
    assert len({r["config_hash"] for r in kept}) == 9  # 3 cells x 3 shifts
    read_in_shifts = {k: n for k, n in reads.items() if n}
    assert sum(kind == "corrupted" for kind, _ in read_in_shifts) == 3
    # scratch's 3 trials (its row is one of them), LP-FT's, and α-mix's two ends (the probe, LP-FT's again)
    assert sum(kind == "models" for kind, _ in read_in_shifts) >= 5
    assert set(read_in_shifts.values()) == {1}, read_in_shifts

    # again with nothing kept, and a clock that jumps 100 s at every read: the same records, scoring timed alone
    shift_file.rename(tmp_path / "kept.jsonl")
    monkeypatch.setattr(recent, "RECENT_BYTES", 0)
    clock, jumps = time.perf_counter, []

    def jumping_load(self, kind, key):
        jumps.append(100.0)
        return load(self, kind, key)

    monkeypatch.setattr(ModelCache, "load", jumping_load)
    monkeypatch.setattr(time, "perf_counter", lambda: clock() + sum(jumps))
    runner, _ = run_suite(tmp_path, raw, data_root=data_root)
    monkeypatch.setattr(time, "perf_counter", clock)
    again = runner.stores["shifts.jsonl"].read()
    assert len(jumps) > len(read_in_shifts)  # read once per shift evaluation now

    def numbers(records):
        return {
            (r["config_hash"], r["alpha"], json.dumps(r["grid_point"])): (r["metrics"], r["test_correct"])
            for r in records
        }

    assert numbers(again) == numbers(kept)
    assert all(0 < r["compute"]["shift_eval_s"] < 100 for r in again)


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


def _records(
    strategy, seed, id_top1, ood_top1, key, grid_point=None, selected=True, alpha=None, baseline=False, refit=False
):
    """An in-distribution record and its two corruption records (their mean is ``ood_top1``), as the builder
    writes them: a tuning trial's shift records carry its grid point, a refit or an α's do not."""
    trial = grid_point is not None and not selected
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
        "details": {"refit": True} if refit else {},
        "strategy_info": info,
    }
    shifted = [
        {
            **common,
            "config_hash": f"{key}-{label}",
            "evaluation_key": key,
            "status": "ok",
            "alpha": alpha,
            "grid_point": grid_point if trial else None,
            "trial": trial,
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


def test_effective_robustness_with_a_refit_baseline_and_alpha_mix_rows():
    """The baseline refit on train + validation after its search: the fit runs through its trials and its refit
    models (each scored on the shifts), and its row is the refit model. α-mix: every α on the curve, the row
    at the α chosen on validation (not the best on the shift), and none of its models in the baseline's fit."""
    from bench.results.records import strategy_info
    from bench.results.robustness import MCA, robustness

    def on_line(id_top1):  # logit OOD = 0.8 logit ID - 0.5
        p = id_top1 / 100
        return 100 / (1 + math.exp(-(0.8 * math.log(p / (1 - p)) - 0.5)))

    ids, shifted = [], []
    for seed in (0, 1, 2):
        key = f"scratch{seed}"
        for i, top1 in enumerate((8.0, 15.0, 30.0)):  # three trials, none of them the row
            r, s = _records(
                "scratch", seed, top1 + seed, on_line(top1 + seed), key, {"lr": i}, selected=False, baseline=True
            )
            ids += r
            shifted += s
        # the refit at the best trial's setting: a fourth model, 2 points above the line
        r, s = _records(
            "scratch", seed, 33.0 + seed, on_line(33.0 + seed) + 2.0, key, {"lr": 2}, baseline=True, refit=True
        )
        ids += r
        shifted += s
        for alpha, top1, above in ((0.0, 40.0, 1.0), (0.5, 48.0, 4.0), (1.0, 45.0, 9.0)):  # validation chose 0.5
            r, s = _records(
                "alpha_mix", seed, top1 + seed, on_line(top1 + seed) + above, f"mix{seed}", None, alpha == 0.5, alpha
            )
            ids += r
            shifted += s
    found = robustness(ids, shifted, strategy_info(ids))
    fitted = found.fits[("s", "t", "resnet8")][MCA]
    assert len(fitted.points) == 12  # 3 seeds x (3 trials + the refit), no α-mix model
    assert sorted(p[0] for p in fitted.points) == sorted(t + s for s in (0, 1, 2) for t in (8.0, 15.0, 30.0, 33.0))
    scratch, mix = found.rows
    assert scratch.strategy == "scratch" and mix.strategy == "alpha_mix" and mix.alphas == {0.5}
    assert scratch.id_by_seed == {s: 33.0 + s for s in (0, 1, 2)}  # the refit model is the row
    # the fit is pulled toward the refit points (2 above the trials' line): both rows' gap is measured from it
    for s in (0, 1, 2):
        assert scratch.effective[MCA][s] == pytest.approx(on_line(33.0 + s) + 2.0 - fitted.predict(33.0 + s))
        assert mix.effective[MCA][s] == pytest.approx(on_line(48.0 + s) + 4.0 - fitted.predict(48.0 + s))
    assert 0.5 < scratch.effective_summary(MCA).mean < 2.0  # above the trials, part of it absorbed by the fit
    assert mix.by_seed[MCA] == {s: pytest.approx(on_line(48.0 + s) + 4.0) for s in (0, 1, 2)}  # not α=1's +9
    curve = found.alpha_points[("s", "t", "resnet8")]
    assert sorted(curve) == [0.0, 0.5, 1.0]
    assert curve[1.0]["in distribution"] == {s: 45.0 + s for s in (0, 1, 2)}
    assert curve[1.0][MCA][2] == pytest.approx(on_line(47.0) + 9.0)  # the curve still shows α=1 was best there


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
