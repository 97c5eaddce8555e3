"""Writing into results folders, which may come from someone else: never through a link planted there.

A file is written under a fresh temporary name beside its destination (created exclusively, so never an
existing file or link) and renamed over it: a symbolic link at the destination is replaced, not followed,
and a reader never sees half a file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union


def write_file(path: Path, content: Union[str, bytes]) -> Path:
    """Writes ``content`` (text as UTF-8) to ``path`` atomically, replacing whatever entry is there."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for reading
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
