"""bench compare: thresholds that know each metric's direction, verdicts, exit codes, and the CI recipe
catching regressions injected into the training code."""

import math
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO, read_records, tiny_suite

from bench.cli import main
from bench.results.compare import CompareError, compare, parse_thresholds, render_summary
from bench.results.fields import DIRECTIONS
from bench.results.records import ResultsStore
from bench.results.stats import correct_bits


def record(seed=0, strategy="scratch", status="ok", config_hash=None, device="cpu-x", **values):
    metrics = {k: v for k, v in values.items() if k.endswith("_pct")}
    compute = {k: v for k, v in values.items() if not k.endswith("_pct")}
    return {
        "schema_version": 1,
        "cell_id": f"a->b/resnet8/{strategy}/seed{seed}",
        "source": "a",
        "target": "b",
        "backbone": "resnet8",
        "strategy": strategy,
        "seed": seed,
        "alpha": None,
        "status": status,
        "error": None if status == "ok" else "boom",
        "config_hash": config_hash or f"{strategy}{seed}",
        "metrics": metrics,
        "compute": compute,
        "provenance": {"device_name": device},
    }


def verdicts(comparison) -> dict:
    return {(c.cell_id, c.metric): c.verdict for c in comparison.changes}


def test_thresholds_parse_with_aliases_units_and_direction_checks():
    top1, speed, seconds = parse_thresholds("top1:-0.5pp, target_img_per_s:-5%,target_train_s:+10")
    assert (top1.metric, top1.amount, top1.unit, top1.direction) == ("test_top1_pct", 0.5, "pp", "higher")
    assert (speed.unit, speed.direction) == ("%", "higher") and (seconds.unit, seconds.direction) == ("", "lower")
    assert parse_thresholds("target_train_s:10%")[0].amount == 10  # an unsigned amount is a magnitude
    for spec, message in [
        ("top1:+0.5pp", "a regression is a drop; write top1:-0.5pp"),
        ("target_train_s:-5%", "a regression is a rise; write target_train_s:+5%"),
        ("target_train_s:+1pp", "pp (percentage points) is for percentages"),
        ("accuracy:-1pp", "unknown metric 'accuracy'"),
        ("top1=-1", "cannot read"),
        ("", "no thresholds"),
    ]:
        with pytest.raises(CompareError, match=re.escape(message)):
            parse_thresholds(spec)


@pytest.mark.parametrize("metric", sorted(DIRECTIONS))
def test_every_metric_fails_when_worse_and_passes_when_better(metric):
    higher = DIRECTIONS[metric] == "higher"
    base = [record(**{metric: 100.0})]
    threshold = parse_thresholds(f"{metric}:{'-' if higher else '+'}5%")
    worse, better = (90.0, 110.0) if higher else (110.0, 90.0)
    regressed = compare(base, [record(**{metric: worse})], threshold)
    assert verdicts(regressed)[("a->b/resnet8/scratch (n=1)", metric)] == "regressed" and regressed.failed
    improved = compare(base, [record(**{metric: better})], threshold)
    assert verdicts(improved)[("a->b/resnet8/scratch (n=1)", metric)] == "improved" and not improved.failed
    within = compare(base, [record(**{metric: 100.0 + (-4.0 if higher else 4.0)})], threshold)
    assert verdicts(within)[("a->b/resnet8/scratch (n=1)", metric)] == "within threshold" and not within.failed


def test_points_and_means_over_seeds():
    base = [record(0, test_top1_pct=80.0), record(1, test_top1_pct=82.0)]
    new = [record(0, test_top1_pct=79.0), record(1, test_top1_pct=82.4)]  # mean drop 0.3 pp
    assert not compare(base, new, parse_thresholds("top1:-0.5pp")).failed
    per_seed = compare(base, new, parse_thresholds("top1:-0.5pp"), per_seed=True)
    assert verdicts(per_seed)[("a->b/resnet8/scratch/seed0", "test_top1_pct")] == "regressed" and per_seed.failed


def test_missing_failed_changed_and_new_cells():
    base = [
        record(0, test_top1_pct=80.0),
        record(1, test_top1_pct=80.0),
        record(2, test_top1_pct=80.0),
        record(3, status="error"),
    ]
    new = [
        record(0, status="diverged"),
        record(1, config_hash="other", test_top1_pct=80.0),
        record(3, test_top1_pct=80.0),
        record(4, test_top1_pct=80.0),
    ]
    comparison = compare(base, new, parse_thresholds("top1:-0.5pp"))
    by_cell = {c.cell_id: c.verdict for c in comparison.changes}
    assert (
        by_cell["a->b/resnet8/scratch/seed0"] == "failed" and by_cell["a->b/resnet8/scratch/seed1"] == "config changed"
    )
    assert by_cell["a->b/resnet8/scratch/seed2"] == "missing" and by_cell["a->b/resnet8/scratch/seed4"] == "new"
    assert "a->b/resnet8/scratch/seed3" not in by_cell  # failed in the baseline: nothing to regress from
    assert comparison.failed
    summary = render_summary(comparison, "base", "new", parse_thresholds("top1:-0.5pp"))
    assert summary.startswith("## Benchmark comparison: ❌ regression") and "### What fails" in summary
    lenient = compare(base[2:3], [], parse_thresholds("top1:-0.5pp"), allow_missing=True)
    assert not lenient.failed and [c.verdict for c in lenient.changes] == ["missing"]


def test_a_changed_alpha_is_its_own_verdict_and_does_not_block():
    def mix(seed, alpha, selected, top1):
        return {**record(seed, strategy="alpha_mix", test_top1_pct=top1), "alpha": alpha, "selected": selected}

    base = [mix(0, 0.0, False, 70.0), mix(0, 0.5, True, 80.0)]
    new = [mix(0, 0.0, True, 80.2), mix(0, 0.5, False, 79.8)]
    comparison = compare(base, new, parse_thresholds("top1:-0.5pp"))
    changed = [c for c in comparison.changes if c.verdict == "selection changed"]
    assert len(changed) == 1 and changed[0].cell_id == "a->b/resnet8/alpha_mix/seed0" and changed[0].note == "α 0.5 → 0"
    assert not comparison.failed
    assert not [
        c for c in compare(base, base, parse_thresholds("top1:-0.5pp")).changes if c.verdict == "selection changed"
    ]


def test_a_failed_trial_of_a_search_is_shown_and_does_not_block():
    def trial(lr, selected, status="ok"):
        return {**record(0, status=status, test_top1_pct=50.0), "grid_point": {"lr": lr}, "selected": selected}

    base = [trial(0.01, True), trial(1.0, False)]
    new = [trial(0.01, True), trial(1.0, False, status="diverged")]
    comparison = compare(base, new, parse_thresholds("top1:-0.5pp"))
    assert [c.verdict for c in comparison.changes if c.candidate == "lr=1"] == ["trial failed"]
    assert not comparison.failed


def test_a_percent_threshold_against_a_zero_baseline_is_an_error():
    base, new = [record(target_compile_s=0.0)], [record(target_compile_s=3.0)]
    with pytest.raises(CompareError, match=r"target_compile_s is 0 in the baseline.*absolute threshold"):
        compare(base, new, parse_thresholds("target_compile_s:+10%"))
    assert compare(base, new, parse_thresholds("target_compile_s:+1")).failed
    unchanged = compare(base, base, parse_thresholds("target_compile_s:+10%"))  # 0 in both: no change, a usable gate
    assert not unchanged.failed and [c.verdict for c in unchanged.changes] == ["within threshold"]


def test_devices_must_match_unless_allowed():
    base, new = [record(test_top1_pct=80.0)], [record(test_top1_pct=80.0, device="NVIDIA H200")]
    with pytest.raises(CompareError, match="different devices"):
        compare(base, new, parse_thresholds("top1:-1pp"))
    assert not compare(base, new, parse_thresholds("top1:-1pp"), allow_device_mismatch=True).failed


def test_cli_exit_codes_and_summary(tmp_path, capsys):
    for name, top1 in (("base", 80.0), ("same", 80.0), ("worse", 78.0)):
        ResultsStore(tmp_path / name).append([record(test_top1_pct=top1)])
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "same")]) == 0
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "worse"), "--summary", str(tmp_path / "s.md")]) == 1
    assert "❌ regression" in (tmp_path / "s.md").read_text()
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "nowhere")]) == 2
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "same"), "--fail", "top1:+1pp"]) == 2
    err = capsys.readouterr().err
    assert "bench: error: new" in err and "no records.jsonl" in err


# --- the recipe, end to end: a regression injected into the training code must fail the gate ---------

SUITE = tiny_suite(strategies={"scratch": {"epochs": 3}, "linear_probe": {"epochs": 5}}, seeds=[0, 1])
SLOW_STEPS = (
    "import time, torch; step = torch.optim.SGD.step\n"
    "def slow(self, *a, **k):\n    time.sleep(0.05)\n    return step(self, *a, **k)\n"
    "torch.optim.SGD.step = slow"
)
NO_LEARNING = "import transfer_core.training as t; t.lr_factor = lambda recipe, progress: 0.0"


def run_suite(tmp_path, out, fault=""):
    suite = tmp_path / "ci.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    code = (
        f"{fault}\nimport sys, runpy; sys.argv = ['bench'] + sys.argv[1:]; "
        "runpy.run_module('bench', run_name='__main__')"
    )
    result = subprocess.run(
        # in this process: the fault is injected here, and worker processes would import the code unpatched
        [sys.executable, "-c", code, "run", str(suite), "--out", str(tmp_path / out), "--executor", "local"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr


def bench_compare(tmp_path, new, fail):
    return subprocess.run(
        [sys.executable, "-m", "bench", "compare", str(tmp_path / "baseline"), str(tmp_path / new), "--fail", fail],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_the_ci_recipe_catches_injected_regressions(tmp_path):
    run_suite(tmp_path, "baseline")
    run_suite(tmp_path, "clean")
    run_suite(tmp_path, "no-learning", NO_LEARNING)
    run_suite(tmp_path, "slow", SLOW_STEPS)
    gate = "top1:-0.5pp,target_img_per_s:-40%"

    clean = bench_compare(tmp_path, "clean", "top1:-0.5pp")
    assert clean.returncode == 0, clean.stdout  # the same code gives the same accuracy on this CPU
    assert "PASS" in clean.stdout

    broken = bench_compare(tmp_path, "no-learning", gate)
    assert broken.returncode == 1 and "FAIL" in broken.stdout
    assert any(
        "scratch" in line and "test_top1_pct" in line and "regressed" in line for line in broken.stdout.splitlines()
    )

    slow = bench_compare(tmp_path, "slow", gate)
    assert slow.returncode == 1
    lines = slow.stdout.splitlines()
    assert any("target_img_per_s" in line and "regressed" in line for line in lines)
    assert not any("test_top1_pct" in line and "regressed" in line for line in lines)  # only slower, not worse
    records = read_records(tmp_path / "slow")
    assert all(r["status"] == "ok" for r in records)


def test_accuracy_is_judged_by_a_paired_test_over_seeds_on_the_selected_candidates_only():
    from scipy import stats

    def run(drops, base_top1=80.0):
        base = [record(s, test_top1_pct=base_top1) for s in range(len(drops))]
        new = [record(s, test_top1_pct=base_top1 - d) for s, d in enumerate(drops)]
        (change,) = [c for c in compare(base, new, parse_thresholds("top1:-0.5pp")).changes]
        return change

    # a mean drop of 0.6 pp, beyond the threshold, but seed noise: t = 0.6 / (1.294 / √5) with 4 dof, p ≈ 0.18
    noisy = run([1.0, -0.5, 2.0, -1.0, 1.5])
    t = 0.6 / (math.sqrt(6.7 / 4) / math.sqrt(5))
    assert noisy.verdict == "within noise" and f"p = {stats.t.sf(t, 4):.3g}" in noisy.note
    assert stats.t.sf(t, 4) == pytest.approx(0.1795, abs=1e-3)
    # a consistent 2 pp drop: regressed; the same drop on every seed (no spread): regressed too
    assert run([1.9, 2.1, 2.0, 1.8, 2.2]).verdict == "regressed"
    assert run([2.0] * 5).verdict == "regressed"
    assert run([0.2] * 5).verdict == "within threshold"  # significant, but under the threshold
    # two seeds cannot test: the threshold alone, and the verdict says so
    two = run([0.6, 0.7])
    assert two.verdict == "regressed" and "untested" in two.note

    # a candidate no run selected (an alpha-mix alpha not chosen) is not judged on accuracy, however it moved
    def mix(seed, alpha, selected, top1):
        return {**record(seed, strategy="alpha_mix", test_top1_pct=top1), "alpha": alpha, "selected": selected}

    base = [mix(s, a, a == 0.5, 80.0 if a == 0.5 else 60.0) for s in range(3) for a in (0.0, 0.5)]
    new = [mix(s, a, a == 0.5, 80.0 if a == 0.5 else 40.0) for s in range(3) for a in (0.0, 0.5)]
    comparison = compare(base, new, parse_thresholds("top1:-0.5pp"))
    judged = [c for c in comparison.changes if c.metric == "test_top1_pct"]
    assert [(c.candidate, c.verdict) for c in judged] == [("selected", "within threshold")] and not comparison.failed


def test_with_few_seeds_test_top1_is_judged_image_by_image_by_mcnemar():
    import numpy as np

    from transfer_core.strategies.base import TargetTask

    def per_image(right: list[bool]) -> dict:
        logits = torch.tensor([[1.0, 0.0] if r else [0.0, 1.0] for r in right])  # class 0 predicted where right
        return TargetTask.test_correct((logits, torch.zeros(len(right), dtype=torch.long)))

    def scored(seed, right, fingerprint="f"):
        r = record(seed, test_top1_pct=100.0 * sum(right) / len(right))
        return {
            **r,
            "test_correct": per_image(right),
            "provenance": {**r["provenance"], "data": {"target": {"fingerprint": fingerprint}}},
        }

    before = [True] * 180 + [False] * 20
    # 12 images now wrong, 2 now right: one-sided exact binomial P(X >= 12 | 14, 1/2) = 106 / 16384
    after = [False] * 12 + [True] * 168 + [True] * 2 + [False] * 18
    assert per_image(before)["images"] == 200
    (change,) = compare([scored(0, before)], [scored(0, after)], parse_thresholds("top1:-0.5pp")).changes
    assert change.verdict == "regressed" and "12 now wrong, 2 now right" in change.note
    assert f"p = {106 / 16384:.3g}" in change.note
    # the same 5 pp drop spread evenly (as many flips each way but 10 more wrong): 20 wrong, 10 right, p ≈ 0.049
    even = [False] * 20 + [True] * 160 + [True] * 10 + [False] * 10
    (change,) = compare([scored(0, before)], [scored(0, even)], parse_thresholds("top1:-0.5pp")).changes
    assert change.verdict == "regressed"
    # flips both ways in equal numbers beyond the threshold cannot happen; 6 wrong against 4 right (1 pp) is noise
    close = [False] * 6 + [True] * 174 + [True] * 4 + [False] * 16
    (change,) = compare([scored(0, before)], [scored(0, close)], parse_thresholds("top1:-0.5pp")).changes
    assert change.verdict == "within noise" and "p = 0.377" in change.note
    # a top-1 that the per-image results do not add up to (how the metric is computed changed): the threshold alone
    lowered = {**scored(0, before), "metrics": {"test_top1_pct": 89.0}}
    (change,) = compare([scored(0, before)], [lowered], parse_thresholds("top1:-0.5pp")).changes
    assert change.verdict == "regressed" and "untested" in change.note
    # other test images (another data fingerprint): no image-by-image test, the threshold alone
    (change,) = compare([scored(0, before)], [scored(0, close, "g")], parse_thresholds("top1:-0.5pp")).changes
    assert change.verdict == "regressed" and "untested" in change.note
    # with 3 seeds the paired test over seeds decides and McNemar, summed over seeds, is reported beside it
    base = [scored(s, before) for s in range(3)]
    new = [scored(s, close) for s in range(3)]
    (change,) = compare(base, new, parse_thresholds("top1:-0.5pp")).changes
    assert change.verdict == "regressed" and "the same change in each" in change.note
    assert "McNemar over 600 test images: 18 now wrong, 12 now right" in change.note
    assert np.array_equal(correct_bits(per_image(before)), np.array(before))
