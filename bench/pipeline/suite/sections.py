"""Parsing the suite's sections that take more than one dataclass: targets and their data-size sweeps,
sources (datasets, pretrained weights, checkpoints), and strategies with their grids."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Optional, Union

from bench.errors import SuiteError  # noqa: F401  (raised here, caught by the command line)
from bench.pipeline.shifts import parse_shifts
from bench.pipeline.suite.convert import as_mapping, build_dataclass, check_keys, convert_value, fields_of
from bench.pipeline.suite.schema import DatasetSpec, DataSettings, SourceSpec, StrategySpec
from transfer_core.data.augment import Augmentation
from transfer_core.datasets import (
    DATASETS,
    Selection,
    create_dataset_reader,
)
from transfer_core.pretrained import LIBRARIES, PretrainedSpec, check_spec
from transfer_core.registry import UnknownNameError
from transfer_core.strategies import STRATEGIES
from transfer_core.training import TrainRecipe

SELECTION_KEYS = {"classes", "per_class", "examples", "test_per_class", "val_fraction", "official_val"}
REGIME_KEYS = ("per_class", "examples")  # a target may list several values of one: a data-size sweep
RECIPE_KEYS = set(fields_of(TrainRecipe))
TOP_KEYS = {
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
    mapping = as_mapping(raw, where)
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
    reader_keys = set(fields_of(reader.Options))
    check_keys(mapping, {"dataset", "name", "augment", "resolution"} | SELECTION_KEYS | reader_keys | extra_keys, where)
    options = build_dataclass(reader.Options, {k: v for k, v in mapping.items() if k in reader_keys}, where)
    selection = build_dataclass(
        Selection,
        {k: v for k, v in mapping.items() if k in SELECTION_KEYS},
        where,
        base={"val_fraction": val_default, "seed": data.seed},
    )
    augment_raw = dict(as_mapping(mapping.get("augment"), f"{where}.augment"))
    check_keys(augment_raw, set(fields_of(Augmentation)), f"{where}.augment")
    if isinstance(augment_raw.get("flip"), bool):  # flip: true / false read as random / none
        augment_raw["flip"] = "random" if augment_raw["flip"] else "none"
    augmentation = build_dataclass(
        Augmentation,
        augment_raw,
        f"{where}.augment",
        base={**dataclasses.asdict(Augmentation()), **reader.augmentation_defaults},
    )
    resolution = convert_value(mapping.get("resolution"), Optional[int], f"{where}.resolution")
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
    mapping = as_mapping(raw, where)
    shifts = parse_shifts(
        mapping.get("shifts"),
        f"{where}.shifts",
        lambda entry, at: _dataset_spec(entry, at, data, set(), val_default=0.0),
    )
    return [dataclasses.replace(spec, shifts=shifts) for spec in _sized_targets(mapping, where, data)]


def _sized_targets(mapping: dict, where: str, data: DataSettings) -> list[DatasetSpec]:
    val_default = 0.2 if "examples" in mapping else 0.1
    swept = [key for key in REGIME_KEYS if isinstance(mapping.get(key), list)]
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


PRETRAINED_KEYS = {"pretrained", "weights", "file", "name"}
CHECKPOINT_KEYS = {"checkpoint", "backbone", "name"}


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
        check_keys(mapping, CHECKPOINT_KEYS, where)
        if "backbone" not in mapping:
            raise SuiteError(
                f"{where}.backbone: missing; a checkpoint needs the backbone it was saved from, e.g. resnet8"
            )
        path = str(Path(text("checkpoint")).expanduser().resolve())  # workers may start in another folder
        spec = PretrainedSpec(
            "checkpoint", text("backbone"), None, path, text("name", False) or f"checkpoint:{Path(path).stem}"
        )
    else:
        check_keys(mapping, PRETRAINED_KEYS, where)
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
        if key in RECIPE_KEYS and isinstance(value, list):
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
    declared = {**fields_of(TrainRecipe), **fields_of(cls.Options)}
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
        grid.append((key, tuple(convert_value(v, declared[key], f"{where}.{key}[{i}]") for i, v in enumerate(value))))
    return tuple(grid)


def default_strategy_spec(
    name: str, mapping: dict, train: Optional[dict] = None, where: str = "strategies"
) -> StrategySpec:
    """A strategy's settings from its suite section. A key given as a list of values (``lr: [0.01, 0.1]``)
    makes a grid: every combination is trained, and the one best on validation is the strategy's model."""
    cls = STRATEGIES.get(name)
    option_keys = set(fields_of(cls.Options))
    if not cls.trains:
        for key in mapping:
            if key in RECIPE_KEYS and key not in option_keys:
                raise SuiteError(
                    f"{where}.{name}.{key}: {name} trains nothing itself; set training keys on "
                    f"the strategies it combines, or in train:"
                )
    check_keys(mapping, option_keys | (RECIPE_KEYS if cls.trains else set()), f"{where}.{name}")
    grid = _grid(cls, mapping, f"{where}.{name}")
    first = {**mapping, **{key: values[0] for key, values in grid}}
    options = build_dataclass(cls.Options, {k: v for k, v in first.items() if k in option_keys}, f"{where}.{name}")
    base = {**(train or {}), **cls.recipe_defaults}  # the strategy's own defaults win over the suite's train:
    recipe = build_dataclass(
        TrainRecipe, {k: v for k, v in first.items() if k in RECIPE_KEYS}, f"{where}.{name}", base=base
    )
    spec = StrategySpec(name, options, recipe, grid)
    for key, values in grid:  # every value must make valid settings, not just the first
        for i, value in enumerate(values):
            try:
                spec_at = {**first, key: value}
                build_dataclass(cls.Options, {k: v for k, v in spec_at.items() if k in option_keys}, f"{where}.{name}")
                build_dataclass(
                    TrainRecipe, {k: v for k, v in spec_at.items() if k in RECIPE_KEYS}, f"{where}.{name}", base=base
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
