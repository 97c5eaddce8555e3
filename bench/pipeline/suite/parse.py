"""A suite file into a ``Suite``: the sections in order, the tuning protocol applied, one-line errors."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from bench.errors import SuiteError  # noqa: F401  (raised here, caught by the command line)
from bench.pipeline.estimates import parse_estimators
from bench.pipeline.suite.convert import as_mapping, build_dataclass, check_keys, convert_value, fields_of
from bench.pipeline.suite.schema import SCHEMA_VERSION, DataSettings, SourceSpec, StrategySpec, Suite
from bench.pipeline.suite.sections import (
    RECIPE_KEYS,
    TOP_KEYS,
    _dataset_spec,
    _pretrained_source,
    _refuse_grid,
    _refuse_repeats,
    _target_specs,
    default_strategy_spec,
)
from bench.pipeline.tuning import Tuning, space_of, trial_points
from transfer_core.backbones import check_backbone
from transfer_core.registry import UnknownNameError
from transfer_core.runtime import RuntimeSettings
from transfer_core.strategies import STRATEGIES
from transfer_core.training import TrainRecipe


def parse_suite(raw: Any, path: str = "<suite>") -> Suite:
    """Validates a loaded YAML document into a Suite (no file system checks: see ``check_data``)."""
    top = as_mapping(raw, "suite")
    check_keys(top, TOP_KEYS, "suite")
    version = top.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SuiteError(f"schema_version: expected {SCHEMA_VERSION}, got {version!r}")
    name = top.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise SuiteError(f"name: expected a folder-safe name (letters, digits, . _ -), got {name!r}")
    description = top.get("description", "")
    if not isinstance(description, str):
        raise SuiteError(f"description: expected a string, got {description!r}")

    data_raw = as_mapping(top.get("data"), "data")
    check_keys(data_raw, set(fields_of(DataSettings)), "data")
    data = build_dataclass(DataSettings, data_raw, "data")

    train_raw = as_mapping(top.get("train"), "train")
    check_keys(train_raw, RECIPE_KEYS, "train")
    _refuse_grid(train_raw, "train")
    build_dataclass(TrainRecipe, train_raw, "train")  # type and range checks once, here
    train = {k: convert_value(v, fields_of(TrainRecipe)[k], f"train.{k}") for k, v in train_raw.items()}

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
        _refuse_grid(as_mapping(item, where), where)
        spec = _dataset_spec(item, where, data, RECIPE_KEYS, val_default=0.0)
        recipe_raw = {k: v for k, v in as_mapping(item, where).items() if k in RECIPE_KEYS}
        sources.append(SourceSpec(spec, build_dataclass(TrainRecipe, recipe_raw, where, base=train)))

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

    strategies_raw = as_mapping(top.get("strategies"), "strategies")
    if not strategies_raw:
        raise SuiteError(
            f"strategies: expected a mapping of strategy names to settings; known: {', '.join(STRATEGIES.names())}"
        )
    strategies = []
    for strategy_name, settings in strategies_raw.items():
        if strategy_name not in STRATEGIES:
            raise SuiteError(f"strategies.{strategy_name}: unknown strategy; known: {', '.join(STRATEGIES.names())}")
        strategies.append(
            default_strategy_spec(strategy_name, as_mapping(settings, f"strategies.{strategy_name}"), train)
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
    tunes = bool(as_mapping(top.get("tuning"), "tuning").get("trials"))  # checked below; trials choose too
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

    tuning = _tuning(as_mapping(top.get("tuning"), "tuning"), strategies + ingredients)
    strategies = [_tuned(spec, tuning, train) for spec in strategies]
    for where, target in placed if tuning.refit else ():
        if not target.has_validation:
            raise SuiteError(
                f"{where}.val_fraction: tuning.refit retrains the chosen settings on train + validation, and 0 "
                "leaves no validation to choose on; give the target a share above 0 (the default is 0.1)"
            )
    ingredients = [_tuned(spec, tuning, train) for spec in ingredients]

    runtime_raw = as_mapping(top.get("runtime"), "runtime")
    check_keys(runtime_raw, set(fields_of(RuntimeSettings)), "runtime")
    runtime = build_dataclass(RuntimeSettings, runtime_raw, "runtime")

    seeds = top.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise SuiteError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SuiteError(f"seeds: repeated seed in {seeds}")
    estimators = parse_estimators(top.get("estimators"), "estimators", build_dataclass)
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


TUNING_KEYS = {"trials", "search", "seed", "refit", "space"}


def _tuning(raw: dict, specs: list[StrategySpec]) -> Tuning:
    check_keys(raw, TUNING_KEYS, "tuning")
    tuning = build_dataclass(Tuning, {k: v for k, v in raw.items() if k != "space"}, "tuning")
    if tuning.trials < 0:
        raise SuiteError(f"tuning.trials: {tuning.trials} is outside [0, inf]")
    space = as_mapping(raw.get("space"), "tuning.space")
    trained = {spec.name for spec in specs if STRATEGIES.get(spec.name).trains}
    for name, dimensions in space.items():
        if name not in trained:
            raise SuiteError(
                f"tuning.space.{name}: not a strategy this suite trains; its strategies that train: "
                f"{', '.join(sorted(trained))}"
            )
        as_mapping(dimensions, f"tuning.space.{name}")
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
    declared = {**fields_of(TrainRecipe), **fields_of(cls.Options)}
    for key in space:
        if key not in declared:
            raise SuiteError(f"{where}.{key}: {spec.name} has no such setting; it has {', '.join(sorted(declared))}")
    points = []
    for i, point in enumerate(trial_points(spec.name, space, tuning, where)):
        point = {k: convert_value(v, declared[k], f"{where}.{k}") for k, v in point.items()}
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
