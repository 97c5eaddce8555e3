"""A content-addressed store of trained models (and corrupted test splits): the key is a hash of everything
that produced them.

Each model is one file, ``<kind>/<key>.pt``, written under a temporary name and renamed into place, so a
reader never sees half a file. Beside it, ``<key>.sha256`` holds the file's content hash, written before
the file itself: a model file whose content is not the one written (swapped, corrupted, cut short) is
refused and rebuilt, never loaded. Files load with ``torch.load(weights_only=True)``: tensors and plain
data only, so a cache file cannot run code either way. ``<key>.lock`` is the claim on building it: whoever
holds the lock (an OS file lock, released by the kernel when its holder dies) builds the model; everyone
else waits for it or works on something else.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
from filelock import FileLock, Timeout

from .files import file_sha256, write_file


def content_key(description: Any) -> str:
    """A stable hash of a JSON-able description (sorted keys, so dict order never matters)."""
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:20]


def claim(lock_path: Path) -> Optional[FileLock]:
    """The lock at ``lock_path`` if nobody holds it (taken without waiting), else None."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


class ModelCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.pt"

    def has(self, kind: str, key: str) -> bool:
        return self.path(kind, key).is_file()

    def claim(self, kind: str, key: str) -> Optional[FileLock]:
        """The right to build ``kind/key``, or None while another process holds it. Whoever gets it also
        clears temporary files a builder killed mid-write left behind."""
        lock = claim(self.path(kind, key).with_suffix(".lock"))
        if lock is not None:
            for partial in self.path(kind, key).parent.glob(f"{key}.pt.*.tmp"):
                partial.unlink(missing_ok=True)
        return lock

    def load(self, kind: str, key: str) -> Optional[tuple[dict, dict]]:
        """(state_dict, meta), or None when missing, or not the content that was written (a miss, rebuilt)."""
        path = self.path(kind, key)
        if not path.is_file():
            return None
        try:
            if path.with_suffix(".sha256").read_text().strip() != file_sha256(path):
                return None  # swapped or corrupted since it was written
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            return payload["state_dict"], json.loads(payload["meta"])
        except Exception:  # no hash beside it, a truncated or foreign file: a cache miss, not a crash
            return None

    def save(self, kind: str, key: str, model: torch.nn.Module, meta: dict) -> Path:
        """Saves the model's weights, and which parameters are frozen, so that loading restores the model
        exactly as it was saved."""
        frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
        return self.save_tensors(kind, key, model.state_dict(), {**meta, "frozen": frozen})

    def save_tensors(self, kind: str, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
        """Saves named tensors (a model's state, a corrupted test split) and their meta under ``kind/key``."""
        path = self.path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        cpu_state = {k: v.detach().cpu() for k, v in tensors.items()}
        # write then rename: a run killed mid-write never leaves a half file under the real name
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{key}.pt.", suffix=".tmp")
        os.fchmod(fd, 0o644)  # mkstemp makes it private; a cache shared between nodes and users must be readable
        os.close(fd)
        try:
            torch.save({"state_dict": cpu_state, "meta": json.dumps(meta, default=str)}, tmp)
            # the hash first: a model file in place always has its own beside it (a stale one refuses an old file)
            write_file(path.with_suffix(".sha256"), file_sha256(Path(tmp)) + "\n")
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path

    def load_into(self, kind: str, key: str, model: torch.nn.Module) -> Optional[dict]:
        """Loads ``kind/key`` into ``model`` (weights, and frozen parameters frozen again); its meta, or None."""
        cached = self.load(kind, key)
        if cached is None:
            return None
        state_dict, meta = cached
        model.load_state_dict(state_dict)
        frozen = set(meta.get("frozen", ()))
        for name, p in model.named_parameters():
            p.requires_grad_(name not in frozen)
        return meta
