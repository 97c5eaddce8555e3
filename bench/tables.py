"""How a results table is written: markdown, CSV, LaTeX (booktabs) and a self-contained HTML page; names
from suites and records escaped for each. ``report.py`` makes the rows; this module only shows them."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Optional

from tabulate import tabulate

from .errors import ReportError
from .records import point_label
from .stats import Summary
from .text import number

if TYPE_CHECKING:
    from .report import Row

FORMATS = ("markdown", "latex", "csv", "html")
COLUMNS = [
    "source → target",
    "backbone",
    "strategy",
    "test top-1 (%)",
    "n",
    "Δ vs scratch (pp)",
    "val top-1 (%)",
    "target compute (s)",
    "target PFLOPs",
    "source compute (s)",
    "total to reach this row (s)",
    "train images/s",
]


def interval(summary: Optional[Summary], signed: bool = False) -> str:
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


def display_cells(row: Row) -> list[str]:
    return [
        f"{row.source} → {row.target}",
        row.backbone,
        row.label,
        interval(row.top1),
        _count(row),
        interval(row.delta_vs_scratch, signed=True),
        number(row.val_top1.mean if row.val_top1 else None, ".2f"),
        number(row.target_s, ",.1f"),
        number(row.target_pflops, ".3g"),
        number(row.source_s, ",.1f"),
        number(row.total_s, ",.1f"),
        number(row.img_per_s, ",.0f"),
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
    import pandas as pd

    columns = [
        "source",
        "target",
        "backbone",
        "strategy",
        "selected_alphas",
        "selected_grid_points",
        "n",
        "failed",
        "missing",
        "test_top1_mean",
        "test_top1_std",
        "test_top1_ci95_low",
        "test_top1_ci95_high",
        "delta_vs_scratch_mean",
        "delta_vs_scratch_ci95_half",
        "bold",
        "p_vs_best_holm",
        "val_top1_mean",
        "target_compute_s",
        "target_pflops",
        "source_compute_s",
        "total_compute_s",
        "target_img_per_s",
    ]
    table = []
    for row in rows:
        low, high = row.top1.ci if row.top1 and row.top1.ci else (None, None)
        table.append(
            [
                row.source,
                row.target,
                row.backbone,
                row.strategy,
                "/".join(f"{a:g}" for a in row.alphas),
                " / ".join(point_label(p) for p in row.grid_points),
                row.n,
                ";".join(f"seed{s}:{status}" for s, status in row.failed),
                ";".join(f"seed{s}" for s in row.missing),
                row.top1.mean if row.top1 else None,
                row.top1.std if row.top1 else None,
                low,
                high,
                row.delta_vs_scratch.mean if row.delta_vs_scratch else None,
                row.delta_vs_scratch.ci_half if row.delta_vs_scratch else None,
                row.best,
                row.p_vs_best,
                row.val_top1.mean if row.val_top1 else None,
                row.target_s,
                row.target_pflops,
                row.source_s,
                row.total_s,
                row.img_per_s,
            ]
        )
    # object columns: a number is written as Python writes it, and None as an empty field
    return pd.DataFrame(table, columns=columns, dtype=object).to_csv(index=False, lineterminator="\n")


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_SYMBOLS = {"±": r"$\pm$", "→": r"$\rightarrow$", "α": r"$\alpha$", "Δ": r"$\Delta$", "–": "--"}


def latex_escape(text: str) -> str:
    escaped = "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)
    for symbol, command in _LATEX_SYMBOLS.items():
        escaped = escaped.replace(symbol, command)
    return escaped


def render_latex(rows: list[Row], caption: str = "") -> str:
    """A booktabs tabular, ready to ``\\input`` inside a table environment (needs ``\\usepackage{booktabs}``)."""
    align = "lll" + "r" * (len(COLUMNS) - 3)
    lines = [
        f"% {latex_escape(caption)}" if caption else "% transfer-bench results table",
        "% needs \\usepackage{booktabs}",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in COLUMNS) + r" \\",
        "\\midrule",
    ]
    for row in rows:
        cells = [latex_escape(c) for c in display_cells(row)]
        if row.best:
            cells[TOP1_COLUMN] = f"\\textbf{{{cells[TOP1_COLUMN]}}}"
        lines.append(" & ".join(cells) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def render_html(rows: list[Row], title: str, notes: list[str], figures: list[str], extra: str = "") -> str:
    """One self-contained page: the table, the notes, ``extra`` HTML (the grid points' table), and the plots
    as inline SVG (nothing fetched)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for row in rows:
        cells = [html.escape(c) for c in display_cells(row)]
        if row.best:
            cells[TOP1_COLUMN] = f"<strong>{cells[TOP1_COLUMN]}</strong>"
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    paragraphs = "".join(f"<p>{html.escape(n)}</p>" for n in notes if n)
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:14px}"
        "th,td{padding:4px 10px;border-bottom:1px solid #ccc;text-align:right}th{border-bottom:2px solid #444}"
        "td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}figure{margin:2em 0}svg{max-width:100%;height:auto}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{paragraphs}"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{extra}"
        + "".join(f"<figure>{svg}</figure>" for svg in figures)
        + "</body></html>\n"
    )


def render_rows(rows: list[Row], fmt: str = "markdown") -> str:
    if fmt == "markdown":
        return render_markdown(rows)
    if fmt == "csv":
        return render_csv(rows)
    if fmt == "latex":
        return render_latex(rows)
    raise ReportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
