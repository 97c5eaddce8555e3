"""Runner behaviour: records, resume, failures that do not stop the suite."""

from types import SimpleNamespace

import pytest
from conftest import make_runner, tiny_suite

from bench.pipeline.build import Builder, Outcome
from bench.pipeline.executors import Executor
from bench.pipeline.runner import Runner
from bench.pipeline.suite import expand_cells, parse_suite
from bench.results.records import ResultsStore
from transfer_core.runtime import resolve_runtime
from transfer_core.strategies import STRATEGIES, Strategy


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


@pytest.mark.slow
def test_compiling_is_in_no_row_and_the_report_charges_each_graph_once(tmp_path):
    import dataclasses

    import torch

    from bench.results.report import compile_line

    def eager_backend(graph_module, example_inputs):  # compiles nothing, costs nothing: only the accounting is tested
        return graph_module.forward

    torch._dynamo.reset()
    runtime = dataclasses.replace(resolve_runtime("cpu", compile="on"), compile_backend=eager_backend)
    runner, cells = make_runner(tmp_path, tiny_suite(), runtime=runtime)
    runner.run(cells)
    records = [r for r in runner.store.read() if r.get("selected")]
    for r in records:
        compute = r["compute"]
        assert compute["target_total_s"] == pytest.approx(compute["target_train_s"] + compute["target_selection_s"])
        if r["strategy"] != "linear_probe":
            assert compute["target_compile_s"] > 0 and r["details"]["compiles"]
    ids = {c["id"] for r in records for c in r["details"]["compiles"]}
    firsts = {c["graph"] for r in records for c in r["details"]["compiles"] if c["first_in_process"]}
    assert len(ids) > len(firsts)  # the fine-tune reuses a graph the source or scratch compiled first
    assert f"{len(firsts)} graphs compiled" in compile_line(records)
    torch._dynamo.reset()


def test_a_rerun_trains_nothing_and_force_reruns(tmp_path, monkeypatch):
    runner, cells = make_runner(tmp_path, tiny_suite())
    runner.run(cells)
    n_records = len(runner.store.read())

    def no_training(*args, **kwargs):
        raise AssertionError("a resumed run must not train")

    import sys

    import bench.pipeline.build

    # every module that calls the training loop: the builder and each strategy module that imports it
    strategy_modules = [
        m for name, m in sys.modules.items() if name.startswith("transfer_core.strategies.") and hasattr(m, "train")
    ]
    for module in [bench.pipeline.build, *strategy_modules]:
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
    return [cell.strategy.name for cell, _ in runner.pending(runner.plan(cells), cells)]


def test_changing_a_setting_reruns_only_the_cells_it_affects(tmp_path):
    runner, cells = make_runner(tmp_path, tiny_suite())
    runner.run(cells)
    raw = tiny_suite()
    raw["strategies"]["scratch"]["epochs"] = 3
    changed, cells = make_runner(tmp_path, raw)
    assert pending_strategies(changed, cells) == ["scratch"]


class AlwaysFails(Strategy):
    name = "always_fails_for_tests"
    version = 1

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

    from bench.pipeline.plan import build_plan

    def hashes(raw, backend):
        suite = parse_suite(raw)
        runtime = dataclasses.replace(resolve_runtime("cpu", data_backend="torch"), data_backend=backend)
        data = SimpleNamespace(fingerprint="all splits", train_fingerprint="train splits")
        return [e.key for _, e in build_plan(suite, expand_cells(suite), runtime, lambda spec: data).cells]

    arrays = tiny_suite()
    assert hashes(arrays, "torch") == hashes(arrays, "dali")
    folders = tiny_suite(targets=[{"dataset": "image_folder", "path": "pets", "resolution": 32}])
    torch_hashes, dali_hashes = hashes(folders, "torch"), hashes(folders, "dali")
    assert all(a != b for a, b in zip(torch_hashes, dali_hashes))


def test_scratch_under_two_sources_is_trained_once_and_recorded_for_each(tmp_path):
    raw = tiny_suite(
        source=[
            {"dataset": "digits", "classes": [0, 1, 2, 3, 4], "per_class": 30, "epochs": 1},
            {"dataset": "digits", "classes": [0, 1, 2], "per_class": 30, "epochs": 1},
        ],
        strategies={"scratch": {"epochs": 1}, "linear_probe": {"epochs": 1}},
    )
    runner, cells = make_runner(tmp_path, raw)
    summary = runner.run(cells)
    assert summary.ran == 4 and not summary.failed
    records = runner.store.read()
    scratch = [r for r in records if r["strategy"] == "scratch"]
    # one evaluation (the same model, the same numbers), written for the cell of each source
    assert sorted(r["source"] for r in scratch) == ["digits[0-2]", "digits[0-4]"]
    assert len({r["config_hash"] for r in scratch}) == 1 and scratch[0]["metrics"] == scratch[1]["metrics"]
    assert len(list((tmp_path / "cache" / "models").glob("*.pt"))) == 1 + 2  # scratch once, a probe per source
    from bench.results.report import load_results, summarise_rows

    rows = summarise_rows(load_results(tmp_path / "out").records)
    assert sorted((r.source, r.strategy) for r in rows if r.strategy == "scratch") == [
        ("digits[0-2]", "scratch"),
        ("digits[0-4]", "scratch"),
    ]

    # a cell added later (or filtered on its own) is recorded although its evaluation has records already
    again, cells = make_runner(tmp_path, raw)
    assert pending_strategies(again, cells) == []
    fresh, cells = make_runner(tmp_path / "fresh", raw)
    only_b = [c for c in cells if c.cell_id.startswith("digits[0-2]->") and c.strategy.name == "scratch"]
    assert fresh.run(only_b, cells).ran == 1
    assert [r["cell_id"] for r in fresh.store.read()] == [only_b[0].cell_id]


class LosesEvaluations(Executor):
    """Builds models in this process, but returns every evaluation as Ray does when its worker died too often."""

    def start(self, env, data):
        self.builder, self.finished = Builder(env, self.log, data), []

    def has_room(self, artifact):
        return not self.finished

    def submit(self, artifact, inputs):
        lost = Outcome("error", "WorkerCrashedError: the task's worker was lost 3 time(s)")
        self.finished.append(
            (artifact.key, lost if artifact.kind == "evaluation" else self.builder.build(artifact, inputs))
        )

    def wait(self, timeout):
        finished, self.finished = self.finished, []
        return finished


def test_a_cell_whose_worker_was_lost_is_recorded_with_the_reason(tmp_path):
    suite = parse_suite(tiny_suite(strategies={"scratch": {"epochs": 1}, "alpha_mix": {}}))
    runner = Runner(
        suite,
        tmp_path,
        tmp_path / "out",
        tmp_path / "cache",
        resolve_runtime("cpu"),
        log=lambda m: None,
        executor=LosesEvaluations(Executor.Options(), lambda m: None),
    )
    summary = runner.run(expand_cells(suite))
    assert summary.ran == 2 and len(summary.failed) == 2
    records = runner.store.read()
    assert sorted(r["strategy"] for r in records) == ["alpha_mix", "scratch"]  # one record each, none per alpha
    assert all(r["status"] == "error" and "worker was lost" in r["error"] for r in records)


def test_a_line_cut_by_a_crash_is_ended_before_the_next_append(tmp_path):
    def record(key, cell):
        return {
            "schema_version": 1,
            "config_hash": key,
            "cell_id": cell,
            "status": "ok",
            "source": "a",
            "target": "b",
            "backbone": "resnet8",
            "strategy": "scratch",
            "seed": 0,
            "metrics": {"test_top1_pct": 50.0},
            "compute": {},
        }

    store = ResultsStore(tmp_path)
    store.append([record("a", "x")])
    with open(store.path, "a") as f:
        f.write('{"config_hash": "b", "cell_id": "y", "sta')  # a write cut short
    store.append([record("c", "z")])
    assert [r["config_hash"] for r in store.read()] == ["a", "c"]
    assert store.done_cells() == {("a", "x"), ("c", "z")}
