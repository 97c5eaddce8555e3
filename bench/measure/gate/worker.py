"""Timing worker of ``bench ci``: times the gated benchmarks with one revision's ``transfer_core``.

The gate starts one worker per revision, running this file from the head's tree with that revision's
tree first on PYTHONPATH (asv's way: the benchmarks are the head's, the code measured is each
revision's), and asks both for samples in turn, so that whatever slows the machine meanwhile slows both.
Protocol, one JSON object per line: the worker first prints ``{"transfer_core": PATH, "benchmarks": {name:
unit}, "errors": {name: why}}``; then for every benchmark name read on stdin it prints ``{"name": name,
"value": seconds per unit}`` or ``{"name": name, "error": why}``. An empty line or end of input ends it.

Each benchmark is built once (model, synthetic data), so a sample times the work and nothing else:
    train_step   one SGD step of the CPU suites' ResNet-8 on a batch of 64 32x32 images, through ``train``
    predict      inference on a batch of 256 such images, through ``predict``
    loader       one augmented training batch of 64 from the device-array loader, through ``create_loader``
A sample is several units (8 steps, 4 batches, 8 epochs of 16 batches): about half a second, 0.4 s and 0.1 s
on 2 cores, long enough for the clock and short enough for many interleaved samples.
"""

import json
import os
import sys
import time

STEPS, BATCH, EVAL_BATCHES, EVAL_BATCH, LOADER_IMAGES, LOADER_EPOCHS = 8, 64, 4, 256, 1024, 8


class InMemoryLoader(list):
    """Batches already on the device, with the loader interface ``train`` and ``predict`` use."""

    def __init__(self, batches, batch_size):
        super().__init__(batches)
        self.batch_size, self.num_examples = batch_size, batch_size * len(batches)

    def set_epoch(self, epoch):
        pass


def _synthetic_batches(torch, n_batches, batch, generator):
    return [
        (torch.randn(batch, 3, 32, 32, generator=generator), torch.randint(0, 10, (batch,), generator=generator))
        for _ in range(n_batches)
    ]


def _model_and_runtime(torch):
    from transfer_core.backbones import create_backbone
    from transfer_core.runtime import resolve_runtime

    # the revision's default precision, eager: a compile decided mid-measurement would time the compiler
    runtime = resolve_runtime("cpu", compile="off")
    torch.manual_seed(0)
    return runtime.prepare(create_backbone("resnet8", 10, 3)), runtime


def train_step(torch):
    from transfer_core.training import TrainRecipe, train

    model, runtime = _model_and_runtime(torch)
    loader = InMemoryLoader(_synthetic_batches(torch, STEPS, BATCH, torch.Generator().manual_seed(0)), BATCH)
    recipe = TrainRecipe(epochs=1, batch_size=BATCH, lr=0.01, schedule="constant")
    return lambda: train(model, loader, recipe, runtime), STEPS


def predict(torch):
    from transfer_core.training import predict as predict_fn

    model, runtime = _model_and_runtime(torch)
    loader = InMemoryLoader(
        _synthetic_batches(torch, EVAL_BATCHES, EVAL_BATCH, torch.Generator().manual_seed(1)), EVAL_BATCH
    )
    return lambda: predict_fn(model, loader, runtime), EVAL_BATCHES


def loader(torch):
    from transfer_core.data import Augmentation, BatchFormat, create_loader
    from transfer_core.datasets import ArraySplit, PreparedData

    generator = torch.Generator().manual_seed(2)
    split = ArraySplit(
        torch.randint(0, 256, (LOADER_IMAGES, 32, 32, 3), dtype=torch.uint8, generator=generator),
        torch.randint(0, 10, (LOADER_IMAGES,), generator=generator),
    )
    data = PreparedData(
        "synthetic", split, None, split, tuple(map(str, range(10))), 3, (0.5,) * 3, (0.25,) * 3, "memory"
    )
    fmt = BatchFormat(torch.device("cpu"), data.mean, data.std, True)
    batches = create_loader(data, "train", fmt, BATCH, True, Augmentation())

    def epochs():
        for epoch in range(LOADER_EPOCHS):
            batches.set_epoch(epoch)
            for _ in batches:
                pass

    return epochs, LOADER_EPOCHS * (LOADER_IMAGES // BATCH)


BENCHMARKS = {
    "train_step": (train_step, "s per step of 64 images"),
    "predict": (predict, "s per batch of 256 images"),
    "loader": (loader, "s per augmented batch of 64 images"),
}


def _reply_channel():
    """Replies go to the real stdout; whatever else is printed there (by the code measured, or a library, from
    Python or C) goes to stderr from now on, so it is never taken for an answer."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def _why(e: Exception) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())  # one line, whatever the message spans


def main():
    replies = _reply_channel()

    def reply(payload):
        replies.write(json.dumps(payload) + "\n")

    import torch

    import transfer_core

    ready, errors = {}, {}
    for name, (build, _) in BENCHMARKS.items():
        try:
            ready[name] = build(torch)
        except Exception as e:  # this revision's API differs: the gate reports the benchmark as not comparable
            errors[name] = _why(e)
    reply(
        {"transfer_core": transfer_core.__file__, "benchmarks": {n: BENCHMARKS[n][1] for n in ready}, "errors": errors}
    )
    for line in sys.stdin:
        name = line.strip()
        if not name:
            break
        if name not in ready:
            reply({"name": name, "error": errors.get(name, "no such benchmark")})
            continue
        work, units = ready[name]
        try:
            started = time.perf_counter()
            work()
            reply({"name": name, "value": (time.perf_counter() - started) / units})
        except Exception as e:
            reply({"name": name, "error": _why(e)})


if __name__ == "__main__":
    del sys.path[0]  # this file's folder: the revision's packages must come from PYTHONPATH, not from beside it
    main()
