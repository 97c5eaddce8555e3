"""Does bf16 (and bf16 + compile) cost accuracy on CPU? A paired check against fp32 over seeds.

Runs one suite (default suites/cifar-cpu.yaml) once per precision arm, with the seeds given (default 0-4)
and everything else equal, each arm into results/parity-cpu/<arm>/, then pairs the arms' test top-1 by
(strategy, candidate, seed) and reports, per strategy, the mean difference against fp32 with its 95%
t-interval over seeds and a paired test (Wilcoxon signed-rank, and the paired t-test), Holm-corrected
across the rows of each arm.

    python scripts/precision_parity.py --data-root ../shared/data --threads 1 --filter '^(?!.*l2_sp)' \
        --json results/parity-cpu/parity.json --markdown results/parity-cpu/parity.md
    python scripts/precision_parity.py --arms fp32,bf16 ...   # a subset of the arms
    python scripts/precision_parity.py --analyse-only ...     # only the table, from the arms' records

A rerun resumes each arm where it stopped (bench run's resume). Arms differ only in ``runtime.amp`` and
``runtime.compile``; the thread count is pinned (``--threads``) so every arm sums floats in one order.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ARMS = {
    "fp32": {"amp": "off", "compile": "off"},
    "bf16": {"amp": "bf16", "compile": "off"},
    "bf16+compile": {"amp": "bf16", "compile": "on"},
}
REFERENCE = "fp32"


def arm_folder(out: Path, arm: str) -> Path:
    return out / arm.replace("+", "-")


def run_arm(suite_file: Path, arm: str, seeds: list[int], out: Path, args) -> None:
    suite = yaml.safe_load(suite_file.read_text())
    suite["name"] = f"{suite['name']}-{arm.replace('+', '-')}"
    suite["seeds"] = seeds
    suite["runtime"] = {**(suite.get("runtime") or {}), **ARMS[arm]}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(suite, f)
    command = [sys.executable, "-m", "bench", "run", f.name, "--out", str(arm_folder(out, arm))]
    if args.data_root:
        command += ["--data-root", args.data_root]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.filter:
        command += ["--filter", args.filter]
    print(f"precision_parity: {arm}: {' '.join(command)}", file=sys.stderr, flush=True)
    finished = subprocess.run(command, cwd=ROOT)
    Path(f.name).unlink()
    if finished.returncode not in (0, 1):  # 1: some cell failed, recorded as such
        raise SystemExit(f"precision_parity: the {arm} arm stopped with exit {finished.returncode}")


def paired_rows(out: Path, arms: list[str]) -> list[dict]:
    from scipy import stats

    sys.path.insert(0, str(ROOT))
    from bench.results import frame as results
    from bench.results.stats import summarise

    def top1(arm: str):
        df = results.load(arm_folder(out, arm))
        df = df[df.status == "ok"].assign(candidate=lambda d: d["candidate"].fillna(""))  # "": one model per cell
        return df.set_index(["strategy", "candidate", "seed"])["metrics.test_top1_pct"]

    reference = top1(REFERENCE)
    rows = []
    for arm in arms:
        if arm == REFERENCE:
            continue
        joined = reference.to_frame("reference").join(top1(arm).to_frame("arm"), how="inner")
        arm_rows = []
        for (strategy, candidate), group in joined.groupby(level=["strategy", "candidate"], sort=False):
            diff = (group["arm"] - group["reference"]).to_numpy()
            n = len(diff)
            if n < 2:  # a cell run once in both arms (left out by --filter later) has no interval
                continue
            summary = summarise(diff)  # the report's own t-interval of the mean paired difference
            mean, half = summary.mean, summary.ci_half
            nonzero = diff[diff != 0]
            wilcoxon_p = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) >= 1 else 1.0
            t_p = float(stats.ttest_1samp(diff, 0).pvalue) if n > 1 and diff.std() > 0 else 1.0
            arm_rows.append(
                {
                    "arm": arm,
                    "strategy": strategy,
                    "candidate": candidate,
                    "n_seeds": n,
                    "fp32_top1_pct": float(group["reference"].mean()),
                    "arm_top1_pct": float(group["arm"].mean()),
                    "mean_diff_pp": mean,
                    "ci95_low_pp": mean - half,
                    "ci95_high_pp": mean + half,
                    "wilcoxon_p": wilcoxon_p,
                    "t_test_p": t_p,
                    "diffs_pp": [float(d) for d in diff],
                }
            )
        # Holm over the rows of one arm: a family of tests, one per strategy and candidate
        order = sorted(range(len(arm_rows)), key=lambda i: arm_rows[i]["t_test_p"])
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (len(arm_rows) - rank) * arm_rows[i]["t_test_p"]))
            arm_rows[i]["t_test_p_holm"] = running
        rows += arm_rows
    return rows


def table(rows: list[dict]) -> str:
    from tabulate import tabulate

    return tabulate(
        [
            [
                r["arm"],
                r["strategy"] + (f" ({r['candidate']})" if r["candidate"] else ""),
                r["n_seeds"],
                f"{r['fp32_top1_pct']:.2f}",
                f"{r['arm_top1_pct']:.2f}",
                f"{r['mean_diff_pp']:+.2f} [{r['ci95_low_pp']:+.2f}, {r['ci95_high_pp']:+.2f}]",
                f"{r['t_test_p']:.3f}",
                f"{r['t_test_p_holm']:.3f}",
                f"{r['wilcoxon_p']:.3f}",
            ]
            for r in rows
        ],
        headers=[
            "arm",
            "strategy",
            "seeds",
            "fp32 top-1 (%)",
            "arm top-1 (%)",
            "arm − fp32 (pp) [95% t-interval]",
            "paired t p",
            "Holm p",
            "Wilcoxon p",
        ],
        tablefmt="github",
        disable_numparse=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="suites/cifar-cpu.yaml")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--out", default="results/parity-cpu")
    parser.add_argument("--data-root")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--filter", help="only cells whose id matches (bench run --filter)")
    parser.add_argument("--analyse-only", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",")]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"--arms: unknown {unknown}; known: {', '.join(ARMS)}")
    out = (ROOT / args.out).resolve()
    if not args.analyse_only:
        seeds = [int(s) for s in args.seeds.split(",")]
        for arm in arms:
            run_arm(ROOT / args.suite, arm, seeds, out, args)
    if REFERENCE not in arms or len(arms) < 2:
        return 0
    rows = paired_rows(out, arms)
    text = table(rows)
    print(text)
    import torch

    from bench.commands.common import script_command_line, write_measurement
    from bench.pipeline.provenance import provenance

    payload = {"suite": args.suite, "arms": ARMS, "rows": rows, "provenance": provenance(torch.device("cpu"))}
    write_measurement(
        args,
        "parity",
        payload,
        "Precision parity on CPU",
        f"`{args.suite}`, {args.threads} thread(s), arm minus fp32, paired by seed\n\n{text}",
        command=script_command_line(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
