"""Transferability estimates a suite asks for (``estimators:``): which estimators, what one estimate is, and
what its records hold.

An estimate is one source model scored for one target by every estimator the suite lists, from one forward
pass of the target's training images (``transfer_core/estimators``): one artifact per source, target,
backbone and seed, needing no fine-tuning. Its records (one per estimator) go to ``estimates.jsonl``, beside
the cells' own; ``bench rank`` runs them alone, and the report checks their rankings of the sources against
the rankings the suite's strategies measured (``bench/results/transferability.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from bench.errors import SuiteError
from transfer_core.estimators import ESTIMATORS

ESTIMATE_RECORDS = "estimates.jsonl"


@dataclass(frozen=True)
class EstimatorSpec:
    name: str
    options: Any  # the estimator's own Options dataclass

    def describe(self) -> dict:
        return {"name": self.name, "options": dataclasses.asdict(self.options)}


def parse_estimators(raw: Any, where: str, build) -> tuple[EstimatorSpec, ...]:
    """``[logme, leep, {knn: {k: 20}}]``: names, or one-key mappings of a name to its options. ``build`` makes
    an Options dataclass from a mapping, with the suite's type and range checks."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise SuiteError(f"{where}: expected a list of estimator names; known: {', '.join(ESTIMATORS.names())}")
    specs = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if isinstance(item, dict) and len(item) == 1:
            name, options = next(iter(item.items()))
        elif isinstance(item, str):
            name, options = item, {}
        else:
            raise SuiteError(f"{at}: expected an estimator name or {{name: {{options}}}}, got {item!r}")
        if name not in ESTIMATORS:
            raise SuiteError(f"{at}: unknown estimator {name!r}; known: {', '.join(ESTIMATORS.names())}")
        if not isinstance(options, dict):
            raise SuiteError(f"{at}.{name}: expected a mapping of options, got {options!r}")
        cls = ESTIMATORS.get(name).Options
        allowed = {f.name for f in dataclasses.fields(cls)}
        for key in options:
            if key not in allowed:
                raise SuiteError(f"{at}.{name}.{key}: unknown option; allowed: {', '.join(sorted(allowed)) or 'none'}")
        specs.append(EstimatorSpec(name, build(cls, options, f"{at}.{name}")))
    names = [s.name for s in specs]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise SuiteError(f"{where}[{i}]: {name} is listed twice")
    return tuple(specs)


@dataclass(frozen=True)
class Estimate:
    """One source model scored for one target: what an estimate's records are named by."""

    source: Any  # SourceSpec
    target: Any  # DatasetSpec
    backbone: str
    seed: int

    @property
    def cell_id(self) -> str:
        return f"{self.source.label}->{self.target.label}/{self.backbone}/estimate/seed{self.seed}"

    def identity(self) -> dict:
        return {
            "cell_id": self.cell_id,
            "source": self.source.label,
            "target": self.target.label,
            "backbone": self.backbone,
            "seed": self.seed,
        }


def estimates_of(cells) -> list[Estimate]:
    """The estimates the cells' sources, targets, backbones and seeds make, each once, in the cells' order."""
    found: dict[str, Estimate] = {}
    for cell in cells:
        estimate = Estimate(cell.source, cell.target, cell.backbone, cell.seed)
        found.setdefault(estimate.cell_id, estimate)
    return list(found.values())


def estimate_problem(record) -> Optional[str]:
    """What makes an estimate record unusable, or None."""
    if not isinstance(record, dict):
        return f"expected a record (a JSON object), found {type(record).__name__}"
    from bench.results.records import RECORD_SCHEMA_VERSION

    if record.get("schema_version") != RECORD_SCHEMA_VERSION:
        return f"schema_version {record.get('schema_version')!r}: this version of bench reads {RECORD_SCHEMA_VERSION}"
    for name in ("cell_id", "source", "target", "backbone", "estimator", "status", "config_hash"):
        if not isinstance(record.get(name), str):
            return f"{name}: expected a string, found {record.get(name)!r}"
    if not isinstance(record.get("seed"), int) or isinstance(record.get("seed"), bool):
        return f"seed: expected an integer, found {record.get('seed')!r}"
    score = record.get("score")
    if record["status"] == "ok" and (isinstance(score, bool) or not isinstance(score, (int, float))):
        return f"score: a record with status ok has a number, found {score!r}"
    if not isinstance(record.get("compute"), dict):
        return f"compute: expected an object, found {record.get('compute')!r}"
    return None
