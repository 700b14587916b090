"""Loaders for the evaluation suites and training data the harness reads.

Every problem with a user's file is reported as a :class:`~harness.core.errors.DataError` whose message is a
single line naming the file, the line (or JSON item / Parquet row) and the field at fault, so the pytest
plugin and the CLI can show it without a traceback.  Dataset text is never modified: the paper's
evaluation is reproduced on the exact upstream strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from harness.data.tables import (
    _found,
    _iter_jsonl,
    _jsonl_rows,
    load_json,
    _one_line,
    _read_csv,
    _read_text,
    read_table,
)
from harness.core.errors import DataError
from harness.core.types import EXPECTED, PROMPT_FORMATS, Prompt

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


def _field(where: str, row: dict, key: str, *, numbers: bool = True) -> str:
    """A row's value as text; None/NaN (empty Parquet/CSV cells) read as empty. ``numbers``: a JSON or
    Parquet number is read as its digits (ids, categories); off for the texts a model reads, where a number
    is a wrong column (an index), not a prompt."""
    v = row.get(key)
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)) or (not numbers and not isinstance(v, str)):
        raise DataError(f"{where}: field '{key}' must be text, got {type(v).__name__} {repr(v)[:60]}")
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
    prompt_format: str | None = None,
    category: str | None = None,
) -> list[Prompt]:
    """One of the safety-tuned-llamas evaluation files: ``{"instructions": [...], "inputs"?, "tags"?}``.

    Each prompt's format is read from its text, as for XSTest, unless ``prompt_format`` sets one for all: the
    sets are named for a format ("I-" instructions, "Q-" questions), yet I-MaliciousInstructions holds 15
    questions."""
    _check_expected(str(path), expected)
    if prompt_format is not None:
        _check_format(str(path), prompt_format)
    p, data = load_json(path)
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
                prompt_format=prompt_format or _guess_format(text),
                expected=expected,
                source=p.name,
            )
        )
    return out


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
    p, data = load_json(path)
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
        _, data = load_json(path)  # a whole-file JSON error cannot be skipped past
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
        text = _field(where, row, prompt_column, numbers=False)
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
                input=_field(where, row, "input", numbers=False),
                category=_field(where, row, "category").strip() or "all",
                subcategory=_field(where, row, "subcategory").strip(),
                prompt_format=fmt,
                expected=exp,
                source=source,
            )
        )
    return out


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
    prompts = _rows_to_prompts(
        rows, path=path, suite=suite, expected=expected, prompt_column=prompt_column,
        source=Path(path).name, per_row_columns=False,
    )
    if not prompts:  # a suite of nothing would pass every threshold: refuse it here, naming the file
        raise DataError(f"{path}: suite {suite!r} has no prompts (the file has no rows with a {prompt_column!r})")
    return prompts


def load_smoke() -> list[Prompt]:
    """The built-in smoke suite shipped inside the package (works from a wheel or a zip, too)."""
    label = f"harness/data/{SMOKE_FILE}"
    text = resources.files("harness.data").joinpath(SMOKE_FILE).read_text(encoding="utf-8")
    return _rows_to_prompts(
        _jsonl_rows(label, text), path=label, suite="smoke", expected=None,
        prompt_column="prompt", source="builtin", per_row_columns=True,
    )
