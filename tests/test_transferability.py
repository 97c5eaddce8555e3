"""Transferability estimates in the graph: ``estimators:`` in a suite, ``bench rank`` (nothing fine-tuned), the
records and their keys, sources whose files hold no classifier, Ray, and the report's check of each estimator's
ranking against the measured one."""

import json

import numpy as np
import pytest
import torch
import yaml
from conftest import run_with_executor, tiny_suite
from test_cli_end_to_end import bench

from bench.pipeline.estimates import ESTIMATE_RECORDS
from bench.pipeline.suite import SuiteError, parse_suite
from bench.results.tables import Row
from bench.results.transferability import agreement

SOURCES = [
    {"dataset": "digits", "classes": [0, 1, 2, 3, 4], "per_class": 30, "epochs": 2, "name": "five"},
    {"dataset": "digits", "classes": [0, 1, 2], "per_class": 20, "epochs": 1, "name": "three"},
]


def zoo_suite(**overrides) -> dict:
    settings = {
        "source": SOURCES,
        "strategies": {"linear_probe": {"epochs": 3}, "full_finetune": {"epochs": 1}},
        "estimators": ["logme", "leep", {"knn": {"k": 5}}],
    }
    return tiny_suite(**{**settings, **overrides})


def estimates(out) -> list[dict]:
    return [json.loads(line) for line in (out / ESTIMATE_RECORDS).read_text().splitlines()]


@pytest.mark.slow
def test_bench_rank_scores_every_source_for_every_target_and_fine_tunes_nothing(tmp_path):
    suite = tmp_path / "zoo.yaml"
    suite.write_text(yaml.safe_dump(zoo_suite(seeds=[0, 1])))
    result = bench("rank", str(suite), "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    records = estimates(out)
    # 2 sources x 1 target x 1 backbone x 2 seeds, 3 estimators each
    assert len(records) == 12 and {r["status"] for r in records} == {"ok"}
    assert {r["estimator"] for r in records} == {"logme", "leep", "knn"}
    assert all(r["compute"]["features_s"] > 0 and r["compute"]["images"] == 90 for r in records)
    assert {r["options"]["k"] for r in records if r["estimator"] == "knn"} == {5}
    assert not (out / "records.jsonl").exists() and not (out / "cache" / "models").exists()  # nothing fine-tuned
    table = result.stdout
    assert "| target" in table and "logme (rank)" in table and "five" in table and "three" in table

    again = bench("rank", str(suite), "--out", "out", cwd=tmp_path)  # resumed: nothing left to score
    assert again.returncode == 0 and "0 estimates run" in again.stderr and len(estimates(out)) == 12

    # another option of one estimator is another estimate; another strategy list is not
    changed = zoo_suite(seeds=[0, 1], estimators=["logme", "leep", {"knn": {"k": 7}}])
    changed["strategies"] = {"linear_probe": {"epochs": 5}}
    suite.write_text(yaml.safe_dump(changed))
    third = bench("rank", str(suite), "--out", "out", cwd=tmp_path)
    assert third.returncode == 0 and "4 estimates run" in third.stderr
    keys = {r["config_hash"] for r in estimates(out)}
    assert len(keys) == 8  # 4 estimates, each keyed anew


@pytest.mark.slow
def test_the_report_checks_each_estimators_ranking_against_the_measured_one_in_every_format(tmp_path):
    suite = tmp_path / "zoo.yaml"
    suite.write_text(yaml.safe_dump(zoo_suite()))
    result = bench("run", str(suite), "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert "2 transferability estimates" in result.stderr
    report = (out / "report.md").read_text()
    assert "## Sources ranked by transferability estimators" in report
    assert "## Estimators against measured transfer" in report and "weighted τ" in report
    assert (out / "estimators_vs_measured.png").is_file() and (out / "estimators_vs_measured.svg").is_file()
    for name in ("ranking.csv", "transferability.csv"):
        import pandas as pd

        table = pd.read_csv(out / name)
        assert len(table) > 0
    agreement_csv = pd.read_csv(out / "transferability.csv")
    # two strategies measured, three estimators, one target
    assert len(agreement_csv) == 6 and set(agreement_csv["estimator"]) == {"logme", "leep", "knn"}
    assert "Kendall" in (out / "report.tex").read_text() and "logme (rank)" in (out / "report.tex").read_text()
    assert "Estimators against measured transfer" in (out / "report.html").read_text()


def _rows(accuracy: dict[str, dict[int, float]], strategy: str = "linear_probe") -> list[Row]:
    return [
        Row(source, "t", "resnet8", strategy, top1_by_seed=by_seed, target_s=10.0)
        for source, by_seed in accuracy.items()
    ]


def _estimates(scores: dict[str, dict[int, float]], name: str = "e") -> list[dict]:
    return [
        {
            "source": source,
            "target": "t",
            "backbone": "resnet8",
            "seed": seed,
            "estimator": name,
            "score": score,
            "status": "ok",
            "compute": {"features_s": 0.5, "estimator_s": 0.5},
        }
        for source, by_seed in scores.items()
        for seed, score in by_seed.items()
    ]


def test_agreement_measures_the_ranking_and_what_trusting_it_costs():
    accuracy = {"a": {0: 80.0, 1: 82.0, 2: 81.0}, "b": {0: 70.0, 1: 71.0, 2: 69.0}, "c": {0: 60.0, 1: 59.0, 2: 61.0}}
    same = _estimates({"a": {0: 3.0, 1: 3.1, 2: 2.9}, "b": {0: 2.0, 1: 2.1, 2: 1.9}, "c": {0: 1.0, 1: 1.1, 2: 0.9}})
    [row] = agreement(same, _rows(accuracy))
    assert row.kendall.value == pytest.approx(1) and row.weighted.value == pytest.approx(1)
    assert row.spearman.value == pytest.approx(1) and row.regret_pp.value == 0 and row.picked == "a" == row.best
    assert row.speedup == pytest.approx(10.0) and (row.models, row.seeds) == (3, 3)
    assert row.kendall.low <= row.kendall.value <= row.kendall.high

    reversed_ = _estimates(
        {"a": {0: 1.0, 1: 1.0, 2: 1.0}, "b": {0: 2.0, 1: 2.0, 2: 2.0}, "c": {0: 3.0, 1: 3.0, 2: 3.0}}
    )
    [row] = agreement(reversed_, _rows(accuracy))
    assert row.kendall.value == pytest.approx(-1) and row.picked == "c"
    assert row.regret_pp.value == pytest.approx(81.0 - 60.0)  # the best's mean minus the pick's

    # a strategy whose rows are one number for every source (scratch under each source) is not ranked
    flat = {s: {0: 50.0, 1: 50.0, 2: 50.0} for s in "abc"}
    assert agreement(same, _rows(flat, "scratch")) == []

    # one seed: the point, no interval
    [row] = agreement(
        _estimates({s: {0: v[0]} for s, v in {"a": [3.0], "b": [2.0], "c": [1.0]}.items()}), _rows(accuracy)
    )
    assert row.seeds == 1 and row.kendall.low is None


def test_the_bootstrap_computes_each_distinct_resample_once_and_gives_what_every_draw_would():
    from bench.results.transferability import BOOTSTRAP_DRAWS, _bootstrap, _statistics

    generator = np.random.default_rng(3)
    scores, accuracy = generator.normal(size=(6, 4)), generator.normal(70, 5, size=(6, 4))
    fast = _bootstrap(scores, accuracy, np.random.default_rng(11))
    drawn = np.random.default_rng(11).integers(0, 4, (BOOTSTRAP_DRAWS, 4))
    slow = [_statistics(scores[:, d].mean(1), accuracy[:, d].mean(1)) for d in drawn]
    assert len(fast) == len(slow) == BOOTSTRAP_DRAWS
    np.testing.assert_allclose(np.array(fast), np.array(slow), rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_a_source_whose_file_has_no_classifier_is_scored_by_the_feature_estimators_only_once_for_all_seeds(tmp_path):
    from transfer_core.backbones import create_backbone

    torch.manual_seed(0)
    body_only = tmp_path / "body.pt"
    torch.save(create_backbone("resnet8", 5, 1).body.state_dict(), body_only)  # features only, no classifier
    raw = tiny_suite(
        source={"checkpoint": str(body_only), "backbone": "resnet8", "name": "lab"},
        strategies={"linear_probe": {"epochs": 2}},
        estimators=["leep", "logme"],
        seeds=[0, 1],
    )
    raw.pop("backbones")
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(raw))
    result = bench("rank", str(suite), "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = estimates(tmp_path / "out")
    # loaded weights and the same data for both seeds: one estimate, recorded for each seed
    assert (
        len(records) == 4 and {r["seed"] for r in records} == {0, 1} and len({r["config_hash"] for r in records}) == 1
    )
    assert result.stderr.count("] estimate ") == 1
    by_name = {r["estimator"]: r for r in records}
    assert by_name["logme"]["status"] == "ok" and isinstance(by_name["logme"]["score"], float)
    assert by_name["leep"]["status"] == "skipped" and by_name["leep"]["score"] is None
    assert "holds no classifier" in by_name["leep"]["error"]


@pytest.mark.parametrize(
    "estimators, message",
    [
        (
            ["logme", "nope"],
            "estimators[1]: unknown estimator 'nope'; known: centroid, hscore, knn, leep, logme, nce, transrate",
        ),
        ([{"knn": {"neighbours": 3}}], "estimators[0].knn.neighbours: unknown option; allowed: k"),
        ([{"knn": {"k": 0}}], "estimators[0].knn.k: 0 is outside [1, inf]"),
        (["leep", "leep"], "estimators[1]: leep is listed twice"),
        ("logme", "estimators: expected a list of estimator names"),
    ],
)
def test_estimator_mistakes_in_a_suite_are_one_line_errors(estimators, message):
    with pytest.raises(SuiteError) as info:
        parse_suite(zoo_suite(estimators=estimators))
    assert str(info.value).startswith(message)


@pytest.mark.slow
def test_estimates_on_ray_give_the_local_executors_records(tmp_path):
    ray = pytest.importorskip("ray")  # CI installs it and fails without it (.ci/run)

    suite = parse_suite(zoo_suite(estimators=["logme", "leep", "nce", "hscore", "transrate", "knn"]))

    def scores(executor_name: str, folder) -> dict:
        _, summary, _ = run_with_executor(folder, suite, executor_name, tmp_path, estimates_only=True, threads=1)
        assert summary.estimated == 2
        return {(r["cell_id"], r["estimator"]): (r["status"], r["score"]) for r in estimates(folder / "out")}

    local = scores("local", tmp_path / "local")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")  # never another run's
    try:
        on_ray = scores("ray", tmp_path / "ray")
    finally:
        ray.shutdown()
    assert len(local) == 12 and on_ray == local and all(np.isfinite(s) for _, s in local.values())
