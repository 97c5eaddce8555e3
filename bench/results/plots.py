"""The report's figures (matplotlib, PNG and SVG), drawn from records and table rows only.

- Accuracy against compute: one panel per source → target × backbone; each strategy its own marker
  with its 95% interval, and the Pareto frontier (no other point is both cheaper and better) drawn.
- The α curve, as WiSE-FT plots it: test and validation top-1 against α, one line per target.
- Data-size regimes: test top-1 against training examples per class, one line per strategy, for each
  target listed with several sizes.
"""

from __future__ import annotations

import contextlib
import io
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only: no display needed, none opened
matplotlib.rcParams["svg.hashsalt"] = (
    "bench"  # SVG ids from the content, not at random: the same results, the same file
)
import matplotlib.pyplot as plt  # noqa: E402

from transfer_core.files import write_file  # noqa: E402

from bench.results.records import strategy_info  # noqa: E402
from bench.results.stats import summarise  # noqa: E402

SPARE_MARKERS = ["X", "*", "h", "<", ">", "p"]  # for strategies that name none
plt.rcParams.update({"svg.fonttype": "none", "font.size": 10})  # SVG text stays text: searchable, small


def pareto_frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (less compute and higher accuracy), by compute."""
    frontier: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not frontier or y > frontier[-1][1]:
            frontier.append((x, y))
    return frontier


def _marker(strategy: str, own: str, spare: dict) -> str:
    """The strategy's own marker (its ``plot_marker``), or a spare one, the same for it in every panel."""
    return own or spare.setdefault(strategy, SPARE_MARKERS[len(spare) % len(SPARE_MARKERS)])


def accuracy_vs_compute(rows):
    """The figure, or None when no row has both accuracy and compute."""
    panels = defaultdict(list)
    for row in rows:
        if row.top1 is not None and row.total_s is not None:
            panels[(row.source, row.target, row.backbone)].append(row)
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    extra: dict = {}
    for ax, ((source, target, backbone), panel) in zip(axes[0], sorted(panels.items())):
        for row in panel:
            half = row.top1.ci_half if row.top1.ci_half is not None else 0.0
            # an accuracy lies in [0, 100]: the drawn interval stops there (the table keeps the t interval)
            error = [[min(half, row.top1.mean)], [min(half, 100.0 - row.top1.mean)]]
            ax.errorbar(
                row.total_s,
                row.top1.mean,
                yerr=error,
                fmt=_marker(row.strategy, row.marker, extra),
                markersize=8,
                capsize=3,
                label=row.label,
                linestyle="none",
            )
        xs = [r.total_s for r in panel]
        frontier = pareto_frontier([(r.total_s, r.top1.mean) for r in panel])
        # a staircase to the right edge: the best accuracy reachable at each compute budget
        frontier_x = [x for x, _ in frontier] + [max(xs) * 1.02]
        frontier_y = [y for _, y in frontier] + [frontier[-1][1]]
        ax.step(
            frontier_x,
            frontier_y,
            where="post",
            color="0.45",
            linestyle="--",
            linewidth=1,
            label="Pareto frontier",
            zorder=0,
        )
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        ax.set_title(f"{source} → {target} ({backbone})")
        ax.set_xlabel("compute to reach the row: source + target training (s)")
        ax.set_ylabel("test top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def alpha_curve(records: list[dict]):
    """Mean test and validation top-1 at each α over seeds, one line pair per target (None without α-mix)."""
    curves: dict[tuple, dict[float, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in records:
        if r.get("status") == "ok" and r.get("alpha") is not None:  # a strategy that mixes over α
            point = curves[(r["source"], r["target"], r["backbone"])][r["alpha"]]
            point["test"].append(r["metrics"]["test_top1_pct"])
            if r["metrics"].get("val_top1_pct") is not None:
                point["val"].append(r["metrics"]["val_top1_pct"])
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for i, ((source, target, backbone), points) in enumerate(sorted(curves.items())):
        colour = f"C{i}"
        alphas = sorted(points)
        name = f"{source} → {target} ({backbone})"
        for split, style in (("test", "-o"), ("val", "--s")):
            means = [summarise(points[a][split]) for a in alphas]
            kept = [(a, m) for a, m in zip(alphas, means) if m is not None]
            if kept:
                ax.plot(
                    [a for a, _ in kept],
                    [m.mean for _, m in kept],
                    style,
                    color=colour,
                    markersize=5,
                    label=f"{name}, {split}",
                )
    ax.set_xlabel("α  (0 = linear probe, 1 = fine-tuned)")
    ax.set_ylabel("top-1 (%), mean over seeds")
    ax.set_title("α-mix (WiSE-FT): top-1 against α")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def regime_curve(records: list[dict]):
    """Test top-1 against training examples per class, one line per strategy, one panel per data-size sweep
    (source, target family, backbone): where transfer pays. None without a sweep of two sizes or more."""
    points: dict[tuple, dict[str, dict[float, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in records:
        target = (r.get("provenance") or {}).get("data", {}).get("target", {})
        if (
            not r.get("target_family")
            or r.get("status") != "ok"
            or not r.get("selected", True)
            or not target.get("num_classes")
        ):
            continue
        per_class = target["sizes"]["train"] / target["num_classes"]
        points[(r["source"], r["target_family"], r["backbone"])][r["strategy"]][per_class].append(
            r["metrics"]["test_top1_pct"]
        )
    panels = {k: v for k, v in points.items() if len({x for curve in v.values() for x in curve}) >= 2}
    if not panels:
        return None
    info = strategy_info(records)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.0), squeeze=False)
    extra: dict = {}
    for ax, ((source, family, backbone), curves) in zip(axes[0], sorted(panels.items())):
        for strategy in sorted(curves, key=lambda s: (info.get(s, {}).get("table_order", 100), s)):
            xs = sorted(curves[strategy])
            means = [summarise(curves[strategy][x]) for x in xs]
            halves = [m.ci_half or 0.0 for m in means]
            ax.errorbar(
                xs,
                [m.mean for m in means],
                yerr=halves,
                fmt="-" + _marker(strategy, info.get(strategy, {}).get("plot_marker", ""), extra),
                markersize=6,
                capsize=3,
                label=strategy,
            )
        ax.set_xscale("log")
        ax.set_title(f"{source} → {family} ({backbone})")
        ax.set_xlabel("target training examples per class (log)")
        ax.set_ylabel("test top-1 (%), mean over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save(fig, path: Path) -> Path:
    """PNG at 150 dpi, or SVG (text kept as text) or PDF, by the suffix; no timestamp inside, so the same
    results give the same file."""
    metadata = {"Date": None} if path.suffix in (".svg", ".pdf") else {}
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=150, metadata=metadata)
    return write_file(path, buffer.getvalue())  # never through a link planted where the plot goes


def performance_profiles(found):
    """The share of each strategy's runs (every seed on every task) above each test top-1 τ (Agarwal et al.
    2021); None without an aggregate."""
    import numpy as np

    from bench.results.aggregate import performance_profile

    if found is None:
        return None
    everything = np.concatenate([m.reshape(-1) for m in found.scores.values()])
    taus = np.linspace(everything.min() - 1, everything.max() + 1, 200)
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for strategy, share in performance_profile(found, taus).items():
        ax.plot(taus, share, label=strategy)
    ax.set_xlabel("test top-1 τ (%)")
    ax.set_ylabel("share of runs with top-1 > τ")
    ax.set_title(f"Performance profiles over {len(found.tasks)} tasks × {len(found.seeds)} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def critical_difference(found):
    """autorank's critical-difference diagram of the mean ranks; None without a ranking."""
    if found is None or found.ranking is None:
        return None
    from autorank import plot_stats

    with contextlib.redirect_stdout(io.StringIO()):  # autorank prints its table as it draws
        ax = plot_stats(found.ranking, allow_insignificant=True)
    return None if ax is None else ax.figure


def ood_vs_id(shifted):
    """Each out-of-distribution measure (mCA, each dataset shift) against in-distribution top-1, one panel each:
    every baseline model scored (grey), the baseline's logit-linear fit, and each row's mean over seeds with
    its 95% t intervals both ways. None without shift results."""
    if shifted is None or not shifted.rows or not shifted.measures:
        return None
    groups = sorted({(r.source, r.target, r.backbone) for r in shifted.rows})
    measures = shifted.measures
    fig, axes = plt.subplots(
        len(groups), len(measures), figsize=(5.0 * len(measures), 4.2 * len(groups)), squeeze=False
    )
    spare: dict = {}
    for i, group in enumerate(groups):
        for j, measure in enumerate(measures):
            ax = axes[i][j]
            found = shifted.fits.get(group, {}).get(measure)
            if found is not None:
                xs = [x for x, _ in found.points]
                ax.scatter(xs, [y for _, y in found.points], s=12, color="0.65", label="baseline models (fit)")
                fitted = np.linspace(min(xs), max(xs), 50)
                ax.plot(fitted, [found.predict(x) for x in fitted], color="0.4", linewidth=1)
                rows_id = [statistics.fmean(r.id_by_seed.values()) for r in shifted.rows if r.id_by_seed]
                beyond = np.linspace(max(xs), min(max(rows_id + xs) * 1.05, 99.9), 50)  # extrapolated: dashed
                ax.plot(beyond, [found.predict(x) for x in beyond], "--", color="0.4", linewidth=1)
            for k, row in enumerate(r for r in shifted.rows if (r.source, r.target, r.backbone) == group):
                x, y = summarise(list(row.id_by_seed.values())), row.summary(measure)
                if x is None or y is None:
                    continue
                ax.errorbar(
                    x.mean,
                    y.mean,
                    xerr=x.ci_half or 0,
                    yerr=y.ci_half or 0,
                    fmt=_marker(row.strategy, "", spare) or "o",
                    color=f"C{k}",
                    markersize=7,
                    capsize=2,
                    label=row.label,
                )
            ax.set_xlabel("in-distribution test top-1 (%)")
            ax.set_ylabel(f"{measure} top-1 (%)")
            ax.set_title(f"{group[0]} → {group[1]} ({group[2]}): {measure}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def alpha_shift_curve(shifted):
    """α-mix's mean top-1 against α in distribution and on each shift (mCA, its families, each dataset shift):
    WiSE-FT's figure, one panel per source → target. None without α-mix scored on a shift."""
    if shifted is None or not shifted.alpha_points:
        return None
    groups = sorted(shifted.alpha_points)
    fig, axes = plt.subplots(1, len(groups), figsize=(6.0 * len(groups), 4.2), squeeze=False)
    for ax, group in zip(axes[0], groups):
        alphas = sorted(shifted.alpha_points[group])
        measures = ["in distribution"] + shifted.measures + shifted.families
        for k, measure in enumerate(measures):
            means = [summarise(list(shifted.alpha_points[group][a].get(measure, {}).values())) for a in alphas]
            kept = [(a, m) for a, m in zip(alphas, means) if m is not None]
            if kept:
                style = "-o" if measure in ("in distribution", "mCA") or measure in shifted.datasets else ":."
                ax.plot([a for a, _ in kept], [m.mean for _, m in kept], style, color=f"C{k}", label=measure)
        ax.set_xlabel("α  (0 = linear probe, 1 = fine-tuned)")
        ax.set_ylabel("test top-1 (%), mean over seeds")
        ax.set_title(f"α-mix: {group[0]} → {group[1]} ({group[2]})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def estimators_vs_measured(agreeing):
    """Each estimator's score against the measured top-1, one point per source model, one panel per estimator
    (rows) and target (columns), one series per strategy measured. None without estimates to check."""
    if not agreeing:
        return None
    estimators = list(dict.fromkeys(r.estimator for r in agreeing))
    targets = sorted({r.target for r in agreeing})
    strategies = sorted({r.strategy for r in agreeing})
    fig, axes = plt.subplots(
        len(estimators), len(targets), figsize=(4.6 * len(targets), 3.4 * len(estimators)), squeeze=False
    )
    for row in agreeing:
        ax = axes[estimators.index(row.estimator)][targets.index(row.target)]
        k = strategies.index(row.strategy)
        ax.scatter(
            [s for _, s, _ in row.points],
            [a for _, _, a in row.points],
            color=f"C{k}",
            marker="os^Dv<>"[k % 7],
            label=f"{row.strategy} (weighted τ {row.weighted.show()})",
        )
        for model, score, top1 in row.points:
            ax.annotate(model, (score, top1), fontsize=6, alpha=0.7, xytext=(3, 2), textcoords="offset points")
    for i, estimator in enumerate(estimators):
        for j, target in enumerate(targets):
            ax = axes[i][j]
            ax.set_title(f"{estimator} → {target}", fontsize=9)
            ax.set_xlabel(f"{estimator} score (mean over seeds)", fontsize=8)
            ax.set_ylabel("measured test top-1 (%)", fontsize=8)
            ax.grid(alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def figures(records: list[dict], rows, found=None, shifted=None, agreeing=None) -> list[tuple[str, object]]:
    """(file stem, figure) for every plot these results can draw."""
    drawn = (
        ("accuracy_vs_compute", accuracy_vs_compute(rows)),
        ("alpha_curve", alpha_curve(records)),
        ("regimes", regime_curve(records)),
        ("performance_profile", performance_profiles(found)),
        ("critical_difference", critical_difference(found)),
        ("ood_vs_id", ood_vs_id(shifted)),
        ("alpha_shift_curve", alpha_shift_curve(shifted)),
        ("estimators_vs_measured", estimators_vs_measured(agreeing)),
    )
    return [(stem, fig) for stem, fig in drawn if fig is not None]


def inline_svg(svg: str) -> str:
    """SVG text to embed in an HTML page: the XML prolog dropped."""
    return svg[svg.index("<svg") :]


def svg_text(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return inline_svg(buffer.getvalue())


def write_plots(records: list[dict], rows, directory: Path, found=None, shifted=None, agreeing=None) -> list[Path]:
    """accuracy_vs_compute, alpha_curve, regimes, and with an aggregate across tasks (``found``) the performance
    profiles and the critical-difference diagram (where there is something to draw), each as PNG and SVG, into
    ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, fig in figures(records, rows, found, shifted, agreeing):
        written += [save(fig, directory / f"{stem}.png"), save(fig, directory / f"{stem}.svg")]
        plt.close(fig)
    return written
