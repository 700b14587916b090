"""Compare a candidate run with a baseline run: rows are matched on (suite, prompt_id), the two runs must
have asked the same prompts the same way (template, sampling, scorer), and every suite and category gets
paired statistics (``harness.baselines.stats``) and a verdict. Used by ``safety-harness compare`` and
meant to be called by the pytest plugin as well.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import pyarrow as pa

from harness.baselines.flips import (BASELINE, CANDIDATE, FLIPS_SCHEMA, gate_outcome, judge_error_note,  # noqa: F401
                                     label_counts, pair_outcomes, flips_table)
from harness.baselines.layout import layout_differences
from harness.baselines.stats import Interval, PairedRates, failure_rate, paired_rates
from harness.config.gate import GateRule
from harness.core.errors import DataError, HarnessError
from harness.core.records import FAILURE_METRIC

REQUIRED_COLUMNS = ("suite", "prompt_id", "category", "prompt", "response", "passed")
# Report columns that must agree between the runs (after the prompt set itself), with how to name them.
SETTING_COLUMNS = (("template", "template"), ("sampling", "sampling"), ("scorer", "scorer"),
                   ("scorer_version", "scorer version"))
LEVELS = ("all", "suite", "metric", "category")
# A prompt's failure is the metric its expected behaviour gates: an answered should-refuse prompt is an
# unsafe compliance, a refused should-answer prompt a refusal (see harness.config.thresholds.METRICS).

class ComparisonRefused(HarnessError):
    """The two runs cannot be compared (different prompts, template, sampling or scorer)."""


@dataclass
class Report:
    """A loaded report: its rows by (suite, prompt_id), in file order, and its run metadata."""

    name: str  # the file name, or "baseline" / "candidate" for an in-memory table
    table: pa.Table
    meta: dict
    rows: dict[tuple[str, str], dict]

    @property
    def model(self) -> dict:
        info = dict(self.meta.get("model") or {})
        first = next(iter(self.rows.values()), {})
        for key in ("model", "model_fingerprint", "backend", "template", "scorer", "scorer_version"):
            info.setdefault(key, first.get(key))
        return info

    def values(self, column: str) -> list:
        """The distinct values of a run-level column, sorted (sampling JSON normalised)."""
        found = set()
        for row in self.rows.values():
            value = row.get(column)
            if column == "sampling" and isinstance(value, str):
                try:
                    value = json.dumps(json.loads(value), sort_keys=True)
                except ValueError:
                    pass
            found.add(value)
        return sorted(found, key=str)


def only_suites(report: Report, suites) -> Report:
    """``report`` with the rows of ``suites`` alone."""
    import pyarrow.compute as pc

    suites = sorted(suites)
    return Report(report.name, report.table.filter(pc.is_in(report.table["suite"], pa.array(suites, pa.string()))),
                  report.meta, {k: v for k, v in report.rows.items() if k[0] in suites})


def scored_suites(report: Report) -> set[str]:
    """The suites the run scored, as its metadata lists them: a report also holds rows that belong to no suite
    (the invariance sweep's and search's), which no gate compares. All of its suites when it has no such list
    (a table written elsewhere)."""
    listed = report.meta.get("suites")
    return set(listed) if isinstance(listed, dict) and listed else {suite for suite, _ in report.rows}


def load_report(source, role: str = "report") -> Report:
    """A report from a Parquet path or a ``pyarrow.Table`` (plus its metadata, if any).

    Raises ``DataError`` with one line for a missing file, a file that is not Parquet, missing columns or
    duplicate (suite, prompt_id) rows. Rows with no pass/fail outcome (an unparseable judge verdict,
    ``judge_error``) are kept here; ``gate_outcome`` says how the gate counts them.
    """
    if isinstance(source, pa.Table):
        table, meta, name = source, _table_meta(source), role
    else:
        path = Path(source)
        name = path.name
        from harness.core.report_file import read_run_report

        # Run metadata is not required: the columns are checked below, and a table from elsewhere may compare.
        table, meta = read_run_report(path, role, run_metadata=False)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{role} report {name} is not a safety-harness report: no column {', '.join(missing)}")
    kind = table.schema.field("passed").type
    if not (pa.types.is_boolean(kind) or pa.types.is_null(kind)):
        # A report rewritten through a CSV or a data frame holds "True"/"False" text, and every non-empty
        # cell would count as passed: a wrong gate, for compare, the baseline gate and review alike.
        raise DataError(f"{role} report {name}: column passed holds {kind}, expected true/false "
                        "(was the report rewritten by another tool?)")
    rows: dict[tuple[str, str], dict] = {}
    for number, row in enumerate(table.to_pylist(), 1):
        key = (row["suite"], row["prompt_id"])
        for column, value in zip(("suite", "prompt_id"), key):
            if value is None:  # rows pair on (suite, prompt_id): two runs' nulls would pair as one prompt
                raise DataError(f"{role} report {name}: row {number} has no {column}")
        if key in rows:
            raise DataError(f"{role} report {name}: prompt {key[0]}/{key[1]} appears twice")
        rows[key] = row
    if not rows:
        raise DataError(f"{role} report {name} has no rows")
    return Report(name, table, meta, rows)


def _table_meta(table: pa.Table) -> dict:
    from harness.core.report_file import METADATA_KEY

    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def differences(base: Report, cand: Report) -> list[str]:
    """What makes the two runs incomparable, one short phrase each (empty when they agree)."""
    found = []
    only_base = [k for k in base.rows if k not in cand.rows]
    only_cand = [k for k in cand.rows if k not in base.rows]
    if only_base or only_cand:
        example = "/".join((only_base or only_cand)[0])
        found.append(f"prompt sets differ (baseline {len(base.rows)} prompts, candidate {len(cand.rows)}; "
                     f"{len(only_base)} only in baseline, {len(only_cand)} only in candidate, e.g. {example})")
    changed = [k for k in base.rows if k in cand.rows
               and any(base.rows[k].get(c) != cand.rows[k].get(c) for c in ("prompt", "input", "expected"))]
    if changed:
        found.append(f"{len(changed)} prompts have a different text or expected behaviour (e.g. {'/'.join(changed[0])})")
    for column, label in SETTING_COLUMNS:
        a, b = base.values(column), cand.values(column)
        if a != b:
            found.append(f"{label} differs (baseline {_show(a)}, candidate {_show(b)})")
    # Responses that may differ for the engine layout or the precision alone: flips there can be noise.
    found += layout_differences(base.meta, cand.meta)
    return found


def _show(values: list) -> str:
    text = ", ".join(repr(v) for v in values)
    return text if len(text) <= 80 else text[:77] + "..."


def group_name(level: str, suite: str, category: str) -> str:
    """How a group is named in tables and test ids: "all", "xstest", "xstest:refusal_rate" (a metric) or
    "xstest[homonyms]" (a category)."""
    if level == "metric":
        return f"{suite}:{category}"
    return {"all": "all", "suite": suite}.get(level, f"{suite}[{category}]")


@dataclass(frozen=True)
class Group:
    level: str  # "all" | "suite" | "metric" | "category"
    suite: str  # "" for level "all"
    category: str  # "" unless level "category"; for level "metric", the metric's name
    stats: PairedRates
    gated: bool  # whether this group's verdict can fail the gate

    @property
    def name(self) -> str:
        return group_name(self.level, self.suite, self.category)


@dataclass
class Comparison:
    base: Report
    cand: Report
    groups: list[Group]
    flips: pa.Table  # FLIPS_SCHEMA, regressions first
    warnings: list[str] = field(default_factory=list)  # differences accepted with allow_mismatch
    rules: object = None  # the GateRule(s) the groups were judged by, for the minimum detectable regression
    error_rates_file: Path | None = None  # the user's --error-rates, before the baseline's recorded rates
    notes: list[str] = field(default_factory=list)  # how prompts without an outcome (judge_error) were counted
    # (suite, prompt_id) -> harness.baselines.flips.PairOutcome: each pair as the gate counted it, by people's
    # labels where both replies have one, else as scored
    pairs: dict = field(default_factory=dict)

    @property
    def flip_labels(self) -> dict[str, int]:
        """How many scored flips people's labels confirmed, undid, reversed, left unlabelled (and found)."""
        return label_counts(self.pairs)

    def scorer_error_rates(self):
        """The baseline scorer's error rates for the minimum detectable regression, and where they come
        from: the user's file, else those the baseline run recorded, else the shipped ones (or None)."""
        from harness.scoring.error_rates import SHIPPED, rates_from_record, resolve_error_rates

        info = self.base.model
        scorer, version = info.get("scorer"), info.get("scorer_version")
        record = info.get("scorer_error_rates")
        if (self.error_rates_file is None and record and record.get("scorer") == scorer
                and str(record.get("version")) == str(version)):
            return rates_from_record(record, f"{self.base.name}: model"), record.get("source", SHIPPED)
        return resolve_error_rates(scorer, version, self.error_rates_file, info.get("model_fingerprint"))

    @property
    def failures(self) -> list[Group]:
        return [g for g in self.groups if g.gated and g.stats.failed]

    @property
    def passed(self) -> bool:
        return not self.failures

    def group(self, suite: str = "", category: str = "", *, metric: str = "") -> Group:
        level = "metric" if metric else "category" if category else ("suite" if suite else "all")
        return next(g for g in self.groups if (g.level, g.suite, g.category) == (level, suite, metric or category))

    def summary(self) -> dict:
        """A JSON-able digest (the flips Parquet file carries it as metadata)."""
        return {
            "baseline": self.base.name, "candidate": self.cand.name, "passed": self.passed,
            "failures": [f"{g.name}: {g.stats.reason}" for g in self.failures], "warnings": self.warnings,
            "notes": self.notes, "flip_labels": self.flip_labels,
            "groups": [{"level": g.level, "suite": g.suite, "category": g.category, "n": g.stats.n,
                        "baseline_failures": g.stats.base_failures, "candidate_failures": g.stats.cand_failures,
                        "regressions": g.stats.test.regressions, "improvements": g.stats.test.improvements,
                        "p_regression": g.stats.test.p_regression, "p_two_sided": g.stats.test.p_two_sided,
                        "verdict": g.stats.verdict} for g in self.groups],
            "minimum_detectable_regression": {g.name: mdr for g, mdr in detectable_regressions(self)},
        }


def detectable_regressions(comparison: Comparison) -> list[tuple[Group, float | None]]:
    """The minimum detectable regression (``harness.core.misclassification``) of each suite and suite:metric
    group: the smallest true rise of its failure rate that its gate rule finds with 80% power, given its n,
    its baseline failure rate and the scorer's measured error (a perfect scorer when none was measured).
    A suite mixing should-refuse and should-answer prompts takes the scorer's hit rates weighted by them."""
    from harness.core.misclassification import FAILURE_EVENT, minimum_detectable_regression

    from harness.scoring.error_rates import rates_for_expected

    rates, _ = comparison.scorer_error_rates()
    hits = {expected: (behaviour.hit_rates(event) if (behaviour := rates_for_expected(rates, expected)) else (1.0, 0.0))
            for expected, event in FAILURE_EVENT.items()}
    metric_expected = {metric: expected for expected, metric in FAILURE_METRIC.items()}
    out = []
    for g in comparison.groups:
        if g.level == "metric":
            weights = {metric_expected[g.category]: 1.0}
        elif g.level == "suite":
            weights = {metric_expected[m.category]: m.stats.n for m in comparison.groups
                       if m.level == "metric" and m.suite == g.suite}
        else:
            continue
        total = sum(weights.values())
        if not total or not g.stats.n:
            out.append((g, None))
            continue
        fail_hit = sum(w * hits[e][0] for e, w in weights.items()) / total
        pass_hit = sum(w * hits[e][1] for e, w in weights.items()) / total
        # The baseline's true failure rate, seen through the scorer: invert its expected scored rate.
        youden = fail_hit - pass_hit
        p0 = min(max((g.stats.base.estimate - pass_hit) / youden, 0.0), 1.0) if youden > 0 else g.stats.base.estimate
        rule = rule_for(comparison.rules, g.suite, g.category if g.level == "metric" else "")
        out.append((g, minimum_detectable_regression(g.stats.n, p0, alpha=rule.alpha, margin=rule.max_regression,
                                                     fail_hit=fail_hit, pass_hit=pass_hit)))
    return out


def rule_for(rules: GateRule | Mapping[str, GateRule] | None, suite: str, metric: str = "") -> GateRule:
    """``rules`` is one rule for every group, or rules keyed ``"SUITE:METRIC"``, ``"SUITE"``, ``"METRIC"``
    or ``"*"`` (the default), looked up in that order."""
    if rules is None or isinstance(rules, GateRule):
        return rules or GateRule()
    for key in (f"{suite}:{metric}" if metric else None, suite, metric or None, "*"):
        if key and key in rules:
            return rules[key]
    return GateRule()


def compare_reports(base_source, cand_source, *, rules: GateRule | Mapping[str, GateRule] | None = None,
                    allow_mismatch: bool = False, gate_levels: Iterable[str] = ("suite",),
                    score_column: str | None = "refusal_score", error_rates: Path | None = None,
                    labels: Mapping[str, str] | None = None) -> Comparison:
    """Paired comparison of two reports (paths or tables). Raises ``ComparisonRefused`` when the runs
    differ in prompts, template, sampling or scorer unless ``allow_mismatch`` (then only the shared
    prompts are compared and the differences are kept in ``warnings``). Groups at ``gate_levels``
    ("all", "suite", "metric", "category") can fail the gate; the others are reported only. The "metric"
    level splits a suite by expected behaviour (``SUITE:unsafe_compliance_rate``, ``SUITE:refusal_rate``).
    ``error_rates`` names a file of the scorer's error rates (``--error-rates``) for the minimum detectable
    regression; by default the baseline's recorded ones are used. ``labels`` (label key -> a person's label,
    e.g. the label store's) makes every pair whose two replies are labelled count by its labels
    (``harness.baselines.flips``): a scored flip whose labels agree is no flip."""
    gate_levels = set(gate_levels)
    if not gate_levels <= set(LEVELS):
        raise HarnessError(f"gate levels must be among {', '.join(LEVELS)}, got {sorted(gate_levels)}")
    base = base_source if isinstance(base_source, Report) else load_report(base_source, "baseline")
    cand = cand_source if isinstance(cand_source, Report) else load_report(cand_source, "candidate")
    found = differences(base, cand)
    if found and not allow_mismatch:
        raise ComparisonRefused("runs not comparable: " + "; ".join(found)
                                + " (--allow-mismatch compares the shared prompts anyway)")
    keys = [k for k in base.rows if k in cand.rows]
    if not keys:
        raise ComparisonRefused("runs not comparable: no prompt in common")

    buckets: dict[tuple[str, str, str], list] = {("all", "", ""): []}
    for key in keys:
        row = base.rows[key]
        buckets.setdefault(("suite", row["suite"], ""), []).append(key)
        if row.get("expected") in FAILURE_METRIC:
            buckets.setdefault(("metric", row["suite"], FAILURE_METRIC[row["expected"]]), []).append(key)
        buckets.setdefault(("category", row["suite"], row["category"] or ""), []).append(key)
        buckets[("all", "", "")].append(key)
    pairs = pair_outcomes(base.rows, cand.rows, keys, labels)
    has_scores = bool(score_column) and score_column in base.table.column_names and score_column in cand.table.column_names
    groups = []
    for (level, suite, category), members in sorted(buckets.items(), key=_group_order):
        rule = rule_for(rules, suite or "*", category if level == "metric" else "")
        groups.append(Group(level, suite, category, paired_rates(
            [pairs[k].base for k in members], [pairs[k].cand for k in members], rule,
            base_scores=[_num(base.rows[k].get(score_column)) for k in members] if has_scores else None,
            cand_scores=[_num(cand.rows[k].get(score_column)) for k in members] if has_scores else None,
        ), level in gate_levels))
    comparison = Comparison(base, cand, groups, flips_table(base, cand, keys, pairs), found, rules, error_rates,
                            judge_error_note(base.rows, cand.rows, keys) + baseline_status_note(base), pairs)
    if error_rates is not None:
        comparison.scorer_error_rates()  # a file without the baseline scorer's rates: one line, now
    return comparison


def baseline_status_note(base: Report) -> list[str]:
    """A line when the baseline's run did not end well (its metadata's pytest exit status): a run that failed
    its own checks, or was interrupted with part of its prompts, is no "last good checkpoint" to gate on
    unawares. A report without the status (an older one, a table) says nothing."""
    status = base.meta.get("exitstatus")
    if status in (None, 0):
        return []
    why = {1: "failed its own checks", 2: "was interrupted; its report may hold only part of its prompts"}
    return [f"the baseline's run {why.get(status, 'did not end well')} (pytest exit status {status}, as its "
            "report records it)"]


def _group_order(item):
    level, suite, category = item[0]
    return (level != "all", suite, LEVELS.index(level), category)


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def write_flips(comparison: Comparison, path) -> Path:
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from harness.core.report_file import metadata_json

    meta = {b"safety_harness_comparison": metadata_json(comparison.summary())}
    pq.write_table(comparison.flips.replace_schema_metadata(meta), path)
    return path


@dataclass(frozen=True)
class RunGroup:
    level: str
    suite: str
    category: str
    n: int
    failures: int
    rate: Interval
    judge_errors: int = 0  # of the failures, rows without an outcome (judge_error), counted as failures

    @property
    def name(self) -> str:
        return group_name(self.level, self.suite, self.category)


@dataclass
class RunSummary:
    """Failure rates of one run (no baseline), for the HTML and Markdown summaries."""

    report: Report
    groups: list[RunGroup]


def summarize_run(source, confidence: float = 0.95) -> RunSummary:
    report = source if isinstance(source, Report) else load_report(source, "report")
    # Each row's outcome, a judge_error counted as a failure as the thresholds count it: (passed, no outcome)
    buckets: dict[tuple[str, str, str], list[tuple[bool, bool]]] = {("all", "", ""): []}
    for (suite, _), row in report.rows.items():
        keys = [("all", "", ""), ("suite", suite, ""), ("category", suite, row["category"] or "")]
        if row.get("expected") in FAILURE_METRIC:
            keys.append(("metric", suite, FAILURE_METRIC[row["expected"]]))
        for key in keys:
            buckets.setdefault(key, []).append((gate_outcome(row, CANDIDATE), row["passed"] is None))
    groups = []
    for (level, suite, category), outcomes in sorted(buckets.items(), key=_group_order):
        failures = sum(not passed for passed, _ in outcomes)
        groups.append(RunGroup(level, suite, category, len(outcomes), failures,
                               failure_rate(failures, len(outcomes), confidence),
                               sum(undecided for _, undecided in outcomes)))
    return RunSummary(report, groups)
