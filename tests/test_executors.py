"""The executor seam: executors declare their own options and arguments, and a third executor (submitit, run
here with its local cluster: one process per job) builds the local executor's numbers."""

import pytest
import yaml
from conftest import cell_numbers, run_with_executor, tiny_suite

from bench.cli import main
from bench.pipeline.executors import EXECUTORS, Executor, create_executor
from bench.pipeline.suite import parse_suite


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_suite(strategies={"scratch": {"epochs": 1}})))
    return path


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--ray-address", "auto"], "--ray-address needs --executor ray"),
        (["--max-jobs", "2"], "--max-jobs needs --executor submitit"),
        (["--executor", "ray", "--max-retries", "-1"], "--max-retries: expected 0 or more, got -1"),
        (["--executor", "submitit", "--max-jobs", "0"], "--max-jobs: expected a positive number, got 0"),
        (["--executor", "submitit", "--submitit-cluster", "pbs"], "--submitit-cluster: expected slurm or local"),
        (["--executor", "nowhere"], "--executor: unknown executor 'nowhere'"),
        (["--threads", "0"], "--threads: expected a positive number, got 0"),
        (["--workers", "0"], "--workers: expected a positive number, got 0"),  # under the default, auto
        (["--executor", "local", "--workers", "2"], "--workers needs --executor processes"),
        (["--device", "cuda", "--workers", "2"], "--workers: --executor auto builds in this process here"),
    ],
)
def test_an_executors_argument_is_checked_in_one_line_before_anything_runs(suite_file, arguments, message, capsys):
    assert main(["run", str(suite_file), "--dry-run", "--out", str(suite_file.parent / "out"), *arguments]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bench: error: {message}"), lines
    assert not (suite_file.parent / "out").exists()


def test_workers_under_the_default_executor_are_taken_on_a_cpu(suite_file, capsys, monkeypatch):
    import bench.pipeline.executors.processes as processes

    monkeypatch.setattr(processes, "usable_cores", lambda: 2)  # whatever this machine has: auto picks processes
    out = suite_file.parent / "out"
    assert main(["run", str(suite_file), "--dry-run", "--out", str(out), "--workers", "1", "--device", "cpu"]) == 0


def test_every_executor_declares_options_the_command_line_can_set():
    """Each registered executor's arguments set fields of its own Options, and nothing else."""
    import argparse

    for name in EXECUTORS.names():
        cls = EXECUTORS.get(name)
        assert issubclass(cls.Options, Executor.Options), name
        group = argparse.ArgumentParser().add_argument_group(name)
        cls.add_arguments(group)
        fields = {f for f in cls.Options.__dataclass_fields__}
        assert {action.dest for action in group._group_actions} <= fields, name
        assert all(action.default is None for action in group._group_actions), name
    with pytest.raises(ValueError, match="executor local has no option address"):
        create_executor("local", print, address="auto")


@pytest.mark.slow
def test_submitit_jobs_give_the_local_executors_cells_and_numbers(tmp_path):
    pytest.importorskip("submitit")  # CI installs it with the [test] extra and fails without it (.ci/run)
    raw = tiny_suite(strategies={"scratch": {"epochs": 1}, "linear_probe": {"epochs": 2}})
    suite = parse_suite(raw)
    local = run_with_executor(tmp_path / "local", suite, "local", data_root=tmp_path, threads=1)[0].store.read()
    runner, _, messages = run_with_executor(
        tmp_path / "jobs", suite, "submitit", data_root=tmp_path, cluster="local", max_jobs=2
    )
    as_jobs = runner.store.read()
    assert any("submitit: local jobs, at most 2 at once" in m for m in messages)
    assert len(as_jobs) == len(local) == 2
    assert cell_numbers(as_jobs) == cell_numbers(local)
    folder = next((tmp_path / "jobs" / "cache").glob("submitit-*"))
    assert folder.stat().st_mode & 0o777 == 0o700  # its pickles are code: the user's alone
    logs = list(folder.glob("*_log.out"))
    assert len(logs) >= 4  # the cache check, the source, two fits and two evaluations ran as jobs
