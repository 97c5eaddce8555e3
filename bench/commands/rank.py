"""``bench rank SUITE``: the transferability estimates alone, nothing fine-tuned: each target's sources ordered
by each estimator's score, with what scoring took. The cheap first step of a search through a zoo of sources;
the suite's ``estimators:`` (or ``--estimators``) say which scores."""

import dataclasses

from bench.commands.common import log
from bench.commands.run import add_runner_arguments, suite_runner
from bench.errors import SuiteError

NAME, ORDER = "rank", 15
HELP = "rank each target's sources by transferability estimators, without fine-tuning anything"


def add_arguments(parser) -> None:
    add_runner_arguments(parser)
    parser.add_argument(
        "--estimators",
        help="comma-separated estimator names, instead of the suite's estimators: (e.g. logme,leep,knn)",
    )
    parser.add_argument("--format", choices=["markdown", "csv"], default="markdown", help="how to print the table")


def run(args) -> int:
    from bench.pipeline.estimates import parse_estimators
    from bench.pipeline.suite import load_suite
    from bench.pipeline.suite.convert import build_dataclass
    from bench.results.tables import render_csv, render_markdown
    from bench.results.transferability import rank_rows, rank_table, read_estimates

    suite = load_suite(args.suite)
    if args.estimators:
        names = [name.strip() for name in args.estimators.split(",") if name.strip()]
        suite = dataclasses.replace(suite, estimators=parse_estimators(names, "--estimators", build_dataclass))
    if not suite.estimators:
        raise SuiteError(
            f"{args.suite}: no estimators: list them in the suite (estimators: [logme, leep]) or pass --estimators"
        )
    with suite_runner(args, suite) as (runner, cells, all_cells):
        summary = runner.run(cells, all_cells, estimates_only=True)
    if not runner.shard.is_main:
        return 1 if summary.failed else 0
    plan = runner.store.read_plan() or {}
    rows, estimators = rank_rows(read_estimates(runner.store.directory, set(plan.get("estimates", []))))
    table = rank_table(estimators)
    print(render_csv(rows, table) if args.format == "csv" else render_markdown(rows, table))
    log(
        f"\n{summary.estimated} estimates run, {len(summary.failed)} failed; nothing was fine-tuned; "
        f"records: {runner.store.directory / 'estimates.jsonl'}"
    )
    return 1 if summary.failed else 0
