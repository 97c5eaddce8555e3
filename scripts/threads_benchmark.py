"""Threads on a small CPU machine: training threads (intra-op), inter-op threads and data workers, measured.

    python scripts/threads_benchmark.py --data-root ../shared/data [--steps 40] [--repeats 3] \
        [--json results/threads/cpu.json] [--markdown results/threads/cpu.md]

Trains ResNet-8 (batch 128, 32x32, the runtime's CPU default precision, eager) through the harness's own loop
on CIFAR-10 images, read two ways:
- arrays on the device (no workers): intra-op threads x inter-op threads, and two processes of 1 thread
  training at the same time, started together at a barrier ("2 at once": their rates summed), as the
  processes executor builds two artifacts;
- a JPEG folder written from the same images (``bench export``'s writer), decoded by DALI (if installed) and
  by torchvision's DataLoader: training threads x data workers (DALI threads or DataLoader processes).
Each configuration runs once per round, the rounds alternate configurations, and the median train
images/s (steady state, ``train``'s own accounting) is reported with every round's figure. Every
configuration runs in a fresh process (a process's first thread count sticks to its thread pools).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ARRAY_CONFIGS = [(2, 2), (2, 1), (1, 1)]  # (intra-op, inter-op)
TOGETHER = "2 at once"  # two processes of 1 training thread each, training together: their rates summed
FOLDER_CONFIGS = [(2, 2), (2, 1), (1, 1), (1, 2)]  # (training threads, data workers)


def _one_configuration(
    kind: str, backend: str, threads: int, second: int, folder: str, data_root: str, steps: int, start_together=None
) -> float:
    """Train images/s of one configuration; run in a process of its own, which sets its thread counts first.
    ``start_together``: a barrier the processes training at the same time wait at, ready, before training."""
    import torch

    torch.set_num_threads(threads)
    if kind == "arrays":
        torch.set_num_interop_threads(second)
    from transfer_core.backbones import create_backbone
    from transfer_core.data import Augmentation
    from transfer_core.datasets import Cifar10, ImageFolder, Selection, prepare_dataset
    from transfer_core.runtime import resolve_runtime
    from transfer_core.training import TrainRecipe, train

    if kind == "arrays":
        runtime = resolve_runtime("cpu", compile="off", data_backend="auto", workers=0)
        data = prepare_dataset("cifar10", Cifar10.Options(), Selection(per_class=300), Path(data_root), False)
    else:
        runtime = resolve_runtime("cpu", compile="off", data_backend=backend, workers=second)
        options = ImageFolder.Options(path=folder)
        data = prepare_dataset("image_folder", options, Selection(), Path("."), False, resolution=32)
    loader = runtime.loader(data, "train", 128, True, Augmentation())
    torch.manual_seed(0)
    model = runtime.prepare(create_backbone("resnet8", data.num_classes, 3))
    epochs = max(2, -(-steps // len(loader)))
    if start_together is not None:
        start_together.wait()
    stats = train(model, loader, TrainRecipe(epochs=epochs, batch_size=128, lr=0.05), runtime)
    return stats.images / stats.train_s


def measure(kind: str, backend: str, threads: int, second: int, folder: str, data_root: str, steps: int) -> float:
    """One configuration in a fresh process: train images/s. For ``TOGETHER``, two fresh processes of one
    training thread each, started together at a barrier (as two worker processes build two artifacts at
    once): the sum of their train images/s."""
    from bench.measure.throughput import in_fresh_process, in_fresh_processes_at_once

    try:
        if backend == TOGETHER:
            rates = in_fresh_processes_at_once(_one_configuration, 2, kind, "-", 1, 1, folder, data_root, steps)
            return sum(rates)
        return in_fresh_process(_one_configuration, kind, backend, threads, second, folder, data_root, steps)
    except Exception as e:  # the child's traceback travels as the cause
        failure = "".join(traceback.format_exception(e.__cause__ or e))[-2000:]
        raise SystemExit(f"threads_benchmark: {kind}/{backend} {threads}+{second} failed:\n{failure}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from transfer_core.datasets import Cifar10, Selection, prepare_dataset
    from transfer_core.datasets.export import write_image_folder

    try:
        import nvidia.dali  # noqa: F401

        backends = ["dali", "torch"]
    except ImportError:
        backends = ["torch"]
    data_root = str(Path(args.data_root).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(Path(tmp) / "cifar10-jpg")
        source = prepare_dataset(
            "cifar10", Cifar10.Options(), Selection(per_class=300, test_per_class=10), Path(data_root), False
        )
        write_image_folder(source, Path(folder), "jpg")
        configs = [("arrays", "-", t, s) for t, s in ARRAY_CONFIGS] + [("arrays", TOGETHER, 1, 1)]
        configs += [("folder", b, t, s) for b in backends for t, s in FOLDER_CONFIGS]
        runs = {c: [] for c in configs}
        for round_ in range(args.repeats):
            for config in configs:
                kind, backend, threads, second = config
                print(f"round {round_ + 1}/{args.repeats}: {kind} {backend} {threads}+{second}", file=sys.stderr)
                runs[config].append(measure(kind, backend, threads, second, folder, data_root, args.steps))
    rows = [
        {
            "data": kind,
            "backend": backend,
            "training_threads": threads,
            "inter_op_threads" if kind == "arrays" else "data_workers": second,
            "img_per_s": statistics.median(values),
            "runs": values,
        }
        for (kind, backend, threads, second), values in runs.items()
    ]
    from tabulate import tabulate

    text = tabulate(
        [
            [
                r["data"],
                r["backend"],
                r["training_threads"],
                r.get("inter_op_threads", "–"),
                r.get("data_workers", "–"),
                f"{r['img_per_s']:,.0f}",
                ", ".join(f"{v:,.0f}" for v in r["runs"]),
            ]
            for r in rows
        ],
        headers=[
            "data",
            "backend",
            "training threads",
            "inter-op threads",
            "data workers",
            "median images/s",
            "rounds",
        ],
        tablefmt="github",
        disable_numparse=True,
    )
    header = f"ResNet-8, batch 128, 32x32, {os.cpu_count()} CPUs; medians of {args.repeats} alternating rounds"
    print(f"{header}\n\n{text}")
    import torch

    from bench.commands.common import script_command_line, write_measurement
    from bench.pipeline.provenance import provenance

    payload = {"header": header, "rows": rows, "provenance": provenance(torch.device("cpu"))}
    write_measurement(args, "threads", payload, "Threads on CPU", f"{header}\n\n{text}", script_command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
