"""Building artifacts: models handed over through the cache exactly as fitted, failures passed to dependants."""

import copy
from dataclasses import replace as dataclass_replace
from pathlib import Path

import torch
from conftest import make_runner as shared_runner
from conftest import tiny_suite

from bench.pipeline.build import Builder
from transfer_core.runtime import resolve_runtime
from transfer_core.strategies.linear_probe import LinearProbe


def make_runner(tmp_path: Path, raw: dict):
    return shared_runner(tmp_path, raw, resolve_runtime("cpu", eval_batch_size=64), data_root=tmp_path)


def test_a_cached_model_loads_exactly_as_its_fit_returned_it(tmp_path, monkeypatch):
    fresh = []
    fit = LinearProbe.fit

    def keep_a_copy(self, task, source, ingredients):
        fitted = fit(self, task, source, ingredients)
        fresh.append(copy.deepcopy(fitted.model))
        return fitted

    monkeypatch.setattr(LinearProbe, "fit", keep_a_copy)
    runner, cells = make_runner(tmp_path, tiny_suite(strategies={"linear_probe": {"epochs": 2}}))
    plan = runner.plan(cells)
    builder = Builder(runner.env, log=lambda m: None)
    outcomes = {}
    for artifact in plan.closure([plan.cells[0][1].key]):
        outcomes[artifact.key] = builder.build(artifact, {d: outcomes[d] for d in artifact.deps})
        assert outcomes[artifact.key].ok, outcomes[artifact.key].error
    (fitted,) = [a for a in plan.artifacts.values() if a.kind == "fitted"]
    loaded = builder._load_fitted(fitted.key, builder.data(fitted.target), "resnet8").model
    (returned,) = fresh
    assert repr(loaded) == repr(returned)
    assert loaded.state_dict().keys() == returned.state_dict().keys()
    for name, value in returned.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    # the probe's body stays frozen after a trip through the cache, its head trainable
    frozen = {name: p.requires_grad for name, p in returned.named_parameters()}
    assert {name: p.requires_grad for name, p in loaded.named_parameters()} == frozen
    assert not frozen["body.stem.0.weight"] and frozen["head.weight"]


def test_a_failed_source_fails_every_cell_built_from_it_and_only_those(tmp_path):
    raw = tiny_suite()
    raw["source"]["lr"] = 1.0e12  # diverges
    runner, cells = make_runner(tmp_path, raw)
    summary = runner.run(cells)
    by_strategy = {}
    for record in runner.store.read():
        by_strategy.setdefault(record["strategy"], []).append(record)
    assert [r["status"] for r in by_strategy["scratch"]] == ["ok"]
    for strategy in ("linear_probe", "full_finetune", "alpha_mix"):
        (record,) = by_strategy[strategy]  # one record, not one per alpha: nothing was evaluated
        assert record["status"] == "diverged" and record["error"].startswith(
            "source digits[0-4]: loss became non-finite"
        )
        assert record["config_hash"] and record["provenance"]["data"]["target"]["fingerprint"]
    assert sorted(summary.failed) == sorted(c.cell_id for c in cells if c.strategy.name != "scratch")
    assert not list((tmp_path / "cache").glob("sources/*.pt"))  # nothing half-built was kept


def test_a_worker_refuses_data_other_than_the_plans(tmp_path):
    """A worker on another machine loads the data itself: if its files differ, it must not build a model
    under a key made from the driver's."""
    import pytest

    from transfer_core.datasets import DataUnavailableError

    runner, cells = make_runner(tmp_path, tiny_suite())
    plan = runner.plan(cells)
    (source,) = [a for a in plan.artifacts.values() if a.kind == "source"]
    builder = Builder(runner.env, log=lambda m: None)
    assert (
        builder.data(source.source.data, source.settings["data"]["fingerprint"]).fingerprint
        == source.settings["data"]["fingerprint"]
    )
    with pytest.raises(DataUnavailableError, match=r"digits\[0-4\] at .* is not the data the run was planned with"):
        builder.data(source.source.data, "0" * 16)
    outcome = builder.build(
        dataclass_replace(
            source, settings={**source.settings, "data": {**source.settings["data"], "fingerprint": "0" * 16}}
        ),
        {},
    )
    assert outcome.status == "error" and "not the data the run was planned with" in outcome.error
