"""How bench copes with size: a generated suite of 2,000 cells planned and dry-run, and a records file of
100,000 lines reported. Each command runs in a fresh process, timed end to end (start-up included), the
median of ``--repeats``; the numbers go to ``--json`` and ``--markdown``.

    python scripts/load_benchmark.py --json results/load/cpu.json --markdown results/load/cpu.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.pipeline.provenance import provenance  # noqa: E402

STRATEGIES = ["scratch", "linear_probe", "full_finetune", "lp_ft", "l2_sp"]


def big_suite(cells: int) -> dict:
    """digits -> 10 targets (different sizes) x 5 strategies x as many seeds as make ``cells``."""
    targets = [
        {
            "dataset": "digits",
            "classes": [5, 6, 7, 8, 9],
            "per_class": 10 + 4 * i,
            "val_fraction": 0.25,
            "name": f"t{i}",
        }
        for i in range(10)
    ]
    seeds = list(range(cells // (len(targets) * len(STRATEGIES))))
    return {
        "schema_version": 1,
        "name": "load",
        "source": {"dataset": "digits", "classes": [0, 1, 2, 3, 4], "epochs": 1},
        "targets": targets,
        "backbones": ["resnet8"],
        "strategies": {s: {} for s in STRATEGIES},
        "seeds": seeds,
        "runtime": {"device": "cpu"},
    }


def big_records(path: Path, lines: int) -> None:
    """``lines`` records as bench writes them: 10 targets x 5 strategies x seeds, with full provenance."""
    provenance_block = {
        **provenance(torch.device("cpu")),
        "runtime": {"device": "cpu"},
        "command": "python -m bench run load.yaml",
        "started_at": "2026-11-30T00:00:00+00:00",
        "finished_at": "2026-11-30T00:00:01+00:00",
    }
    with open(path, "w", encoding="utf-8") as f:
        for n in range(lines):
            target, strategy, seed = f"t{n % 10}", STRATEGIES[(n // 10) % 5], n // 50
            record = {
                "schema_version": 1,
                "suite": "load",
                "cell_id": f"s->{target}/resnet8/{strategy}/seed{seed}",
                "source": "s",
                "target": target,
                "backbone": "resnet8",
                "strategy": strategy,
                "seed": seed,
                "strategy_info": {  # as bench run writes it: the report needs no registry
                    "baseline": strategy == "scratch",
                    "table_order": 10 * STRATEGIES.index(strategy),
                    "plot_marker": "o",
                    "ingredients": [],
                },
                "config_hash": f"{n:020x}",
                "status": "ok",
                "error": None,
                "alpha": None,
                "selected": True,
                "metrics": {"test_top1_pct": 50 + (n * 7919) % 300 / 10, "val_top1_pct": 50.0, "test_top5_pct": None},
                "compute": {
                    "target_total_s": 10.0,
                    "target_train_s": 9.0,
                    "target_train_flops": 1e12,
                    "source_train_s_total": 5.0,
                    "target_img_per_s": 1000.0,
                },
                "provenance": provenance_block,
            }
            f.write(json.dumps(record, sort_keys=True) + "\n")


def timed(argv: list[str], repeats: int, cwd: Path) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "bench", *argv],
            cwd=cwd,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        seconds.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise SystemExit(f"bench {' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        here = Path(tmp)
        (here / "load.yaml").write_text(yaml.safe_dump(big_suite(args.cells)))
        dry = timed(["run", "load.yaml", "--dry-run", "--out", "out"], args.repeats, here)
        (here / "records").mkdir()
        big_records(here / "records" / "records.jsonl", args.lines)
        size_mb = (here / "records" / "records.jsonl").stat().st_size / 1e6
        report = timed(["report", "records"], args.repeats, here)
        startup = timed(["list"], args.repeats, here)  # the interpreter, torch and bench imports alone

    rows = [
        {
            "what": f"plan and dry-run a suite of {args.cells} cells",
            "median_s": statistics.median(dry),
            "runs_s": dry,
            "limit_s": 5.0,
        },
        {
            "what": f"report a records file of {args.lines} lines ({size_mb:.0f} MB)",
            "median_s": statistics.median(report),
            "runs_s": report,
            "limit_s": 10.0,
        },
        {
            "what": "start-up alone (bench list)",
            "median_s": statistics.median(startup),
            "runs_s": startup,
            "limit_s": None,
        },
    ]
    lines = ["| what | median (s) | runs (s) | target (s) |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {r['what']} | {r['median_s']:.2f} | {', '.join(f'{s:.2f}' for s in r['runs_s'])} | "
        f"{'' if r['limit_s'] is None else '< ' + format(r['limit_s'], 'g')} |"
        for r in rows
    ]
    text = "\n".join(lines)
    print(text)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "kind": "load",
                    "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "rows": rows,
                    "provenance": provenance(torch.device("cpu")),
                },
                indent=2,
            )
            + "\n"
        )
    if args.markdown:
        Path(args.markdown).write_text(
            f"# Load\n\n{text}\n\nEach a fresh process, timed end to end (start-up included).\n\n"
            f"Produced by `{command}`.\n"
        )


if __name__ == "__main__":
    main()
