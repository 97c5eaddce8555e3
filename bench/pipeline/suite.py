"""Suite files: strict validation into typed objects, and expansion into cells.

Every mistake becomes a ``SuiteError`` naming the field and what is allowed, raised before any
training and before anything is written.

Longer than the other modules on purpose: it is the suite schema, one document read top to bottom (every
section's dataclass, its checks, and the expansion into cells), which split into files would scatter.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from bench.errors import SuiteError  # noqa: F401  (raised here, caught by the command line)
from bench.pipeline.estimates import parse_estimators
from bench.pipeline.shifts import DatasetShift, parse_shifts
from bench.pipeline.tuning import Tuning, space_of, trial_points
from transfer_core.backbones import check_backbone
from transfer_core.cache import content_key
from transfer_core.data.augment import Augmentation
from transfer_core.datasets import (
    DATASETS,
    DataUnavailableError,
    Selection,
    create_dataset_reader,
)
from transfer_core.pretrained import LIBRARIES, PretrainedSpec, check_spec, input_config
from transfer_core.registry import UnknownNameError
from transfer_core.runtime import RuntimeSettings
from transfer_core.strategies import STRATEGIES
from transfer_core.training import TrainRecipe

SCHEMA_VERSION = 1


# --- typed, strict conversion of YAML mappings -------------------------------------------------


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None)) + " or null"
    if origin in (list, tuple):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except SuiteError:
                pass
        raise SuiteError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise SuiteError(f"{where}: {value!r} is not allowed; choose {_type_name(tp)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise SuiteError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        items = [_convert(v, typing.get_args(tp)[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if not isinstance(value, bool):
            raise SuiteError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SuiteError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SuiteError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SuiteError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported field type {tp} at {where}")


def _fields(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _check_keys(mapping: dict, allowed: set[str], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            shown = key if isinstance(key, str) and key.isprintable() and key.strip() else repr(key)
            raise SuiteError(f"{where}.{shown}: unknown key; allowed: {', '.join(sorted(allowed))}")


def _build(cls, mapping: dict, where: str, base: Optional[dict] = None):
    """Instantiates dataclass ``cls`` from the keys of ``mapping`` it declares (defaults from ``base``,
    then the class). Range checks live in the dataclasses' ``__post_init__``; their ValueErrors come
    back as SuiteErrors with the field's path."""
    types = _fields(cls)
    values = dict(base or {})
    for key, value in mapping.items():
        if key in types:
            values[key] = _convert(value, types[key], f"{where}.{key}")
    try:
        return cls(**values)
    except ValueError as e:
        raise SuiteError(f"{where}.{e}") from None


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SuiteError(f"{where}: expected a mapping, got {value!r}")
    return value


# --- the suite's parts ----------------------------------------------------------------------


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


# --- parsing --------------------------------------------------------------------------------

_SELECTION_KEYS = {"classes", "per_class", "examples", "test_per_class", "val_fraction", "official_val"}
_REGIME_KEYS = ("per_class", "examples")  # a target may list several values of one: a data-size sweep
_RECIPE_KEYS = set(_fields(TrainRecipe))
_TOP_KEYS = {
    "schema_version",
    "name",
    "description",
    "data",
    "source",
    "targets",
    "backbones",
    "strategies",
    "estimators",
    "train",
    "runtime",
    "seeds",
    "tuning",
}


def _default_label(dataset: str, classes) -> str:
    if not classes:
        return dataset
    if all(isinstance(c, int) for c in classes) and list(classes) == list(range(classes[0], classes[0] + len(classes))):
        return f"{dataset}[{classes[0]}-{classes[-1]}]"
    return f"{dataset}[{','.join(map(str, classes))}]"


def _dataset_spec(raw: Any, where: str, data: DataSettings, extra_keys: set[str], val_default: float) -> DatasetSpec:
    mapping = _mapping(raw, where)
    if "dataset" not in mapping:
        raise SuiteError(f"{where}.dataset: missing; known datasets: {', '.join(DATASETS.names())}")
    name = mapping["dataset"]
    if isinstance(name, str) and ":" in name:  # ``hf:beans``: the reader ``hf``, its naming option ``beans``
        name, given = name.split(":", 1)
        if name in DATASETS and create_dataset_reader(name).named_by and given:
            mapping = {**mapping, "dataset": name, create_dataset_reader(name).named_by: given}
        else:
            named = [f"{n}:NAME" for n in DATASETS.names() if create_dataset_reader(n).named_by]
            raise SuiteError(
                f"{where}.dataset: {mapping['dataset']!r} is not a dataset; datasets named after a colon: "
                f"{', '.join(named)}"
            )
    if not isinstance(name, str) or name not in DATASETS:
        raise SuiteError(f"{where}.dataset: unknown dataset {name!r}; known: {', '.join(DATASETS.names())}")
    reader = create_dataset_reader(name)
    reader_keys = set(_fields(reader.Options))
    _check_keys(
        mapping, {"dataset", "name", "augment", "resolution"} | _SELECTION_KEYS | reader_keys | extra_keys, where
    )
    options = _build(reader.Options, {k: v for k, v in mapping.items() if k in reader_keys}, where)
    selection = _build(
        Selection,
        {k: v for k, v in mapping.items() if k in _SELECTION_KEYS},
        where,
        base={"val_fraction": val_default, "seed": data.seed},
    )
    augment_raw = dict(_mapping(mapping.get("augment"), f"{where}.augment"))
    _check_keys(augment_raw, set(_fields(Augmentation)), f"{where}.augment")
    if isinstance(augment_raw.get("flip"), bool):  # flip: true / false read as random / none
        augment_raw["flip"] = "random" if augment_raw["flip"] else "none"
    augmentation = _build(
        Augmentation,
        augment_raw,
        f"{where}.augment",
        base={**dataclasses.asdict(Augmentation()), **reader.augmentation_defaults},
    )
    resolution = _convert(mapping.get("resolution"), Optional[int], f"{where}.resolution")
    if resolution is not None and resolution < 1:
        raise SuiteError(f"{where}.resolution: {resolution} is outside [1, inf]")
    if not reader.array_backed:
        if resolution is None:
            raise SuiteError(
                f"{where}.resolution: {name} needs one: the side images are resized and cropped to, e.g. 224"
            )
        if augmentation.flip == "alternate":
            raise SuiteError(f"{where}.augment.flip: alternate needs an array dataset; use random or none for {name}")
    elif augmentation.random_resized_crop > 0:
        raise SuiteError(f"{where}.augment.random_resized_crop: only for image folders; {name} uses crop_padding")
    # datasets read from a path (image folders, npz files) are named after it
    named = Path(options.path).stem if getattr(options, "path", "") else name
    if reader.named_by and getattr(options, reader.named_by):
        named = f"{name}:{getattr(options, reader.named_by)}"
    label = mapping.get("name") or _default_label(named, selection.classes)
    if not isinstance(label, str):
        raise SuiteError(f"{where}.name: expected a string, got {label!r}")
    return DatasetSpec(name, options, selection, augmentation, label, resolution)


def _target_specs(raw: Any, where: str, data: DataSettings) -> list[DatasetSpec]:
    """A target, or one per size of a data-size sweep (``per_class: [10, 50, 200]`` or ``examples: [...]``).
    ``examples`` without a ``val_fraction`` carves 20% for validation, as VTAB-1k's 800/200 split does."""
    mapping = _mapping(raw, where)
    shifts = parse_shifts(
        mapping.get("shifts"),
        f"{where}.shifts",
        lambda entry, at: _dataset_spec(entry, at, data, set(), val_default=0.0),
    )
    return [dataclasses.replace(spec, shifts=shifts) for spec in _sized_targets(mapping, where, data)]


def _sized_targets(mapping: dict, where: str, data: DataSettings) -> list[DatasetSpec]:
    val_default = 0.2 if "examples" in mapping else 0.1
    swept = [key for key in _REGIME_KEYS if isinstance(mapping.get(key), list)]
    if not swept:
        return [_dataset_spec(mapping, where, data, {"shifts"}, val_default)]
    if len(swept) > 1:
        raise SuiteError(f"{where}: sweep one of per_class or examples, not both")
    key, sizes = swept[0], mapping[swept[0]]
    if not sizes or len(set(map(repr, sizes))) != len(sizes):
        raise SuiteError(f"{where}.{key}: expected a non-empty list of different sizes, got {sizes!r}")
    specs = [
        _dataset_spec({**mapping, key: size}, f"{where}.{key}[{i}]", data, {"shifts"}, val_default)
        for i, size in enumerate(sizes)
    ]
    family, unit = specs[0].label, "/class" if key == "per_class" else " examples"  # the size is not in the label
    return [
        dataclasses.replace(spec, label=f"{family} ({size}{unit})", family=family) for spec, size in zip(specs, sizes)
    ]


_PRETRAINED_KEYS = {"pretrained", "weights", "file", "name"}
_CHECKPOINT_KEYS = {"checkpoint", "backbone", "name"}


def _pretrained_source(mapping: dict, where: str) -> SourceSpec:
    """``{pretrained: "timm:NAME.TAG"}``, ``{pretrained: "torchvision:NAME", weights: ENUM}`` (either with an
    optional ``file``) or ``{checkpoint: PATH, backbone: NAME}``: weights loaded, nothing trained."""

    def text(key: str, required: bool = True) -> Optional[str]:
        value = mapping.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise SuiteError(f"{where}.{key}: expected a string, got {value!r}")
        return value

    if "checkpoint" in mapping:
        _check_keys(mapping, _CHECKPOINT_KEYS, where)
        if "backbone" not in mapping:
            raise SuiteError(
                f"{where}.backbone: missing; a checkpoint needs the backbone it was saved from, e.g. resnet8"
            )
        path = str(Path(text("checkpoint")).expanduser().resolve())  # workers may start in another folder
        spec = PretrainedSpec(
            "checkpoint", text("backbone"), None, path, text("name", False) or f"checkpoint:{Path(path).stem}"
        )
    else:
        _check_keys(mapping, _PRETRAINED_KEYS, where)
        library, _, model = text("pretrained").partition(":")
        if library not in LIBRARIES or not model:
            raise SuiteError(
                f"{where}.pretrained: expected timm:NAME.TAG or torchvision:NAME, got {mapping['pretrained']!r}"
            )
        if "weights" in mapping and library != "torchvision":
            raise SuiteError(f"{where}.weights: only for torchvision models; a timm model's tag names its weights")
        file = text("file", False)
        weights = text("weights", False)
        label = text("name", False) or (f"{model}.{weights or 'DEFAULT'}" if library == "torchvision" else model)
        spec = PretrainedSpec(library, model, weights, str(Path(file).expanduser().resolve()) if file else None, label)
    try:
        check_spec(spec)
    except (ValueError, UnknownNameError) as e:
        raise SuiteError(f"{where}: {e}") from None
    return SourceSpec(None, None, spec)


def _refuse_repeats(where: str, items: list, indexed: bool) -> None:
    """Two entries that describe the same thing (their names aside) would be one artifact under two names."""
    for i, item in enumerate(items):
        if item in items[:i]:
            at = (lambda n: f"{where}[{n}]") if indexed else (lambda n: where)
            raise SuiteError(f"{at(i)}: repeats {at(items.index(item))} (names aside); list it once")


def _refuse_grid(mapping: dict, where: str) -> None:
    """Outside a strategy's section a list is not a grid: say where grids go."""
    for key, value in mapping.items():
        if key in _RECIPE_KEYS and isinstance(value, list):
            raise SuiteError(
                f"{where}.{key}: a list of values is a grid, and grids belong in a strategy's section "
                f"(e.g. strategies: {{full_finetune: {{{key}: {value}}}}}), where each is trained and "
                "the best on validation kept"
            )


def _takes_list(tp) -> bool:
    if typing.get_origin(tp) is Union:
        return any(_takes_list(arg) for arg in typing.get_args(tp))
    return typing.get_origin(tp) in (list, tuple)


def _grid(cls, mapping: dict, where: str) -> tuple[tuple[str, tuple], ...]:
    """The keys of a strategy's section given as lists of values (where the key itself is not a list):
    the grid it is trained over."""
    declared = {**_fields(TrainRecipe), **_fields(cls.Options)}
    grid = []
    for key, value in mapping.items():
        if not isinstance(value, list) or _takes_list(declared[key]):
            continue
        if not cls.trains:
            raise SuiteError(
                f"{where}.{key}: {cls.name} trains nothing itself, so it has no grid; it already "
                "chooses on validation among what it combines"
            )
        if not value or len(set(map(repr, value))) != len(value):
            raise SuiteError(f"{where}.{key}: a grid needs a non-empty list of different values, got {value!r}")
        grid.append((key, tuple(_convert(v, declared[key], f"{where}.{key}[{i}]") for i, v in enumerate(value))))
    return tuple(grid)


def default_strategy_spec(
    name: str, mapping: dict, train: Optional[dict] = None, where: str = "strategies"
) -> StrategySpec:
    """A strategy's settings from its suite section. A key given as a list of values (``lr: [0.01, 0.1]``)
    makes a grid: every combination is trained, and the one best on validation is the strategy's model."""
    cls = STRATEGIES.get(name)
    option_keys = set(_fields(cls.Options))
    if not cls.trains:
        for key in mapping:
            if key in _RECIPE_KEYS and key not in option_keys:
                raise SuiteError(
                    f"{where}.{name}.{key}: {name} trains nothing itself; set training keys on "
                    f"the strategies it combines, or in train:"
                )
    _check_keys(mapping, option_keys | (_RECIPE_KEYS if cls.trains else set()), f"{where}.{name}")
    grid = _grid(cls, mapping, f"{where}.{name}")
    first = {**mapping, **{key: values[0] for key, values in grid}}
    options = _build(cls.Options, {k: v for k, v in first.items() if k in option_keys}, f"{where}.{name}")
    base = {**(train or {}), **cls.recipe_defaults}  # the strategy's own defaults win over the suite's train:
    recipe = _build(TrainRecipe, {k: v for k, v in first.items() if k in _RECIPE_KEYS}, f"{where}.{name}", base=base)
    spec = StrategySpec(name, options, recipe, grid)
    for key, values in grid:  # every value must make valid settings, not just the first
        for i, value in enumerate(values):
            try:
                spec_at = {**first, key: value}
                _build(cls.Options, {k: v for k, v in spec_at.items() if k in option_keys}, f"{where}.{name}")
                _build(
                    TrainRecipe, {k: v for k, v in spec_at.items() if k in _RECIPE_KEYS}, f"{where}.{name}", base=base
                )
            except SuiteError as e:
                raise SuiteError(str(e).replace(f"{where}.{name}.{key}", f"{where}.{name}.{key}[{i}]", 1)) from None
    for key, values in grid:  # a key the strategy does not read (under these settings) would train one model n times
        unread = dataclasses.replace(spec, grid=((key, values),)).points()
        if len({repr(cls.key_settings(p.options, p.recipe)) for p in unread}) < len(values):
            raise SuiteError(
                f"{where}.{name}.{key}: {name} does not read {key} with these settings, so its grid "
                f"would train the same model {len(values)} times; give it one value"
            )
    return spec


def parse_suite(raw: Any, path: str = "<suite>") -> Suite:
    """Validates a loaded YAML document into a Suite (no file system checks: see ``check_data``)."""
    top = _mapping(raw, "suite")
    _check_keys(top, _TOP_KEYS, "suite")
    version = top.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SuiteError(f"schema_version: expected {SCHEMA_VERSION}, got {version!r}")
    name = top.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise SuiteError(f"name: expected a folder-safe name (letters, digits, . _ -), got {name!r}")
    description = top.get("description", "")
    if not isinstance(description, str):
        raise SuiteError(f"description: expected a string, got {description!r}")

    data_raw = _mapping(top.get("data"), "data")
    _check_keys(data_raw, set(_fields(DataSettings)), "data")
    data = _build(DataSettings, data_raw, "data")

    train_raw = _mapping(top.get("train"), "train")
    _check_keys(train_raw, _RECIPE_KEYS, "train")
    _refuse_grid(train_raw, "train")
    _build(TrainRecipe, train_raw, "train")  # type and range checks once, here
    train = {k: _convert(v, _fields(TrainRecipe)[k], f"train.{k}") for k, v in train_raw.items()}

    source_raw = top.get("source")
    if source_raw is None:
        raise SuiteError("source: missing; e.g. source: {dataset: cifar10, epochs: 30}")
    source_list = source_raw if isinstance(source_raw, list) else [source_raw]
    sources = []
    for i, item in enumerate(source_list):
        where = f"source[{i}]" if isinstance(source_raw, list) else "source"
        if isinstance(item, dict) and ("pretrained" in item or "checkpoint" in item):
            sources.append(_pretrained_source(item, where))
            continue
        _refuse_grid(_mapping(item, where), where)
        spec = _dataset_spec(item, where, data, _RECIPE_KEYS, val_default=0.0)
        recipe_raw = {k: v for k, v in _mapping(item, where).items() if k in _RECIPE_KEYS}
        sources.append(SourceSpec(spec, _build(TrainRecipe, recipe_raw, where, base=train)))

    targets_raw = top.get("targets")
    if not isinstance(targets_raw, list) or not targets_raw:
        raise SuiteError("targets: expected a non-empty list of datasets, e.g. [{dataset: cifar100}]")
    placed = [
        (f"targets[{i}]", spec) for i, t in enumerate(targets_raw) for spec in _target_specs(t, f"targets[{i}]", data)
    ]
    targets = tuple(spec for _, spec in placed)
    _refuse_repeats(
        "source",
        [
            dataclasses.replace(s.pretrained, label="") if s.pretrained else (s.data.describe(), s.recipe)
            for s in sources
        ],
        isinstance(source_raw, list),
    )
    labels = [s.label for s in sources]
    for i, label in enumerate(labels):
        if label in labels[:i]:  # one name for two sources would merge their rows and cells
            raise SuiteError(
                f"source[{i}]: is named {label!r} like source[{labels.index(label)}]; give one a name: key"
            )
    _refuse_repeats("targets", [t.describe() for t in targets], True)
    target_labels = [t.label for t in targets]
    for i, ((where, _), label) in enumerate(zip(placed, target_labels)):
        if label in target_labels[:i]:  # one name for two targets would merge their cells and rows
            raise SuiteError(
                f"{where}: is named {label!r} like {placed[target_labels.index(label)][0]}; give one a name: key"
            )

    backbones = top.get("backbones")
    if backbones is None and all(s.pretrained for s in sources):
        backbones = []  # each pretrained source is its own backbone
    elif not isinstance(backbones, list) or not backbones or not all(isinstance(b, str) for b in backbones):
        raise SuiteError("backbones: expected a non-empty list of backbone names, e.g. [resnet18_cifar]")
    _refuse_repeats("backbones", backbones, True)
    for i, backbone in enumerate(backbones):
        try:
            check_backbone(backbone)
        except UnknownNameError as e:
            raise SuiteError(f"backbones[{i}]: {e}") from None

    strategies_raw = _mapping(top.get("strategies"), "strategies")
    if not strategies_raw:
        raise SuiteError(
            f"strategies: expected a mapping of strategy names to settings; known: {', '.join(STRATEGIES.names())}"
        )
    strategies = []
    for strategy_name, settings in strategies_raw.items():
        if strategy_name not in STRATEGIES:
            raise SuiteError(f"strategies.{strategy_name}: unknown strategy; known: {', '.join(STRATEGIES.names())}")
        strategies.append(
            default_strategy_spec(strategy_name, _mapping(settings, f"strategies.{strategy_name}"), train)
        )
    # strategies that combine others' models run after them (a stable sort keeps the suite's order otherwise)
    strategies.sort(key=lambda s: len(STRATEGIES.get(s.name).ingredients_of(s.options)) > 0)
    # an ingredient the suite does not list is still built with the suite's train: settings
    listed, ingredients = {s.name for s in strategies}, []
    pending = [i for s in strategies for i in STRATEGIES.get(s.name).ingredients_of(s.options)]
    while pending:
        ingredient = pending.pop(0)
        if ingredient not in listed:
            listed.add(ingredient)
            spec = default_strategy_spec(ingredient, {}, train)
            ingredients.append(spec)
            pending += STRATEGIES.get(ingredient).ingredients_of(spec.options)
    tunes = bool(_mapping(top.get("tuning"), "tuning").get("trials"))  # checked below; trials choose too
    for strategy in strategies + ingredients:  # listed or built as an ingredient: either way it chooses
        for where, target in placed:
            cls = STRATEGIES.get(strategy.name)
            chooses = cls.chooses_on_validation(strategy.options) or strategy.searched or (tunes and cls.trains)
            if chooses and not target.has_validation:
                raise SuiteError(
                    f"{where}.val_fraction: {strategy.name} chooses on validation data, and 0 leaves none; "
                    "give the target a share above 0 (the default is 0.1)"
                    + (
                        "; or fit the probe by sgd (solver: sgd)"
                        if strategy.name == "linear_probe" and not strategy.searched
                        else ""
                    )
                )

    tuning = _tuning(_mapping(top.get("tuning"), "tuning"), strategies + ingredients)
    strategies = [_tuned(spec, tuning, train) for spec in strategies]
    for where, target in placed if tuning.refit else ():
        if not target.has_validation:
            raise SuiteError(
                f"{where}.val_fraction: tuning.refit retrains the chosen settings on train + validation, and 0 "
                "leaves no validation to choose on; give the target a share above 0 (the default is 0.1)"
            )
    ingredients = [_tuned(spec, tuning, train) for spec in ingredients]

    runtime_raw = _mapping(top.get("runtime"), "runtime")
    _check_keys(runtime_raw, set(_fields(RuntimeSettings)), "runtime")
    runtime = _build(RuntimeSettings, runtime_raw, "runtime")

    seeds = top.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise SuiteError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SuiteError(f"seeds: repeated seed in {seeds}")
    estimators = parse_estimators(top.get("estimators"), "estimators", _build)
    return Suite(
        name,
        description,
        path,
        data,
        tuple(sources),
        targets,
        tuple(backbones),
        tuple(strategies),
        runtime,
        tuple(seeds),
        tuple(ingredients),
        tuning,
        estimators,
    )


_TUNING_KEYS = {"trials", "search", "seed", "refit", "space"}


def _tuning(raw: dict, specs: list[StrategySpec]) -> Tuning:
    _check_keys(raw, _TUNING_KEYS, "tuning")
    tuning = _build(Tuning, {k: v for k, v in raw.items() if k != "space"}, "tuning")
    if tuning.trials < 0:
        raise SuiteError(f"tuning.trials: {tuning.trials} is outside [0, inf]")
    space = _mapping(raw.get("space"), "tuning.space")
    trained = {spec.name for spec in specs if STRATEGIES.get(spec.name).trains}
    for name, dimensions in space.items():
        if name not in trained:
            raise SuiteError(
                f"tuning.space.{name}: not a strategy this suite trains; its strategies that train: "
                f"{', '.join(sorted(trained))}"
            )
        _mapping(dimensions, f"tuning.space.{name}")
    return dataclasses.replace(tuning, space=space)


def _tuned(spec: StrategySpec, tuning: Tuning, train: dict) -> StrategySpec:
    """The strategy with the trials tuning: gives it. The L-BFGS probe is not given trials: it already sweeps
    its L2 strength on validation (its ``l2_grid``), at a fraction of one fine-tune's cost."""
    cls = STRATEGIES.get(spec.name)
    probe_sweeps = spec.name == "linear_probe" and spec.options.solver == "lbfgs"
    if probe_sweeps and spec.name in tuning.space:
        raise SuiteError(
            "tuning.space.linear_probe: the L-BFGS probe gets no trials (it sweeps its l2_grid on validation); "
            "set l2_grid in its section, or give it solver: sgd to tune its recipe"
        )
    if not tuning.trials or not cls.trains or probe_sweeps:
        return spec
    where = f"tuning.space.{spec.name}"
    if spec.grid:
        raise SuiteError(
            f"strategies.{spec.name}.{spec.grid[0][0]}: under tuning:, every strategy gets tuning.trials points; "
            f"set its search space in {where} instead of a grid"
        )
    space = space_of(spec.name, cls.search_space, tuning.space.get(spec.name), where)
    declared = {**_fields(TrainRecipe), **_fields(cls.Options)}
    for key in space:
        if key not in declared:
            raise SuiteError(f"{where}.{key}: {spec.name} has no such setting; it has {', '.join(sorted(declared))}")
    points = []
    for i, point in enumerate(trial_points(spec.name, space, tuning, where)):
        point = {k: _convert(v, declared[k], f"{where}.{k}") for k, v in point.items()}
        try:  # every point must make valid settings
            dataclasses.replace(spec, trials=(point,)).points()
        except ValueError as e:
            raise SuiteError(f"{where}: trial {i} ({point_text(point)}): {e}") from None
        points.append(point)
    tuned = dataclasses.replace(spec, trials=tuple(points))
    read = {repr(cls.key_settings(p.options, p.recipe)) for p in tuned.points()}
    if len(read) < len(points):  # a setting it does not read would train one model several times
        raise SuiteError(
            f"{where}: {spec.name} does not read every setting of this space with its settings ({', '.join(space)}), "
            "so some trials would be the same model; leave those settings out"
        )
    return tuned


def point_text(point: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


def load_suite(path: str) -> Suite:
    file = Path(path)
    if not file.is_file():
        raise SuiteError(f"{path}: no such suite file")
    try:
        data = file.read_bytes()
    except OSError as e:
        raise SuiteError(f"{path}: cannot read it: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SuiteError(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); a suite is a YAML text file"
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SuiteError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        raise SuiteError(f"{path}: nested too deeply to be a suite") from None
    try:
        return parse_suite(raw, str(path))
    except SuiteError as e:
        raise SuiteError(f"{path}: {e}") from None


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
