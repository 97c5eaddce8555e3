"""Generated inputs through the commands a user runs: never a traceback, only exit 0 or 2, nothing written on 2."""

import copy
import json
import uuid

import pytest
import yaml
from conftest import tiny_suite
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli import main
from bench.pipeline.suite import SuiteError, parse_suite
from bench.results.compare import CompareError, parse_thresholds

# no example database written into the repository; every run draws afresh from its seed
FUZZ = settings(
    database=None, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["auto", "cuda", "lbfgs", "resnet8", "digits", "cifar10", "", "-1"])
)
garbage = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def paths(node, prefix=()):
    """Every place in a nested suite a value can be replaced."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, prefix + (i,))


BASE = tiny_suite(
    strategies={
        "scratch": {"epochs": 1},
        "linear_probe": {},
        "full_finetune": {"epochs": 1, "lr": [0.01, 0.1]},
        "alpha_mix": {"alphas": [0, 1]},
    }
)
PLACES = [p for p in paths(BASE) if p]


@st.composite
def mutated_suites(draw):
    raw = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        place = draw(st.sampled_from(PLACES))
        parent = raw
        try:
            for step in place[:-1]:
                parent = parent[step]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[place[-1]] = draw(garbage)
            elif action == "delete" and isinstance(parent, dict):
                del parent[place[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=8))] = draw(garbage)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed or replaced the way there
    return raw


@FUZZ
@given(mutated_suites())
def test_generated_suites_parse_or_fail_with_a_suite_error(raw):
    try:
        parse_suite(raw)
    except SuiteError as e:  # and nothing else: one line by construction (tests/test_suite.py checks BenchError)
        assert str(e).strip()


@FUZZ
@given(
    st.one_of(
        mutated_suites().map(lambda raw: yaml.safe_dump(raw).encode()),
        st.binary(max_size=200),
        garbage.map(lambda g: yaml.safe_dump(g).encode()),
    )
)
@pytest.mark.parametrize("command", ["validate", "dry-run"])
def test_generated_suite_files_through_the_command_line(tmp_path, capsys, command, content):
    here = tmp_path / uuid.uuid4().hex  # tmp_path is shared by the examples of one test
    here.mkdir()
    suite = here / "s.yaml"
    suite.write_bytes(content)
    out = here / "out"
    argv = (
        ["validate", str(suite)]
        if command == "validate"
        else ["run", str(suite), "--dry-run", "--out", str(out), "--cache-dir", str(here / "cache")]
    )
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert err.strip().startswith("bench: error: ") and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


RECORD = {
    "schema_version": 1,
    "suite": "s",
    "cell_id": "a->b/resnet8/scratch/seed0",
    "source": "a",
    "target": "b",
    "backbone": "resnet8",
    "strategy": "scratch",
    "seed": 0,
    "status": "ok",
    "config_hash": "h",
    "alpha": None,
    "selected": True,
    "metrics": {"test_top1_pct": 50.0},
    "compute": {"target_train_s": 1.0},
    "provenance": {"device_name": "cpu"},
}


@st.composite
def records_files(draw):
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["record", "mutated", "garbage", "bytes"]))
        if kind == "record":
            lines.append(json.dumps({**RECORD, "seed": draw(st.integers(0, 3))}).encode())
        elif kind == "mutated":
            record = dict(RECORD)
            record[draw(st.sampled_from(sorted(RECORD) + ["extra"]))] = draw(garbage)
            lines.append(json.dumps(record).encode())
        elif kind == "garbage":
            lines.append(json.dumps(draw(garbage)).encode())
        else:
            lines.append(draw(st.binary(max_size=40)).replace(b"\n", b""))
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n"]))


@pytest.mark.slow
@FUZZ
@given(records_files(), records_files())
def test_generated_records_through_report_and_compare(tmp_path_factory, capsys, base, new):
    root = tmp_path_factory.mktemp("records")
    for name, content in (("base", base), ("new", new)):
        (root / name).mkdir()
        (root / name / "records.jsonl").write_bytes(content)
    for argv in (
        ["report", str(root / "base")],
        ["compare", str(root / "base"), str(root / "new"), "--fail", "top1:-0.5pp"],
        ["index", str(root)],
    ):
        code = main(argv)
        err = capsys.readouterr().err
        assert code in (0, 1, 2), err  # compare's 1: a regression or a failed cell, which is its verdict
        assert "Traceback" not in err
        if code == 2:
            assert err.strip().splitlines()[-1].startswith("bench: error: "), err


@FUZZ
@given(
    st.text(max_size=40)
    | st.lists(st.sampled_from(["top1", "top5", ":", "-", "+", "0.5", "pp", "%", ",", "1e9", "x"]), max_size=8).map(
        "".join
    )
)
def test_generated_thresholds_parse_or_fail_with_a_compare_error(text):
    try:
        parse_thresholds(text)
    except CompareError as e:  # and nothing else
        assert str(e).strip()
