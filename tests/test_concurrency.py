"""Many processes, one store: runs at once on one results folder and cache build each artifact once and
record each cell once; a run killed in the middle of a build leaves a claim the next run takes over."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml
from conftest import REPO, read_records, tiny_suite

BUILT = re.compile(r"^\[\d+\] (source|fitted|evaluation|estimate) (.+) \([0-9a-f]{12}\)$", re.MULTILINE)


def start(suite_path, out, log_path, command="run"):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # a thread each: two runs of two threads on two cores spend their time contending for them
    return subprocess.Popen(
        [sys.executable, "-m", "bench", command, str(suite_path), "--out", str(out), "--threads", "1"],
        cwd=suite_path.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log_path, "w"),
    )


def built(*logs):
    """(kind, name) of every artifact the runs whose stderr is in ``logs`` started building."""
    return [match for log in logs for match in BUILT.findall(log.read_text())]


def records_per_cell(out):
    return Counter((r["cell_id"], r["alpha"]) for r in read_records(out))


@pytest.mark.slow
def test_two_runs_at_once_build_each_artifact_once_and_record_each_cell_once(tmp_path):
    raw = tiny_suite(seeds=[0, 1])
    raw["source"]["epochs"] = 8
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(raw))
    runs = [start(suite, tmp_path / "out", tmp_path / f"run{i}.log") for i in range(2)]
    assert [run.wait(timeout=600) for run in runs] == [0, 0], (tmp_path / "run0.log").read_text()[-2000:]
    names = built(tmp_path / "run0.log", tmp_path / "run1.log")
    # 2 seeds: 2 source models, 4 fitted models (alpha-mix's LP-FT among them) and 4 evaluations each
    assert Counter(kind for kind, _ in names) == {"source": 2, "fitted": 8, "evaluation": 8}
    assert len(set(names)) == len(names), f"built twice: {[n for n, c in Counter(names).items() if c > 1]}"
    counts = records_per_cell(tmp_path / "out")
    assert len(counts) == 2 * (3 + 3) and set(counts.values()) == {1}


@pytest.mark.slow
def test_a_run_killed_while_building_leaves_a_claim_the_next_run_takes_over(tmp_path):
    raw = tiny_suite(strategies={"linear_probe": {"epochs": 2}, "scratch": {"epochs": 1}})
    raw["source"]["epochs"] = 80  # seconds of training, so the kill lands mid-build
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(raw))
    first = start(suite, tmp_path / "out", tmp_path / "first.log")
    deadline = time.time() + 120
    while ("fitted", "linear_probe digits[0-4]->digits[5-9]/resnet8/seed0") not in built(tmp_path / "first.log"):
        if ("source", "source digits[0-4]/resnet8/seed0") in built(tmp_path / "first.log"):
            time.sleep(1.0)  # inside the source model's training, its claim held
            break
        assert time.time() < deadline and first.poll() is None, (tmp_path / "first.log").read_text()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    # the claim it held: its lock file stays (filelock leaves lock files), but the kernel let go of the lock with
    # the process, so it can be taken at once
    from filelock import FileLock

    (lock,) = (tmp_path / "out" / "cache" / "sources").glob("*.lock")
    with FileLock(str(lock), timeout=0):
        pass
    assert not list((tmp_path / "out" / "cache" / "sources").glob("*.pt"))  # and no model

    second = start(suite, tmp_path / "out", tmp_path / "second.log")
    assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-2000:]
    assert ("source", "source digits[0-4]/resnet8/seed0") in built(tmp_path / "second.log")
    counts = records_per_cell(tmp_path / "out")
    assert set(counts) == {
        (c, None)
        for c in (
            "digits[0-4]->digits[5-9]/resnet8/scratch/seed0",
            "digits[0-4]->digits[5-9]/resnet8/linear_probe/seed0",
        )
    }
    assert set(counts.values()) == {1}
    assert not list((tmp_path / "out" / "cache").rglob("*.tmp"))


@pytest.mark.slow
def test_runs_killed_at_random_moments_lose_and_double_nothing(tmp_path):
    """SIGKILL at seeded random moments, several times over: after each kill every model in the cache is whole
    (its recorded hash matches, or it is absent) and no cell has two records; a last run finishes the suite
    with every cell recorded exactly once."""
    import random

    from transfer_core.cache import ModelCache

    raw = tiny_suite(seeds=[0, 1, 2, 3])
    raw["source"]["epochs"] = 25  # seconds of work in all, so each kill lands somewhere inside it
    raw["strategies"]["scratch"]["epochs"] = raw["strategies"]["full_finetune"]["epochs"] = 15
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(raw))
    out, rng = tmp_path / "out", random.Random(0)
    cache = ModelCache(out / "cache")

    def check():
        for model in (out / "cache").rglob("*.pt"):  # under its real name: whole, never half-written
            assert cache.load(model.parent.name, model.stem) is not None, model
        if (out / "records.jsonl").is_file():
            counts = records_per_cell(out)
            assert max(counts.values()) == 1, counts

    for trial in range(4):
        log = tmp_path / f"trial{trial}.log"
        run = start(suite, out, log)
        deadline = time.time() + 120
        while "] " not in log.read_text() and run.poll() is None and time.time() < deadline:
            time.sleep(0.05)  # until it starts building (start-up and data take a few seconds)
        time.sleep(rng.uniform(0.0, 2.5))  # then anywhere in its work: training, writing a model, a record
        run.send_signal(signal.SIGKILL)
        run.wait()
        check()
    final = start(suite, out, tmp_path / "final.log")
    assert final.wait(timeout=600) == 0, (tmp_path / "final.log").read_text()[-3000:]
    check()
    assert len(records_per_cell(out)) == 4 * (3 + 3)  # 3 strategies and 3 alphas, 4 seeds


ZOO_SOURCES = [
    {"dataset": "digits", "classes": [0, 1, 2, 3, 4], "per_class": 30, "epochs": 6, "name": "five"},
    {"dataset": "digits", "classes": [0, 1, 2], "per_class": 30, "epochs": 6, "name": "three"},
]


def estimates_per_record(out):
    lines = (out / "estimates.jsonl").read_text().splitlines()
    return Counter((r["cell_id"], r["estimator"]) for r in map(json.loads, lines))


@pytest.mark.slow
def test_two_rank_runs_at_once_estimate_each_source_once_and_record_each_estimate_once(tmp_path):
    raw = tiny_suite(source=ZOO_SOURCES, seeds=[0, 1], estimators=["logme", "leep", "knn"])
    suite = tmp_path / "zoo.yaml"
    suite.write_text(yaml.safe_dump(raw))
    runs = [start(suite, tmp_path / "out", tmp_path / f"rank{i}.log", command="rank") for i in range(2)]
    assert [run.wait(timeout=600) for run in runs] == [0, 0], (tmp_path / "rank0.log").read_text()[-2000:]
    names = built(tmp_path / "rank0.log", tmp_path / "rank1.log")
    assert Counter(kind for kind, _ in names) == {"source": 4, "estimate": 4}  # 2 sources x 2 seeds, once each
    assert len(set(names)) == len(names), f"built twice: {[n for n, c in Counter(names).items() if c > 1]}"
    counts = estimates_per_record(tmp_path / "out")
    assert len(counts) == 4 * 3 and set(counts.values()) == {1}  # (source, seed) x estimator, once each


@pytest.mark.slow
def test_rank_runs_killed_at_random_moments_lose_and_double_no_estimate(tmp_path):
    import random

    raw = tiny_suite(source=ZOO_SOURCES, seeds=[0, 1, 2], estimators=["logme", "hscore", "knn"])
    suite = tmp_path / "zoo.yaml"
    suite.write_text(yaml.safe_dump(raw))
    out, rng = tmp_path / "out", random.Random(1)
    for trial in range(3):
        log = tmp_path / f"trial{trial}.log"
        run = start(suite, out, log, command="rank")
        deadline = time.time() + 120
        while "] " not in log.read_text() and run.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 2.0))  # a source training, its features, an estimate, a record being written
        run.send_signal(signal.SIGKILL)
        run.wait()
        if (out / "estimates.jsonl").is_file():
            assert max(estimates_per_record(out).values()) == 1
    final = start(suite, out, tmp_path / "final.log", command="rank")
    assert final.wait(timeout=600) == 0, (tmp_path / "final.log").read_text()[-3000:]
    counts = estimates_per_record(out)
    assert len(counts) == 2 * 3 * 3 and set(counts.values()) == {1}
    records = [json.loads(line) for line in (out / "estimates.jsonl").read_text().splitlines()]
    assert all(r["status"] == "ok" for r in records)
