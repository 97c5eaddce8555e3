"""compile: auto on CPU: a training compiles only when its measured eager steps repay the compile, the compile
is counted apart from training, and what it cost is remembered for the next run."""

import dataclasses
import json
import os
import time

import pytest
import torch

from transfer_core import compiling
from transfer_core.backbones import create_backbone
from transfer_core.compiling import (
    COLD_COMPILE_S,
    PROBE_STEPS,
    WARM_FRACTION,
    WARMUP_STEPS,
    CompileCosts,
    CompileDecision,
    compile_pays,
    projected_saving_s,
)
from transfer_core.data import DeviceBatches
from transfer_core.runtime import forget_compiled, resolve_runtime
from transfer_core.training import TrainRecipe, train


class CountingBackend:
    """Runs graphs eagerly, counting compilations; ``fail`` makes it refuse like a machine with no compiler."""

    def __init__(self, fail: bool = False):
        self.graphs, self.fail = 0, fail

    def __call__(self, graph_module, example_inputs):
        if self.fail:
            raise RuntimeError("no C++ compiler found")
        self.graphs += 1
        return graph_module.forward


@pytest.fixture(autouse=True)
def fresh_compiler(monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # restored after the test, whatever it set
    torch._dynamo.reset()
    compiling._IN_PROCESS.clear()
    compiling._NO_FOLDER.clear()
    compiling._COMPILED_HERE.clear()
    yield
    forget_compiled()  # the wrappers hold their models
    torch._dynamo.reset()
    compiling._IN_PROCESS.clear()
    compiling._NO_FOLDER.clear()


def pays_runtime(backend, folder):
    runtime = resolve_runtime("cpu", compile="auto")
    assert runtime.compile and runtime.compile_when == "pays"
    return dataclasses.replace(runtime, compile_backend=backend, compile_cache=str(folder))


def batches(n_batches: int, batch: int = 16):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n_batches * batch, 1, 8, 8, generator=generator)
    return DeviceBatches(images, torch.randint(0, 5, (len(images),), generator=generator), batch, train=True)


def fit(runtime, epochs: int, n_batches: int = 10):
    torch.manual_seed(0)
    model = runtime.prepare(create_backbone("resnet8", 5, 1))
    return train(model, batches(n_batches), TrainRecipe(epochs=epochs, batch_size=16, lr=0.05), runtime)


def test_the_rule():
    # 100 steps of 0.1 s at 1.5x save 100 * 0.1 * (1 - 1/1.5) = 3.33 s
    assert projected_saving_s(100, 0.1, 1.5) == pytest.approx(10 / 3)
    assert compile_pays(10 / 3, 0.0, 3.0) and not compile_pays(10 / 3, 0.0, 3.5)
    assert compile_pays(10 / 3, 0.5, 3.5)  # what earlier eager trainings of the graph forwent counts too
    assert projected_saving_s(10_000, 0.1, 1.0) == 0  # no speedup: never pays


def test_a_short_training_stays_eager_and_says_why(tmp_path):
    backend = CountingBackend()
    stats = fit(pays_runtime(backend, tmp_path), epochs=2)  # 20 steps: 13 left after timing 7
    assert backend.graphs == 0 and stats.compiled_steps == 0 and stats.compile_s == 0
    decision = stats.compile_decision
    assert decision["compiled"] is False and decision["expected_compile_from"] == "cold default"
    assert decision["expected_compile_s"] == COLD_COMPILE_S and decision["remaining_steps"] == 20 - 7
    assert decision["projected_saving_s"] < COLD_COMPILE_S and decision["forgone_s"] == 0
    # what it forwent is remembered for the graph's next training
    assert CompileCosts(tmp_path).expected(decision["graph"])[2] == pytest.approx(decision["projected_saving_s"])


def test_short_trainings_of_one_graph_compile_once_their_forgone_savings_pay(tmp_path, monkeypatch):
    # each training projects a saving of 1 s (fixed here: measured step times vary on a busy machine) and a
    # compile costs 2.5 s: the first two stay eager and the third, with 2 s forgone, compiles
    monkeypatch.setattr(compiling, "projected_saving_s", lambda remaining, step_s, speedup: 1.0)
    monkeypatch.setattr(compiling, "COLD_COMPILE_S", 2.5)
    backend = CountingBackend()
    decisions = [fit(pays_runtime(backend, tmp_path), epochs=2).compile_decision for _ in range(3)]
    assert [d["compiled"] for d in decisions] == [False, False, True] and backend.graphs >= 1
    assert [d["forgone_s"] for d in decisions] == [0.0, 1.0, 2.0]
    assert CompileCosts(tmp_path).expected(decisions[-1]["graph"])[2] == 0  # compiled: nothing forgone any more


def test_a_training_compiles_once_the_measured_cost_is_repaid_and_keeps_the_compile_apart(tmp_path, monkeypatch):
    # the cache folder remembers that this graph compiled in no time and ran twice as fast: compiling pays
    probe = fit(pays_runtime(CountingBackend(), tmp_path), epochs=1)
    signature = probe.compile_decision["graph"]
    (tmp_path / "compile_costs.json").write_text(json.dumps({signature: {"compile_s": 0.0, "speedup": 2.0}}))
    backend = CountingBackend()
    stats = fit(pays_runtime(backend, tmp_path), epochs=3)  # 30 steps
    decided_at = WARMUP_STEPS + PROBE_STEPS
    assert probe.compile_decision["compiled"] is False
    assert stats.compile_decision["expected_compile_from"] == "cache", stats.compile_decision
    assert stats.compile_decision["compiled"] is True and backend.graphs >= 1
    assert stats.steps == 30 and stats.compiled_steps == 30 - decided_at
    assert stats.compile_s > 0 and stats.train_s > 0  # the compiling step is in compile_s, not in train_s
    assert stats.compile_decision["measured_speedup"] > 0
    remembered = json.loads((tmp_path / "compile_costs.json").read_text())[signature]
    assert remembered["compile_s"] == pytest.approx(stats.compile_s)  # the next run's estimate: this measurement
    assert remembered["speedup"] == pytest.approx(stats.compile_decision["measured_speedup"])
    # inductor's on-disk cache is put under the harness's cache folder (unless the user chose one)
    if compiling_user_cache() is None:
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / "inductor").resolve())
    # the same graph again in this process: the compiled graph is reused, and the next decision knows it
    graphs = backend.graphs
    # (this tiny model's saving is a few milliseconds, at the scale of timing noise: fixed at 1 s here)
    monkeypatch.setattr(compiling, "projected_saving_s", lambda remaining, step_s, speedup: 1.0)
    again = fit(pays_runtime(backend, tmp_path), epochs=3)
    assert again.compile_decision["expected_compile_from"] == "this process"
    assert again.compile_decision["compiled"] and backend.graphs == graphs  # a new model, the same graphs


def test_after_a_cold_compile_the_next_run_expects_the_kernels_on_disk(tmp_path, monkeypatch):
    # a cold compile measured 20 s: a next run in the same folder expects a tenth of it (inductor's kernels are on
    # disk), so a training whose projected saving is 3 s compiles there, where 20 s would have kept it eager
    monkeypatch.setattr(compiling, "projected_saving_s", lambda remaining, step_s, speedup: 3.0)
    signature = fit(pays_runtime(CountingBackend(), tmp_path), epochs=1).compile_decision["graph"]
    compiling._IN_PROCESS.clear()
    (tmp_path / "compile_costs.json").write_text("{}")
    CompileCosts(tmp_path).remember(signature, 20.0, 1.2, fresh_process=True)
    compiling._IN_PROCESS.clear()  # a later run
    decision = fit(pays_runtime(CountingBackend(), tmp_path), epochs=3).compile_decision
    assert decision["expected_compile_s"] == pytest.approx(20.0 * WARM_FRACTION)
    assert decision["expected_compile_from"].startswith("cache: a cold compile")
    assert decision["compiled"] is True
    # that run's compile is the warm cost now measured: the run after it expects exactly that
    remembered = json.loads((tmp_path / "compile_costs.json").read_text())[signature]
    assert remembered["kernels_were_on_disk"] is True
    assert remembered["compile_s"] == pytest.approx(decision["compile_s"])
    compiling._IN_PROCESS.clear()
    assert CompileCosts(tmp_path).expected(signature)[0] == pytest.approx(decision["compile_s"])


def test_a_graph_measured_slower_compiled_stays_eager_and_forgoes_nothing(tmp_path):
    # a compile measured 0.9x (the harness's L2-SP training of ResNet-8 on 2 cores did): every later training of
    # the graph stays eager, however cheap the compile, and staying eager adds nothing to what was forgone
    signature = fit(pays_runtime(CountingBackend(), tmp_path), epochs=1).compile_decision["graph"]
    compiling._IN_PROCESS.clear()
    (tmp_path / "compile_costs.json").write_text(json.dumps({signature: {"compile_s": 0.01, "speedup": 0.9}}))
    decision = fit(pays_runtime(CountingBackend(), tmp_path), epochs=3).compile_decision
    assert decision["compiled"] is False and decision["projected_saving_s"] < 0
    assert json.loads((tmp_path / "compile_costs.json").read_text())[signature]["forgone_s"] == 0.0


def test_a_cold_compile_stays_cold_when_another_run_records_the_graph_meanwhile(tmp_path, monkeypatch):
    # two runs sharing a cache folder compile one graph at once, both cold; the one finishing second finds the
    # other's cost in the file, but its own kernels did not come from disk: it is recorded as cold all the same
    monkeypatch.setattr(compiling, "COLD_COMPILE_S", 0.0)
    decision = CompileDecision(CompileCosts(tmp_path), total_steps=100)
    assert [decision.after_step(step, lambda: "g") for step in range(1, WARMUP_STEPS + PROBE_STEPS + 1)][-1]
    CompileCosts(tmp_path).remember("g", 30.0, 1.1, fresh_process=True)  # the other run, done first
    compiling._IN_PROCESS.pop("g")  # (in its own process)
    decision.compiled(25.0, 50, 5.0)
    remembered = json.loads((tmp_path / "compile_costs.json").read_text())["g"]
    assert remembered["kernels_were_on_disk"] is False and remembered["compile_s"] == 25.0
    compiling._IN_PROCESS.clear()  # a later run
    assert CompileCosts(tmp_path).expected("g")[0] == pytest.approx(25.0 * WARM_FRACTION)


def compiling_user_cache():
    from transfer_core import runtime

    return runtime._USER_INDUCTOR_CACHE


def test_a_compiler_that_fails_leaves_the_training_eager_and_recorded(tmp_path, monkeypatch):
    # a cold default of no seconds makes the rule compile; the backend refuses; the training goes on eager
    monkeypatch.setattr(compiling, "COLD_COMPILE_S", 0.0)
    stats = fit(pays_runtime(CountingBackend(fail=True), tmp_path), epochs=3)
    assert stats.steps == 30 and stats.compiled_steps == 0 and torch.isfinite(torch.tensor(stats.final_loss))
    assert "no C++ compiler" in stats.compile_decision["compile_error"]
    assert stats.compile_decision["compiled"] is False


def test_compile_costs_survive_a_torn_file_and_a_read_only_folder(tmp_path):
    costs = CompileCosts(tmp_path)
    (tmp_path / "compile_costs.json").write_text("{not json")
    assert costs.expected("g")[3] == "cold default"
    costs.remember("g", 25.0, 1.4, fresh_process=True)  # the graph's first compile in this folder: cold
    compiling._IN_PROCESS.clear()  # as a later run sees it
    assert CompileCosts(tmp_path).expected("g")[:3] == (25.0 * WARM_FRACTION, 1.4, 0.0)  # its kernels are on disk
    costs.remember("g", 1.5, None, fresh_process=True, kernels_were_on_disk=True)  # a later run's: the warm cost
    compiling._IN_PROCESS.clear()
    assert CompileCosts(tmp_path).expected("g") == (1.5, 1.4, 0.0, "cache")
    costs.remember("g", 0.1, None, fresh_process=False)  # a reuse within one process is not a next run's cost
    compiling._IN_PROCESS.clear()
    assert CompileCosts(tmp_path).expected("g") == (1.5, 1.4, 0.0, "cache")
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    CompileCosts(blocked).remember("g", 1.0, 1.0, True)  # cannot write: the measurement is lost, nothing raised


def test_evaluation_stays_eager_under_auto_even_after_a_compiled_training(tmp_path, monkeypatch):
    from transfer_core.training import predict

    monkeypatch.setattr(compiling, "COLD_COMPILE_S", 0.0)  # every training compiles
    backend = CountingBackend()
    runtime = pays_runtime(backend, tmp_path)
    torch.manual_seed(0)
    model = runtime.prepare(create_backbone("resnet8", 5, 1))
    stats = train(model, batches(10), TrainRecipe(epochs=2, batch_size=16, lr=0.05), runtime)
    assert stats.compiled_steps > 0
    graphs = backend.graphs
    logits, _ = predict(
        model, DeviceBatches(torch.randn(40, 1, 8, 8), torch.zeros(40, dtype=torch.long), 16, False), runtime
    )
    assert logits.shape == (40, 5) and backend.graphs == graphs  # no eval-mode graph compiled for a short pass


class SleepingBackend(CountingBackend):
    """Compiling takes a known half second."""

    def __call__(self, graph_module, example_inputs):
        time.sleep(0.5)
        return super().__call__(graph_module, example_inputs)


def test_the_compiling_step_is_in_compile_s_and_not_in_train_s(tmp_path, monkeypatch):
    monkeypatch.setattr(compiling, "COLD_COMPILE_S", 0.0)  # compile after the timed eager steps
    runtime = pays_runtime(SleepingBackend(), tmp_path)
    started = time.perf_counter()
    stats = fit(runtime, epochs=3)
    wall = time.perf_counter() - started
    assert stats.compiled_steps == 30 - WARMUP_STEPS - PROBE_STEPS
    assert stats.compile_s >= 0.5  # the compile (forward and backward graphs: two or more sleeps)
    # the segments are disjoint parts of the call: were the compile counted in training too, they would not fit
    assert stats.train_s + stats.compile_s <= wall


def test_a_graph_is_charged_its_compile_once_per_process():
    """Every compile is in the stats with its graph; only the first of a graph in the process is its cost, so
    a report can charge it once whichever training met the graph first."""
    backend = CountingBackend()
    runtime = dataclasses.replace(resolve_runtime("cpu", compile="on"), compile_backend=backend)
    first, second = fit(runtime, epochs=1), fit(runtime, epochs=1)
    (a,), (b,) = first.compiles, second.compiles
    assert a["graph"] == b["graph"] and a["id"] != b["id"]
    assert a["first_in_process"] and not b["first_in_process"]
    assert a["compile_s"] == pytest.approx(first.compile_s) and b["compile_s"] == pytest.approx(second.compile_s)
    torch.manual_seed(0)
    model = runtime.prepare(create_backbone("resnet8", 5, 1))
    smaller = train(model, batches(3, batch=8), TrainRecipe(epochs=1, batch_size=8, lr=0.05), runtime)
    (c,) = smaller.compiles  # another input shape: another graph, whose first compile is its own cost
    assert c["graph"] != a["graph"] and c["first_in_process"]


def test_a_failed_compile_is_not_tried_again_in_the_process(tmp_path, monkeypatch):
    monkeypatch.setattr(compiling, "COLD_COMPILE_S", 0.0)
    backend = CountingBackend(fail=True)
    first = fit(pays_runtime(backend, tmp_path), epochs=3)
    second = fit(pays_runtime(backend, tmp_path), epochs=3)
    assert "compile_error" in first.compile_decision
    assert second.compile_decision["expected_compile_s"] == float("inf") and not second.compile_decision["compiled"]
    assert "compile_error" not in second.compile_decision  # not attempted


def test_no_compile_is_decided_with_no_step_left(tmp_path):
    costs = CompileCosts(tmp_path)
    costs.forgo("g", 100.0)  # far more forgone than any compile costs
    decision = CompileDecision(costs, total_steps=WARMUP_STEPS + PROBE_STEPS)
    assert not any(decision.after_step(step, lambda: "g") for step in range(1, WARMUP_STEPS + PROBE_STEPS + 1))
    assert decision.details["remaining_steps"] == 0 and decision.details["compiled"] is False


def _forgo_many(folder, times):
    for _ in range(times):
        CompileCosts(folder).forgo("g", 1.0)


def test_runs_sharing_a_cache_add_their_forgone_savings_up(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_forgo_many, args=(tmp_path, 25)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert all(worker.exitcode == 0 for worker in workers)
    assert CompileCosts(tmp_path).expected("g")[2] == 75.0  # none lost to a concurrent read-modify-write
