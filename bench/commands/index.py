"""``bench index [ROOT]``: ROOT/README.md, the index of every published result."""

from pathlib import Path

from bench.errors import SuiteError

NAME, ORDER = "index", 90
HELP = "write RESULTS/README.md: every published result, its hardware, date, commit and command"


def add_arguments(parser) -> None:
    parser.add_argument("root", nargs="?", default="results")


def run(args) -> int:
    from bench.results.index import build_index
    from transfer_core.files import write_file

    root = Path(args.root)
    if not root.is_dir():
        raise SuiteError(f"{root}: no such folder")
    write_file(root / "README.md", build_index(root))
    print(f"wrote {root / 'README.md'}")
    return 0
