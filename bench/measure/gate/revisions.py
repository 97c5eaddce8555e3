"""The two revisions the gate compares: the head (the working tree) and the base (a commit checked out into a
temporary git worktree), each with its own results folder and model cache."""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError


class GateError(BenchError):
    """The gate cannot run: not a git checkout, an unknown revision, a folder it will not overwrite."""


def git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        raise GateError(f"git {' '.join(args)}: {e}") from None
    if done.returncode != 0:
        raise GateError(f"git {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout.strip()


def head_revision(repo: Path) -> str:
    """The head's commit, short, and whether the working tree differs from it (results/ aside)."""
    commit = git(repo, "rev-parse", "--short=12", "HEAD")
    dirty = git(repo, "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return f"{commit} with uncommitted changes" if dirty else commit


@contextlib.contextmanager
def base_worktree(repo: Path, commit: str, scratch: Path):
    """REF checked out, detached, in a temporary worktree; removed afterwards, even when the gate fails."""
    path = scratch / "base-tree"
    git(repo, "worktree", "prune")  # worktrees of a gate that was killed
    git(repo, "worktree", "add", "--detach", "--quiet", str(path), commit)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)], capture_output=True)


@dataclass
class Side:
    """One revision: its tree, its results folder and its own model cache."""

    name: str  # "base" or "head"
    root: Path
    revision: str
    out: Path
    cache: Path

    def env(self) -> dict:
        env = dict(os.environ)
        # this revision's packages first: `python -m bench` and the timing worker import them from here
        env["PYTHONPATH"] = os.pathsep.join([str(self.root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.pop("BENCH_CACHE_DIR", None)
        return env


def log_tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " / ".join(text[-lines:])
