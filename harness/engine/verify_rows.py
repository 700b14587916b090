"""The rows a person may be asked to label, and the strata the verification design splits them into.

A ``VerifyRow`` is one scored reply (from a run's report or a live session's suite results), keyed by
``harness.core.records.label_key`` so that a label given once serves every run that meets the same
(prompt, response). A row of a baseline gate whose scored pass/fail differs from the baseline's reply to
the same prompt is a flip and carries that reply too.

Strata (``stratum_of``): suite x expected behaviour x the scorer's verdict x flip, and the prompt's
category too in a suite that has a per-category threshold (``SUITE:CATEGORY`` keys), so that every gated
rate is a union of whole strata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.config.thresholds import METRICS, parse_threshold_key
from harness.core.errors import ConfigError, DataError
from harness.core.records import JUDGE_ERROR, is_refusal, label_key, row_passed
from harness.core.types import EXPECTED, REFUSAL_LABELS

REPORT_COLUMNS = ("suite", "category", "prompt_id", "expected", "prompt", "input", "response", "refusal_label")
VERDICTS = ("refusal", "compliance", JUDGE_ERROR)


@dataclass(frozen=True)
class VerifyRow:
    """One scored reply that a person may be asked to label."""

    key: str  # label_key(prompt, response, input)
    suite: str
    category: str
    prompt_id: str
    expected: str  # "refuse" | "comply"
    prompt: str
    input: str
    response: str
    scored_label: str  # the scorer's refusal label: drives the strata, NEVER shown to the labeller
    # Set when this row is a flip of a baseline gate: the baseline's reply to the same prompt, scored otherwise.
    baseline_key: str | None = None
    baseline_response: str | None = None
    baseline_scored_label: str | None = None

    @property
    def verdict(self) -> str:
        """The scorer's binary verdict, as every gating metric counts it (or judge_error: no verdict)."""
        if self.scored_label == JUDGE_ERROR:
            return JUDGE_ERROR
        return "refusal" if is_refusal(self.scored_label) else "compliance"

    @property
    def is_flip(self) -> bool:
        return self.baseline_key is not None


def make_row(suite, category, prompt_id, expected, prompt, input, response, scored_label, **baseline) -> VerifyRow:
    return VerifyRow(label_key(prompt, response, input), suite, category, prompt_id, expected, prompt, input or "",
                     response, scored_label, **baseline)


def _report_rows(path: Path, role: str = "") -> list[dict]:
    from harness.core.report_file import read_run_report

    table, _ = read_run_report(path, role)
    missing = [c for c in REPORT_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{role + ' ' if role else ''}report {path}: missing column(s) {', '.join(missing)}")
    rows = table.select(list(REPORT_COLUMNS)).to_pylist()
    for n, r in enumerate(rows):
        if r["expected"] in EXPECTED and r["refusal_label"] not in (*REFUSAL_LABELS, JUDGE_ERROR):
            raise DataError(f"report {path}: row {n} ({r['suite']}/{r['prompt_id']}): unknown refusal_label "
                            f"{r['refusal_label']!r}")
    return [r for r in rows if r["expected"] in EXPECTED and r["response"] is not None]


def rows_from_report(report_path, baseline_path=None) -> list[VerifyRow]:
    """The refusal-scored rows of a run's report; with a baseline report, rows whose scored pass/fail
    differs from the baseline's for the same (suite, prompt_id), as the baseline gate counts them, carry the
    baseline's reply (flips)."""
    base = {}
    if baseline_path is not None:
        base = {(r["suite"], r["prompt_id"]): r for r in _report_rows(Path(baseline_path), "baseline")}
    out = []
    for r in _report_rows(Path(report_path)):
        flip = {}
        b = base.get((r["suite"], r["prompt_id"]))
        if b is not None:
            # As the baseline gate counts a pair (harness.baselines.flips.gate_outcome): a judge_error reply, which
            # has no outcome, fails in the candidate and passes in the baseline, so such a pair is a flip there too.
            now, before = row_passed(r["expected"], r["refusal_label"]), row_passed(b["expected"], b["refusal_label"])
            if (False if now is None else now) != (True if before is None else before):
                flip = {"baseline_key": label_key(b["prompt"] or "", b["response"], b["input"] or ""),
                        "baseline_response": b["response"], "baseline_scored_label": b["refusal_label"]}
        out.append(make_row(r["suite"], r["category"] or "all", r["prompt_id"], r["expected"], r["prompt"] or "",
                            r["input"] or "", r["response"], r["refusal_label"], **flip))
    return out


def rows_from_results(results) -> list[VerifyRow]:
    """The same rows from a live session's ``SuiteResult`` objects (name -> result, or a list of them)."""
    items = results.values() if hasattr(results, "values") else results
    return [make_row(result.name, row.prompt.category, row.prompt.prompt_id, row.prompt.expected, row.prompt.prompt,
                     row.prompt.input, row.response.text, row.score.label)
            for result in items for row in result.rows if row.prompt.expected in EXPECTED]


def thresholds_from_report(report_path) -> dict[str, dict[str, float]]:
    """suite (or ``SUITE:CATEGORY``) -> {threshold key: value} as the run checked them (its metadata's
    ``suites.*.checks``, and ``suites.*.category_checks`` for the categories the run held checks of; a report
    written before those were recorded has none); only the rates counted from refusal labels, which a
    person's labels can verify."""
    from harness.core.report_file import read_run_report

    _, meta = read_run_report(Path(report_path))
    return thresholds_from_metadata(meta, f"report {report_path}")


def thresholds_from_metadata(meta: dict, where: str) -> dict[str, dict[str, float]]:
    """``thresholds_from_report`` for a report's metadata dict (``where`` names it in errors)."""
    out = {}
    for suite, entry in (meta.get("suites") or {}).items():
        held = (entry or {}).get("category_checks") or {}
        if not isinstance(held, dict):
            raise DataError(f"{where}: suites.{suite}.category_checks unreadable (not a mapping of categories)")
        for name, records, field in ((suite, (entry or {}).get("checks"), "checks"),
                                     *((f"{suite}:{c}", held[c], f"category_checks.{c}") for c in sorted(held))):
            try:
                checks = {str(c["key"]): float(c["threshold"]) for c in records or []}
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise DataError(f"{where}: suites.{suite}.{field} unreadable ({exc})") from None
            checks = {k: v for k, v in checks.items() if _rate_metric(k)}
            if checks:
                out[name] = checks
    return out


def scorer_from_report(report_path) -> tuple[str | None, str | None]:
    """The refusal scorer and version a run's report was scored with (its metadata's ``model``)."""
    from harness.core.report_file import read_run_report

    _, meta = read_run_report(Path(report_path))
    model = meta.get("model") or {}
    version = model.get("scorer_version")
    return model.get("scorer"), (str(version) if version is not None else None)


def thresholds_from_results(results) -> dict[str, dict[str, float]]:
    """The same from a live session's ``SuiteResult`` objects (their suite's checks and those of the
    categories the run holds checks of, ``held_categories``)."""
    items = results.values() if hasattr(results, "values") else results
    out = {}
    for result in items:
        for category in (None, *(c for c in result.held_categories if result.select(c))):
            checks = {c.key: c.threshold for c in result.checks(category) if _rate_metric(c.key)}
            if checks:
                out[result.name if category is None else f"{result.name}:{category}"] = checks
    return out


def _rate_metric(key: str) -> str | None:
    try:
        _, metric = parse_threshold_key(key)
    except ConfigError:  # a key this version does not know: nothing a label can verify
        return None
    return metric if metric in METRICS else None  # not STATISTICS (win rates): no refusal label counts them


@dataclass(frozen=True)
class Gate:
    """One gated rate: the rows of ``suite`` (of ``category``, or all) with the metric's expected behaviour."""

    suite: str
    category: str | None
    key: str
    metric: str
    bound: str
    threshold: float

    @property
    def expected(self) -> str:
        return METRICS[self.metric].expected

    def holds(self, row: VerifyRow) -> bool:
        return (row.suite == self.suite and row.expected == self.expected
                and (self.category is None or row.category == self.category))


def gates_of(thresholds: dict[str, dict[str, float]]) -> list[Gate]:
    """The gated rates of a thresholds mapping (suite or ``SUITE:CATEGORY`` -> {key: value})."""
    gates = []
    for where, checks in sorted(thresholds.items()):
        suite, _, category = where.partition(":")
        for key, value in sorted(checks.items()):
            metric = _rate_metric(key)
            if metric is not None:
                bound, _ = parse_threshold_key(key)
                gates.append(Gate(suite, category or None, key, metric, bound, float(value)))
    return gates


def stratum_of(row: VerifyRow, gates: list[Gate]) -> tuple:
    """(suite, category or "", expected, verdict, flip): by category only in suites with a per-category gate."""
    by_category = any(g.category is not None and g.suite == row.suite for g in gates)
    return (row.suite, row.category if by_category else "", row.expected, row.verdict, row.is_flip)


def strata_of(rows: list[VerifyRow], gates: list[Gate]) -> dict[tuple, list[VerifyRow]]:
    """Every row of a gated rate (and every flip), by stratum, in a fixed order (stratum, then key)."""
    out: dict[tuple, list[VerifyRow]] = {}
    for row in rows:
        if row.is_flip or any(g.holds(row) for g in gates):
            out.setdefault(stratum_of(row, gates), []).append(row)
    return {s: sorted(out[s], key=lambda r: (r.key, r.prompt_id)) for s in sorted(out)}
