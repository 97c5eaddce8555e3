"""Shared fixtures: tiny datasets written by the tests themselves, and a tiny runnable suite."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(2)


def write_cifar10(
    root: Path, n_train_batches: int = 2, per_batch: int = 40, n_test: int = 30, python2_style: bool = True
) -> Path:
    """A CIFAR-10 folder in torchvision's layout. ``python2_style`` writes byte-string keys, as the originals have."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def key(k):
        return k.encode() if python2_style else k

    def batch(n):
        labels = [int(i % 10) for i in range(n)]
        # class-dependent brightness, so a model can learn something from these
        data = (rng.integers(0, 60, (n, 3072)) + np.array(labels)[:, None] * 19).astype(np.uint8)
        return {key("data"): data, key("labels"): labels, key("filenames"): [f"img{i}.png" for i in range(n)]}

    for i in range(1, n_train_batches + 1):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_batch), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test), protocol=2))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({key("label_names"): names}, protocol=2))
    return folder


@pytest.fixture
def cifar_root(tmp_path) -> Path:
    write_cifar10(tmp_path)
    return tmp_path


def tiny_suite(**overrides) -> dict:
    """A digits suite that trains in seconds; tests override parts of it."""
    suite = {
        "schema_version": 1,
        "name": "tiny",
        "source": {"dataset": "digits", "classes": [0, 1, 2, 3, 4], "per_class": 30, "epochs": 2},
        "targets": [
            {
                "dataset": "digits",
                "classes": [5, 6, 7, 8, 9],
                "per_class": 24,
                "val_fraction": 0.25,
                "test_per_class": 10,
            }
        ],
        "backbones": ["resnet8"],
        "strategies": {
            "scratch": {"epochs": 2},
            "linear_probe": {"epochs": 3},
            "full_finetune": {"epochs": 2},
            "alpha_mix": {"alphas": [0, 0.5, 1]},
        },
        "train": {"batch_size": 16, "lr": 0.05},
        "runtime": {"device": "cpu", "eval_batch_size": 64},
        "seeds": [0],
    }
    suite.update(overrides)
    return suite


def make_runner(tmp_path: Path, suite, runtime=None, data_root=None, **kwargs):
    """(runner, cells) of ``suite`` (a raw mapping or a parsed Suite) writing records to ``tmp_path/out`` and
    models to ``tmp_path/cache``; data from ``data_root`` (default ``tmp_path/data``), on the CPU by default."""
    from bench.pipeline.runner import Runner
    from bench.pipeline.suite import expand_cells, parse_suite
    from transfer_core.runtime import resolve_runtime

    suite = parse_suite(suite) if isinstance(suite, dict) else suite
    runner = Runner(
        suite,
        Path(data_root) if data_root is not None else tmp_path / "data",
        tmp_path / "out",
        tmp_path / "cache",
        runtime or resolve_runtime("cpu"),
        log=kwargs.pop("log", lambda m: None),
        **kwargs,
    )
    return runner, expand_cells(suite)


def run_suite(tmp_path: Path, suite, **kwargs):
    """(runner, records) of every cell of ``suite`` run by ``make_runner``'s runner, none failed."""
    runner, cells = make_runner(tmp_path, suite, **kwargs)
    summary = runner.run(cells)
    assert not summary.failed, summary.failed
    return runner, runner.store.read()


def plan_of(tmp_path: Path, suite, **kwargs):
    """The plan of every cell of ``suite``: nothing built."""
    runner, cells = make_runner(tmp_path, suite, **kwargs)
    return runner.plan(cells)


def run_with_executor(folder: Path, suite, executor_name: str, data_root=None, estimates_only=False, **options):
    """(runner, summary, log lines) of ``suite`` run through executor ``executor_name`` (with ``options``), on the
    CPU, none failed; the executor is closed after."""
    from bench.pipeline.executors import create_executor
    from transfer_core.runtime import resolve_runtime

    messages = []
    executor = create_executor(executor_name, messages.append, **options)
    runtime = resolve_runtime(
        "cpu", eval_batch_size=suite.runtime.eval_batch_size, cuda_available=executor.cuda_available()
    )
    runner, cells = make_runner(folder, suite, runtime, data_root, log=messages.append, executor=executor)
    try:
        summary = runner.run(cells, estimates_only=estimates_only)
    finally:
        executor.close()
    assert not summary.failed, messages
    return runner, summary, messages


def read_records(folder: Path, name: str = "records.jsonl") -> list[dict]:
    """The records a run wrote to ``folder`` (one JSON object a line), as a reader of the folder sees them."""
    import json

    return [json.loads(line) for line in (Path(folder) / name).read_text().splitlines()]


def cell_numbers(records: list[dict]) -> dict:
    """What two executors running one suite must agree on, per cell and alpha: status, metrics, selection, images."""
    return {
        (r["cell_id"], r["alpha"]): (r["status"], r["metrics"], r["selected"], r["compute"]["target_images"])
        for r in records
    }
