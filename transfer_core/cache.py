"""A content-addressed store of trained models: the key is a hash of everything that produced them."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch


def content_key(description: Any) -> str:
    """A stable hash of a JSON-able description (sorted keys, so dict order never matters)."""
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:20]


class ModelCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.pt"

    def load(self, kind: str, key: str) -> Optional[tuple[dict, dict]]:
        """(state_dict, meta) or None. weights_only=True: a cache file cannot run code when read."""
        path = self.path(kind, key)
        if not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            return payload["state_dict"], json.loads(payload["meta"])
        except Exception:  # a truncated or foreign file is a cache miss, not a crash
            return None

    def save(self, kind: str, key: str, state_dict: dict, meta: dict) -> Path:
        path = self.path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        cpu_state = {k: v.detach().cpu() for k, v in state_dict.items()}
        # write then rename: a run killed mid-write never leaves a half file under the real name
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save({"state_dict": cpu_state, "meta": json.dumps(meta, default=str)}, tmp)
        os.replace(tmp, path)
        return path
