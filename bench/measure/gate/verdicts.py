"""The gate's verdicts: speed from repeated, interleaved samples; accuracy from the two revisions' records.

Speed. Each benchmark is timed in k rounds on one machine. A round starts a fresh process per revision
(a process is a sample too: two running identical code differed by up to 22% here, for the process's
whole life), then takes samples of base and head back to back, the order swapped every time; the round's
ratio is head's median over base's. The machine drifts (a shared 2-core VM's step time wandered by 40%
within a minute here), but within a round both revisions see nearly the same machine, so the verdict
works on the k paired ratios (an unpaired test such as Mann–Whitney U on the pooled samples would count
the drift as noise). A benchmark is ``slower`` when both hold:
  * a one-sided Wilcoxon signed-rank test on the log ratios says head is slower with p < ``alpha``
    (rank-based: one round stretched by a noisy neighbour cannot carry it), and
  * the median ratio is at least 1 + ``min_effect`` (a significant 2% is not worth a red CI).
``faster`` is the mirror image and never fails. The median ratio is given with a 95% bootstrap interval
(rounds resampled, seeded, so a verdict is reproducible from its samples).

Accuracy. ``bench.results.compare`` judges the thresholds on head against base, matched by cell and candidate
(not by configuration key: it holds the code's versions, which a revision may change). On one machine
the CPU path is deterministic, so the two revisions are expected to agree bitwise; every metric that
does not is listed, and a drop beyond the threshold fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median
from typing import Optional

import numpy as np

from bench.text import number

BOOTSTRAP_RESAMPLES = 4000


@dataclass
class SpeedVerdict:
    name: str
    unit: str
    base: list[float]
    head: list[float]
    verdict: str  # "slower", "faster", "no significant change" or "not compared"
    ratio: Optional[float] = None  # median over rounds of head / base: above 1 is slower
    ratio_ci: Optional[tuple[float, float]] = None  # its 95% bootstrap interval
    p_slower: Optional[float] = None  # one-sided Wilcoxon signed-rank on the log ratios: head slower than base
    p_faster: Optional[float] = None
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict in ("slower", "failed")

    def as_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("name", "unit", "verdict", "ratio", "ratio_ci", "p_slower", "p_faster", "note", "base", "head")
        }


def bootstrap_median_ci(
    values: list[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of the median of ``values``, resampling them with replacement."""
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(np.asarray(values, dtype=float), (resamples, len(values))), axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(low), float(high)


def judge_speed(
    name: str, unit: str, base: list[float], head: list[float], min_effect: float, alpha: float
) -> SpeedVerdict:
    """The verdict on one benchmark's samples (seconds per unit: lower is better); ``base[i]`` and ``head[i]``
    were taken in the same round."""
    from scipy.stats import (
        wilcoxon,  # imported when first needed, like the other statistics
    )

    if len(base) != len(head):
        raise ValueError(f"{name}: {len(base)} base samples and {len(head)} head samples are not pairs")
    if len(base) < 3:
        return SpeedVerdict(name, unit, base, head, "not compared", note="fewer than 3 rounds")
    ratios = [h / b for b, h in zip(base, head)]
    log_ratios = np.log(ratios)
    ratio = float(np.median(ratios))
    if not np.any(log_ratios):  # identical timings: nothing to test
        p_slower = p_faster = 1.0
    else:
        p_slower = float(wilcoxon(log_ratios, alternative="greater").pvalue)
        p_faster = float(wilcoxon(log_ratios, alternative="less").pvalue)
    if p_slower < alpha and ratio >= 1 + min_effect:
        verdict = "slower"
    elif p_faster < alpha and ratio <= 1 / (1 + min_effect):
        verdict = "faster"
    else:
        verdict = "no significant change"
    return SpeedVerdict(name, unit, base, head, verdict, ratio, bootstrap_median_ci(ratios), p_slower, p_faster)


def _metrics(record: dict) -> dict:
    return record.get("metrics") or {}


def bitwise_differences(base_records: list[dict], head_records: list[dict]) -> tuple[int, list[str]]:
    """How many ok records both revisions have (matched by cell and candidate), and one line for every
    metric that is not exactly equal between them."""
    from bench.results.records import candidate

    head_by_id = {(r["cell_id"], candidate(r)): r for r in head_records if r.get("status") == "ok"}
    compared, differences = 0, []
    for base in base_records:
        head = head_by_id.get((base["cell_id"], candidate(base)))
        if base.get("status") != "ok" or head is None:
            continue
        compared += 1
        for metric in sorted(set(_metrics(base)) | set(_metrics(head))):
            before, after = _metrics(base).get(metric), _metrics(head).get(metric)
            if before != after:
                which = f" ({candidate(base)})" if candidate(base) else ""
                differences.append(f"{base['cell_id']}{which} {metric}: {before} → {after}")
    return compared, differences


@dataclass
class GateResult:
    """Everything the summary says; ``failed`` decides the exit code."""

    title: str  # what was compared with what, where
    speed: list[SpeedVerdict] = field(default_factory=list)
    speed_method: str = ""
    accuracy: Optional[object] = None  # bench.results.compare.Comparison
    accuracy_method: str = ""
    bitwise: Optional[tuple[int, list[str]]] = None
    problems: list[str] = field(default_factory=list)  # what made the gate fail outside the verdicts
    notes: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.problems) or any(v.failed for v in self.speed) or bool(self.accuracy and self.accuracy.failed)

    def failing(self) -> list[str]:
        """One line per reason the gate fails, naming the metric."""
        lines = [" ".join(problem.split()) for problem in self.problems]  # one line each, whatever they quote
        for v in self.speed:
            if v.failed:
                lines.append(
                    f"speed: {v.name} is {100 * (v.ratio - 1):.1f}% slower (median ratio {v.ratio:.3f}, 95% interval "
                    f"{v.ratio_ci[0]:.3f} – {v.ratio_ci[1]:.3f}; {_ms(median(v.base))} → {_ms(median(v.head))} "
                    f"{_unit(v.unit)}; p = {v.p_slower:.2g})"
                    if v.ratio is not None
                    else f"speed: the head cannot run benchmark {v.name}: {v.note}"
                )
        if self.accuracy is not None:
            for c in self.accuracy.changes:
                if c.verdict in ("regressed", "failed") or (
                    c.verdict in ("missing", "config changed") and not self.accuracy.allow_missing
                ):
                    what = (
                        f"{c.metric} {c.base:.2f} → {c.new:.2f} ({c.change:+.2f}{c.threshold.unit}, fails beyond "
                        f"{c.threshold.describe()})"
                        if c.verdict == "regressed"
                        else c.note
                    )
                    lines.append(
                        f"accuracy: {c.cell_id}{f' {c.candidate}' if c.candidate else ''}: {c.verdict}: {what}"
                    )
        return lines


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.2f}"


def _unit(unit: str) -> str:
    return "ms" + unit.removeprefix("s")


def speed_table(verdicts: list[SpeedVerdict]) -> str:
    from tabulate import tabulate

    rows = []
    for v in verdicts:
        size = number(v.ratio, ".3f")
        interval = "–" if v.ratio_ci is None else f"{v.ratio_ci[0]:.3f} – {v.ratio_ci[1]:.3f}"
        rows.append(
            [
                v.name,
                _unit(v.unit),
                _ms(median(v.base)) if v.base else "–",
                _ms(median(v.head)) if v.head else "–",
                size,
                interval,
                number(v.p_slower, ".2g"),
                str(max(len(v.base), len(v.head))),
                v.verdict + (f" ({v.note})" if v.note else ""),
            ]
        )
    return tabulate(
        rows,
        headers=[
            "benchmark",
            "unit",
            "base median",
            "head median",
            "head / base (median of rounds)",
            "95% interval",
            "p (slower)",
            "rounds",
            "verdict",
        ],
        tablefmt="github",
        disable_numparse=True,
    )


def render_summary(result: GateResult) -> str:
    """Markdown for the CI job summary: the verdict, what fails, then each part with the test it used."""
    from bench.results.compare import render_table, verdict_line

    lines = [f"## Regression gate: {'❌ regression' if result.failed else '✅ no regression'}", "", result.title, ""]
    failing = result.failing()
    if failing:
        lines += ["### What fails", ""] + [f"- {line}" for line in failing] + [""]
    if result.speed:
        lines += ["### Speed", "", result.speed_method, "", speed_table(result.speed), ""]
    if result.accuracy is not None:
        lines += ["### Accuracy", "", result.accuracy_method, "", verdict_line(result.accuracy), ""]
        if result.bitwise is not None:
            compared, differences = result.bitwise
            if not differences:
                lines += [f"All {compared} records both revisions have are bitwise equal.", ""]
            else:
                lines += [
                    f"{len(differences)} metrics of the {compared} records both revisions have differ (the change "
                    "altered the numerics; only drops beyond the threshold fail):",
                    "",
                ]
                lines += [f"- {d}" for d in differences[:50]] + (
                    [f"- … and {len(differences) - 50} more"] if len(differences) > 50 else []
                )
                lines += [""]
        lines += [
            "<details><summary>Every comparison</summary>",
            "",
            render_table(result.accuracy),
            "",
            "</details>",
            "",
        ]
    if result.notes:
        lines += ["### Notes", ""] + [f"- {n}" for n in result.notes] + [""]
    if result.timings:
        lines += ["Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items()) + ".", ""]
    return "\n".join(lines)
