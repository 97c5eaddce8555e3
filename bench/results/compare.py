"""``bench compare BASELINE NEW``: regression verdicts between two results folders, for CI.

Cells are matched by identity (cell id and α) and must have the same config hash to be compared; each
threshold is then judged on the mean over the seeds both runs have (``--per-seed``: on every cell).
Each threshold knows its metric's direction (``bench.results.fields``): ``top1:-0.5pp`` fails a
drop of more than half a point, ``target_train_s:+10%`` a rise of more than 10%, ``target_img_per_s:-5%``
a throughput drop of more than 5%. A change beyond the threshold the other way is an improvement.
A cell that failed in NEW, or is missing from it, is a regression too (``--allow-missing`` relaxes
the latter). A cell whose α chosen on validation changed is listed as "selection changed" (not blocking:
the thresholds judge its accuracy). A ``%`` threshold on a metric that is 0 in the baseline and not in
NEW is an error (no percentage of 0 says how much worse); 0 in both is no change. Reads only the two
results stores.

Longer than 400 lines on purpose: matching, thresholds, selection changes and the summary are one contract
with CI, read top to bottom; every verdict it prints is defined here.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tabulate import tabulate

from bench.errors import BenchError
from bench.results.fields import DIRECTIONS
from bench.results.records import candidate
from bench.results.frame import read as read_results
from bench.results.stats import MIN_SEEDS_FOR_TESTS, McNemar, correct_bits, mcnemar_drop
from bench.text import number

ALIASES = {"top1": "test_top1_pct", "top5": "test_top5_pct", "val_top1": "val_top1_pct"}
DEFAULT_THRESHOLDS = "top1:-0.5pp"
VERDICT_ORDER = [
    "regressed",
    "failed",
    "missing",
    "config changed",
    "selection changed",
    "trial failed",  # a trial of a grid or tuning search that trained before: shown, not blocking
    "improved",
    "within noise",  # beyond the threshold, but the paired test over seeds does not call it a drop
    "within threshold",
    "new",
    "no value",
]


class CompareError(BenchError):
    """Input compare cannot use: the message says why (exit code 2)."""


@dataclass(frozen=True)
class Threshold:
    metric: str
    amount: float  # the worsening allowed, a magnitude
    unit: str  # "pp" (percentage points), "%" (relative) or "" (the metric's own unit)

    @property
    def direction(self) -> str:
        return DIRECTIONS[self.metric]

    def describe(self) -> str:
        sign = "-" if self.direction == "higher" else "+"
        return f"{sign}{self.amount:g}{self.unit}"

    def change(self, base: float, new: float) -> Optional[float]:
        """new − base in the threshold's unit: points or the metric's own unit, or % of the baseline."""
        if self.unit == "%":
            return 0.0 if base == new == 0 else None if base == 0 else 100.0 * (new - base) / abs(base)
        return new - base

    def worsening(self, base: float, new: float) -> Optional[float]:
        """How much worse ``new`` is than ``base``, in the threshold's unit (negative: better)."""
        change = self.change(base, new)
        return None if change is None else (change if self.direction == "lower" else -change)


def parse_thresholds(spec: str) -> list[Threshold]:
    """``metric:[+-]amount[pp|%]`` items separated by commas; the sign, if given, must point the bad way."""
    thresholds = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        match = re.fullmatch(r"([A-Za-z0-9_]+):([+-]?)(\d+(?:\.\d+)?)(pp|%)?", item)
        if not match:
            raise CompareError(f"--fail: cannot read {item!r}; expected metric:[+-]amount[pp|%], e.g. top1:-0.5pp")
        name, sign, amount, unit = match.groups()
        metric = ALIASES.get(name, name)
        if metric not in DIRECTIONS:
            known = ", ".join(list(ALIASES) + sorted(DIRECTIONS))
            raise CompareError(f"--fail: unknown metric {name!r}; known: {known}")
        direction = DIRECTIONS[metric]
        bad_sign = "-" if direction == "higher" else "+"
        if sign and sign != bad_sign:
            worse = "a drop" if direction == "higher" else "a rise"
            raise CompareError(
                f"--fail: {name} is {direction}-is-better, so a regression is {worse}; "
                f"write {name}:{bad_sign}{amount}{unit or ''}"
            )
        if unit == "pp" and not metric.endswith("_pct"):
            raise CompareError(f"--fail: {name}: pp (percentage points) is for percentages; use % or the metric's unit")
        thresholds.append(Threshold(metric, float(amount), unit or ""))
    if not thresholds:
        raise CompareError("--fail: no thresholds given")
    return thresholds


def _value(record: dict, metric: str) -> Optional[float]:
    for section in ("metrics", "compute"):
        if metric in (record.get(section) or {}):
            return record[section][metric]
    return None


@dataclass
class Change:
    cell_id: str
    candidate: Optional[str]  # which of the cell's candidates (``α=0.5``, ``lr=0.03``), if it has several
    metric: str
    verdict: str
    base: Optional[float] = None
    new: Optional[float] = None
    change: Optional[float] = None  # new − base in the threshold's unit
    worsening: Optional[float] = None  # the same, signed so that positive is worse
    threshold: Optional[Threshold] = None
    note: str = ""


@dataclass
class Comparison:
    changes: list[Change]
    allow_missing: bool

    def count(self) -> Counter:
        return Counter(change.verdict for change in self.changes)

    @property
    def failed(self) -> bool:
        counts = self.count()
        blocking = counts["regressed"] + counts["failed"]
        if not self.allow_missing:
            blocking += counts["missing"] + counts["config changed"]
        return blocking > 0


def load(directory: Path, role: str) -> list[dict]:
    """The records a results folder's report shows: the latest per cell and candidate, of the configurations its
    plan has (a suite edited since leaves records of the old configurations behind: a candidate the new suite
    dropped must not be compared as if it were current)."""
    return read_results(directory, role, current=True).records


def _devices(records: list[dict]) -> set[str]:
    return {r.get("provenance", {}).get("device_name") for r in records if r.get("status") == "ok"} - {None}


def _group(record: dict, per_seed: bool) -> str:
    """What a verdict is about: the cell, or the cell without its seed (judged on the mean over seeds)."""
    if per_seed:
        return record["cell_id"]
    return f"{record['source']}->{record['target']}/{record['backbone']}/{record['strategy']}"


def compare(
    base_records: list[dict],
    new_records: list[dict],
    thresholds: list[Threshold],
    allow_device_mismatch: bool = False,
    allow_missing: bool = False,
    per_seed: bool = False,
    match_config: bool = True,
    alpha: float = 0.05,
) -> Comparison:
    """Matches records by identity (cell id, candidate: α or grid point) and config hash; judges each threshold
    on the mean over the seeds both runs have (or on every cell with ``per_seed``). Unmatched and failed cells
    are listed one by one. ``match_config=False`` compares a cell whatever its key: two revisions of the code
    run side by side (the key holds the code's versions, which a revision may change)."""
    base_devices, new_devices = _devices(base_records), _devices(new_records)
    if base_devices and new_devices and base_devices != new_devices and not allow_device_mismatch:
        raise CompareError(
            f"the runs come from different devices (baseline: {', '.join(sorted(base_devices)) or '?'}; "
            f"new: {', '.join(sorted(new_devices)) or '?'}); timings do not compare across devices. "
            "Pass --allow-device-mismatch to compare anyway"
        )

    def identity(r: dict) -> tuple:
        return r["cell_id"], candidate(r)

    def order(r: dict) -> tuple:
        return r["cell_id"], r.get("alpha") is None, r.get("alpha") or 0.0, candidate(r) or ""

    new_by_id = {identity(r): r for r in new_records}
    new_selected = {r["cell_id"]: r for r in new_records if r.get("selected") is not False}
    changes: list[Change] = []
    matched: dict[tuple, list[tuple[dict, dict]]] = {}
    results: dict[str, list[tuple[dict, dict]]] = {}  # the cells' selected records: what their rows report
    for base in sorted(base_records, key=order):
        if base.get("status") != "ok":
            continue  # nothing to regress from
        new = new_by_id.get(identity(base))
        if new is None:
            changes.append(Change(*identity(base), "—", "missing", note="no record in NEW"))
        elif match_config and new.get("config_hash") != base.get("config_hash"):
            changes.append(Change(*identity(base), "—", "config changed", note="same cell, different configuration"))
        elif new.get("status") != "ok" and new.get("selected") is False:  # a trial of a search: a result, not a failure
            changes.append(
                Change(*identity(base), "—", "trial failed", note=f"{new.get('status')}: {new.get('error')}")
            )
        elif new.get("status") != "ok":
            changes.append(Change(*identity(base), "—", "failed", note=f"{new.get('status')}: {new.get('error')}"))
        else:
            matched.setdefault((_group(base, per_seed), candidate(base)), []).append((base, new))
        chosen = new_selected.get(base["cell_id"])
        if base.get("selected") is not False and chosen is not None and chosen.get("status") == "ok":
            if not match_config or chosen.get("config_hash") == base.get("config_hash"):
                results.setdefault(_group(base, per_seed), []).append((base, chosen))
    for threshold in thresholds:
        if threshold.metric in ACCURACY_METRICS:
            for group, pairs in results.items():
                changes.append(
                    _accuracy_verdict(group if per_seed else f"{group} (n={len(pairs)})", pairs, threshold, alpha)
                )
    for (group, which), pairs in matched.items():
        label = group if per_seed else f"{group} (n={len(pairs)})"
        for threshold in thresholds:
            if threshold.metric in ACCURACY_METRICS:
                continue  # judged above, on the selected candidates only
            values = [(_value(b, threshold.metric), _value(n, threshold.metric)) for b, n in pairs]
            values = [(b, n) for b, n in values if b is not None and n is not None]
            if not values:
                changes.append(Change(label, which, threshold.metric, "no value", threshold=threshold))
                continue
            before = sum(b for b, _ in values) / len(values)
            after = sum(n for _, n in values) / len(values)
            if threshold.unit == "%" and before == 0 and after != 0:  # 0 -> 0 is no change; 0 -> x has no %
                raise CompareError(
                    f"{label}: {threshold.metric} is 0 in the baseline, so a % change of it means nothing; "
                    f"gate it with an absolute threshold (e.g. {threshold.metric}:{threshold.describe()[0]}1)"
                )
            worse = threshold.worsening(before, after)
            verdict = (
                "within threshold"
                if worse is None or abs(worse) <= threshold.amount
                else "regressed"
                if worse > 0
                else "improved"
            )
            changes.append(
                Change(
                    label,
                    which,
                    threshold.metric,
                    verdict,
                    before,
                    after,
                    threshold.change(before, after),
                    worse,
                    threshold,
                )
            )
    changes += _selection_changes(base_records, new_records, match_config)
    base_ids = {identity(r) for r in base_records}
    for new in sorted(new_records, key=order):
        if identity(new) not in base_ids:
            changes.append(Change(*identity(new), "—", "new", note="not in the baseline"))
    return Comparison(changes, allow_missing)


ACCURACY_METRICS = {"test_top1_pct", "test_top5_pct", "val_top1_pct"}  # judged by a paired test over seeds


def _accuracy_verdict(label: str, pairs: list[tuple[dict, dict]], threshold: Threshold, alpha: float) -> Change:
    """An accuracy threshold on a cell's selected result (the candidate chosen on validation, in each run: what
    its row reports), over the seeds both runs have. With 3 seeds or more it is ``regressed`` only when the mean
    drop is beyond the threshold *and* a one-sided paired t-test over seeds says it is a drop (p < ``alpha``):
    seed noise alone does not fail it, and a consistent drop does. With fewer, test top-1 is judged image by
    image where both runs scored the same test images (McNemar's test, ``bench.results.stats.McNemar``), else by the
    threshold alone, and the verdict says it is untested. With enough seeds McNemar's result is in the note
    only: it cannot see training noise, which the test over seeds measures."""
    from scipy import stats

    values = [(_value(b, threshold.metric), _value(n, threshold.metric)) for b, n in pairs]
    values = [(b, n) for b, n in values if b is not None and n is not None]
    if not values:
        return Change(label, "selected", threshold.metric, "no value", threshold=threshold)
    before = sum(b for b, _ in values) / len(values)
    after = sum(n for _, n in values) / len(values)
    worse = threshold.worsening(before, after)
    drops = [threshold.worsening(b, n) for b, n in values]
    if worse is None or None in drops:
        return Change(label, "selected", threshold.metric, "no value", before, after, threshold=threshold)
    images = _per_image(pairs) if threshold.metric == "test_top1_pct" else None
    per_image = (
        f"McNemar over {images.images:,} test images: {images.worse} now wrong, {images.better} now right, "
        f"p = {images.p_worse:.3g}"
        if images is not None
        else ""
    )
    if len(drops) < MIN_SEEDS_FOR_TESTS and images is not None:
        # too few seeds for a test over them: the same images, one by one, judge (training noise unaccounted)
        p, note = images.p_worse, f"fewer than {MIN_SEEDS_FOR_TESTS} seeds: {per_image}"
        per_image = ""
    elif len(drops) < MIN_SEEDS_FOR_TESTS:
        p, note = None, f"fewer than {MIN_SEEDS_FOR_TESTS} seeds: the threshold alone, untested"
    elif max(drops) == min(drops):  # no spread over seeds: the same change in every one
        p = 0.0 if drops[0] > 0 else 1.0
        note = f"paired over {len(drops)} seeds: the same change in each"
    else:
        p = float(stats.ttest_1samp(drops, 0.0, alternative="greater").pvalue)
        note = f"paired t over {len(drops)} seeds: p = {p:.3g}"
    if per_image:
        note += f"; {per_image}"
    beyond = abs(worse) > threshold.amount
    if beyond and worse > 0:
        verdict = "regressed" if p is None or p < alpha else "within noise"
    elif beyond and worse < 0:
        verdict = "improved"
    else:
        verdict = "within threshold"
    return Change(
        label,
        "selected",
        threshold.metric,
        verdict,
        before,
        after,
        threshold.change(before, after),
        worse,
        threshold,
        note,
    )


def _per_image(pairs: list[tuple[dict, dict]]) -> Optional[McNemar]:
    """McNemar's test over the pairs' test images, when every pair has per-image results on the same images
    (the same target data and as many images) that agree with the test top-1 the records report; None
    otherwise: a test on some seeds only would pick them, and per-image results that disagree with the reported
    top-1 (a change to how the metric is computed) cannot judge it."""

    def data(record: dict):
        return (((record.get("provenance") or {}).get("data") or {}).get("target") or {}).get("fingerprint")

    def agrees(record: dict, right) -> bool:
        reported = _value(record, "test_top1_pct")
        return reported is not None and len(right) > 0 and abs(100.0 * right.mean() - reported) < 1e-3

    bits = []
    for before, after in pairs:
        a, b = correct_bits(before.get("test_correct")), correct_bits(after.get("test_correct"))
        if a is None or b is None or len(a) != len(b) or data(before) != data(after):
            return None
        if not (agrees(before, a) and agrees(after, b)):
            return None
        bits.append((a, b))
    return mcnemar_drop(bits)


def _selection_changes(base_records: list[dict], new_records: list[dict], match_config: bool = True) -> list[Change]:
    """A cell whose candidate chosen on validation (alpha-mix's α, a grid's point) differs between the runs: its
    own verdict, shown but not blocking (the metrics' thresholds judge what the choice did to accuracy)."""

    def chosen(records: list[dict]) -> dict[tuple, dict]:
        return {
            (r["cell_id"], r.get("config_hash") if match_config else None): r
            for r in records
            if r.get("status") == "ok" and candidate(r) is not None and r.get("selected")
        }

    base, new = chosen(base_records), chosen(new_records)
    changes = []
    for (cell_id, config), before in sorted(base.items()):
        after = new.get((cell_id, config))
        if after is None or candidate(after) == candidate(before):
            continue
        if before.get("alpha") is not None and after.get("alpha") is not None:
            changes.append(
                Change(
                    cell_id,
                    None,
                    "selected α",
                    "selection changed",
                    before["alpha"],
                    after["alpha"],
                    note=f"α {before['alpha']:g} → {after['alpha']:g}",
                )
            )
        else:
            changes.append(
                Change(
                    cell_id,
                    None,
                    "selected grid point",
                    "selection changed",
                    note=f"{candidate(before)} → {candidate(after)}",
                )
            )
    return changes


def _fmt(value: Optional[float]) -> str:
    return number(value, ",.2f" if value is None or abs(value) < 1e6 else ".3g")


def _rows(changes: list[Change]) -> list[list[str]]:
    ordered = sorted(changes, key=lambda c: VERDICT_ORDER.index(c.verdict))
    rows = []
    for c in ordered:
        worse = (
            ""
            if c.change is None
            else f"{c.change + 0.0:+.2f}{c.threshold.unit} "
            + ("(worse)" if c.worsening > 0 else "(better)" if c.worsening < 0 else "")
        )
        rows.append(
            [
                c.cell_id,
                c.candidate or "",
                c.metric,
                _fmt(c.base),
                _fmt(c.new),
                worse.strip(),
                c.threshold.describe() if c.threshold else "",
                c.verdict + (f" ({c.note})" if c.note else ""),
            ]
        )
    return rows


HEADERS = ["cell (n = seeds averaged)", "candidate", "metric", "baseline", "new", "change", "fails beyond", "verdict"]


def render_table(comparison: Comparison) -> str:
    return tabulate(_rows(comparison.changes), headers=HEADERS, tablefmt="github", disable_numparse=True)


def verdict_line(comparison: Comparison) -> str:
    counts = comparison.count()
    parts = ", ".join(f"{counts[v]} {v}" for v in VERDICT_ORDER if counts[v])
    return f"{'FAIL' if comparison.failed else 'PASS'}: {parts or 'nothing compared'}"


def render_summary(comparison: Comparison, baseline: str, new: str, thresholds: list[Threshold]) -> str:
    """Markdown for a CI job summary: the verdict, what blocks, and every comparison folded away."""
    blocking = {"regressed", "failed"} | (set() if comparison.allow_missing else {"missing", "config changed"})
    bad = [c for c in comparison.changes if c.verdict in blocking]
    gates = ", ".join(f"`{t.metric}` {t.describe()}" for t in thresholds)
    lines = [
        f"## Benchmark comparison: {'❌ regression' if comparison.failed else '✅ no regression'}",
        "",
        f"`{new}` against the baseline `{baseline}`; fails beyond {gates}.",
        "",
        verdict_line(comparison),
        "",
    ]
    if bad:
        lines += [
            "### What fails",
            "",
            tabulate(_rows(bad), headers=HEADERS, tablefmt="github", disable_numparse=True),
            "",
        ]
    lines += ["<details><summary>Every comparison</summary>", "", render_table(comparison), "", "</details>", ""]
    return "\n".join(lines)
