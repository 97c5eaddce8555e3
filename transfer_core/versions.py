"""Versions per component: which code an artifact ran, in its key.

Every component whose code computes numbers carries an integer version beside that code:
- each strategy, dataset reader and estimator: its class's ``version``;
- each backbone defined here: its builder's ``version`` (``CifarResNetBody.version``); a timm or torchvision
  model: ``backbones.EXTERNAL_BODY_VERSION``, with the library's release besides;
- the training loop (``training.VERSION``), the evaluation every strategy shares
  (``strategies.base.EVALUATION_VERSION``), dataset selection (``datasets.prepare.VERSION``), each module of
  the data path (``data/*.py``'s ``VERSION``), loading pretrained weights (``pretrained.VERSION``) and the
  corruptions (``shifts.corruptions.VERSION``).

``code_versions`` gives the versions of exactly the code one artifact runs; the plan (``bench/pipeline/plan.py``) puts
them in its key. Raising one component's version rebuilds what ran that component, and what is built on it,
and nothing else. A change that moves a component's numbers without raising its version is caught by
``tests/test_versions.py``: it runs each component on tiny fixed inputs and compares the result with the
fingerprint recorded for the component's version (``tests/fingerprints.json``; ``python
tests/fingerprints.py --record`` records them again after a version is raised).
"""

from __future__ import annotations

from typing import Iterable, Optional

from . import pretrained, training
from .backbones import BACKBONES, backbone_version
from .data import data_path_versions, folders
from .datasets import DATASETS, create_dataset_reader
from .datasets import prepare as preparation
from .shifts import corruptions
from .strategies import STRATEGIES
from .strategies.base import EVALUATION_VERSION

# the parts that are not registered components: the training loop, the shared evaluation, weights loading, corruptions
PARTS = {
    "training": training.VERSION,
    "evaluation": EVALUATION_VERSION,
    "pretrained": pretrained.VERSION,
    "corruptions": corruptions.VERSION,
}


def code_versions(
    parts: Iterable[str] = (),
    *,
    datasets: Iterable[str] = (),
    data_backend: Optional[str] = None,
    backbone: Optional[str] = None,
    strategies: Iterable[str] = (),
    estimators: Iterable[str] = (),
) -> dict[str, int]:
    """The versions of the code an artifact runs: ``parts`` of ``PARTS``; the readers of ``datasets`` (by
    registered name) with the selection every dataset goes through, and, when ``data_backend`` is given, the
    data-path modules that load them under it (None: read without a loader, as a corruption reads its split,
    whose encoded images ``data/folders.py`` decodes);
    the ``backbone``; ``strategies`` and ``estimators`` by name. Sorted by component, so equal code gives
    equal keys."""
    versions = {}
    for part in parts:
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; known: {', '.join(PARTS)}")
        versions[part] = PARTS[part]
    for name in datasets:
        reader = create_dataset_reader(name)
        versions[f"dataset/{name}"] = reader.version
        versions["dataset selection"] = preparation.VERSION
        if data_backend is not None:
            versions.update(data_path_versions(reader.array_backed, data_backend))
        elif not reader.array_backed:  # read without a loader: encoded images decoded by the split's ``pixels``
            versions["data/folders"] = folders.VERSION
    if backbone is not None:
        versions[f"backbone/{backbone}"] = backbone_version(backbone)
    for name in strategies:
        versions[f"strategy/{name}"] = STRATEGIES.get(name).version
    for name in estimators:
        from .estimators import ESTIMATORS  # here: a plan without estimates need not load them

        versions[f"estimator/{name}"] = ESTIMATORS.get(name).version
    return dict(sorted(versions.items()))


def every_version() -> dict[str, int]:
    """Every registered component's version: what two machines compare to know they run the same code."""
    from .estimators import ESTIMATORS

    versions = code_versions(
        PARTS,
        datasets=DATASETS.names(),
        data_backend="torch",
        strategies=STRATEGIES.names(),
        estimators=ESTIMATORS.names(),
    )
    versions.update(data_path_versions(False, "dali"))
    for name in BACKBONES.names():
        versions[f"backbone/{name}"] = backbone_version(name)
    return dict(sorted(versions.items()))
