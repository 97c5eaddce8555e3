"""How a result was obtained: code version, library versions, device."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path

import torch

REPO_DIR = Path(__file__).resolve().parents[2]  # the checkout holding bench/pipeline/provenance.py


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO_DIR), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(distribution: str):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{model} ({threads} thread{'s' if threads != 1 else ''})"


@functools.lru_cache(maxsize=None)
def code_and_versions() -> dict:
    commit = _git("rev-parse", "HEAD")
    return {
        "git_commit": commit or None,
        # dirty = code differs from the commit; regenerating results/ while running is not a code change
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"))
        if commit
        else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "numpy": _version("numpy"),
        "dali": _version("nvidia-dali-cuda130") or _version("nvidia-dali-cuda120"),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def provenance(device: torch.device) -> dict:
    return {**code_and_versions(), "device_name": device_name(device), "platform": platform.platform()}
