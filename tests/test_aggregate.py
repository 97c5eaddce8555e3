"""Scores across tasks (IQM, probability of improvement, performance profiles, mean ranks), on made-up
numbers whose answers are known."""

import numpy as np
import pytest

from bench.results.aggregate import aggregate, iqm, performance_profile, probability_of_improvement
from bench.results.tables import Row


def rows(table: dict) -> list[Row]:
    """{(target, strategy): [top-1 per seed]} as report rows (scratch the baseline)."""
    made = []
    for (target, strategy), values in table.items():
        row = Row("a", target, "resnet8", strategy, top1_by_seed=dict(enumerate(values)))
        row.baseline = strategy == "scratch"
        made.append(row)
    return made


def test_iqm_and_probability_of_improvement_on_known_answers():
    assert iqm(np.arange(1, 9)) == 4.5  # the middle half of 1..8: 3, 4, 5, 6
    # runs 3, 4 against 1, 3: pairs 3>1, 3=3 (a half), 4>1, 4>3: 3.5 of 4
    assert probability_of_improvement(np.array([[3.0], [4.0]]), np.array([[1.0], [3.0]])) == 0.875
    # averaged over tasks: 0.875 on the first, 0 on the second
    x, y = np.array([[3.0, 0.0], [4.0, 0.0]]), np.array([[1.0, 5.0], [3.0, 6.0]])
    assert probability_of_improvement(x, y) == pytest.approx(0.4375)


@pytest.mark.slow
def test_aggregates_rank_a_strategy_better_on_every_run_first():
    table = {}
    for target, shift in (("b1", 0.0), ("b2", 10.0)):
        table[(target, "scratch")] = [30 + shift, 31 + shift, 29 + shift, 30.5 + shift]
        table[(target, "full_finetune")] = [40 + shift, 42 + shift, 39 + shift, 41 + shift]
        table[(target, "linear_probe")] = [35 + shift, 34 + shift, 36 + shift, 35.5 + shift]
    found = aggregate(rows(table))
    assert found.tasks == [("a", "b1", "resnet8"), ("a", "b2", "resnet8")] and found.seeds == [0, 1, 2, 3]
    estimate, low, high = found.iqm["full_finetune"]
    assert estimate == iqm(found.scores["full_finetune"]) and low <= estimate <= high
    assert found.improvement["full_finetune"] == (1.0, 1.0, 1.0)  # every run beats every scratch run
    assert found.improvement["linear_probe"][0] == 1.0 and "scratch" not in found.improvement
    assert found.mean_rank == {"full_finetune": 1.0, "linear_probe": 2.0, "scratch": 3.0}
    assert found.friedman_p < 0.01 and found.critical_difference > 0
    profile = performance_profile(found, np.array([0.0, 40.5, 100.0]))
    # full fine-tune: every run above 0; above 40.5: 42 and 41 on b1, all four on b2; none above 100
    assert profile["full_finetune"].tolist() == [1.0, 6 / 8, 0.0]


def test_too_little_to_aggregate_gives_nothing():
    one_task = {("b1", "scratch"): [1.0, 2.0, 3.0], ("b1", "full_finetune"): [2.0, 3.0, 4.0]}
    assert aggregate(rows(one_task)) is None
    two_seeds = {(t, s): [1.0, 2.0] for t in ("b1", "b2") for s in ("scratch", "full_finetune")}
    assert aggregate(rows(two_seeds)) is None


@pytest.mark.slow
def test_the_report_shows_the_scores_across_tasks_in_markdown_html_and_plots(tmp_path):
    from test_report import record

    from bench.results.records import ResultsStore
    from bench.results.report import load_results, write_reports

    store = ResultsStore(tmp_path)
    base = {"scratch": 30.0, "linear_probe": 35.0, "full_finetune": 40.0}
    store.append(
        [
            record(strategy, seed, top1 + seed + (5 if target == "b2" else 0), target=target)
            for target in ("b1", "b2")
            for strategy, top1 in base.items()
            for seed in range(4)
        ]
    )
    written = {path.name for path in write_reports(load_results(tmp_path), "across")}
    assert {"performance_profile.png", "performance_profile.svg", "critical_difference.svg"} <= written
    markdown = (tmp_path / "report.md").read_text()
    # full fine-tune's runs: 40-43 and 45-48; the middle half 42, 43, 45, 46
    assert "## Across tasks" in markdown and "finetune 44.00 [" in markdown
    assert "Probability of improvement over scratch" in markdown and "Friedman" in markdown
    html = (tmp_path / "report.html").read_text()
    assert "Probability of improvement over scratch" in html
    assert html.count("<svg") == 3  # accuracy against compute, the profiles, the mean ranks


@pytest.mark.slow
def test_two_strategies_get_ranks_but_no_critical_difference():
    two = {
        (t, s): v for t in ("b1", "b2") for s, v in (("scratch", [1.0, 2.0, 3.0]), ("full_finetune", [2.0, 3.5, 4.0]))
    }
    found = aggregate(rows(two))  # autorank tests two strategies by Wilcoxon: no Friedman, nothing to draw
    assert found.mean_rank["full_finetune"] < found.mean_rank["scratch"]
    assert found.critical_difference is None and found.ranking is None
    from bench.results.plots import critical_difference
    from bench.results.report import aggregate_lines

    assert critical_difference(found) is None and "Friedman" not in " ".join(aggregate_lines(found))
