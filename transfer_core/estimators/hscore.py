"""H-score (Bao et al., ICIP 2019): tr(cov(f)^-1 cov(E[f | y])), how much of the features' variance lies
between the target's classes. With many features and few images cov(f) is poorly estimated and the score
unstable; Ibrahim et al. (NeurIPS 2022 "Newer is not always better") replace it by the Ledoit-Wolf shrinkage
estimate cov_a = (1 - a) cov + a mu I and scale the between-class covariance by (1 - a). That is the default
here (``shrinkage: false`` gives Bao et al.'s score, with a pseudo-inverse)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Estimator, EstimatorInputs, register_estimator


@register_estimator("hscore")
class HScore(Estimator):
    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)
    paper = "Bao et al. 2019, H-score (ICIP); shrinkage of Ibrahim et al. 2022 (NeurIPS)"
    reference = (
        "thuml/Transfer-Learning-Library@c4aa59e tllib/ranking/hscore.py regularized_h_score (h_score without "
        "shrinkage; neither paper published code)"
    )
    features = "invariant to any invertible linear map of them (scale included); sums over D, so it grows with width"

    @dataclass(frozen=True)
    class Options:
        shrinkage: bool = True  # Ledoit-Wolf shrinkage of the covariance (Ibrahim et al. 2022); false: the original

    def __init__(self, options: HScore.Options | None = None):
        super().__init__(options)
        # imported here, not with the module: only a run that estimates pays scikit-learn's import (about 1 s,
        # in every worker process), and before the estimate's clock starts, so it is no estimate's time
        from sklearn.covariance import LedoitWolf

        self._ledoit_wolf = LedoitWolf

    def score(self, inputs: EstimatorInputs) -> float:
        f = inputs.features - inputs.features.mean(axis=0)
        labels, n = inputs.labels, len(inputs.labels)
        # cov(E[f | y]) as np.cov of the per-image class means computes it: (N - 1) in the denominator
        means = np.stack([f[labels == c].mean(axis=0) for c in np.unique(labels)])
        counts = np.bincount(labels)[np.unique(labels)]
        between = (means.T * counts) @ means / (n - 1)
        if self.options.shrinkage:
            fitted = self._ledoit_wolf(assume_centered=False).fit(f)
            covariance, between = fitted.covariance_, (1 - fitted.shrinkage_) * between
        else:
            covariance = np.cov(f, rowvar=False)
        return float(np.trace(np.linalg.pinv(covariance, rcond=1e-15) @ between))
