"""The results store: one JSON line per evaluated cell in ``records.jsonl``, appended atomically.

Report and compare read only this file. A record is self-describing: identity, status, metrics with
their direction, compute, the resolved config and its hash, and provenance.
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional

RECORD_SCHEMA_VERSION = 1

# which way is better, for every number a record carries that a comparison may gate on
DIRECTIONS = {
    "test_top1_pct": "higher", "test_top5_pct": "higher", "val_top1_pct": "higher",
    "target_train_s": "lower", "target_total_s": "lower", "target_img_per_s": "higher",
    "target_train_flops": "lower", "source_train_s_amortised": "lower", "source_train_s_total": "lower",
    "peak_mem_mib": "lower",
    "target_tflop_per_s": "higher", "target_mfu_pct": "higher", "target_compile_s": "lower", "target_data_s": "lower",
}


class ResultsStore:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / "records.jsonl"
        self._read_to = 0  # bytes of records.jsonl already tallied by ``tally``
        self._tally: dict[tuple[str, str], Counter] = {}  # (config hash, cell id) -> records per status

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        records = []
        with open(self.path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    # only a line cut by a crash can be malformed; everything before it stays usable
                    print(f"warning: {self.path}:{number}: skipping a malformed record", file=sys.stderr)
        return records

    def append(self, records: Iterable[dict]) -> None:
        """Appends the records of one cell in a single write, so a reader never sees half a cell."""
        payload = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records).encode("utf-8")
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a line cut by a crash: end it, so ours starts afresh
                payload = b"\n" + payload
            written = os.write(fd, payload)
            if written != len(payload):
                raise OSError(f"short write to {self.path}: {written} of {len(payload)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)

    @property
    def plan_path(self) -> Path:
        return self.directory / "plan.json"

    def write_plan(self, suite: str, cells: list[dict]) -> None:
        """The cells the suite asks for (identity and config hash), so a report can show the ones still
        missing and leave out records of configurations the suite no longer has. Written atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.plan_path.with_suffix(".json.partial")
        partial.write_text(json.dumps({"suite": suite, "cells": cells}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(partial, self.plan_path)

    def read_plan(self) -> Optional[dict]:
        if not self.plan_path.is_file():
            return None
        try:
            return json.loads(self.plan_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            print(f"warning: {self.plan_path}: unreadable; missing cells cannot be shown", file=sys.stderr)
            return None

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
                self._tally.setdefault((record.get("config_hash"), record.get("cell_id")), Counter())[record.get("status")] += 1
            except (json.JSONDecodeError, AttributeError):
                continue  # ``read`` warns about malformed lines
        return self._tally

    def claim(self, key: str):
        """The right to evaluate the cell ``key`` and append its records, or None while another process holds it."""
        from transfer_core.cache import claim

        return claim(self.directory / ".claims" / f"{key}.lock")


def point_label(point: Optional[dict]) -> str:
    """How a grid point is named in logs, records and tables: ``lr=0.03, weight_decay=0``."""
    return ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in (point or {}).items())


def candidate(record: dict) -> Optional[str]:
    """Which of a cell's candidates a record is about: alpha-mix's alpha (``α=0.5``), a grid's point
    (``lr=0.03, weight_decay=0``), or None for a cell with one result."""
    if record.get("alpha") is not None:
        return f"α={record['alpha']:g}"
    if record.get("grid_point"):
        return point_label(record["grid_point"])
    return None


def latest_records(records: list[dict]) -> list[dict]:
    """The newest record per (cell, config hash, candidate): a forced rerun supersedes what it reran."""
    latest: dict[tuple, dict] = {}
    for record in records:
        latest[(record.get("cell_id"), record.get("config_hash"), candidate(record))] = record
    return list(latest.values())
