"""``bench report RESULTS``: the table, from the results store alone; every format and the plots with --write."""

import sys
from pathlib import Path

from bench.errors import SuiteError

NAME, ORDER = "report", 30
HELP = "print the results table of a results folder; write every format and the plots"


def add_arguments(parser) -> None:
    parser.add_argument("results_dir")
    parser.add_argument(
        "--format", choices=["markdown", "latex", "csv", "html"], default="markdown", help="what to print"
    )
    parser.add_argument("--plot", help="also draw accuracy against compute to this file (.png, .svg or .pdf)")
    parser.add_argument(
        "--write",
        action="store_true",
        help="write report.md/.tex/.csv/.html and the plots (PNG and SVG) into the results folder",
    )
    parser.add_argument(
        "--paired", metavar="A,B", help="print A − B test top-1 on shared seeds, with its 95%% interval"
    )


def run(args) -> int:
    from bench.results import report as report_mod

    results = report_mod.load_results(Path(args.results_dir))
    rows = report_mod.summarise_rows(results.records, results.plan)
    title = f"Results: {results.plan['suite']}" if results.plan else f"Results: {Path(args.results_dir).name}"
    if args.paired:
        a, _, b = args.paired.partition(",")
        if not a or not b:
            raise SuiteError("--paired: expected two strategies, e.g. --paired full_finetune,scratch")
        print(report_mod.paired_table(results, a.strip(), b.strip()))
    elif args.format == "html":
        from bench.results import plots

        analyses = report_mod.analyse(results)
        figures = plots.figures(results.records, analyses.rows, None, analyses.shifted, analyses.agreeing)
        svgs = [plots.svg_text(fig) for _, fig in figures]
        notes = report_mod.notes(results) + analyses.lines()
        print(report_mod.render_page(title, notes, report_mod.sections(results, analyses), svgs), end="")
    else:
        print(report_mod.render_rows(rows, args.format), end="" if args.format != "markdown" else "\n")
    if args.plot:
        from bench.results import plots

        fig = plots.accuracy_vs_compute(rows)
        if fig is None:
            raise report_mod.ReportError("no results with both accuracy and compute to plot")
        print(f"wrote {plots.save(fig, Path(args.plot))}", file=sys.stderr)
    if args.write:
        for path in report_mod.write_reports(results, title):
            print(f"wrote {path}", file=sys.stderr)
    return 0
