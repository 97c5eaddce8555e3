"""The real command line, in a subprocess, on a tiny suite: run, resume, report, and a fast data error."""

import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, read_records, tiny_suite


def bench(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_run_resume_and_report(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(tiny_suite(seeds=[0, 1])))

    first = bench("run", str(suite), "--out", "out", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    table = first.stdout
    for strategy in ("scratch", "linear_probe", "full_finetune", "alpha_mix (α="):
        assert strategy in table
    assert "digits[0-4] → digits[5-9]" in table and "± " in table  # two seeds: mean ± std
    records = read_records(tmp_path / "out")
    assert len(records) == 2 * (3 + 3) and all(r["status"] == "ok" for r in records)
    assert (tmp_path / "out" / "report.md").read_text().count("digits[0-4] → digits[5-9]") == 4
    assert list((tmp_path / "out" / "cache" / "sources").glob("*.pt"))

    second = bench("run", str(suite), "--out", "out", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "8 of 8 cells already done" in second.stderr
    assert second.stdout == table  # the same table, nothing retrained
    assert len((tmp_path / "out" / "records.jsonl").read_text().splitlines()) == len(records)

    dry = bench("run", str(suite), "--out", "out", "--dry-run", "--force", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    source_row = next(line for line in dry.stdout.splitlines() if "| source digits[0-4]/resnet8/seed0 " in line)
    assert "| cached " in source_row  # the graph: a source model found in the cache
    assert "18 artifacts: 0 models to build, 8 of 8 cells to run" in dry.stdout

    csv = bench("report", "out", "--format", "csv", cwd=tmp_path)
    assert csv.returncode == 0 and len(csv.stdout.strip().splitlines()) == 1 + 4


@pytest.mark.slow
def test_missing_data_fails_fast_with_one_line_and_writes_nothing(tmp_path):
    suite = tmp_path / "cifar.yaml"
    raw = tiny_suite(
        source={"dataset": "cifar10", "epochs": 1},
        targets=[{"dataset": "cifar100"}],
        data={"root": "nowhere", "download": False},
    )
    suite.write_text(yaml.safe_dump(raw))
    result = bench("run", str(suite), "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("bench: error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and "nowhere/cifar-10-batches-py" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_failed_cell_makes_the_run_exit_1_and_is_recorded(tmp_path):
    suite = tmp_path / "diverges.yaml"
    suite.write_text(yaml.safe_dump(tiny_suite(strategies={"scratch": {"epochs": 1, "lr": 1.0e12}})))
    result = bench("run", str(suite), "--out", "out", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "1 failed" in result.stderr and "(+1 failed: diverged)" in result.stdout
    (record,) = read_records(tmp_path / "out")
    assert record["status"] == "diverged"


@pytest.mark.slow
def test_the_image_folder_example_suite(tmp_path):
    """suites/folder.yaml as its header says to run it: export two PNG folders, then run (shortened)."""
    for classes, name in (("0,1,2,3,4", "digits-0to4"), ("5,6,7,8,9", "digits-5to9")):
        exported = bench("export", "digits", f"data/{name}", "--classes", classes, "--format", "png", cwd=tmp_path)
        assert exported.returncode == 0, exported.stderr
        assert "train and" in exported.stdout
    raw = yaml.safe_load((REPO / "suites" / "folder.yaml").read_text())
    raw["source"]["epochs"] = 2
    raw["strategies"] = {"scratch": {"epochs": 2}, "linear_probe": {"epochs": 5}}
    raw["seeds"] = [0]
    suite = tmp_path / "folder.yaml"
    suite.write_text(yaml.safe_dump(raw))
    result = bench("run", str(suite), "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "digits-0to4 → digits-5to9" in result.stdout
    records = read_records(tmp_path / "out")
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert all(r["provenance"]["data"]["target"]["resolution"] == 16 for r in records)
    linear_probe = next(r for r in records if r["strategy"] == "linear_probe")
    assert linear_probe["metrics"]["test_top1_pct"] > 50  # five classes: chance is 20%
