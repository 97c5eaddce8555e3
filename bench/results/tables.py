"""The results tables, as one contract every format follows: the rows (``Row``, one per source → target ×
backbone × strategy; ``GridRow``, one per point of a search), and each table as one list of columns that
markdown, LaTeX (booktabs), CSV and the self-contained HTML page all render, so a new column is one line in
its table's list and no format lacks a table. Names from suites and records are escaped for each format.
``report.py`` computes the rows; this module only shows them. The numbers' own definitions (direction,
unit, meaning) are in ``fields.py``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from tabulate import tabulate

from bench.errors import ReportError
from bench.results.records import point_label
from bench.results.stats import Summary
from bench.text import number

FORMATS = ("markdown", "latex", "csv", "html")


@dataclass
class Row:
    """One row of the results table: a source → target × backbone × strategy over its seeds."""

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
    p_vs_best: Optional[float] = None  # Holm-corrected paired t-test against the best row (None: untested)
    baseline: bool = False  # the strategy the others' Δ is against (its ``baseline`` flag)
    marker: str = ""  # the strategy's plot marker ("" : a spare one)

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
        return sorted(unique, key=lambda label: point_order(unique[label]))

    @property
    def total_s(self) -> Optional[float]:
        """Target compute plus the source model's whole training (0 without one): what reaching this row costs
        from nothing, whatever else the suite lists; the accuracy-vs-compute plot's x."""
        return None if self.target_s is None else self.target_s + (self.source_s or 0.0)

    @property
    def n(self) -> int:
        return len(self.top1_by_seed)


@dataclass
class GridRow:
    """One point of a search (a grid's or tuning's trial) over the seeds: its mean validation and test top-1,
    and how many seeds selected it."""

    source: str
    target: str
    backbone: str
    strategy: str
    point: str  # its label, e.g. ``lr=0.03``
    val_top1: Optional[float]
    test_top1: Optional[float]
    selected: int  # seeds that chose it (under refit: the point the refit retrained)
    seeds: int  # seeds that trained it


def point_order(point: dict) -> tuple:
    """Grid points in the order of their values (a null, where a setting may be one, after the rest)."""
    return tuple((value is None, value) for value in point.values())


@dataclass(frozen=True)
class Column:
    header: str  # as the markdown, LaTeX and HTML tables show it
    show: Callable[[Any], str]  # the cell as text
    csv: tuple[tuple[str, Callable[[Any], Any]], ...]  # the CSV's raw values for it: (column name, value) each
    text: bool = False  # names, aligned left (numbers align right)
    emphasised: bool = False  # bold on a row that is ``best``


@dataclass(frozen=True)
class Table:
    name: str  # the CSV file's stem
    title: str  # its section heading ("": the report's main table, under the report's own title)
    note: str  # what it shows, printed above it
    columns: tuple[Column, ...]

    @property
    def headers(self) -> list[str]:
        return [c.header for c in self.columns]


# the first two columns of every table whose rows are a source → target × backbone (× strategy)
PAIR_COLUMNS = (
    Column(
        "source → target",
        lambda r: f"{r.source} → {r.target}",
        (("source", lambda r: r.source), ("target", lambda r: r.target)),
        text=True,
    ),
    Column("backbone", lambda r: r.backbone, (("backbone", lambda r: r.backbone),), text=True),
)


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


def _summary_part(name: str, part: str):
    def value(row: Row):
        summary = getattr(row, name)
        if summary is None:
            return None
        if part in ("low", "high"):
            return None if summary.ci is None else summary.ci[0 if part == "low" else 1]
        return getattr(summary, part)

    return value


RESULTS = Table(
    "report",
    "",
    "",
    (
        *PAIR_COLUMNS,
        Column(
            "strategy",
            lambda r: r.label,
            (
                ("strategy", lambda r: r.strategy),
                ("selected_alphas", lambda r: "/".join(f"{a:g}" for a in r.alphas)),
                ("selected_grid_points", lambda r: " / ".join(point_label(p) for p in r.grid_points)),
            ),
            text=True,
        ),
        Column(
            "test top-1 (%)",
            lambda r: interval(r.top1),
            (
                ("test_top1_mean", _summary_part("top1", "mean")),
                ("test_top1_std", _summary_part("top1", "std")),
                ("test_top1_ci95_low", _summary_part("top1", "low")),
                ("test_top1_ci95_high", _summary_part("top1", "high")),
                ("bold", lambda r: r.best),
                ("p_vs_best_holm", lambda r: r.p_vs_best),
            ),
            emphasised=True,
        ),
        Column(
            "n",
            _count,
            (
                ("n", lambda r: r.n),
                ("failed", lambda r: ";".join(f"seed{s}:{status}" for s, status in r.failed)),
                ("missing", lambda r: ";".join(f"seed{s}" for s in r.missing)),
            ),
        ),
        Column(
            "Δ vs scratch (pp)",
            lambda r: interval(r.delta_vs_scratch, signed=True),
            (
                ("delta_vs_scratch_mean", _summary_part("delta_vs_scratch", "mean")),
                ("delta_vs_scratch_ci95_half", _summary_part("delta_vs_scratch", "ci_half")),
            ),
        ),
        Column(
            "val top-1 (%)",
            lambda r: number(r.val_top1.mean if r.val_top1 else None, ".2f"),
            (("val_top1_mean", _summary_part("val_top1", "mean")),),
        ),
        Column(
            "target compute (s)", lambda r: number(r.target_s, ",.1f"), (("target_compute_s", lambda r: r.target_s),)
        ),
        Column(
            "target PFLOPs", lambda r: number(r.target_pflops, ".3g"), (("target_pflops", lambda r: r.target_pflops),)
        ),
        Column(
            "source compute (s)", lambda r: number(r.source_s, ",.1f"), (("source_compute_s", lambda r: r.source_s),)
        ),
        Column(
            "total to reach this row (s)",
            lambda r: number(r.total_s, ",.1f"),
            (("total_compute_s", lambda r: r.total_s),),
        ),
        Column("train images/s", lambda r: number(r.img_per_s, ",.0f"), (("target_img_per_s", lambda r: r.img_per_s),)),
    ),
)

GRID_POINTS = Table(
    "grid_points",
    "Grid points",
    "Every point of each strategy trained over a grid or tuned (means over seeds); the table above shows the point "
    "each seed selected on validation.",
    (
        *PAIR_COLUMNS,
        Column("strategy", lambda g: g.strategy, (("strategy", lambda g: g.strategy),), text=True),
        Column("grid point", lambda g: g.point, (("grid_point", lambda g: g.point),), text=True),
        Column("val top-1 (%)", lambda g: number(g.val_top1, ".2f"), (("val_top1_mean", lambda g: g.val_top1),)),
        Column("test top-1 (%)", lambda g: number(g.test_top1, ".2f"), (("test_top1_mean", lambda g: g.test_top1),)),
        Column(
            "selected (seeds)",
            lambda g: f"{g.selected} of {g.seeds}",
            (("selected_seeds", lambda g: g.selected), ("seeds", lambda g: g.seeds)),
        ),
    ),
)

TABLES = (RESULTS, GRID_POINTS)  # in the order a report shows them


def _cells(table: Table, row, escape: Callable[[str], str], bold: Callable[[str], str]) -> list[str]:
    cells = [escape(column.show(row)) for column in table.columns]
    if getattr(row, "best", False):
        cells = [bold(c) if column.emphasised else c for c, column in zip(cells, table.columns)]
    return cells


_MARKDOWN_SPECIALS = {"\\": "\\\\", "|": "\\|", "`": "\\`", "*": "\\*", "<": "&lt;", ">": "&gt;", "\n": " ", "\r": " "}


def markdown_escape(text: str) -> str:
    """Names from a suite or a records file, shown as text: no table cell broken by ``|``, no link, image,
    emphasis or raw HTML made from them (brackets stay, as in ``digits[0-4]``: without ``](`` or ``][``
    right after them they make no link)."""
    escaped = "".join(_MARKDOWN_SPECIALS.get(ch, ch) for ch in str(text))
    return escaped.replace("](", "]\\(").replace("][", "]\\[")


def render_markdown(rows: list, table: Table = RESULTS) -> str:
    body = [_cells(table, row, markdown_escape, lambda c: f"**{c}**") for row in rows]
    headers = [markdown_escape(h) for h in table.headers]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def render_csv(rows: list, table: Table = RESULTS) -> str:
    """Raw numbers for other tools: no rounding, no formatting."""
    import pandas as pd

    named = [pair for column in table.columns for pair in column.csv]
    body = [[value(row) for _, value in named] for row in rows]
    # object columns: a number is written as Python writes it, and None as an empty field
    return pd.DataFrame(body, columns=[name for name, _ in named], dtype=object).to_csv(
        index=False, lineterminator="\n"
    )


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


def render_latex(rows: list, table: Table = RESULTS, caption: str = "") -> str:
    """A booktabs tabular, ready to ``\\input`` inside a table environment (needs ``\\usepackage{booktabs}``)."""
    align = "".join("l" if c.text else "r" for c in table.columns)
    lines = [
        f"% {latex_escape(caption)}" if caption else f"% transfer-bench {latex_escape(table.title or 'results')} table",
        "% needs \\usepackage{booktabs}",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in table.headers) + r" \\",
        "\\midrule",
    ]
    for row in rows:
        lines.append(" & ".join(_cells(table, row, latex_escape, lambda c: f"\\textbf{{{c}}}")) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def render_html_table(rows: list, table: Table = RESULTS) -> str:
    def cell(tag: str, text: str, column: Column) -> str:
        return f'<{tag} class="{"text" if column.text else "number"}">{text}</{tag}>'

    head = "".join(cell("th", html.escape(c.header), c) for c in table.columns)
    body = "".join(
        "<tr>"
        + "".join(
            cell("td", text, column)
            for text, column in zip(_cells(table, row, html.escape, lambda c: f"<strong>{c}</strong>"), table.columns)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_page(title: str, notes: list[str], sections: list[tuple[Table, list]], figures: list[str]) -> str:
    """One self-contained page: the notes, every table with its heading and note, and the plots as inline SVG
    (nothing fetched)."""
    paragraphs = "".join(f"<p>{html.escape(n)}</p>" for n in notes if n)
    tables = "".join(
        (f"<h2>{html.escape(table.title)}</h2>" if table.title else "")
        + (f"<p>{html.escape(table.note)}</p>" if table.note else "")
        + render_html_table(rows, table)
        for table, rows in sections
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:14px}"
        "th,td{padding:4px 10px;border-bottom:1px solid #ccc}th{border-bottom:2px solid #444}"
        ".number{text-align:right}.text{text-align:left}figure{margin:2em 0}svg{max-width:100%;height:auto}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{paragraphs}{tables}"
        + "".join(f"<figure>{svg}</figure>" for svg in figures)
        + "</body></html>\n"
    )


def render_rows(rows: list, fmt: str = "markdown", table: Table = RESULTS) -> str:
    """One table in a text format (``render_page`` makes the HTML page)."""
    if fmt == "markdown":
        return render_markdown(rows, table)
    if fmt == "csv":
        return render_csv(rows, table)
    if fmt == "latex":
        return render_latex(rows, table)
    raise ReportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
