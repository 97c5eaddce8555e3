"""How numbers and code versions read in tables and summaries: the same in every one of them."""

from __future__ import annotations

import os
from typing import Optional

MISSING = "–"  # a number that is not there


def number(value: Optional[float], spec: str) -> str:
    """``value`` formatted with ``spec``, or a dash for None."""
    return MISSING if value is None else format(value, spec)


def commit_label(provenance: dict) -> str:
    """A record's code version: the commit's first 10 characters, and whether the tree differed from it."""
    commit = (provenance.get("git_commit") or "unknown")[:10]
    return commit + (" (dirty)" if provenance.get("git_dirty") else "")


def publish_summary(markdown: str, path: Optional[str] = None) -> None:
    """Appends a markdown summary to ``path`` (if given) and, on GitHub Actions, to the job's summary page."""
    targets = [path] if path else []
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        targets.append(os.environ["GITHUB_STEP_SUMMARY"])
    for target in targets:
        with open(target, "a", encoding="utf-8") as f:
            f.write(markdown)
