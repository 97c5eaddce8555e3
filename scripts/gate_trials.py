"""False-alarm rate and power of the regression gate (``bench ci --base``), measured.

In a temporary clone of this repository's HEAD, optionally commits an injected fault on top, then runs
the side-by-side gate against the unchanged commit ``--runs`` times and counts how often it fails and on
what. Faults:
    none       no commit: head is the base revision (every failure is a false alarm)
    harmless   a commit that changes a comment
    slow20     a commit that makes every train step 20% slower (it sleeps a fifth of the step's own time)
    top1-1pt   a commit that lowers every top-1 by one point (at the metric)
    top1-2pt   the same, two points
    numerics   a commit that trains on one thread instead of the runtime's (and restores the thread count
               after each training, so the records name the same machine): oneDNN then sums the gradients
               in another order, so the weights differ in rounding from the first steps on (0.14 apart after
               20 steps of a ResNet-8 here), the same model in exact arithmetic; every failure is a false alarm.
               (An earlier version summed the loss and divided by the batch size instead of averaging it: with
               batches of a power of two that is bitwise the same training, and tested nothing.)

    python scripts/gate_trials.py --fault none --runs 10 --json results/gate/trials-none.json
    python scripts/gate_trials.py --fault slow20 --runs 10 --parts speed --json results/gate/trials-slow20.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (file, anchor, replacement): each anchor must occur exactly once, so a fault that no longer applies fails loudly
FAULTS = {
    "none": [],
    "harmless": [("transfer_core/training.py", "def top_k_pct(", "# top-k accuracy, in percent\ndef top_k_pct(")],
    "slow20": [
        (
            "transfer_core/training.py",
            "        for images, labels in _timed_batches(loader, stats):\n",
            "        for images, labels in _timed_batches(loader, stats):\n"
            "            step_started = time.perf_counter()\n",
        ),
        (
            "transfer_core/training.py",
            "            progress.update()\n",
            "            progress.update()\n            time.sleep(0.2 * (time.perf_counter() - step_started))\n",
        ),
    ],
    "top1-1pt": [
        (
            "transfer_core/training.py",
            "    return 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item()\n",
            "    return 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item() - 1.0\n",
        )
    ],
    "top1-2pt": [
        (
            "transfer_core/training.py",
            "    return 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item()\n",
            "    return 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item() - 2.0\n",
        )
    ],
    "numerics": [
        (
            "transfer_core/training.py",
            "    optimizer = _optimizer(model, recipe, body_lr_scale)\n",
            "    threads = torch.get_num_threads()\n"
            "    torch.set_num_threads(1)  # injected: other reduction orders, other rounding\n"
            "    optimizer = _optimizer(model, recipe, body_lr_scale)\n",
        ),
        (  # the thread count restored before anything is recorded: the records name the same machine
            "transfer_core/training.py",
            "        stats.compile_decision = decision.details\n",
            "        stats.compile_decision = decision.details\n    torch.set_num_threads(threads)\n",
        ),
    ],
}


def inject(clone: Path, fault: str) -> None:
    for relative, anchor, replacement in FAULTS[fault]:
        path = clone / relative
        text = path.read_text()
        if text.count(anchor) != 1:
            sys.exit(f"gate_trials: the {fault} fault's anchor is not in {relative} once: {anchor!r}")
        path.write_text(text.replace(anchor, replacement))


def git(clone: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(clone), *args], check=True, capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fault", choices=sorted(FAULTS), required=True)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--parts", default="accuracy,speed", help="passed to bench ci (default both)")
    parser.add_argument("--json", help="write the tally here")
    parser.add_argument("gate_args", nargs="*", help="more arguments for bench ci, after --")
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory(prefix="gate-trials-") as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        base = git(clone, "rev-parse", "HEAD")
        if FAULTS[args.fault]:
            inject(clone, args.fault)
            git(
                clone,
                "-c",
                "user.name=trials",
                "-c",
                "user.email=trials@localhost",
                "commit",
                "-qam",
                f"inject {args.fault}",
            )
        env = {**os.environ, "PYTHONPATH": str(clone)}
        for i in range(args.runs):
            out = Path(scratch) / "gate"
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench",
                    "ci",
                    "--base",
                    base,
                    "--out",
                    str(out),
                    "--parts",
                    args.parts,
                    *args.gate_args,
                ],
                cwd=clone,
                env=env,
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - started
            if done.returncode not in (0, 1):
                sys.exit(f"gate_trials: run {i + 1}: bench ci exited {done.returncode}: {done.stderr.strip()[-500:]}")
            gate = json.loads((out / "gate.json").read_text())
            speed = {
                v["name"]: {"ratio": v["ratio"], "p_slower": v["p_slower"], "verdict": v["verdict"]}
                for v in gate["speed"]
            }
            runs.append(
                {
                    "failed": gate["failed"],
                    "failing": gate["failing"],
                    "wall_s": round(seconds, 1),
                    "speed": speed,
                    "accuracy": gate["accuracy"],
                }
            )
            print(
                f"run {i + 1}/{args.runs}: {'FAIL' if gate['failed'] else 'pass'} in {seconds:.0f} s"
                + "".join(f"\n  {line}" for line in gate["failing"])
                + "".join(
                    f"\n  {n}: ratio {s['ratio']:.3f}, p {s['p_slower']:.2g}" for n, s in speed.items() if s["ratio"]
                ),
                flush=True,
            )
    tally = {
        "fault": args.fault,
        "parts": args.parts,
        "runs": len(runs),
        "failed": sum(r["failed"] for r in runs),
        "wall_s": [r["wall_s"] for r in runs],
        "base_commit": base,
        "machine": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "details": runs,
    }
    print(
        f"{args.fault}: the gate failed {tally['failed']} of {tally['runs']} runs; wall time "
        f"{min(tally['wall_s']):.0f}–{max(tally['wall_s']):.0f} s"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(tally, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
