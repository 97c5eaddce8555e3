"""LogME: the log marginal evidence of a Bayesian linear model from the features to each class's indicator,
maximised over its prior and noise precisions (You et al., ICML 2021), by the fixed-point iteration of their
2021 follow-up ("Ranking and Tuning Pre-trained Models", arXiv 2110.10545, Algorithm 2), averaged over classes."""

from __future__ import annotations

import numpy as np

from .base import Estimator, EstimatorInputs, one_hot, register_estimator


@register_estimator("logme")
class LogME(Estimator):
    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)
    paper = "You et al. 2021, LogME (ICML); fixed-point iteration of arXiv 2110.10545"
    reference = "thuml/LogME@56551ca LogME.py LogME._fit_fixed_point"
    features = "raw: the evidence depends on their scale, and D enters the prior term (D/2 log alpha)"

    def score(self, inputs: EstimatorInputs) -> float:
        f, (n, d) = inputs.features, inputs.features.shape
        if n > d:  # the SVD through the D x D Gram matrix: N x D at once would cost more
            _, s, vh = np.linalg.svd(f.T @ f)
            s = np.sqrt(s)
            rank = int(np.sum(s > 1e-10))
            s, vh = s[:rank], vh[:rank]
            u = (f @ vh.T) / s
        else:
            u, s, _ = np.linalg.svd(f, full_matrices=False)
        sigma = s**2  # the Gram matrix's eigenvalues
        y = one_hot(inputs.labels)
        evidences = []
        for column in y.T:
            x2 = (u.T @ column) ** 2
            rest = (column**2).sum() - x2.sum()  # the part of y outside the features' span
            alpha, beta = 1.0, 1.0
            for _ in range(11):  # converges in two or three steps; the reference stops at 11
                t = alpha / beta
                gamma = (sigma / (sigma + t)).sum()
                m2 = (sigma * x2 / (t + sigma) ** 2).sum()
                res2 = (x2 / (1 + sigma / t) ** 2).sum() + rest
                alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
                if abs(alpha / beta - t) / t <= 1e-3:
                    break
            evidence = (
                d / 2 * np.log(alpha)
                + n / 2 * np.log(beta)
                - 0.5 * np.log(alpha + beta * sigma).sum()
                - beta / 2 * res2
                - alpha / 2 * m2
                - n / 2 * np.log(2 * np.pi)
            )
            evidences.append(evidence / n)
        return float(np.mean(evidences))
