"""NCE: the negative conditional entropy of the target labels given the source's predicted labels (Tran et al.,
ICCV 2019), both as seen on the target's training images: how well the source's hard labels pin down the
target's."""

from __future__ import annotations

import numpy as np

from .base import Estimator, EstimatorInputs, register_estimator


@register_estimator("nce")
class NCE(Estimator):
    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)
    reads_source_head = True
    paper = "Tran et al. 2019, Transferability and Hardness of Supervised Classification Tasks (ICCV)"
    reference = "thuml/LogME@56551ca NCE.py (the NCE paper published no code)"
    features = "none: reads the source classifier's predicted labels"

    def score(self, inputs: EstimatorInputs) -> float:
        source = inputs.source_probs.argmax(axis=1)
        labels = inputs.labels
        joint = np.zeros((labels.max() + 1, inputs.source_probs.shape[1]))
        np.add.at(joint, (labels, source), 1.0 / len(labels))  # P(y, z)
        p_z = joint.sum(axis=0)
        used = p_z > 0  # source classes never predicted carry no weight
        conditional = joint[:, used].T / p_z[used, None] + 1e-20  # P(y | z); the reference's 1e-20 keeps log finite
        entropy = -(conditional * np.log(conditional)).sum(axis=1)  # H(Y | Z = z)
        return float(-(entropy * p_z[used]).sum())
