"""Runner behaviour: records, resume, failures that do not stop the suite."""
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.records import ResultsStore
from bench.runner import Runner
from bench.suite import expand_cells, parse_suite
from transfer_core.runtime import resolve_runtime
from transfer_core.strategies import STRATEGIES, Strategy

from conftest import tiny_suite


def make_runner(tmp_path: Path, raw: dict, **kwargs) -> tuple[Runner, list]:
    suite = parse_suite(raw)
    runner = Runner(suite, tmp_path / "data", tmp_path / "out", tmp_path / "cache", resolve_runtime("cpu"), log=lambda m: None, **kwargs)
    return runner, expand_cells(suite)


def test_records_hold_identity_metrics_compute_and_provenance(tmp_path):
    runner, cells = make_runner(tmp_path, tiny_suite())
    summary = runner.run(cells)
    assert summary.ran == 4 and not summary.failed
    records = runner.store.read()
    assert len(records) == 3 + 3  # alpha-mix writes one record per alpha
    for r in records:
        assert r["status"] == "ok" and r["suite"] == "tiny" and r["seed"] == 0
        assert set(r["metrics"]) == {"test_top1_pct", "test_top5_pct", "val_top1_pct"}
        assert r["directions"]["test_top1_pct"] == "higher" and r["directions"]["target_train_s"] == "lower"
        assert r["compute"]["target_train_s"] > 0 and r["compute"]["target_train_flops"] > 0
        assert r["provenance"]["torch"] and r["provenance"]["data"]["target"]["fingerprint"]
        assert r["provenance"]["runtime"]["device"] == "cpu"
    by_strategy = {r["strategy"]: r for r in records if r.get("selected")}
    assert by_strategy["scratch"]["compute"]["source_train_s_amortised"] == 0
    # one source model, shared by the three cells that use it, its cost split between them
    shared = by_strategy["full_finetune"]["compute"]
    assert shared["source_cells_sharing"] == 3
    assert shared["source_train_s_amortised"] == pytest.approx(shared["source_train_s_total"] / 3)
    alphas = sorted(r["alpha"] for r in records if r["strategy"] == "alpha_mix")
    assert alphas == [0, 0.5, 1]


def test_a_rerun_trains_nothing_and_force_reruns(tmp_path, monkeypatch):
    runner, cells = make_runner(tmp_path, tiny_suite())
    runner.run(cells)
    n_records = len(runner.store.read())

    def no_training(*args, **kwargs):
        raise AssertionError("a resumed run must not train")

    import bench.build
    import transfer_core.strategies.full_finetune as ft
    import transfer_core.strategies.linear_probe as lp
    import transfer_core.strategies.scratch as scratch
    for module in (bench.build, ft, lp, scratch):
        monkeypatch.setattr(module, "train", no_training)
    again, cells = make_runner(tmp_path, tiny_suite())
    summary = again.run(cells)
    assert summary.ran == 0 and summary.skipped == 4
    assert len(again.store.read()) == n_records

    # with --force the cells rerun, but trained models come from the cache: still no training
    forced, cells = make_runner(tmp_path, tiny_suite(), force=True)
    summary = forced.run(cells)
    assert summary.ran == 4 and not summary.failed
    assert len(forced.store.read()) == 2 * n_records


def pending_strategies(runner, cells):
    return [e.cell.strategy.name for e in runner.pending(runner.plan(cells), cells)]


def test_changing_a_setting_reruns_only_the_cells_it_affects(tmp_path):
    runner, cells = make_runner(tmp_path, tiny_suite())
    runner.run(cells)
    raw = tiny_suite()
    raw["strategies"]["scratch"]["epochs"] = 3
    changed, cells = make_runner(tmp_path, raw)
    assert pending_strategies(changed, cells) == ["scratch"]


class AlwaysFails(Strategy):
    name = "always_fails_for_tests"

    def fit(self, task, source, ingredients):
        raise RuntimeError("boom")


def test_a_failing_cell_is_recorded_and_the_suite_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(STRATEGIES._entries, AlwaysFails.name, AlwaysFails)  # registered for this test only
    raw = tiny_suite(strategies={"always_fails_for_tests": {}, "scratch": {"epochs": 1}})
    runner, cells = make_runner(tmp_path, raw)
    summary = runner.run(cells)
    assert summary.ran == 2 and len(summary.failed) == 1
    records = {r["strategy"]: r for r in ResultsStore(tmp_path / "out").read()}
    assert records["always_fails_for_tests"]["status"] == "error"
    assert records["always_fails_for_tests"]["error"] == "RuntimeError: boom"
    assert records["scratch"]["status"] == "ok"
    # the failed cell is retried by the next run, the ok one is not
    rerun, cells = make_runner(tmp_path, raw)
    assert pending_strategies(rerun, cells) == ["always_fails_for_tests"]


def test_divergence_is_its_own_status(tmp_path):
    raw = tiny_suite(strategies={"scratch": {"epochs": 2, "lr": 1.0e12}})
    runner, cells = make_runner(tmp_path, raw)
    runner.run(cells)
    (record,) = runner.store.read()
    assert record["status"] == "diverged" and "non-finite" in record["error"]


def test_the_data_backend_enters_the_hash_only_for_image_folders(tmp_path):
    import dataclasses

    from bench.plan import build_plan

    def hashes(raw, backend):
        suite = parse_suite(raw)
        runtime = dataclasses.replace(resolve_runtime("cpu", data_backend="torch"), data_backend=backend)
        data = SimpleNamespace(fingerprint="all splits", train_fingerprint="train splits")
        return [e.key for e in build_plan(suite, expand_cells(suite), runtime, lambda spec: data).evaluations]

    arrays = tiny_suite()
    assert hashes(arrays, "torch") == hashes(arrays, "dali")
    folders = tiny_suite(targets=[{"dataset": "image_folder", "path": "pets", "resolution": 32}])
    torch_hashes, dali_hashes = hashes(folders, "torch"), hashes(folders, "dali")
    assert all(a != b for a, b in zip(torch_hashes, dali_hashes))
