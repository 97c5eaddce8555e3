"""Scores across tasks: how strategies compare over several targets (or sizes of a data-size sweep) at once.

A task is a (source, target, backbone); a strategy's scores form a matrix of seeds × tasks of test top-1,
on the seeds every strategy and task has. From it, as Agarwal et al. 2021 ("Deep RL at the edge of the
statistical precipice") recommend for a few runs on several tasks:
- the **IQM** (interquartile mean of every run on every task) and the mean, with 95% **stratified bootstrap**
  intervals: each task's seeds resampled on their own (scipy's ``bootstrap`` given one sample per task);
- the **probability of improvement** of each strategy over the baseline (scratch): the mean over tasks of
  P(X > Y) for a run X of it and a run Y of the baseline (the Mann–Whitney U statistic over n·m, ties
  counting a half), with the same bootstrap;
- **performance profiles**: the share of a strategy's runs scoring above each top-1 τ;
- a **critical-difference diagram**: mean ranks of the strategies over blocks (task, seed), the Friedman test
  and Nemenyi's critical difference, by ``autorank`` (its non-parametric mode forced).

rliable implements the first three; its 1.2 release does not run against the pandas 3 / arch 8 this harness
installs (arch's bootstrap rejects the ``random_state`` rliable passes), so scipy does the resampling here.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
MIN_TASKS, MIN_SEEDS = 2, 3


@dataclass
class Aggregate:
    tasks: list[tuple[str, str, str]]
    seeds: list[int]
    scores: dict[str, np.ndarray]  # strategy -> (seeds, tasks) test top-1
    baseline: Optional[str]
    iqm: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # (estimate, low, high)
    mean: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    improvement: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # P(X > baseline)
    mean_rank: dict[str, float] = field(default_factory=dict)
    friedman_p: Optional[float] = None
    critical_difference: Optional[float] = None
    ranking: object = None  # autorank's result, for the diagram


def iqm(values: np.ndarray) -> float:
    """The interquartile mean: the mean of the middle 50% of the values (scipy's trimmed mean, 25% each end)."""
    from scipy import stats

    return float(stats.trim_mean(np.ravel(values), 0.25))


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """Mean over tasks (columns) of P(X > Y) + P(X = Y) / 2 for runs X of ``x`` and Y of ``y``."""
    from scipy import stats

    per_task = []
    for task in range(x.shape[1]):
        u = stats.mannwhitneyu(x[:, task], y[:, task]).statistic  # U of x: pairs x > y, ties a half
        per_task.append(u / (len(x) * len(y)))
    return float(np.mean(per_task))


def _stratified_interval(columns: list[np.ndarray], statistic, seed: int = 0) -> tuple[float, float, float]:
    """The statistic of the task columns and its 95% percentile interval, each task's runs resampled alone."""
    from scipy import stats

    estimate = statistic(*columns)
    if all(np.ptp(c) == 0 for c in columns):  # nothing varies: the interval is the point
        return estimate, estimate, estimate
    with warnings.catch_warnings():  # a statistic every resample agrees on is "degenerate": its interval is the point
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            columns,
            statistic,
            n_resamples=BOOTSTRAP_RESAMPLES,
            confidence_level=CONFIDENCE,
            method="percentile",
            vectorized=False,
            rng=np.random.default_rng(seed),
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        low = high = estimate
    return estimate, low, high


def score_matrices(rows) -> Optional[Aggregate]:
    """Each strategy's seeds × tasks matrix, on the seeds and strategies every task has; None when there are
    fewer than 2 tasks, 2 strategies or 3 common seeds (too little to aggregate)."""
    tasks = sorted({(r.source, r.target, r.backbone) for r in rows if r.top1_by_seed})
    by = {(r.source, r.target, r.backbone, r.strategy): r for r in rows if r.top1_by_seed}
    strategies = [s for s in dict.fromkeys(r.strategy for r in rows) if all((*t, s) in by for t in tasks)]
    if len(tasks) < MIN_TASKS or len(strategies) < 2:
        return None
    seeds = sorted(set.intersection(*(set(by[(*t, s)].top1_by_seed) for t in tasks for s in strategies)))
    if len(seeds) < MIN_SEEDS:
        return None
    scores = {
        s: np.array([[by[(*t, s)].top1_by_seed[seed] for t in tasks] for seed in seeds], dtype=float)
        for s in strategies
    }
    baseline = next((r.strategy for r in rows if r.baseline and r.strategy in scores), None)
    return Aggregate(tasks, seeds, scores, baseline)


def aggregate(rows) -> Optional[Aggregate]:
    """Every aggregate of the rows, or None when there is too little to aggregate."""
    found = score_matrices(rows)
    if found is None:
        return None
    for strategy, matrix in found.scores.items():
        columns = [matrix[:, t] for t in range(matrix.shape[1])]
        found.iqm[strategy] = _stratified_interval(columns, lambda *c: iqm(np.concatenate(c)))
        found.mean[strategy] = _stratified_interval(columns, lambda *c: float(np.mean(np.concatenate(c))))
        if found.baseline and strategy != found.baseline:
            base = found.scores[found.baseline]
            tasks = matrix.shape[1]
            paired = [matrix[:, t] for t in range(tasks)] + [base[:, t] for t in range(tasks)]

            def improvement(*c, tasks=tasks):
                return probability_of_improvement(np.column_stack(c[:tasks]), np.column_stack(c[tasks:]))

            found.improvement[strategy] = _stratified_interval(paired, improvement)
    _rank(found)
    return found


def _rank(found: Aggregate) -> None:
    """Mean ranks over (task, seed) blocks, Friedman's test and Nemenyi's critical difference (autorank)."""
    import pandas as pd
    from autorank import autorank

    blocks = pd.DataFrame({s: m.reshape(-1) for s, m in found.scores.items()})
    if blocks.nunique(axis=1).max() <= 1 or len(blocks) < 5:  # autorank needs 5 blocks and something to rank
        return
    with contextlib.redirect_stdout(io.StringIO()):  # it prints what it chose even when not verbose
        result = autorank(blocks, alpha=1 - CONFIDENCE, verbose=False, order="descending", force_mode="nonparametric")
    found.mean_rank = {s: float(result.rankdf.loc[s, "meanrank"]) for s in found.scores}
    if result.omnibus == "friedman":  # two strategies get a Wilcoxon test instead: no critical difference to draw
        found.ranking = result
        found.friedman_p = float(result.pvalue)
        found.critical_difference = None if result.cd is None else float(result.cd)


def performance_profile(found: Aggregate, taus: np.ndarray) -> dict[str, np.ndarray]:
    """The share of each strategy's runs (every seed on every task) scoring above each τ."""
    return {s: (m.reshape(-1)[None, :] > taus[:, None]).mean(axis=1) for s, m in found.scores.items()}
