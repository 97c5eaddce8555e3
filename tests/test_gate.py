"""The regression gate, ``bench ci``: its statistics on made-up samples, and the real command in a temporary
git repository holding a copy of this code, with a commit on top that lowers accuracy, slows the train step,
or changes nothing that matters."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_records

from bench.measure.gate.verdicts import bitwise_differences, judge_speed

REPO = Path(__file__).resolve().parents[1]

TINY_SUITE = """\
schema_version: 1
name: tiny-gate
source: {dataset: digits, classes: [0, 1, 2, 3, 4], epochs: 2}
targets:
  - {dataset: digits, classes: [5, 6, 7, 8, 9], per_class: 40}
backbones: [resnet8]
strategies:
  linear_probe: {}
  full_finetune: {epochs: 2, lr: 0.05}
train: {batch_size: 32, lr: 0.1}
runtime: {device: cpu}
seeds: [0]
"""

# (anchor, replacement) in transfer_core/training.py; each anchor must be there exactly once
LOWER_TOP1 = [
    (
        "    return 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item()\n",
        "    return 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item() - 1.0\n",
    )
]
# three times slower: a step sleeps twice its own time (the trials in scripts/gate_trials.py measure 20%)
SLOW_STEP = [
    (
        "        for images, labels in _timed_batches(loader, stats):\n",
        "        for images, labels in _timed_batches(loader, stats):\n"
        "            step_started = time.perf_counter()\n",
    ),
    (
        "            progress.update()\n",
        "            progress.update()\n            time.sleep(2.0 * (time.perf_counter() - step_started))\n",
    ),
    # and prints to stdout, as a debugging line left in would: the timing worker's answers must survive it
    ("def train(", 'print("debug: training")\n\n\ndef train('),
]
HARMLESS = [("def top_k_pct(", "# top-k accuracy, in percent\ndef top_k_pct(")]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def gate_repo(tmp_path):
    """A git repository with this code and a tiny suite, one commit."""
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("bench", "transfer_core"):
        shutil.copytree(REPO / package, repo / package, ignore=ignore)
    (repo / "suites").mkdir()
    (repo / "suites" / "tiny.yaml").write_text(TINY_SUITE)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    return repo


def commit_change(repo: Path, edits: list[tuple[str, str]], message: str) -> None:
    path = repo / "transfer_core" / "training.py"
    text = path.read_text()
    for anchor, replacement in edits:
        assert text.count(anchor) == 1, f"the training code changed: {anchor!r} is not there once"
        text = text.replace(anchor, replacement)
    path.write_text(text)
    git(repo, "commit", "-qam", message)


def bench_ci(repo: Path, *args: str) -> tuple[int, dict, str]:
    """``python -m bench ci`` in the repository, as CI runs it: (exit code, gate.json or {}, stderr)."""
    out = repo.parent / "gate"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "ci", "--suite", "suites/tiny.yaml", "--out", str(out), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    gate = json.loads((out / "gate.json").read_text()) if (out / "gate.json").is_file() else {}
    return done.returncode, gate, done.stderr


# --- the statistics -----------------------------------------------------------------------------

BASE = [0.070, 0.072, 0.069, 0.075, 0.081, 0.078, 0.071, 0.066, 0.074, 0.077]  # drifting, like a shared VM
WOBBLE = [1.01, 0.99, 1.02, 0.98, 1.00, 1.01, 0.99, 1.02, 0.98, 1.00]  # within-round noise, ±2%


def test_equal_samples_are_no_change():
    verdict = judge_speed("train_step", "s per step", BASE, list(BASE), min_effect=0.10, alpha=0.01)
    assert verdict.verdict == "no significant change" and verdict.ratio == 1.0 and not verdict.failed


def test_a_consistent_slowdown_fails_with_its_size_and_interval():
    head = [b * 1.3 * w for b, w in zip(BASE, WOBBLE)]
    verdict = judge_speed("train_step", "s per step", BASE, head, min_effect=0.10, alpha=0.01)
    assert verdict.verdict == "slower" and verdict.failed
    assert verdict.ratio == pytest.approx(1.3, abs=0.02)
    assert verdict.ratio_ci[0] <= verdict.ratio <= verdict.ratio_ci[1] and verdict.ratio_ci[0] > 1.2
    assert verdict.p_slower < 0.01


def test_a_significant_but_small_slowdown_passes():
    """Every round 5% slower: the test is sure of it, and it is under the minimum effect."""
    head = [b * 1.05 * w for b, w in zip(BASE, WOBBLE)]
    verdict = judge_speed("train_step", "s per step", BASE, head, min_effect=0.10, alpha=0.01)
    assert verdict.p_slower < 0.01 and verdict.verdict == "no significant change"


def test_drift_between_rounds_is_not_a_slowdown():
    """Head measured in rounds whose machine was 40% slower for both: the pairs cancel it."""
    base = BASE[:5] + [b * 1.4 for b in BASE[5:]]
    head = [b * w for b, w in zip(base, WOBBLE)]
    assert judge_speed("train_step", "s", base, head, min_effect=0.10, alpha=0.01).verdict == "no significant change"


def test_one_disturbed_round_cannot_fail_a_benchmark():
    head = [b * w for b, w in zip(BASE, WOBBLE)]
    head[3] *= 3.0
    assert judge_speed("predict", "s", BASE, head, min_effect=0.10, alpha=0.01).verdict == "no significant change"


def test_a_speedup_is_reported_and_never_fails():
    head = [b * 0.7 * w for b, w in zip(BASE, WOBBLE)]
    verdict = judge_speed("loader", "s", BASE, head, min_effect=0.10, alpha=0.01)
    assert verdict.verdict == "faster" and not verdict.failed


def test_unpaired_or_too_few_samples():
    with pytest.raises(ValueError, match="not pairs"):
        judge_speed("x", "s", BASE, BASE[:5], 0.1, 0.01)
    assert judge_speed("x", "s", BASE[:2], BASE[:2], 0.1, 0.01).verdict == "not compared"


def test_bitwise_differences_name_the_cell_and_metric():
    def record(cell, top1, alpha=None):
        return {
            "cell_id": cell,
            "status": "ok",
            "alpha": alpha,
            "metrics": {"test_top1_pct": top1, "val_top1_pct": 50.0},
        }

    base = [record("a", 90.0), record("b", 80.0), record("m", 70.0, alpha=0.5)]
    head = [record("a", 90.0), record("b", 80.25), record("m", 70.0, alpha=0.5)]
    compared, differences = bitwise_differences(base, head)
    assert compared == 3 and differences == ["b test_top1_pct: 80.0 → 80.25"]


# --- the command, side by side ------------------------------------------------------------------


@pytest.mark.slow
def test_gate_fails_a_commit_that_lowers_top1_naming_the_metric(gate_repo):
    commit_change(gate_repo, LOWER_TOP1, "lower top-1")
    # --out relative to the working folder, as CI passes it: both revisions must still write there
    code, gate, stderr = bench_ci(gate_repo, "--base", "HEAD~1", "--parts", "accuracy", "--out", "../gate")
    assert code == 1, stderr
    assert gate["failed"] and gate["failing"]
    assert all("test_top1_pct" in line and "regressed" in line for line in gate["failing"]), gate["failing"]
    assert any("-1.00pp" in line for line in gate["failing"])
    # the numerics changed, and the summary says where
    assert gate["accuracy"]["bitwise_differences"]
    summary = (gate_repo.parent / "gate" / "summary.md").read_text()
    assert "❌ regression" in summary and "differ" in summary


@pytest.mark.slow
def test_gate_fails_a_commit_that_slows_the_train_step(gate_repo):
    commit_change(gate_repo, SLOW_STEP, "slow train step")
    code, gate, stderr = bench_ci(
        gate_repo,
        "--base",
        "HEAD~1",
        "--parts",
        "speed",
        "--benchmarks",
        "train_step,predict",
        "--rounds",
        "7",
        "--samples-per-round",
        "1",
    )
    assert code == 1, stderr
    assert len(gate["failing"]) == 1 and gate["failing"][0].startswith("speed: train_step is "), gate["failing"]
    train_step = next(v for v in gate["speed"] if v["name"] == "train_step")
    assert train_step["verdict"] == "slower" and train_step["ratio"] > 2
    assert len(train_step["base"]) == len(train_step["head"]) == 7
    assert "FAIL speed: train_step" in stderr


@pytest.mark.slow
def test_gate_passes_a_harmless_commit_on_a_machine_unlike_the_committed_baseline(gate_repo):
    # a committed baseline from another machine sits in the repository; the side-by-side gate never reads it
    commit_change(gate_repo, HARMLESS, "comment")
    code, gate, stderr = bench_ci(
        gate_repo,
        "--base",
        "HEAD~1",
        "--benchmarks",
        "train_step",
        "--rounds",
        "7",
        "--samples-per-round",
        "1",
        "--min-effect",
        "25",
    )
    assert code == 0, stderr + json.dumps(gate.get("failing"))
    assert not gate["failed"] and gate["accuracy"]["bitwise_differences"] == []
    assert gate["accuracy"]["verdict"].startswith("PASS")
    assert [v["name"] for v in gate["speed"]] == ["train_step"]
    out = gate_repo.parent / "gate"
    assert (out / "base" / "records.jsonl").is_file() and (out / "head" / "report.md").is_file()
    # what the workflow uploads is there
    assert {"summary.md", "gate.json", "speed_samples.json", "base-worker.log", "head-worker.log"} <= {
        p.name for p in out.iterdir()
    }
    # the base's records came from the base commit; the temporary worktree is gone
    base_commit = git(gate_repo, "rev-parse", "HEAD~1")
    assert {
        json.loads(line)["provenance"]["git_commit"]
        for line in (out / "base" / "records.jsonl").read_text().splitlines()
    } == {base_commit}
    assert len(git(gate_repo, "worktree", "list").splitlines()) == 1

    # the fallback against a committed baseline refuses another device, and says what to run instead
    baseline = gate_repo.parent / "baseline"
    shutil.copytree(out / "base", baseline)
    records = read_records(baseline)
    for record in records:
        record["provenance"]["device_name"] = "Intel(R) Xeon(R) Processor (2 threads)"
    (baseline / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    code, _, stderr = bench_ci(gate_repo, "--baseline", str(baseline))
    assert code == 2 and "bench ci --base REF" in stderr and "Intel(R) Xeon(R)" in stderr
    assert len(stderr.strip().splitlines()) <= 3  # progress, then one error line
    # allowed: accuracy only, with the cross-device tolerance
    code, gate, stderr = bench_ci(gate_repo, "--baseline", str(baseline), "--allow-device-mismatch")
    assert code == 0, stderr
    assert gate["speed"] == [] and any("Speed is judged only side by side" in n for n in gate["notes"])


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--base", "no-such-branch"], "--base no-such-branch: no such revision"),
        (["--base", "HEAD", "--baseline", "x"], "give --base REF"),
        ([], "give --base REF"),
        (["--base", "HEAD", "--rounds", "6"], "--rounds 6: the test's smallest p is then 0.0156"),
        (["--base", "HEAD", "--parts", "accuracy,sped"], "--parts: expected accuracy and/or speed, got sped"),
        (["--base", "HEAD", "--fail", "top1:+1pp"], "write top1:-1pp"),
        (["--base", "HEAD", "--suite", "missing.yaml"], "missing.yaml: no such suite file"),
        (["--base", "HEAD", "--benchmarks", "train_step,nope"], "--benchmarks: unknown nope"),
    ],
)
def test_refusals_are_one_line(gate_repo, args, message):
    env = {**os.environ, "PYTHONPATH": str(gate_repo)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "ci", "--out", str(gate_repo.parent / "g"), *args],
        cwd=gate_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_an_out_folder_the_gate_did_not_write_is_left_alone(gate_repo):
    mine = gate_repo.parent / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    env = {**os.environ, "PYTHONPATH": str(gate_repo)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "ci", "--base", "HEAD", "--suite", "suites/tiny.yaml", "--out", str(mine)],
        cwd=gate_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "not a folder bench ci wrote" in done.stderr
    assert (mine / "notes.txt").read_text() == "keep me"


def test_outside_a_git_checkout_the_gate_says_so(tmp_path):
    tree = tmp_path / "tree"
    for package in ("bench", "transfer_core"):
        shutil.copytree(REPO / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(tree), "GIT_CEILING_DIRECTORIES": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "ci", "--base", "HEAD", "--out", str(tmp_path / "g")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "not a git repository" in done.stderr.lower()


# --- the workflow -------------------------------------------------------------------------------


def test_the_workflow_runs_the_gate_on_pull_requests_with_commands_that_exist():
    import re
    import shlex

    import yaml

    from bench.cli import build_parser

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "benchmarks.yml").read_text())
    assert "pull_request" in workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as true
    steps = workflow["jobs"]["regression-gate"]["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # the base revision must be in the clone
    lines = [line.strip() for step in steps for line in step.get("run", "").splitlines()]
    commands = [
        shlex.split(re.sub(r"\$\{\{[^}]*\}\}", "0123abc", line)) for line in lines if line and not line.startswith("#")
    ]
    assert commands, "the workflow runs nothing"
    parser = build_parser()
    gate = None
    for argv in commands:
        if argv[:3] == ["python", "-m", "bench"]:
            args = parser.parse_args(argv[3:])  # an unknown command or option exits here
            gate = args if args.command == "ci" else gate
        else:
            assert argv[:2] == ["pip", "install"], f"the workflow runs {argv[0]}, which this test does not know"
    assert gate is not None and gate.base == "0123abc" and gate.baseline is None
    assert ["pip", "install", "-e", "."] in commands
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"  # the reports matter most when the gate fails
    paths = upload["with"]["path"].split()
    assert paths and all(p.startswith(gate.out + "/") for p in paths)
