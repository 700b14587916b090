"""Reading users' tables: CSV, JSONL, JSON and Parquet files as rows, each named by file and line (or JSON
item / Parquet row) so that every problem is a one-line ``DataError``. The dataset loaders in
``harness.data.loaders``, the replay backend and ``safety-harness score`` all read through here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from harness.core.errors import DataError

__all__ = ["read_table"]

def _one_line(text: object, limit: int = 60) -> str:
    """A value quoted for an error message: repr() escapes newlines, so the message stays one line."""
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


def _found(keys: Iterable[object]) -> str:
    names = [str(k).replace("\n", " ") for k in keys]
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return shown or "nothing"


def _existing_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: not found")
    if p.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    return p


def _read_text(path: str | Path, *, replace_undecodable: bool = False) -> tuple[Path, str]:
    """Read a whole file as UTF-8; ``utf-8-sig`` because spreadsheet exports often start with a BOM.

    With ``replace_undecodable``, bytes that are not UTF-8 become U+FFFD instead of an error (for files of
    model outputs, where one stray byte should not stop the scoring of thousands of rows)."""
    p = _existing_file(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return p, raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if not replace_undecodable:
            line = raw.count(b"\n", 0, e.start) + 1
            raise DataError(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None
        return p, raw.decode("utf-8-sig", errors="replace")


def load_json(path: str | Path) -> tuple[Path, object]:
    p, text = _read_text(path)
    try:
        return p, json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno})") from None


def _iter_jsonl(label: str, text: str) -> Iterator[tuple[int, dict | DataError]]:
    """Yield ``(line, object)`` per non-blank line, or ``(line, DataError)`` so callers may skip it."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield lineno, DataError(f"{label}:{lineno}: malformed JSON ({e.msg}, column {e.colno})")
            continue
        if not isinstance(obj, dict):
            yield lineno, DataError(f"{label}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            continue
        yield lineno, obj


def _read_csv(
    path: str | Path, required: Iterable[str], *, replace_undecodable: bool = False
) -> tuple[Path, list[tuple[str, dict]]]:
    """CSV rows as ``(where, row)``, where names the row's first physical line (quoted fields may span lines).

    Strict on shape, because a misshapen row is read wrong without a sound: an unquoted comma in a reply
    splits it and shifts the label into the next column, a short row leaves cells missing (an empty reply
    is scored as a refusal), a repeated column name keeps only its last column, and a quote never closed
    swallows every later row into one field. Each is one ``DataError`` naming the line. Extra fields that
    are all blank (a spreadsheet's trailing commas) are dropped."""
    p, text = _read_text(path, replace_undecodable=replace_undecodable)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[str, dict]] = []
    start = 1
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: empty file, expected a header row")
        header = [h.strip() for h in header]
        repeated = sorted({h for h in header if h and header.count(h) > 1})  # blank names: trailing commas
        if repeated:
            raise DataError(f"{path}:1: column name repeated in the header: {_found(repeated)}")
        for col in required:
            if col not in header:
                raise DataError(f"{path}: missing column '{col}' (found: {_found(header)})")
        start = reader.line_num + 1
        for values in reader:
            if values and any(v.strip() for v in values):
                if len(values) > len(header) and not any(v.strip() for v in values[len(header):]):
                    values = values[: len(header)]
                if len(values) != len(header):
                    raise DataError(f"{path}:{start}: {len(values)} fields, the header has {len(header)} "
                                    "(an unquoted comma or quote in a field, or a missing field?)")
                rows.append((f"{path}:{start}", dict(zip(header, values))))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}:{start}: malformed CSV ({e}; a quote opened in this row is never closed?)"
                        if "end of data" in str(e) else f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    return p, rows


def _jsonl_rows(label: str, text: str) -> list[tuple[str, dict]]:
    rows = []
    for n, obj in _iter_jsonl(label, text):
        if isinstance(obj, DataError):
            raise obj
        rows.append((f"{label}:{n}", obj))
    return rows


def _parquet_rows(path: str | Path, required: Iterable[str]) -> list[tuple[str, dict]]:
    p = _existing_file(path)
    try:  # imported here: pyarrow is heavy and only Parquet suites need it
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(p)
    except Exception as e:  # pyarrow raises several unrelated types for corrupt files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"{path}: not a readable Parquet file ({first})") from None
    for col in required:
        if col not in table.column_names:
            raise DataError(f"{path}: missing column '{col}' (found: {_found(table.column_names)})")
    return [(f"{path}: row {i}", row) for i, row in enumerate(table.to_pylist())]


def read_table(
    path: str | Path, required: Iterable[str] = (), *, replace_undecodable: bool = False
) -> list[tuple[str, dict]]:
    """Rows of a CSV, JSONL, JSON (a list of objects) or Parquet file, chosen by extension, as
    ``(where, row)`` pairs; ``where`` ("file:line" or "file: row N") names the row in error messages.

    ``required`` columns are checked against the CSV header or Parquet schema, and on every JSON record
    (JSON has no header). CSV fields may be as long as 64 MiB (the csv module's default stops at 128 KiB).
    """
    suffix = Path(path).suffix.lower()
    required = tuple(required)
    if suffix == ".csv":
        if csv.field_size_limit() < _MAX_CSV_FIELD:
            csv.field_size_limit(_MAX_CSV_FIELD)
        return _read_csv(path, required, replace_undecodable=replace_undecodable)[1]
    if suffix in (".parquet", ".pq"):
        return _parquet_rows(path, required)
    if suffix not in (".jsonl", ".json"):
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r} (use .csv, .jsonl, .json or .parquet)")
    _, text = _read_text(path, replace_undecodable=replace_undecodable)
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
        rows = []
        for i, obj in enumerate(items):
            if not isinstance(obj, dict):
                raise DataError(f"{path}: item {i}: expected a JSON object, got {type(obj).__name__}")
            rows.append((f"{path}: item {i}", obj))
    else:
        rows = _jsonl_rows(str(path), text)
    for where, row in rows:
        for col in required:
            if col not in row:
                raise DataError(f"{where}: missing column '{col}' (found: {_found(row)})")
    return rows


_MAX_CSV_FIELD = 64 << 20
