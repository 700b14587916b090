"""The generation cache is rebuildable state: a corrupted SQLite file is moved aside with a one-line warning
and the run goes on with a fresh one; a cache folder that cannot be written is one error line.

SQLite reports corruption as SQLITE_CORRUPT ("database disk image is malformed": a truncated file) or
SQLITE_NOTADB ("file is not a database": an overwritten header), at open or only when a damaged page is
read, so both the opening and each query go through here. The moved file keeps its name plus
``.corrupt-<time>`` so that nothing is deleted.
"""

from __future__ import annotations

import functools
import sqlite3
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from harness.core.errors import HarnessError

_CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def is_corruption(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    return name.startswith(_CORRUPT) or "malformed" in text or "not a database" in text


def move_aside(path: Path, exc: BaseException) -> Path:
    """Rename the damaged database (and its WAL/shared-memory files) out of the way; returns the new name."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.replace(aside.with_name(aside.name + suffix))
    print(f"safety-harness: warning: generation cache {path} is corrupted ({exc}); moved it to {aside.name} "
          "and started a new one (responses are generated again)", file=sys.stderr)
    return aside


def unusable(cache, exc: BaseException) -> HarnessError:
    reason = getattr(exc, "strerror", None) or str(exc)
    return HarnessError(f"cache folder {cache.dir} cannot be used ({reason}); pass --cache-dir with a writable "
                        "folder, or --no-cache")


@contextmanager
def cache_errors(cache):
    """Opening the cache: corruption is repaired once; anything else (read-only folder, full disk) is one line."""
    try:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            move_aside(cache.path, exc)
            cache._init_db()
    except (OSError, sqlite3.Error) as exc:
        raise unusable(cache, exc) from None


def recovering(method):
    """A cache query that meets a corrupted file moves it aside, reopens a fresh cache and retries once."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    raise
                move_aside(self.path, exc)
                self._init_db()
                return method(self, *args, **kwargs)
        except (OSError, sqlite3.Error) as exc:
            raise unusable(self, exc) from None

    return wrapper
