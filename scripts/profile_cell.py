"""Where one cell's time goes: data, forward, backward, optimiser, evaluation, under a runtime's precision.

    python scripts/profile_cell.py --data-root ../shared/data [--amp auto|bf16|off] [--epochs 2] \
        [--json results/profile/cell-cpu.json] [--markdown results/profile/cell-cpu.md]

Trains the scratch cell of suites/cifar-cpu.yaml (ResNet-8 on CIFAR-100, 90 training images per class,
batch 128, eager) for ``--epochs`` epochs through the harness's own loop under torch.profiler, then scores
its test split, and splits the wall time into the regions the training loop names (``data``, ``forward``,
``backward``, ``optimizer``), evaluation (``predict`` on the test split) and the rest (the schedule, loss
bookkeeping, the profiler's own cost), with the five operators that took most time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGIONS = ("data", "forward", "backward", "optimizer", "evaluation")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch
    from tabulate import tabulate
    from torch.profiler import ProfilerActivity, profile, record_function

    from transfer_core.backbones import create_backbone
    from transfer_core.data import Augmentation
    from transfer_core.datasets import Cifar100, Selection, prepare_dataset
    from transfer_core.runtime import resolve_runtime
    from transfer_core.training import TrainRecipe, predict, train

    runtime = resolve_runtime("cpu", amp=args.amp, compile="off")
    data = prepare_dataset(
        "cifar100",
        Cifar100.Options(),
        Selection(per_class=100, val_fraction=0.1, test_per_class=50),
        Path(args.data_root),
        False,
    )
    loader = runtime.loader(data, "train", 128, True, Augmentation())
    torch.manual_seed(0)
    model = runtime.prepare(create_backbone("resnet8", data.num_classes, data.channels))
    recipe = TrainRecipe(epochs=1, batch_size=128, lr=0.1, label_smoothing=0.1)
    train(model, loader, recipe, runtime, desc="warm-up")  # allocations and oneDNN's first calls, unprofiled
    recipe = TrainRecipe(epochs=args.epochs, batch_size=128, lr=0.1, label_smoothing=0.1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        stats = train(model, loader, recipe, runtime, desc="profiled")
        with record_function("evaluation"):
            predict(model, runtime.loader(data, "test", runtime.eval_batch_size, False, Augmentation()), runtime)
        wall_s = time.perf_counter() - started
    events = prof.key_averages()
    region_s = {name: next((e.cpu_time_total for e in events if e.key == name), 0.0) / 1e6 for name in REGIONS}
    rest = wall_s - sum(region_s.values())
    operators = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)[:5]
    rows = [[name, f"{s:.2f}", f"{100 * s / wall_s:.1f}"] for name, s in region_s.items()]
    rows.append(["rest", f"{rest:.2f}", f"{100 * rest / wall_s:.1f}"])
    header = (
        f"scratch cell of cifar-cpu, ResNet-8, {stats.images} training images ({args.epochs} epochs) + "
        f"{len(data.test)} test images, amp {runtime.amp}, {torch.get_num_threads()} threads: "
        f"{wall_s:.1f} s wall, {stats.images / stats.train_s:,.0f} train images/s"
    )
    text = (
        f"{header}\n\n"
        + tabulate(rows, headers=["region", "seconds", "% of wall"], tablefmt="github", disable_numparse=True)
        + "\n\n"
        + tabulate(
            [[e.key, f"{e.self_cpu_time_total / 1e6:.2f}", e.count] for e in operators],
            headers=["operator (self time)", "seconds", "calls"],
            tablefmt="github",
            disable_numparse=True,
        )
    )
    print(text)
    from bench.commands.common import script_command_line, write_measurement
    from bench.pipeline.provenance import provenance

    payload = {
        "amp": runtime.amp,
        "wall_s": wall_s,
        "regions_s": region_s,
        "rest_s": rest,
        "train_img_per_s": stats.images / stats.train_s,
        "top_operators": [{"name": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in operators],
        "provenance": provenance(runtime.device),
    }
    write_measurement(args, "profile", payload, "Where a cell's time goes", text, script_command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
