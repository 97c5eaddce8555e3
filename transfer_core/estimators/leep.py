"""LEEP: the log expected empirical prediction (Nguyen et al., ICML 2020). The source's predicted distribution
over its own classes z, turned into a target prediction through the empirical P(y | z) on the target's
training images; the score is the mean log-likelihood of the true target labels under it."""

from __future__ import annotations

import numpy as np

from .base import Estimator, EstimatorInputs, one_hot, register_estimator


@register_estimator("leep")
class LEEP(Estimator):
    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)
    reads_source_head = True
    paper = "Nguyen et al. 2020, LEEP (ICML)"
    reference = "thuml/LogME@56551ca LEEP.py (the LEEP paper published no code)"
    features = "none: reads the source classifier's softmax, so any width and any backbone compare"

    def score(self, inputs: EstimatorInputs) -> float:
        theta, labels = inputs.source_probs, inputs.labels
        joint = one_hot(labels).T @ theta / len(labels)  # (C_t, C_s): P(y, z)
        per_source_class = joint.sum(axis=0, keepdims=True)
        # a source class no image is ever given any probability of has no P(y | z), and no weight either
        conditional = np.divide(joint, per_source_class, out=np.zeros_like(joint), where=per_source_class > 0)
        expected = theta @ conditional.T  # (N, C_t): the empirical prediction
        return float(np.mean(np.log(expected[np.arange(len(labels)), labels])))
