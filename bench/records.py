"""The results store: one JSON line per evaluated cell in ``records.jsonl``, appended atomically.

Report and compare read only this file. A record is self-describing: identity, status, metrics with
their direction, compute, the resolved config and its hash, and provenance.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterable

RECORD_SCHEMA_VERSION = 1

# which way is better, for every number a record carries that a comparison may gate on
DIRECTIONS = {
    "test_top1_pct": "higher", "test_top5_pct": "higher", "val_top1_pct": "higher",
    "target_train_s": "lower", "target_total_s": "lower", "target_img_per_s": "higher",
    "target_train_flops": "lower", "source_train_s_amortised": "lower", "peak_mem_mib": "lower",
}


class ResultsStore:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / "records.jsonl"

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
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, payload)
            if written != len(payload):
                raise OSError(f"short write to {self.path}: {written} of {len(payload)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)

    def done_hashes(self) -> set[str]:
        """Config hashes that already have an ``ok`` record: the cells a resumed run skips."""
        return {r["config_hash"] for r in self.read() if r.get("status") == "ok"}


def latest_records(records: list[dict]) -> list[dict]:
    """The newest record per (config hash, alpha): a forced rerun supersedes what it reran."""
    latest: dict[tuple, dict] = {}
    for record in records:
        latest[(record.get("config_hash"), record.get("alpha"))] = record
    return list(latest.values())
