"""scripts/gpu_check.sh must keep working on machines without a GPU: its --cpu-smoke mode runs here."""

import json
import os
import subprocess

import pytest
from conftest import REPO

from transfer_core.host_memory import retain_freed_host_memory


@pytest.mark.slow
def test_gpu_check_cpu_smoke(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--cpu-smoke", "--data-root", str(tmp_path / "none")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "datapath.json").read_text())["rows"]
    assert [r["backend"] for r in rows] == ["baseline", "device"]
    assert all(r["img_per_s"] > 0 and 0 <= r["step"]["data_share_pct"] <= 100 for r in rows)
    assert "Produced by `python -m bench datapath" in (tmp_path / "datapath.md").read_text()
    matrix = json.loads((tmp_path / "runtime_matrix.json").read_text())["matrix"]
    assert [r["config"] for r in matrix] == [
        "eager fp32",
        "fp32 + channels_last, system host memory",
        "fp32 + channels_last",
        "bf16 + channels_last",
        "bf16 + channels_last, a process per core",  # the CPU default's workers, on this 2-core machine
    ]
    kept = "retain" if retain_freed_host_memory() else "system"  # what this machine's C library allows
    assert [r["host_memory"] for r in matrix] == [kept, "system", kept, kept, kept]  # each in a process of its own
    assert all(r["img_per_s"] > 0 and r["mfu_pct"] > 0 for r in matrix)  # a CPU has a measured peak too
    assert [r["mfu_precision"] for r in matrix] == ["fp32", "fp32", "fp32", "bf16", "bf16"]
    overhead = json.loads((tmp_path / "harness_overhead.json").read_text())
    assert overhead["step"]["ratio"] > 0 and overhead["probe"]["epochs"] == 3
    assert abs(overhead["probe"]["top1_difference_pp"]) <= 0.5  # the same probe, computed two ways
    assert '"status": "ok"' in (tmp_path / "training-run" / "records.jsonl").read_text()
    executors = json.loads((tmp_path / "executors.json").read_text())  # CI installs Ray, so this part runs
    assert executors["cells"] == 1 and executors["local_wall_s"] > 0 and executors["ray_wall_s"] > 0


@pytest.mark.slow
def test_datapath_refuses_a_dataset_smaller_than_one_batch(tmp_path):
    result = subprocess.run(
        [
            "python",
            "-m",
            "bench",
            "datapath",
            "--dataset",
            "digits",
            "--per-class",
            "5",
            "--batch-size",
            "256",
            "--backends",
            "device",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "50 images make no full batch of 256" in result.stderr and "Traceback" not in result.stderr
