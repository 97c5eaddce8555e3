"""``bench throughput``: the harness's train step against a bare loop, the cached linear probe against the naive
one, and the eager/bf16/compile matrix."""

import dataclasses

from bench.commands.common import (
    add_data_root,
    add_device,
    add_measurement_outputs,
    log,
    resolve_runtime,
    write_measurement,
)
from bench.errors import SuiteError

NAME, ORDER = "throughput", 70
HELP = "the harness's train step against a bare loop; cached against naive linear probe; a precision/compile matrix"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--parts",
        type=lambda s: [p.strip() for p in s.split(",")],
        default=["step", "probe"],
        help="comma-separated: step, probe, matrix (default step,probe)",
    )
    add_device(parser, default="auto", help="device (default auto)")
    parser.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--backbone", default="resnet8")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40, help="timed train steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source-epochs", type=int, default=10)
    parser.add_argument(
        "--probe-data",
        choices=["digits", "cifar"],
        default="digits",
        help="digits (no download) or cifar (CIFAR-10 -> CIFAR-100 subsets from --data-root)",
    )
    add_data_root(parser, help="folder with cifar-10-batches-py/ and cifar-100-python/ for --probe-data cifar")
    parser.add_argument(
        "--probe-epochs", type=int, default=40, help="head epochs, equal for both probes (the harness default)"
    )
    parser.add_argument(
        "--matrix",
        nargs="+",
        default=["resnet18_cifar@32", "torchvision:resnet18@224"],
        help="backbone@resolution entries for --parts matrix",
    )
    parser.add_argument("--matrix-batch-size", type=int, default=256)
    parser.add_argument(
        "--matrix-skip-compile", action="store_true", help="leave out the compiled row (CPU smoke runs)"
    )
    add_measurement_outputs(parser)


def run(args) -> int:
    from bench.measure import throughput as tp
    from bench.pipeline.provenance import device_name, provenance
    from bench.pipeline.suite import data_root

    runtime = resolve_runtime(args.device, amp=args.amp, compile=args.compile, input_dtype="auto")
    # steady-state steps: where compile is on, compiled from the first step (compile: auto on CPU compiles only
    # trainings long enough to repay it, and this measures the steps those run)
    runtime = dataclasses.replace(runtime, compile_when="always")
    header = (
        f"device {runtime.device} ({device_name(runtime.device)}), amp {runtime.amp}, compile {runtime.compile}, "
        f"channels_last {runtime.channels_last}; medians of {args.repeats} alternating runs"
    )
    sections, payload = [header], {"runtime": runtime.describe(), "provenance": provenance(runtime.device)}
    if "step" in args.parts:
        log("harness train step against a bare loop")
        payload["step"] = tp.harness_vs_bare(
            runtime, args.backbone, args.batch_size, args.resolution, args.steps, args.repeats, log
        )
        sections.append(tp.step_table(payload["step"], args.backbone, args.batch_size, args.resolution))
    if "probe" in args.parts:
        log("linear probe: cached features against the frozen backbone every epoch")
        if args.probe_data == "cifar":
            from transfer_core.datasets import DataUnavailableError

            try:
                source, target = tp.cifar_transfer(
                    runtime, args.backbone, args.source_epochs, data_root(None, args.data_root), log
                )
            except DataUnavailableError as e:
                raise SuiteError(f"--probe-data cifar: {e}") from None
            what = "CIFAR-10 -> CIFAR-100[0-19]"
        else:
            source, target = tp.digits_transfer(runtime, args.backbone, args.source_epochs, log)
            what = "digits 0-4 -> 5-9"
        payload["probe"] = tp.probe_cached_vs_naive(runtime, source, target, args.backbone, args.probe_epochs)
        sections.append(tp.probe_table(payload["probe"], args.backbone, what))
    if "matrix" in args.parts:
        from bench.measure import matrix

        rows = []
        for spec in args.matrix:
            backbone, _, resolution = spec.partition("@")
            rows += matrix.runtime_matrix(
                runtime,
                backbone,
                int(resolution or 32),
                args.matrix_batch_size,
                args.steps,
                log,
                with_compile=not args.matrix_skip_compile,
                repeats=args.repeats,
            )
        payload["matrix"] = rows
        sections.append(matrix.matrix_table(rows))
    text = "\n\n".join(sections)
    print(text)
    write_measurement(args, "throughput", payload, "Throughput", text)
    return 0
