"""A suite's data and its expansion into cells: one per source, target, backbone, strategy and seed."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Optional

from bench.errors import SuiteError  # noqa: F401  (raised here, caught by the command line)
from bench.pipeline.shifts import DatasetShift
from bench.pipeline.suite.schema import Cell, DatasetSpec, DataSettings, SourceSpec, Suite
from transfer_core.datasets import (
    DataUnavailableError,
    create_dataset_reader,
)
from transfer_core.pretrained import input_config


def data_root(suite: Optional[Suite], override: Optional[str] = None) -> Path:
    """--data-root, then BENCH_DATA_ROOT, then the suite's data.root, or data/ for a command without a suite
    (relative to the working directory)."""
    return Path(override or os.environ.get("BENCH_DATA_ROOT") or (suite.data.root if suite else DataSettings.root))


def data_specs(suite: Suite) -> list[tuple[str, DatasetSpec]]:
    """Every dataset a suite reads, with where the suite names it: sources', targets' and shifts'."""
    specs = [
        (f"source[{i}]" if len(suite.sources) > 1 else "source", s.data) for i, s in enumerate(suite.sources) if s.data
    ]
    specs += [(f"targets[{i}]", t) for i, t in enumerate(suite.targets)]
    specs += [
        (f"targets[{i}].shifts ({shift.label})", shift.data)
        for i, t in enumerate(suite.targets)
        for shift in t.shifts
        if isinstance(shift, DatasetShift)
    ]
    return specs


def check_data(suite: Suite, root: Path) -> None:
    """Fails fast, before anything runs, if a dataset is missing and cannot be downloaded."""
    for where, spec in data_specs(suite):
        try:
            create_dataset_reader(spec.dataset).check(root, spec.options, suite.data.download)
        except DataUnavailableError as e:
            raise SuiteError(f"{suite.path}: {where} ({spec.dataset}): {e}") from None


def targets_for(source: SourceSpec, targets: tuple[DatasetSpec, ...]) -> list[DatasetSpec]:
    """The targets as a source's cells see them: under a model pretrained by timm or torchvision, at its
    input size and normalised with its mean and std (scratch too, so a row compares like with like)."""
    config = input_config(source.pretrained) if source.pretrained else None
    if config is None:
        return list(targets)
    mean, std, side = config
    return [dataclasses.replace(t, resolution=side, normalization=(mean, std)) for t in targets]


def resampled(spec: Optional[DatasetSpec], data: DataSettings, seed: int) -> Optional[DatasetSpec]:
    """The data a training seed sees: with ``resample: per_seed``, subsets and splits drawn with data seed
    ``data.seed + seed`` (in the spec, so in every key that reads it); otherwise the spec as it is."""
    if spec is None or data.resample == "none":
        return spec
    shifts = tuple(
        dataclasses.replace(s, data=resampled(s.data, data, seed)) if isinstance(s, DatasetShift) else s
        for s in spec.shifts
    )
    return dataclasses.replace(
        spec, selection=dataclasses.replace(spec.selection, seed=data.seed + seed), shifts=shifts
    )


def expand_cells(suite: Suite, pattern: Optional[str] = None) -> list[Cell]:
    """source x backbone x seed x target x strategy, grouped so a source model is reused while in memory."""
    # one spec object per dataset and seed, shared by every cell that reads it (the plan memoises by object)
    targets = {i: targets_for(source, suite.targets) for i, source in enumerate(suite.sources)}
    sources = {
        (i, seed): dataclasses.replace(source, data=resampled(source.data, suite.data, seed))
        if source.data is not None and suite.data.resample == "per_seed"
        else source
        for i, source in enumerate(suite.sources)
        for seed in suite.seeds
    }
    seen_targets = {
        (i, j, seed): resampled(target, suite.data, seed)
        for i in targets
        for j, target in enumerate(targets[i])
        for seed in suite.seeds
    }
    cells = [
        Cell(sources[i, seed], seen_targets[i, j, seed], backbone, strategy, seed)
        for i, source in enumerate(suite.sources)
        for backbone in ((source.pretrained.backbone,) if source.pretrained else suite.backbones)
        for seed in suite.seeds
        for j in range(len(targets[i]))
        for strategy in suite.strategies
    ]
    if pattern:
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise SuiteError(f"--filter: not a valid regular expression: {e}") from None
        cells = [c for c in cells if regex.search(c.cell_id)]
    return cells
