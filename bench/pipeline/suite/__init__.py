"""Suite files: strict validation into typed objects, and expansion into cells.

Every mistake becomes a ``SuiteError`` naming the field and what is allowed, raised before any training and
before anything is written. The steps, one module each: ``convert`` (typed conversion of YAML mappings),
``schema`` (the suite's parts as dataclasses), ``sections`` (targets, sources, strategies), ``parse`` (a file
into a ``Suite``), ``cells`` (its data and its cells)."""

from bench.errors import SuiteError
from bench.pipeline.suite.cells import check_data, data_root, data_specs, expand_cells, resampled, targets_for
from bench.pipeline.suite.parse import load_suite, parse_suite, point_text
from bench.pipeline.suite.schema import Cell, DatasetSpec, DataSettings, SourceSpec, StrategySpec, Suite
from bench.pipeline.suite.sections import default_strategy_spec

__all__ = [
    "SuiteError",
    "Cell",
    "DataSettings",
    "DatasetSpec",
    "SourceSpec",
    "StrategySpec",
    "Suite",
    "default_strategy_spec",
    "load_suite",
    "parse_suite",
    "point_text",
    "check_data",
    "data_root",
    "data_specs",
    "expand_cells",
    "resampled",
    "targets_for",
]
