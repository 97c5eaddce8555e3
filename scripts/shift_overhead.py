"""What scoring a suite's shifts costs beyond the inference itself.

    python scripts/shift_overhead.py SUITE --out FOLDER [--data-root ../shared/data] [--repeats 2] \
        [--checkout .] [--json results/shifts-cost/cpu.json] [--markdown results/shifts-cost/cpu.md]

Runs SUITE (a suite with ``shifts:``) into FOLDER once, so that every model and corrupted split is in the
cache; then, ``--repeats`` times: moves ``records.jsonl`` and ``shifts.jsonl`` aside and times a ``bench run``
that re-scores every in-distribution evaluation and every shift evaluation and trains nothing, cell by cell,
and times a rerun with nothing to do (the fixed cost of a run: starting, planning, which fingerprints the
data). The in-distribution and shift scoring thus run in the same minutes, which matters on a machine whose
speed drifts. From each rerun's records:
- **inference at the in-distribution rate**: the shifts' model-images (every model each shift evaluation
  scores: α-mix's every α, the baseline's trials; one pass each, as for α-mix in weight space) at the median
  rate of that rerun's in-distribution evaluations of one model each (validation + test images over
  ``eval_s``);
- the shift evaluations' own scoring time (``shift_eval_s``) and rate against it;
- the rerun's wall time, and the fixed cost.
``--checkout`` runs another checkout's ``bench`` (the code before a change) on the same folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed_run(checkout: Path, suite: str, out: Path, data_root: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", suite, "--out", str(out), "--data-root", data_root],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"bench run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def in_distribution_rate(records: list[dict]) -> float:
    """Median images/s of the evaluations that score one model (validation + test), not α-mix's or a trial's."""
    rates = []
    for r in records:
        seconds = (r.get("compute") or {}).get("eval_s")
        if r.get("status") != "ok" or r.get("alpha") is not None or r.get("trial") or not seconds:
            continue
        splits = r["provenance"]["data"]["target"]["manifest"]["splits"]
        rates.append((splits["test"]["images"] + splits.get("val", {}).get("images", 0)) / seconds)
    return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("--out", required=True)
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--checkout", default=str(ROOT), help="the checkout whose bench runs (default this one)")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    checkout, out, suite = Path(args.checkout).resolve(), Path(args.out).resolve(), str(Path(args.suite).resolve())
    data_root = str(Path(args.data_root).resolve())
    first_s = timed_run(checkout, suite, out, data_root)
    shifts_file = out / "shifts.jsonl"
    if not shifts_file.is_file():
        sys.exit(f"{args.suite} scored no shift: give a suite with shifts")
    runs = []
    for repeat in range(args.repeats):
        for name in ("records.jsonl", "shifts.jsonl"):
            shutil.move(out / name, out / f"{name}.before-{repeat}")
        rerun = timed_run(checkout, suite, out, data_root)
        idle = timed_run(checkout, suite, out, data_root)
        ids = read(out / "records.jsonl")
        artifacts = {r["config_hash"]: r["compute"] for r in read(shifts_file) if r.get("status") == "ok"}
        model_images = sum(c["shift_models"] * c["shift_images"] for c in artifacts.values())
        scoring_s = sum(c["shift_eval_s"] for c in artifacts.values())
        id_rate = in_distribution_rate(ids)
        inference_s = model_images / id_rate
        runs.append(
            {
                "rerun_s": rerun,
                "idle_run_s": idle,
                "shift_evaluations": len(artifacts),
                "model_images": model_images,
                "in_distribution_img_per_s": id_rate,
                "inference_s_at_in_distribution_rate": inference_s,
                "shift_scoring_s": scoring_s,
                "shift_scoring_img_per_s": model_images / scoring_s,
                "scoring_ratio_to_inference": scoring_s / inference_s,
            }
        )
    payload = {"checkout": str(checkout), "suite": args.suite, "first_run_s": first_s, "runs": runs}
    lines = [
        f"{r['shift_evaluations']} shift evaluations, {r['model_images']:,} model-images: scored in "
        f"{r['shift_scoring_s']:.1f} s ({r['shift_scoring_img_per_s']:,.0f} images/s) against "
        f"{r['inference_s_at_in_distribution_rate']:.1f} s at the in-distribution rate of the same run "
        f"({r['in_distribution_img_per_s']:,.0f} images/s): {r['scoring_ratio_to_inference']:.3f}x; the rerun "
        f"(every evaluation, in distribution and shifted) {r['rerun_s']:.1f} s, a run with nothing to do "
        f"{r['idle_run_s']:.1f} s"
        for r in runs
    ]
    text = "\n".join(f"- {line}" for line in lines)
    print(text)
    sys.path.insert(0, str(ROOT))
    from bench.commands.common import script_command_line, write_measurement

    write_measurement(args, "shift_overhead", payload, "What scoring the shifts costs", text, script_command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
