"""Transferability estimates read back: the sources ranked by each estimator per target (``bench rank``), and
those rankings checked against the rankings the suite's strategies measured (the report).

A "model" here is a source with its backbone: what a zoo search picks. Per target and per strategy measured,
over the models both the estimates and the strategy's rows cover, each estimator's ranking (its score, mean
over seeds) is compared with the measured one (test top-1 chosen on validation, mean over seeds):
- Kendall's τ, the weighted τ (``scipy.stats.weightedtau``: hyperbolic weights, so a swap among the top models
  costs more than one among the bottom ones; the weights follow the estimator's ranking and the measured one,
  as TLlib and the TransRate authors use it), and Spearman's ρ;
- the top-1 regret: the measured top-1 of the best model minus that of the model the estimator ranks first,
  in points: what trusting the estimator costs;
- each with a 95% bootstrap interval over seeds (the seeds drawn with replacement, scores and accuracies
  averaged over the draw, the statistic recomputed; 2,000 draws). With one seed there is no interval;
- the time: one estimate (its feature pass plus the estimator) against the strategy's target compute, per
  model, means over models and seeds.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from bench.pipeline.estimates import ESTIMATE_RECORDS, estimate_problem
from bench.results.records import ResultsStore
from bench.results.tables import Column, Table

BOOTSTRAP_DRAWS = 2000
_LOW, _HIGH = 2.5, 97.5  # the 95% percentile interval


def read_estimates(directory: Path, planned: Optional[set] = None) -> list[dict]:
    """The latest estimate record per source, target, backbone, seed and estimator; with ``planned`` (the plan's
    estimate keys) only those the suite still asks for."""
    latest: dict[tuple, dict] = {}
    for r in ResultsStore(directory, ESTIMATE_RECORDS, estimate_problem).read():
        if planned is None or r["config_hash"] in planned:
            latest[(r["cell_id"], r["estimator"])] = r
    return list(latest.values())


def model_name(source: str, backbone: str, backbones: set) -> str:
    """How a source is named in a ranking: with its backbone where the target's models differ in backbone."""
    return f"{source} ({backbone})" if len(backbones) > 1 else source


# --- the ranking alone (bench rank) ----------------------------------------------------------------------


@dataclass
class RankRow:
    target: str
    model: str
    backbone: str
    scores: dict = field(default_factory=dict)  # estimator -> mean score over seeds
    ranks: dict = field(default_factory=dict)  # estimator -> 1 = ranked first among the target's models
    seconds: dict = field(default_factory=dict)  # estimator -> its own seconds beyond the feature pass, mean
    features_s: Optional[float] = None  # the shared feature pass, mean over seeds
    seeds: int = 0

    @property
    def total_s(self) -> Optional[float]:
        """The feature pass and every estimator on it: one estimate artifact's work."""
        return None if self.features_s is None else self.features_s + sum(self.seconds.values())


def rank_rows(estimates: list[dict]) -> tuple[list[RankRow], list[str]]:
    """One row per target and model, ordered within a target by the first estimator's score; the estimators."""
    estimators = list(dict.fromkeys(r["estimator"] for r in estimates))
    backbones = defaultdict(set)
    for r in estimates:
        backbones[r["target"]].add(r["backbone"])
    rows: dict[tuple, RankRow] = {}
    gathered = defaultdict(lambda: defaultdict(list))
    for r in estimates:
        key = (r["target"], r["source"], r["backbone"])
        if key not in rows:
            rows[key] = RankRow(
                r["target"], model_name(r["source"], r["backbone"], backbones[r["target"]]), r["backbone"]
            )
        if r["status"] == "ok" and r["score"] is not None:
            gathered[key][r["estimator"]].append((r["score"], r["compute"]["estimator_s"]))
            gathered[key][None].append((r["compute"]["features_s"], 0.0))
    for key, row in rows.items():
        for name, values in gathered[key].items():
            if name is None:  # the feature pass, once per record: the same figure each
                row.features_s = statistics.fmean(v for v, _ in values)
                continue
            row.scores[name] = statistics.fmean(v for v, _ in values)
            row.seconds[name] = statistics.fmean(s for _, s in values)
            row.seeds = max(row.seeds, len(values))
    by_target = defaultdict(list)
    for row in rows.values():
        by_target[row.target].append(row)
    ordered = []
    for target in by_target:
        group = by_target[target]
        for name in estimators:
            scored = sorted((r for r in group if name in r.scores), key=lambda r: -r.scores[name])
            for rank, row in enumerate(scored, 1):
                row.ranks[name] = rank
        first = estimators[0] if estimators else None
        ordered += sorted(group, key=lambda r: (r.ranks.get(first, math.inf), r.model))
    return ordered, estimators


def rank_table(estimators: list[str]) -> Table:
    def score(name):
        return Column(
            f"{name} (rank)",
            lambda r: f"{r.scores[name]:.4g} ({r.ranks[name]})" if name in r.scores else "–",
            ((f"{name}", lambda r: r.scores.get(name)), (f"{name}_rank", lambda r: r.ranks.get(name))),
        )

    columns = (
        Column("target", lambda r: r.target, (("target", lambda r: r.target),), text=True),
        Column(
            "source", lambda r: r.model, (("source", lambda r: r.model), ("backbone", lambda r: r.backbone)), text=True
        ),
        *(score(name) for name in estimators),
        Column(
            "feature pass (s)",
            lambda r: f"{r.features_s:.2f}" if r.features_s is not None else "–",
            (("features_s", lambda r: r.features_s),),
        ),
        Column(
            "with every estimator (s)",
            lambda r: f"{r.total_s:.2f}" if r.total_s is not None else "–",
            (("estimate_s", lambda r: r.total_s),),
        ),
        Column("n", lambda r: str(r.seeds), (("seeds", lambda r: r.seeds),)),
    )
    note = (
        "Each source model scored for each target by each estimator from one forward pass of the target's "
        "training images (higher: expected to transfer better), mean over seeds, and its rank among the target's "
        "sources (1 = first). Time: the shared feature pass, and the pass plus every estimator, mean over seeds."
    )
    return Table("ranking", "Sources ranked by transferability estimators", note, columns)


# --- the ranking checked against what was measured ---------------------------------------------------------


@dataclass
class Statistic:
    value: Optional[float]
    low: Optional[float] = None
    high: Optional[float] = None

    def show(self, digits: int = 2, signed: bool = False) -> str:
        if self.value is None:
            return "–"
        text = f"{self.value:+.{digits}f}" if signed else f"{self.value:.{digits}f}"
        return text if self.low is None else f"{text} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass
class AgreementRow:
    target: str
    strategy: str
    estimator: str
    models: int
    seeds: int
    kendall: Statistic
    weighted: Statistic
    spearman: Statistic
    regret_pp: Statistic
    picked: str  # the model the estimator ranks first
    best: str  # the model the strategy measured best
    estimate_s: Optional[float]  # one estimate: the feature pass plus this estimator, mean over models and seeds
    strategy_s: Optional[float]  # the strategy's target compute, mean over models and seeds
    # (model, mean score, mean measured top-1) for the plots
    points: list = field(default_factory=list)

    @property
    def speedup(self) -> Optional[float]:
        if not self.estimate_s or self.strategy_s is None:
            return None
        return self.strategy_s / self.estimate_s


def _statistics(scores: np.ndarray, accuracy: np.ndarray) -> tuple[float, float, float, float]:
    """(Kendall τ, weighted τ, Spearman ρ, top-1 regret in points) of one ranking against the measured one."""
    from scipy import stats

    def finite(value) -> float:
        return float(value) if value is not None and np.isfinite(value) else math.nan

    kendall = finite(stats.kendalltau(scores, accuracy).statistic)
    weighted = finite(stats.weightedtau(scores, accuracy).statistic)
    spearman = finite(stats.spearmanr(scores, accuracy).statistic)
    regret = float(accuracy.max() - accuracy[int(np.argmax(scores))])
    return kendall, weighted, spearman, regret


def _with_interval(point: float, draws: list[float]) -> Statistic:
    if math.isnan(point):
        return Statistic(None)
    kept = [d for d in draws if not math.isnan(d)]
    if not kept:
        return Statistic(point)
    return Statistic(point, float(np.percentile(kept, _LOW)), float(np.percentile(kept, _HIGH)))


def _bootstrap(scores: np.ndarray, accuracy: np.ndarray, rng) -> list[tuple]:
    """The statistics on ``BOOTSTRAP_DRAWS`` resamples of the seeds (columns). A resample's means depend only on
    how often it draws each seed, and with few seeds most resamples repeat one of a few such counts (10 for 3
    seeds), so each distinct count is computed once."""
    seeds = scores.shape[1]
    drawn = rng.integers(0, seeds, (BOOTSTRAP_DRAWS, seeds))
    counts = np.stack([np.bincount(row, minlength=seeds) for row in drawn])
    distinct, which = np.unique(counts, axis=0, return_inverse=True)
    computed = [_statistics(scores @ c / seeds, accuracy @ c / seeds) for c in distinct]
    return [computed[i] for i in which.ravel()]


def agreement(estimates: list[dict], rows, seed: int = 0) -> list[AgreementRow]:
    """Per target, strategy measured and estimator: how well the estimator's ranking of the models matches the
    measured one. ``rows``: the report's rows (``bench.results.report.summarise_rows``), whose test top-1 per seed is the
    strategy's measurement; strategies that do not start from the source (scratch) are left out by their rows'
    being one per source with one and the same number, which no ranking can be checked against."""
    backbones = defaultdict(set)
    for r in estimates:
        backbones[r["target"]].add(r["backbone"])
    score_by = defaultdict(dict)  # (target, estimator) -> model -> seed -> score
    seconds_by = defaultdict(list)  # (target, estimator) -> estimate seconds
    for r in estimates:
        if r["status"] == "ok" and r["score"] is not None:
            model = model_name(r["source"], r["backbone"], backbones[r["target"]])
            score_by[(r["target"], r["estimator"])].setdefault(model, {})[r["seed"]] = r["score"]
            seconds_by[(r["target"], r["estimator"])].append(r["compute"]["features_s"] + r["compute"]["estimator_s"])
    measured = defaultdict(dict)  # (target, strategy) -> model -> seed -> top-1
    strategy_seconds = defaultdict(list)
    for row in rows:
        if row.target not in backbones or not row.top1_by_seed:
            continue
        model = model_name(row.source, row.backbone, backbones[row.target])
        measured[(row.target, row.strategy)][model] = dict(row.top1_by_seed)
        if row.target_s is not None:
            strategy_seconds[(row.target, row.strategy)].append(row.target_s)
    out = []
    rng = np.random.default_rng(seed)
    for (target, strategy), accuracy_by in sorted(measured.items()):
        if len({round(statistics.fmean(v.values()), 9) for v in accuracy_by.values()}) < 2:
            continue  # one number for every source (a strategy that ignores it): nothing to rank
        for (estimated_target, estimator), scores_by in score_by.items():
            if estimated_target != target:
                continue
            models = sorted(set(scores_by) & set(accuracy_by))
            seeds = (
                sorted(set.intersection(*(set(scores_by[m]) & set(accuracy_by[m]) for m in models))) if models else []
            )
            if len(models) < 2 or not seeds:
                continue
            scores = np.array([[scores_by[m][s] for s in seeds] for m in models])  # (models, seeds)
            accuracy = np.array([[accuracy_by[m][s] for s in seeds] for m in models])
            point = _statistics(scores.mean(1), accuracy.mean(1))
            draws = _bootstrap(scores, accuracy, rng) if len(seeds) > 1 else []
            intervals = [_with_interval(point[i], [d[i] for d in draws]) for i in range(4)]
            out.append(
                AgreementRow(
                    target,
                    strategy,
                    estimator,
                    len(models),
                    len(seeds),
                    *intervals,
                    picked=models[int(np.argmax(scores.mean(1)))],
                    best=models[int(np.argmax(accuracy.mean(1)))],
                    estimate_s=statistics.fmean(seconds_by[(target, estimator)]),
                    strategy_s=statistics.fmean(strategy_seconds[(target, strategy)])
                    if strategy_seconds[(target, strategy)]
                    else None,
                    points=[(m, float(s), float(a)) for m, s, a in zip(models, scores.mean(1), accuracy.mean(1))],
                )
            )
    return out


def agreement_table() -> Table:
    def statistic(header: str, name: str, digits: int = 2) -> Column:
        return Column(
            header,
            lambda r: getattr(r, name).show(digits),
            (
                (name, lambda r: getattr(r, name).value),
                (f"{name}_low", lambda r: getattr(r, name).low),
                (f"{name}_high", lambda r: getattr(r, name).high),
            ),
        )

    columns = (
        Column("target", lambda r: r.target, (("target", lambda r: r.target),), text=True),
        Column("strategy measured", lambda r: r.strategy, (("strategy", lambda r: r.strategy),), text=True),
        Column("estimator", lambda r: r.estimator, (("estimator", lambda r: r.estimator),), text=True),
        statistic("Kendall τ", "kendall"),
        statistic("weighted τ", "weighted"),
        statistic("Spearman ρ", "spearman"),
        statistic("top-1 regret (pp)", "regret_pp"),
        Column(
            "ranked first / best",
            lambda r: f"{r.picked} / {r.best}",
            (("picked", lambda r: r.picked), ("best", lambda r: r.best)),
            text=True,
        ),
        Column(
            "estimate vs strategy (s)",
            lambda r: f"{r.estimate_s:.2f} vs {r.strategy_s:.1f} ({r.speedup:.2g}×)" if r.speedup else "–",
            (
                ("estimate_s", lambda r: r.estimate_s),
                ("strategy_s", lambda r: r.strategy_s),
                ("speedup", lambda r: r.speedup),
            ),
        ),
        Column(
            "models × seeds",
            lambda r: f"{r.models} × {r.seeds}",
            (("models", lambda r: r.models), ("seeds", lambda r: r.seeds)),
        ),
    )
    note = (
        "Each estimator's ranking of a target's source models against the ranking each strategy measured (test "
        "top-1 chosen on validation), on means over seeds: Kendall's τ, weighted τ (scipy's weightedtau: swaps "
        "among the top count more), Spearman's ρ, and the top-1 regret (the best model's measured top-1 minus that "
        "of the model the estimator ranks first). [95% bootstrap intervals over seeds.] Time: one estimate (the "
        "feature pass plus the estimator) against the strategy's target compute, per model."
    )
    return Table("transferability", "Estimators against measured transfer", note, columns)


def lines(found: list[AgreementRow]) -> list[str]:
    """Per target and strategy: the estimator whose ranking agrees best (weighted τ) and its regret."""
    out = []
    by_group = defaultdict(list)
    for row in found:
        by_group[(row.target, row.strategy)].append(row)
    for (target, strategy), group in sorted(by_group.items()):
        scored = [r for r in group if r.weighted.value is not None]
        if not scored:
            continue
        best = max(scored, key=lambda r: r.weighted.value)
        out.append(
            f"{target}, {strategy}: {best.estimator} ranks the {best.models} sources closest to the measured "
            f"order (weighted τ {best.weighted.show()}, Kendall τ {best.kendall.show()}; {best.seeds} seeds); "
            f"its first choice {best.picked} costs {best.regret_pp.show()} pp against the best, {best.best}."
        )
    return out
