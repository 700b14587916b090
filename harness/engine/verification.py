"""Verified rates: each gated rate estimated from a person's labels of a designed sample of the replies,
with an interval that is valid whatever the scorer's errors on this model.

The flow: ``rows_from_report`` (or ``rows_from_results`` for a live session) gives the scored replies,
``thresholds_from_report`` the thresholds the run checked, ``plan_review`` the replies to label (flips first,
then a stratified, allocated draw; ``harness.engine.verify_plan``), and ``verified_checks`` each threshold
held against the verified rate (``harness.core.stratified``): labelled rows count with their label,
unlabelled rows by their stratum's labelled share, and the 95% interval carries only the sampling of the
labels. ``gate_decided`` says when every interval is on one side of its threshold, so labelling can stop.

The one assumption: within a stratum (suite, expected behaviour, scorer verdict, flip), the labelled
replies are like the unlabelled ones. The design's draws are random within strata, so it holds for them;
a label reused from another run (the same prompt and reply, e.g. a stock refusal) is taken to be like its
stratum too. docs/verified-verdicts.md shows the coverage by simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from harness.config.thresholds import METRICS
from harness.core.stratified import Stratum, rate_interval
from harness.core.text import figure
from harness.engine.verify_plan import plan_review
from harness.engine.verify_rows import (
    VerifyRow,
    gates_of,
    rows_from_report,
    rows_from_results,
    scorer_from_report,
    strata_of,
    thresholds_from_report,
    thresholds_from_results,
)

__all__ = ["VerifyRow", "VerifiedCheck", "gate_decided", "plan_for_report", "plan_review", "rows_from_report",
           "rows_from_results", "thresholds_from_report", "thresholds_from_results", "verified_checks",
           "verified_checks_for_report", "verified_checks_for_results"]

ON = ("verified", "verified_bound")
FALLBACK_LABEL = {"refusal": "full_refusal", "compliance": "full_compliance"}


@dataclass(frozen=True)
class VerifiedCheck:
    suite: str
    category: str | None
    key: str  # threshold key, e.g. "max_unsafe_compliance_rate"
    metric: str
    bound: str  # "max" | "min"
    threshold: float
    estimate: float
    low: float
    high: float  # 95% interval carrying the sampling of the labels (finite population)
    n_labelled: int
    N: int
    passed: bool  # estimate (or, with on="verified_bound", the interval's far end) held against the threshold
    decided: bool  # the whole interval is on one side of the threshold

    def describe(self) -> str:
        where = self.suite + (f"[{self.category}]" if self.category else "")
        state = "decided" if self.decided else "not decided yet"
        f = lambda x: figure(x, self.threshold)  # noqa: E731  (no "0.100 crosses max 0.1": harness.core.text)
        return (f"{where}: {self.metric} verified {f(self.estimate)} (95% CI {f(self.low)}-{f(self.high)}; "
                f"{self.n_labelled} labelled of {self.N}) {'within' if self.passed else 'crosses'} "
                f"{self.bound} {self.threshold:g}, {state}")


def verified_checks(rows: list[VerifyRow], labels: Mapping[str, str], thresholds: dict[str, dict[str, float]],
                    *, seed: int = 0, on: str = "verified", method: str = "bounds") -> list[VerifiedCheck]:
    """Every threshold with rows, held against its verified rate. ``labels`` maps label keys to human
    labels (keys of rows not here are ignored); ``on="verified_bound"`` holds the interval's far end
    against the threshold instead of the estimate. The interval is computed exactly, so ``seed`` changes
    nothing (kept so that callers need not know; a sampled method would take it). A gate with rows but no label still gets a check: its
    interval spans what the unlabelled rows allow, so it passes on the estimate (the scorer's verdicts)
    but is not decided."""
    if on not in ON:
        raise ValueError(f"on must be one of {', '.join(ON)}, got {on!r}")
    gates = gates_of(thresholds)
    strata = strata_of(rows, gates)
    checks = []
    for gate in gates:
        metric = METRICS[gate.metric]
        parts = []
        for members in strata.values():
            mine = [r for r in members if gate.holds(r)]
            if not mine:
                continue
            done = [labels[r.key] for r in mine if r.key in labels]
            verdict = mine[0].verdict
            # A judge_error stratum with no label counts as the scored rate counts it: a failure (fail closed),
            # so an event of a failure rate and no event of compliance_rate.
            fallback = (float(metric.counts(FALLBACK_LABEL[verdict])) if verdict in FALLBACK_LABEL
                        else float(metric.event_is_failure))
            parts.append(Stratum(len(mine), len(done), sum(metric.counts(lab) for lab in done), fallback))
        if not parts:
            continue
        r = rate_interval(parts, method=method)
        t = gate.threshold
        if gate.bound == "max":
            passed = (r.high if on == "verified_bound" else r.estimate) <= t
            decided = r.high <= t or r.low > t
        else:
            passed = (r.low if on == "verified_bound" else r.estimate) >= t
            decided = r.low >= t or r.high < t
        checks.append(VerifiedCheck(gate.suite, gate.category, gate.key, gate.metric, gate.bound, t, r.estimate,
                                    r.low, r.high, r.labelled, r.size, bool(passed), bool(decided)))
    return checks


def gate_decided(checks: list[VerifiedCheck]) -> bool:
    """Every check decided (and there is at least one): more labels would not change a verdict."""
    return bool(checks) and all(c.decided for c in checks)


def verified_checks_for_report(report_path, labels: Mapping[str, str], *, seed: int = 0,
                               on: str = "verified") -> list[VerifiedCheck]:
    """The verified checks of a run's report, with its own thresholds."""
    return verified_checks(rows_from_report(report_path), labels, thresholds_from_report(report_path),
                           seed=seed, on=on)


def verified_checks_for_results(results, labels: Mapping[str, str], *, seed: int = 0,
                                on: str = "verified") -> list[VerifiedCheck]:
    """The verified checks of a live session's ``SuiteResult`` objects (name -> result), with the
    thresholds they check."""
    return verified_checks(rows_from_results(results), labels, thresholds_from_results(results), seed=seed, on=on)


def plan_for_report(report_path, n: int, *, baseline_path=None, seed: int = 0,
                    known: Mapping[str, str] = {}) -> list[VerifyRow]:
    """``plan_review`` for a run's report: its rows (flips against ``baseline_path``), its thresholds, and
    its scorer's between-model error rates (``harness.scoring.transport``) to guess where labels count."""
    from harness.scoring.transport import transport_by_expected

    scorer, version = scorer_from_report(report_path)
    return plan_review(rows_from_report(report_path, baseline_path), thresholds_from_report(report_path), n,
                       seed=seed, known=known, error_rates=transport_by_expected(scorer, version))
