"""File helpers every layer shares: content hashes and writes that a reader never sees half done."""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (model weights are GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path`` in one rename
    (atomic on one filesystem), and when it fails the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name (not just the pid): two threads or xdist workers may write the same target at once.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; caches and reports may be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def unwritable(path: Path) -> str | None:
    """Why a file could not be written at ``path`` (as ``atomic_path`` writes it: a temporary file beside
    it, then a rename), or None when it could. Creates nothing, so it can run before any work is done."""
    path = Path(path)
    if path.is_dir():
        return "is a folder, not a file"
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # the folders atomic_path would create
        folder = folder.parent
    if not folder.is_dir():
        return f"cannot be created: {folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot be written: no permission to write in {folder}"
    if path.exists() and not os.access(path, os.W_OK):
        return "cannot be written: the file is read-only"
    return None


def check_writable(outputs) -> None:
    """Every file a run will write, as (option, path) pairs (None: not asked for), is writable: checked
    before any work, since a report path that names a folder would otherwise fail the run at its very end.
    A ``HarnessError`` of one line naming the option and path."""
    from harness.core.errors import HarnessError

    for option, path in outputs:
        why = None if path is None else unwritable(Path(path))
        if why:
            raise HarnessError(f"{option} {path}: {why}; the run would fail when writing it, so it did not start")
