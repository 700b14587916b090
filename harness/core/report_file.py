"""The report file contract, shared by the engine (which writes reports), the baselines (which read and compare
them) and the reports (which render them): the Parquet schema of a scored row and where the run-level
metadata lives. One row per (suite, prompt); run-level facts in the file's key-value metadata under
``safety_harness`` (JSON), written atomically so that a reader never sees half a file."""

from __future__ import annotations

import json
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
])


def write_report(path: Path, columns: dict[str, list], metadata: dict) -> Path:
    """Write one report: ``columns`` by the names of ``SCHEMA``, ``metadata`` (JSON-able) under
    ``METADATA_KEY``. Atomic: a reader never sees half a file."""
    path = Path(path)
    table = pa.table(columns, schema=SCHEMA)
    meta = json.dumps(metadata, default=str).encode("utf-8")
    table = table.replace_schema_metadata({METADATA_KEY: meta})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_report(path: Path) -> tuple[pa.Table, dict]:
    """The table and its run metadata (empty dict for Parquet files the harness did not write)."""
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return table, (json.loads(raw) if raw else {})
