"""Failures a user can cause end in one line and exit 2; writes that fail keep the results valid; time limits;
deterministic runs."""

import errno
import json
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_suite, write_cifar10

from bench.cli import main
from bench.pipeline.runner import Runner
from bench.pipeline.suite import expand_cells, parse_suite
from bench.results.records import ResultsStore
from transfer_core.runtime import resolve_runtime


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("bench: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def write_suite(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


# --- suite files and command-line arguments ---------------------------------------------------------


def test_a_suite_that_is_not_utf8_text_is_one_line(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_bytes(b"name: x\xff\xfe\n")
    err = one_line_error(capsys, main(["validate", str(suite)]))
    assert "not UTF-8 text (byte 0xff at offset 7)" in err


def test_a_suite_path_that_is_a_folder_is_one_line(tmp_path, capsys):
    err = one_line_error(capsys, main(["validate", str(tmp_path)]))
    assert "no such suite file" in err


def test_a_bad_time_limit_is_one_line(tmp_path, capsys):
    suite = write_suite(tmp_path / "s.yaml", tiny_suite())
    err = one_line_error(capsys, main(["run", str(suite), "--cell-timeout", "-1", "--out", str(tmp_path / "out")]))
    assert "--cell-timeout" in err
    raw = tiny_suite()
    raw["runtime"]["cell_timeout_s"] = 0
    err = one_line_error(capsys, main(["validate", str(write_suite(tmp_path / "t.yaml", raw))]))
    assert "runtime.cell_timeout_s: 0.0 is outside (0, inf]" in err


# --- data files ------------------------------------------------------------------------------------


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize(
    "content, expected",
    [
        (pickle.dumps({"data": RunsCode()}), "refusing to load posix.system"),
        (b"\x80\x02}q\x00(X", "not a readable CIFAR file"),  # a pickle cut short
        (b"plain text, not a pickle", "not a readable CIFAR file"),
        (pickle.dumps([1, 2, 3], protocol=2), "expected a dict, found list"),
        (pickle.dumps({"data": "text", "labels": [0]}, protocol=2), "CIFAR data or labels of the wrong type"),
    ],
)
def test_a_cifar_file_that_cannot_be_read_stops_the_run_before_anything_is_written(tmp_path, capsys, content, expected):
    write_cifar10(tmp_path / "data")
    (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1").write_bytes(content)
    raw = tiny_suite(
        source={"dataset": "cifar10", "epochs": 1},
        targets=[{"dataset": "cifar10", "classes": [0, 1]}],
        strategies={"scratch": {"epochs": 1}},
    )
    suite = write_suite(tmp_path / "s.yaml", raw)
    out = tmp_path / "out"
    err = one_line_error(capsys, main(["run", str(suite), "--data-root", str(tmp_path / "data"), "--out", str(out)]))
    assert "cifar-10-batches-py" in err and expected in err
    assert not out.exists()


@pytest.mark.parametrize(
    "arrays, expected",
    [
        (None, "not a readable .npz of arrays"),
        (
            {"x": np.zeros((10, 8, 8), np.uint8), "y": np.array(["a"] * 10)},
            "y must be a 1-d array of integer class ids",
        ),
        ({"x": np.zeros((10, 8, 8), np.float32), "y": np.zeros(10, np.int64)}, "x must be uint8"),
        ({"x": np.array([{"a": 1}] * 10, dtype=object), "y": np.zeros(10, np.int64)}, "not a readable .npz of arrays"),
    ],
)
def test_an_npz_that_cannot_be_read_is_one_line(tmp_path, capsys, arrays, expected):
    path = tmp_path / "data" / "d.npz"
    path.parent.mkdir()
    if arrays is None:
        path.write_bytes(b"PK\x03\x04 truncated zip")
    else:
        np.savez(path, **arrays)
    raw = tiny_suite(targets=[{"dataset": "npz", "path": "d.npz"}], strategies={"scratch": {"epochs": 1}})
    suite = write_suite(tmp_path / "s.yaml", raw)
    err = one_line_error(
        capsys, main(["run", str(suite), "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    )
    assert "d.npz" in err and expected in err


# --- results folders -----------------------------------------------------------------------------------


def good_record() -> dict:
    return {
        "schema_version": 1,
        "suite": "s",
        "cell_id": "a->b/resnet8/scratch/seed0",
        "source": "a",
        "target": "b",
        "backbone": "resnet8",
        "strategy": "scratch",
        "seed": 0,
        "status": "ok",
        "config_hash": "h",
        "alpha": None,
        "selected": True,
        "metrics": {"test_top1_pct": 50.0},
        "compute": {"target_train_s": 1.0, "peak_mem_kind": "rss"},
        "provenance": {"device_name": "cpu"},
    }


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda r: [r], "expected a record (a JSON object), found list"),
        (lambda r: {**r, "schema_version": 99}, "schema_version 99: this version of bench reads 1"),
        (lambda r: {k: v for k, v in r.items() if k != "cell_id"}, "cell_id: expected a string, found None"),
        (lambda r: {**r, "seed": "zero"}, "seed: expected an integer"),
        (lambda r: {**r, "metrics": {"test_top1_pct": "high"}}, "metrics.test_top1_pct: expected a number or null"),
        (lambda r: {**r, "metrics": [1]}, "metrics: expected an object"),
        (lambda r: {**r, "metrics": {}}, "metrics.test_top1_pct: a record with status ok has its test top-1"),
        (lambda r: {**r, "alpha": True}, "alpha: expected a number or null"),
        (lambda r: {**r, "selected": "yes"}, "selected: expected true or false"),
        (lambda r: {**r, "provenance": "me"}, "provenance: expected an object"),
    ],
)
@pytest.mark.parametrize("command", ["report", "compare", "index"])
def test_a_records_file_bench_did_not_write_is_one_line(tmp_path, capsys, mutate, expected, command):
    folder = tmp_path / "results" / "run"
    folder.mkdir(parents=True)
    lines = [json.dumps(good_record()), json.dumps(mutate(good_record()))]
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n")
    argv = {
        "report": ["report", str(folder)],
        "compare": ["compare", str(folder), str(folder)],
        "index": ["index", str(tmp_path / "results")],
    }[command]
    err = one_line_error(capsys, main(argv))
    assert f"records.jsonl:2: not a record bench can read: {expected}" in err


def test_a_line_cut_by_a_crash_is_skipped_with_a_warning_and_the_rest_reported(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "records.jsonl").write_text(json.dumps(good_record()) + "\n" + '{"schema_version": 1, "cell_\n')
    assert main(["report", str(folder)]) == 0
    captured = capsys.readouterr()
    assert "records.jsonl:2: skipping a line that is not a JSON record" in captured.err
    assert "scratch" in captured.out


def test_a_plan_bench_did_not_write_is_ignored_with_a_warning(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "records.jsonl").write_text(json.dumps(good_record()) + "\n")
    (folder / "plan.json").write_text(json.dumps({"suite": "s", "cells": [{"cell_id": 3}]}))
    assert main(["report", str(folder)]) == 0
    assert "plan.json: not a plan bench wrote" in capsys.readouterr().err


# --- writes that fail ----------------------------------------------------------------------------------


def test_a_failed_append_leaves_the_records_as_they_were_and_says_so(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    store.append([good_record()])
    before = store.path.read_bytes()
    real_write = os.write

    def half_write(fd, data):  # a disk that fills up halfway through the line
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(os, "write", half_write)
    with pytest.raises(OSError) as error:
        store.append([{**good_record(), "cell_id": "second"}])
    assert "cannot append to" in str(error.value) and "records before are intact" in str(error.value)
    assert error.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert store.path.read_bytes() == before  # no partial line left behind
    store.append([{**good_record(), "cell_id": "third"}])
    assert [r["cell_id"] for r in store.read()] == ["a->b/resnet8/scratch/seed0", "third"]


def test_a_full_disk_during_a_run_is_one_line_and_a_rerun_resumes(tmp_path, capsys, monkeypatch):
    raw = tiny_suite(strategies={"scratch": {"epochs": 1}, "linear_probe": {}})
    suite = write_suite(tmp_path / "s.yaml", raw)
    out = tmp_path / "out"
    argv = ["run", str(suite), "--out", str(out)]

    def disk_full(self, records):
        raise OSError(
            errno.ENOSPC,
            f"cannot append to {self.path}: No space left on device (the records before are "
            "intact; a rerun resumes after them)",
        )

    monkeypatch.setattr(ResultsStore, "append", disk_full)
    code = main(argv)
    err = capsys.readouterr().err  # the run's progress, then the error in one line
    assert code == 2 and "Traceback" not in err
    assert (
        err.strip().splitlines()[-1].startswith("bench: error: cannot append to") and "No space left on device" in err
    )
    monkeypatch.undo()
    assert main(argv) == 0
    records = ResultsStore(out).read()
    assert sorted(r["strategy"] for r in records) == ["linear_probe", "scratch"]
    assert all(r["status"] == "ok" for r in records)


def test_a_full_disk_while_recording_estimates_is_one_line_and_a_rerun_records_them(tmp_path, capsys, monkeypatch):
    raw = tiny_suite(
        source=[
            {"dataset": "digits", "classes": [0, 1, 2, 3, 4], "per_class": 30, "epochs": 1, "name": "five"},
            {"dataset": "digits", "classes": [0, 1, 2], "per_class": 20, "epochs": 1, "name": "three"},
        ],
        estimators=["logme", "knn"],
    )
    suite = write_suite(tmp_path / "s.yaml", raw)
    out = tmp_path / "out"
    real_append = ResultsStore.append

    def estimates_disk_full(self, records):
        if self.path.name == "estimates.jsonl":
            raise OSError(errno.ENOSPC, f"cannot append to {self.path}: No space left on device")
        return real_append(self, records)

    monkeypatch.setattr(ResultsStore, "append", estimates_disk_full)
    assert main(["rank", str(suite), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("bench: error: cannot append to")
    assert not (out / "estimates.jsonl").exists()
    monkeypatch.undo()
    assert main(["rank", str(suite), "--out", str(out)]) == 0
    lines = (out / "estimates.jsonl").read_text().splitlines()
    assert sorted((r["source"], r["estimator"]) for r in map(json.loads, lines)) == [
        ("five", "knn"),
        ("five", "logme"),
        ("three", "knn"),
        ("three", "logme"),
    ]


# --- time limits -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_cell_past_its_time_limit_ends_as_timeout_the_suite_goes_on_and_a_rerun_retries_it(tmp_path, monkeypatch):
    import transfer_core.strategies.base as base

    real_train = base.train

    def hangs(*args, **kwargs):
        while True:  # Python steps, as training takes: the alarm gets in between them
            time.sleep(0.05)

    raw = tiny_suite(strategies={"linear_probe": {}, "full_finetune": {"epochs": 1}})
    # long enough for the probe and, on the rerun, the real fine-tune on a loaded machine: the hang never ends
    raw["runtime"]["cell_timeout_s"] = 5.0
    suite = parse_suite(raw)

    def runner():
        return Runner(
            suite, tmp_path / "data", tmp_path / "out", tmp_path / "cache", resolve_runtime("cpu"), log=lambda m: None
        )

    monkeypatch.setattr(base, "train", hangs)  # every fine-tune trains through it; the probe does not
    summary = runner().run(expand_cells(suite))
    records = {r["strategy"]: r for r in runner().store.read()}
    assert records["full_finetune"]["status"] == "timeout"
    assert "runtime.cell_timeout_s (5 s)" in records["full_finetune"]["error"]
    assert records["linear_probe"]["status"] == "ok"
    assert summary.failed == [records["full_finetune"]["cell_id"]]
    monkeypatch.setattr(base, "train", real_train)
    again = runner()
    assert again.run(expand_cells(suite)).ran == 1  # only the cell that timed out
    assert [r["status"] for r in again.store.read() if r["strategy"] == "full_finetune"] == ["timeout", "ok"]


# --- determinism ---------------------------------------------------------------------------------------------


def test_deterministic_runs_give_bitwise_identical_metrics_and_are_recorded(tmp_path):
    import torch

    raw = tiny_suite()
    raw["runtime"]["deterministic"] = True
    suite = parse_suite(raw)
    metrics = []
    try:
        for run in ("a", "b"):
            runtime = resolve_runtime("cpu", deterministic=True)
            runner = Runner(
                suite, tmp_path / "data", tmp_path / run, tmp_path / f"cache-{run}", runtime, log=lambda m: None
            )
            assert not runner.run(expand_cells(suite)).failed
            records = runner.store.read()
            metrics.append([(r["cell_id"], r["alpha"], r["metrics"]) for r in records])
            assert all(r["provenance"]["runtime"]["deterministic"] is True for r in records)
        assert metrics[0] == metrics[1]
        # and not only the scores: every model the two runs trained, weight for weight
        from transfer_core.cache import ModelCache

        models = [
            sorted(p.relative_to(tmp_path / f"cache-{run}") for p in (tmp_path / f"cache-{run}").rglob("*.pt"))
            for run in ("a", "b")
        ]
        assert models[0] == models[1] and len(models[0]) >= 4
        for model in models[0]:
            weights = [ModelCache(tmp_path / f"cache-{run}").load(model.parent.name, model.stem)[0] for run in "ab"]
            assert weights[0].keys() == weights[1].keys()
            assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0]), model
        assert torch.are_deterministic_algorithms_enabled()
        # deterministic algorithms are other algorithms: other keys than the default's
        plain = Runner(
            suite, tmp_path / "data", tmp_path / "c", tmp_path / "cache-c", resolve_runtime("cpu"), log=lambda m: None
        )
        assert {e.key for _, e in plain.plan(expand_cells(suite)).cells}.isdisjoint(
            {e.key for _, e in runner.plan(expand_cells(suite)).cells}
        )
    finally:
        resolve_runtime("cpu")  # the switch is process-wide: back to the default for the other tests
    assert not torch.are_deterministic_algorithms_enabled()


# --- untrusted inputs -------------------------------------------------------------------------------------------


def test_names_from_a_records_file_are_escaped_in_every_format(tmp_path):
    from bench.results.report import load_results, write_reports

    folder = tmp_path / "run"
    folder.mkdir()
    hostile = "a|b <img src=x onerror=alert(1)> [link](http://x) *em* `code` \\ & % $ # _ { } ~ ^"
    (folder / "records.jsonl").write_text(json.dumps({**good_record(), "source": hostile}) + "\n")
    write_reports(load_results(folder), "Results: <b>x</b>")
    markdown = (folder / "report.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    header_cells = table[0].count(" | ")
    assert all(line.replace("\\|", "").count(" | ") == header_cells for line in table)  # no cell split by a name
    assert "<img" not in markdown and "<b>" not in markdown and "[link](" not in markdown
    assert "a\\|b &lt;img" in markdown
    page = (folder / "report.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x" in page and "<b>x</b>" not in page
    latex = (folder / "report.tex").read_text()
    assert "a|b" in latex and "\\_" in latex and "\\%" in latex and "\\&" in latex and "\\#" in latex


def test_links_planted_in_a_results_folder_are_never_written_through(tmp_path, capsys):
    from bench.results.report import load_results, write_reports

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "records.jsonl").write_text(json.dumps(good_record()) + "\n")
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    for name in ("report.md", "report.html", "accuracy_vs_compute.png", "plan.json"):
        (folder / name).symlink_to(outside)
    write_reports(load_results(folder), "Results")
    ResultsStore(folder).write_plan("s", [])
    assert outside.read_text() == "keep me"
    assert not (folder / "report.md").is_symlink() and (folder / "report.md").read_text().startswith("# Results")
    # the records file itself: refused in one line, not appended through
    (folder / "records.jsonl").unlink()
    (folder / "records.jsonl").symlink_to(outside)
    with pytest.raises(OSError, match="is a symbolic link"):
        ResultsStore(folder).append([good_record()])
    assert outside.read_text() == "keep me"


def test_a_cached_model_whose_file_was_swapped_is_refused_and_rebuilt(tmp_path):
    import torch

    from transfer_core.cache import ModelCache

    cache = ModelCache(tmp_path)
    cache.save("models", "a", torch.nn.Linear(2, 2), {"which": "a"})
    cache.save("models", "b", torch.nn.Linear(2, 2), {"which": "b"})
    assert cache.load("models", "a")[1]["which"] == "a"
    # a valid model file, but not the one written under this key
    cache.path("models", "a").write_bytes(cache.path("models", "b").read_bytes())
    assert cache.load("models", "a") is None
    cache.path("models", "b").with_suffix(".sha256").unlink()  # no recorded hash: not trusted either
    assert cache.load("models", "b") is None

    raw = tiny_suite(strategies={"full_finetune": {"epochs": 1}})
    suite = parse_suite(raw)

    def run(force=False):
        runner = Runner(
            suite,
            tmp_path / "data",
            tmp_path / "out",
            tmp_path / "cache",
            resolve_runtime("cpu"),
            log=lambda m: None,
            force=force,
        )
        runner.run(expand_cells(suite))
        return runner

    first = run()
    (model,) = sorted((tmp_path / "cache" / "models").glob("*.pt"))
    # a swapped file that loads fine: the same model with other weights, the recorded hash left as it was
    payload = torch.load(model, weights_only=True)
    payload["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    torch.save(payload, model)
    run(force=True)
    before, after = first.store.read()
    assert after["status"] == "ok"
    # rebuilt, not loaded: the rerun trained the model again and scored exactly what the first run did
    assert after["metrics"] == before["metrics"]
    assert ModelCache(tmp_path / "cache").load("models", model.stem) is not None


def test_under_dali_an_image_with_a_corrupt_body_stops_the_run_before_anything_is_written(
    tmp_path, capsys, monkeypatch
):
    from PIL import Image

    from transfer_core.data import dali_available

    if not dali_available():
        pytest.skip("DALI not installed")  # CI installs it (.ci/run fails without it)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "f" / name).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "f" / name / f"{i}.jpg")
    good = (tmp_path / "f" / "a" / "0.jpg").read_bytes()
    body = good.index(b"\xff\xda") + 20  # a valid header, then markers no decoder knows where the scan data was
    (tmp_path / "f" / "a" / "bad.jpg").write_bytes(good[:body] + b"\xff\x21" * ((len(good) - body) // 2))
    raw = tiny_suite(
        targets=[{"dataset": "image_folder", "path": str(tmp_path / "f"), "resolution": 16}],
        strategies={"scratch": {"epochs": 1, "batch_size": 4}},
    )
    raw["runtime"].update(data_backend="dali", workers=1)
    out = tmp_path / "out"
    err = one_line_error(capsys, main(["run", str(write_suite(tmp_path / "s.yaml", raw)), "--out", str(out)]))
    assert "bad.jpg: cannot decode" in err and "bad_files: skip" in err
    assert not out.exists()
    skipping = {**raw, "targets": [{**raw["targets"][0], "bad_files": "skip"}]}  # the way around it: left out, counted
    assert main(["run", str(write_suite(tmp_path / "skip.yaml", skipping)), "--out", str(tmp_path / "skipped")]) == 0
    assert "skipped 1 unreadable file(s)" in capsys.readouterr().err
    # with the file gone the run goes on, and a later run decodes nothing again: each file version once
    (tmp_path / "f" / "a" / "bad.jpg").unlink()
    assert main(["run", str(write_suite(tmp_path / "s.yaml", raw)), "--out", str(out)]) == 0

    def must_not_decode(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr("transfer_core.datasets.image_folder.decode_error", must_not_decode)
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_a_results_folder_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch, code):
    """No permission, a read-only file system, a full disk (injected: this runs as any user, root included)."""
    real_open = os.open

    def refusing(path, flags, *args, **kwargs):
        if str(path).endswith("records.jsonl") and flags & os.O_WRONLY | flags & os.O_RDWR:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)
    raw = tiny_suite(strategies={"linear_probe": {}})
    code_returned = main(["run", str(write_suite(tmp_path / "s.yaml", raw)), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code_returned == 2 and "Traceback" not in err
    assert (
        err.strip().splitlines()[-1]
        == f"bench: error: cannot write {tmp_path / 'out' / 'records.jsonl'}: {os.strerror(code)}"
    )


def test_a_model_write_that_fails_leaves_nothing_under_the_real_name(tmp_path, monkeypatch):
    import torch

    from transfer_core.cache import ModelCache

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    cache = ModelCache(tmp_path)
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        cache.save("models", "k", torch.nn.Linear(2, 2), {})
    assert not cache.path("models", "k").exists() and not list(tmp_path.rglob("*.tmp"))
    assert cache.load("models", "k") is None


def test_the_runner_holds_no_model_once_the_artifacts_are_built(tmp_path):
    import gc

    from transfer_core.backbones import Classifier

    suite = parse_suite(tiny_suite())
    runner = Runner(
        suite, tmp_path / "data", tmp_path / "out", tmp_path / "cache", resolve_runtime("cpu"), log=lambda m: None
    )
    assert not runner.run(expand_cells(suite)).failed
    gc.collect()
    assert [o for o in gc.get_objects() if issubclass(type(o), Classifier)] == []  # type(): no proxy's __class__ asked
