"""Versions per component (``transfer_core/versions.py``): each component's numbers are what was recorded for
its version, raising a version changes the keys of exactly what ran that component, and a component without a
version cannot register."""

import json

import pytest
from fingerprints import RECORDED, UNAVAILABLE_HERE, differences, host, probe_training, probes, run_probes
from test_plan import BASE, dependants_closure, roles_and_keys

import transfer_core.data.arrays
import transfer_core.training
from transfer_core import versions
from transfer_core.backbones import BACKBONES
from transfer_core.datasets import DATASETS
from transfer_core.registry import Registry
from transfer_core.strategies import STRATEGIES

RECORD = "python tests/fingerprints.py --record"


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    return run_probes(tmp_path_factory.mktemp("fingerprints"))


@pytest.fixture(scope="module")
def recorded():
    return json.loads(RECORDED.read_text())


def same_kind_of_machine(recorded) -> None:
    if recorded["host"] != host():
        pytest.skip(
            f"fingerprints were recorded on {recorded['host']}, this machine is {host()}: float sums run in "
            f"another order here; `{RECORD} --force` records this machine's"
        )


@pytest.mark.slow
@pytest.mark.parametrize("component", sorted(probes()))
def test_each_components_numbers_are_the_ones_recorded_for_its_version(component, measured, recorded):
    same_kind_of_machine(recorded)
    assert component in recorded["probes"], f"no fingerprint recorded for {component} (a new component?): run {RECORD}"
    now, then = measured["probes"][component], recorded["probes"][component]
    if now["versions"] != then["versions"]:
        changed = sorted(
            k for k in {**now["versions"], **then["versions"]} if now["versions"].get(k) != then["versions"].get(k)
        )
        pytest.fail(
            f"{component}: versions of {', '.join(changed)} changed since the fingerprints were recorded: run {RECORD}"
        )
    moved = differences(then["fingerprint"], now["fingerprint"], component)
    assert not moved, (
        f"{component}'s numbers changed while the versions of the code it ran did not "
        f"({', '.join(now['versions'])}): raise the version of whichever changed, then run {RECORD}. "
        f"First differences: {moved[:3]}"
    )


def test_no_fingerprint_is_recorded_for_a_component_that_is_gone(recorded):
    gone = set(recorded["probes"]) - set(probes()) - set(UNAVAILABLE_HERE)
    assert not gone, f"stale fingerprints of {sorted(gone)}: run {RECORD}"


def test_a_change_in_the_training_loop_moves_its_fingerprint(tmp_path, monkeypatch, recorded):
    """The comparison can fail: a learning-rate schedule 1% off, with the version unchanged, is caught."""
    from fingerprints import Context, one_thread

    same_kind_of_machine(recorded)
    schedule = transfer_core.training.lr_factor
    monkeypatch.setattr(transfer_core.training, "lr_factor", lambda recipe, progress: 1.01 * schedule(recipe, progress))
    with one_thread():
        versions_now, fingerprint = probe_training(Context(tmp_path))
    assert versions_now == recorded["probes"]["training"]["versions"]
    assert differences(recorded["probes"]["training"]["fingerprint"], json.loads(json.dumps(fingerprint)))


def raised(monkeypatch, component: str) -> None:
    """Raises one component's version by one, for this test."""
    kind, _, name = component.partition("/")
    if component in versions.PARTS:
        monkeypatch.setitem(versions.PARTS, component, versions.PARTS[component] + 1)
    elif kind == "strategy":
        monkeypatch.setattr(STRATEGIES.get(name), "version", STRATEGIES.get(name).version + 1)
    elif kind == "dataset":
        monkeypatch.setattr(DATASETS.get(name), "version", DATASETS.get(name).version + 1)
    elif kind == "backbone":
        monkeypatch.setattr(BACKBONES.get(name), "version", BACKBONES.get(name).version + 1)
    elif component == "data/arrays":
        monkeypatch.setattr(transfer_core.data.arrays, "VERSION", transfer_core.data.arrays.VERSION + 1)
    else:
        raise AssertionError(f"no way to raise {component} here")


ALL_FITTED = {f"fitted:{name}" for name in STRATEGIES.names() if STRATEGIES.get(name).trains}
EVALUATIONS = {f"evaluation:{name}" for name in STRATEGIES.names()}
VERSION_WALK = {
    # what raising each version rebuilds in the key walk's suite (digits -> digits, resnet8, every strategy),
    # before the dependants of those
    "training": {"source"} | ALL_FITTED | EVALUATIONS,
    "evaluation": EVALUATIONS,  # what scores a model on the target (and selections, which this suite has none of)
    "dataset/digits": {"source"} | ALL_FITTED | EVALUATIONS,
    "backbone/resnet8": {"source"} | ALL_FITTED | EVALUATIONS,
    "data/arrays": {"source"} | ALL_FITTED | EVALUATIONS,
    "pretrained": set(),  # no pretrained source here
    "corruptions": set(),  # no corruption here
    **{
        f"strategy/{name}": {f"fitted:{name}", f"evaluation:{name}"} & (ALL_FITTED | EVALUATIONS)
        for name in STRATEGIES.names()
    },
}


@pytest.mark.slow
def test_raising_one_version_changes_the_keys_of_exactly_what_ran_it(tmp_path, monkeypatch):
    base_keys, deps = roles_and_keys(BASE, tmp_path)
    for component, rebuilt in VERSION_WALK.items():
        with monkeypatch.context() as patch:
            raised(patch, component)
            keys, _ = roles_and_keys(BASE, tmp_path)
        moved = {role for role in keys if keys[role] != base_keys[role]}
        expected = dependants_closure(rebuilt, deps)
        assert moved == expected, f"{component}: keys changed for {sorted(moved)}, expected {sorted(expected)}"
    assert roles_and_keys(BASE, tmp_path)[0] == base_keys  # every raise was undone


def test_a_record_names_the_versions_of_the_code_behind_it(tmp_path):
    """The versions are in each artifact's settings, so a record's config says which code made it."""
    from bench.pipeline.runner import Runner
    from bench.pipeline.suite import expand_cells, parse_suite
    from transfer_core.runtime import resolve_runtime

    suite = parse_suite(BASE)
    runtime = resolve_runtime(suite.runtime, cuda_available=True)
    plan = Runner(suite, tmp_path, tmp_path / "out", tmp_path / "cache", runtime, log=lambda m: None).plan(
        expand_cells(suite)
    )
    _, lp_ft = next((c, e) for c, e in plan.cells if c.strategy.name == "lp_ft")
    assert lp_ft.config["evaluation"]["code"]["strategy/lp_ft"] == STRATEGIES.get("lp_ft").version
    fitted = [entry for entry in lp_ft.config.values() if entry.get("kind") == "fitted"]
    assert {"strategy/linear_probe", "strategy/lp_ft"} <= {k for entry in fitted for k in entry["code"]}
    assert all("training" in entry["code"] and "dataset/digits" in entry["code"] for entry in fitted)


def test_a_component_without_a_version_cannot_register():
    registry = Registry("strategy", versioned=True)

    class Unversioned:
        pass

    with pytest.raises(TypeError, match="strategy 'unversioned' declares no version"):
        registry.register("unversioned")(Unversioned)
    Unversioned.version = 1
    registry.register("unversioned")(Unversioned)
    assert registry.get("unversioned") is Unversioned


def test_recording_refuses_to_paper_over_numbers_that_moved_under_the_same_versions():
    from fingerprints import unjustified_changes

    here = host()
    then = {"host": here, "probes": {"a": {"versions": {"x": 1}, "fingerprint": [1.0]}}}
    moved = {"host": here, "probes": {"a": {"versions": {"x": 1}, "fingerprint": [1.5]}}}
    raised = {"host": here, "probes": {"a": {"versions": {"x": 2}, "fingerprint": [1.5]}}}
    elsewhere = {"host": {**here, "cpu_capability": "other"}, "probes": moved["probes"]}
    assert unjustified_changes(then, moved) == ["a"]
    assert unjustified_changes(then, raised) == [] and unjustified_changes(then, then) == []
    assert unjustified_changes(then, elsewhere) == []  # another kind of machine: recorded with --force
