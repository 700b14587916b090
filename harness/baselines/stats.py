"""Paired statistics for comparing a candidate run with a baseline run on the same prompts.

Every statistic comes from scipy (nothing is reimplemented here):

- exact McNemar test on the per-prompt pass/fail flips: ``scipy.stats.binomtest`` on the discordant
  pairs (regressions = passed -> failed, improvements = failed -> passed), two-sided and one-sided
  for a regression;
- Wilson intervals for the failure rates (``harness.config.thresholds.wilson_interval``);
- paired bootstrap intervals for the shift of a continuous per-prompt score such as ``refusal_score``
  (``scipy.stats.bootstrap`` with ``paired=True`` and a fixed seed, so reports are reproducible).

A :class:`GateRule` says when a change fails the gate. These functions take plain sequences so that
both ``safety-harness compare`` and the pytest plugin can call them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from harness.config.gate import GateRule  # noqa: F401  (re-exported: rules travel with the statistics)
from harness.config.thresholds import GATE_THRESHOLD_ON, normalize_threshold_on
from harness.core.stats import wilson_interval
from harness.core.text import figure


@dataclass(frozen=True)
class McNemar:
    regressions: int  # passed in the baseline, failed in the candidate
    improvements: int  # failed in the baseline, passed in the candidate
    p_two_sided: float
    p_regression: float  # one-sided: the candidate fails more often
    p_improvement: float  # one-sided: the candidate fails less often


def mcnemar_exact(regressions: int, improvements: int) -> McNemar:
    """Exact McNemar test: under no change each discordant pair is a regression with probability 1/2."""
    from scipy.stats import binomtest

    n = regressions + improvements
    if n == 0:  # no discordant pair: nothing to test
        return McNemar(regressions, improvements, 1.0, 1.0, 1.0)
    return McNemar(
        regressions, improvements,
        float(binomtest(regressions, n, 0.5, alternative="two-sided").pvalue),
        float(binomtest(regressions, n, 0.5, alternative="greater").pvalue),
        float(binomtest(regressions, n, 0.5, alternative="less").pvalue),
    )


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


def failure_rate(failures: int, n: int, confidence: float = 0.95) -> Interval:
    if n == 0:
        return Interval(math.nan, math.nan, math.nan)
    low, high = wilson_interval(failures, n, confidence)
    return Interval(failures / n, low, high)


def paired_bootstrap(base: Sequence[float], cand: Sequence[float], *, confidence: float = 0.95,
                     n_resamples: int = 9999, seed: int = 0) -> Interval | None:
    """Mean of ``cand - base`` over prompts with a paired bootstrap interval; None with fewer than 2
    complete pairs. NaN pairs are left out."""
    import numpy as np
    from scipy.stats import bootstrap

    b = np.asarray(base, dtype=float)
    c = np.asarray(cand, dtype=float)
    keep = ~(np.isnan(b) | np.isnan(c))
    b, c = b[keep], c[keep]
    if len(b) < 2:
        return None
    diff = c - b
    estimate = float(diff.mean())
    if np.all(diff == diff[0]):  # every resample gives the same mean: the interval is that point
        return Interval(estimate, estimate, estimate)

    def shift(x, y, axis=-1):
        return np.mean(y, axis=axis) - np.mean(x, axis=axis)

    result = None
    for method in ("BCa", "percentile"):  # BCa is undefined for some degenerate samples
        result = bootstrap((b, c), shift, paired=True, vectorized=True, n_resamples=n_resamples,
                           confidence_level=confidence, method=method, batch=500,
                           rng=np.random.default_rng(seed))
        if np.isfinite(result.confidence_interval.low) and np.isfinite(result.confidence_interval.high):
            break
    ci = result.confidence_interval
    return Interval(estimate, float(ci.low), float(ci.high))


def absolute_check(failures: int, n: int, threshold: float, *, on: str = "estimate", bound: str = "max",
                   confidence: float = 0.95) -> tuple[bool, float]:
    """Whether a rate passes an absolute ``max`` (or ``min``) threshold, and the value compared: the point
    estimate, or with ``on='bound'`` the conservative end of its Wilson interval (the upper end for a
    ``max`` threshold, the lower end for a ``min`` one)."""
    rate = failure_rate(failures, n, confidence)
    on = normalize_threshold_on(on, allowed=GATE_THRESHOLD_ON)
    value = rate.estimate if on == "estimate" else (rate.high if bound == "max" else rate.low)
    return (value <= threshold if bound == "max" else value >= threshold), value


REGRESSION = "REGRESSION"
OVER_THRESHOLD = "OVER THRESHOLD"
FAILING_VERDICTS = (REGRESSION, OVER_THRESHOLD)


@dataclass(frozen=True)
class PairedRates:
    """Baseline against candidate on the same n prompts (failure = not passed)."""

    n: int
    base_failures: int
    cand_failures: int
    base: Interval
    cand: Interval
    test: McNemar
    score_shift: Interval | None  # mean candidate - baseline score, with its paired bootstrap interval
    verdict: str
    reason: str

    @property
    def delta(self) -> float:
        return self.cand.estimate - self.base.estimate if self.n else 0.0

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING_VERDICTS


def paired_rates(base_passed: Sequence[bool], cand_passed: Sequence[bool], rule: GateRule | None = None, *,
                 base_scores: Sequence[float] | None = None, cand_scores: Sequence[float] | None = None,
                 seed: int = 0) -> PairedRates:
    """All the paired statistics of one group of prompts and its verdict under ``rule``.

    Verdicts: ``REGRESSION`` (significant and larger than the margin: fails the gate), ``OVER THRESHOLD``
    (the absolute ceiling is crossed: fails), ``within margin`` (significant but small), ``improved``
    (significantly fewer failures), ``no significant change``.
    """
    rule = rule or GateRule()
    if len(base_passed) != len(cand_passed):
        raise ValueError("paired_rates needs one baseline and one candidate outcome per prompt")
    n = len(base_passed)
    regressions = sum(1 for b, c in zip(base_passed, cand_passed) if b and not c)
    improvements = sum(1 for b, c in zip(base_passed, cand_passed) if c and not b)
    base_failures = sum(1 for b in base_passed if not b)
    cand_failures = sum(1 for c in cand_passed if not c)
    base = failure_rate(base_failures, n, rule.confidence)
    cand = failure_rate(cand_failures, n, rule.confidence)
    test = mcnemar_exact(regressions, improvements)
    shift = None
    if base_scores is not None and cand_scores is not None:
        shift = paired_bootstrap(base_scores, cand_scores, confidence=rule.confidence, seed=seed)

    delta = (regressions - improvements) / n if n else 0.0
    significant = test.p_regression < rule.alpha
    # No figure printed as the limit it is compared with ("+0.020 > margin 0.02"): harness.core.text.figure
    rise, p = figure(delta, rule.max_regression), figure(test.p_regression, rule.alpha, 2, "g")
    if significant and delta > rule.max_regression:
        verdict = REGRESSION
        reason = (f"failure rate {base.estimate:.3f} -> {cand.estimate:.3f} (+{rise} > margin "
                  f"{rule.max_regression:g}), McNemar p={p} < {rule.alpha:g} "
                  f"({regressions} regressions, {improvements} improvements)")
    else:
        verdict = "no significant change"
        reason = f"McNemar p={p} ({regressions} regressions, {improvements} improvements)"
        if significant:
            verdict = "within margin"
            reason += f"; +{rise} within margin {rule.max_regression:g}"
        elif test.p_improvement < rule.alpha:
            verdict = "improved"
        if rule.max_failure_rate is not None and n:
            ok, value = absolute_check(cand_failures, n, rule.max_failure_rate, on=rule.threshold_on,
                                       confidence=rule.confidence)
            if not ok:
                verdict = OVER_THRESHOLD
                what = "failure rate" if rule.threshold_on == "estimate" else "failure rate upper bound"
                reason = f"candidate {what} {figure(value, rule.max_failure_rate)} > max {rule.max_failure_rate:g}"
    return PairedRates(n, base_failures, cand_failures, base, cand, test, shift, verdict, reason)
