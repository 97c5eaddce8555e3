"""The processes executor: the local executor's cells and numbers from worker processes building at once, a
worker killed mid-task failing only what it was building (a rerun builds it), a stuck one killed past the time
limit, and what ``--executor auto`` picks."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, cell_numbers, read_records, run_with_executor, tiny_suite

from bench.pipeline.suite import parse_suite


def test_worker_processes_give_the_local_executors_cells_and_numbers(tmp_path):
    suite = parse_suite(tiny_suite(strategies={"linear_probe": {}, "full_finetune": {"epochs": 1}, "scratch": {}}))
    # one thread per artifact in both: float sums in the same order, so CPU results can be bitwise equal
    local, _, _ = run_with_executor(tmp_path / "local", suite, "local", data_root=tmp_path, threads=1)
    workers, _, messages = run_with_executor(tmp_path / "workers", suite, "processes", data_root=tmp_path, workers=2)
    assert any("processes: 2 worker(s) of 1 thread(s) each" in m for m in messages)
    assert len(workers.store.read()) == len(local.store.read()) == 3
    assert cell_numbers(workers.store.read()) == cell_numbers(local.store.read())
    assert {r["config_hash"] for r in workers.store.read()} == {r["config_hash"] for r in local.store.read()}
    assert all("(1 thread)" in r["provenance"]["device_name"] for r in workers.store.read())
    # two at once: the source model and the scratch training both start before either is built
    started = [i for i, m in enumerate(messages) if m.startswith(("[1] ", "[2] "))]
    first_built = min(i for i, m in enumerate(messages) if ": built in " in m)
    assert len(started) == 2 and max(started) < first_built, messages


def test_a_worker_trains_on_its_one_thread_whatever_data_workers_its_artifact_reserves(tmp_path):
    """An image folder's artifacts reserve CPUs for their data workers too (what Ray is asked for); a worker
    process still trains on its own threads."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "f" / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "f" / name / f"{i}.png")
    raw = tiny_suite(
        targets=[{"dataset": "image_folder", "path": str(tmp_path / "f"), "resolution": 16}],
        strategies={"scratch": {"epochs": 1, "batch_size": 4}},
    )
    raw["runtime"]["workers"] = 2
    runner, _, _ = run_with_executor(tmp_path / "out", parse_suite(raw), "processes", data_root=tmp_path, workers=1)
    (record,) = runner.store.read()
    assert record["status"] == "ok" and record["provenance"]["device_name"].endswith("(1 thread)"), record


def _start(tmp_path: Path, raw: dict, *arguments: str) -> tuple[subprocess.Popen, Path]:
    """``bench run`` of ``raw`` under the processes executor, its standard error in a file read while it runs."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    stderr = tmp_path / "stderr.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "tiny.yaml", "--out", "out", "--executor", "processes", *arguments],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=stderr.open("w"),
    )
    return process, stderr


def _worker_training_the_source(process: subprocess.Popen, stderr: Path) -> int:
    """The pid of the worker that says it is training the source model (it prefixes its lines with it)."""
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        found = re.search(r"\(worker pid=(\d+)\) +source digits\[0-4\]/resnet8/seed0: training", stderr.read_text())
        if found:
            return int(found.group(1))
        time.sleep(0.1)
    raise AssertionError(f"never saw a worker train the source: {stderr.read_text()[-2000:]}")


@pytest.mark.slow
def test_a_worker_killed_mid_task_fails_what_it_built_the_suite_goes_on_and_a_rerun_builds_it(tmp_path):
    raw = tiny_suite(strategies={"linear_probe": {"epochs": 2}, "scratch": {"epochs": 1}})
    raw["source"]["epochs"] = 60  # seconds of training, so the kill lands mid-task
    process, stderr = _start(tmp_path, raw)
    worker = _worker_training_the_source(process, stderr)
    time.sleep(1.0)  # well inside the training
    os.kill(worker, signal.SIGKILL)
    assert process.wait(timeout=600) == 1, stderr.read_text()[-3000:]  # cells failed: the run says so
    records = {r["strategy"]: r for r in read_records(tmp_path / "out")}
    assert records["scratch"]["status"] == "ok"  # the other worker's cell, and a fresh worker's, went on
    assert records["linear_probe"]["status"] == "error"
    assert (
        "its worker process was killed (SIGKILL, likely out of memory); a rerun builds it again"
        in (records["linear_probe"]["error"])
    )
    assert not list((tmp_path / "out" / "cache").rglob("*.tmp"))
    process, stderr = _start(tmp_path, raw)
    assert process.wait(timeout=600) == 0, stderr.read_text()[-3000:]
    statuses = [(r["strategy"], r["status"]) for r in read_records(tmp_path / "out")]
    assert sorted(statuses) == [("linear_probe", "error"), ("linear_probe", "ok"), ("scratch", "ok")]


@pytest.mark.slow
@pytest.mark.parametrize("stuck", [False, True])
def test_a_task_past_its_time_limit_ends_as_timeout_and_the_suite_goes_on(tmp_path, stuck):
    """Its worker's own alarm ends it; a worker that cannot run its alarm (here: stopped, as if stuck in native
    code) is killed by the driver once the grace period is over, and a fresh worker takes its place."""
    raw = tiny_suite(strategies={"linear_probe": {"epochs": 2}, "scratch": {"epochs": 1}})
    raw["source"]["epochs"] = 400  # far longer than the limit
    process, stderr = _start(tmp_path, raw, "--cell-timeout", "4", "--workers", "1")
    if stuck:
        os.kill(_worker_training_the_source(process, stderr), signal.SIGSTOP)
    assert process.wait(timeout=600) == 1, stderr.read_text()[-3000:]
    records = {r["strategy"]: r for r in read_records(tmp_path / "out")}
    assert records["scratch"]["status"] == "ok"  # the suite went on, with one worker: a fresh one when stuck
    assert records["linear_probe"]["status"] == "timeout"  # its source model ran out of time
    assert "runtime.cell_timeout_s (4 s)" in records["linear_probe"]["error"]
    assert ("its worker was killed" in records["linear_probe"]["error"]) == stuck


@pytest.mark.parametrize(
    "device, cuda, cores, threads, torchrun, expected",
    [
        ("auto", False, 2, None, False, "processes"),  # this machine: one worker per core
        ("cpu", True, 16, None, False, "processes"),  # asked for the CPU on a GPU machine
        ("auto", True, 16, None, False, "local"),  # a GPU: one process drives it
        ("cuda", False, 16, None, False, "local"),
        ("auto", False, 1, None, False, "local"),  # one core: nothing to share it with
        ("auto", False, 4, 4, False, "local"),  # --threads taking every core: one artifact at a time
        ("auto", False, 4, 2, False, "processes"),
        ("auto", False, 16, None, True, "local"),  # torchrun's ranks build each artifact together
    ],
)
def test_auto_picks_worker_processes_where_a_run_has_cpu_cores_to_share(
    monkeypatch, device, cuda, cores, threads, torchrun, expected
):
    import torch

    import bench.pipeline.executors.processes as processes
    from bench.commands.run import automatic_executor

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(processes, "usable_cores", lambda: cores)
    assert automatic_executor(device, threads, torchrun) == expected


def test_auto_builds_a_run_of_few_models_in_this_process_and_one_of_many_in_workers(tmp_path):
    from conftest import plan_of

    from bench.pipeline.executors import create_executor
    from bench.pipeline.executors.auto import MIN_MODELS_FOR_WORKERS, models_to_build
    from bench.pipeline.executors.local import LocalExecutor
    from bench.pipeline.executors.processes import ProcessesExecutor

    few = parse_suite(tiny_suite(strategies={"linear_probe": {}, "full_finetune": {"epochs": 1}}))
    runner, _, messages = run_with_executor(tmp_path / "few", few, "auto", data_root=tmp_path)
    assert any("auto: 3 model(s) to build" in m for m in messages), messages  # a source, a probe, a fine-tune
    assert not any(m.startswith(("processes:", "(worker pid=")) for m in messages)
    assert all("(1 thread)" not in r["provenance"]["device_name"] for r in runner.store.read())  # this process's
    # given --workers, workers whatever the run's size
    _, _, messages = run_with_executor(tmp_path / "asked", few, "auto", data_root=tmp_path, workers=2)
    assert any(m.startswith("processes: 2 worker(s)") for m in messages), messages

    many = tiny_suite(seeds=[0, 1])  # 2 sources, and scratch, probe, fine-tune and alpha-mix for each seed
    plan = plan_of(tmp_path / "many", many)
    assert models_to_build(list(plan.artifacts.values())) == 10 >= MIN_MODELS_FOR_WORKERS
    chooser = create_executor("auto", lambda m: None)
    for artifacts, chosen in [(plan, ProcessesExecutor), (plan_of(tmp_path / "few-plan", few), LocalExecutor)] * 2:
        chooser.will_build(list(artifacts.artifacts.values()))  # chosen afresh each time, either way
        assert isinstance(chooser.chosen, chosen) and chooser.one_at_a_time == (chosen is LocalExecutor)
    chooser.close()

    # models already in the cache are found, not built: rerunning the many cells' evaluations builds none
    run_with_executor(tmp_path / "many", parse_suite(many), "local", data_root=tmp_path)
    (tmp_path / "many" / "out" / "records.jsonl").unlink()
    _, summary, messages = run_with_executor(tmp_path / "many", parse_suite(many), "auto", data_root=tmp_path)
    assert summary.ran > 0 and any("auto: 0 model(s) to build" in m for m in messages), messages


def test_a_start_that_fails_halfway_stops_the_workers_it_started_and_says_why(tmp_path, monkeypatch):
    from conftest import make_runner

    from bench.pipeline.executors import create_executor
    from bench.pipeline.executors.processes import ProcessesExecutor

    real_new_worker = ProcessesExecutor._new_worker
    started = []

    def second_fails(self):
        if started:
            raise OSError(24, "Too many open files")
        started.append(real_new_worker(self))
        return started[-1]

    monkeypatch.setattr(ProcessesExecutor, "_new_worker", second_fails)
    executor = create_executor("processes", lambda m: None, workers=2)
    runner, cells = make_runner(tmp_path, tiny_suite(strategies={"scratch": {"epochs": 1}}), executor=executor)
    with pytest.raises(OSError, match="Too many open files"):
        runner.run(cells)
    executor.close()  # as the command line's runner does, after the error: nothing raised here hides it
    assert len(started) == 1 and not started[0].process.is_alive()
