"""Statistics over seeds: mean, sample standard deviation, and Student-t confidence intervals.

With the handful of seeds a benchmark affords, the normal approximation is far too narrow (n=3: the
95% t quantile is 4.30, not 1.96), so every interval here uses the t-distribution with n-1 degrees
of freedom.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

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
