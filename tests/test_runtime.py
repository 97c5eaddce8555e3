"""Runtime switches: recorded, compiled once and reused, no recompilation storms, honest timers."""

import dataclasses

import pytest
import torch

from bench.pipeline.build import measured_peaks, utilisation
from bench.pipeline.plan import key_runtime
from transfer_core.backbones import create_backbone
from transfer_core.data import DeviceBatches
from transfer_core.runtime import Runtime, Timer, measured_peak_tflops, native_cpu_bf16, resolve_runtime
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
    return dataclasses.replace(resolve_runtime("cpu"), compile=True, compile_when="always", compile_backend=counter)


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
def test_every_amp_mode_trains_on_cpu_in_its_precision(amp):
    runtime = resolve_runtime("cpu", amp=amp, compile="off")
    assert runtime.amp == amp and runtime.describe()["amp"] == amp
    torch.manual_seed(0)
    model = runtime.prepare(create_backbone("resnet8", 5, 1))
    seen = []  # the dtype each convolution computed in: autocast at work, not just requested
    for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d)):
        conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    images, labels = tiny_data(64)
    stats = train(
        model, DeviceBatches(images, labels, 16, train=True), TrainRecipe(epochs=2, batch_size=16, lr=0.05), runtime
    )
    assert stats.steps == 8 and stats.flops > 0 and stats.train_s > 0
    expected = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": torch.float32}[amp]
    assert seen and set(seen) == {expected}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_is_bf16_exactly_on_cpus_with_native_bf16(native):
    runtime = resolve_runtime("cpu", cpu_bf16=native)
    assert runtime.amp == ("bf16" if native else "off")
    assert runtime.input_dtype == (torch.bfloat16 if native else torch.float32)
    assert runtime.describe()["amp"] == runtime.amp  # in every record's provenance
    assert key_runtime(runtime, [], False)["amp"] == runtime.amp  # and in the keys: it changes results
    # fp16 on CPU only when asked; an explicit choice wins over the capability
    assert resolve_runtime("cpu", cpu_bf16=True, amp="off").amp == "off"
    assert resolve_runtime("cpu", cpu_bf16=native, amp="fp16").amp == "fp16"
    assert resolve_runtime("cpu", cpu_bf16=native, amp="bf16").amp == "bf16"
    assert resolve_runtime("cuda", cuda_available=True, cpu_bf16=False).amp == "bf16"


def test_native_bf16_is_read_from_the_cpu_feature_probe(monkeypatch):
    for avx512_bf16, amx in [(False, False), (True, False), (False, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert native_cpu_bf16() == (avx512_bf16 or amx)
        assert resolve_runtime("cpu").amp == ("bf16" if avx512_bf16 or amx else "off")


def test_switches_are_recorded_where_they_act():
    cpu = resolve_runtime("cpu", compile="off", compile_mode="max-autotune")
    assert "compile_mode" not in cpu.describe() and "cudnn_benchmark" not in cpu.describe()
    compiled = resolve_runtime("cpu", compile="on", compile_mode="max-autotune")
    assert compiled.describe()["compile"] is True and compiled.describe()["compile_mode"] == "max-autotune"
    assert compiled.compile_always and "compile_when" not in key_runtime(compiled, [], False)
    auto = resolve_runtime("cpu")  # auto on CPU: compiled only where it pays, which the keys say
    assert auto.compile and auto.compile_when == "pays" and not auto.compile_always
    assert key_runtime(auto, [], False)["compile_when"] == "pays"
    assert resolve_runtime("cuda", cuda_available=True).compile_always  # auto on CUDA: always
    assert not resolve_runtime("cpu", deterministic=True).compile  # no decision by timing in a deterministic run
    assert resolve_runtime("cpu").describe()["channels_last"] is True


def test_cpu_timer_peaks_and_utilisation():
    timer = Timer(torch.device("cpu")).start()
    assert timer.stop() >= 0
    peaks = measured_peaks(torch.device("cpu"))
    assert peaks["device_peak_fp32_tflop_per_s"] > 0 and peaks["device_peak_bf16_tflop_per_s"] > 0
    assert measured_peak_tflops("cpu", "fp32") == peaks["device_peak_fp32_tflop_per_s"]  # measured once
    made_up = {"device_peak_bf16_tflop_per_s": 2.0, "device_peak_fp32_tflop_per_s": 0.5}
    bf16 = utilisation(2e12, 4.0, made_up, "bf16")  # against the peak of the precision it trained in
    assert bf16["target_tflop_per_s"] == 0.5 and bf16["target_mfu_pct"] == pytest.approx(25.0)
    assert utilisation(2e12, 4.0, made_up, "off")["target_mfu_pct"] == pytest.approx(100.0)
    assert utilisation(2e12, 4.0, made_up, "off")["target_mfu_precision"] == "fp32"
    assert utilisation(0.0, 4.0, made_up, "bf16")["target_mfu_pct"] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_probe_and_mfu():
    peak = measured_peak_tflops("cuda", "bf16")
    peaks = measured_peaks(torch.device("cuda"))
    assert peak > 1 and peaks["device_peak_bf16_tflop_per_s"] == peak
    assert 0 < utilisation(peak * 1e12, 2.0, peaks, "bf16")["target_mfu_pct"] == pytest.approx(50.0)


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
