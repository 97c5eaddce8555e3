"""The plan: artifacts, their dependencies and their keys.

The key walk changes every resolved setting of a suite, one at a time, and checks which artifacts' keys
change: those whose numbers the setting bears on, and everything built from them; presentation-only
settings (names, descriptions, paths) change none. A setting added to the schema without a line in
``EXPECTED`` fails the walk until someone decides what it bears on.
"""

import copy
import typing

import pytest
import torch

from bench.pipeline.runner import Runner
from bench.pipeline.suite import SuiteError, expand_cells, parse_suite
from bench.pipeline.suite.convert import fields_of
from transfer_core.data import Augmentation
from transfer_core.datasets import Digits, Selection
from transfer_core.runtime import RuntimeSettings, resolve_runtime
from transfer_core.strategies import STRATEGIES
from transfer_core.training import TrainRecipe

# every strategy with something set, so both a strategy's own value and the suite's train: value are walked
BASE = {
    "schema_version": 1,
    "name": "keys",
    "description": "the key walk",
    "data": {"root": "data", "download": False, "seed": 0},
    "source": {"dataset": "digits", "name": "src", "classes": [0, 1, 2, 3, 4], "per_class": 30, "epochs": 2},
    "targets": [
        {
            "dataset": "digits",
            "name": "tgt",
            "classes": [5, 6, 7, 8, 9],
            "per_class": 24,
            "val_fraction": 0.25,
            "test_per_class": 10,
        }
    ],
    "backbones": ["resnet8"],
    # every registered strategy (a new one is walked as it is, with its defaults); these with a setting of their
    # own, so both a strategy's own value and the suite's train: value are walked
    "strategies": {
        name: {
            "scratch": {"epochs": 2},
            "linear_probe": {"epochs": 3},
            "full_finetune": {"lr": 0.05},
            "lp_ft": {"epochs": 2},
            "l2_sp": {"momentum": 0.8},
            "alpha_mix": {"alphas": [0, 0.5, 1]},
        }.get(name, {})
        for name in STRATEGIES.names()
    },
    "train": {"batch_size": 16, "lr": 0.1},
    "runtime": {"device": "cpu", "amp": "bf16", "eval_batch_size": 64},
    "seeds": [0],
}

TRAINING_STRATEGIES = [name for name in STRATEGIES.names() if STRATEGIES.get(name).trains]
FITTED = {f"fitted:{name}" for name in TRAINING_STRATEGIES}
EVALUATIONS = {f"evaluation:{name}" for name in STRATEGIES.names()}
ALL = {"source"} | FITTED | EVALUATIONS
SOURCE = {"source"}
NOTHING: set = set()

# setting -> the artifacts whose own settings it is (their dependants follow from the graph)
EXPECTED = {
    "name": NOTHING,
    "description": NOTHING,
    "data.root": NOTHING,
    "data.download": NOTHING,
    "data.seed": SOURCE | FITTED,
    # per_seed draws seed s's data with data seed data.seed + s: for the walk's one seed (0) the same data, the
    # same keys (tests/test_suite.py checks that other seeds get other data)
    "data.resample": NOTHING,
    "seeds": SOURCE | {"fitted:scratch"},
    "backbones": SOURCE | {"fitted:scratch"},
    "source.name": NOTHING,
    "targets[0].name": NOTHING,
    # the target's test split is read by evaluations only: scoring more test images refits nothing
    "targets[0].test_per_class": EVALUATIONS,
    "strategies.alpha_mix.alphas": {"evaluation:alpha_mix"},
    "strategies.alpha_mix.space": {"evaluation:alpha_mix"},
    "strategies.alpha_mix.batchnorm": {"evaluation:alpha_mix"},
    "strategies.alpha_mix.bn_reestimate": {"evaluation:alpha_mix"},
    # which fine-tuned model alpha-mix mixes: a dependency of its evaluation
    "strategies.alpha_mix.finetune": {"evaluation:alpha_mix"},
    # the evaluation batch sets alpha-mix's BatchNorm re-estimation batches; training never reads it
    "runtime.eval_batch_size": EVALUATIONS,
    # numbers of every artifact: precision, compilation, memory layout, the device
    "runtime.device": ALL,
    "runtime.amp": ALL,
    "runtime.compile": ALL,
    "runtime.channels_last": ALL,
    "runtime.input_dtype": ALL,
    # compile: auto on CPU compiles any training that repays it, in this mode
    "runtime.compile_mode": ALL,
    # no effect here: cuDNN is CUDA's, digits are arrays (no backend, no workers)
    "runtime.cudnn_benchmark": NOTHING,
    "runtime.workers": NOTHING,
    "runtime.data_backend": NOTHING,
    # other algorithms, other numbers: every artifact; a time limit stops work, it changes none
    "runtime.deterministic": ALL,
    "runtime.cell_timeout_s": NOTHING,
    # where tensors live, never what is computed (tests/test_host_memory.py): no key
    "runtime.host_memory": NOTHING,
    # digits publish no validation split: nothing to choose between, so no key reads it (tests/test_torchvision_sets.py
    # checks that a set with one uses it)
    "source.official_val": NOTHING,
    "targets[0].official_val": NOTHING,
}
for field in fields_of(Digits.Options) | fields_of(Selection) | fields_of(Augmentation) | {"resolution": int}:
    if field in ("seed", "test_per_class", "random_resized_crop"):  # the data seed; above; image folders only
        continue
    path = f"augment.{field}" if field in fields_of(Augmentation) else field
    EXPECTED.setdefault(f"source.{path}", SOURCE)
    EXPECTED.setdefault(f"targets[0].{path}", FITTED)
EXPECTED["source.test_per_class"] = SOURCE  # the source model's own test score is part of it
for name in TRAINING_STRATEGIES:
    for field in fields_of(STRATEGIES.get(name).Options):  # a training strategy's options are its fit's
        EXPECTED[f"strategies.{name}.{field}"] = {f"fitted:{name}"}
for name in set(STRATEGIES.names()) - set(TRAINING_STRATEGIES):
    for field in fields_of(STRATEGIES.get(name).Options):  # one that trains nothing: its evaluation's (alpha-mix's)
        EXPECTED.setdefault(f"strategies.{name}.{field}", {f"evaluation:{name}"})


def reads(name: str, field: str) -> bool:
    """Whether a strategy's fit reads this recipe field: the L-BFGS probe (the default) reads only the
    batch size of its feature pass."""
    return name != "linear_probe" or field == "batch_size"


for field in fields_of(TrainRecipe):
    EXPECTED[f"source.{field}"] = SOURCE
    for name in TRAINING_STRATEGIES:
        EXPECTED[f"strategies.{name}.{field}"] = {f"fitted:{name}"} if reads(name, field) else NOTHING
    # train: reaches every recipe that sets the key neither in its section nor in its own defaults
    EXPECTED[f"train.{field}"] = ({"source"} if field not in BASE["source"] else set()) | {
        f"fitted:{name}"
        for name in TRAINING_STRATEGIES
        if field not in BASE["strategies"].get(name, {})
        and field not in STRATEGIES.get(name).recipe_defaults
        and reads(name, field)
    }

# values that are not allowed in this suite, so not walked: random-resized crops need an image folder
NOT_APPLICABLE = {"source.augment.random_resized_crop", "targets[0].augment.random_resized_crop"}


def settings_of(raw: dict) -> dict[str, typing.Any]:
    """Every setting the suite resolves, as path -> (container, key, type), with its resolved value."""
    suite = parse_suite(raw)
    found = {}

    def add(path, container, key, tp, value):
        found[path] = (container, key, tp, value)

    for key in ("name", "description"):
        add(key, (), key, str, getattr(suite, key))
    for field, tp in fields_of(type(suite.data)).items():
        add(f"data.{field}", ("data",), field, tp, getattr(suite.data, field))
    add("seeds", (), "seeds", list, list(suite.seeds))
    add("backbones", (), "backbones", list, list(suite.backbones))
    for where, spec in (("source", suite.sources[0].data), ("targets[0]", suite.targets[0])):
        container = ("source",) if where == "source" else ("targets", 0)
        add(f"{where}.name", container, "name", str, spec.label)
        add(f"{where}.resolution", container, "resolution", typing.Optional[int], spec.resolution)
        for part in (spec.options, spec.selection):
            for field, tp in fields_of(type(part)).items():
                if field != "seed":  # the data seed is data.seed
                    add(f"{where}.{field}", container, field, tp, getattr(part, field))
        for field, tp in fields_of(Augmentation).items():
            add(f"{where}.augment.{field}", container + ("augment",), field, tp, getattr(spec.augmentation, field))
    for field, tp in fields_of(TrainRecipe).items():
        add(f"source.{field}", ("source",), field, tp, getattr(suite.sources[0].recipe, field))
        add(f"train.{field}", ("train",), field, tp, raw["train"].get(field, getattr(TrainRecipe(), field)))
    for spec in suite.strategies:
        cls = STRATEGIES.get(spec.name)
        for field, tp in fields_of(cls.Options).items():
            add(f"strategies.{spec.name}.{field}", ("strategies", spec.name), field, tp, getattr(spec.options, field))
        if cls.trains:
            for field, tp in fields_of(TrainRecipe).items():
                add(
                    f"strategies.{spec.name}.{field}", ("strategies", spec.name), field, tp, getattr(spec.recipe, field)
                )
    for field, tp in fields_of(RuntimeSettings).items():
        add(f"runtime.{field}", ("runtime",), field, tp, getattr(parse_suite(raw).runtime, field))
    return found


def changed_value(path: str, tp, value):
    """A valid value other than ``value`` for a setting of type ``tp``."""
    special = {
        "seeds": [1],
        "backbones": ["resnet20"],
        "source.classes": [0, 1, 2, 3, 6],
        "targets[0].classes": [5, 6, 7, 8, 4],
        "strategies.alpha_mix.alphas": [0, 0.25, 1],
        "strategies.alpha_mix.bn_reestimate": True,  # None -> False would be the default batchnorm again
        "source.examples": 100,
        "targets[0].examples": 100,
        "strategies.linear_probe.l2_grid": [0.01, 1.0],
        "runtime.amp": "off",  # a change on any machine (auto is bf16 on a CPU with native bf16, as the suite asks)
    }
    if path in special:
        return special[path]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        tp = next(a for a in args if a is not type(None))
        if value is None:
            return {int: 5, float: 0.5, str: "x"}.get(tp, 5)
        return changed_value(path, tp, value)
    if origin is typing.Literal:
        return next(a for a in args if a != value)
    if tp is bool:
        return not value
    if tp is int:
        return value + 1
    if tp is float:
        return value / 2 if value else 0.1
    if tp is str:
        return f"{value}-changed"
    raise AssertionError(f"no changed value for {path} ({tp})")


def with_setting(raw: dict, container: tuple, key: str, value) -> dict:
    changed = copy.deepcopy(raw)
    node = changed
    for part in container:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[key] = value
    return changed


def roles_and_keys(raw: dict, tmp_path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Key per role (source, fitted:<strategy>, evaluation:<strategy>), and each role's dependencies."""
    suite = parse_suite(raw)
    runtime = resolve_runtime(suite.runtime, cuda_available=True)  # planning only: a CUDA runtime is never used here
    runner = Runner(
        suite, tmp_path / suite.data.root, tmp_path / "out", tmp_path / "cache", runtime, log=lambda m: None
    )
    plan = runner.plan(expand_cells(suite))
    roles = {}
    for artifact in plan.artifacts.values():
        if artifact.kind == "source":
            roles[artifact.key] = "source"
        elif artifact.kind == "fitted":
            roles[artifact.key] = f"fitted:{artifact.strategy.name}"
        else:
            roles[artifact.key] = f"evaluation:{artifact.cell.strategy.name}"
    assert len(roles) == len(set(roles.values())) == len(ALL), "one artifact per role in the walk's suite"
    deps = {roles[key]: sorted(roles[d] for d in artifact.deps) for key, artifact in plan.artifacts.items()}
    return {role: key for key, role in roles.items()}, deps


def dependants_closure(roles: set[str], deps: dict[str, list[str]]) -> set[str]:
    affected = set(roles)
    while True:
        more = {role for role, needs in deps.items() if set(needs) & affected} - affected
        if not more:
            return affected
        affected |= more


def test_the_graph_has_the_dependencies_the_strategies_declare(tmp_path):
    _, deps = roles_and_keys(BASE, tmp_path)
    shipped = {
        "source": [],
        "fitted:scratch": [],
        "evaluation:scratch": ["fitted:scratch"],
        "fitted:linear_probe": ["source"],
        "evaluation:linear_probe": ["fitted:linear_probe", "source"],
        "fitted:full_finetune": ["source"],
        "evaluation:full_finetune": ["fitted:full_finetune", "source"],
        "fitted:l2_sp": ["source"],
        "evaluation:l2_sp": ["fitted:l2_sp", "source"],
        # LP-FT starts from the probe; its evaluation counts the probe's cost too
        "fitted:lp_ft": ["fitted:linear_probe"],
        "evaluation:lp_ft": ["fitted:linear_probe", "fitted:lp_ft", "source"],
        "evaluation:alpha_mix": ["fitted:linear_probe", "fitted:lp_ft", "source"],
    }
    assert {role: needs for role, needs in deps.items() if role in shipped} == shipped  # a plugin's are its own


def test_ready_artifacts_are_offered_records_first_then_what_most_others_wait_on(tmp_path):
    raw = copy.deepcopy(BASE)
    raw["seeds"] = [0, 1]
    raw["strategies"]["l2_sp"]["sp_weight"] = [0.001, 0.01]  # a grid: its selection is quick, as evaluations are
    suite = parse_suite(raw)
    runtime = resolve_runtime(suite.runtime, cuda_available=True)
    runner = Runner(suite, tmp_path / "data", tmp_path / "out", tmp_path / "cache", runtime, log=lambda m: None)
    plan = runner.plan(expand_cells(suite))
    closure = plan.closure([e.key for _, e in plan.cells])
    order = plan.most_awaited_first(closure)
    assert sorted(a.key for a in order) == sorted(a.key for a in closure)
    quick = [i for i, a in enumerate(order) if a.kind in ("evaluation", "selection")]
    assert quick == list(range(len(quick)))  # an evaluation or a grid's selection, once ready, before any training
    trainings = [a for a in order if a.kind not in ("evaluation", "selection")]
    # both seeds' source models first (every transfer waits on them); a scratch training, which only its
    # evaluation waits on, after every training something else waits on besides its evaluation
    assert [a.kind for a in trainings[:2]] == ["source", "source"]
    first_scratch = min(i for i, a in enumerate(trainings) if a.kind == "fitted" and a.strategy.name == "scratch")
    assert {a.strategy.name for a in trainings[2:first_scratch]} >= {"linear_probe"}
    # the plan's own order builds seed 0's cells before seed 1's source
    sources = [i for i, a in enumerate(closure) if a.kind == "source"]
    assert len(sources) == 2 and sources[1] >= len(closure) // 2


def test_every_setting_changes_exactly_the_keys_it_bears_on(tmp_path):
    base_keys, deps = roles_and_keys(BASE, tmp_path)
    settings = settings_of(BASE)
    unclassified = sorted(set(settings) - set(EXPECTED) - NOT_APPLICABLE)
    assert not unclassified, f"settings with no expectation (add them to EXPECTED): {unclassified}"
    walked = 0
    for path, (container, key, tp, value) in settings.items():
        if path in NOT_APPLICABLE:
            with pytest.raises(SuiteError):
                parse_suite(with_setting(BASE, container, key, changed_value(path, tp, value)))
            continue
        changed = with_setting(BASE, container, key, changed_value(path, tp, value))
        keys, _ = roles_and_keys(changed, tmp_path)
        moved = {role for role in ALL if keys[role] != base_keys[role]}
        expected = dependants_closure(EXPECTED[path], deps)
        assert moved == expected, f"{path}: keys changed for {sorted(moved)}, expected {sorted(expected)}"
        walked += 1
    assert walked > 60  # every field of every section, not a handful


def test_keys_do_not_depend_on_the_order_of_mappings_or_the_run(tmp_path):
    reordered = dict(reversed(list(BASE.items())))
    reordered["strategies"] = dict(reversed(list(BASE["strategies"].items())))
    assert roles_and_keys(reordered, tmp_path)[0] == roles_and_keys(BASE, tmp_path)[0]


def test_an_unlisted_ingredient_gets_the_suites_train_settings():
    train = {"batch_size": 24, "lr": 0.03, "epochs": 7, "momentum": 0.8}
    only_mix = parse_suite({**BASE, "strategies": {"alpha_mix": {"finetune": "full_finetune"}}, "train": train})
    recipe = only_mix.strategy("full_finetune").recipe
    assert (recipe.batch_size, recipe.lr, recipe.epochs, recipe.momentum) == (24, 0.03, 7, 0.8)
    probe = only_mix.strategy("linear_probe").recipe  # the probe's own defaults win over train:, the rest is train's
    assert (probe.batch_size, probe.lr, probe.epochs, probe.momentum) == (256, 0.05, 40, 0.8)
    lp_ft = parse_suite({**BASE, "strategies": {"alpha_mix": {}}, "train": train}).strategy("lp_ft").recipe
    assert (lp_ft.batch_size, lp_ft.lr, lp_ft.epochs) == (24, 0.01, 7)
    listed = parse_suite(
        {
            **BASE,
            "strategies": {"alpha_mix": {"finetune": "full_finetune"}, "full_finetune": {"lr": 0.01}},
            "train": {"lr": 0.03},
        }
    )
    assert listed.strategy("full_finetune").recipe.lr == 0.01


def test_a_strategy_that_trains_nothing_refuses_training_keys():
    with pytest.raises(
        SuiteError,
        match=r"strategies\.alpha_mix\.epochs: alpha_mix trains nothing itself; "
        r"set training keys on the strategies it combines",
    ):
        parse_suite({**BASE, "strategies": {"alpha_mix": {"epochs": 3}}})


def test_compile_mode_enters_the_keys_when_compiling(tmp_path):
    compiled = with_setting(BASE, ("runtime",), "compile", "on")
    base_keys, _ = roles_and_keys(compiled, tmp_path)
    keys, _ = roles_and_keys(with_setting(compiled, ("runtime",), "compile_mode", "max-autotune"), tmp_path)
    assert all(keys[role] != base_keys[role] for role in ALL)
    eager = with_setting(BASE, ("runtime",), "compile", "off")  # never compiled: the mode is in no key
    base_keys, _ = roles_and_keys(eager, tmp_path)
    keys, _ = roles_and_keys(with_setting(eager, ("runtime",), "compile_mode", "max-autotune"), tmp_path)
    assert keys == base_keys


def test_ranks_enter_the_keys_of_what_trains_under_them(tmp_path):
    """Under torchrun BatchNorm takes each rank's part of a batch: models trained by 2 ranks are not the
    models 1 process trains. Evaluations differ only through the models they take."""
    import dataclasses

    from transfer_core.distributed import Shard

    suite = parse_suite(BASE)
    runtime = resolve_runtime("cpu", amp="bf16", eval_batch_size=64)
    runner = Runner(suite, tmp_path, tmp_path / "out", tmp_path / "cache", runtime, log=lambda m: None)
    one = runner.plan(expand_cells(suite))
    runner.runtime = dataclasses.replace(runtime, shard=Shard(0, 2))
    two = runner.plan(expand_cells(suite))
    assert not set(one.artifacts) & set(two.artifacts)
    for (_, e1), (_, e2) in zip(one.cells, two.cells):
        assert e1.settings == e2.settings and e1.deps != e2.deps


def test_library_releases_enter_the_keys_of_what_their_code_computes(tmp_path, monkeypatch):
    import bench.pipeline.plan

    base, _ = roles_and_keys(BASE, tmp_path)
    monkeypatch.setattr(torch, "__version__", "2.14.9")  # a patch release: the same models
    assert roles_and_keys(BASE, tmp_path)[0] == base
    monkeypatch.setattr(torch, "__version__", "2.15.0")  # a minor release: other kernels, every key
    moved = roles_and_keys(BASE, tmp_path)[0]
    assert all(moved[role] != base[role] for role in ALL)
    monkeypatch.undo()
    # timm's release enters the keys of artifacts whose backbone timm defines, and of no other
    installed = bench.pipeline.plan._installed

    def other_timm(prefix):
        return "99.0.0" if prefix == "timm" else installed(prefix)

    two = {**BASE, "backbones": ["resnet8", "timm:resnet18"], "strategies": {"scratch": {"epochs": 1}}}
    plan = lambda: Runner(  # noqa: E731
        parse_suite(two), tmp_path / "data", tmp_path / "out", tmp_path / "cache", resolve_runtime("cpu"), log=print
    ).plan(expand_cells(parse_suite(two)))
    before = {a.name: a.key for a in plan().artifacts.values()}
    monkeypatch.setattr(bench.pipeline.plan, "_installed", other_timm)
    after = {a.name: a.key for a in plan().artifacts.values()}
    assert {name for name in before if before[name] != after[name]} == {n for n in before if "timm:resnet18" in n}
