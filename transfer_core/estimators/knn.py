"""k-nearest-neighbour accuracy: the share (%) of the target's training images whose k nearest other images
(by cosine similarity of their features) vote for the right class, leave-one-out. The plainest check of how
well the features separate the target's classes, with no model fitted."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_range
from .base import Estimator, EstimatorInputs, register_estimator

_QUERIES_PER_BLOCK = 2048  # rows of the similarity matrix held at once


@register_estimator("knn")
class KNN(Estimator):
    version = 1  # raise it in any change that moves its numbers (transfer_core/versions.py)
    paper = "k-NN accuracy on frozen features (e.g. Wu et al. 2018; Caron et al. 2021's DINO evaluation)"
    reference = "scikit-learn KNeighborsClassifier(metric='cosine', algorithm='brute') with LeaveOneOut"
    features = "scaled to unit length per image (cosine similarity): any width compares"

    @dataclass(frozen=True)
    class Options:
        k: int = 10  # neighbours that vote

        def __post_init__(self):
            check_range("k", self.k, 1, None)

    def score(self, inputs: EstimatorInputs) -> float:
        features = torch.from_numpy(inputs.features)
        features = features / features.norm(dim=1, keepdim=True).clamp_min(1e-300)
        labels = torch.from_numpy(inputs.labels)
        k, n = min(self.options.k, len(labels) - 1), len(labels)
        classes = int(labels.max()) + 1
        correct = 0
        for start in range(0, n, _QUERIES_PER_BLOCK):
            block = features[start : start + _QUERIES_PER_BLOCK]
            similarity = block @ features.T
            rows = torch.arange(len(block))
            similarity[rows, rows + start] = -torch.inf  # leave the image itself out
            neighbours = similarity.topk(k, dim=1).indices
            votes = torch.zeros(len(block), classes, dtype=torch.int64)
            votes.scatter_add_(1, labels[neighbours], torch.ones_like(neighbours))
            # a tie goes to the lowest class index, as scikit-learn's majority vote does
            correct += int((votes.argmax(dim=1) == labels[start : start + len(block)]).sum())
        return 100.0 * correct / n
