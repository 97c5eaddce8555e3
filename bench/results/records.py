"""The results store: one JSON line per evaluated cell in ``records.jsonl``, appended atomically.

Report and compare read only this file. A record is self-describing: identity, status, metrics with
their direction, compute, the resolved config and its hash, and provenance.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional

from transfer_core.files import write_file

from bench.errors import BenchError

RECORD_SCHEMA_VERSION = 1


class RecordError(BenchError):
    """A records file that is not one this harness wrote: the message names the file, the line and the problem."""


_NUMBER = (int, float)
_TEXT_FIELDS = ("cell_id", "source", "target", "backbone", "strategy", "status", "config_hash")


def record_problem(record) -> Optional[str]:
    """What makes ``record`` unusable by report, compare and index, or None when it is a record they can read."""
    if not isinstance(record, dict):
        return f"expected a record (a JSON object), found {type(record).__name__}"
    if record.get("schema_version") != RECORD_SCHEMA_VERSION:
        return f"schema_version {record.get('schema_version')!r}: this version of bench reads {RECORD_SCHEMA_VERSION}"
    for name in _TEXT_FIELDS:
        if not isinstance(record.get(name), str):
            return f"{name}: expected a string, found {record.get(name)!r}"
    if not isinstance(record.get("seed"), int) or isinstance(record.get("seed"), bool):
        return f"seed: expected an integer, found {record.get('seed')!r}"
    for section, allowed in (("metrics", _NUMBER), ("compute", (*_NUMBER, str))):  # compute names its memory kind
        values = record.get(section)
        if not isinstance(values, dict):
            return f"{section}: expected an object, found {values!r}"
        for name, value in values.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, allowed)):
                return f"{section}.{name}: expected a number or null, found {value!r}"
    if record["status"] == "ok" and record["metrics"].get("test_top1_pct") is None:
        return "metrics.test_top1_pct: a record with status ok has its test top-1"
    alpha = record.get("alpha")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, _NUMBER)):
        return f"alpha: expected a number or null, found {alpha!r}"
    if record.get("grid_point") is not None and not isinstance(record["grid_point"], dict):
        return f"grid_point: expected an object or null, found {record['grid_point']!r}"
    if not isinstance(record.get("selected", True), bool):
        return f"selected: expected true or false, found {record['selected']!r}"
    for name in ("provenance", "details", "source_model", "config", "test_correct"):
        if record.get(name) is not None and not isinstance(record[name], dict):
            return f"{name}: expected an object, found {record[name]!r}"
    return None


SHIFT_RECORDS = "shifts.jsonl"  # the records of shift evaluations (bench/pipeline/shifts.py), beside the cells' own


class ResultsStore:
    def __init__(self, directory: Path, name: str = "records.jsonl", problem=record_problem):
        """``problem``: what makes a line of this file unreadable (a cell's records by default)."""
        self.directory = Path(directory)
        self.path = self.directory / name
        self._problem = problem
        self._read_to = 0  # bytes of records.jsonl already tallied by ``tally``
        self._tally: dict[tuple[str, str], Counter] = {}  # (config hash, cell id) -> records per status

    def read(self) -> list[dict]:
        """Every record. A line that is not JSON is skipped with a warning (a run killed mid-write leaves one,
        and everything else stays usable); a JSON line that is not a record this version wrote is a
        ``RecordError`` naming the file and line."""
        if not self.path.is_file():
            return []
        records = []
        try:
            with open(self.path, "rb") as f:
                lines = f.read().split(b"\n")
        except OSError as e:
            raise RecordError(f"{self.path}: cannot read it: {e.strerror or e}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                print(
                    f"warning: {self.path}:{number}: skipping a line that is not a JSON record (cut by a crash?)",
                    file=sys.stderr,
                )
                continue
            problem = self._problem(record)
            if problem is not None:
                raise RecordError(f"{self.path}:{number}: not a record bench can read: {problem}")
            records.append(record)
        return records

    def append(self, records: Iterable[dict]) -> None:
        """Appends the records of one cell in a single write, so a reader never sees half a cell."""
        payload = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records).encode("utf-8")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a link planted in a results folder is refused, never written through
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            why = "it is a symbolic link, which bench does not write through" if e.errno == errno.ELOOP else e.strerror
            raise OSError(e.errno, f"cannot write {self.path}: {why}") from None
        size, written = 0, 0
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a line cut by a crash: end it, so ours starts afresh
                payload = b"\n" + payload
            written = os.write(fd, payload)
            if written != len(payload):
                raise OSError(errno.ENOSPC, f"only {written} of {len(payload)} bytes written")
            os.fsync(fd)
        except OSError as e:
            # take back what was written, unless another run appended after it (then the next append ends the cut line)
            if written and os.fstat(fd).st_size == size + written:
                os.ftruncate(fd, size)
            raise OSError(
                e.errno,
                f"cannot append to {self.path}: {e.strerror} (the records before are intact; "
                "a rerun resumes after them)",
            ) from None
        finally:
            os.close(fd)

    @property
    def plan_path(self) -> Path:
        return self.directory / "plan.json"

    def write_plan(
        self, suite: str, cells: list[dict], shift_evaluations: Iterable[str] = (), estimates: Iterable[str] = ()
    ) -> None:
        """The cells the suite asks for (identity and config hash), so a report can show the ones still
        missing and leave out records of configurations the suite no longer has; likewise the config hashes
        of its shift evaluations and transferability estimates. Written atomically."""
        plan = {
            "suite": suite,
            "cells": cells,
            "shift_evaluations": sorted(set(shift_evaluations)),
            "estimates": sorted(set(estimates)),
        }
        write_file(self.plan_path, json.dumps(plan, indent=1, sort_keys=True) + "\n")

    def read_plan(self) -> Optional[dict]:
        if not self.plan_path.is_file():
            return None
        try:
            plan = json.loads(self.plan_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            plan = None
        fields = ("source", "target", "backbone", "strategy", "config_hash")  # what the report reads of it
        if not (
            isinstance(plan, dict)
            and isinstance(plan.get("cells"), list)
            and all(
                isinstance(c, dict)
                and all(isinstance(c.get(f), str) for f in fields)
                and isinstance(c.get("seed"), int)
                for c in plan["cells"]
            )
        ):
            print(f"warning: {self.plan_path}: not a plan bench wrote; missing cells cannot be shown", file=sys.stderr)
            return None
        return plan

    def done_cells(self) -> set[tuple[str, str]]:
        """(config hash, cell id) of the cells that already have an ``ok`` record: what a resumed run skips."""
        return {key for key, statuses in self.tally().items() if statuses["ok"]}

    def tally(self) -> dict[tuple[str, str], Counter]:
        """Records per (config hash, cell id) and status, reading only what was appended since the last
        call: cheap enough to ask before every cell, while other processes append to the same file."""
        if not self.path.is_file():
            return self._tally
        with open(self.path, "rb") as f:
            f.seek(self._read_to)
            appended = f.read()
        complete = appended[: appended.rfind(b"\n") + 1]  # a line still being written is tallied next time
        self._read_to += len(complete)
        for line in complete.splitlines():
            try:
                record = json.loads(line)
                self._tally.setdefault((record.get("config_hash"), record.get("cell_id")), Counter())[
                    record.get("status")
                ] += 1
            except (json.JSONDecodeError, AttributeError):
                continue  # ``read`` warns about malformed lines
        return self._tally

    def claim(self, key: str):
        """The right to evaluate the cell ``key`` and append its records, or None while another process holds it."""
        from transfer_core.cache import claim

        return claim(self.directory / ".claims" / f"{key}.lock")


def point_label(point: Optional[dict]) -> str:
    """How a grid point is named in logs, records and tables: ``lr=0.03, weight_decay=0``."""
    return ", ".join(
        f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in (point or {}).items()
    )


def candidate(record: dict) -> Optional[str]:
    """Which of a cell's candidates a record is about: alpha-mix's alpha (``α=0.5``), a grid's point
    (``lr=0.03, weight_decay=0``), the chosen point retrained on train + validation (``lr=0.03 (refit)``,
    beside that point's own record), or None for a cell with one result."""
    if record.get("alpha") is not None:
        return f"α={record['alpha']:g}"
    if record.get("grid_point"):
        refit = " (refit)" if (record.get("details") or {}).get("refit") else ""
        return point_label(record["grid_point"]) + refit
    return None


def latest_records(records: list[dict]) -> list[dict]:
    """The newest record per (cell, config hash, candidate): a forced rerun supersedes what it reran."""
    latest: dict[tuple, dict] = {}
    for record in records:
        latest[(record.get("cell_id"), record.get("config_hash"), candidate(record))] = record
    return list(latest.values())


DEFAULT_STRATEGY_INFO = {"baseline": False, "table_order": 100, "plot_marker": "", "ingredients": []}


def strategy_info(records: Iterable[dict]) -> dict[str, dict]:
    """How each strategy in ``records`` is shown (baseline or not, table order, plot marker), from the records
    themselves; records written before they carried it are looked up in the strategy registry (which imports
    torch, so only then), and a strategy unknown to both is shown last, with a spare marker."""
    info: dict[str, dict] = {}
    for record in records:
        name, given = record.get("strategy"), record.get("strategy_info")
        if isinstance(name, str) and name not in info and isinstance(given, dict):
            info[name] = {**DEFAULT_STRATEGY_INFO, **given}
    missing = {r.get("strategy") for r in records if isinstance(r.get("strategy"), str)} - set(info)
    if missing:
        from transfer_core.strategies import STRATEGIES

        for name in missing:
            info[name] = (
                STRATEGIES.get(name).display(STRATEGIES.get(name).Options())
                if name in STRATEGIES
                else DEFAULT_STRATEGY_INFO
            )
    return info
