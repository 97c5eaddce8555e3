"""Results as a pandas DataFrame (``bench.results.frame.load``): what a notebook user gets, and that the report's
numbers are the frame's."""

import csv
import io
import json
from pathlib import Path

import pytest

from bench.results import frame as results
from bench.results.report import load_results, summarise_rows
from bench.results.tables import render_csv

PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "cifar-cpu"


@pytest.mark.skipif(not (PUBLISHED / "records.jsonl").is_file(), reason="needs the published CIFAR results")
def test_the_frame_of_the_published_results_gives_the_reports_numbers():
    df = results.load(PUBLISHED)
    published = results.read(PUBLISHED)
    assert len(df) == len(published.records)
    for column in (
        "cell_id",
        "strategy",
        "seed",
        "metrics.test_top1_pct",
        "compute.target_total_s",
        "provenance.device_name",
        "candidate",
        "grid_point",
    ):
        assert column in df.columns, column
    ok = df[(df["status"] == "ok") & df["selected"]]
    means = ok.groupby(["source", "target", "backbone", "strategy"])["metrics.test_top1_pct"].mean()
    rows = summarise_rows(published.records, published.plan)
    assert len(rows) == len(means)
    for row in rows:
        assert row.top1.mean == pytest.approx(means[(row.source, row.target, row.backbone, row.strategy)], abs=1e-9)
    # the CSV holds the same means
    csv_means = [float(r["test_top1_mean"]) for r in csv.DictReader(io.StringIO(render_csv(rows)))]
    assert csv_means == pytest.approx([row.top1.mean for row in rows])


def test_nested_fields_become_columns_and_candidates_are_named(tmp_path):
    records = [
        {
            "schema_version": 1,
            "cell_id": "a/seed0",
            "source": "s",
            "target": "t",
            "backbone": "b",
            "strategy": "alpha_mix",
            "seed": 0,
            "status": "ok",
            "config_hash": "k1",
            "alpha": 0.5,
            "selected": True,
            "grid_point": None,
            "metrics": {"test_top1_pct": 50.0},
            "compute": {"target_total_s": 2.0},
            "provenance": {"device_name": "cpu"},
        },
        {
            "schema_version": 1,
            "cell_id": "b/seed0",
            "source": "s",
            "target": "t",
            "backbone": "b",
            "strategy": "l2_sp",
            "seed": 0,
            "status": "ok",
            "config_hash": "k2",
            "alpha": None,
            "selected": False,
            "grid_point": {"sp_weight": 0.01},
            "metrics": {"test_top1_pct": 40.0},
            "compute": {"target_total_s": 3.0},
            "provenance": {"device_name": "cpu"},
        },
    ]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    df = results.load(tmp_path)
    assert list(df["candidate"]) == ["α=0.5", "sp_weight=0.01"]
    assert list(df["metrics.test_top1_pct"]) == [50.0, 40.0] and list(df["compute.target_total_s"]) == [2.0, 3.0]
    assert df["grid_point"].iloc[1] == {"sp_weight": 0.01} and df["grid_point"].iloc[0] is None
    assert df["grid_point.sp_weight"].iloc[1] == 0.01


def test_a_folder_without_records_is_one_line(tmp_path):
    with pytest.raises(results.ResultsError, match="no records.jsonl here"):
        results.load(tmp_path)
    with pytest.raises(results.ResultsError, match="no records.jsonl here"):
        load_results(tmp_path)  # the report reads through the same reader
