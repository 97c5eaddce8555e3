"""``bench throughput``: what the harness costs, measured against code without it.

1. The harness's train step (device loader with augmentation, the shared training loop) against a bare
   hand-written PyTorch loop on the same model, batch size, precision and device, fed one fixed batch.
2. The linear probe as the harness runs it (features computed once, the head fit on cached features)
   against the naive probe that runs the frozen backbone every epoch, at equal epochs, with top-1.
3. ``--parts matrix``: precision, layout and compilation (``bench/measure/matrix.py``).
Runs alternate between the two sides and the median is reported, so a drifting machine hits both.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from transfer_core.backbones import Classifier, create_backbone
from transfer_core.data import Augmentation, DeviceArrayLoader, DeviceBatches
from transfer_core.datasets import (
    ArraySplit,
    Digits,
    PreparedData,
    Selection,
    prepare_dataset,
)
from transfer_core.runtime import Runtime
from transfer_core.strategies import STRATEGIES, TargetTask
from transfer_core.training import (
    TrainRecipe,
    predict,
    top_k_pct,
    train,
)

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def synthetic_split(n: int, resolution: int, channels: int = 3, classes: int = 10, seed: int = 0) -> ArraySplit:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, resolution, resolution, channels), dtype=torch.uint8, generator=generator)
    return ArraySplit(images, torch.randint(0, classes, (n,), generator=generator))


def in_fresh_process(measure: Callable, *args):
    """``measure(*args)`` in a process spawned for it, and what it returns: a fresh allocator (whether freed host
    memory is retained is process-wide and cannot be undone), thread pools sized anew (a process's first thread
    counts stick), oneDNN's kernels built anew, nothing left by earlier measurements. ``measure`` must be a
    module-level function (spawn pickles it by name)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    spawn = multiprocessing.get_context("spawn")  # a fork would inherit this process's allocator and threads
    with ProcessPoolExecutor(1, mp_context=spawn) as process:
        return process.submit(measure, *args).result()


def in_fresh_processes_at_once(measure: Callable, count: int, *args, timeout_s: Optional[float] = None) -> list:
    """``measure(*args, start_together)`` in ``count`` processes spawned for it, run at the same time (as the
    processes executor's workers train), and what each returns. ``start_together`` is a barrier each waits at,
    set up and ready, before its timed part, so none measures while another still imports or builds its model;
    a wait longer than ``timeout_s`` (None: no limit) breaks it. If a process fails, or this one is interrupted,
    the barrier is broken for the others (they raise BrokenBarrierError instead of waiting forever) and the
    failure is raised (one of them, where several failed at once)."""
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    with multiprocessing.get_context("spawn").Manager() as manager, ThreadPoolExecutor(count) as pool:
        start_together = manager.Barrier(count, timeout=timeout_s)
        runs = [pool.submit(in_fresh_process, measure, *args, start_together) for _ in range(count)]
        try:
            done, _ = wait(runs, return_when=FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C: the processes still waiting must not keep this one from exiting
            start_together.abort()
            raise
        first_failure = next((run.exception() for run in done if run.exception() is not None), None)
        if first_failure is not None:
            start_together.abort()
            wait(runs)
            raise first_failure
        return [run.result() for run in runs]


def _optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)


def bare_loop_img_per_s(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, runtime: Runtime, warmup: int = 3
) -> float:
    """The loop a user writes by hand: one fixed batch already on the device, no loader, no schedule."""
    optimizer = _optimizer(model)
    model.train()
    step_fn = runtime.compiled(model)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp == "fp16")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with runtime.autocast():
            loss = F.cross_entropy(step_fn(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    timer = runtime.timer().start()
    for _ in range(steps):
        step()
    return steps * len(labels) / timer.stop()


def harness_img_per_s(
    model: torch.nn.Module, split: ArraySplit, batch_size: int, steps: int, runtime: Runtime
) -> float:
    """The harness's path: the device loader (crop, flip, normalise) and the shared training loop."""
    fmt = runtime.batch_format(MEAN, STD)
    loader = DeviceArrayLoader(split, fmt, batch_size, True, Augmentation(), seed=0)
    epochs = max(1, steps // len(loader))
    stats = train(
        model,
        loader,
        TrainRecipe(epochs=epochs, batch_size=batch_size, lr=0.01, schedule="constant"),
        runtime,
        desc="harness",
    )
    return stats.images / stats.train_s  # steady state: a compiled first step is kept apart


def harness_vs_bare(
    runtime: Runtime,
    backbone: str,
    batch_size: int,
    resolution: int,
    steps: int,
    repeats: int,
    log: Callable[[str], None],
) -> dict:
    split = synthetic_split(batch_size * max(2, steps // 2), resolution)
    torch.manual_seed(0)
    template = runtime.prepare(create_backbone(backbone, 10, 3))
    fmt = runtime.batch_format(MEAN, STD)
    batch_images, batch_labels = next(iter(DeviceArrayLoader(split, fmt, batch_size, False, Augmentation())))
    bare, harness = [], []
    for run in range(repeats):
        log(f"  run {run + 1}/{repeats}: bare loop, then harness")
        bare.append(bare_loop_img_per_s(copy.deepcopy(template), batch_images, batch_labels, steps, runtime))
        harness.append(harness_img_per_s(copy.deepcopy(template), split, batch_size, steps, runtime))
    return {
        "backbone": backbone,
        "batch_size": batch_size,
        "resolution": resolution,
        "steps": steps,
        "bare_img_per_s": statistics.median(bare),
        "harness_img_per_s": statistics.median(harness),
        # each run's own ratio, then their median: pairs taken back to back see the same machine
        "ratio": statistics.median(h / b for h, b in zip(harness, bare)),
        "bare_runs": bare,
        "harness_runs": harness,
    }


# --- the linear probe: cached features against the frozen backbone run every epoch ---------------------


class FrozenProbe(torch.nn.Module):
    """The naive probe: the frozen backbone runs on every batch of every epoch; only the head learns."""

    def __init__(self, model: Classifier, mean: torch.Tensor, std: torch.Tensor, num_classes: int):
        super().__init__()
        self.body = model.body.requires_grad_(False).eval()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.head = torch.nn.Linear(model.num_features, num_classes)

    def train(self, mode: bool = True):
        super().train(mode)
        self.body.eval()  # frozen means frozen BatchNorm statistics too
        return self

    def forward(self, x):
        with torch.no_grad():
            features = self.body(x)
        return self.head((features.float() - self.mean) / self.std)


def probe_cached_vs_naive(
    runtime: Runtime, source: Classifier, target: PreparedData, backbone: str, epochs: int, seed: int = 0
) -> dict:
    spec = STRATEGIES.get("linear_probe")
    recipe = dataclasses.replace(TrainRecipe(**spec.recipe_defaults), epochs=epochs)
    ctx = TargetTask(target, backbone, seed, runtime, Augmentation(crop_padding=0, flip="none"))
    timer = runtime.timer().start()
    fitted = spec(spec.Options(solver="sgd"), recipe).fit(
        ctx, copy.deepcopy(source), {}
    )  # SGD: the naive probe it is timed against runs the same epochs
    cached_s = timer.stop()
    test = ctx.loader("test", train=False)
    cached_top1 = top_k_pct(*predict(fitted.model, test, runtime), 1)

    # naive: the same images in the same order, standardised the same way, the backbone run every batch
    timer.start()
    model = copy.deepcopy(source)
    train_images, train_labels = [torch.cat(parts) for parts in zip(*ctx.loader("train", train=False))]
    features, _ = predict(model.body, ctx.loader("train", train=False), runtime)  # one pass for the statistics
    mean, std = features.mean(0).to(runtime.device), features.std(0).clamp_min(1e-6).to(runtime.device)
    torch.manual_seed(seed)
    probe = FrozenProbe(model, mean, std, target.num_classes).to(runtime.device)
    batches = DeviceBatches(train_images, train_labels, recipe.batch_size, train=True, seed=seed)
    train(probe, batches, recipe, dataclasses.replace(runtime, compile=False), desc="naive probe")
    naive_s = timer.stop()
    naive_top1 = top_k_pct(*predict(probe, test, runtime), 1)
    return {
        "epochs": epochs,
        "train_images": len(train_labels),
        "cached_s": cached_s,
        "naive_s": naive_s,
        "speedup": naive_s / cached_s,
        "cached_top1_pct": cached_top1,
        "naive_top1_pct": naive_top1,
        "top1_difference_pp": cached_top1 - naive_top1,
    }


def digits_transfer(runtime: Runtime, backbone: str, source_epochs: int, log) -> tuple[Classifier, PreparedData]:
    """A real source model (digits 0-4) and target (digits 5-9): no download needed."""
    source = prepare_dataset("digits", Digits.Options(), Selection(classes=(0, 1, 2, 3, 4)), Path("."), False)
    target = prepare_dataset(
        "digits", Digits.Options(), Selection(classes=(5, 6, 7, 8, 9), val_fraction=0.2), Path("."), False
    )
    torch.manual_seed(0)
    model = runtime.prepare(create_backbone(backbone, source.num_classes, source.channels))
    log(f"  training the source {backbone} on digits 0-4 for {source_epochs} epochs")
    loader = runtime.loader(source, "train", 32, True, Augmentation(**Digits.augmentation_defaults))
    train(model, loader, TrainRecipe(epochs=source_epochs, batch_size=32, lr=0.1), runtime, desc="source")
    return model, target


def cifar_transfer(
    runtime: Runtime, backbone: str, source_epochs: int, root: Path, log
) -> tuple[Classifier, PreparedData]:
    """CIFAR-10 (200 per class) as the source, CIFAR-100's first 20 classes (100 per class) as the target."""
    from transfer_core.datasets import Cifar10, Cifar100

    source = prepare_dataset("cifar10", Cifar10.Options(), Selection(per_class=200), root, False)
    target = prepare_dataset(
        "cifar100",
        Cifar100.Options(),
        Selection(classes=tuple(range(20)), per_class=100, val_fraction=0.1),
        root,
        False,
    )
    torch.manual_seed(0)
    model = runtime.prepare(create_backbone(backbone, source.num_classes, source.channels))
    log(f"  training the source {backbone} on {len(source.train)} CIFAR-10 images for {source_epochs} epochs")
    loader = runtime.loader(source, "train", 128, True, Augmentation())
    train(model, loader, TrainRecipe(epochs=source_epochs, batch_size=128, lr=0.1), runtime, desc="source")
    return model, target


def step_table(step: dict, backbone: str, batch_size: int, resolution: int) -> str:
    from tabulate import tabulate

    return tabulate(
        [
            [
                f"{backbone}, batch {batch_size}, {resolution}x{resolution}",
                f"{step['bare_img_per_s']:,.0f}",
                f"{step['harness_img_per_s']:,.0f}",
                f"{step['ratio']:.3f}x",
            ]
        ],
        headers=["train step", "bare loop images/s", "harness images/s", "harness / bare"],
        tablefmt="github",
        disable_numparse=True,
    )


def probe_table(probe: dict, backbone: str, what: str) -> str:
    from tabulate import tabulate

    return tabulate(
        [
            [
                f"{backbone}, {what}, {probe['epochs']} epochs, {probe['train_images']} images",
                f"{probe['naive_s']:.2f}",
                f"{probe['cached_s']:.2f}",
                f"{probe['speedup']:.1f}x",
                f"{probe['naive_top1_pct']:.2f}",
                f"{probe['cached_top1_pct']:.2f}",
                f"{probe['top1_difference_pp']:+.2f}",
            ]
        ],
        headers=[
            "linear probe",
            "naive s",
            "cached s",
            "speed-up",
            "naive top-1 (%)",
            "cached top-1 (%)",
            "difference (pp)",
        ],
        tablefmt="github",
        disable_numparse=True,
    )
