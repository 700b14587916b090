"""The label store: every human label, kept in one SQLite file (by default ``labels.sqlite`` beside the
generation cache), keyed by ``harness.core.records.label_key`` of the reply, so that any later run of any
model that meets the same (prompt, input, response) finds it.

Unlike the generation cache, nothing here can be rebuilt: a person's labels are the record. So a damaged
file is never moved aside or replaced: opening it is one error line naming the file, and the file stays as
it was. Each label is committed on its own as it is given (WAL journal, full sync), so a closed tab or a
killed process loses nothing; a write that meets another process's lock waits ``timeout`` seconds and is
then refused with one line (the caller says so and may retry), never dropped in silence. An undo retracts a
label (it stays in the file, marked), so the history of every label is kept.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from harness.core.errors import HarnessError
from harness.core.records import label_key
from harness.core.types import REFUSAL_LABELS
from harness.labels.records import LabelRecord, in_force, is_open
from harness.labels.rubric import RUBRIC_VERSION

FILE_NAME = "labels.sqlite"
SCHEMA_VERSION = 1
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    prompt TEXT NOT NULL,
    input TEXT NOT NULL,
    response TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL REFERENCES replies(key),
    label TEXT NOT NULL,
    labeller TEXT NOT NULL,
    labelled_at TEXT NOT NULL,
    rubric_version TEXT NOT NULL,
    source TEXT NOT NULL,
    retracted_at TEXT
);
-- one label per labeller, reply and instant: importing the same file twice adds nothing
CREATE UNIQUE INDEX IF NOT EXISTS labels_once ON labels(key, labeller, labelled_at);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_COLUMNS = ("l.id, l.key, l.label, l.labeller, l.labelled_at, l.rubric_version, l.source, r.prompt, r.input, "
            "r.response, l.retracted_at")
_CHUNK = 500  # SQLite caps the number of bound parameters


def store_path(labels: Path | None, cache_dir: Path) -> Path:
    """The store a run or command uses: ``labels`` (TOML ``labels``, ``--labels``) if set, else the file beside
    the generation cache."""
    return Path(labels) if labels else Path(cache_dir) / FILE_NAME


def default_labeller() -> str:
    """The OS user name (``--labeller`` overrides it)."""
    import getpass
    import os

    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no name for this uid (a bare container)
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalize_time(text: str) -> str | None:
    """An ISO 8601 time as the store writes it (UTC, microseconds); naive times are read as UTC. None when
    ``text`` is no ISO time."""
    raw = text.strip()
    try:
        when = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _is_locked(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return isinstance(exc, Timeout) or name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc)


def _is_damaged(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text


class LabelStore:
    """Human labels in one SQLite file; created on first use. See the module's notes on failure."""

    def __init__(self, path: Path, *, timeout: float = 10.0):
        self.path = Path(path)
        self.timeout = timeout  # seconds a write waits for another process's lock before it is refused
        with self._errors("it was not opened"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()

    @classmethod
    def default(cls, cache_dir: Path) -> LabelStore:
        """``<cache_dir>/labels.sqlite``, beside the generation cache."""
        return cls(store_path(None, cache_dir))

    # -- writing -------------------------------------------------------------------------------------------

    def add(self, key: str, label: str, *, labeller: str, prompt: str, response: str, input: str = "",
            rubric_version: str = RUBRIC_VERSION, source: str = "review", labelled_at: str | None = None) -> int:
        """Store one label, committed at once; returns its id (for ``retract``)."""
        record = LabelRecord(0, key, label, labeller, labelled_at or now_iso(), rubric_version, source,
                             prompt, input or "", response)
        self._check(record)
        with self._errors(f"the label for {key} was not stored"), self._connect() as db:
            return self._insert(db, record)

    def add_many(self, records: Iterable[LabelRecord]) -> tuple[int, int]:
        """Store labels in one transaction (all or none); returns (added, already stored). ``id`` and
        ``retracted_at`` of the given records are ignored."""
        records = list(records)
        for record in records:
            self._check(record)
        with self._errors("no label of the import was stored"), self._connect() as db:
            added = sum(1 for r in records if self._insert(db, r, ignore_existing=True))
        return added, len(records) - added

    def retract(self, label_id: int) -> None:
        """Undo a label: it stays in the file, marked retracted, and is no longer in force."""
        with self._errors(f"label {label_id} was not retracted"), self._connect() as db:
            changed = db.execute("UPDATE labels SET retracted_at = ? WHERE id = ? AND retracted_at IS NULL",
                                 (now_iso(), label_id)).rowcount
        if not changed:
            raise HarnessError(f"label store {self.path}: no label {label_id} in force to retract")

    # -- reading -------------------------------------------------------------------------------------------

    def records(self, keys: Iterable[str] | None = None, *, include_retracted: bool = False) -> list[LabelRecord]:
        """Every label (of ``keys``, if given) with who, when, the rubric version and the texts, oldest first."""
        where = "" if include_retracted else " AND l.retracted_at IS NULL"
        query = f"SELECT {_COLUMNS} FROM labels l JOIN replies r ON r.key = l.key WHERE 1=1{where}"
        with self._errors("nothing was read"), closing(self._connection()) as db:
            if keys is None:
                rows = db.execute(query).fetchall()
            else:
                rows = [row for chunk in _chunks(sorted(set(keys))) for row in
                        db.execute(f"{query} AND l.key IN ({','.join('?' * len(chunk))})", chunk)]
        return sorted((LabelRecord(*row) for row in rows), key=lambda r: r.order)

    def labels(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        """key -> the label in force (``harness.labels.records``: adjudication, else each labeller's latest
        label votes; a tie has none)."""
        out = {}
        for key, group in _by_key(self.records(keys)).items():
            label = in_force(group)
            if label is not None:
                out[key] = label
        return out

    def open_keys(self, keys: Iterable[str] | None = None) -> list[str]:
        """Keys labelled by several people who disagree with no majority: waiting for adjudication."""
        return sorted(key for key, group in _by_key(self.records(keys)).items() if is_open(group))

    # -- internals -----------------------------------------------------------------------------------------

    def _check(self, r: LabelRecord) -> None:
        if r.label not in REFUSAL_LABELS:
            raise HarnessError(f"label store {self.path}: {r.label!r} is not a label ({', '.join(REFUSAL_LABELS)})")
        if not r.labeller.strip():
            raise HarnessError(f"label store {self.path}: a label needs a labeller")
        if label_key(r.prompt, r.response, r.input) != r.key:
            raise HarnessError(f"label store {self.path}: key {r.key} is not the key of the given prompt and "
                               "response (an edited text?)")

    @staticmethod
    def _insert(db: sqlite3.Connection, r: LabelRecord, *, ignore_existing: bool = False) -> int:
        db.execute("INSERT OR IGNORE INTO replies VALUES (?, ?, ?, ?)", (r.key, r.prompt, r.input, r.response))
        cursor = db.execute(
            f"INSERT {'OR IGNORE ' if ignore_existing else ''}INTO labels "
            "(key, label, labeller, labelled_at, rubric_version, source) VALUES (?, ?, ?, ?, ?, ?)",
            (r.key, r.label, r.labeller, r.labelled_at, r.rubric_version, r.source))
        return cursor.lastrowid if cursor.rowcount else 0

    def _connection(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        db.execute("PRAGMA synchronous = FULL")  # a commit survives a killed process and a power cut
        return db

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed when the block succeeds."""
        with closing(self._connection()) as db:
            db.execute("BEGIN IMMEDIATE")  # take the write lock now: a locked store waits here, then refuses
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _open(self) -> None:
        with closing(self._connection()) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError(f"database disk image is malformed: {problems[0]}")
        if version > SCHEMA_VERSION:
            raise HarnessError(f"label store {self.path} was written by a newer safety-harness (schema {version}); "
                               "upgrade safety-harness to read it")
        if version == SCHEMA_VERSION and mode == "wal":
            return
        # Switching to WAL needs the only connection, and SQLite refuses at once (no busy wait) when two
        # processes create the file together: one at a time.
        with FileLock(str(self.path) + ".init.lock", timeout=self.timeout), closing(self._connection()) as db:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _errors(self, consequence: str) -> Iterator[None]:
        """sqlite and file errors as one line naming the store and what did not happen."""
        try:
            yield
        except (sqlite3.Error, OSError, Timeout) as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            if _is_locked(exc):
                raise HarnessError(f"label store {self.path} is locked by another process ({text}, waited "
                                   f"{self.timeout:g} s): {consequence}; nothing stored was lost, try again") from None
            if _is_damaged(exc):
                raise HarnessError(f"label store {self.path} is damaged ({text}) and was left as it is: restore it from "
                                   "a copy or an earlier labels export, or pass --labels with a new file") from None
            reason = getattr(exc, "strerror", None) or text
            raise HarnessError(f"label store {self.path} cannot be used ({reason}): {consequence}") from None


def _chunks(keys: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), _CHUNK):
        yield keys[start:start + _CHUNK]


def _by_key(records: list[LabelRecord]) -> dict[str, list[LabelRecord]]:
    groups: dict[str, list[LabelRecord]] = {}
    for r in records:
        groups.setdefault(r.key, []).append(r)
    return groups
