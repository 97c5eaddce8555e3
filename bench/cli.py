"""Command line: ``python -m bench run|validate|report|compare|ci|index|list|datapath|throughput|export|fetch``.

Usage mistakes and unusable suites are one-line errors with exit code 2; a run in which any cell
failed exits 1; everything else exits 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path

from transfer_core.files import write_file

from .errors import BenchError, SuiteError

# the commands import what they need when they run: report, compare and index never load torch


# baseline / device: the array dataset; folder-baseline / torch / dali: the same images as a JPEG folder
DATAPATH_BACKENDS = ("baseline", "device", "folder-baseline", "torch", "dali")


def _resolve_runtime(*args, **kwargs):
    """``resolve_runtime``, its refusal (no CUDA, no DALI) as a one-line usage error."""
    from transfer_core.runtime import RuntimeUnavailableError, resolve_runtime

    try:
        return resolve_runtime(*args, **kwargs)
    except RuntimeUnavailableError as e:
        raise SuiteError(str(e)) from None


def _runtime(suite, device_override, cuda_available=None, shard=None):
    from transfer_core.distributed import WHOLE

    spec = suite.runtime
    return _resolve_runtime(device_override or spec.device, spec.amp, spec.compile, spec.channels_last,
                            spec.data_backend, spec.input_dtype, spec.workers, spec.compile_mode, spec.cudnn_benchmark,
                            spec.eval_batch_size, shard or WHOLE, cuda_available, spec.deterministic)


def _data_root_arg(args) -> Path:
    """--data-root, then BENCH_DATA_ROOT, then data/: the suite-less commands' version of ``data_root``."""
    return Path(args.data_root or os.environ.get("BENCH_DATA_ROOT") or "data")


def _require_array_dataset(name: str, where: str = "", hint: str = "") -> None:
    from transfer_core.datasets import DATASETS, create_dataset_reader

    if name not in DATASETS or not create_dataset_reader(name).array_backed:
        arrays = [n for n in DATASETS.names() if create_dataset_reader(n).array_backed]
        raise SuiteError(f"{where}{name!r} is not an array dataset; choose one of {', '.join(arrays)}{hint}")


def _write_measurement(args, kind: str, payload: dict, title: str, text: str) -> None:
    """--json (the payload, stamped with its kind and time) and --markdown (the text and its command)."""
    import datetime as dt

    if args.json:
        stamped = {"kind": kind, "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **payload}
        Path(args.json).write_text(json.dumps(stamped, indent=2, default=str) + "\n")
    if args.markdown:
        command = "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        Path(args.markdown).write_text(f"# {title}\n\n{text}\n\nProduced by `{command}`.\n")


def _out_dir(suite, args) -> Path:
    return Path(args.out) if args.out else Path("results") / suite.name


def cmd_validate(args) -> int:
    from .suite import check_data, data_root, expand_cells, load_suite

    suite = load_suite(args.suite)
    check_data(suite, data_root(suite, args.data_root))
    cells = expand_cells(suite)
    backbones = len({cell.backbone for cell in cells})  # a pretrained source brings its own
    print(f"{args.suite}: ok — suite {suite.name!r}, {len(cells)} cells "
          f"({len(suite.sources)} sources, {len(suite.targets)} targets, {backbones} backbones, "
          f"{len(suite.strategies)} strategies, {len(suite.seeds)} seeds)")
    return 0


def cmd_run(args) -> int:
    from . import report as report_mod
    from .suite import check_data, data_root, expand_cells, load_suite

    suite = load_suite(args.suite)
    root = data_root(suite, args.data_root)
    check_data(suite, root)
    all_cells = expand_cells(suite)
    cells = expand_cells(suite, args.filter)
    if not cells:
        raise SuiteError(f"--filter {args.filter!r} matches none of the {len(all_cells)} cells")
    if args.threads is not None and args.threads < 1:
        raise SuiteError(f"--threads: expected a positive number, got {args.threads}")
    if args.max_retries < 0:
        raise SuiteError(f"--max-retries: expected 0 or more, got {args.max_retries}")
    if args.ray_address and args.executor != "ray":
        raise SuiteError("--ray-address needs --executor ray")
    if args.cell_timeout is not None and not args.cell_timeout > 0:
        raise SuiteError(f"--cell-timeout: expected seconds above 0, got {args.cell_timeout:g}")

    # imports torch: after the cheap checks, so mistakes are reported fast
    from transfer_core import distributed
    from transfer_core.registry import UnknownNameError

    from .executors import ExecutorOptions, create_executor
    from .runner import Runner

    shard = distributed.launched_shard()
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731  (the runner keeps ranks other than 0 quiet)
    if shard.world > 1:  # under torchrun: the ranks build each artifact together, in this process each
        if args.executor != "local":
            raise SuiteError(f"--executor {args.executor} cannot run under torchrun, which already places one process per GPU; "
                             "use the local executor there")
        import torch

        wanted = args.device or suite.runtime.device
        distributed.init_process_group("cuda" if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()) else "cpu")
    try:
        executor = create_executor(args.executor, ExecutorOptions(args.threads, args.ray_address, args.max_retries), log)
    except UnknownNameError as e:
        raise SuiteError(f"--executor: {e}") from None
    try:
        runtime = _runtime(suite, args.device, executor.cuda_available(), shard)
        out_dir = _out_dir(suite, args)
        cache_dir = Path(args.cache_dir or os.environ.get("BENCH_CACHE_DIR") or out_dir / "cache")
        command = "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        runner = Runner(suite, root, out_dir, cache_dir, runtime, force=args.force, command=command, log=log, executor=executor,
                        cell_timeout_s=args.cell_timeout)
        if args.dry_run:
            return _dry_run(runner, cells, all_cells)
        summary = runner.run(cells, all_cells)
    finally:
        executor.close()
        distributed.leave_process_group()
    if not shard.is_main:
        return 1 if summary.failed else 0
    results = report_mod.load_results(out_dir)
    if summary.ran:
        report_mod.write_reports(results, f"Results: {suite.name}")
    print(report_mod.render_markdown(report_mod.summarise_rows(results.records, results.plan)))
    elsewhere = f", {summary.elsewhere} recorded by another run" if summary.elsewhere else ""
    print(f"\n{summary.ran} cells run, {summary.skipped} already done{elsewhere}, {len(summary.failed)} failed; "
          f"records: {runner.store.path}" + (f"; reports and plots: {out_dir}/report.md (also .tex, .csv, .html)" if summary.ran else ""),
          file=sys.stderr)
    return 1 if summary.failed else 0


def _dry_run(runner, cells, all_cells) -> int:
    from tabulate import tabulate

    rows, to_run = runner.describe(cells, all_cells)
    if runner.shard.is_main:
        print(tabulate(rows, headers=["kind", "artifact", "key", "depends on (keys)", "state", "needs"], tablefmt="github",
                       disable_numparse=True))
        to_build = sum(1 for r in rows if r[4] == "to build")
        print(f"{len(rows)} artifacts: {to_build} models to build, {to_run} of {len(cells)} cells to run; "
              "nothing was trained or written (dry run)")
    return 0


def cmd_report(args) -> int:
    from . import report as report_mod

    results = report_mod.load_results(Path(args.results_dir))
    rows = report_mod.summarise_rows(results.records, results.plan)
    title = f"Results: {results.plan['suite']}" if results.plan else f"Results: {Path(args.results_dir).name}"
    if args.paired:
        a, _, b = args.paired.partition(",")
        if not a or not b:
            raise SuiteError("--paired: expected two strategies, e.g. --paired full_finetune,scratch")
        print(report_mod.paired_table(results, a.strip(), b.strip()))
    elif args.format == "html":
        from . import plots

        svgs = [plots.svg_text(fig) for _, fig in plots.figures(results.records, rows)]
        print(report_mod.render_html(rows, title, report_mod.notes(results), svgs), end="")
    else:
        print(report_mod.render_rows(rows, args.format), end="" if args.format != "markdown" else "\n")
    if args.plot:
        from . import plots

        fig = plots.accuracy_vs_compute(rows)
        if fig is None:
            raise report_mod.ReportError("no results with both accuracy and compute to plot")
        print(f"wrote {plots.save(fig, Path(args.plot))}", file=sys.stderr)
    if args.write:
        for path in report_mod.write_reports(results, title):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _augmentation_overrides(args, default):
    overrides = {k: v for k, v in (("crop_padding", args.crop_padding), ("flip", args.flip), ("cutout", args.cutout),
                                    ("random_resized_crop", args.random_resized_crop)) if v is not None}
    try:
        return dataclasses.replace(default, **overrides)
    except ValueError as e:
        raise SuiteError(f"--{str(e).replace('_', '-')}") from None


def cmd_datapath(args) -> int:
    from tabulate import tabulate

    from transfer_core.datasets import DataUnavailableError, create_dataset_reader

    from . import datapath
    from .provenance import device_name as provenance_device
    from .provenance import provenance

    _require_array_dataset(args.dataset, "--dataset: ", " (pass --folder to measure an image folder of your own)")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(DATAPATH_BACKENDS)
    if unknown:
        raise SuiteError(f"--backends: unknown {', '.join(sorted(unknown))}; choose from {', '.join(DATAPATH_BACKENDS)}")
    runtime = _resolve_runtime(args.device, compile="off", input_dtype="float32")
    root = _data_root_arg(args)
    augmentation = _augmentation_overrides(args, create_dataset_reader(args.dataset).default_augmentation)
    step_backbone = None if args.step_backbone == "none" else args.step_backbone
    try:
        rows = datapath.run_benchmark(
            args.dataset, root, runtime, args.batch_size, args.workers, args.resolution, augmentation, args.per_class,
            backends, Path(args.folder) if args.folder else None, step_backbone, args.steps, args.seconds, args.repeats,
            log=lambda m: print(m, file=sys.stderr))
    except (DataUnavailableError, ValueError) as e:
        raise SuiteError(f"{args.dataset}: {e}") from None
    table = [[r.data, r.backend, r.pipeline, f"{r.img_per_s:,.0f}", f"{r.ratio:.1f}x" if r.ratio else "—",
              f"{1000 * args.batch_size / r.img_per_s:.2f}"]
             + ([f"{r.step['data_share_pct']:.1f}", f"{r.step['train_img_per_s']:,.0f}"] if step_backbone else [])
             for r in rows]
    headers = ["data", "backend", "pipeline", "images/s", "vs baseline", "ms per batch"]
    if step_backbone:
        headers += [f"{step_backbone} training: % of step waiting for data", f"{step_backbone} training images/s"]
    summary = (f"device {runtime.device} ({provenance_device(runtime.device)}), batch {args.batch_size}, "
               f"augmentation {dataclasses.asdict(augmentation)}; loader images/s: median of {args.repeats} runs of >= {args.seconds:g} s"
               + (f"; training columns: {args.steps} steps of the real training loop" if step_backbone else ""))
    rendered = tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)
    print(summary)
    print(rendered)
    payload = {"device": str(runtime.device), "batch_size": args.batch_size, "workers": args.workers,
               "augmentation": dataclasses.asdict(augmentation), "provenance": provenance(runtime.device),
               "rows": [dataclasses.asdict(r) for r in rows]}
    _write_measurement(args, "datapath", payload, "Data path throughput", f"{summary}.\n\n{rendered}")
    return 0


def cmd_export(args) -> int:
    from transfer_core.datasets import DataUnavailableError, Selection, create_dataset_reader, prepare_dataset, write_image_folder

    _require_array_dataset(args.dataset)
    root = _data_root_arg(args)
    out = Path(args.out)
    if out.exists() and args.format != "cifar" and any(out.iterdir()):
        raise SuiteError(f"{out} exists and is not empty; choose a new folder")
    classes = tuple(int(c) if c.isdigit() else c for c in args.classes.split(",")) if args.classes else None
    try:
        data = prepare_dataset(args.dataset, create_dataset_reader(args.dataset).Options(),
                               Selection(classes=classes, per_class=args.per_class, test_per_class=args.test_per_class),
                               root, download=False)
    except DataUnavailableError as e:
        raise SuiteError(f"{args.dataset}: {e}") from None
    if args.format == "cifar":
        from transfer_core.datasets import write_cifar_subset

        if classes is not None or args.dataset not in ("cifar10", "cifar100"):
            raise SuiteError("--format cifar writes cifar10 or cifar100 subsets with every class (use --per-class, --test-per-class)")
        folder = write_cifar_subset(data, out, args.dataset)
        size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
        print(f"wrote {len(data.train)} train and {len(data.test)} test images in torchvision's layout to {folder} ({size:.1f} MiB)")
        return 0
    counts = write_image_folder(data, out, image_format=args.format)
    print(f"wrote {counts['train']} train and {counts['test']} test images of {data.num_classes} classes to {out}/{{train,test}}/<class>/")
    return 0


def cmd_compare(args) -> int:
    from . import compare

    thresholds = compare.parse_thresholds(args.fail)
    comparison = compare.compare(compare.load(Path(args.baseline), "baseline"), compare.load(Path(args.new), "new"),
                                 thresholds, args.allow_device_mismatch, args.allow_missing, args.per_seed)
    print(compare.render_table(comparison))
    print(compare.verdict_line(comparison))
    summary = compare.render_summary(comparison, args.baseline, args.new, thresholds)
    targets = [Path(args.summary)] if args.summary else []
    if os.environ.get("GITHUB_STEP_SUMMARY"):  # GitHub Actions shows this file on the job's page
        targets.append(Path(os.environ["GITHUB_STEP_SUMMARY"]))
    for target in targets:
        with open(target, "a", encoding="utf-8") as f:
            f.write(summary)
    return 1 if comparison.failed else 0


def cmd_throughput(args) -> int:
    from tabulate import tabulate

    from . import throughput as tp
    from .provenance import device_name, provenance

    runtime = _resolve_runtime(args.device, amp=args.amp, compile=args.compile, input_dtype="auto")
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    header = (f"device {runtime.device} ({device_name(runtime.device)}), amp {runtime.amp}, compile {runtime.compile}, "
              f"channels_last {runtime.channels_last}; medians of {args.repeats} alternating runs")
    sections, payload = [header], {"runtime": runtime.describe(), "provenance": provenance(runtime.device)}
    if "step" in args.parts:
        log("harness train step against a bare loop")
        step = tp.harness_vs_bare(runtime, args.backbone, args.batch_size, args.resolution, args.steps, args.repeats, log)
        payload["step"] = step
        sections.append(tabulate([[f"{args.backbone}, batch {args.batch_size}, {args.resolution}x{args.resolution}",
                                   f"{step['bare_img_per_s']:,.0f}", f"{step['harness_img_per_s']:,.0f}", f"{step['ratio']:.3f}x"]],
                                 headers=["train step", "bare loop images/s", "harness images/s", "harness / bare"],
                                 tablefmt="github", disable_numparse=True))
    if "probe" in args.parts:
        log("linear probe: cached features against the frozen backbone every epoch")
        if args.probe_data == "cifar":
            from transfer_core.datasets import DataUnavailableError

            try:
                source, target = tp.cifar_transfer(runtime, args.backbone, args.source_epochs, _data_root_arg(args), log)
            except DataUnavailableError as e:
                raise SuiteError(f"--probe-data cifar: {e}") from None
            what = "CIFAR-10 -> CIFAR-100[0-19]"
        else:
            source, target = tp.digits_transfer(runtime, args.backbone, args.source_epochs, log)
            what = "digits 0-4 -> 5-9"
        probe = tp.probe_cached_vs_naive(runtime, source, target, args.backbone, args.probe_epochs)
        payload["probe"] = probe
        sections.append(tabulate([[f"{args.backbone}, {what}, {probe['epochs']} epochs, {probe['train_images']} images",
                                   f"{probe['naive_s']:.2f}", f"{probe['cached_s']:.2f}", f"{probe['speedup']:.1f}x",
                                   f"{probe['naive_top1_pct']:.2f}", f"{probe['cached_top1_pct']:.2f}", f"{probe['top1_difference_pp']:+.2f}"]],
                                 headers=["linear probe", "naive s", "cached s", "speed-up", "naive top-1 (%)",
                                          "cached top-1 (%)", "difference (pp)"], tablefmt="github", disable_numparse=True))
    if "matrix" in args.parts:
        rows = []
        for spec in args.matrix:
            backbone, _, resolution = spec.partition("@")
            rows += tp.runtime_matrix(runtime, backbone, int(resolution or 32), args.matrix_batch_size, args.steps, log,
                                      with_compile=not args.matrix_skip_compile)
        payload["matrix"] = rows
        peak = rows[0]["peak_bf16_tflop_per_s"] if rows else None
        sections.append(f"measured bf16 matmul peak: {tp.optional(peak, '.1f')} TFLOP/s")
        sections.append(tabulate([[f"{r['backbone']} {r['resolution']}x{r['resolution']}", r["config"], f"{r['img_per_s']:,.0f}",
                                   f"{r['vs_eager_fp32']:.2f}x", f"{r['tflop_per_s']:.2f}", tp.optional(r["mfu_pct"], ".1f")] for r in rows],
                                 headers=["model", "configuration", "train images/s", "vs eager fp32", "TFLOP/s", "MFU (%)"],
                                 tablefmt="github", disable_numparse=True))
    text = "\n\n".join(sections)
    print(text)
    _write_measurement(args, "throughput", payload, "Throughput", text)
    return 0


def cmd_fetch(args) -> int:
    """Downloads the weights of a suite's pretrained sources into the libraries' caches (needs internet)."""
    from transfer_core.pretrained import WeightsUnavailableError, fetch, weights_file

    from .suite import load_suite

    suite = load_suite(args.suite)
    pretrained = [s.pretrained for s in suite.sources if s.pretrained]
    if not pretrained:
        print(f"{args.suite}: no pretrained sources; nothing to fetch")
        return 0
    for spec in pretrained:
        try:
            print(f"{spec.label}: already here, {weights_file(spec)}")
            continue
        except WeightsUnavailableError:
            pass
        if spec.library == "checkpoint":
            raise SuiteError(f"{args.suite}: source {spec.label}: {spec.file} is missing, and a checkpoint cannot be fetched")
        try:
            from huggingface_hub.utils import logging as hf_logging

            hf_logging.set_verbosity_error()  # a failed download is reported below, in one line
            print(f"{spec.label}: fetched, {fetch(spec)}")
        except Exception as e:  # no network, a moved file, a full disk: one line
            raise SuiteError(f"{args.suite}: source {spec.label}: could not download its weights ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return 0


def cmd_ci(args) -> int:
    from .gate.run import cmd_ci as run_gate

    return run_gate(args)


def cmd_index(args) -> int:
    from .index import build_index

    root = Path(args.root)
    if not root.is_dir():
        raise SuiteError(f"{root}: no such folder")
    write_file(root / "README.md", build_index(root))
    print(f"wrote {root / 'README.md'}")
    return 0


def cmd_list(args) -> int:
    from transfer_core.backbones import BACKBONES
    from transfer_core.datasets import DATASETS
    from transfer_core.strategies import STRATEGIES

    def options(cls) -> str:
        fields = dataclasses.fields(cls)
        return ", ".join(f"{f.name}" for f in fields) or "—"

    print("datasets:")
    for name in DATASETS.names():
        print(f"  {name:<16} options: {options(DATASETS.get(name).Options)}")
    print("backbones:")
    for name in BACKBONES.names():
        print(f"  {name}")
    print("  …or any timm or torchvision model name (timm:NAME / torchvision:NAME to choose), randomly initialised")
    print("strategies:")
    for name in STRATEGIES.names():
        print(f"  {name:<16} options: {options(STRATEGIES.get(name).Options)} (plus any train key)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Transfer-learning benchmark harness.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a suite (resumes by default) and print its results table")
    run.add_argument("suite", help="suite YAML file")
    run.add_argument("--data-root", help="folder with the datasets (overrides BENCH_DATA_ROOT and data.root)")
    run.add_argument("--out", help="results folder (default results/<suite name>)")
    run.add_argument("--cache-dir", help="model cache (default BENCH_CACHE_DIR or <out>/cache)")
    run.add_argument("--filter", help="only cells whose id matches this regular expression")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override runtime.device")
    run.add_argument("--dry-run", action="store_true",
                     help="print the graph of artifacts (key, dependencies, cached or not, what each needs), then stop")
    run.add_argument("--force", action="store_true", help="rerun cells that already have ok records")
    run.add_argument("--executor", default="local",
                     help="local: in this process (default); ray: Ray tasks on this machine's GPUs and cores, or a cluster's")
    run.add_argument("--ray-address", help="with --executor ray: join this cluster (auto or HOST:PORT) instead of starting one here")
    run.add_argument("--threads", type=int,
                     help="torch threads per artifact (default: all cores locally, 1 per Ray task, which Ray reserves as CPUs)")
    run.add_argument("--cell-timeout", type=float, metavar="SECONDS",
                     help="end a training or evaluation running longer with status timeout; the suite goes on and a rerun "
                          "retries it (overrides runtime.cell_timeout_s)")
    run.add_argument("--max-retries", type=int, default=2, help="with --executor ray: restarts of a task whose worker died (default 2)")
    run.set_defaults(handler=cmd_run)

    validate = sub.add_parser("validate", help="check a suite and its data without running anything")
    validate.add_argument("suite")
    validate.add_argument("--data-root")
    validate.set_defaults(handler=cmd_validate)

    rep = sub.add_parser("report", help="print the results table of a results folder; write every format and the plots")
    rep.add_argument("results_dir")
    rep.add_argument("--format", choices=["markdown", "latex", "csv", "html"], default="markdown", help="what to print")
    rep.add_argument("--plot", help="also draw accuracy against compute to this file (.png, .svg or .pdf)")
    rep.add_argument("--write", action="store_true",
                     help="write report.md/.tex/.csv/.html and the plots (PNG and SVG) into the results folder")
    rep.add_argument("--paired", metavar="A,B", help="print A − B test top-1 on shared seeds, with its 95%% interval")
    rep.set_defaults(handler=cmd_report)

    dp = sub.add_parser("datapath", help="benchmark the data path: images/s of each backend against a torchvision DataLoader")
    dp.add_argument("--dataset", default="cifar10", help="array dataset to read (default cifar10)")
    dp.add_argument("--data-root", help="folder with the datasets (default BENCH_DATA_ROOT or data)")
    dp.add_argument("--per-class", type=int, help="training images per class (default all)")
    dp.add_argument("--resolution", type=int, help="side the images are resized to (default the dataset's own)")
    dp.add_argument("--batch-size", type=int, default=256)
    dp.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="DataLoader workers and DALI threads (default: cores)")
    dp.add_argument("--backends", default=",".join(DATAPATH_BACKENDS),
                    help=f"comma-separated, from {', '.join(DATAPATH_BACKENDS)}")
    dp.add_argument("--folder", help="image folder to measure (default: the training images written as JPEG to a temporary folder)")
    dp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    dp.add_argument("--step-backbone", default="resnet8", help="backbone whose train step the loader share is measured against ('none' to skip)")
    dp.add_argument("--steps", type=int, default=30, help="train steps per loader share measurement")
    dp.add_argument("--seconds", type=float, default=2.0, help="minimum seconds per timed run")
    dp.add_argument("--repeats", type=int, default=3, help="timed runs per backend; the median is reported")
    dp.add_argument("--crop-padding", type=int)
    dp.add_argument("--flip", choices=["random", "alternate", "none"])
    dp.add_argument("--cutout", type=int)
    dp.add_argument("--random-resized-crop", type=float, help="image folders: smallest area share (0 = resize + centre crop)")
    dp.add_argument("--json", help="also write the measurements to this JSON file")
    dp.add_argument("--markdown", help="also write the table, with how it was produced, to this markdown file")
    dp.set_defaults(handler=cmd_datapath)

    export = sub.add_parser("export", help="write an array dataset as an image folder (train/ and test/, one folder per class), "
                                           "or a CIFAR subset in torchvision's layout (--format cifar)")
    export.add_argument("dataset")
    export.add_argument("out", help="new folder to write")
    export.add_argument("--data-root")
    export.add_argument("--format", choices=["jpg", "png", "cifar"], default="jpg",
                        help="image files, or cifar: a data root holding cifar-10-batches-py/ or cifar-100-python/")
    export.add_argument("--classes", help="comma-separated class ids or names (default all)")
    export.add_argument("--per-class", type=int, help="train images per class (default all)")
    export.add_argument("--test-per-class", type=int, help="test images per class (default all)")
    export.set_defaults(handler=cmd_export)

    cmp = sub.add_parser("compare", help="compare two results folders; exit 1 on a regression beyond the thresholds")
    cmp.add_argument("baseline", help="results folder of the reference run")
    cmp.add_argument("new", help="results folder of the run to judge")
    cmp.add_argument("--fail", default="top1:-0.5pp",
                     help="thresholds, metric:[+-]amount[pp|%%] comma-separated (default top1:-0.5pp), "
                          "e.g. top1:-0.5pp,target_img_per_s:-5%%,target_train_s:+10%%")
    cmp.add_argument("--summary", help="append a markdown summary to this file (also to $GITHUB_STEP_SUMMARY when set)")
    cmp.add_argument("--allow-device-mismatch", action="store_true", help="compare runs from different devices")
    cmp.add_argument("--allow-missing", action="store_true", help="cells missing from NEW do not fail the comparison")
    cmp.add_argument("--per-seed", action="store_true", help="judge every cell, not the mean over its seeds")
    cmp.set_defaults(handler=cmd_compare)

    ci = sub.add_parser("ci", help="the regression gate: base and head revisions side by side on this machine (suite + timed "
                                   "benchmarks), or against a committed baseline of this device; exit 1 on a regression")
    ci.add_argument("--base", help="git revision to compare the working tree with, side by side (e.g. origin/main)")
    ci.add_argument("--baseline", help="instead of --base: a committed results folder recorded on this device")
    ci.add_argument("--suite", default="suites/ci.yaml", help="suite both revisions run (default suites/ci.yaml)")
    ci.add_argument("--data-root")
    ci.add_argument("--out", default="results/ci-gate",
                    help="folder for both revisions' results, the samples, summary.md and gate.json (default results/ci-gate; "
                         "rewritten on every run)")
    ci.add_argument("--parts", type=lambda s: [p.strip() for p in s.split(",") if p.strip()], default=["accuracy", "speed"],
                    help="accuracy (the suite) and/or speed (the timed benchmarks); default both")
    ci.add_argument("--rounds", type=int, default=10,
                    help="timing rounds, each a fresh process per revision; the test's sample size (default 10)")
    ci.add_argument("--benchmarks", type=lambda s: [p.strip() for p in s.split(",") if p.strip()],
                    help="time only these, comma-separated (default all: train_step, predict, loader)")
    ci.add_argument("--samples-per-round", type=int, default=2, help="timed samples per benchmark, process and round (default 2)")
    ci.add_argument("--min-effect", type=float, default=10.0, metavar="PERCENT",
                    help="smallest slowdown of the median that fails, in %% (default 10)")
    ci.add_argument("--alpha", type=float, default=0.01, help="significance level of the one-sided Wilcoxon signed-rank test on the rounds (default 0.01)")
    ci.add_argument("--fail", default="top1:-0.5pp", help="accuracy thresholds on one machine, as in compare (default top1:-0.5pp)")
    ci.add_argument("--fail-across-devices", default="top1:-2pp",
                    help="accuracy thresholds against a baseline of another device (default top1:-2pp)")
    ci.add_argument("--allow-device-mismatch", action="store_true",
                    help="with --baseline: judge accuracy against a baseline of another device (speed is then not judged)")
    ci.add_argument("--summary", help="append the markdown summary to this file (also to $GITHUB_STEP_SUMMARY when set)")
    ci.set_defaults(handler=cmd_ci)

    th = sub.add_parser("throughput", help="the harness's train step against a bare loop; cached against naive linear probe; "
                                           "a precision/compile matrix")
    th.add_argument("--parts", type=lambda s: [p.strip() for p in s.split(",")], default=["step", "probe"],
                    help="comma-separated: step, probe, matrix (default step,probe)")
    th.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    th.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto")
    th.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    th.add_argument("--backbone", default="resnet8")
    th.add_argument("--batch-size", type=int, default=128)
    th.add_argument("--resolution", type=int, default=32)
    th.add_argument("--steps", type=int, default=40, help="timed train steps per run")
    th.add_argument("--repeats", type=int, default=3)
    th.add_argument("--source-epochs", type=int, default=10)
    th.add_argument("--probe-data", choices=["digits", "cifar"], default="digits",
                    help="digits (no download) or cifar (CIFAR-10 -> CIFAR-100 subsets from --data-root)")
    th.add_argument("--data-root", help="folder with cifar-10-batches-py/ and cifar-100-python/ for --probe-data cifar")
    th.add_argument("--probe-epochs", type=int, default=40, help="head epochs, equal for both probes (the harness default)")
    th.add_argument("--matrix", nargs="+", default=["resnet18_cifar@32", "torchvision:resnet18@224"],
                    help="backbone@resolution entries for --parts matrix")
    th.add_argument("--matrix-batch-size", type=int, default=256)
    th.add_argument("--matrix-skip-compile", action="store_true", help="leave out the compiled row (CPU smoke runs)")
    th.add_argument("--json")
    th.add_argument("--markdown")
    th.set_defaults(handler=cmd_throughput)

    fetch = sub.add_parser("fetch", help="download the weights of a suite's pretrained sources (run it while online)")
    fetch.add_argument("suite")
    fetch.set_defaults(handler=cmd_fetch)

    index = sub.add_parser("index", help="write RESULTS/README.md: every published result, its hardware, date, commit and command")
    index.add_argument("root", nargs="?", default="results")
    index.set_defaults(handler=cmd_index)

    lst = sub.add_parser("list", help="list the datasets, backbones and strategies known")
    lst.set_defaults(handler=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)  # one line: BenchError joins whatever a library's text spans
        return 2
    except OSError as e:  # a write that failed (a full disk, no permission, a read-only folder), or a file that vanished
        where = f"{e.filename}: " if e.filename else ""
        print(f"bench: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; finished cells are saved and a rerun resumes after them", file=sys.stderr)
        return 130
