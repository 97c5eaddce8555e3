"""Results tables, built from the results store alone (never from the training code).

One row per source → target × backbone × strategy: test top-1 as mean ± 95% t-interval over seeds
(α-mix at the α chosen on validation, a strategy trained over a grid at its point chosen on
validation), the paired difference to the baseline strategy (scratch) on the same seeds, target and
source compute, and throughput. Strategies are ordered, and the baseline found, by what each declares
(carried by its records). Cells that failed or have not run yet are counted in their row; a
planned group with no result at all still gets a row. Formats: markdown, LaTeX (booktabs), CSV, and
a self-contained HTML page with the plots inline.

Longer than 400 lines on purpose: the rows, their statistics and the four formats render one table, and the
notes under it state the rules the rows follow; the plots (``plots.py``), the tables' layout (``tables.py``)
and the statistics (``stats.py``) live apart.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tabulate import tabulate

from transfer_core.files import write_file

from bench.results import robustness, transferability
from bench.errors import ReportError
from bench.results.records import latest_records, point_label, strategy_info
from bench.results.frame import Results, frame
from bench.results.frame import read as read_results
from bench.results.stats import CONFIDENCE, MIN_SEEDS_FOR_TESTS, holm_paired_tests, paired_difference
from bench.results.stats import summarise as summarise_values
from bench.results.tables import (
    GRID_POINTS,
    RESULTS,
    GridRow,
    Row,
    Table,
    interval,
    markdown_escape,
    point_order,
    render_csv,
    render_latex,
    render_markdown,
    render_page,
    render_rows,
)
from bench.text import commit_label

GROUP = ["source", "target", "backbone", "strategy"]  # one table row each
NUMBERS = [
    "metrics.test_top1_pct",
    "metrics.val_top1_pct",
    "compute.target_total_s",
    "compute.target_train_flops",
    "compute.source_train_s_total",
    "compute.target_img_per_s",
]
READ = GROUP + ["seed", "status", "selected", "alpha", "grid_point"] + NUMBERS  # the columns the table reads


def load_results(results_dir: Path) -> Results:
    """The records the report shows (``bench.results.frame.read``), or a one-line error."""
    results = read_results(results_dir)
    if not results.records and results.plan is None:
        raise ReportError(f"{results_dir}: holds no records")
    return results


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None and v == v]  # None and NaN are no value
    return statistics.fmean(values) if values else None


def _number_or_none(value) -> Optional[float]:
    return None if value is None or value != value else float(value)  # NaN -> None


def _natural(text: str) -> tuple:
    """Numbers inside a label compare as numbers: "(10/class)" before "(40/class)" before "(160/class)"."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def _orderer(info: dict[str, dict]):
    """Sort key of a (source, target, backbone, strategy) group: labels naturally, then each strategy's own
    ``table_order`` (from its records, or the registry), then its name."""

    def order(key: tuple) -> tuple:
        strategy = key[3]
        return _natural(key[0]), _natural(key[1]), key[2], info.get(strategy, {}).get("table_order", 100), strategy

    return order


def table_frame(records: list[dict]):
    """The records as the DataFrame the table reads (``bench.results.frame.frame``, its columns only)."""
    df = frame(records, columns=READ)
    df["selected"] = df["selected"].map(lambda v: v is not False)  # records before selections were all selected
    df[NUMBERS] = df[NUMBERS].astype(float)  # a column no record fills holds None: NaN, so means skip it
    return df


def summarise_rows(records: list[dict], plan: Optional[dict] = None) -> list[Row]:
    """The table's rows, as numbers. ``records`` should already be the latest per cell."""
    info = strategy_info(records)
    df = table_frame([r for r in records if r.get("strategy") is not None])
    groups = {key: group for key, group in df.groupby(GROUP, sort=False)} if len(df) else {}
    planned: dict[tuple, set[int]] = defaultdict(set)
    for cell in (plan or {}).get("cells", []):
        planned[(cell["source"], cell["target"], cell["backbone"], cell["strategy"])].add(cell["seed"])

    rows = []
    for key in sorted(set(groups) | set(planned), key=_orderer(info)):
        group = groups.get(key, df.iloc[0:0])
        ok = group[(group["status"] == "ok") & group["selected"]]
        row = Row(*key)
        row.top1_by_seed = {int(seed): float(top1) for seed, top1 in zip(ok["seed"], ok["metrics.test_top1_pct"])}
        row.alphas = [float(a) for a in ok["alpha"].dropna()]
        row.grid_points = [p for p in ok["grid_point"] if p]
        row.top1 = summarise_values(row.top1_by_seed.values())
        row.val_top1 = summarise_values(ok["metrics.val_top1_pct"].dropna())
        chosen = group[group["selected"]]  # a grid's failed trial is a result of the search, not the row's failure
        row.failed = sorted(
            {(int(seed), status) for seed, status in zip(chosen["seed"], chosen["status"]) if status != "ok"}
        )
        row.missing = sorted(planned.get(key, set()) - {int(seed) for seed in group["seed"]})
        row.target_s = _mean(ok["compute.target_total_s"])
        flops = _mean(ok["compute.target_train_flops"])
        row.target_pflops = None if flops is None else flops / 1e15
        row.source_s = _mean(ok["compute.source_train_s_total"])
        row.img_per_s = _mean(ok["compute.target_img_per_s"])
        row.baseline = info.get(row.strategy, {}).get("baseline", False)
        row.marker = info.get(row.strategy, {}).get("plot_marker", "")
        rows.append(row)

    by_target: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        by_target[(row.source, row.target, row.backbone)].append(row)
    for same in by_target.values():
        baseline = next((r for r in same if r.baseline), None)
        for row in same:
            if baseline is not None and row is not baseline:
                row.delta_vs_scratch = paired_difference(row.top1_by_seed, baseline.top1_by_seed)
    for same in by_target.values():
        _mark_best(same)
    return rows


def _mark_best(rows: list[Row]) -> None:
    """Bold, among the rows of one source, target and backbone: the highest mean test top-1, and every row
    not significantly worse than it: the paired t-test over the seeds both have, Holm-corrected across the
    group's comparisons with the best, p ≥ 0.05. With fewer than 3 seeds in common no row is tested, and
    none is bold: two seeds cannot tell a best apart."""
    scored = [r for r in rows if r.top1 is not None]
    if not scored:
        return
    best = max(scored, key=lambda r: r.top1.mean)
    others = [r for r in scored if r is not best]
    for row, p in zip(others, holm_paired_tests([r.top1_by_seed for r in others], best.top1_by_seed)):
        row.p_vs_best = p
        row.best = p is not None and p >= 1 - CONFIDENCE
    best.best = len(best.top1_by_seed) >= MIN_SEEDS_FOR_TESTS


def grid_rows(records: list[dict]) -> list[GridRow]:
    """Every point of each strategy trained over a grid or tuned: mean validation and test top-1 over seeds, and
    how many seeds selected it (under refit, the point the refit model retrained). Empty when none is."""
    trained = [r for r in records if r.get("status") == "ok" and r.get("grid_point")]
    chosen = Counter(
        (r["source"], r["target"], r["backbone"], r["strategy"], point_label(r["grid_point"]))
        for r in trained
        if r.get("selected") is not False
    )
    df = table_frame([r for r in trained if not (r.get("details") or {}).get("refit")])  # the points as trained
    if not len(df):
        return []
    df["point"] = df["grid_point"].map(point_label)
    order = _orderer(strategy_info(records))
    table = []
    for key, group in sorted(df.groupby(GROUP, sort=False), key=lambda item: order(item[0])):
        points = group.groupby("point", sort=False).agg(
            val=("metrics.val_top1_pct", _mean),
            test=("metrics.test_top1_pct", _mean),
            seeds=("seed", "size"),
            first=("grid_point", "first"),
        )
        for label, point in sorted(points.iterrows(), key=lambda item: point_order(item[1]["first"])):
            table.append(
                GridRow(
                    *key,
                    point=label,
                    val_top1=_number_or_none(point["val"]),
                    test_top1=_number_or_none(point["test"]),
                    selected=chosen[(*key, label)],
                    seeds=int(point["seeds"]),
                )
            )
    return table


def grid_table(records: list[dict]) -> str:
    """The grid points as a markdown table; "" when there are none."""
    rows = grid_rows(records)
    return render_markdown(rows, GRID_POINTS) if rows else ""


@dataclass
class Analyses:
    """What the report derives from a results folder, computed once for every format and plot: the table's rows,
    the results on shifted test sets, and each estimator's ranking against the measured ones."""

    rows: list[Row]
    shifted: Optional[robustness.Robustness]
    agreeing: list

    def shift_lines(self) -> list[str]:
        """The sentences on the shifted test sets (none without shift evaluations)."""
        return robustness.lines(self.shifted) if self.shifted is not None else []

    def lines(self) -> list[str]:
        """The sentences the shifted sets and the estimators' check add to the report."""
        return self.shift_lines() + transferability.lines(self.agreeing)


def analyse(results: Results) -> Analyses:
    rows = summarise_rows(results.records, results.plan)
    shifted = robustness.robustness(results.records, results.shift_records, strategy_info(results.records))
    agreeing = transferability.agreement(results.estimate_records, rows) if results.estimate_records else []
    return Analyses(rows, shifted, agreeing)


def sections(results: Results, analyses: Analyses) -> list[tuple[Table, list]]:
    """Every table of the report with its rows, in order: the results, then the grid points where a strategy
    searched, the shifted sets, the estimators' rankings and their check. Each format renders each of them."""
    found = [(RESULTS, analyses.rows)]
    points = grid_rows(results.records)
    if points:
        found.append((GRID_POINTS, points))
    shifted = analyses.shifted
    if shifted is not None and shifted.rows:
        found.append((robustness.table(shifted), shifted.rows))
        if shifted.corruptions:
            found.append((robustness.per_shift_table(shifted), shifted.rows))
    if results.estimate_records:
        ranked, estimators = transferability.rank_rows(results.estimate_records)
        found.append((transferability.rank_table(estimators), ranked))
        if analyses.agreeing:
            found.append((transferability.agreement_table(), analyses.agreeing))
    return found


def render(records: list[dict], fmt: str = "markdown", plan: Optional[dict] = None) -> str:
    """The results table in a text format."""
    return render_rows(summarise_rows(latest_records(records), plan), fmt)


def _setting(value) -> str:
    """A runtime setting as the header shows it: switches on / off, the rest as written."""
    if isinstance(value, bool) or value is None:
        return {True: "on", False: "off", None: "none"}[value]
    return str(value)


def provenance_line(records: list[dict]) -> str:
    ok = [r for r in records if r.get("provenance")]
    if not ok:
        return ""
    last = ok[-1]["provenance"]
    commit = commit_label(last)
    dates = sorted(r["provenance"].get("finished_at", "") for r in ok)
    runtime = ", ".join(f"{k} {_setting(v)}" for k, v in (last.get("runtime") or {}).items()) or "defaults"
    return (
        f"Measured on {last.get('device_name')} with torch {last.get('torch')}, runtime: {runtime}; "
        f"commit {commit}, between {dates[0]} and {dates[-1]} (UTC); command: `{last.get('command')}`."
    )


def step_budgets(records: list[dict]) -> dict[tuple[str, str], float]:
    """(target, strategy) -> mean optimisation steps of the selected models, for the targets of a data-size
    sweep, in the sweep's order; strategies that take no SGD steps (the L-BFGS probe counts its own) left out."""
    steps = defaultdict(list)
    for r in records:
        taken = (r.get("compute") or {}).get("target_steps")
        if r.get("target_family") and r.get("status") == "ok" and r.get("selected") is not False and taken:
            if r["strategy"] != "linear_probe" and not (r.get("details") or {}).get("solver") == "lbfgs":
                steps[(r["target"], r["strategy"])].append(taken)
    ordered = sorted(steps, key=lambda key: (_natural(key[0]), key[1]))
    return {key: statistics.fmean(steps[key]) for key in ordered}


def compile_line(records: list[dict]) -> str:
    """What compiling cost the run, charged to no row: a graph's first compile in a process is paid once, and
    which training meets it first is an accident of order (``transfer_core.compiling.compile_entry``)."""
    compiles = {
        c["id"]: c
        for r in records
        for c in (r.get("details") or {}).get("compiles", [])
        if isinstance(c, dict) and isinstance(c.get("id"), str) and isinstance(c.get("compile_s"), (int, float))
    }
    if not compiles:
        return ""
    first = [c for c in compiles.values() if c.get("first_in_process")]
    reused = [c for c in compiles.values() if not c.get("first_in_process")]
    graphs = {c.get("graph") for c in first}
    processes = {c["id"].rsplit(":", 1)[0] for c in first}
    line = (
        f"Compilation, on its own and in no row's compute: {len(graphs)} graph{'s' if len(graphs) != 1 else ''} "
        f"compiled, once per process that trained it ({len(first)} first compile{'s' if len(first) != 1 else ''} "
        f"in {len(processes)} process{'es' if len(processes) != 1 else ''}), "
        f"{sum(c['compile_s'] for c in first):,.1f} s in all"
    )
    if reused:
        line += (
            f"; {len(reused)} later model{'s' if len(reused) != 1 else ''} of a compiled graph found its code, "
            f"{sum(c['compile_s'] for c in reused):,.1f} s in all"
        )
    return line + "."


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
        lines.append(
            "Source models (test top-1 on their own task): "
            + "; ".join(
                f"{s}/{b}: {interval(summarise_values(v))}% over {len(v)} seed{'s' if len(v) != 1 else ''}"
                for (s, b), v in sorted(per.items())
            )
        )
    budgets = step_budgets(results.records)
    if budgets:
        lines.append(
            "Training length per size of a data-size sweep (optimisation steps behind each row: every model it is "
            "built from, every trial and refit of a search included; the mean over seeds): "
            + "; ".join(f"{strategy} at {target}: {steps:,.0f}" for (target, strategy), steps in budgets.items())
        )
    if pretrained:
        lines.append(
            "Pretrained sources (loaded, no source training): "
            + "; ".join(
                f"{name}: {w['library']} {w['model']}{' ' + w['weights'] if w.get('weights') else ''}, "
                f"sha256 {w['sha256'][:12]}…"
                for name, w in sorted(pretrained.items())
            )
        )
    lines.append(
        f"Test top-1 is the mean over seeds ± the half-width of its {CONFIDENCE:.0%} confidence interval (Student t, "
        "n−1 degrees of freedom; none with one seed). In bold, per source, target and backbone: "
        "the best mean and every row not significantly worse than it (one-sided paired t-test on the seeds both have, "
        "Holm-corrected across the comparisons with the best, p ≥ 0.05); with fewer than "
        f"{MIN_SEEDS_FOR_TESTS} seeds nothing is bold, as two seeds cannot tell rows apart. "
        "Δ vs scratch is the paired difference on the seeds both have, with its interval. α-mix rows "
        "use the α chosen on validation, and their val column is that α's (the highest over the α tried, so biased "
        "upward); so do the rows of a strategy trained over a grid, named with the point chosen. Target compute is "
        "training seconds of every model the row is built from, each counted once (LP-FT: the probe and its fine-tune; "
        "α-mix: its two ingredients plus its α search on validation; a grid: every point, plus scoring them on "
        "validation), compilation excluded, and PFLOPs (forward "
        "+ backward); source compute is the source model's whole training, and the total to reach a row is source plus "
        "target, however many rows share the source. Train images/s is target training images over target training "
        "seconds, where an image counts each time it passes through the network in training (forward and backward; "
        "the linear probe's one feature pass, forward only, and its head's epochs over cached features not at all)."
    )
    compiled = compile_line(results.records)
    if compiled:
        lines.append(compiled)
    if results.stale:
        lines.append(f"{results.stale} records of configurations the suite no longer has are left out.")
    return lines


def aggregate_lines(found) -> list[str]:
    """The scores across tasks (``bench.results.aggregate``) as sentences, or none when there is too little."""
    if found is None:
        return []

    def estimate(value) -> str:
        point, low, high = value
        return f"{point:.2f} [{low:.2f}, {high:.2f}]"

    tasks = "; ".join(f"{s} → {t} ({b})" for s, t, b in found.tasks)
    lines = [
        f"Across {len(found.tasks)} tasks ({tasks}), on the {len(found.seeds)} seeds all have: interquartile mean "
        "(IQM) of test top-1 over every run, with its 95% stratified bootstrap interval (each task's seeds "
        "resampled on their own, 2,000 resamples): "
        + "; ".join(f"{s} {estimate(v)}" for s, v in sorted(found.iqm.items(), key=lambda kv: -kv[1][0]))
        + "."
    ]
    if found.improvement:
        lines.append(
            f"Probability of improvement over {found.baseline} (P(a run of the strategy beats a run of "
            f"{found.baseline}), averaged over tasks, with the same bootstrap interval): "
            + "; ".join(f"{s} {estimate(v)}" for s, v in found.improvement.items())
            + "."
        )
    if found.mean_rank:
        ranks = "; ".join(f"{s} {r:.2f}" for s, r in sorted(found.mean_rank.items(), key=lambda kv: kv[1]))
        tested = (
            f" Friedman test p = {found.friedman_p:.3g}; Nemenyi critical difference {found.critical_difference:.2f} "
            "(autorank): two strategies whose mean ranks differ by less are not told apart."
            if found.critical_difference is not None
            else ""
        )
        lines.append(
            f"Mean rank over {len(found.seeds) * len(found.tasks)} (task, seed) blocks (1 = best): {ranks}.{tested}"
        )
    return lines


def report_markdown(results: Results, title: str, found=None, analyses: Optional[Analyses] = None) -> str:
    """The report file: a title, how the numbers were obtained, the table, the plots if written, and the
    scores across tasks where there are several (``found``: ``bench.results.aggregate.aggregate`` of the rows)."""
    analyses = analyses or analyse(results)
    rows = analyses.rows
    written = [markdown_escape(line) for line in notes(results)]
    body = [f"# {markdown_escape(title)}", "", written[0], "", render_markdown(rows), ""]
    body += [line + "\n" for line in written[1:]]
    for stem, caption in (
        ("accuracy_vs_compute", "Accuracy against compute"),
        ("alpha_curve", "α curve"),
        ("regimes", "Top-1 against training examples per class"),
    ):
        if (results.directory / f"{stem}.png").is_file():
            body.append(f"![{caption}]({stem}.png)\n")
    across = aggregate_lines(found)
    if across:
        body += ["## Across tasks", ""] + [markdown_escape(line) + "\n" for line in across]
        for stem, caption in (("performance_profile", "Performance profiles"), ("critical_difference", "Mean ranks")):
            if (results.directory / f"{stem}.png").is_file():
                body.append(f"![{caption}]({stem}.png)\n")
    for table, table_rows in sections(results, analyses)[1:]:
        body += [
            f"## {markdown_escape(table.title)}",
            "",
            markdown_escape(table.note),
            "",
            render_markdown(table_rows, table),
            "",
        ]
        if table.name == "transferability":
            body += [markdown_escape(line) + "\n" for line in transferability.lines(table_rows)]
            if (results.directory / "estimators_vs_measured.png").is_file():
                body.append("![Estimator scores against measured top-1](estimators_vs_measured.png)\n")
        if table.name == "robustness":
            body += [markdown_escape(line) + "\n" for line in analyses.shift_lines()]
            for stem, caption in (
                ("ood_vs_id", "Out of distribution against in distribution"),
                ("alpha_shift_curve", "α-mix in and out of distribution"),
            ):
                if (results.directory / f"{stem}.png").is_file():
                    body.append(f"![{caption}]({stem}.png)\n")
    return "\n".join(body)


def write_reports(results: Results, title: str) -> list[Path]:
    """Every artefact, into the results folder: report.md/.tex/.html (every table), a CSV per table (report.csv,
    grid_points.csv where a strategy searched) and the plots (PNG and SVG)."""
    from bench.results import plots
    from bench.results.aggregate import aggregate

    analyses = analyse(results)
    found = aggregate(analyses.rows)
    written = plots.write_plots(
        results.records, analyses.rows, results.directory, found, analyses.shifted, analyses.agreeing
    )
    svgs = [plots.inline_svg(path.read_text(encoding="utf-8")) for path in written if path.suffix == ".svg"]
    tables = sections(results, analyses)
    caption = f"{title}. {notes(results)[0]}"
    outputs = {
        "report.md": report_markdown(results, title, found, analyses),
        # every table of the report in each format: LaTeX's one after another, a CSV file each
        "report.tex": "\n".join(render_latex(table_rows, table, caption) for table, table_rows in tables),
        **{f"{table.name}.csv": render_csv(table_rows, table) for table, table_rows in tables},
        "report.html": render_page(
            title,
            notes(results) + aggregate_lines(found) + analyses.lines(),
            tables,
            svgs,
        ),
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
        table.append(
            [
                markdown_escape(f"{source} → {target}"),
                markdown_escape(backbone),
                interval(row.top1),
                interval(other.top1),
                interval(difference, signed=True),
                difference.n if difference else 0,
            ]
        )
    if not table:
        raise ReportError(f"no source → target has both {a!r} and {b!r} results")
    headers = [
        "source → target",
        "backbone",
        f"{a} top-1 (%)",
        f"{b} top-1 (%)",
        f"{a} − {b} (pp, paired)",
        "seeds paired",
    ]
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)
