"""Fixed inputs for the transferability estimators' reference test (``tests/test_estimators.py``) and for the
script that computes the reference values with the authors' code (``scripts/estimator_references.py``)."""

import numpy as np

# (images, feature width, target classes, source classes): more images than features, and fewer (LogME takes
# another branch; the covariance estimators are singular there)
CASES = {"tall": (150, 12, 5, 7), "wide": (40, 64, 4, 10)}


def fixed_inputs(case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (N, D) float64, labels (N,) int64, source softmax (N, C_s) float64): class-structured features,
    non-negative as a ReLU body's are, and a source head that sees part of that structure."""
    n, d, classes, source_classes = CASES[case]
    rng = np.random.RandomState(20260312)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    centres = rng.normal(0, 1.0, (classes, d))
    features = np.maximum(centres[labels] + rng.normal(0, 1.5, (n, d)), 0.0)
    logits = features @ rng.normal(0, 0.5, (d, source_classes)) + rng.normal(0, 0.5, (n, source_classes))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return features, labels.astype(np.int64), probs / probs.sum(axis=1, keepdims=True)
