"""``bench run SUITE``: runs every cell not done yet (resume is the default), then prints the table and writes
the reports and plots; ``--dry-run`` prints the graph of artifacts instead."""

import contextlib
import dataclasses
import os
import sys
from pathlib import Path

from bench.commands.common import add_data_root, add_device, command_line, log, resolve_runtime
from bench.errors import SuiteError

NAME, ORDER = "run", 10
HELP = "run a suite (resumes by default) and print its results table"


def add_arguments(parser) -> None:
    add_runner_arguments(parser)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the graph of artifacts (key, dependencies, cached or not, what each needs), then stop",
    )


def add_runner_arguments(parser) -> None:
    """What running a suite's artifacts takes: the commands that do (run, rank) share these."""
    parser.add_argument("suite", help="suite YAML file")
    add_data_root(parser)
    parser.add_argument("--out", help="results folder (default results/<suite name>)")
    parser.add_argument("--cache-dir", help="model cache (default BENCH_CACHE_DIR or <out>/cache)")
    parser.add_argument("--filter", help="only cells whose id matches this regular expression")
    add_device(parser)
    parser.add_argument("--force", action="store_true", help="rerun cells that already have ok records")
    parser.add_argument(
        "--executor",
        default="auto",
        help="auto (default): processes on a machine that runs on its CPU with 2 cores or more for a run of 8 "
        "models or more, else local; "
        "local: in this process; processes: worker processes on this machine, several artifacts at once; "
        "ray: Ray tasks on this machine's GPUs and cores, or a cluster's; submitit: SLURM jobs (or local processes)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads per artifact (default: all cores in this process, 1 per worker process or Ray task)",
    )
    parser.add_argument(
        "--cell-timeout",
        type=float,
        metavar="SECONDS",
        help="end a training or evaluation running longer with status timeout; the suite goes on and a rerun "
        "retries it (overrides runtime.cell_timeout_s)",
    )
    add_executor_arguments(parser)


def add_executor_arguments(parser) -> None:
    """Each executor's own arguments, in a group of its own (``Executor.add_arguments``); which executor owns
    which is kept on the parser, so that one given without its executor is refused."""
    from bench.pipeline.executors import EXECUTORS

    owners = {}
    for name in EXECUTORS.names():
        group = parser.add_argument_group(f"with --executor {name}")
        EXECUTORS.get(name).add_arguments(group)
        owners.update({action.dest: (name, action.option_strings[0]) for action in group._group_actions})
    parser.set_defaults(executor_arguments=owners)


def chosen_executor_options(args) -> dict:
    """The chosen executor's options from the command line, checked: an unknown executor, a bad value or an
    argument of another executor is a one-line error."""
    from bench.pipeline.executors import executor_options
    from transfer_core.registry import UnknownNameError

    chosen = "processes" if args.executor == "auto" else args.executor  # auto takes what it may pick
    options = {"threads": args.threads}
    for dest, (owner, flag) in args.executor_arguments.items():
        value = getattr(args, dest)
        if owner == chosen:
            options[dest] = value
        elif value is not None:
            raise SuiteError(f"{flag} needs --executor {owner}")
    try:
        executor_options(chosen, **options)
    except UnknownNameError as e:
        raise SuiteError(f"--executor: {e}") from None
    except ValueError as e:
        raise SuiteError(str(e)) from None
    return options


def automatic_executor(device: str, threads, torchrun: bool) -> str:
    """What ``--executor auto`` picks: worker processes where the suite runs on the CPU and they get 2 cores or
    more between them (a small network trains faster per core as one process per core than as one process on
    every core: docs/runtime.md#threads-on-a-small-cpu-machine), which the auto executor uses for runs of enough
    models (``bench/pipeline/executors/auto.py``); else this process (a GPU, torchrun's ranks)."""
    import torch

    from bench.pipeline.executors.processes import usable_cores

    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return "processes" if on_cpu and not torchrun and usable_cores() // (threads or 1) >= 2 else "local"


def suite_runtime(suite, device_override, cuda_available=None, shard=None):
    """The suite's runtime settings (``--device`` overriding its device), resolved on this machine."""
    from transfer_core.distributed import WHOLE

    settings = dataclasses.replace(suite.runtime, device=device_override or suite.runtime.device)
    return resolve_runtime(settings, shard or WHOLE, cuda_available)


def run(args) -> int:
    from bench.pipeline.suite import load_suite

    suite = load_suite(args.suite)
    with suite_runner(args, suite) as (runner, cells, all_cells):
        if args.dry_run:
            return dry_run(runner, cells, all_cells)
        summary = runner.run(cells, all_cells)
    from bench.results import report as report_mod  # seconds of imports (statistics, plots): not for a dry run

    if not runner.shard.is_main:
        return 1 if summary.failed else 0
    out_dir = runner.store.directory
    results = report_mod.load_results(out_dir)
    if summary.ran or summary.shifted or summary.estimated:
        report_mod.write_reports(results, f"Results: {suite.name}")
    print(report_mod.render_markdown(report_mod.summarise_rows(results.records, results.plan)))
    elsewhere = f", {summary.elsewhere} recorded by another run" if summary.elsewhere else ""
    shifted = f", {summary.shifted} shift evaluations" if summary.shifted else ""
    estimated = f", {summary.estimated} transferability estimates" if summary.estimated else ""
    print(
        f"\n{summary.ran} cells run{shifted}{estimated}, {summary.skipped} already done{elsewhere}, "
        f"{len(summary.failed)} failed; records: {runner.store.path}"
        + (
            f"; reports and plots: {out_dir}/report.md (also .tex, .csv, .html)"
            if summary.ran or summary.shifted or summary.estimated
            else ""
        ),
        file=sys.stderr,
    )
    return 1 if summary.failed else 0


@contextlib.contextmanager
def suite_runner(args, suite):
    """(runner, cells, all cells) for the suite and the arguments of ``add_runner_arguments``, checked in one
    line each before anything heavy is imported; the executor is closed (and torchrun's group left) after."""
    from bench.pipeline.suite import check_data, data_root, expand_cells

    root = data_root(suite, args.data_root)
    check_data(suite, root)
    all_cells = expand_cells(suite)
    cells = expand_cells(suite, args.filter)
    if not cells:
        raise SuiteError(f"--filter {args.filter!r} matches none of the {len(all_cells)} cells")
    options = chosen_executor_options(args)
    if args.cell_timeout is not None and not args.cell_timeout > 0:
        raise SuiteError(f"--cell-timeout: expected seconds above 0, got {args.cell_timeout:g}")

    # imports torch: after the cheap checks, so mistakes are reported fast
    from bench.pipeline.executors import create_executor
    from bench.pipeline.runner import Runner
    from transfer_core import distributed

    shard = distributed.launched_shard()
    if args.executor == "auto":
        picked = automatic_executor(args.device or suite.runtime.device, args.threads, shard.world > 1)
        if picked == "local" and options.pop("workers", None) is not None:
            raise SuiteError(
                "--workers: --executor auto builds in this process here (a GPU, torchrun's ranks, or one core "
                "per --threads); use --executor processes for worker processes"
            )
        # where it would use workers, the auto executor still builds a run of few models in this process
        args.executor = "auto" if picked == "processes" else "local"
    if shard.world > 1:  # under torchrun: the ranks build each artifact together, in this process each
        if args.executor != "local":
            raise SuiteError(
                f"--executor {args.executor} cannot run under torchrun, which already places one process per GPU; "
                "use the local executor there"
            )
        import torch

        wanted = args.device or suite.runtime.device
        distributed.init_process_group(
            "cuda" if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()) else "cpu"
        )
    executor = create_executor(args.executor, log, **options)
    try:
        runtime = suite_runtime(suite, args.device, executor.cuda_available(), shard)
        out_dir = Path(args.out) if args.out else Path("results") / suite.name
        cache_dir = Path(args.cache_dir or os.environ.get("BENCH_CACHE_DIR") or out_dir / "cache")
        runner = Runner(
            suite,
            root,
            out_dir,
            cache_dir,
            runtime,
            force=args.force,
            command=command_line(),
            log=log,
            executor=executor,
            cell_timeout_s=args.cell_timeout,
        )
        yield runner, cells, all_cells
    finally:
        executor.close()
        distributed.leave_process_group()


def dry_run(runner, cells, all_cells) -> int:
    """The graph of artifacts the cells need, and what of it is cached; nothing is trained or written."""
    from tabulate import tabulate

    rows, to_run = runner.describe(cells, all_cells)
    if runner.shard.is_main:
        print(
            tabulate(
                rows,
                headers=["kind", "artifact", "key", "depends on (keys)", "state", "needs"],
                tablefmt="github",
                disable_numparse=True,
            )
        )
        to_build = sum(1 for r in rows if r[4] == "to build")
        shifts = sum(1 for r in rows if r[0] == "shift evaluation" and r[4] == "to run")
        estimates = sum(1 for r in rows if r[0] == "estimate" and r[4] == "to run")
        print(
            f"{len(rows)} artifacts: {to_build} models to build, {to_run} of {len(cells)} cells to run"
            + (f", {shifts} shift evaluations" if shifts else "")
            + (f", {estimates} transferability estimates" if estimates else "")
            + "; nothing was trained or written (dry run)"
        )
        if runner.unfetched:
            print(
                f"{len(runner.unfetched)} pretrained sources' weights are not on this machine "
                f"({', '.join(runner.unfetched)}): `python -m bench fetch SUITE` fetches them; until then the keys "
                "of what they build are provisional"
            )
    return 0
