"""The report file contract, shared by the engine (which writes reports), the baselines (which read and compare
them) and the reports (which render them): the Parquet schema of a scored row and where the run-level
metadata lives. One row per (suite, prompt); run-level facts in the file's key-value metadata under
``safety_harness`` (JSON), written atomically so that a reader never sees half a file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from harness.core.files import atomic_path

METADATA_KEY = b"safety_harness"

SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("suite", pa.string()),
    ("category", pa.string()),
    ("subcategory", pa.string()),
    ("prompt_id", pa.string()),
    ("prompt", pa.string()),
    ("input", pa.string()),
    ("prompt_format", pa.string()),
    ("expected", pa.string()),
    ("response", pa.string()),
    ("refusal_label", pa.string()),
    ("refusal_score", pa.float64()),
    ("passed", pa.bool_()),
    ("model", pa.string()),
    ("model_fingerprint", pa.string()),
    ("backend", pa.string()),
    ("template", pa.string()),
    ("sampling", pa.string()),
    ("n_response_tokens", pa.int64()),
    ("finish_reason", pa.string()),
    ("cached", pa.bool_()),
    ("scorer", pa.string()),
    ("scorer_version", pa.string()),
    ("source", pa.string()),
    ("harm_score", pa.float64()),  # [0, 1]; null where the harm scorer cannot say (see harness.scoring.harm)
    ("harm_raw", pa.float64()),  # the harm scorer's own value (reward model output, judge rating), if any
    ("harm_scorer", pa.string()),
    ("harm_scorer_version", pa.string()),
    # capability suite (harness.capability): judged win score vs the reference, judge's P(better),
    # mean per-token log-likelihood of the reference answer; null elsewhere
    ("win_score", pa.float64()),
    ("win_prob", pa.float64()),
    ("ref_loglik", pa.float64()),
    # a person's label of the reply from the label store (harness.labels), and which label the verified rates count
    ("human_label", pa.string()),
    ("label_source", pa.string()),
])

# One line per column for docs/reference/report-schema.md (python -m harness.cli.docs_gen); a column added to
# SCHEMA without a line here fails tests/test_docs_generated.py.
COLUMN_DOCS = {
    "run_id": "The run's id; every row of one report has the same.",
    "suite": "The suite the prompt belongs to (`smoke`, `xstest`, a user suite, `invariance`, ...).",
    "category": "The prompt's category inside its suite (a dataset file, an XSTest type, a rewrite); `all` when it has none.",
    "subcategory": "A finer tag when the dataset has one (I-MaliciousInstructions tags; the rewrite chain in `invariance_search`).",
    "prompt_id": "The prompt's id, unique within its suite; baselines pair rows on (suite, prompt_id).",
    "prompt": "The prompt text before any template.",
    "input": "Alpaca-style extra context given with the prompt; empty for most safety prompts.",
    "prompt_format": "`instruction` or `question`.",
    "expected": "`refuse` or `comply`: what a safe model should do.",
    "response": "The model's response (or the replayed one).",
    "refusal_label": "`full_compliance`, `full_refusal`, `partial_refusal`, or `judge_error` when a judge's verdict could not be parsed.",
    "refusal_score": "The refusal scorer's score in [0, 1] (0 / 0.5 / 1 for the judge's three classes).",
    "passed": "Whether the response did what `expected` asks; null for a `judge_error` row.",
    "model": "The model as given (alias, folder or adapter).",
    "model_fingerprint": "Hash of the model's config, tokenizer and weight files (and an adapter's files).",
    "backend": "The backend that produced the response: `vllm`, `hf`, `replay` or `dummy`.",
    "template": "The prompt template used: `chat`, `alpaca` or `raw`.",
    "sampling": "The sampling settings as JSON (max_new_tokens, temperature, top_p, seed; with beam search also num_beams, length_penalty, early_stopping).",
    "n_response_tokens": "Tokens in the response.",
    "finish_reason": "Why generation stopped: `stop`, `length`, or `replay`.",
    "cached": "True when the response came from the generation cache.",
    "scorer": "The refusal scorer's name.",
    "scorer_version": "The refusal scorer's version.",
    "source": "The dataset file the prompt came from (or `builtin`), for provenance.",
    "harm_score": "Harm in [0, 1] from the run's harm scorer; null where it cannot say.",
    "harm_raw": "The harm scorer's own value (reward-model output, judge rating), if it has one.",
    "harm_scorer": "The harm scorer's name; null when no harm scorer ran.",
    "harm_scorer_version": "The harm scorer's version.",
    "win_score": "Capability suite: 1 won, 0.5 tie, 0 lost against the reference output; null elsewhere.",
    "win_prob": "Capability suite: the judge's P(the model's answer is better); null elsewhere.",
    "ref_loglik": "Capability suite: mean per-token log-likelihood of the reference answer; null elsewhere.",
    "human_label": "A person's label of this reply (`full_compliance`, `full_refusal`, `partial_refusal`) from the label "
                   "store, given for this run or any other that met the same prompt, input and response; null when "
                   "nobody labelled it.",
    "label_source": "`human` when the row has a person's label (the verified rates count it), else `scorer` (they "
                    "count it by its stratum's labelled share).",
}


def json_ready(value):
    """``value`` with null for each NaN or infinity, at any depth (tuples become lists, as JSON has them):
    Python writes them as bare ``NaN`` and ``Infinity``, which jq, JavaScript and DuckDB refuse, so one
    NaN statistic would make a report's whole metadata unreadable to them. Readers show null as nan."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def metadata_json(metadata: dict) -> bytes:
    """``metadata`` as strict JSON (``json_ready``); objects JSON has no type for are written as text."""
    return json.dumps(json_ready(metadata), default=str, allow_nan=False).encode("utf-8")


def write_report(path: Path, columns: dict[str, list], metadata: dict) -> Path:
    """Write one report: ``columns`` by the names of ``SCHEMA``, ``metadata`` (JSON-able) under
    ``METADATA_KEY``. Atomic: a reader never sees half a file."""
    path = Path(path)
    table = pa.table(columns, schema=SCHEMA)
    meta = metadata_json(metadata)
    table = table.replace_schema_metadata({METADATA_KEY: meta})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_report(path: Path) -> tuple[pa.Table, dict]:
    """The table and its run metadata (empty dict for Parquet files the harness did not write)."""
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return table, (json.loads(raw) if raw else {})


def read_run_report(path: Path, role: str = "", *, run_metadata: bool = True) -> tuple[pa.Table, dict]:
    """``read_report`` for commands that read a run's report: a missing file, a file that is not Parquet or
    (with ``run_metadata``) a Parquet file without the harness's run metadata, where an empty table would
    read as "all passed", is a one-line ``DataError`` naming the file (and its ``role``, e.g. "baseline")."""
    from harness.core.errors import DataError

    path, what = Path(path), f"{role} report" if role else "report"
    if not path.is_file():
        raise DataError(f"{what} {path} not found")
    try:
        table, meta = read_report(path)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise DataError(f"{what} {path} is not a readable Parquet file ({' '.join(str(exc).split())})") from None
    if run_metadata and not meta.get("run_id"):
        raise DataError(f"{what} {path} is not a safety-harness report (no safety-harness run metadata)")
    return table, meta
