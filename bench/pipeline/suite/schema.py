"""The suite's parts as typed objects: datasets, sources, strategies, data settings, the suite, and its cells."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, Literal, Optional

from bench.errors import SuiteError  # noqa: F401  (raised here, caught by the command line)
from bench.pipeline.tuning import Tuning
from transfer_core.cache import content_key
from transfer_core.data.augment import Augmentation
from transfer_core.datasets import (
    Selection,
    create_dataset_reader,
)
from transfer_core.pretrained import PretrainedSpec
from transfer_core.runtime import RuntimeSettings
from transfer_core.strategies import STRATEGIES
from transfer_core.training import TrainRecipe

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class DatasetSpec:
    dataset: str
    options: Any  # the reader's own Options dataclass
    selection: Selection
    augmentation: Augmentation
    label: str  # how cells and tables name this data
    resolution: Optional[int] = None  # side of the square images the model sees; None = the dataset's own
    family: Optional[str] = None  # a data-size sweep's targets share one: the label of the target listed
    normalization: Optional[tuple] = None  # (mean, std) a pretrained source was trained with; None = the data's own
    # test-time distribution shifts (bench/pipeline/shifts.py): scored by its models, in no key of theirs (nothing
    # trains or chooses on them), so adding one re-evaluates nothing else
    shifts: tuple = ()

    @property
    def has_validation(self) -> bool:
        """Whether the prepared data will have a validation split: the dataset's own, or a share carved out."""
        official = create_dataset_reader(self.dataset).has_official_val(self.options) and self.selection.official_val
        return official or self.selection.val_fraction > 0

    def content_key(self) -> str:
        """The hash of ``describe()``: how prepared datasets are looked up. Computed once per spec (specs do
        not change once parsed): a large suite looks its data up thousands of times."""
        if "_content_key" not in self.__dict__:
            self.__dict__["_content_key"] = content_key(self.describe())
        return self.__dict__["_content_key"]

    def describe(self, test_split: bool = True, located: bool = True) -> dict:
        """What the data is. ``test_split=False``: what training sees, which the test split's size is not part of.
        ``located=False``: without the options that only say where it is (a key has the content's fingerprint)."""
        selection = dataclasses.asdict(self.selection)
        if not test_split:
            del selection["test_per_class"]
        if not create_dataset_reader(self.dataset).has_official_val(self.options):
            del selection["official_val"]  # nothing to choose between
        options = dataclasses.asdict(self.options)
        if not located:
            for name in create_dataset_reader(self.dataset).location_options:
                del options[name]
        described = {
            "dataset": self.dataset,
            "options": options,
            "selection": selection,
            "augmentation": dataclasses.asdict(self.augmentation),
            "resolution": self.resolution,
        }
        if self.normalization is not None:
            described["normalization"] = [list(self.normalization[0]), list(self.normalization[1])]
        return described


@dataclass(frozen=True)
class SourceSpec:
    """A source model: trained in the suite on ``data`` with ``recipe``, or ``pretrained`` weights loaded."""

    data: Optional[DatasetSpec]
    recipe: Optional[TrainRecipe]
    pretrained: Optional[PretrainedSpec] = None

    @property
    def label(self) -> str:
        return self.pretrained.label if self.pretrained else self.data.label


@dataclass(frozen=True)
class StrategySpec:
    """A strategy's settings. With a ``grid`` (keys of its section given as lists), ``options`` and ``recipe``
    hold the grid's first point, and ``points`` gives every point as a spec of its own."""

    name: str
    options: Any
    recipe: TrainRecipe
    grid: tuple[tuple[str, tuple], ...] = ()  # (key, values) per listed key, in the section's order
    point: Optional[dict] = None  # a grid point's spec: the values it takes from the grid
    trials: tuple[dict, ...] = ()  # the points tuning: draws for it (bench/pipeline/tuning.py), instead of a grid

    @property
    def searched(self) -> bool:
        """Trained at several points (a grid, or tuning's trials), the best on validation kept."""
        return bool(self.grid or self.trials)

    def describe(self) -> dict:
        described = {
            "name": self.name,
            "options": dataclasses.asdict(self.options),
            "recipe": dataclasses.asdict(self.recipe),
        }
        if self.grid:
            described["grid"] = {key: list(values) for key, values in self.grid}
        if self.trials:
            described["trials"] = list(self.trials)
        return described

    def points(self) -> list["StrategySpec"]:
        """Every point of the grid, in order (the last key varying fastest), each with concrete settings."""
        if not self.searched:
            return [self]
        keys = [key for key, _ in self.grid]
        option_keys = {f.name for f in dataclasses.fields(self.options)}
        specs = []
        grid = (dict(zip(keys, values)) for values in itertools.product(*(values for _, values in self.grid)))
        for point in self.trials or grid:
            options = dataclasses.replace(self.options, **{k: v for k, v in point.items() if k in option_keys})
            recipe = dataclasses.replace(self.recipe, **{k: v for k, v in point.items() if k not in option_keys})
            specs.append(StrategySpec(self.name, options, recipe, point=point))
        return specs


@dataclass(frozen=True)
class DataSettings:
    root: str = "data"  # folder holding the datasets; --data-root and BENCH_DATA_ROOT override it
    download: bool = False  # allow torchvision to download missing CIFAR files
    seed: int = 0  # seed of subsets and validation splits
    # "none": the same subsets, validation split and test subset for every training seed; "per_seed": drawn
    # anew per seed (data seed = seed + training seed), so intervals over seeds include data-sampling variance
    resample: Literal["none", "per_seed"] = "none"


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    path: str
    data: DataSettings
    sources: tuple[SourceSpec, ...]
    targets: tuple[DatasetSpec, ...]
    backbones: tuple[str, ...]
    strategies: tuple[StrategySpec, ...]  # the strategies listed: one cell each per source, target, backbone, seed
    runtime: RuntimeSettings
    seeds: tuple[int, ...]
    ingredients: tuple[StrategySpec, ...] = ()  # strategies the listed ones are built from but the suite does not list
    tuning: Tuning = Tuning()  # equal-budget search and refit (bench/pipeline/tuning.py)
    # transferability estimators scoring each source for each target (bench/pipeline/estimates.py)
    estimators: tuple = ()

    def strategy(self, name: str) -> StrategySpec:
        """A strategy's settings, listed or an ingredient (then with its own defaults and the suite's ``train``)."""
        for spec in self.strategies + self.ingredients:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def ingredients_of(self, name: str) -> tuple[str, ...]:
        return STRATEGIES.get(name).ingredients_of(self.strategy(name).options)

    def fitted_models(self, name: str) -> list[str]:
        """The strategies whose fitted models a cell of ``name`` is built from: its own (if it trains) and
        its ingredients', recursively, each once."""
        names = [name] if STRATEGIES.get(name).trains else []
        for ingredient in self.ingredients_of(name):
            names += [n for n in self.fitted_models(ingredient) if n not in names]
        return names

    def uses_source(self, name: str) -> bool:
        """Whether the strategy, or any model it is built from, starts from the source model."""
        return any(STRATEGIES.get(n).uses_source for n in self.fitted_models(name))


@dataclass(frozen=True)
class Cell:
    """One unit of work and one identity in the results store."""

    source: SourceSpec
    target: DatasetSpec
    backbone: str
    strategy: StrategySpec
    seed: int

    @property
    def cell_id(self) -> str:
        return f"{self.source.label}->{self.target.label}/{self.backbone}/{self.strategy.name}/seed{self.seed}"

    def identity(self) -> dict:
        """What names the cell in its records and in the plan."""
        return {
            "cell_id": self.cell_id,
            "source": self.source.label,
            "target": self.target.label,
            "backbone": self.backbone,
            "strategy": self.strategy.name,
            "seed": self.seed,
        }
