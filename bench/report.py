"""Results tables, built from the results store alone (never from the training code).

One row per source -> target x backbone x strategy: top-1 mean +/- std over seeds (alpha-mix at the
alpha selected on validation), target compute and the amortised source compute.
"""
from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

from .records import ResultsStore, latest_records

STRATEGY_ORDER = ["scratch", "linear_probe", "full_finetune", "alpha_mix"]  # the baseline first
COLUMNS = ["source → target", "backbone", "strategy", "test top-1 (%)", "seeds", "val top-1 (%)",
           "target compute (s)", "source compute (s, amortised)", "target img/s"]


class ReportError(ValueError):
    pass


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _fmt_mean_std(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    mean, std = _mean_std(values)
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _fmt_mean(values: list, digits: int) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.fmean(values):,.{digits}f}" if values else "–"


def summarise(records: list[dict]) -> list[dict]:
    """Rows of the results table, as plain values and display strings."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record in latest_records(records):
        if record.get("strategy") is None:
            continue
        groups[(record["source"], record["target"], record["backbone"], record["strategy"])].append(record)

    def order(key):
        strategy = key[3]
        rank = STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else len(STRATEGY_ORDER)
        return key[0], key[1], key[2], rank, strategy

    rows = []
    for key in sorted(groups, key=order):
        group = groups[key]
        ok = [r for r in group if r["status"] == "ok" and r.get("selected", True)]
        failed = sorted({(r["seed"], r["status"]) for r in group if r["status"] != "ok"})
        alphas = sorted({r["alpha"] for r in ok if r.get("alpha") is not None})
        strategy = key[3] + (f" (α={'/'.join(f'{a:g}' for a in alphas)})" if alphas else "")
        seeds = str(len(ok)) + (f" (+{len(failed)} failed: {', '.join(s for _, s in failed)})" if failed else "")
        top1 = [r["metrics"]["test_top1_pct"] for r in ok]
        val = [r["metrics"]["val_top1_pct"] for r in ok if r["metrics"].get("val_top1_pct") is not None]
        rows.append({
            "source → target": f"{key[0]} → {key[1]}", "backbone": key[2], "strategy": strategy,
            "test top-1 (%)": _fmt_mean_std(top1), "seeds": seeds, "val top-1 (%)": _fmt_mean_std(val),
            "target compute (s)": _fmt_mean([r["compute"]["target_total_s"] for r in ok], 1),
            "source compute (s, amortised)": _fmt_mean([r["compute"]["source_train_s_amortised"] for r in ok], 1),
            "target img/s": _fmt_mean([r["compute"].get("target_img_per_s") for r in ok], 0),
            "_test_top1_mean": statistics.fmean(top1) if top1 else None,
        })
    return rows


def provenance_line(records: list[dict]) -> str:
    ok = [r for r in records if r.get("provenance")]
    if not ok:
        return ""
    last = ok[-1]["provenance"]
    commit = (last.get("git_commit") or "unknown")[:10] + (" (dirty)" if last.get("git_dirty") else "")
    dates = sorted(r["provenance"].get("finished_at", "") for r in ok)
    return (f"Measured on {last.get('device_name')} with torch {last.get('torch')}, runtime {last.get('runtime')}, "
            f"commit {commit}, between {dates[0]} and {dates[-1]} (UTC); command: `{last.get('command')}`.")


def render(records: list[dict], fmt: str = "markdown") -> str:
    rows = summarise(records)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    if fmt != "markdown":
        raise ReportError(f"unknown format {fmt!r}; choose markdown or csv")
    return tabulate([[row[c] for c in COLUMNS] for row in rows], headers=COLUMNS, tablefmt="github", disable_numparse=True)


def report_markdown(records: list[dict], title: str) -> str:
    """The report file: a title, how the numbers were obtained, the table."""
    sources = {}
    for r in records:
        if r.get("source_model"):
            sources[(r["source"], r["backbone"], r["seed"])] = r["source_model"]["test_top1_pct"]
    lines = [f"# {title}", "", provenance_line(records), "", render(records, "markdown"), ""]
    if sources:
        per = defaultdict(list)
        for (source, backbone, _), acc in sources.items():
            per[(source, backbone)].append(acc)
        lines += ["Source models (test top-1 on their own task): " +
                  "; ".join(f"{s}/{b}: {_fmt_mean_std(v)}% over {len(v)} seeds" for (s, b), v in sorted(per.items())), ""]
    lines += ["Top-1 is mean ± sample std over seeds; α-mix rows use the α chosen on validation. Target compute is "
              "training seconds (α-mix: its two ingredients plus its α search); source compute is the source model's "
              "training seconds divided by the cells that reuse it.", ""]
    return "\n".join(lines)


def load_records(results_dir: Path) -> list[dict]:
    store = ResultsStore(results_dir)
    if not store.path.is_file():
        raise ReportError(f"{results_dir}: no records.jsonl here; run a suite first (python -m bench run SUITE.yaml)")
    return store.read()
