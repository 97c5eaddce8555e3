"""Results tables, built from the results store alone (never from the training code).

One row per source → target × backbone × strategy: test top-1 as mean ± 95% t-interval over seeds
(α-mix at the α chosen on validation, a strategy trained over a grid at its point chosen on validation), the paired difference to scratch on the same seeds, target and
source compute, and throughput. Cells that failed or have not run yet are counted in their row; a
planned group with no result at all still gets a row. Formats: markdown, LaTeX (booktabs), CSV, and
a self-contained HTML page with the plots inline.
"""
from __future__ import annotations

import csv
import html
import io
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tabulate import tabulate

from transfer_core.files import write_file

from .errors import BenchError
from .records import ResultsStore, latest_records, point_label
from .stats import CONFIDENCE, Summary, paired_difference, summarise as summarise_values

STRATEGY_ORDER = ["scratch", "linear_probe", "full_finetune", "lp_ft", "l2_sp", "alpha_mix"]  # the baseline first
BASELINE_STRATEGY = "scratch"
FORMATS = ("markdown", "latex", "csv", "html")
COLUMNS = ["source → target", "backbone", "strategy", "test top-1 (%)", "n", "Δ vs scratch (pp)", "val top-1 (%)",
           "target compute (s)", "target PFLOPs", "source compute (s)", "total to reach this row (s)", "train images/s"]


class ReportError(BenchError):
    pass


@dataclass
class Results:
    """What a results folder holds: the current records, the plan, and what was left out."""

    directory: Path
    records: list[dict]
    plan: Optional[dict] = None
    stale: int = 0  # records of configurations the plan no longer has


def load_results(results_dir: Path) -> Results:
    store = ResultsStore(results_dir)
    if not store.path.is_file():
        raise ReportError(f"{results_dir}: no records.jsonl here; run a suite first (python -m bench run SUITE.yaml)")
    records, plan = latest_records(store.read()), store.read_plan()
    if not records and plan is None:
        raise ReportError(f"{store.path}: holds no records")
    stale = 0
    if plan is not None:
        planned = {c["config_hash"] for c in plan["cells"]}
        current = [r for r in records if r.get("config_hash") in planned]
        stale, records = len(records) - len(current), current
    return Results(Path(results_dir), records, plan, stale)


def load_records(results_dir: Path) -> list[dict]:
    return load_results(results_dir).records


@dataclass
class Row:
    source: str
    target: str
    backbone: str
    strategy: str
    alphas: list[float] = field(default_factory=list)  # α-mix: the α chosen, per seed
    grid_points: list[dict] = field(default_factory=list)  # a strategy trained over a grid: the point chosen, per seed
    top1_by_seed: dict[int, float] = field(default_factory=dict)
    top1: Optional[Summary] = None
    val_top1: Optional[Summary] = None
    delta_vs_scratch: Optional[Summary] = None
    failed: list[tuple[int, str]] = field(default_factory=list)  # (seed, status)
    missing: list[int] = field(default_factory=list)  # planned seeds with no record yet
    target_s: Optional[float] = None
    target_pflops: Optional[float] = None
    source_s: Optional[float] = None
    img_per_s: Optional[float] = None
    best: bool = False  # the best mean test top-1 of its source, target and backbone, or not significantly worse

    @property
    def label(self) -> str:
        chosen = sorted(set(self.alphas))
        if chosen:
            return f"{self.strategy} (α={'/'.join(f'{a:g}' for a in chosen)})"
        return self.strategy + (f" ({' / '.join(self.chosen_points)})" if self.grid_points else "")

    @property
    def chosen_points(self) -> list[str]:
        """The grid points chosen over the seeds, each once, in the grid's order of values."""
        unique = {point_label(p): p for p in self.grid_points}
        return sorted(unique, key=lambda label: _point_order(unique[label]))

    @property
    def total_s(self) -> Optional[float]:
        """Target compute plus the source model's whole training (0 without one): what reaching this row costs
        from nothing, whatever else the suite lists; the accuracy-vs-compute plot's x."""
        return None if self.target_s is None else self.target_s + (self.source_s or 0.0)

    @property
    def n(self) -> int:
        return len(self.top1_by_seed)


def _point_order(point: dict) -> tuple:
    """Grid points in the order of their values (a null, where a setting may be one, after the rest)."""
    return tuple((value is None, value) for value in point.values())


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _natural(text: str) -> tuple:
    """Numbers inside a label compare as numbers: "(10/class)" before "(40/class)" before "(160/class)"."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def _order(key: tuple) -> tuple:
    strategy = key[3]
    rank = STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else len(STRATEGY_ORDER)
    return _natural(key[0]), _natural(key[1]), key[2], rank, strategy


def summarise_rows(records: list[dict], plan: Optional[dict] = None) -> list[Row]:
    """The table's rows, as numbers. ``records`` should already be the latest per cell."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        if record.get("strategy") is not None:
            groups[(record["source"], record["target"], record["backbone"], record["strategy"])].append(record)
    planned: dict[tuple, set[int]] = defaultdict(set)
    for cell in (plan or {}).get("cells", []):
        planned[(cell["source"], cell["target"], cell["backbone"], cell["strategy"])].add(cell["seed"])

    rows = []
    for key in sorted(set(groups) | set(planned), key=_order):
        group = groups.get(key, [])
        ok = [r for r in group if r["status"] == "ok" and r.get("selected", True)]
        row = Row(*key)
        row.top1_by_seed = {r["seed"]: r["metrics"]["test_top1_pct"] for r in ok}
        row.alphas = [r["alpha"] for r in ok if r.get("alpha") is not None]
        row.grid_points = [r["grid_point"] for r in ok if r.get("grid_point")]
        row.top1 = summarise_values(row.top1_by_seed.values())
        row.val_top1 = summarise_values([r["metrics"].get("val_top1_pct") for r in ok])
        row.failed = sorted({(r["seed"], r["status"]) for r in group if r["status"] != "ok"})
        row.missing = sorted(planned.get(key, set()) - {r["seed"] for r in group})
        row.target_s = _mean(r["compute"].get("target_total_s") for r in ok)
        flops = _mean(r["compute"].get("target_train_flops") for r in ok)
        row.target_pflops = None if flops is None else flops / 1e15
        row.source_s = _mean(r["compute"].get("source_train_s_total") for r in ok)
        row.img_per_s = _mean(r["compute"].get("target_img_per_s") for r in ok)
        rows.append(row)

    by_target: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        by_target[(row.source, row.target, row.backbone)].append(row)
    for same in by_target.values():
        scratch = next((r for r in same if r.strategy == BASELINE_STRATEGY), None)
        for row in same:
            if scratch is not None and row is not scratch:
                row.delta_vs_scratch = paired_difference(row.top1_by_seed, scratch.top1_by_seed)
    for same in by_target.values():
        _mark_best(same)
    return rows


def _mark_best(rows: list[Row]) -> None:
    """Bold, among the rows of one source, target and backbone: the highest mean test top-1, and every row
    not significantly worse than it (the paired interval over seeds of its difference to the best reaches
    0). A row with no interval (one seed in common) is bold only if it is the best."""
    scored = [r for r in rows if r.top1 is not None]
    if not scored:
        return
    best = max(scored, key=lambda r: r.top1.mean)
    for row in scored:
        gap = paired_difference(row.top1_by_seed, best.top1_by_seed)
        row.best = row is best or (gap is not None and gap.ci_half is not None and gap.mean + gap.ci_half >= 0)


# --- display ---------------------------------------------------------------------------------------

def _interval(summary: Optional[Summary], signed: bool = False) -> str:
    if summary is None:
        return "–"
    value = f"{summary.mean:+.2f}" if signed else f"{summary.mean:.2f}"
    return value if summary.ci_half is None else f"{value} ± {summary.ci_half:.2f}"


def _count(row: Row) -> str:
    notes = []
    if row.failed:
        notes.append(f"+{len(row.failed)} failed: {', '.join(status for _, status in row.failed)}")
    if row.missing:
        notes.append(f"{len(row.missing)} missing")
    return str(row.n) + (f" ({'; '.join(notes)})" if notes else "")


def _number(value: Optional[float], spec: str) -> str:
    return "–" if value is None else format(value, spec)


def display_cells(row: Row) -> list[str]:
    return [
        f"{row.source} → {row.target}", row.backbone, row.label, _interval(row.top1), _count(row),
        _interval(row.delta_vs_scratch, signed=True), _number(row.val_top1.mean if row.val_top1 else None, ".2f"),
        _number(row.target_s, ",.1f"), _number(row.target_pflops, ".3g"), _number(row.source_s, ",.1f"),
        _number(row.total_s, ",.1f"), _number(row.img_per_s, ",.0f"),
    ]


TOP1_COLUMN = COLUMNS.index("test top-1 (%)")


_MARKDOWN_SPECIALS = {"\\": "\\\\", "|": "\\|", "`": "\\`", "*": "\\*", "<": "&lt;", ">": "&gt;", "\n": " ", "\r": " "}


def markdown_escape(text: str) -> str:
    """Names from a suite or a records file, shown as text: no table cell broken by ``|``, no link, image,
    emphasis or raw HTML made from them (brackets stay, as in ``digits[0-4]``: without ``](`` or ``][``
    right after them they make no link)."""
    escaped = "".join(_MARKDOWN_SPECIALS.get(ch, ch) for ch in str(text))
    return escaped.replace("](", "]\\(").replace("][", "]\\[")


def render_markdown(rows: list[Row]) -> str:
    table = []
    for row in rows:
        cells = [markdown_escape(cell) for cell in display_cells(row)]
        if row.best:
            cells[TOP1_COLUMN] = f"**{cells[TOP1_COLUMN]}**"
        table.append(cells)
    return tabulate(table, headers=COLUMNS, tablefmt="github", disable_numparse=True)


def render_csv(rows: list[Row]) -> str:
    """Raw numbers for other tools: no rounding, no formatting."""
    fields = ["source", "target", "backbone", "strategy", "selected_alphas", "selected_grid_points", "n", "failed", "missing",
              "test_top1_mean", "test_top1_std", "test_top1_ci95_low", "test_top1_ci95_high",
              "delta_vs_scratch_mean", "delta_vs_scratch_ci95_half", "val_top1_mean",
              "target_compute_s", "target_pflops", "source_compute_s", "total_compute_s", "target_img_per_s"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)
    for row in rows:
        low, high = row.top1.ci if row.top1 and row.top1.ci else (None, None)
        writer.writerow([
            row.source, row.target, row.backbone, row.strategy, "/".join(f"{a:g}" for a in row.alphas),
            " / ".join(point_label(p) for p in row.grid_points), row.n,
            ";".join(f"seed{s}:{status}" for s, status in row.failed), ";".join(f"seed{s}" for s in row.missing),
            row.top1.mean if row.top1 else None, row.top1.std if row.top1 else None, low, high,
            row.delta_vs_scratch.mean if row.delta_vs_scratch else None,
            row.delta_vs_scratch.ci_half if row.delta_vs_scratch else None,
            row.val_top1.mean if row.val_top1 else None,
            row.target_s, row.target_pflops, row.source_s, row.total_s, row.img_per_s,
        ])
    return out.getvalue()


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "→": r"$\rightarrow$", "α": r"$\alpha$", "Δ": r"$\Delta$", "–": "--"}


def latex_escape(text: str) -> str:
    escaped = "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)
    for symbol, command in _LATEX_SYMBOLS.items():
        escaped = escaped.replace(symbol, command)
    return escaped


def render_latex(rows: list[Row], caption: str = "") -> str:
    """A booktabs tabular, ready to ``\\input`` inside a table environment (needs ``\\usepackage{booktabs}``)."""
    align = "lll" + "r" * (len(COLUMNS) - 3)
    lines = [f"% {latex_escape(caption)}" if caption else "% transfer-bench results table",
             "% needs \\usepackage{booktabs}", f"\\begin{{tabular}}{{{align}}}", "\\toprule",
             " & ".join(latex_escape(c) for c in COLUMNS) + r" \\", "\\midrule"]
    for row in rows:
        cells = [latex_escape(c) for c in display_cells(row)]
        if row.best:
            cells[TOP1_COLUMN] = f"\\textbf{{{cells[TOP1_COLUMN]}}}"
        lines.append(" & ".join(cells) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def render_html(rows: list[Row], title: str, notes: list[str], figures: list[str]) -> str:
    """One self-contained page: the table, the notes, and the plots as inline SVG (nothing fetched)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for row in rows:
        cells = [html.escape(c) for c in display_cells(row)]
        if row.best:
            cells[TOP1_COLUMN] = f"<strong>{cells[TOP1_COLUMN]}</strong>"
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    paragraphs = "".join(f"<p>{html.escape(n)}</p>" for n in notes if n)
    style = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:14px}"
             "th,td{padding:4px 10px;border-bottom:1px solid #ccc;text-align:right}th{border-bottom:2px solid #444}"
             "td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}figure{margin:2em 0}svg{max-width:100%;height:auto}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{paragraphs}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            + "".join(f"<figure>{svg}</figure>" for svg in figures) + "</body></html>\n")


def grid_table(records: list[dict]) -> str:
    """Every point of each strategy trained over a grid: mean validation and test top-1 over seeds, and how
    many seeds selected it. Empty when no strategy has a grid."""
    points: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("status") == "ok" and r.get("grid_point"):
            points[(r["source"], r["target"], r["backbone"], r["strategy"])].append(r)
    table = []
    for key in sorted(points, key=_order):
        source, target, backbone, strategy = key
        by_point: dict[str, list[dict]] = defaultdict(list)
        for r in points[key]:
            by_point[point_label(r["grid_point"])].append(r)
        for label, group in sorted(by_point.items(), key=lambda item: _point_order(item[1][0]["grid_point"])):
            table.append([markdown_escape(f"{source} → {target}"), markdown_escape(backbone), markdown_escape(strategy),
                          markdown_escape(label),
                          _number(_mean(r["metrics"].get("val_top1_pct") for r in group), ".2f"),
                          _number(_mean(r["metrics"].get("test_top1_pct") for r in group), ".2f"),
                          f"{sum(1 for r in group if r.get('selected'))} of {len(group)}"])
    if not table:
        return ""
    headers = ["source → target", "backbone", "strategy", "grid point", "val top-1 (%)", "test top-1 (%)", "selected (seeds)"]
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def render(records: list[dict], fmt: str = "markdown", plan: Optional[dict] = None) -> str:
    return render_rows(summarise_rows(latest_records(records), plan), fmt)


def render_rows(rows: list[Row], fmt: str = "markdown") -> str:
    if fmt == "markdown":
        return render_markdown(rows)
    if fmt == "csv":
        return render_csv(rows)
    if fmt == "latex":
        return render_latex(rows)
    raise ReportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def provenance_line(records: list[dict]) -> str:
    ok = [r for r in records if r.get("provenance")]
    if not ok:
        return ""
    last = ok[-1]["provenance"]
    commit = (last.get("git_commit") or "unknown")[:10] + (" (dirty)" if last.get("git_dirty") else "")
    dates = sorted(r["provenance"].get("finished_at", "") for r in ok)
    return (f"Measured on {last.get('device_name')} with torch {last.get('torch')}, runtime {last.get('runtime')}, "
            f"commit {commit}, between {dates[0]} and {dates[-1]} (UTC); command: `{last.get('command')}`.")


def notes(results: Results) -> list[str]:
    """How the numbers were obtained, and what the table does not show."""
    lines = [provenance_line(results.records)]
    sources, pretrained = {}, {}
    for r in results.records:
        if r.get("source_model", {}) and r["source_model"].get("weights"):
            pretrained[r["source"]] = r["source_model"]["weights"]
        elif r.get("source_model"):
            sources[(r["source"], r["backbone"], r["seed"])] = r["source_model"]["test_top1_pct"]
    if sources:
        per = defaultdict(list)
        for (source, backbone, _), acc in sources.items():
            per[(source, backbone)].append(acc)
        lines.append("Source models (test top-1 on their own task): " + "; ".join(
            f"{s}/{b}: {_interval(summarise_values(v))}% over {len(v)} seed{'s' if len(v) != 1 else ''}" for (s, b), v in sorted(per.items())))
    if pretrained:
        lines.append("Pretrained sources (loaded, no source training): " + "; ".join(
            f"{name}: {w['library']} {w['model']}{' ' + w['weights'] if w.get('weights') else ''}, sha256 {w['sha256'][:12]}…"
            for name, w in sorted(pretrained.items())))
    lines.append(
        f"Test top-1 is the mean over seeds ± the half-width of its {CONFIDENCE:.0%} confidence interval (Student t, "
        "n−1 degrees of freedom; none with one seed). In bold, per source, target and backbone: the best mean and every "
        "row not significantly worse than it (the paired interval of its difference to the best, over the seeds both "
        "have, reaches 0). Δ vs scratch is the paired difference on the seeds both have, with its interval. α-mix rows "
        "use the α chosen on validation, and their val column is that α's (the highest over the α tried, so biased "
        "upward); so do the rows of a strategy trained over a grid, named with the point chosen. Target compute is "
        "training seconds of every model the row is built from, each counted once (LP-FT: the probe and its fine-tune; "
        "α-mix: its two ingredients plus its α search on validation; a grid: every point, plus scoring them on "
        "validation) and PFLOPs (forward "
        "+ backward); source compute is the source model's whole training, and the total to reach a row is source plus "
        "target, however many rows share the source. Train images/s is target training images over target training "
        "seconds, where an image counts each time it passes through the network in training (forward and backward; "
        "the linear probe's one feature pass, forward only, and its head's epochs over cached features not at all).")
    if results.stale:
        lines.append(f"{results.stale} records of configurations the suite no longer has are left out.")
    return lines


def report_markdown(results: Results, title: str) -> str:
    """The report file: a title, how the numbers were obtained, the table, the plots if written."""
    rows = summarise_rows(results.records, results.plan)
    written = [markdown_escape(line) for line in notes(results)]
    body = [f"# {markdown_escape(title)}", "", written[0], "", render_markdown(rows), ""]
    body += [line + "\n" for line in written[1:]]
    for stem, caption in (("accuracy_vs_compute", "Accuracy against compute"), ("alpha_curve", "α curve"),
                          ("regimes", "Top-1 against training examples per class")):
        if (results.directory / f"{stem}.png").is_file():
            body.append(f"![{caption}]({stem}.png)\n")
    grids = grid_table(results.records)
    if grids:
        body += ["## Grid points", "", "Every point of each strategy trained over a grid (means over seeds); the table above "
                 "shows the point each seed selected on validation.", "", grids, ""]
    return "\n".join(body)


def write_reports(results: Results, title: str) -> list[Path]:
    """Every artefact, into the results folder: report.md/.tex/.csv/.html and the plots (PNG and SVG)."""
    from . import plots

    rows = summarise_rows(results.records, results.plan)
    written = plots.write_plots(results.records, rows, results.directory)
    svgs = [plots.inline_svg(path.read_text(encoding="utf-8")) for path in written if path.suffix == ".svg"]
    outputs = {
        "report.md": report_markdown(results, title),
        "report.tex": render_latex(rows, caption=f"{title}. {notes(results)[0]}"),
        "report.csv": render_csv(rows),
        "report.html": render_html(rows, title, notes(results), svgs),
    }
    for name, text in outputs.items():
        write_file(results.directory / name, text)
        written.append(results.directory / name)
    return written


def paired_table(results: Results, a: str, b: str) -> str:
    """``a`` − ``b`` test top-1 on shared seeds, per source → target × backbone."""
    rows = summarise_rows(results.records, results.plan)
    by_key = {(r.source, r.target, r.backbone, r.strategy): r for r in rows}
    table = []
    for (source, target, backbone, strategy), row in by_key.items():
        if strategy != a or (source, target, backbone, b) not in by_key:
            continue
        other = by_key[(source, target, backbone, b)]
        difference = paired_difference(row.top1_by_seed, other.top1_by_seed)
        table.append([markdown_escape(f"{source} → {target}"), markdown_escape(backbone), _interval(row.top1), _interval(other.top1),
                      _interval(difference, signed=True), difference.n if difference else 0])
    if not table:
        raise ReportError(f"no source → target has both {a!r} and {b!r} results")
    headers = ["source → target", "backbone", f"{a} top-1 (%)", f"{b} top-1 (%)", f"{a} − {b} (pp, paired)", "seeds paired"]
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)
