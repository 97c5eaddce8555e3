"""What a transferability estimator is.

An estimator is one class in one file, registered by name. It receives what one forward pass of the target's
training images through the source model gives (``EstimatorInputs``) and returns one number, higher meaning
"this source should transfer better". It describes itself: the paper, the reference code its test is checked
against (with the commit), what it reads, and how it treats the features' scale and width, which decides
whether it can rank backbones of different widths. The plan (``bench/pipeline/plan.py``) makes the forward pass and
every estimator the suite lists one artifact per source, target, backbone and seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from ..registry import Registry


@dataclass(frozen=True)
class EstimatorInputs:
    features: np.ndarray  # (N, D) float64: the source body's pooled features of the target's training images
    labels: np.ndarray  # (N,) int64 target labels in [0, C)
    # (N, C_s) float64 softmax of the source model's own classifier on those images; None when it has none
    source_probs: Optional[np.ndarray] = None


class Estimator:
    name: ClassVar[str]
    version: ClassVar[int]  # raise it in any change that moves its score: it is in the key of its estimates
    reads_source_head: ClassVar[bool] = False  # LEEP and NCE score the source's predictions, not its features
    paper: ClassVar[str] = ""
    reference: ClassVar[str] = ""  # the code the implementation's test compares with, at a commit
    features: ClassVar[str] = ""  # how the features' scale and width enter the score

    @dataclass(frozen=True)
    class Options:
        pass

    def __init__(self, options: Optional["Estimator.Options"] = None):
        self.options = options if options is not None else self.Options()

    def score(self, inputs: EstimatorInputs) -> float:
        raise NotImplementedError

    @classmethod
    def describe(cls) -> dict:
        """What a record and ``bench list`` say about the estimator."""
        return {
            "paper": cls.paper,
            "reference": cls.reference,
            "reads": "source predictions" if cls.reads_source_head else "features",
            "features": cls.features,
        }


ESTIMATORS: Registry[type[Estimator]] = Registry("estimator", versioned=True)


def register_estimator(name: str):
    return ESTIMATORS.register_class(name)


def one_hot(labels: np.ndarray, classes: Optional[int] = None) -> np.ndarray:
    classes = int(labels.max()) + 1 if classes is None else classes
    out = np.zeros((len(labels), classes))
    out[np.arange(len(labels)), labels] = 1.0
    return out
