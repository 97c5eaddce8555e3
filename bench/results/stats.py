"""Statistics over seeds: mean, sample standard deviation, Student-t confidence intervals, and paired
tests corrected for multiplicity (scipy's paired t-test, statsmodels' Holm correction).

With the handful of seeds a benchmark affords, the normal approximation is far too narrow (n=3: the
95% t quantile is 4.30, not 1.96), so every interval here uses the t-distribution with n-1 degrees
of freedom.
"""

from __future__ import annotations

import base64
import binascii
import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Mean of ``n`` values, their sample std, and the half-width of the mean's confidence interval
    (None when n < 2: one value says nothing about spread)."""

    mean: float
    std: Optional[float]
    ci_half: Optional[float]
    n: int

    @property
    def ci(self) -> Optional[tuple[float, float]]:
        return None if self.ci_half is None else (self.mean - self.ci_half, self.mean + self.ci_half)


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t quantile for a mean of n values."""
    from scipy import stats  # imported when first needed: it takes most of a second

    return float(stats.t.ppf(0.5 + confidence / 2, df=n - 1))


def summarise(values: Sequence[float], confidence: float = CONFIDENCE) -> Optional[Summary]:
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Summary(mean, None, None, 1)
    std = statistics.stdev(values)
    return Summary(mean, std, t_quantile(len(values), confidence) * std / math.sqrt(len(values)), len(values))


def paired_difference(a_by_seed: dict, b_by_seed: dict, confidence: float = CONFIDENCE) -> Optional[Summary]:
    """A − B on the seeds both have: the mean difference and its t interval. Pairing by seed removes
    what the two share (data subset, source model), so the interval is narrower than the unpaired one."""
    seeds = sorted(set(a_by_seed) & set(b_by_seed))
    return summarise([a_by_seed[s] - b_by_seed[s] for s in seeds], confidence)


MIN_SEEDS_FOR_TESTS = 3  # with 2 seeds a t interval has one degree of freedom: nothing is called significant


def holm_paired_tests(
    rows_by_seed: list[dict], best_by_seed: dict, alpha: float = 1 - CONFIDENCE
) -> list[Optional[float]]:
    """Each row against the best: the one-sided paired t-test (on the seeds both have) that the row is worse
    than the best, its p-values Holm-corrected across the rows (the family of comparisons made to pick the
    bold rows). None for a row sharing fewer than ``MIN_SEEDS_FOR_TESTS`` seeds with the best: it is not
    tested. Seeds with identical differences (no spread) give p = 0 for a row below the best on every seed
    and 1 otherwise."""
    from scipy import stats
    from statsmodels.stats.multitest import multipletests

    raw: list[Optional[float]] = []
    for by_seed in rows_by_seed:
        seeds = sorted(set(by_seed) & set(best_by_seed))
        if len(seeds) < MIN_SEEDS_FOR_TESTS:
            raw.append(None)
            continue
        gaps = [by_seed[s] - best_by_seed[s] for s in seeds]
        if max(gaps) == min(gaps):  # no spread: the t statistic is undefined
            raw.append(0.0 if gaps[0] < 0 else 1.0)
        else:
            row, best = [by_seed[s] for s in seeds], [best_by_seed[s] for s in seeds]
            raw.append(float(stats.ttest_rel(row, best, alternative="less").pvalue))
    tested = [p for p in raw if p is not None]
    if not tested:
        return raw
    corrected = iter(multipletests(tested, alpha=alpha, method="holm")[1].tolist())
    return [None if p is None else next(corrected) for p in raw]


def correct_bits(test_correct) -> Optional[np.ndarray]:
    """A record's ``test_correct`` (``TargetTask.test_correct``) as booleans, or None when absent or malformed."""
    if not isinstance(test_correct, dict) or not isinstance(test_correct.get("images"), int):
        return None
    try:
        packed = np.frombuffer(base64.b64decode(test_correct.get("bits", ""), validate=True), dtype=np.uint8)
    except (binascii.Error, TypeError, ValueError):
        return None
    bits = np.unpackbits(packed)
    n = test_correct["images"]
    return bits[:n].astype(bool) if 0 <= n <= len(bits) < n + 8 else None


@dataclass(frozen=True)
class McNemar:
    """Images right before and wrong after (``worse``) and the reverse (``better``), summed over seeds, and the
    exact one-sided McNemar p-value that after is the worse: the binomial test of ``worse`` among the
    ``worse + better`` images that changed, at one half. Summing over seeds is the Mantel–Haenszel test for
    matched pairs. It is conditional on the trained models: it says whether these two models differ on these
    images, not whether retraining would (that is the paired test over seeds)."""

    worse: int
    better: int
    images: int
    p_worse: float


def mcnemar_drop(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Optional[McNemar]:
    """McNemar's test over (before, after) per-image correctness of the same test images, or None without any."""
    from scipy import stats

    pairs = [(a, b) for a, b in pairs if a is not None and b is not None and len(a) == len(b)]
    if not pairs:
        return None
    worse = int(sum((a & ~b).sum() for a, b in pairs))
    better = int(sum((~a & b).sum() for a, b in pairs))
    changed = worse + better
    p = float(stats.binomtest(worse, changed, 0.5, alternative="greater").pvalue) if changed else 1.0
    return McNemar(worse, better, sum(len(a) for a, _ in pairs), p)
