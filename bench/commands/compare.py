"""``bench compare BASELINE NEW``: regression verdicts between two results folders."""

from pathlib import Path

from bench.text import publish_summary

NAME, ORDER = "compare", 60
HELP = "compare two results folders; exit 1 on a regression beyond the thresholds"


def add_arguments(parser) -> None:
    parser.add_argument("baseline", help="results folder of the reference run")
    parser.add_argument("new", help="results folder of the run to judge")
    parser.add_argument(
        "--fail",
        default="top1:-0.5pp",
        help="thresholds, metric:[+-]amount[pp|%%] comma-separated (default top1:-0.5pp), "
        "e.g. top1:-0.5pp,target_img_per_s:-5%%,target_train_s:+10%%",
    )
    parser.add_argument(
        "--summary", help="append a markdown summary to this file (also to $GITHUB_STEP_SUMMARY when set)"
    )
    parser.add_argument("--allow-device-mismatch", action="store_true", help="compare runs from different devices")
    parser.add_argument(
        "--allow-missing", action="store_true", help="cells missing from NEW do not fail the comparison"
    )
    parser.add_argument("--per-seed", action="store_true", help="judge every cell, not the mean over its seeds")


def run(args) -> int:
    from bench.results import compare

    thresholds = compare.parse_thresholds(args.fail)
    comparison = compare.compare(
        compare.load(Path(args.baseline), "baseline"),
        compare.load(Path(args.new), "new"),
        thresholds,
        args.allow_device_mismatch,
        args.allow_missing,
        args.per_seed,
    )
    print(compare.render_table(comparison))
    print(compare.verdict_line(comparison))
    summary = compare.render_summary(comparison, args.baseline, args.new, thresholds)
    publish_summary(summary, args.summary)
    return 1 if comparison.failed else 0
