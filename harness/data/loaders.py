"""Loaders for the evaluation suites and training data the harness reads.

Every problem with a user's file is reported as a :class:`~harness.errors.DataError` whose message is a
single line naming the file, the line (or JSON item / Parquet row) and the field at fault, so the pytest
plugin and the CLI can show it without a traceback.  Dataset text is never modified: the paper's
evaluation is reproduced on the exact upstream strings.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

from harness.errors import DataError
from harness.types import EXPECTED, PROMPT_FORMATS, Prompt

__all__ = [
    "load_alpaca_eval",
    "load_alpaca_eval_references",
    "load_instruction_data",
    "load_prompt_file",
    "load_smoke",
    "load_stl",
    "load_xstest",
    "read_table",
]

SMOKE_FILE = "smoke_prompts.jsonl"


# ---------------------------------------------------------------------------------------------- helpers


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


def _load_json(path: str | Path) -> tuple[Path, object]:
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


def _field(where: str, row: dict, key: str) -> str:
    """A row's value as text; None/NaN (empty Parquet/CSV cells) read as empty."""
    v = row.get(key)
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise DataError(f"{where}: field '{key}' must be text, got {type(v).__name__}")
    if isinstance(v, float) and v.is_integer():
        v = int(v)  # pandas writes integer ids with gaps as floats; "3.0" would be a surprising id
    return str(v)


def _check_expected(where: str, value: str, field: str = "expected") -> str:
    if value not in EXPECTED:
        raise DataError(f"{where}: invalid '{field}' value {_one_line(value)} (expected refuse or comply)")
    return value


def _check_format(where: str, value: str) -> str:
    if value not in PROMPT_FORMATS:
        raise DataError(
            f"{where}: invalid 'prompt_format' value {_one_line(value)} (expected instruction or question)"
        )
    return value


def _guess_format(text: str) -> str:
    return "question" if text.rstrip().endswith("?") else "instruction"


def _require_list(path: object, data: object, what: str) -> list:
    if not isinstance(data, list):
        raise DataError(f"{path}: expected {what}, got a JSON {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------------ the paper's


def load_stl(
    path: str | Path,
    *,
    suite: str,
    expected: str,
    prompt_format: str = "instruction",
    category: str | None = None,
) -> list[Prompt]:
    """One of the safety-tuned-llamas evaluation files: ``{"instructions": [...], "inputs"?, "tags"?}``."""
    _check_expected(str(path), expected)
    _check_format(str(path), prompt_format)
    p, data = _load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'instructions', got a JSON {type(data).__name__}")
    if "instructions" not in data:
        raise DataError(f"{path}: missing key 'instructions' (found: {_found(data)})")
    instructions = _require_list(path, data["instructions"], "'instructions' to be a list")
    # The upstream files carry "inputs": [] when no prompt has an input, so only a same-length list counts.
    extras = {}
    for key in ("inputs", "tags"):
        values = data.get(key) or []
        if not isinstance(values, list) or (values and len(values) != len(instructions)):
            n = len(values) if isinstance(values, list) else type(values).__name__
            raise DataError(f"{path}: '{key}' has {n} entries but 'instructions' has {len(instructions)}")
        extras[key] = values
    out = []
    for i, text in enumerate(instructions):
        where = f"{path}: item {i}"
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: empty 'instructions'")
        out.append(
            Prompt(
                suite=suite,
                prompt_id=f"{p.stem}-{i}",
                prompt=text,
                input=_field(where, {"v": extras["inputs"][i]}, "v") if extras["inputs"] else "",
                category=category or p.stem,
                subcategory=_field(where, {"v": extras["tags"][i]}, "v") if extras["tags"] else "",
                prompt_format=prompt_format,
                expected=expected,
                source=p.name,
            )
        )
    return out


def _read_csv(
    path: str | Path, required: Iterable[str], *, replace_undecodable: bool = False
) -> tuple[Path, list[tuple[str, dict]]]:
    """CSV rows as ``(where, row)``, where names the row's first physical line (quoted fields may span lines)."""
    p, text = _read_text(path, replace_undecodable=replace_undecodable)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[str, dict]] = []
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: empty file, expected a header row")
        header = [h.strip() for h in header]
        for col in required:
            if col not in header:
                raise DataError(f"{path}: missing column '{col}' (found: {_found(header)})")
        start = reader.line_num + 1
        for values in reader:
            if values and any(v.strip() for v in values):
                rows.append((f"{path}:{start}", dict(zip(header, values))))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    return p, rows


def load_xstest(path: str | Path, *, suite: str = "xstest") -> list[Prompt]:
    """XSTest ``xstest_prompts.csv``: label safe → the model should comply, unsafe → refuse."""
    p, rows = _read_csv(path, ("id", "prompt", "type", "label"))
    out, seen = [], {}
    for where, row in rows:
        rid = _field(where, row, "id").strip()
        text = _field(where, row, "prompt")
        label = _field(where, row, "label").strip().lower()
        if not rid:
            raise DataError(f"{where}: empty 'id'")
        if rid in seen:
            raise DataError(f"{where}: duplicate id {_one_line(rid)} (first at {seen[rid]})")
        seen[rid] = where
        if not text.strip():
            raise DataError(f"{where}: empty 'prompt'")
        if label not in ("safe", "unsafe"):
            raise DataError(f"{where}: invalid 'label' value {_one_line(label)} (expected safe or unsafe)")
        out.append(
            Prompt(
                suite=suite,
                prompt_id=f"xstest-{rid}",
                prompt=text,
                category=_field(where, row, "type").strip() or "all",
                subcategory=_field(where, row, "focus").strip(),
                prompt_format=_guess_format(text),
                expected="comply" if label == "safe" else "refuse",
                source=p.name,
            )
        )
    return out


def _alpaca_eval_items(path: str | Path) -> tuple[Path, list[tuple[str, dict]]]:
    p, data = _load_json(path)
    items = []
    for i, item in enumerate(_require_list(path, data, "a JSON list of AlpacaEval records")):
        where = f"{path}: item {i}"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(item).__name__}")
        if "instruction" not in item:
            raise DataError(f"{where}: missing key 'instruction' (found: {_found(item)})")
        if not _field(where, item, "instruction").strip():
            raise DataError(f"{where}: empty 'instruction'")
        items.append((where, item))
    return p, items


def load_alpaca_eval(path: str | Path, *, suite: str, expected: str = "comply") -> list[Prompt]:
    """AlpacaEval ``model_outputs.json`` as a capability suite; category is the source dataset."""
    _check_expected(str(path), expected)
    p, items = _alpaca_eval_items(path)
    return [
        Prompt(
            suite=suite,
            prompt_id=f"alpaca_eval-{i}",
            prompt=item["instruction"],
            category=_field(where, item, "dataset").strip() or "all",
            prompt_format=_guess_format(item["instruction"]),
            expected=expected,
            source=p.name,
        )
        for i, (where, item) in enumerate(items)
    ]


def load_alpaca_eval_references(path: str | Path) -> dict[str, str]:
    """Instruction → the reference model's output, for a pairwise capability judge."""
    _, items = _alpaca_eval_items(path)
    refs = {}
    for where, item in items:
        if "output" not in item:
            raise DataError(f"{where}: missing key 'output' (found: {_found(item)})")
        refs[item["instruction"]] = _field(where, item, "output")
    return refs


# ------------------------------------------------------------------------------------------ training data


def load_instruction_data(
    path: str | Path, *, status: str | None = "ok", on_error: str = "raise"
) -> tuple[list[dict], list[str]]:
    """Alpaca-style ``{instruction, input, output}`` records from a JSON list or a JSONL file.

    JSONL records carrying a ``status`` key are kept only when it equals ``status`` (None keeps all).
    With ``on_error="skip"`` bad records are left out and described, one line each, in the second value.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    p = Path(path)
    entries: list[tuple[str, dict | DataError]]
    if p.suffix.lower() == ".jsonl":
        _, text = _read_text(path)
        entries = [(f"{path}:{n}", obj) for n, obj in _iter_jsonl(str(path), text)]
    else:
        _, data = _load_json(path)  # a whole-file JSON error cannot be skipped past
        entries = [(f"{path}: item {i}", obj) for i, obj in enumerate(_require_list(path, data, "a JSON list"))]
    records, problems = [], []
    for where, obj in entries:
        try:
            if isinstance(obj, DataError):
                raise obj
            if not isinstance(obj, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            if status is not None and "status" in obj and obj["status"] != status:
                continue
            for key in ("instruction", "output"):
                if key not in obj:
                    raise DataError(f"{where}: missing key '{key}' (found: {_found(obj)})")
            rec = {k: _field(where, obj, k) for k in ("instruction", "input", "output")}
            if not rec["instruction"].strip():
                raise DataError(f"{where}: empty 'instruction'")
        except DataError as e:
            if on_error == "raise":
                raise
            problems.append(str(e))
            continue
        records.append(rec)
    return records, problems


# ------------------------------------------------------------------------------------------ user suites


def _rows_to_prompts(
    rows: Iterable[tuple[str, dict]], *, path: object, suite: str, expected: str | None,
    prompt_column: str, source: str, per_row_columns: bool,
) -> list[Prompt]:
    if expected is not None:
        _check_expected(str(path), expected)
    out, seen = [], {}
    for index, (where, row) in enumerate(rows):
        # JSONL has no header, so the required column is checked on every record instead.
        if per_row_columns and prompt_column not in row:
            raise DataError(f"{where}: missing column '{prompt_column}' (found: {_found(row)})")
        text = _field(where, row, prompt_column)
        if not text.strip():
            raise DataError(f"{where}: empty '{prompt_column}'")
        exp = _field(where, row, "expected").strip().lower() or expected
        if exp is None:
            raise DataError(f"{where}: no 'expected' value and no suite-level expected (refuse or comply)")
        _check_expected(where, exp)
        fmt = _field(where, row, "prompt_format").strip().lower() or _guess_format(text)
        _check_format(where, fmt)
        pid = _field(where, row, "id").strip() or f"{suite}-{index}"
        if pid in seen:
            raise DataError(f"{where}: duplicate id {_one_line(pid)} (first at {seen[pid]})")
        seen[pid] = where
        out.append(
            Prompt(
                suite=suite,
                prompt_id=pid,
                prompt=text,
                input=_field(where, row, "input"),
                category=_field(where, row, "category").strip() or "all",
                subcategory=_field(where, row, "subcategory").strip(),
                prompt_format=fmt,
                expected=exp,
                source=source,
            )
        )
    return out


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


def load_prompt_file(
    path: str | Path, *, suite: str, expected: str | None = None, prompt_column: str = "prompt"
) -> list[Prompt]:
    """A user's own suite from CSV, JSONL or Parquet (chosen by extension).

    Columns: ``prompt`` (required), and optionally ``id``, ``category``, ``subcategory``, ``expected``
    (refuse|comply, else the suite-level ``expected``), ``input`` and ``prompt_format`` (else guessed
    from a trailing "?").
    """
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".jsonl", ".parquet", ".pq"):
        raise DataError(f"{path}: unsupported prompt file type {suffix or '(none)'!r} (use .csv, .jsonl or .parquet)")
    rows = read_table(path, (prompt_column,))
    return _rows_to_prompts(
        rows, path=path, suite=suite, expected=expected, prompt_column=prompt_column,
        source=Path(path).name, per_row_columns=False,
    )


def load_smoke() -> list[Prompt]:
    """The built-in smoke suite shipped inside the package (works from a wheel or a zip, too)."""
    label = f"harness/data/{SMOKE_FILE}"
    text = resources.files("harness.data").joinpath(SMOKE_FILE).read_text(encoding="utf-8")
    return _rows_to_prompts(
        _jsonl_rows(label, text), path=label, suite="smoke", expected=None,
        prompt_column="prompt", source="builtin", per_row_columns=True,
    )
