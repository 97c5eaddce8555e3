"""``bench validate SUITE``: checks a suite and that its data is there, running nothing."""

from bench.commands.common import add_data_root

NAME, ORDER = "validate", 20
HELP = "check a suite and its data without running anything"


def add_arguments(parser) -> None:
    parser.add_argument("suite")
    add_data_root(parser)


def run(args) -> int:
    from bench.pipeline.suite import check_data, data_root, expand_cells, load_suite

    suite = load_suite(args.suite)
    check_data(suite, data_root(suite, args.data_root))
    cells = expand_cells(suite)
    backbones = len({cell.backbone for cell in cells})  # a pretrained source brings its own
    print(
        f"{args.suite}: ok — suite {suite.name!r}, {len(cells)} cells "
        f"({len(suite.sources)} sources, {len(suite.targets)} targets, {backbones} backbones, "
        f"{len(suite.strategies)} strategies, {len(suite.seeds)} seeds)"
    )
    return 0
