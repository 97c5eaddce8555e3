"""The Ray executor: the same cells and the same numbers as the local executor, on a local instance and on
a two-node cluster in one machine, and a worker killed mid-task retried without losing or doubling a record."""

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import REPO, cell_numbers, read_records, run_with_executor, tiny_suite

from bench.pipeline.executors.remote import shared_folder_problems
from bench.pipeline.suite import load_suite, parse_suite

ray = pytest.importorskip("ray")  # CI installs the [ray] extra and fails without it (.ci/run)


def run(suite, tmp_path: Path, executor: str, **options):
    """Runs every cell of ``suite`` in this process's driver; the records, and what the runner logged."""
    runner, _, messages = run_with_executor(tmp_path, suite, executor, data_root=tmp_path, **options)
    return runner.store.read(), messages


@pytest.fixture
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")  # never another run's
    yield
    ray.shutdown()


@pytest.mark.slow
def test_quick_suite_on_ray_gives_the_local_executors_cells_and_numbers(tmp_path, local_ray):
    suite = load_suite(str(REPO / "suites" / "quick.yaml"))
    # one thread per artifact in both: float sums in the same order, so CPU results can be bitwise equal
    local, _ = run(suite, tmp_path / "local", "local", threads=1)
    on_ray, messages = run(suite, tmp_path / "ray", "ray")
    assert any("ray: 1 node(s), 2 CPUs" in m for m in messages)
    assert len(local) == len(on_ray) == 3 * (5 + 5)  # 5 strategies and 5 alphas, 3 seeds
    assert cell_numbers(on_ray) == cell_numbers(local)
    assert {r["config_hash"] for r in on_ray} == {r["config_hash"] for r in local}


@pytest.mark.slow
def test_a_pretrained_source_is_loaded_on_the_driver_so_no_node_needs_its_file(tmp_path, local_ray):
    import torch

    from transfer_core.backbones import create_backbone

    torch.manual_seed(0)
    checkpoint = tmp_path / "lab.pt"
    torch.save(create_backbone("resnet8", 5, 1).state_dict(), checkpoint)
    raw = tiny_suite(source={"checkpoint": str(checkpoint), "backbone": "resnet8"}, strategies={"linear_probe": {}})
    raw.pop("backbones")
    records, messages = run(parse_suite(raw), tmp_path, "ray")
    assert [r["status"] for r in records] == ["ok"] and records[0]["source_model"]["weights"]["file"] == str(checkpoint)
    assert any(m.startswith("  source checkpoint:lab (pretrained): loaded ") for m in messages)  # the driver's log


@pytest.mark.slow
def test_a_two_node_cluster_runs_a_suite(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, logging_level="ERROR")
        records, messages = run(parse_suite(tiny_suite(seeds=[0, 1])), tmp_path, "ray")
        assert any("ray: 2 node(s), 2 CPUs" in m for m in messages)
        assert Counter((r["cell_id"], r["alpha"]) for r in records) == {key: 1 for key in cell_numbers(records)}
        assert len(records) == 2 * (3 + 3) and all(r["status"] == "ok" for r in records)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_a_worker_killed_mid_task_is_retried_and_every_cell_recorded_once(tmp_path):
    raw = tiny_suite(strategies={"linear_probe": {"epochs": 2}, "scratch": {"epochs": 1}})
    raw["source"]["epochs"] = 60  # seconds of training, so the kill lands mid-task
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "tiny.yaml", "--out", "out", "--executor", "ray"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed, deadline = None, time.time() + 180
    while killed is None and time.time() < deadline and process.poll() is None:
        listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        workers = [int(line.split()[0]) for line in listing.splitlines() if "ray::source digits[0-4]" in line]
        if workers:
            time.sleep(1.0)  # well inside the training
            os.kill(workers[0], signal.SIGKILL)
            killed = workers[0]
        time.sleep(0.1)
    stdout, stderr = process.communicate(timeout=600)
    assert killed is not None, f"never saw the source task's worker: {stderr[-2000:]}"
    assert process.returncode == 0, stderr[-3000:]
    # finished by another worker than the one killed: the task was started again
    finishers = re.findall(r"pid=(\d+)\)\S*\s+source digits\[0-4\]/resnet8/seed0: trained in", stderr)
    assert finishers and int(finishers[-1]) != killed, stderr[-3000:]
    records = read_records(tmp_path / "out")
    assert sorted(r["strategy"] for r in records) == ["linear_probe", "scratch"]
    assert all(r["status"] == "ok" for r in records)
    assert not list((tmp_path / "out" / "cache").rglob("*.tmp"))


@pytest.mark.slow
def test_a_worker_killed_with_no_retries_left_fails_its_cells_in_one_line_and_the_suite_goes_on(tmp_path):
    """The real Ray path for exhausted retries: ``--max-retries 0`` and the source task's worker killed once; the
    cells built from that source fail with the reason, scratch (which needs no source) still runs."""
    raw = tiny_suite(strategies={"linear_probe": {"epochs": 2}, "scratch": {"epochs": 1}})
    raw["source"]["epochs"] = 60
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "tiny.yaml", "--out", "out", "--executor", "ray", "--max-retries", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed, deadline = None, time.time() + 180
    while killed is None and time.time() < deadline and process.poll() is None:
        listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        workers = [int(line.split()[0]) for line in listing.splitlines() if "ray::source digits[0-4]" in line]
        if workers:
            time.sleep(1.0)
            os.kill(workers[0], signal.SIGKILL)
            killed = workers[0]
        time.sleep(0.1)
    stdout, stderr = process.communicate(timeout=600)
    assert killed is not None, f"never saw the source task's worker: {stderr[-2000:]}"
    assert process.returncode == 1, stderr[-3000:]  # some cells failed; the others ran
    records = {r["strategy"]: r for r in read_records(tmp_path / "out")}
    assert records["scratch"]["status"] == "ok"
    assert records["linear_probe"]["status"] == "error"
    assert "the task's worker was lost 1 time(s)" in records["linear_probe"]["error"]


def test_a_cache_that_is_not_shared_storage_is_named_with_each_nodes_problem(tmp_path):
    HERE = {"strategy/lp_ft": 1, "training": 1}
    reply = tmp_path / "reply"
    reply.write_text("token")
    answers = {
        "10.0.0.1": {"read": True, "wrote": str(reply), "code_versions": HERE, "data_root": True},
        "10.0.0.2": {
            "read": None,
            "wrote": None,
            "code_versions": HERE,
            "error": "FileNotFoundError: no such file",
            "data_root": True,
        },
        "10.0.0.3": {"read": True, "wrote": str(tmp_path / "elsewhere"), "code_versions": HERE, "data_root": True},
        "10.0.0.4": {
            "read": True,
            "wrote": str(reply),
            "code_versions": {**HERE, "strategy/lp_ft": 2},
            "data_root": True,
        },
        "10.0.0.5": {"read": True, "wrote": str(reply), "code_versions": HERE, "data_root": False},
    }
    problems = shared_folder_problems(tmp_path, answers, HERE, data_root=tmp_path)
    assert problems == [
        "node 10.0.0.2 cannot read the cache (FileNotFoundError: no such file)",
        "node 10.0.0.3 writes to the cache where this machine does not see it",
        "node 10.0.0.4 runs other code (other versions of strategy/lp_ft); install the same version on every node",
        f"node 10.0.0.5 does not see the data root {tmp_path}",
    ]
    # a data root this machine does not have either (digits need none) is nobody's problem
    assert shared_folder_problems(tmp_path, {"10.0.0.5": answers["10.0.0.5"]}, HERE, data_root=tmp_path / "none") == []


@pytest.mark.slow
@pytest.mark.parametrize("stuck", [False, True])
def test_a_task_past_its_time_limit_ends_as_timeout_and_the_suite_goes_on(tmp_path, stuck):
    """Its worker's own alarm ends it; a worker that cannot run its alarm (here: stopped, as if stuck in
    native code) is killed by the driver once the grace period is over too."""
    raw = tiny_suite(strategies={"linear_probe": {"epochs": 2}, "scratch": {"epochs": 1}})
    raw["source"]["epochs"] = 400  # far longer than the limit
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "tiny.yaml", "--out", "out", "--executor", "ray", "--cell-timeout", "4"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stopped, deadline = None, time.time() + 180
    while stuck and stopped is None and time.time() < deadline and process.poll() is None:
        listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        workers = [int(line.split()[0]) for line in listing.splitlines() if "ray::source digits[0-4]" in line]
        if workers:
            os.kill(workers[0], signal.SIGSTOP)
            stopped = workers[0]
        time.sleep(0.1)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 1, stderr[-3000:]  # cells failed: the run says so
    records = {r["strategy"]: r for r in read_records(tmp_path / "out")}
    assert records["scratch"]["status"] == "ok"  # the suite went on
    assert records["linear_probe"]["status"] == "timeout"  # its source model ran out of time
    assert "runtime.cell_timeout_s (4 s)" in records["linear_probe"]["error"]
    assert ("its worker was killed" in records["linear_probe"]["error"]) == stuck
