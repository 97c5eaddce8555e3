"""Out of distribution: each row's top-1 on the target's shifted test sets, from ``shifts.jsonl``.

A row's model on a shift is the model its cell's result was chosen as in distribution (the refit model, the
grid point or α chosen on validation): nothing is chosen on a shift. Per row, over seeds:
- **mCA**, the mean corruption accuracy: top-1 averaged over every corruption and severity scored (CIFAR-10-C's
  average), and per family (noise, blur, weather, digital);
- each dataset shift's top-1;
- **effective robustness** (Taori et al. 2020): the OOD top-1 above what the baseline's models predict from
  their in-distribution top-1, by a line fitted in logit space through every baseline model scored (its
  tuning trials and its chosen models, over seeds): ``OOD − 100·σ(a·logit(ID) + b)``.
Intervals are Student-t over seeds; Δs are paired by seed (the same data, the same corrupted images).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from transfer_core.shifts.corruptions import CORRUPTIONS

from bench.results.records import SHIFT_RECORDS, ResultsStore
from bench.results.stats import Summary, paired_difference, summarise
from bench.results.tables import PAIR_COLUMNS, Column, Table, interval

MCA = "mCA"  # the corruption average, as a measure beside the dataset shifts


def read_shift_records(directory: Path, id_records: list[dict], planned: Optional[set] = None) -> list[dict]:
    """The latest ok shift records of the evaluations ``id_records`` come from, and with ``planned`` (the plan's
    shift evaluations) only those the suite still asks for: a shift dropped or changed since leaves its old
    records out."""
    store = ResultsStore(directory, SHIFT_RECORDS)
    current = {r.get("config_hash") for r in id_records}
    latest: dict[tuple, dict] = {}
    for r in store.read():
        if r.get("evaluation_key") in current and (planned is None or r.get("config_hash") in planned):
            model = (r.get("alpha"), json.dumps(r.get("grid_point"), sort_keys=True))
            latest[(r["cell_id"], r["config_hash"], model)] = r
    return [r for r in latest.values() if r.get("status") == "ok"]


@dataclass
class Fit:
    """logit(OOD) = slope · logit(ID) + intercept, over the baseline's models."""

    slope: float
    intercept: float
    points: list[tuple[float, float]]  # (ID, OOD) top-1 in %, each baseline model
    r2: float

    def predict(self, id_top1: float) -> float:
        return 100 / (1 + math.exp(-(self.slope * _logit(id_top1) + self.intercept)))


def _logit(pct: float) -> float:
    p = min(max(pct / 100, 1e-3), 1 - 1e-3)  # 0% and 100% have no logit
    return math.log(p / (1 - p))


def fit(points: list[tuple[float, float]]) -> Optional[Fit]:
    """The least-squares line in logit space; None with fewer than 3 models or no spread in ID top-1."""
    if len(points) < 3 or len({round(x, 6) for x, _ in points}) < 2:
        return None
    x = np.array([_logit(a) for a, _ in points])
    y = np.array([_logit(b) for _, b in points])
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    spread = ((y - y.mean()) ** 2).sum()
    return Fit(float(slope), float(intercept), points, float(1 - (residual**2).sum() / spread) if spread else 1.0)


@dataclass
class ShiftRow:
    """A results row out of distribution: per measure (``mCA``, a family, a dataset shift), its top-1 by seed."""

    source: str
    target: str
    backbone: str
    strategy: str
    baseline: bool
    alphas: set = field(default_factory=set)  # α-mix: the α chosen on validation, over seeds
    id_by_seed: dict[int, float] = field(default_factory=dict)
    by_seed: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    effective: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    delta_mca: Optional[Summary] = None  # paired, against the baseline's row

    @property
    def label(self) -> str:
        chosen = "/".join(f"{a:g}" for a in sorted(self.alphas))
        return f"{self.strategy} (α={chosen})" if chosen else self.strategy

    def summary(self, measure: str) -> Optional[Summary]:
        return summarise(list(self.by_seed.get(measure, {}).values()))

    def effective_summary(self, measure: str) -> Optional[Summary]:
        return summarise(list(self.effective.get(measure, {}).values()))


@dataclass
class Robustness:
    rows: list[ShiftRow]
    families: list[str]  # corruption families scored, in order
    datasets: list[str]  # dataset shifts scored
    corruptions: list[str]  # every corruption/severity label scored
    fits: dict[tuple, dict[str, Optional[Fit]]]  # (source, target, backbone) -> measure -> fit
    alpha_points: dict[tuple, dict[float, dict[str, dict[int, float]]]]  # α-mix: key -> α -> measure -> seed -> top-1

    @property
    def measures(self) -> list[str]:
        return ([MCA] if self.corruptions else []) + self.datasets


def _measures(records: list[dict]) -> dict[str, float]:
    """One model's shift records -> top-1 per measure: mCA (when every corruption scored is there), per family,
    per dataset shift."""
    corrupted = [r for r in records if r["shift"]["kind"] == "corruption"]
    out = {r["shift"]["label"]: r["metrics"]["test_top1_pct"] for r in corrupted}  # each corruption/severity
    if corrupted:
        out[MCA] = statistics.fmean(r["metrics"]["test_top1_pct"] for r in corrupted)
        families = defaultdict(list)
        for r in corrupted:
            families[r["shift"]["family"]].append(r["metrics"]["test_top1_pct"])
        out.update({family: statistics.fmean(values) for family, values in families.items()})
    for r in records:
        if r["shift"]["kind"] == "dataset":
            out[r["shift"]["label"]] = r["metrics"]["test_top1_pct"]
    return out


def robustness(id_records: list[dict], shift_records: list[dict], info: dict[str, dict]) -> Optional[Robustness]:
    """The rows out of distribution, the baseline's fits and α-mix's curves; None without shift records."""
    if not shift_records:
        return None
    labels = sorted(
        {r["shift"]["label"] for r in shift_records if r["shift"]["kind"] == "corruption"},
        key=lambda label: (CORRUPTIONS.index(label.split("/")[0]), int(label.split("/")[1])),
    )
    families = [
        f for f in ("noise", "blur", "weather", "digital") if any(r["shift"].get("family") == f for r in shift_records)
    ]
    datasets = sorted({r["shift"]["label"] for r in shift_records if r["shift"]["kind"] == "dataset"})
    # every shift a target lists: a model scored on fewer (a run cut short) is left out rather than averaged
    expected: dict[str, set] = defaultdict(set)
    for r in shift_records:
        expected[r["target"]].add(r["shift"]["label"])

    # each model's shift records: (cell, evaluation) -> model -> records
    by_model: dict[tuple, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in shift_records:
        model = (r.get("alpha"), json.dumps(r.get("grid_point") if r.get("trial") else None, sort_keys=True))
        by_model[(r["cell_id"], r["evaluation_key"])][model].append(r)

    def complete(records: list[dict]) -> Optional[dict[str, float]]:
        scored = {r["shift"]["label"] for r in records}
        return _measures(records) if records and scored == expected[records[0]["target"]] else None

    rows: dict[tuple, ShiftRow] = {}
    fit_points: dict[tuple, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    alpha_points: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for r in id_records:
        if r.get("status") != "ok" or r.get("trial"):
            continue
        models = by_model.get((r["cell_id"], r["config_hash"]))
        if not models:
            continue
        group = (r["source"], r["target"], r["backbone"])
        baseline = info.get(r["strategy"], {}).get("baseline", False)
        refit = (r.get("details") or {}).get("refit", False)
        is_trial = r.get("grid_point") is not None and not refit and not r.get("selected")
        if r.get("alpha") is not None:  # every α: the curve
            found = complete(models.get((r["alpha"], "null"), []))
            if found:
                for measure, value in {"in distribution": r["metrics"]["test_top1_pct"], **found}.items():
                    alpha_points[group][r["alpha"]][measure][r["seed"]] = value
        if baseline:  # every model of the baseline scored: the fit's points
            point = json.dumps(r["grid_point"] if is_trial else None, sort_keys=True)
            found = complete(models.get((None, point), []))
            for measure, value in (found or {}).items():
                if measure == MCA or measure in datasets:  # the measures effective robustness is given for
                    fit_points[group][measure].append((r["metrics"]["test_top1_pct"], value))
        if not r.get("selected"):
            continue
        found = complete(models.get((r.get("alpha"), "null"), []))
        if not found:
            continue
        key = (*group, r["strategy"])
        if key not in rows:
            rows[key] = ShiftRow(*key, baseline=baseline)
        row = rows[key]
        if r.get("alpha") is not None:
            row.alphas.add(r["alpha"])
        row.id_by_seed[r["seed"]] = r["metrics"]["test_top1_pct"]
        for measure, value in found.items():
            row.by_seed[measure][r["seed"]] = value
    fits = {
        group: {measure: fit(points) for measure, points in measures.items()} for group, measures in fit_points.items()
    }
    for (source, target, backbone, _), row in rows.items():
        group_fits = fits.get((source, target, backbone), {})
        for measure, found in group_fits.items():
            if found is None:
                continue
            for seed, value in row.by_seed.get(measure, {}).items():
                row.effective[measure][seed] = value - found.predict(row.id_by_seed[seed])
        reference = next((o for k, o in rows.items() if k[:3] == (source, target, backbone) and o.baseline), None)
        if reference is not None and reference is not row:
            row.delta_mca = paired_difference(row.by_seed.get(MCA, {}), reference.by_seed.get(MCA, {}))
    order = {name: (i.get("table_order", 100), name) for name, i in info.items()}
    ordered = sorted(
        rows.values(), key=lambda r: (r.source, r.target, r.backbone, order.get(r.strategy, (100, r.strategy)))
    )
    return Robustness(ordered, families, datasets, labels, fits, alpha_points)


def table(found: Robustness) -> Table:
    """The robustness table: its columns follow the shifts the results have."""

    def measure_column(header: str, measure: str, effective: bool = False) -> Column:
        def summary_of(r: ShiftRow):
            return r.effective_summary(measure) if effective else r.summary(measure)

        name = measure.replace("/", "_").replace(" ", "_")
        prefix = f"effective_robustness_{name}" if effective else f"top1_{name}"
        return Column(
            header,
            lambda r: interval(summary_of(r), signed=effective),
            (
                (f"{prefix}_mean", lambda r: summary_of(r).mean if summary_of(r) else None),
                (f"{prefix}_ci95_half", lambda r: summary_of(r).ci_half if summary_of(r) else None),
            ),
        )

    columns = [
        *PAIR_COLUMNS,
        Column("strategy", lambda r: r.label, (("strategy", lambda r: r.strategy),), text=True),
        Column(
            "ID top-1 (%)",
            lambda r: interval(summarise(list(r.id_by_seed.values()))),
            (("id_top1_mean", lambda r: statistics.fmean(r.id_by_seed.values())),),
        ),
    ]
    if found.corruptions:
        columns.append(measure_column("mCA (%)", MCA))
        columns.append(
            Column(
                "Δ mCA vs baseline (pp, paired)",
                lambda r: interval(r.delta_mca, signed=True),
                (("delta_mca_vs_baseline_mean", lambda r: r.delta_mca.mean if r.delta_mca else None),),
            )
        )
        columns += [measure_column(f"{family} (%)", family) for family in found.families]
        columns.append(measure_column("eff. robustness, mCA (pp)", MCA, effective=True))
    for name in found.datasets:
        columns.append(measure_column(f"{name} (%)", name))
        columns.append(measure_column(f"eff. robustness, {name} (pp)", name, effective=True))
    columns.append(Column("n", lambda r: str(len(r.id_by_seed)), (("seeds", lambda r: len(r.id_by_seed)),)))
    shown = f"{len(found.corruptions)} corruption/severity pairs" if found.corruptions else ""
    note = (
        "Top-1 on the shifted test sets of each row's model as chosen in distribution (nothing is chosen on a "
        f"shift){'; mCA: the mean over ' + shown + ', and per family' if shown else ''}. Effective robustness: "
        "OOD top-1 minus the baseline's logit-linear fit of OOD on ID top-1 (fitted through every baseline model "
        "scored, its own row's included; the intervals are over seeds and take the line as exact). 95% t "
        "intervals over seeds."
    )
    return Table("robustness", "Out of distribution", note, tuple(columns))


def per_shift_table(found: Robustness) -> Table:
    """Each row's top-1 on each corrupted set (corruption/severity), means over seeds with their intervals."""

    def column(label: str) -> Column:
        name = label.replace("/", "_sev")
        return Column(
            f"{label} (%)",
            lambda r: interval(r.summary(label)),
            (
                (f"top1_{name}_mean", lambda r: r.summary(label).mean if r.summary(label) else None),
                (f"top1_{name}_ci95_half", lambda r: r.summary(label).ci_half if r.summary(label) else None),
            ),
        )

    columns = (
        *PAIR_COLUMNS,
        Column("strategy", lambda r: r.label, (("strategy", lambda r: r.strategy),), text=True),
        *(column(label) for label in found.corruptions),
    )
    note = "Each row's test top-1 on each corrupted test set (corruption/severity), 95% t intervals over seeds."
    return Table("corruptions", "Per corruption", note, columns)


def lines(found: Robustness) -> list[str]:
    """What the robustness table rests on, and the paired comparisons a reader of a robustness paper looks for:
    LP-FT against full fine-tuning, and α-mix's curve (its ends and its best interior α, an oracle choice)."""
    out = []
    for (source, target, backbone), measures in sorted(found.fits.items()):
        for measure, f in measures.items():
            if f is None:
                out.append(
                    f"{source} → {target} ({backbone}), {measure}: too few baseline models for a fit (3 needed)."
                )
                continue
            out.append(
                f"{source} → {target} ({backbone}), {measure}: baseline fit logit(OOD) = {f.slope:.3f}·logit(ID) "
                f"{f.intercept:+.3f} over {len(f.points)} models (R² {f.r2:.2f})."
            )
    by_group = defaultdict(dict)
    for row in found.rows:
        by_group[(row.source, row.target, row.backbone)][row.strategy] = row
    for group, strategies in sorted(by_group.items()):
        name = f"{group[0]} → {group[1]} ({group[2]})"
        if "lp_ft" in strategies and "full_finetune" in strategies:
            for measure in found.measures:
                d = paired_difference(
                    strategies["lp_ft"].by_seed.get(measure, {}), strategies["full_finetune"].by_seed.get(measure, {})
                )
                d_id = paired_difference(strategies["lp_ft"].id_by_seed, strategies["full_finetune"].id_by_seed)
                if d is not None:
                    out.append(
                        f"{name}: lp_ft − full_finetune on {measure}: {interval(d, signed=True)} pp "
                        f"(in distribution {interval(d_id, signed=True)}; paired, {d.n} seeds)."
                    )
    for group, alphas in sorted(found.alpha_points.items()):
        name = f"{group[0]} → {group[1]} ({group[2]})"
        for measure in found.measures:
            curve = {a: points.get(measure, {}) for a, points in sorted(alphas.items())}
            if not curve or not all(curve.values()):
                continue
            shown = ", ".join(f"α={a:g} {interval(summarise(list(v.values())))}" for a, v in curve.items())
            out.append(f"{name}: α-mix on {measure}: {shown}.")
            ends = [min(curve), max(curve)]
            interior = [a for a in curve if a not in ends]
            if interior:
                best = max(interior, key=lambda a: statistics.fmean(curve[a].values()))
                for end in ends:
                    d = paired_difference(curve[best], curve[end])
                    if d is not None:
                        out.append(
                            f"{name}: on {measure}, the best interior α={best:g} (an oracle choice, made on the shift: "
                            f"no row uses it) − α={end:g}: {interval(d, signed=True)} pp (paired, {d.n} seeds)."
                        )
    return out
