"""On-disk generation cache: one SQLite file, keyed by everything that determines a response.

SQLite gives atomic commits per chunk, so a run killed midway keeps what it finished, and it is safe to
read from several pytest-xdist workers at once. Writers also hold a ``FileLock`` per run key (see
``generation_lock``) so that only one process generates a given set of prompts.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from filelock import FileLock

from harness.engine.cache_recovery import cache_errors, recovering
from harness.core.types import GenerationResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    n_tokens INTEGER NOT NULL,
    finish_reason TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS scores (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def stable_hash(*parts) -> str:
    """sha256 of a JSON encoding of ``parts``: stable across processes and Python versions."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def request_key(run_key: str, formatted_text: str, row: tuple[str, str] | None = None) -> str:
    """A generation's key; ``row`` (suite, prompt id) for a reply that belongs to its row, not to its text."""
    return stable_hash(run_key, formatted_text) if row is None else stable_hash(run_key, formatted_text, list(row))


# Backends whose reply is a file's answer to one (suite, prompt id), not a function of the prompt's text: two
# rows of one text (two suites, a dataset's duplicates) may hold different replies, so they never share a key.
ROW_REPLY_BACKENDS = ("replay",)


def prompt_request_key(run_key: str, backend: str | None, prompt, text: str) -> str:
    """The key of ``prompt`` formatted as ``text``: the session's requests and the xdist payload's rows."""
    return request_key(run_key, text, (prompt.suite, prompt.prompt_id) if backend in ROW_REPLY_BACKENDS else None)


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)  # numpy scalars from scorers' extras


def cached_values(cache: "GenerationCache | None", keys: list[str], compute, *, what: str) -> tuple[list, int]:
    """Values for ``keys``, in order: read from the cache's scores table; the missing ones are computed by
    ``compute(indices)`` (JSON-able values, in order) under a file lock, so that of several processes that
    want the same values (pytest-xdist workers) one computes and the others wait and read. Without a cache
    (``--no-cache``) everything is computed. Returns (values, how many came from the cache)."""
    if cache is None:
        return list(compute(list(range(len(keys))))), 0
    found = cache.get_values(keys)
    todo = [i for i, key in enumerate(keys) if key not in found]
    if todo:
        with cache.generation_lock(stable_hash(what, sorted(set(keys)))):
            found = cache.get_values(keys)
            todo = [i for i, key in enumerate(keys) if key not in found]
            if todo:
                new = dict(zip((keys[i] for i in todo), compute(todo)))
                cache.put_values(new)
                found.update(new)
    return [found[key] for key in keys], len(keys) - len(todo)


class GenerationCache:
    def __init__(self, cache_dir: Path):
        self.dir = Path(cache_dir)
        self.path = self.dir / "generations.sqlite"
        with cache_errors(self):
            self.dir.mkdir(parents=True, exist_ok=True)
            self._init_db()

    def _init_db(self) -> None:
        # Switching a new database to WAL needs an exclusive lock, and SQLite answers "database is locked" at
        # once (no busy wait) when two processes (xdist workers) create the file together: one at a time.
        with FileLock(str(self.path) + ".init.lock"), closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            db.commit()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    @recovering
    def get_many(self, keys: list[str]) -> dict[str, GenerationResult]:
        found: dict[str, GenerationResult] = {}
        with closing(self._connect()) as db:
            for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, response, n_tokens, finish_reason FROM generations WHERE key IN ({marks})", chunk
                )
                for key, response, n_tokens, finish in rows:
                    found[key] = GenerationResult(response, n_tokens, finish)
        return found

    @recovering
    def put_many(self, items: dict[str, GenerationResult]) -> None:
        now = time.time()
        with closing(self._connect()) as db:
            db.executemany(
                "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?)",
                [(k, r.text, r.n_tokens, r.finish_reason, now) for k, r in items.items()],
            )
            db.commit()

    @recovering
    def get_values(self, keys: list[str]) -> dict[str, object]:
        """JSON values stored by ``put_values``: scores that cost a model pass (reference log-likelihoods,
        judge verdicts), keyed like generations by everything that determines them."""
        found: dict[str, object] = {}
        with closing(self._connect()) as db:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, value in db.execute(f"SELECT key, value FROM scores WHERE key IN ({marks})", chunk):
                    found[key] = json.loads(value)
        return found

    @recovering
    def put_values(self, items: dict[str, object]) -> None:
        now = time.time()
        with closing(self._connect()) as db:
            db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?)",
                           [(k, json.dumps(v, default=_plain), now) for k, v in items.items()])
            db.commit()

    def generation_lock(self, run_key: str, timeout: float = -1) -> FileLock:
        lock_dir = self.dir / "locks"
        lock_dir.mkdir(exist_ok=True)
        return FileLock(str(lock_dir / f"{run_key[:32]}.lock"), timeout=timeout)
