"""Nearest-centroid accuracy: the share (%) of the target's training images that lie nearest (Euclidean, on
unit-length features) to their own class's mean, leave-one-out: each image's own class mean is taken without it.
Cheaper than k-NN (one mean per class instead of every pair of images) and less swayed by a few close
neighbours; a linear probe with no fitting."""

from __future__ import annotations

import numpy as np

from .base import Estimator, EstimatorInputs, register_estimator


@register_estimator("centroid")
class NearestCentroid(Estimator):
    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)
    paper = "nearest class mean on frozen features (Mensink et al. 2013; prototypes in Snell et al. 2017)"
    reference = "scikit-learn NearestCentroid() with LeaveOneOut"
    features = "scaled to unit length per image, then Euclidean distance to class means: any width compares"

    def score(self, inputs: EstimatorInputs) -> float:
        features = inputs.features / np.maximum(np.linalg.norm(inputs.features, axis=1, keepdims=True), 1e-300)
        labels = inputs.labels
        classes = int(labels.max()) + 1
        counts = np.bincount(labels, minlength=classes).astype(np.float64)
        sums = np.zeros((classes, features.shape[1]))
        np.add.at(sums, labels, features)
        means = sums / np.maximum(counts, 1)[:, None]
        # squared distances to every class mean: |x|² − 2 x·m + |m|²; a class with no images is never nearest
        distances = (features**2).sum(1, keepdims=True) - 2 * features @ means.T + (means**2).sum(1)
        distances[:, counts == 0] = np.inf
        # the image's own class mean without the image: (sum − x) / (n − 1); a class of one image has none left
        rows = np.arange(len(labels))
        own_count = counts[labels] - 1
        own_mean = (sums[labels] - features) / np.maximum(own_count, 1)[:, None]
        own = ((features - own_mean) ** 2).sum(1)
        distances[rows, labels] = np.where(own_count > 0, own, np.inf)
        # a tie goes to the lowest class index, as scikit-learn's argmin does
        return float(100.0 * (distances.argmin(axis=1) == labels).mean())
