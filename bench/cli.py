"""Command line: ``python -m bench run|validate|report|list``.

Usage mistakes and unusable suites are one-line errors with exit code 2; a run in which any cell
failed exits 1; everything else exits 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path

from . import report as report_mod
from .suite import SuiteError, check_data, data_root, expand_cells, load_suite


def _runtime(suite, device_override):
    from transfer_core.runtime import RuntimeUnavailableError, resolve_runtime

    spec = suite.runtime
    try:
        return resolve_runtime(device_override or spec.device, spec.amp, spec.compile, spec.channels_last)
    except RuntimeUnavailableError as e:
        raise SuiteError(str(e)) from None


def _out_dir(suite, args) -> Path:
    return Path(args.out) if args.out else Path("results") / suite.name


def cmd_validate(args) -> int:
    suite = load_suite(args.suite)
    check_data(suite, data_root(suite, args.data_root))
    cells = expand_cells(suite)
    print(f"{args.suite}: ok — suite {suite.name!r}, {len(cells)} cells "
          f"({len(suite.sources)} source × {len(suite.targets)} targets × {len(suite.backbones)} backbones × "
          f"{len(suite.strategies)} strategies × {len(suite.seeds)} seeds)")
    return 0


def cmd_run(args) -> int:
    suite = load_suite(args.suite)
    root = data_root(suite, args.data_root)
    check_data(suite, root)
    all_cells = expand_cells(suite)
    cells = expand_cells(suite, args.filter)
    if not cells:
        raise SuiteError(f"--filter {args.filter!r} matches none of the {len(all_cells)} cells")
    runtime = _runtime(suite, args.device)

    from .runner import Runner  # imports torch: after the cheap checks, so mistakes are reported fast

    out_dir = _out_dir(suite, args)
    cache_dir = Path(args.cache_dir or os.environ.get("BENCH_CACHE_DIR") or out_dir / "cache")
    command = "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    runner = Runner(suite, root, out_dir, cache_dir, runtime, force=args.force, command=command)
    if args.dry_run:
        return _dry_run(runner, cells)
    summary = runner.run(cells, all_cells)
    records = runner.store.read()
    if summary.ran:
        (out_dir / "report.md").write_text(report_mod.report_markdown(records, f"Results: {suite.name}"))
    print(report_mod.render(records, "markdown"))
    print(f"\n{summary.ran} cells run, {summary.skipped} already done, {len(summary.failed)} failed; "
          f"records: {runner.store.path}", file=sys.stderr)
    return 1 if summary.failed else 0


def _dry_run(runner, cells) -> int:
    from tabulate import tabulate

    pending = {id(c) for c in runner.pending(cells)}
    rows = [[c.cell_id, runner.config_hash(c)[:12], "to run" if id(c) in pending else "done"] for c in cells]
    print(tabulate(rows, headers=["cell", "config hash", "status"], tablefmt="github"))
    sources = {}
    for cell in cells:
        if id(cell) in pending and runner.uses_source(cell):
            key = runner.source_key(cell.source, cell.backbone, cell.seed)
            cached = runner.cache.path("sources", key).is_file()
            sources[key] = (f"{cell.source.data.label}/{cell.backbone}/seed{cell.seed}",
                            "cached" if cached else f"to train ({cell.source.recipe.epochs} epochs)")
    for name, state in sources.values():
        print(f"source model {name}: {state}")
    print(f"{len(pending)} of {len(cells)} cells would run; nothing was trained or written (dry run)")
    return 0


def cmd_report(args) -> int:
    records = report_mod.load_records(Path(args.results_dir))
    print(report_mod.render(records, args.format))
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
    run.add_argument("--dry-run", action="store_true", help="list the cells and what would be trained, then stop")
    run.add_argument("--force", action="store_true", help="rerun cells that already have ok records")
    run.set_defaults(handler=cmd_run)

    validate = sub.add_parser("validate", help="check a suite and its data without running anything")
    validate.add_argument("suite")
    validate.add_argument("--data-root")
    validate.set_defaults(handler=cmd_validate)

    rep = sub.add_parser("report", help="print the results table of a results folder")
    rep.add_argument("results_dir")
    rep.add_argument("--format", choices=["markdown", "csv"], default="markdown")
    rep.set_defaults(handler=cmd_report)

    lst = sub.add_parser("list", help="list the datasets, backbones and strategies known")
    lst.set_defaults(handler=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (SuiteError, report_mod.ReportError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; finished cells are saved and a rerun resumes after them", file=sys.stderr)
        return 130
