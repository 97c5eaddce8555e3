"""``bench throughput --parts matrix``: train images/s, achieved TFLOP/s and model FLOPs utilisation (against the
measured matmul peak of the row's precision) for a backbone under eager fp32, fp32 + channels_last, bf16 +
channels_last, and bf16 + channels_last + torch.compile, on CUDA (the GPU check) or on CPU; on CPU also fp32 +
channels_last with the C library's own host memory behaviour (the CPU default before) and bf16 + channels_last
as a process per core of one thread each, training at the same time (the CPU default's worker processes), each
row's every round in a fresh process. Rows alternate within each round and medians are reported, so a drifting
machine hits all.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

import torch

from bench.measure.throughput import (
    MEAN,
    STD,
    bare_loop_img_per_s,
    in_fresh_process,
    in_fresh_processes_at_once,
    synthetic_split,
)
from bench.text import number
from transfer_core.backbones import create_backbone
from transfer_core.data import Augmentation, DeviceArrayLoader
from transfer_core.runtime import Runtime, forget_compiled, measured_peak_tflops, peak_precision
from transfer_core.training import count_flops_per_image

MATRIX = [
    ("eager fp32", {"amp": "off", "channels_last": False, "compile": False}),
    (
        "fp32 + channels_last, system host memory",
        {"amp": "off", "channels_last": True, "compile": False, "host_memory": "system"},
    ),
    ("fp32 + channels_last", {"amp": "off", "channels_last": True, "compile": False}),
    ("bf16 + channels_last", {"amp": "bf16", "channels_last": True, "compile": False}),
    ("bf16 + channels_last + compile", {"amp": "bf16", "channels_last": True, "compile": True}),
]
# on CPU: the CPU default's workers, one process per core of one thread each (bench/pipeline/executors/processes.py),
# training at the same time; the row's rate is theirs summed: what the machine trains under the default
PER_CORE_ROW = ("bf16 + channels_last, a process per core", {"amp": "bf16", "channels_last": True, "compile": False})
# the CPU default before bf16, compile, retained host memory and worker processes were chosen on CPU
CPU_REFERENCE_ROW = "fp32 + channels_last, system host memory"
CUDA_REFERENCE_ROW = "fp32 + channels_last"  # host memory is not what a GPU step waits for: no such row there
WARMUP_STEPS = 10  # in a fresh process oneDNN builds its kernels, and the heap grows to its size, in the first steps


def _matrix_row_run(
    runtime: Runtime,
    switches: dict,
    backbone: str,
    resolution: int,
    batch_size: int,
    steps: int,
    threads: int,
    start_together=None,
) -> dict:
    """One row's round, in a process of its own: a fresh allocator (host memory retained or not is process-wide,
    and cannot be undone) and no state left by the rows before it. ``start_together``: a barrier the processes
    training at the same time wait at, ready, before their first step."""
    torch.set_num_threads(threads)
    variant = dataclasses.replace(
        runtime,
        **{"host_memory": "retain", **switches},
        compile_when="always",
        input_dtype=torch.float32,
    )  # a row compiled is compiled from its first step: the steady state a long training reaches
    variant.apply_backend_flags()
    torch.manual_seed(0)
    model = variant.prepare(create_backbone(backbone, 10, 3))
    loader = DeviceArrayLoader(
        synthetic_split(batch_size, resolution), variant.batch_format(MEAN, STD), batch_size, False, Augmentation()
    )
    images, labels = next(iter(loader))
    flops = count_flops_per_image(model, images, backward=True, runtime=variant)
    if start_together is not None:
        start_together.wait()
    started = time.perf_counter()
    img_per_s = bare_loop_img_per_s(model, images, labels, steps, variant, warmup=WARMUP_STEPS)
    steady_s = (WARMUP_STEPS + steps) * batch_size / img_per_s  # what the warm-up steps cost at the steady rate
    forget_compiled()  # rows that share a process (CUDA) must not keep each other's models alive
    return {
        "img_per_s": img_per_s,
        "flops": flops,
        "compile_and_first_steps_excess_s": time.perf_counter() - started - steady_s,
        "host_memory": variant.describe()["host_memory"],
        # measured beside every row (uncached): one peak measured in a slow minute of a shared machine inflates MFU
        "peak_tflop_per_s": measured_peak_tflops.__wrapped__(str(variant.device), peak_precision(variant.amp)),
    }


def _per_core_run(args: tuple, processes: int) -> dict:
    """``processes`` fresh processes of one thread each, running one row's round at the same time (each starts
    its steps once all are ready): their rates summed. The peak beside it is left out: a one-thread matmul rate
    is not the machine's peak."""
    runs = in_fresh_processes_at_once(_matrix_row_run, processes, *args[:-1], 1)
    return {
        **runs[0],
        "img_per_s": sum(run["img_per_s"] for run in runs),
        "compile_and_first_steps_excess_s": max(run["compile_and_first_steps_excess_s"] for run in runs),
        "peak_tflop_per_s": None,
    }


def runtime_matrix(
    runtime: Runtime,
    backbone: str,
    resolution: int,
    batch_size: int,
    steps: int,
    log: Callable[[str], None],
    with_compile: bool = True,
    repeats: int = 1,
) -> list[dict]:
    """Train images/s of every configuration on one fixed batch, the configurations alternating in each of
    ``repeats`` rounds (a drifting machine hits them all; medians reported), on CPU each round of each row in a
    fresh process, with achieved TFLOP/s and MFU against the matmul peak of the row's precision (bf16 or fp32):
    the best of the rates measured here and beside every row."""
    peaks = {p: measured_peak_tflops(str(runtime.device), p) for p in ("bf16", "fp32")}
    on_cuda = runtime.device.type == "cuda"
    threads = torch.get_num_threads()
    configs = [
        (name, switches)
        for name, switches in MATRIX
        if (with_compile or not switches["compile"]) and not (on_cuda and name == CPU_REFERENCE_ROW)
    ] + ([PER_CORE_ROW] if not on_cuda and threads > 1 else [])
    runs: dict[str, list[dict]] = {name: [] for name, _ in configs}
    for round_ in range(repeats):
        for name, switches in configs:
            log(f"  {backbone} {resolution}x{resolution}: {name} (round {round_ + 1}/{repeats})")
            args = (runtime, switches, backbone, resolution, batch_size, steps, threads)
            if name == PER_CORE_ROW[0]:
                runs[name].append(_per_core_run(args, threads))
            elif on_cuda:  # in this process: a GPU step does not wait on host memory, and a CUDA context costs seconds
                runs[name].append(_matrix_row_run(*args))
            else:
                runs[name].append(in_fresh_process(_matrix_row_run, *args))
    precisions = {name: peak_precision(switches["amp"]) for name, switches in configs}
    for name, precision in precisions.items():  # the peak is the best rate the hardware showed in any measurement
        measured = [peaks[precision]] + [run["peak_tflop_per_s"] for run in runs[name]]
        peaks[precision] = max((peak for peak in measured if peak is not None), default=None)
    rows = []
    for name, precision in precisions.items():
        img_per_s = statistics.median(run["img_per_s"] for run in runs[name])
        flops = runs[name][0]["flops"]
        achieved = img_per_s * flops / 1e12
        rows.append(
            {
                "backbone": backbone,
                "resolution": resolution,
                "batch_size": batch_size,
                "config": name,
                "host_memory": runs[name][0]["host_memory"],
                "img_per_s": img_per_s,
                "img_per_s_runs": [run["img_per_s"] for run in runs[name]],
                "tflop_per_s": achieved,
                "gflops_per_image": flops / 1e9,
                "mfu_precision": precision,
                "mfu_pct": 100 * achieved / peaks[precision] if peaks[precision] else None,
                "peak_bf16_tflop_per_s": peaks["bf16"],
                "peak_fp32_tflop_per_s": peaks["fp32"],
                "warmup_steps": WARMUP_STEPS,
                # the first round's compile and slow first steps: its time beyond warm-up and steps at the steady rate
                "first_round_compile_and_first_steps_excess_s": runs[name][0]["compile_and_first_steps_excess_s"],
            }
        )
    by_name = {row["config"]: row["img_per_s"] for row in rows}
    reference = CUDA_REFERENCE_ROW if on_cuda else CPU_REFERENCE_ROW
    for row in rows:
        row["vs_eager_fp32"] = row["img_per_s"] / by_name["eager fp32"]
        row["reference_config"] = reference
        row["vs_reference"] = row["img_per_s"] / by_name[reference]
    return rows


def _peak(row: dict):
    return row["peak_bf16_tflop_per_s"] if row["mfu_precision"] == "bf16" else row["peak_fp32_tflop_per_s"]


def matrix_table(rows: list[dict]) -> str:
    from tabulate import tabulate

    first = rows[0] if rows else {}
    table = tabulate(
        [
            [
                f"{r['backbone']} {r['resolution']}x{r['resolution']}",
                r["config"],
                f"{r['img_per_s']:,.0f}",
                f"{r['vs_eager_fp32']:.2f}x",
                f"{r['vs_reference']:.2f}x",
                f"{r['tflop_per_s']:.3f}",
                f"{number(r['mfu_pct'], '.1f')} of {number(_peak(r), '.3f')} ({r['mfu_precision']})",
            ]
            for r in rows
        ],
        headers=[
            "model",
            "configuration",
            "train images/s",
            "vs eager fp32",
            f"vs {first.get('reference_config', '')}",
            "TFLOP/s",
            "MFU (% of the measured matmul peak, TFLOP/s)",
        ],
        tablefmt="github",
        disable_numparse=True,
    )
    return (
        "each row's MFU is against the best matmul rate of its precision measured in the run for its model\n\n" + table
    )
