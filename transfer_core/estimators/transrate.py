"""TransRate (Huang et al., ICML 2022): the mutual information between features and labels measured by coding
rate, R(Z) - R(Z | Y), with R(Z) = 1/2 log det(I + Z^T Z / (n eps)). Computed as the authors' code does
(``generate_transrate/transrate.py`` ``pre_transrate`` and ``extract_result_utils.process_transrate_logs`` at
their defaults): features centred, each image's vector scaled to unit length, the eigenvalues of Z^T Z / n and
of each class's Z_c^T Z_c / n_c, R(Z | Y) weighted by class size, and both rates divided by the rank of Z^T Z,
which is what lets bodies of different widths compare."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..checks import check_range
from .base import Estimator, EstimatorInputs, register_estimator


@register_estimator("transrate")
class TransRate(Estimator):
    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)
    paper = "Huang et al. 2022, Frustratingly Easy Transferability Estimation (ICML)"
    reference = "Long-Kai/TransRate@247d41a pre_transrate + process_transrate_logs (defaults, eps 1e-4)"
    features = "centred and scaled to unit length per image; rates divided by the feature rank"

    @dataclass(frozen=True)
    class Options:
        eps: float = 1e-4  # the distortion eps^2 of the coding rate

        def __post_init__(self):
            check_range("eps", self.eps, 0.0, None, low_open=True)

    def score(self, inputs: EstimatorInputs) -> float:
        f = inputs.features - inputs.features.mean(axis=0)
        z = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-300)
        labels, n = inputs.labels, len(inputs.labels)
        gram = z.T @ z / n
        rank = np.linalg.matrix_rank(gram)

        def rate(matrix: np.ndarray) -> float:
            eigenvalues = np.abs(np.linalg.eigvalsh(matrix))
            return float(np.log(1 + eigenvalues / self.options.eps).sum())

        overall = rate(gram)
        given_label = 0.0
        for c in np.unique(labels):
            members = z[labels == c]
            given_label += len(members) / n * rate(members.T @ members / len(members))
        return (overall - given_label) / rank / 2
