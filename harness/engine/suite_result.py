"""A suite's scored rows and what the tests assert on them: ``ScoredRow`` (one prompt, its response, the
scorer's label and a person's, if any) and ``SuiteResult`` (a suite's rows, their threshold checks and the
failure lines a test prints). The session builds them (harness.engine.session); the report, the terminal
summary, the suite API and the pytest-xdist payload read them."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.config.settings import RunSettings
from harness.config.thresholds import JUDGE_ERROR, METRICS, Check, check_thresholds, judge_error_check
from harness.core.records import JUDGE_OUTPUT, failed_for_gate, label_key, row_passed
from harness.core.types import GenerationResult, Prompt, RefusalScore
from harness.data.suites import get_suite
from harness.engine.human_labels import verified_rates
from harness.scoring.harm import HarmScore


@dataclass(frozen=True)
class ScoredRow:
    prompt: Prompt
    template_text: str
    response: GenerationResult
    score: RefusalScore
    cached: bool
    harm: HarmScore | None = None  # from the run's harm scorer (None with --harm-scorer none)
    # A person's label of this (prompt, input, response) from the label store, whatever run or model it was
    # given for (harness.labels); None when nobody labelled it. The scorer's label stays in ``score``.
    human_label: str | None = None

    @property
    def passed(self) -> bool | None:
        """Did the response behave as expected? None for a judge_error row: it has no outcome."""
        return row_passed(self.prompt.expected, self.score.label)

    @property
    def label_key(self) -> str:
        """The key a person's label of this reply is stored under (harness.core.records.label_key)."""
        return label_key(self.prompt.prompt, self.response.text, self.prompt.input)


@dataclass
class SuiteResult:
    """The scored rows of one suite and the thresholds that apply to it; what suite tests assert on."""

    name: str
    rows: list[ScoredRow]
    settings: RunSettings
    capability: object = None  # harness.engine.capability_metrics.CapabilityResult, for the capability suite
    # The refusal scorer's error rates that correct its rates (harness.scoring.error_rates: measured on this model,
    # or per expected behaviour for a model like those labelled), as the session resolved them once for the run
    # (model_info.scorer_error_rates); None when none were measured.
    error_rates: object = None
    # The categories whose own checks the run holds (its per-category test items; HarnessSession.held_categories):
    # their verified rates and the suite's are counted over the same strata, split by these categories.
    held_categories: tuple = ()
    _verified: dict = field(default_factory=dict, repr=False, compare=False)  # category -> {key: VerifiedRate}

    @property
    def labels(self) -> dict[str, str]:
        """label key -> a person's label, for the rows of this suite somebody labelled (the label store)."""
        return {r.label_key: r.human_label for r in self.rows if r.human_label is not None}

    @property
    def categories(self) -> list[str]:
        return sorted({r.prompt.category for r in self.rows})

    def select(self, category: str | None = None) -> list[ScoredRow]:
        return [r for r in self.rows if category is None or r.prompt.category == category]

    def thresholds(self, category: str | None = None) -> dict[str, float]:
        """The thresholds of the suite (or category): the suite's defaults and the user's, the more specific winning."""
        return get_suite(self.name).thresholds_for(category, self.settings.thresholds)

    def checks(self, category: str | None = None) -> list[Check]:
        """Every threshold of the suite (or category) with rows to check, the defaults for kinds of rows no
        threshold covers, and for the whole suite the share of judge_error rows (harness.config.thresholds)."""
        thresholds = self.thresholds(category)
        selected = self.select(category)
        rows = [(r.prompt.expected, r.score.label) for r in selected]
        empty = [(r.prompt.expected, r.score.label) for r in selected if not (r.response.text or "").strip()]
        checks = check_thresholds(rows, thresholds, on=self.settings.threshold_on, error_rates=self.error_rates,
                                  fill_defaults=True, verified=verified_rates(self, category, thresholds),
                                  empty=empty)
        if self.capability is not None:  # win rate and reference log-likelihood thresholds
            checks += self.capability.checks(selected, thresholds)
        if category is None:
            errors = self.judge_error_rows()
            check = judge_error_check([label for _, label in rows], [judge_output(r) for r in errors],
                                      self.settings.scorer)
            if check is not None:
                checks.append(check)
        return checks

    def judge_error_rows(self, category: str | None = None) -> list[ScoredRow]:
        """The rows the scorer could not classify (judge_error): each counts as a failure in its rates."""
        return [r for r in self.select(category) if r.score.label == JUDGE_ERROR]

    def harm_judge_error_rows(self) -> list[ScoredRow]:
        """The rows the harm scorer could not read: their harm score is empty, flagged judge_error."""
        return [r for r in self.rows if r.harm is not None and (r.harm.extra or {}).get(JUDGE_ERROR)]

    def failures(self, category: str | None = None) -> list[str]:
        """One line per crossed threshold, with a few example prompts that failed it."""
        lines = []
        for check in self.checks(category):
            if check.passed:
                continue
            where = self.name + (f"[{category}]" if category else "")
            lines.append(f"{where}: {check.describe()}")
            metric = METRICS.get(check.rate.metric)
            if metric is not None:  # the rows this metric counts that failed, judge_error included
                # Held on a verified rate, a row counts by a person's label where it has one: a reply somebody
                # read as a refusal is no example of an unsafe compliance, whatever the scorer said.
                verified = check.on.startswith("verified")
                metric_rows = [r for r in self.select(category) if r.prompt.expected == metric.expected
                               and failed_for_gate(r.prompt.expected,
                                                   (verified and r.human_label) or r.score.label)]
            elif check.rate.metric == "judge_error_rate":
                metric_rows = self.judge_error_rows(category)
            else:
                metric_rows = [r for r in self.select(category) if r.passed is False]
            if check.rate.metric != "judge_error_rate" and getattr(check, "examples", None) is not None:
                # a capability statistic names its own examples
                by_id = {r.prompt.prompt_id: r for r in metric_rows + self.select(category)}
                metric_rows = [by_id[pid] for pid in check.examples if pid in by_id]
            for row in metric_rows[:3]:
                response = " ".join(row.response.text.split())[:120]
                label = f"[{JUDGE_ERROR}] " if row.score.label == JUDGE_ERROR else ""
                lines.append(f"    e.g. {row.prompt.prompt_id}: {row.prompt.prompt[:80]!r} -> {label}{response!r}")
        if self.capability is not None:  # a capability threshold the user set that nothing measured
            where = self.name + (f"[{category}]" if category else "")
            asked = self.settings.thresholds.get(self.name if category is None else f"{self.name}:{category}", {})
            if category is None and self.capability.judge:
                # A judge is set, so the suite's own min_win_rate is in force: a judge that judged nothing (no
                # prompt found a reference output) cannot pass it. A category may lack references by design.
                asked = {**{k: v for k, v in self.thresholds().items() if k.endswith("win_rate")}, **asked}
            lines += [f"{where}: {line}" for line in self.capability.unmeasured(self.select(category), asked)]
        return lines


def judge_output(row: ScoredRow) -> str:
    """The judge's raw verdict on a row, as its scorer kept it (empty when it kept none)."""
    return str((row.score.extra or {}).get(JUDGE_OUTPUT, ""))


def harm_output(row: ScoredRow) -> str:
    """The harm scorer's raw verdict on a row, as it kept it (empty when it kept none)."""
    return str(((row.harm.extra if row.harm else None) or {}).get(JUDGE_OUTPUT, ""))
