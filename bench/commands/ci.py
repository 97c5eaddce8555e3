"""``bench ci``: the regression gate, base and head side by side (``bench/measure/gate``)."""

from bench.commands.common import add_data_root

NAME, ORDER = "ci", 65
HELP = (
    "the regression gate: base and head revisions side by side on this machine (suite + timed benchmarks), "
    "or against a committed baseline of this device; exit 1 on a regression"
)


def add_arguments(parser) -> None:
    parser.add_argument("--base", help="git revision to compare the working tree with, side by side (e.g. origin/main)")
    parser.add_argument("--baseline", help="instead of --base: a committed results folder recorded on this device")
    parser.add_argument("--suite", default="suites/ci.yaml", help="suite both revisions run (default suites/ci.yaml)")
    add_data_root(parser)
    parser.add_argument(
        "--out",
        default="results/ci-gate",
        help="folder for both revisions' results, the samples, summary.md and gate.json (default results/ci-gate; "
        "rewritten on every run)",
    )
    parser.add_argument(
        "--parts",
        type=lambda s: [p.strip() for p in s.split(",") if p.strip()],
        default=["accuracy", "speed"],
        help="accuracy (the suite) and/or speed (the timed benchmarks); default both",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="timing rounds, each a fresh process per revision; the test's sample size (default 10)",
    )
    parser.add_argument(
        "--benchmarks",
        type=lambda s: [p.strip() for p in s.split(",") if p.strip()],
        help="time only these, comma-separated (default all: train_step, predict, loader)",
    )
    parser.add_argument(
        "--samples-per-round", type=int, default=2, help="timed samples per benchmark, process and round (default 2)"
    )
    parser.add_argument(
        "--min-effect",
        type=float,
        default=10.0,
        metavar="PERCENT",
        help="smallest slowdown of the median that fails, in %% (default 10)",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.01,
        help="significance level of the one-sided Wilcoxon signed-rank test on the rounds (default 0.01)",
    )
    parser.add_argument(
        "--fail", default="top1:-0.5pp", help="accuracy thresholds on one machine, as in compare (default top1:-0.5pp)"
    )
    parser.add_argument(
        "--fail-across-devices",
        default="top1:-2pp",
        help="accuracy thresholds against a baseline of another device (default top1:-2pp)",
    )
    parser.add_argument(
        "--allow-device-mismatch",
        action="store_true",
        help="with --baseline: judge accuracy against a baseline of another device (speed is then not judged)",
    )
    parser.add_argument(
        "--summary", help="append the markdown summary to this file (also to $GITHUB_STEP_SUMMARY when set)"
    )


def run(args) -> int:
    from bench.measure.gate.run import cmd_ci

    return cmd_ci(args)
