"""``bench ci``: the regression gate, base and head side by side on one machine (asv's ``continuous``).

``bench ci --base REF`` checks REF out into a temporary git worktree and, for both revisions on this
machine, in this job:
  1. runs the CI suite (head's suite file for both) from an empty model cache of its own, so neither
     revision can reuse the other's models even when a change moves numbers without raising a version;
  2. times the gated benchmarks (``worker.py``) in interleaved rounds, base and head in turn (the order
     swapped every round), so that whatever slows the machine meanwhile slows both;
and judges head against base (``verdicts.py``: the tests used are stated in the summary). The head is
the working tree this command runs from, uncommitted changes included.

``bench ci --baseline DIR`` is the fallback for a runner without the base revision: the suite is run
once and compared with a committed results folder, only when that folder was recorded on this device
(``--allow-device-mismatch``: accuracy only, with the cross-device tolerance; speed is not judged).

Exit 0: no regression; 1: a regression (each named, with its metric, in the summary); 2: unusable input.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from bench.errors import BenchError
from bench.measure.gate.revisions import GateError, Side, base_worktree, git, head_revision, log_tail
from bench.measure.gate.timing import time_benchmarks
from bench.measure.gate.verdicts import (
    GateResult,
    bitwise_differences,
    render_summary,
)
from bench.measure.gate.worker import BENCHMARKS
from bench.results import compare as compare_mod
from bench.text import publish_summary
from transfer_core.cores import usable_cores
from transfer_core.files import write_file

HARNESS_ROOT = Path(__file__).resolve().parents[3]  # the tree whose code runs (bench/measure/gate/run.py): the head


def _log(message: str) -> None:
    print(f"bench ci: {message}", file=sys.stderr, flush=True)


def run_suite(side: Side, suite: Path, data_root: Optional[str]) -> tuple[int, float]:
    """``bench run`` of this revision on the suite, into its own folder: (exit code, seconds)."""
    side.out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bench", "run", str(suite), "--out", str(side.out), "--cache-dir", str(side.cache)]
    if data_root:
        command += ["--data-root", data_root]
    started = time.perf_counter()
    with open(side.out / "run.log", "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}  (in {side.root})\n")
        log.flush()
        code = subprocess.run(command, cwd=side.root, env=side.env(), stdout=log, stderr=subprocess.STDOUT).returncode
    return code, time.perf_counter() - started


def _absolute_data_root(given: Optional[str], suite: Path) -> Optional[str]:
    """The data root as ``bench run`` would take it here (--data-root, BENCH_DATA_ROOT, the suite's data.root),
    made absolute: the revisions run in other folders, where a relative one would name nothing."""
    import yaml

    if given or os.environ.get("BENCH_DATA_ROOT"):
        return str(Path(given or os.environ["BENCH_DATA_ROOT"]).resolve())
    try:
        raw = yaml.safe_load(suite.read_text(encoding="utf-8"))
        configured = (raw.get("data") or {}).get("root", "data") if isinstance(raw, dict) else "data"
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        configured = "data"  # bench run will say what is wrong with the suite
    return str(Path(str(configured)).resolve())


def _prepare_out(out: Path) -> None:
    """The gate's folder is rewritten on every run; a folder it did not write is never emptied."""
    if out.exists() and any(out.iterdir()) and not (out / "gate.json").is_file():
        raise GateError(f"--out {out}: exists and is not a folder bench ci wrote (no gate.json); choose another")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # marks the folder as the gate's from the start: a gate that stops early leaves one the next run may rewrite
    write_file(out / "gate.json", json.dumps({"status": "running", "failed": None}) + "\n")


def _device_name() -> str:
    model = ""
    with contextlib.suppress(OSError):
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    return f"{model or 'CPU'} ({usable_cores()} cores)"


def _suite_problem(side: Side, code: int) -> str:
    return f"the {side.name} revision cannot run the suite (exit {code}: {log_tail(side.out / 'run.log')})"


def side_by_side(args) -> GateResult:
    repo = HARNESS_ROOT
    try:
        git(repo, "rev-parse", "--show-toplevel")
    except GateError as e:
        raise GateError(f"bench ci --base needs a git checkout of the harness, and {repo} is not one ({e})") from None
    try:
        base_commit = git(repo, "rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}")
    except GateError:
        raise GateError(
            f"--base {args.base}: no such revision in {repo} (a CI checkout needs the base's history: "
            "actions/checkout with fetch-depth: 0)"
        ) from None
    suite = Path(args.suite).resolve()
    if not suite.is_file():
        raise GateError(f"{args.suite}: no such suite file")
    parts = set(args.parts)
    out = Path(args.out).resolve()  # both revisions run in their own trees: every path they get is absolute
    data_root = _absolute_data_root(args.data_root, suite)
    _prepare_out(out)
    started = time.perf_counter()
    result = GateResult(title="")
    with tempfile.TemporaryDirectory(prefix="bench-ci-") as scratch_name:
        scratch = Path(scratch_name)
        with base_worktree(repo, base_commit, scratch) as base_root:
            base = Side("base", base_root, f"{base_commit[:12]}", out / "base", scratch / "base-cache")
            head = Side("head", repo, head_revision(repo), out / "head", scratch / "head-cache")
            result.title = (
                f"Head `{head.revision}` against base `{base.revision}` (`{args.base}`), side by side on "
                f"{_device_name()}; suite `{args.suite}`."
            )
            _log(f"base {base.revision} ({args.base}) checked out in {base_root}; head {head.revision}")
            if "accuracy" in parts:
                # base first, then head: the two suite runs are one sample each, so their order matters less than
                # the timing rounds' (those alternate)
                codes = {}
                for side in (base, head):
                    _log(f"{side.name}: running {args.suite} from an empty cache …")
                    code, seconds = run_suite(side, suite, data_root)
                    own_copy = base.root / suite.relative_to(repo) if suite.is_relative_to(repo) else None
                    if code == 2 and side is base and own_copy and own_copy.is_file():
                        # the head's suite may use keys the base does not know yet: the base's own copy then
                        result.notes.append(
                            "the base revision refused the head's suite file; it ran its own copy of it"
                        )
                        code, more = run_suite(side, own_copy, data_root)
                        seconds += more
                    codes[side.name] = code
                    result.timings[f"{side.name} suite"] = seconds
                    _log(f"{side.name}: suite done in {seconds:.0f} s (exit {code})")
                if codes["head"] == 2 and codes["base"] == 2:  # neither can run it: the input, not the change
                    raise GateError(_suite_problem(head, 2) + "; the base cannot either")
                if codes["head"] == 2:
                    result.problems.append(_suite_problem(head, 2))
                elif codes["base"] == 2:
                    result.notes.append(_suite_problem(base, 2) + "; accuracy not compared")
                else:
                    judge_accuracy(result, base, head, base_commit, args)
            if "speed" in parts:
                _log(f"timing {args.rounds} rounds, each a fresh pair of processes …")
                timed = time.perf_counter()
                try:
                    verdicts, samples = time_benchmarks(
                        base,
                        head,
                        args.rounds,
                        args.samples_per_round,
                        args.min_effect / 100,
                        args.alpha,
                        scratch,
                        args.benchmarks,
                    )
                finally:  # the workers' logs say what went wrong when a worker hung or died
                    for worker_log in scratch.glob("*-worker.log"):
                        shutil.copy(worker_log, out / worker_log.name)
                result.speed, result.timings["timing"] = verdicts, time.perf_counter() - timed
                result.speed_method = (
                    f"{args.rounds} rounds; each starts a fresh process per revision (a process's speed is itself a "
                    f"sample: identical code differed by up to 22% between two processes here), warms both up, then "
                    f"takes {args.samples_per_round} samples of each, base and head in turn (the order swapped every "
                    f"time). A round's ratio is head's median over base's. A benchmark fails when a one-sided Wilcoxon "
                    f"signed-rank test on the rounds' log ratios finds head slower with p < {args.alpha:g} **and** the "
                    f"median ratio is at least {1 + args.min_effect / 100:g} (+{args.min_effect:g}%); "
                    "the interval is a "
                    "95% bootstrap interval of the median ratio."
                )
                write_file(out / "speed_samples.json", json.dumps(samples, indent=1) + "\n")
    result.timings["gate"] = time.perf_counter() - started
    return result


def judge_accuracy(result: GateResult, base: Side, head: Side, base_commit: str, args) -> None:
    base_records = compare_mod.load(base.out, "base")
    head_records = compare_mod.load(head.out, "head")
    used = {r.get("provenance", {}).get("git_commit") for r in base_records} - {None}
    if used and used != {base_commit}:  # PYTHONPATH did not win over an installed copy: the comparison would be void
        raise GateError(f"the base run used code from commit {', '.join(sorted(used))}, not {base_commit}")
    thresholds = compare_mod.parse_thresholds(args.fail)
    result.accuracy = compare_mod.compare(base_records, head_records, thresholds, match_config=False)
    result.bitwise = bitwise_differences(base_records, head_records)
    result.accuracy_method = (
        f"Both revisions ran `{args.suite}` on this machine from empty caches. The CPU path is deterministic, so equal "
        f"code gives bitwise-equal metrics; a change fails when the mean over seeds drops beyond "
        f"{', '.join(f'`{t.metric}` {t.describe()}' for t in thresholds)}, "
        "and every metric that differs at all is listed."
    )


def against_baseline(args) -> GateResult:
    """The fallback: the suite once, compared with a committed results folder of this device."""
    baseline = Path(args.baseline)
    base_records = compare_mod.load(baseline, "baseline")
    suite = Path(args.suite).resolve()
    if not suite.is_file():
        raise GateError(f"{args.suite}: no such suite file")
    out = Path(args.out).resolve()
    _prepare_out(out)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-ci-") as scratch:
        head = Side("head", HARNESS_ROOT, "the working tree", out / "head", Path(scratch) / "head-cache")
        _log(f"running {args.suite} from an empty cache …")
        code, seconds = run_suite(head, suite, _absolute_data_root(args.data_root, suite))
    result = GateResult(
        title=f"The working tree against the committed baseline `{baseline}`; suite `{args.suite}`.",
        timings={"suite": seconds},
    )
    if code == 2:
        result.problems.append(_suite_problem(head, code))
        return result
    head_records = compare_mod.load(head.out, "head")
    devices = lambda records: compare_mod._devices(records)  # noqa: E731
    same_device = devices(base_records) == devices(head_records)
    if not same_device and not args.allow_device_mismatch:
        raise GateError(
            f"{baseline} was recorded on {', '.join(sorted(devices(base_records))) or '?'} and this machine is "
            f"{', '.join(sorted(devices(head_records))) or '?'}: a committed baseline serves only on its own "
            f"device. Run base and head side by side instead (bench ci --base REF), or pass "
            f"--allow-device-mismatch to judge accuracy with the cross-device tolerance ({args.fail_across_devices})"
        )
    spec = args.fail if same_device else args.fail_across_devices
    thresholds = compare_mod.parse_thresholds(spec)
    result.accuracy = compare_mod.compare(
        base_records, head_records, thresholds, allow_device_mismatch=True, match_config=False
    )
    if same_device:
        result.bitwise = bitwise_differences(base_records, head_records)
    result.accuracy_method = (
        "Same device as the baseline: equal code gives bitwise-equal metrics; "
        if same_device
        else "Another device than the baseline's: arithmetic differs across CPU families, "
        "so only the cross-device tolerance "
        "applies; "
    ) + f"fails beyond {', '.join(f'`{t.metric}` {t.describe()}' for t in thresholds)}."
    result.notes.append(
        "Speed is judged only side by side (bench ci --base REF), where both revisions are timed in turn "
        "on one machine."
    )
    result.timings["gate"] = time.perf_counter() - started
    return result


def cmd_ci(args) -> int:
    if bool(args.base) == bool(args.baseline):
        raise GateError(
            "give --base REF (side by side, the gate) or --baseline DIR (a committed results folder of this device)"
        )
    if not 0 < args.alpha < 1 or args.min_effect < 0:
        raise GateError("--alpha must lie in (0, 1) and --min-effect be 0 or more")
    if args.samples_per_round < 1:
        raise GateError(f"--samples-per-round: at least 1, got {args.samples_per_round}")
    if 0.5**args.rounds >= args.alpha:  # the signed-rank test's smallest one-sided p with n pairs is 2^-n
        raise GateError(
            f"--rounds {args.rounds}: the test's smallest p is then {0.5**args.rounds:.3g}, never below "
            f"--alpha {args.alpha:g}; give more rounds or a larger alpha"
        )
    unknown = set(args.parts) - {"accuracy", "speed"}
    if unknown or not args.parts:
        raise GateError(f"--parts: expected accuracy and/or speed, got {','.join(sorted(unknown)) or 'nothing'}")
    compare_mod.parse_thresholds(args.fail)  # a mistake in a threshold is reported before anything runs
    compare_mod.parse_thresholds(args.fail_across_devices)
    unknown = sorted(set(args.benchmarks or []) - set(BENCHMARKS))
    if unknown:
        raise GateError(f"--benchmarks: unknown {', '.join(unknown)}; the gated ones are {', '.join(BENCHMARKS)}")
    out = Path(args.out).resolve()
    try:
        result = side_by_side(args) if args.base else against_baseline(args)
    except BenchError as e:  # the folder says the gate stopped, and why, instead of "running"
        if (out / "gate.json").is_file():
            write_file(out / "gate.json", json.dumps({"status": "stopped", "failed": None, "error": str(e)}) + "\n")
        raise
    summary = render_summary(result)
    write_file(out / "summary.md", summary)
    write_file(
        out / "gate.json",
        json.dumps(
            {
                "status": "finished",
                "failed": result.failed,
                "failing": result.failing(),
                "title": result.title,
                "timings_s": result.timings,
                "speed": [v.as_dict() for v in result.speed],
                "notes": result.notes,
                "accuracy": None
                if result.accuracy is None
                else {
                    "verdict": compare_mod.verdict_line(result.accuracy),
                    "bitwise_differences": (result.bitwise or (0, []))[1],
                },
            },
            indent=1,
            default=str,
        )
        + "\n",
    )
    publish_summary(summary, args.summary)
    print(summary)
    for line in result.failing():
        _log(f"FAIL {line}")
    _log(
        f"{'FAIL' if result.failed else 'PASS'} in {result.timings.get('gate', 0):.0f} s; "
        f"summary in {out / 'summary.md'}"
    )
    return 1 if result.failed else 0
