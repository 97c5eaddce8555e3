"""What several commands share: their repeated arguments, the runtime resolved or refused in one line, and
the --json/--markdown writer of measurements."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import sys
from pathlib import Path
from typing import Optional

from bench.errors import SuiteError


def add_data_root(parser, help: str = "folder with the datasets (overrides BENCH_DATA_ROOT and data.root)") -> None:
    parser.add_argument("--data-root", help=help)


def add_device(parser, default=None, help: str = "override runtime.device") -> None:
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=default, help=help)


def add_measurement_outputs(parser) -> None:
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    parser.add_argument("--markdown", help="also write the table, with how it was produced, to this markdown file")


def log(message: str) -> None:
    print(message, file=sys.stderr)


def command_line() -> str:
    """The command as typed, for provenance."""
    return "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def script_command_line() -> str:
    """A script's command as typed (``python scripts/...``), for the measurements it writes."""
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def resolve_runtime(*args, **kwargs):
    """``transfer_core.runtime.resolve_runtime``, its refusal (no CUDA, no DALI) as a one-line usage error."""
    from transfer_core.runtime import RuntimeUnavailableError
    from transfer_core.runtime import resolve_runtime as resolve

    try:
        return resolve(*args, **kwargs)
    except RuntimeUnavailableError as e:
        raise SuiteError(str(e)) from None


def require_array_dataset(name: str, where: str = "", hint: str = "") -> None:
    from transfer_core.datasets import DATASETS, create_dataset_reader

    if name not in DATASETS or not create_dataset_reader(name).array_backed:
        arrays = [n for n in DATASETS.names() if create_dataset_reader(n).array_backed]
        raise SuiteError(f"{where}{name!r} is not an array dataset; choose one of {', '.join(arrays)}{hint}")


def write_measurement(args, kind: str, payload: dict, title: str, text: str, command: Optional[str] = None) -> None:
    """--json (the payload, stamped with its kind and time) and --markdown (the text and its command: this
    ``bench`` command's, unless a script gives its own)."""
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        stamped = {
            "kind": kind,
            "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **payload,
        }
        Path(args.json).write_text(json.dumps(stamped, indent=2, default=str) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(f"# {title}\n\n{text}\n\nProduced by `{command or command_line()}`.\n")
