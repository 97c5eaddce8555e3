"""Runtime switches: recorded, compiled once and reused, no recompilation storms, honest timers."""

import dataclasses

import pytest
import torch

from bench.build import measured_peak, utilisation
from transfer_core.backbones import create_backbone
from transfer_core.data import DeviceBatches
from transfer_core.runtime import Runtime, Timer, resolve_runtime
from transfer_core.training import TrainRecipe, predict, reestimate_batchnorm, train


class CountingBackend:
    """A torch.compile backend that runs graphs eagerly and counts how many it was asked to compile."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


def tiny_data(n=100, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.randint(0, 5, (n,), generator=generator)


def compiled_runtime(counter) -> Runtime:
    return dataclasses.replace(resolve_runtime("cpu"), compile=True, compile_backend=counter)


def test_schedule_and_epochs_do_not_recompile_and_evaluation_reuses_the_compiled_model():
    torch._dynamo.reset()
    counter = CountingBackend()
    runtime = compiled_runtime(counter)
    torch.manual_seed(0)
    model = runtime.prepare(create_backbone("resnet8", 5, 1))
    images, labels = tiny_data()
    one_batch = DeviceBatches(images[:16], labels[:16], 16, train=True)
    train(model, one_batch, TrainRecipe(epochs=1, batch_size=16, lr=0.05), runtime)
    after_first_step = counter.graphs
    assert after_first_step >= 1

    # 3 epochs x 6 full batches (the partial 7th dropped), the one-cycle schedule changing the lr every step
    batches = DeviceBatches(images, labels, 16, train=True)
    stats = train(model, batches, TrainRecipe(epochs=3, batch_size=16, lr=0.05, schedule="onecycle"), runtime)
    assert stats.steps == 18 and stats.compile_s > 0
    assert counter.graphs == after_first_step  # no recompilation

    evaluation = DeviceBatches(images, labels, 32, train=False)  # 32, 32, 32 and a partial 4
    logits, _ = predict(model, evaluation, runtime)
    assert logits.shape == (100, 5)
    after_eval = counter.graphs
    assert after_eval - after_first_step <= 2  # eval mode, then the partial batch once (then dynamic)
    predict(model, evaluation, runtime)
    reestimate_batchnorm(model, DeviceBatches(images, labels, 32, train=False), runtime)
    predict(model, evaluation, runtime)
    assert counter.graphs == after_eval  # evaluations reuse the compiled graphs; re-estimation runs eager
    assert runtime.compiled(model) is runtime.compiled(model)


@pytest.mark.parametrize("amp", ["bf16", "fp16", "off"])
def test_every_amp_mode_trains_on_cpu(amp):
    runtime = resolve_runtime("cpu", amp=amp)
    assert runtime.amp == amp and runtime.describe()["amp"] == amp
    torch.manual_seed(0)
    model = runtime.prepare(create_backbone("resnet8", 5, 1))
    images, labels = tiny_data(64)
    stats = train(
        model, DeviceBatches(images, labels, 16, train=True), TrainRecipe(epochs=2, batch_size=16, lr=0.05), runtime
    )
    assert stats.steps == 8 and stats.flops > 0 and stats.train_s > 0


def test_switches_are_recorded_where_they_act():
    cpu = resolve_runtime("cpu", compile="off", compile_mode="max-autotune")
    assert "compile_mode" not in cpu.describe() and "cudnn_benchmark" not in cpu.describe()
    compiled = resolve_runtime("cpu", compile="on", compile_mode="max-autotune")
    assert compiled.describe()["compile"] is True and compiled.describe()["compile_mode"] == "max-autotune"
    assert resolve_runtime("cpu").compile is False  # auto: off on CPU
    assert resolve_runtime("cpu").describe()["channels_last"] is True


def test_cpu_timer_and_utilisation():
    timer = Timer(torch.device("cpu")).start()
    assert timer.stop() >= 0
    cpu = utilisation(2e12, 4.0, measured_peak(torch.device("cpu")))
    assert cpu == {"target_tflop_per_s": 0.5, "device_peak_bf16_tflop_per_s": None, "target_mfu_pct": None}
    assert utilisation(2e12, 4.0, 2.0)["target_mfu_pct"] == pytest.approx(25.0)  # against the peak where it trained


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_probe_and_mfu():
    from transfer_core.runtime import measured_bf16_peak_tflops

    peak = measured_bf16_peak_tflops("cuda")
    assert peak > 1 and measured_peak(torch.device("cuda")) == peak
    assert 0 < utilisation(peak * 1e12, 2.0, peak)["target_mfu_pct"] == pytest.approx(50.0)


def test_the_linear_probe_compiles_its_feature_pass_outside_its_timer():
    """The probe's compilation is counted as compile_s and the feature pass reuses the compiled graph."""
    from pathlib import Path

    from transfer_core.data import Augmentation
    from transfer_core.datasets import Digits, Selection, prepare_dataset
    from transfer_core.strategies import TargetTask
    from transfer_core.strategies.linear_probe import LinearProbe

    torch._dynamo.reset()
    counter = CountingBackend()
    runtime = compiled_runtime(counter)
    data = prepare_dataset(
        "digits",
        Digits.Options(),
        Selection(classes=(5, 6, 7, 8, 9), per_class=20, val_fraction=0.25),
        Path("."),
        False,
    )
    task = TargetTask(data, "resnet8", 0, runtime, Augmentation(crop_padding=0, flip="none"))
    torch.manual_seed(0)
    source = runtime.prepare(create_backbone("resnet8", 5, 1))
    graphs_after_warm_up = []
    warm_up = LinearProbe._compile_body

    def counting_warm_up(self, model, task):
        seconds = warm_up(self, model, task)
        graphs_after_warm_up.append(counter.graphs)
        return seconds

    LinearProbe._compile_body = counting_warm_up
    try:
        fitted = LinearProbe(LinearProbe.Options(solver="sgd"), TrainRecipe(epochs=2, batch_size=32)).fit(
            task, source, {}
        )
    finally:
        LinearProbe._compile_body = warm_up
    assert fitted.stats.compile_s > 0 and graphs_after_warm_up[0] >= 1  # compiled before the timed feature pass
    # the timed pass reuses that graph: at most the partial last batch (75 = 32 + 32 + 11) compiles once more
    assert counter.graphs - graphs_after_warm_up[0] <= 1
