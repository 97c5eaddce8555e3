"""Content hashes of image files, computed once per file version.

A folder dataset's fingerprint is made of its files' content hashes, so an image edited in place at the
same size is new data. Reading every byte of a large folder on every run would cost more than the run, so
each file's sha256 is kept against its version, (real path, size, mtime_ns), in memory and, once
``use_store`` names one (the builder does: ``<cache>/file-hashes.sqlite``), in a SQLite file every run and
worker sharing the cache reads. New hashes reach the store on ``flush``, once a run has passed its checks
(nothing is written by a run that stops before it starts). A file whose size or modification time changed
is hashed again; one rewritten with the same size and its old modification time restored (``touch -r``) is
not noticed.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Optional, Sequence

_known: dict[tuple[str, int, int], str] = {}  # (real path, size, mtime_ns) -> sha256
_unsaved: dict[tuple[str, int, int], str] = {}  # hashed here, not yet in the store
_store: Optional[Path] = None
_QUERY_CHUNK = 500  # SQLite's limit on bound parameters is far above this


def use_store(path: Optional[Path]) -> None:
    """Keep hashes in this SQLite file too (None: in memory only)."""
    global _store
    _store = None if path is None else Path(path)


def _version(path: str) -> tuple[str, int, int]:
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _connect(store: Path) -> sqlite3.Connection:
    store.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(store, timeout=60)  # another run writing: wait for it
    connection.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INT, mtime_ns INT, sha TEXT)")
    return connection


def _load(versions: list[tuple[str, int, int]]) -> None:
    """Known hashes of these versions from the store, into memory."""
    if not _store.is_file():  # reading creates nothing
        return
    try:
        with _connect(_store) as connection:
            for start in range(0, len(versions), _QUERY_CHUNK):
                chunk = versions[start : start + _QUERY_CHUNK]
                marks = ",".join("?" * len(chunk))
                wanted = set(chunk)
                for path, size, mtime_ns, sha in connection.execute(
                    f"SELECT path, size, mtime_ns, sha FROM hashes WHERE path IN ({marks})", [v[0] for v in chunk]
                ):
                    if (path, size, mtime_ns) in wanted:
                        _known[(path, size, mtime_ns)] = sha
    except (sqlite3.Error, OSError):  # an unreadable store only costs hashing again
        pass


def _save(found: dict[tuple[str, int, int], str]) -> None:
    try:
        with _connect(_store) as connection:
            connection.executemany(
                "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)",
                [(path, size, mtime_ns, sha) for (path, size, mtime_ns), sha in found.items()],
            )
    except (sqlite3.Error, OSError):  # a full disk or a read-only cache: the next run hashes them again
        pass


def content_hashes(paths: Sequence[str]) -> list[str]:
    """The sha256 of each file's bytes, from the cache where its version is known."""
    versions = [_version(p) for p in paths]
    unknown = [v for v in versions if v not in _known]
    if unknown and _store is not None:
        _load(unknown)
        unknown = [v for v in unknown if v not in _known]
    if unknown:
        from tqdm import tqdm

        todo = tqdm(list(dict.fromkeys(unknown)), desc="hashing image files", unit="file", leave=False, disable=None)
        found = {version: _sha256(version[0]) for version in todo}
        _known.update(found)
        _unsaved.update(found)
    return [_known[v] for v in versions]


def flush() -> None:
    """Writes the hashes computed since the last flush to the store, if there is one."""
    if _store is not None and _unsaved:
        _save(dict(_unsaved))
        _unsaved.clear()
