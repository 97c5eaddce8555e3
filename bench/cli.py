"""Command line: ``python -m bench COMMAND``. This module builds the parser from ``bench/commands`` (one module
per command) and dispatches; nothing else.

Usage mistakes and unusable suites are one-line errors with exit code 2; a run in which any cell
failed exits 1; everything else exits 0.
"""

from __future__ import annotations

import argparse
import sys

from bench.commands import discover
from bench.errors import BenchError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Transfer-learning benchmark harness.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in discover():
        command.add_arguments(sub.add_parser(command.NAME, help=command.HELP))
        sub.choices[command.NAME].set_defaults(handler=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)  # one line: BenchError joins whatever a library's text spans
        return 2
    except (
        OSError
    ) as e:  # a write that failed (a full disk, no permission, a read-only folder), or a file that vanished
        where = f"{e.filename}: " if e.filename else ""
        print(f"bench: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; finished cells are saved and a rerun resumes after them", file=sys.stderr)
        return 130
