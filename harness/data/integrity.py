"""A dataset file checked against its pin in the manifest, on every read: the sha256 the manifest records,
else git's blob id of the file at the pinned commit.

A run reads a pinned file through :func:`check` before any loader parses it, so an edited or corrupted
copy (in the user cache or in a data folder) stops the run with one line instead of producing numbers
from other prompts. Hashes are memoised per process by path, size, mtime and ctime, so the run's own
later reads of the same file (the report's provenance, a second suite on the same file) do not hash it
again, while an edit in between (which changes mtime and ctime) does.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from harness.core.errors import DataError
from harness.core.files import sha256_file
from harness.data.manifest import DataFile

_CHUNK = 1 << 20
_memo: dict[tuple, str] = {}
_memo_lock = threading.Lock()  # the generation thread pool may load suites while the main thread reports
hashed_bytes = 0  # bytes hashed in this process, for the cost measurement in benchmarks and tests


class DataIntegrityError(DataError):
    """A pinned file's content differs from the manifest: one line naming the file, both hashes and the
    command that fetches the upstream file. Never a "missing data" case: --allow-missing-data does not
    skip it, because the file is there and says something else."""


def shown(value: object) -> str:
    """A path or URL for a one-line message: as it is, or repr() when it holds a newline or another
    unprintable character."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def git_blob_id_of(path: Path) -> str:
    """Git's object id of the file's bytes: sha1 of ``blob <size>\\0`` followed by the content, the id the
    upstream tree at the pinned commit names the file by."""
    digest = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


_HASHES = {"sha256": sha256_file, "git blob": git_blob_id_of}


def content_hash(path: Path, kind: str = "sha256") -> str:
    """``kind`` ("sha256" or "git blob") of the file's bytes, computed now (a download's temporary file)."""
    global hashed_bytes
    digest = _HASHES[kind](Path(path))
    with _memo_lock:
        hashed_bytes += os.path.getsize(path)
    return digest


def _key(path: Path, kind: str) -> tuple:
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, kind


def file_hash(path: Path, kind: str = "sha256") -> str:
    """``kind`` of the file, computed once per process for a given path, size, mtime and ctime."""
    key = _key(path, kind)
    with _memo_lock:
        if key in _memo:
            return _memo[key]
    digest = content_hash(path, kind)
    with _memo_lock:
        _memo[key] = digest
    return digest


def remember(path: Path, kind: str, digest: str) -> None:
    """Record the hash of a file just written from content already checked (a download moved into place)."""
    with _memo_lock:
        _memo[_key(path, kind)] = digest


def pin(entry: DataFile) -> tuple[str, str]:
    """(kind, expected hash) the manifest pins ``entry`` by: its sha256, else its git blob id."""
    return ("sha256", entry.sha256) if entry.sha256 else ("git blob", entry.git_blob)


def mismatch(entry: DataFile, path: Path) -> tuple[str, str, str] | None:
    """None when the file at ``path`` is the pinned one; else (kind, expected, got)."""
    kind, expected = pin(entry)
    got = file_hash(path, kind)
    return None if got == expected else (kind, expected, got)


def check(entry: DataFile, path: Path, *, fetch_name: str | None = None, in_cache: bool = False) -> Path:
    """``path`` when it holds the pinned content of ``entry``; else :class:`DataIntegrityError`. ``fetch_name``
    is what the message tells the user to fetch (a suite name; default the file's name); ``in_cache``:
    the file is the user cache's copy, which `data fetch` replaces, rather than a data folder's, which the
    user must remove or restore first."""
    found = mismatch(entry, path)
    if found is None:
        return path
    kind, expected, got = found
    command = f"`safety-harness data fetch {fetch_name or entry.name}`"
    todo = (f"run {command} to fetch it again" if in_cache
            else f"restore the upstream file or remove this copy, then run {command}")
    raise DataIntegrityError(f"{shown(path)}: {kind} is {got}, but the manifest pins {expected} for {entry.name} "
                             f"({entry.source.repo}@{entry.source.commit[:8]}); {todo}")


def forget() -> None:
    """Drop the memoised hashes (tests that measure the first read)."""
    global hashed_bytes
    with _memo_lock:
        _memo.clear()
        hashed_bytes = 0
