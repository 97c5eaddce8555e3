"""The report: statistics over seeds, every format, the plots, and what is failed or missing."""

import csv
import html
import io
import math
from html.parser import HTMLParser

import pytest
from scipy import stats

from bench.results.frame import ResultsError
from bench.results.plots import pareto_frontier
from bench.results.records import ResultsStore
from bench.results.report import ReportError, load_results, paired_table, render, summarise_rows, write_reports
from bench.results.stats import holm_paired_tests, paired_difference, summarise, t_quantile
from bench.results.tables import RESULTS, latex_escape, render_csv, render_latex, render_markdown, render_page


def record(strategy, seed, top1, status="ok", alpha=None, selected=True, val=50.0, target="b", img_per_s=1000.0):
    return {
        "schema_version": 1,
        "cell_id": f"a->{target}/resnet8/{strategy}/seed{seed}",
        "config_hash": f"{strategy}-{target}-{seed}",
        "source": "a",
        "target": target,
        "backbone": "resnet8",
        "strategy": strategy,
        "seed": seed,
        "alpha": alpha,
        "selected": selected,
        "status": status,
        "error": None if status == "ok" else "x",
        "metrics": {"test_top1_pct": top1, "val_top1_pct": val} if status == "ok" else {},
        "compute": {
            "target_total_s": 10.0,
            "source_train_s_total": 2.0,
            "target_img_per_s": img_per_s,
            "target_train_flops": 3e13,
        },
        "provenance": {
            "device_name": "cpu-x",
            "torch": "2.14.1",
            "command": "python -m bench run s.yaml",
            "finished_at": f"2026-11-29T10:0{seed}:00+00:00",
            "git_commit": "abc",
            "runtime": {},
        },
    }


RECORDS = [
    record("scratch", 0, 30.0),
    record("scratch", 1, 32.0),
    record("scratch", 2, 0, status="diverged"),
    record("full_finetune", 0, 40.0),
    record("full_finetune", 1, 43.0),
    record("alpha_mix", 0, 35.0, alpha=0.0, selected=False, val=40),
    record("alpha_mix", 0, 44.0, alpha=0.5, val=60),
    record("alpha_mix", 1, 41.0, alpha=0.5, selected=False, val=50),
    record("alpha_mix", 1, 42.0, alpha=1.0, val=70),
]


def test_t_interval_and_paired_difference():
    s = summarise([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.std == 1.0
    assert math.isclose(t_quantile(3), 4.302652729, rel_tol=1e-6)  # Student t, 2 dof, 97.5%
    assert math.isclose(s.ci_half, 4.302652729 / math.sqrt(3), rel_tol=1e-6)
    assert summarise([5.0]).ci_half is None and summarise([]) is None
    d = paired_difference({0: 40.0, 1: 43.0, 2: 50.0}, {0: 30.0, 1: 32.0})  # seed 2 has no partner
    assert d.n == 2 and d.mean == 10.5 and math.isclose(d.ci_half, t_quantile(2) * 0.5 / math.sqrt(2) * math.sqrt(2))


def test_rows_hold_interval_delta_failures_and_the_selected_alpha():
    rows = {r.strategy: r for r in summarise_rows(RECORDS)}
    assert list(rows) == ["scratch", "full_finetune", "alpha_mix"]  # scratch first
    assert rows["scratch"].n == 2 and rows["scratch"].failed == [(2, "diverged")]
    assert rows["full_finetune"].top1.mean == 41.5
    assert math.isclose(rows["full_finetune"].top1.ci_half, t_quantile(2) * math.sqrt(4.5) / math.sqrt(2))
    assert rows["full_finetune"].delta_vs_scratch.mean == 10.5  # paired on seeds 0 and 1
    assert rows["alpha_mix"].label == "alpha_mix (α=0.5/1)" and rows["alpha_mix"].top1.mean == 43.0
    # two seeds tell nothing apart: no row is bold, not even the best mean
    assert not any(r.best for r in rows.values()) and rows["full_finetune"].p_vs_best is None
    assert math.isclose(rows["scratch"].target_pflops, 0.03) and rows["scratch"].total_s == 12.0


def test_bold_is_the_best_and_what_is_not_significantly_worse_per_source_target_and_backbone():
    def at(strategy, backbone, values):
        return [{**record(strategy, seed, v), "backbone": backbone} for seed, v in enumerate(values)]

    records = (
        at("scratch", "resnet8", [30.0, 31.0, 32.0])
        + at("full_finetune", "resnet8", [40.0, 41.0, 42.5])
        + at("linear_probe", "resnet8", [39.0, 42.0, 41.0])  # within noise of the best
        + at("scratch", "resnet20", [20.0, 21.0, 22.0])
        + at("full_finetune", "resnet20", [10.0, 11.0, 12.0])
    )
    bold = {(r.backbone, r.strategy) for r in summarise_rows(records) if r.best}
    # scratch is consistently 10 points below on resnet8: significantly worse; on resnet20 it is the best
    assert bold == {("resnet8", "full_finetune"), ("resnet8", "linear_probe"), ("resnet20", "scratch")}


def test_holm_corrected_paired_tests_against_the_best_on_known_answers():
    best = {0: 50.0, 1: 50.0, 2: 50.0, 3: 50.0}
    # row − best: gaps −1, −2, −3 (mean −2, sd 1): t = −2 / (1 / √3) with 2 degrees of freedom, one-sided (worse)
    below = {0: 49.0, 1: 48.0, 2: 47.0}
    p_below = stats.t.sf(2 * math.sqrt(3), 2)
    assert p_below == pytest.approx(0.0371, abs=1e-4)
    flat = {0: 40.0, 1: 40.0, 2: 40.0}  # the same gap on every seed: no spread, p = 0
    tied = {0: 50.0, 1: 50.0, 2: 50.0}  # no gap: p = 1
    two_seeds = {0: 10.0, 1: 11.0}  # fewer than 3 seeds in common: untested
    p = holm_paired_tests([below, flat, tied, two_seeds], best)
    # Holm over the three tested: sorted raw p 0, 0.0371, 1 times 3, 2, 1, kept monotone and ≤ 1
    assert p[1] == 0.0 and p[0] == pytest.approx(2 * p_below) and p[2] == 1.0 and p[3] is None
    # one-sided: a row above the best on the seeds they share is not worse (p near 1), whatever its mean elsewhere
    above = {0: 51.0, 1: 52.0, 2: 53.5}
    assert holm_paired_tests([above], best)[0] > 0.95


def test_sizes_in_target_names_sort_as_numbers():
    records = [record("scratch", 0, 30.0, target=f"b ({n}/class)") for n in (160, 10, 40)]
    assert [r.target for r in summarise_rows(records)] == ["b (10/class)", "b (40/class)", "b (160/class)"]


def test_planned_cells_without_records_are_shown_missing():
    plan = {
        "suite": "s",
        "cells": [
            {
                "source": "a",
                "target": "b",
                "backbone": "resnet8",
                "strategy": s,
                "seed": seed,
                "config_hash": f"{s}-b-{seed}",
            }
            for s in ("scratch", "full_finetune", "linear_probe")
            for seed in (0, 1, 2)
        ],
    }
    rows = {r.strategy: r for r in summarise_rows(RECORDS[:5], plan)}
    assert rows["full_finetune"].missing == [2] and rows["scratch"].missing == []  # seed 2 failed, not missing
    assert rows["linear_probe"].n == 0 and rows["linear_probe"].missing == [0, 1, 2]
    table = render_markdown(summarise_rows(RECORDS[:5], plan))
    assert "| 0 (3 missing)" in table and "2 (1 missing)" in table and "2 (+1 failed: diverged)" in table


def test_every_format_marks_the_best_and_reads_cleanly():
    three_seeds = RECORDS + [record("full_finetune", 2, 41.5), record("alpha_mix", 2, 43.0, alpha=0.5, val=60)]
    rows = summarise_rows(three_seeds)
    markdown = render_markdown(rows)
    assert "**43.00 ± 2.48**" in markdown  # 44, 42 and 43: std 1, t(2 dof) 4.30 / √3, so ± 2.48
    assert "**41.50 ± " in markdown  # full fine-tune: within noise of the best (Holm-corrected paired test)
    assert "Δ vs scratch (pp)" in markdown.splitlines()[0] and "+10.50 ± " in markdown
    latex = render_latex(rows)
    assert "\\toprule" in latex and "\\bottomrule" in latex and "\\textbf{43.00" in latex
    assert "alpha\\_mix ($\\alpha$=0.5/1)" in latex and "$\\pm$" in latex
    assert latex_escape("50% of a_b & c") == "50\\% of a\\_b \\& c"
    csv_lines = render_csv(rows).splitlines()
    assert csv_lines[0].startswith(
        "source,target,backbone,strategy,selected_alphas,selected_grid_points,test_top1_mean,test_top1_std"
    )
    assert csv_lines[2].split(",")[6] == "41.5"  # raw numbers, unrounded
    page = render_page("Results: s", ["made by a test"], [(RESULTS, rows)], ["<svg></svg>"])
    assert page.startswith("<!DOCTYPE html>") and "<strong>43.00" in page and "<svg></svg>" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    assert render(three_seeds, "csv") == render_csv(rows)
    with pytest.raises(ReportError, match="unknown format"):
        render(RECORDS, "pdf")


def test_a_forced_rerun_supersedes_the_old_record():
    rows = summarise_rows([record("scratch", 0, 30.0), record("scratch", 0, 31.0)])
    assert rows[0].top1.mean == 31.0


def test_records_of_configurations_the_plan_no_longer_has_are_left_out(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(RECORDS[:2] + [{**record("scratch", 0, 99.0), "config_hash": "old-config"}])
    store.write_plan(
        "s",
        [
            {
                "source": "a",
                "target": "b",
                "backbone": "resnet8",
                "strategy": "scratch",
                "seed": s,
                "config_hash": f"scratch-b-{s}",
            }
            for s in (0, 1)
        ],
    )
    results = load_results(tmp_path)
    assert results.stale == 1 and {r["metrics"]["test_top1_pct"] for r in results.records} == {30.0, 32.0}


def test_write_reports_writes_every_format_and_both_plots(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(RECORDS + [record("linear_probe", s, 38.0 + s, img_per_s=5000.0) for s in (0, 1)])
    written = {p.name for p in write_reports(load_results(tmp_path), "Results: s")}
    assert written == {
        "report.md",
        "report.tex",
        "report.csv",
        "report.html",
        "accuracy_vs_compute.png",
        "accuracy_vs_compute.svg",
        "alpha_curve.png",
        "alpha_curve.svg",
    }
    assert (tmp_path / "accuracy_vs_compute.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "accuracy_vs_compute.svg").read_text()
    assert "Pareto frontier" in svg and "test top-1 (%)" in svg  # labels kept as text
    report = (tmp_path / "report.md").read_text()
    assert "python -m bench run s.yaml" in report and "![Accuracy against compute](accuracy_vs_compute.png)" in report
    assert report.count("<svg") == 0 and (tmp_path / "report.html").read_text().count("<svg") == 2


def test_paired_table(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(RECORDS)
    table = paired_table(load_results(tmp_path), "full_finetune", "scratch")
    assert "+10.50 ± " in table and "| 2 " in table
    with pytest.raises(ReportError, match="no source → target has both"):
        paired_table(load_results(tmp_path), "full_finetune", "linear_probe")


def test_pareto_frontier_keeps_only_undominated_points():
    points = [(10, 50), (5, 40), (20, 45), (30, 60), (5, 30), (40, 60)]
    assert pareto_frontier(points) == [(5, 40), (10, 50), (30, 60)]


def test_missing_results_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ResultsError, match="no records.jsonl"):
        load_results(tmp_path)


def test_index_lists_suites_and_datapath_runs_with_how_they_were_made(tmp_path):
    from bench.results.index import build_index

    ResultsStore(tmp_path / "mysuite").append(RECORDS)
    ResultsStore(tmp_path / "mysuite").write_plan("mysuite", [])
    (tmp_path / "datapath").mkdir()
    (tmp_path / "datapath" / "cpu.json").write_text(
        '{"kind": "datapath", "measured_at": "2026-11-29T12:00:00+00:00", "provenance": {"device_name": "cpu-y", '
        '"git_commit": "0123456789abc"}, "rows": [{"backend": "baseline"}, {"backend": "device"}]}'
    )
    (tmp_path / "datapath" / "cpu.md").write_text("table\n\nProduced by `python -m bench datapath --x`.\n")
    index = build_index(tmp_path)
    assert "suite `mysuite`: 8 of 9 records ok" in index and "`python -m bench run s.yaml`" in index
    assert "cpu-x" in index and "2026-11-29" in index and "abc" in index
    assert "data-path throughput: baseline, device" in index and "`python -m bench datapath --x`" in index
    assert "cpu-y" in index and "0123456789" in index


def test_the_regime_plot_draws_one_line_per_strategy_over_sizes(tmp_path):
    from bench.results.plots import regime_curve, write_plots

    def at(strategy, per_class, seed, top1):
        r = record(strategy, seed, top1, target=f"b ({per_class}/class)")
        r["target_family"] = "b"
        r["provenance"]["data"] = {"target": {"sizes": {"train": per_class * 10}, "num_classes": 10}}
        return r

    records = [
        at(s, n, seed, 30 + n / 10 + (10 if s == "full_finetune" else 0))
        for s in ("scratch", "full_finetune")
        for n in (10, 50, 200)
        for seed in (0, 1)
    ]
    fig = regime_curve(records)
    lines = fig.axes[0].get_lines()
    drawn = {tuple(line.get_xdata()) for line in lines if len(line.get_xdata()) == 3}
    assert drawn == {(10.0, 50.0, 200.0)} and fig.axes[0].get_xscale() == "log"
    assert {t.get_text() for t in fig.axes[0].get_legend().get_texts()} == {"scratch", "full_finetune"}
    assert regime_curve([r for r in records if "(10/" in r["target"]]) is None  # one size: no curve
    assert regime_curve(RECORDS) is None
    written = write_plots(records, summarise_rows(records), tmp_path)
    assert (tmp_path / "regimes.png") in written


def test_compilation_is_charged_once_per_graph_and_process_to_no_row():
    from bench.results.report import compile_line

    first = {"graph": "g1", "compile_s": 30.0, "first_in_process": True, "id": "h:1:1"}
    reused = {"graph": "g1", "compile_s": 0.1, "first_in_process": False, "id": "h:1:2"}
    elsewhere = {"graph": "g1", "compile_s": 2.0, "first_in_process": True, "id": "h:2:1"}  # another process
    a, b, c = record("full_finetune", 0, 40.0), record("alpha_mix", 0, 44.0, alpha=0.5), record("scratch", 1, 30.0)
    a["details"] = {"compiles": [first]}
    b["details"] = {"compiles": [first, reused]}  # built on the same model: its compile counted once
    c["details"] = {"compiles": [elsewhere]}
    line = compile_line([a, b, c])
    assert "1 graph compiled" in line and "2 first compiles in 2 processes), 32.0 s in all" in line
    assert "1 later model of a compiled graph found its code, 0.1 s in all" in line
    assert compile_line([record("scratch", 0, 30.0)]) == ""
    rows = summarise_rows([a, c])
    assert [r.target_s for r in rows] == [10.0, 10.0]  # the rows' compute is the records' total, no compile in it


def searched(seed, lr, top1, selected):
    return {
        **record("full_finetune", seed, top1, selected=selected, val=top1),
        "grid_point": {"lr": lr},
        "config_hash": f"ft-{seed}-{lr}",
    }


SEARCH = [searched(s, lr, 40.0 + s + (2 if lr == 0.1 else 0), lr == 0.1) for s in (0, 1, 2) for lr in (0.01, 0.1)]


class _Tables(HTMLParser):
    """The tables of a page, parsed (rows of cell texts, the header row first), and whether every element that
    must be closed is closed in order."""

    VOID = {"meta", "br", "img", "hr", "input", "link", "col", "path", "circle", "rect", "line", "polyline", "use"}

    def __init__(self):
        super().__init__()
        self.tables, self.open, self.misnested, self.cell = [], [], [], None

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.open.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_startendtag(self, tag, attrs):
        pass  # <x/>: nothing to close

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.open or self.open[-1] != tag:
            self.misnested.append((tag, list(self.open[-3:])))
        else:
            self.open.pop()
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append(" ".join(self.cell.split()))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_every_format_renders_every_table(tmp_path):
    """One list of tables: the grid points' table is in the markdown, LaTeX, CSV and HTML alike, with every
    column its declaration lists."""
    from bench.results.tables import GRID_POINTS, TABLES

    ResultsStore(tmp_path).append(RECORDS + SEARCH)
    write_reports(load_results(tmp_path), "Results: s")
    markdown = (tmp_path / "report.md").read_text()
    latex = (tmp_path / "report.tex").read_text()
    page = (tmp_path / "report.html").read_text()
    assert latex.count("\\begin{tabular}") == len(TABLES) and page.count("<table>") == len(TABLES)
    for table in TABLES:
        for header in table.headers:
            assert header in markdown and html.escape(header) in page and latex_escape(header) in latex
    assert "## Grid points" in markdown and "<h2>Grid points</h2>" in page
    parsed = _Tables()
    parsed.feed(page)
    assert not parsed.misnested and parsed.open == [], (parsed.misnested[:3], parsed.open)  # well formed
    assert [table[0] for table in parsed.tables] == [list(table.headers) for table in TABLES]
    for table in parsed.tables:  # every row as wide as its header
        assert len(table) > 1 and {len(row) for row in table} == {len(table[0])}
    grid_csv = list(csv.DictReader(io.StringIO((tmp_path / "grid_points.csv").read_text())))
    assert [(g["grid_point"], g["selected_seeds"], g["seeds"]) for g in grid_csv] == [
        ("lr=0.01", "0", "3"),
        ("lr=0.1", "3", "3"),
    ]
    assert float(grid_csv[1]["test_top1_mean"]) == 43.0  # 42, 43, 44
    assert {name for c in GRID_POINTS.columns for name, _ in c.csv} == set(grid_csv[0])
    results_csv = list(csv.DictReader(io.StringIO((tmp_path / "report.csv").read_text())))
    assert {r["strategy"] for r in results_csv} == {"scratch", "full_finetune", "alpha_mix"}
