"""What retaining freed host memory (runtime.host_memory) does to a CPU train step: page faults and images/s.

For a bare loop on one batch and for the harness's own loop (``train`` on the device loader), in bf16 and fp32,
each with ``host_memory: system`` and ``retain``: every measurement in a fresh process (the setting is
process-wide), the two settings alternating within each round, medians over the rounds. Minor page faults are
counted with ``getrusage`` over the timed steps only, after warm-up steps.

    python scripts/host_memory.py --rounds 3 --json results/host-memory/cpu.json --markdown results/host-memory/cpu.md
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
from pathlib import Path

LOOPS = ("bare loop", "harness loop")
PRECISIONS = ("bf16", "off")
SETTINGS = ("system", "retain")


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(loop: str, amp: str, host_memory: str, steps: int, batch_size: int, threads: int) -> dict:
    """One measurement, in a process of its own."""
    import torch

    from bench.measure.throughput import MEAN, STD, bare_loop_img_per_s, harness_img_per_s, synthetic_split
    from transfer_core.backbones import create_backbone
    from transfer_core.data import Augmentation, DeviceArrayLoader
    from transfer_core.runtime import resolve_runtime

    torch.set_num_threads(threads)
    runtime = resolve_runtime("cpu", compile="off", amp=amp, host_memory=host_memory)
    torch.manual_seed(0)
    model = runtime.prepare(create_backbone("resnet8", 100, 3))
    if loop == "bare loop":
        split = synthetic_split(batch_size, 32, classes=100)
        fmt = runtime.batch_format(MEAN, STD)
        images, labels = next(iter(DeviceArrayLoader(split, fmt, batch_size, False, Augmentation())))
        bare_loop_img_per_s(model, images, labels, 10, runtime, warmup=0)  # warm-up
        before = _faults()
        img_per_s = bare_loop_img_per_s(model, images, labels, steps, runtime, warmup=0)
    else:
        split = synthetic_split(batch_size * steps, 32, classes=100)
        harness_img_per_s(model, split, batch_size, steps, runtime)  # warm-up: one epoch
        before = _faults()
        img_per_s = harness_img_per_s(model, split, batch_size, steps, runtime)
    return {
        "img_per_s": img_per_s,
        "faults_per_step": (_faults() - before) / steps,
        "recorded": runtime.describe()["host_memory"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: this process's)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    import torch

    from bench.measure.throughput import in_fresh_process

    threads = args.threads or torch.get_num_threads()
    runs: dict[tuple, list[dict]] = {}
    for round_ in range(args.rounds):
        for loop in LOOPS:
            for amp in PRECISIONS:
                for host_memory in SETTINGS:
                    print(f"round {round_ + 1}/{args.rounds}: {loop}, {amp}, {host_memory}", file=sys.stderr)
                    run = in_fresh_process(measure, loop, amp, host_memory, args.steps, args.batch_size, threads)
                    runs.setdefault((loop, amp, host_memory), []).append(run)
    rows = []
    for (loop, amp, host_memory), measured in runs.items():
        rows.append(
            {
                "loop": loop,
                "precision": "fp32" if amp == "off" else amp,
                "host_memory": host_memory,
                "recorded": measured[0]["recorded"],
                "img_per_s": statistics.median(m["img_per_s"] for m in measured),
                "faults_per_step": statistics.median(m["faults_per_step"] for m in measured),
                "img_per_s_runs": [m["img_per_s"] for m in measured],
                "faults_per_step_runs": [m["faults_per_step"] for m in measured],
            }
        )
    lines = [
        "| loop | precision | host memory | minor faults per step | train images/s | images/s per round |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_round = ", ".join(f"{v:,.0f}" for v in r["img_per_s_runs"])
        lines.append(
            f"| {r['loop']} | {r['precision']} | {r['recorded']} | {r['faults_per_step']:,.0f} | "
            f"{r['img_per_s']:,.0f} | {per_round} |"
        )
    text = (
        f"ResNet-8, batch {args.batch_size}, {args.steps} timed steps, {threads} threads; medians of "
        f"{args.rounds} rounds, every measurement in a fresh process\n\n" + "\n".join(lines)
    )
    print(text)
    from bench.commands.common import script_command_line, write_measurement
    from bench.pipeline.provenance import provenance

    payload = {"threads": threads, "steps": args.steps, "rows": rows, "provenance": provenance(torch.device("cpu"))}
    write_measurement(args, "host_memory", payload, "Host memory on CPU", text, script_command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
