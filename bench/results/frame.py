"""A results folder read back: its records and plan, and the records as a pandas DataFrame.

The way to analyse results in a notebook::

    from bench.results import frame as results
    df = results.load("results/cifar-cpu")  # one row per record the report shows
    df.groupby(["target", "strategy"])["metrics.test_top1_pct"].agg(["mean", "std", "count"])

Nested fields become dotted columns (``metrics.test_top1_pct``, ``compute.target_total_s``,
``provenance.device_name``, ``config.recipe.lr``, ``grid_point.lr``), plus ``candidate`` (``α=0.5``, a grid
point's ``lr=0.03``, or None) and ``grid_point`` itself (the dict, or None). Report, plots and compare
read the same records through ``read``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from bench.errors import BenchError
from bench.results.records import ResultsStore, candidate, latest_records


class ResultsError(BenchError):
    """A folder that holds no results bench can read: the message says which and why."""


@dataclass
class Results:
    """What a results folder holds: the current records, the plan, and what was left out."""

    directory: Path
    records: list[dict]
    plan: Optional[dict] = None
    stale: int = 0  # records of configurations the plan no longer has
    shift_records: list = field(default_factory=list)  # the current records' scores on shifted test sets
    estimate_records: list = field(default_factory=list)  # transferability estimates of the plan's sources


def read(directory: Union[str, Path], role: str = "", current: bool = True, empty_ok: bool = False) -> Results:
    """The latest record per cell and candidate; with ``current``, only those of configurations the folder's
    plan still has (a suite edited since leaves the old ones out, counted in ``stale``). A folder without records
    is an error naming it (``role`` says which folder it was meant to be), unless ``empty_ok``."""
    directory = Path(directory)
    store = ResultsStore(directory)
    where = f"{role} {directory}" if role else str(directory)
    if not store.path.is_file():
        raise ResultsError(
            f"{where}: no records.jsonl here (is this a results folder? python -m bench run SUITE.yaml writes one)"
        )
    records, plan = latest_records(store.read()), store.read_plan()
    if not records and not empty_ok and (plan is None or not current):
        raise ResultsError(f"{where}: records.jsonl holds no records")
    stale = 0
    if current and plan is not None:
        planned = {c["config_hash"] for c in plan["cells"]}
        kept = [r for r in records if r.get("config_hash") in planned]
        stale, records = len(records) - len(kept), kept
    from bench.results.robustness import read_shift_records
    from bench.results.transferability import read_estimates

    planned_shifts = set(plan["shift_evaluations"]) if current and plan and "shift_evaluations" in plan else None
    planned_estimates = set(plan.get("estimates", [])) if current and plan else None
    return Results(
        directory,
        records,
        plan,
        stale,
        read_shift_records(directory, records, planned_shifts),
        read_estimates(directory, planned_estimates),
    )


def frame(records: list[dict], columns: Optional[list[str]] = None):
    """``records`` as a DataFrame, nested fields flattened to dotted columns (``metrics.test_top1_pct``), plus
    ``candidate`` and ``grid_point`` (the dict). ``columns``: only these (dotted) columns, each present even where
    no record has it (None), read straight from the records: what the report uses, fast on 100,000 records,
    where flattening every record's whole config and provenance takes seconds."""
    import pandas as pd

    if columns is not None:
        return pd.DataFrame({column: [_pluck(record, column) for record in records] for column in columns})
    rows = [{**record, "candidate": candidate(record)} for record in records]
    df = pd.json_normalize(rows, sep=".") if rows else pd.DataFrame(columns=["candidate"])
    df["grid_point"] = [record.get("grid_point") or None for record in records]
    return df


def _pluck(record: dict, column: str):
    """The value of a dotted column in one record, or None."""
    if column == "candidate":
        return candidate(record)
    if column == "grid_point":
        return record.get("grid_point") or None
    value = record
    for part in column.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def load(directory: Union[str, Path], current: bool = True):
    """The records of a results folder as a DataFrame: one row per record the report shows (the latest per
    cell and candidate; with ``current``, of configurations the plan still has)."""
    return frame(read(directory, current=current).records)
