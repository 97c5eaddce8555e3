"""Files written whole and read back checked; no torch here, so the commands that only read results stay light."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Union


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_file(path: Path, content: Union[str, bytes]) -> Path:
    """Writes ``content`` (text as UTF-8) to ``path`` atomically: under a fresh temporary name beside it
    (created exclusively, so never an existing file or link), renamed over it. A reader never sees half a
    file, and a symbolic link planted at ``path`` (in a results folder from someone else) is replaced, not
    followed."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results and caches are for reading
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
