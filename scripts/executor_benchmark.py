"""Wall time of a suite under the local executor and under the Ray executor, each from scratch.

    python scripts/executor_benchmark.py SUITE.yaml [--data-root DIR] [--filter REGEX] [--local-threads N]
                                         [--ray-threads N] [--repeats N] [--json FILE] [--markdown FILE]

Each run is the real command line (``python -m bench run``) in a subprocess with a fresh results folder and
model cache, timed end to end as a user would see it: start-up, data loading, Ray's start, training and
reports. The two executors run in alternating pairs (local, Ray, local, Ray, ...), so a machine whose speed
drifts, as a shared one does, slows both alike; each pair gives a ratio (local / Ray: above 1 means Ray
finished first) and the median ratio is reported. The script checks that every run recorded the same
cells, all ``ok``, and how many records have identical metrics under both executors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed_run(suite: Path, out: Path, extra: list[str]) -> tuple[float, list[dict]]:
    command = [sys.executable, "-m", "bench", "run", str(suite), "--out", str(out), *extra]
    print("$ " + " ".join(command[1:]), file=sys.stderr, flush=True)
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall_s = time.perf_counter() - started
    if finished.returncode != 0:
        sys.exit(f"run failed ({finished.returncode}):\n{finished.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    return wall_s, records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--data-root")
    parser.add_argument("--filter", help="only cells whose id matches (bench run --filter)")
    parser.add_argument("--local-threads", type=int, help="torch threads of the local run (default: all cores)")
    parser.add_argument("--ray-threads", type=int, help="threads (and CPUs) per Ray task (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating local/Ray pairs (default 1)")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    common = (["--data-root", args.data_root] if args.data_root else []) + (
        ["--filter", args.filter] if args.filter else []
    )
    local_args = (
        common + ["--executor", "local"] + (["--threads", str(args.local_threads)] if args.local_threads else [])
    )
    ray_args = common + ["--executor", "ray"] + (["--threads", str(args.ray_threads)] if args.ray_threads else [])
    pairs = []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            local_s, local = timed_run(args.suite, Path(scratch) / f"local{repeat}", local_args)
            ray_s, on_ray = timed_run(args.suite, Path(scratch) / f"ray{repeat}", ray_args)
            cells = {(r["cell_id"], r["alpha"]) for r in local}
            assert cells == {(r["cell_id"], r["alpha"]) for r in on_ray}, "the two executors recorded different cells"
            assert all(r["status"] == "ok" for r in local + on_ray), "a cell failed"
            pairs.append(
                {
                    "local_wall_s": round(local_s, 1),
                    "ray_wall_s": round(ray_s, 1),
                    "local_over_ray": round(local_s / ray_s, 2),
                }
            )
            print(
                f"pair {repeat + 1}: local {local_s:.1f} s, Ray {ray_s:.1f} s, {local_s / ray_s:.2f}x",
                file=sys.stderr,
                flush=True,
            )
    metrics = {(r["cell_id"], r["alpha"]): r["metrics"] for r in local}  # the last pair's
    same = sum(1 for r in on_ray if metrics[(r["cell_id"], r["alpha"])] == r["metrics"])
    provenance = {key: local[0]["provenance"].get(key) for key in ("git_commit", "git_dirty", "torch")}
    provenance["device_name"] = f"{local[0]['provenance']['device_name'].split(' (')[0]} ({os.cpu_count()} cores)"
    local_s, ray_s = (
        statistics.median(p["local_wall_s"] for p in pairs),
        statistics.median(p["ray_wall_s"] for p in pairs),
    )
    ratio = statistics.median(p["local_over_ray"] for p in pairs)
    result = {
        "kind": "executors",
        "suite": str(args.suite),
        "cells": len({c for c, _ in cells}),
        "records": len(cells),
        "local_wall_s": local_s,
        "ray_wall_s": ray_s,
        "local_over_ray": ratio,
        "pairs": pairs,
        "local_threads": args.local_threads,
        "ray_threads_per_task": args.ray_threads or 1,
        "records_with_identical_metrics": same,
        "provenance": provenance,
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    table = (
        f"| suite | cells | local wall (s) | Ray wall (s) | local / Ray |\n|---|---|---|---|---|\n"
        f"| {args.suite} | {result['cells']} | {local_s:.1f} | {ray_s:.1f} | {ratio:.2f}x |"
    )
    if len(pairs) > 1:
        table += (
            f"\n\nMedians of {len(pairs)} alternating pairs; each pair's local / Ray: "
            + ", ".join(
                f"{p['local_over_ray']:.2f}x ({p['local_wall_s']:.0f} s / {p['ray_wall_s']:.0f} s)" for p in pairs
            )
            + "."
        )
    print(table)
    print(f"{same} of {len(cells)} records have identical metrics under both executors")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        command = "python scripts/executor_benchmark.py " + " ".join(sys.argv[1:])
        Path(args.markdown).write_text(
            f"# Local and Ray executors: wall time\n\n{table}\n\n{same} of {len(cells)} records "
            f"have identical metrics under both executors.\n\nProduced by `{command}` "
            f"({provenance['device_name']}, {result['measured_at']}).\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
