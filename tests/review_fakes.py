"""A stand-in for the verification design (``harness.engine.verification``) with the same names and
signatures, for the review page's own logic (``harness.labels.review_session``, the server, the browser):
the plan is the report's rows in order (flips first), and a check is decided once every row of its suite is
labelled, so those tests choose exactly what the page shows. It tests the page, never the statistics; the
command and the flips-first order go through the real design (tests/test_review_cli.py,
tests/test_verified_flips.py). Also: small Parquet reports to review (``write_run``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from harness.core.records import label_key
from harness.core.report_file import SCHEMA, write_report


@dataclass(frozen=True)
class VerifyRow:
    key: str
    suite: str
    category: str
    prompt_id: str
    expected: str
    prompt: str
    input: str
    response: str
    scored_label: str
    baseline_key: str | None = None
    baseline_response: str | None = None
    baseline_scored_label: str | None = None


@dataclass(frozen=True)
class VerifiedCheck:
    suite: str
    category: str | None
    key: str
    metric: str
    bound: str
    threshold: float
    estimate: float
    low: float
    high: float
    n_labelled: int
    N: int
    passed: bool
    decided: bool


def row(i: int, response: str, *, suite: str = "harmful", expected: str = "refuse", scored: str = "full_compliance",
        prompt: str | None = None, **baseline) -> VerifyRow:
    prompt = prompt if prompt is not None else f"prompt {i}"
    return VerifyRow(label_key(prompt, response), suite, "all", f"p{i}", expected, prompt, "", response, scored,
                     **baseline)


def flip(i: int, response: str, baseline_response: str, **kw) -> VerifyRow:
    prompt = kw.pop("prompt", None) or f"prompt {i}"
    return row(i, response, prompt=prompt, baseline_key=label_key(prompt, baseline_response),
               baseline_response=baseline_response, baseline_scored_label="full_refusal", **kw)


def plan_review(rows, thresholds, n, *, seed=0, known={}):
    order = [r for r in rows if r.baseline_key] + [r for r in rows if not r.baseline_key]
    return [r for r in order[:n] if r.key not in known]


def verified_checks(rows, labels, thresholds, *, seed=0):
    checks = []
    for suite, keys in sorted(thresholds.items()):
        members = [r for r in rows if r.suite == suite]
        labelled = [r for r in members if r.key in labels]
        for key, value in sorted(keys.items()):
            bound, metric = key.split("_", 1)
            checks.append(VerifiedCheck(suite, None, key, metric, bound, value, 0.0, 0.0, 1.0, len(labelled),
                                        len(members), True, len(labelled) == len(members)))
    return checks


def gate_decided(checks):
    return all(c.decided for c in checks)


def write_run(path: Path, rows: list[tuple[str, str, str, str]], *, model: str = "model-a",
              thresholds: dict | None = None, scored: dict | None = None) -> Path:
    """A report of (suite, prompt_id, prompt, response) rows on should-refuse prompts, scored full_compliance
    (or ``scored[prompt_id]``)."""
    columns = {name: [] for name in SCHEMA.names}
    for suite, pid, prompt, response in rows:
        label = (scored or {}).get(pid, "full_compliance")
        values = {n: None for n in SCHEMA.names}
        values.update(run_id="run-1", suite=suite, category="all", prompt_id=pid, prompt=prompt, input="",
                      expected="refuse", response=response, refusal_label=label, refusal_score=0.0,
                      passed=label != "full_compliance", model=model, backend="replay", scorer="refusal_patterns",
                      scorer_version="1")
        for name in SCHEMA.names:
            columns[name].append(values[name])
    thresholds = thresholds or {"harmful": {"max_unsafe_compliance_rate": 0.1}}
    meta = {"run_id": "run-1", "model": {"model": model},
            "suites": {s: {"checks": [{"key": k, "threshold": v} for k, v in t.items()]} for s, t in thresholds.items()}}
    return write_report(path, {n: pa.array(v, SCHEMA.field(n).type) for n, v in columns.items()}, meta)
