"""``bench index``: ``results/README.md``, the index of every published result, from the results alone.

For each folder with a ``records.jsonl`` (a suite's results) and each JSON written by ``bench datapath``,
``bench throughput`` or a script in ``scripts/`` that measures:
what it is, the hardware, when, at which commit, and the command that produced it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tabulate import tabulate

from bench.results.records import RecordError, ResultsStore
from bench.results.frame import read as read_results
from bench.text import commit_label


def suite_entry(folder: Path, root: Path) -> list[str]:
    published = read_results(folder, current=False, empty_ok=True)
    records, plan = published.records, published.plan
    with_provenance = [r for r in records if r.get("provenance")]
    suite = plan["suite"] if plan else (records[0].get("suite") if records else folder.name)
    if not with_provenance:
        return [f"[{folder.relative_to(root)}/]({folder.relative_to(root)}/)", suite, "–", "–", "–", "–"]
    last = with_provenance[-1]["provenance"]
    dates = sorted(r["provenance"].get("finished_at", "")[:10] for r in with_provenance)
    ok = sum(r.get("status") == "ok" for r in records)
    report = folder / "report.md"
    link = f"[{folder.relative_to(root)}/]({(report if report.is_file() else folder).relative_to(root)})"
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} – {dates[-1]}"
    return [
        link,
        f"suite `{suite}`: {ok} of {len(records)} records ok",
        last.get("device_name", "?"),
        when,
        commit_label(last),
        f"`{last.get('command', '?')}`",
    ]


def _what(data: dict) -> str:
    if data["kind"] == "datapath":
        return "data-path throughput: " + ", ".join(row["backend"] for row in data.get("rows", []))
    if data["kind"] == "load":
        return "load: " + "; ".join(
            f"{row['what']}: {row['median_s']:.2f} s" for row in data.get("rows", []) if row.get("limit_s")
        )
    if data["kind"] == "executors":
        return (
            f"`{data['suite']}` ({data['cells']} cells): "
            f"local {data['local_wall_s']:.0f} s, Ray {data['ray_wall_s']:.0f} s, "
            f"local/Ray {data['local_over_ray']:.2f}x"
        )
    if data["kind"] == "parity":
        worst = max(data.get("rows", []), key=lambda r: abs(r["mean_diff_pp"]), default=None)
        largest = f"; largest mean difference {worst['mean_diff_pp']:+.2f} pp ({worst['arm']}, {worst['strategy']})"
        return f"precision parity: {', '.join(data['arms'])} over seeds" + (largest if worst else "")
    if data["kind"] == "threads":
        return (
            f"threads: {len(data.get('rows', []))} configurations of training threads, inter-op threads, data workers"
        )
    if data["kind"] == "host_memory":
        return "host memory: page faults and images/s of a train step, system against retained"
    if data["kind"] == "profile":
        return f"profile of a cell ({data['amp']}): " + ", ".join(
            f"{name} {100 * s / data['wall_s']:.0f}%" for name, s in data["regions_s"].items()
        )
    parts = []
    if "step" in data:
        parts.append(f"harness/bare train step {data['step']['ratio']:.2f}x")
    if "probe" in data:
        parts.append(f"cached/naive probe {data['probe']['speedup']:.1f}x")
    if "matrix" in data:
        parts.append(f"runtime matrix ({len(data['matrix'])} rows)")
    return "throughput: " + ", ".join(parts)


def measurement_entry(path: Path, root: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    provenance = data.get("provenance", {})
    markdown = path.with_suffix(".md")
    link = f"[{path.relative_to(root)}]({(markdown if markdown.is_file() else path).relative_to(root)})"
    command = "?"
    if markdown.is_file():
        text = markdown.read_text(encoding="utf-8")
        if "Produced by `" in text:
            command = text.split("Produced by `", 1)[1].split("`", 1)[0]
    return [
        link,
        _what(data),
        provenance.get("device_name", "?"),
        data.get("measured_at", "?")[:10],
        commit_label(provenance),
        f"`{command}`",
    ]


def _git_ignored(path: Path) -> bool:
    """Folders git ignores (local runs such as results/quick/) are not published, so not indexed."""
    try:
        return (
            subprocess.run(
                ["git", "check-ignore", "-q", str(path.resolve())],
                cwd=path.resolve().parent,
                capture_output=True,
                timeout=10,
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


def build_index(root: Path) -> str:
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not _git_ignored(p)):
        if ResultsStore(folder).path.is_file():
            rows.append(suite_entry(folder, root))
        for path in sorted(folder.glob("*.json")):
            try:
                kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                continue  # not a measurement (plan.json is not one either)
            if kind in ("datapath", "throughput", "executors", "load", "parity", "threads", "profile", "host_memory"):
                try:
                    rows.append(measurement_entry(path, root))
                except (KeyError, TypeError, ValueError, AttributeError) as e:
                    raise RecordError(
                        f"{path}: a {kind} measurement without the fields bench writes ({type(e).__name__}: {e})"
                    ) from None
    table = tabulate(
        rows,
        headers=["results", "what", "hardware", "date (UTC)", "commit", "command"],
        tablefmt="github",
        disable_numparse=True,
    )
    return (
        "# Published results\n\n"
        "Every result committed here, with how it was produced. Each suite folder holds `records.jsonl` (one JSON line "
        "per evaluated cell, with full provenance), `plan.json`, and the reports `bench report --write` renders: "
        "`report.md`, `report.tex`, `report.csv`, `report.html` and the plots (PNG and SVG). Regenerate this page "
        "with `python -m bench index results`.\n\n" + table + "\n"
    )
