"""Textbook computations the statistics modules are checked against (tests/test_stats_exact.py,
tests/test_misclassification_exact.py). Each is written from its formula or by enumeration, never by calling
the code under test, so a changed constant, comparison or argument in the harness shows as a wrong number."""

from __future__ import annotations

import math
from fractions import Fraction
from statistics import NormalDist


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval from its formula (Wilson 1927): centre (k + z²/2) / (n + z²), half-width
    z / (n + z²) * sqrt(k (n - k) / n + z² / 4)."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    centre = (k + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
    return centre - half, centre + half


def binomial_half_tail(r: int, n: int, upper: bool) -> Fraction:
    """P(X >= r) (upper) or P(X <= r) for X ~ Binomial(n, 1/2), exactly."""
    ks = range(r, n + 1) if upper else range(0, r + 1)
    return Fraction(sum(math.comb(n, i) for i in ks if 0 <= i <= n), 2 ** n)


def mcnemar_p_values(regressions: int, improvements: int) -> tuple[float, float, float]:
    """(two-sided, regression, improvement) p-values of the exact McNemar test: under no change each
    discordant pair is a regression with probability 1/2; the symmetric binomial's two-sided p-value is
    twice the smaller tail, at most 1."""
    n = regressions + improvements
    greater = binomial_half_tail(regressions, n, upper=True)
    less = binomial_half_tail(regressions, n, upper=False)
    return float(min(Fraction(1), 2 * min(greater, less))), float(greater), float(less)


def pair_probabilities(p0: float, delta: float, fail_hit: float, pass_hit: float) -> tuple[float, float]:
    """P(observed regression), P(observed improvement) of one prompt, by enumerating its true states:
    (fail, fail) with p0, (pass, pass) with 1 - p0 - delta (at least 0), (pass, fail) with delta; each
    response is scored fail with fail_hit when truly failing, pass_hit when truly passing, independently."""
    scored_fail = {True: fail_hit, False: pass_hit}
    states = [((True, True), p0), ((False, False), max(0.0, 1 - p0 - delta)), ((False, True), delta)]
    regression = improvement = 0.0
    for (base_fails, cand_fails), weight in states:
        base_f, cand_f = scored_fail[base_fails], scored_fail[cand_fails]
        regression += weight * (1 - base_f) * cand_f
        improvement += weight * base_f * (1 - cand_f)
    return regression, improvement


def gate_power(n: int, p0: float, delta: float, *, alpha: float, margin: float, fail_hit: float = 1.0,
               pass_hit: float = 0.0) -> float:
    """P(the gate fails a group of n prompts), by summing the multinomial over every (regressions,
    improvements) pair: it fails when the exact one-sided McNemar p-value is below alpha and the observed
    rise (r - i) / n exceeds the margin."""
    reg, imp = pair_probabilities(p0, delta, fail_hit, pass_hit)
    rest = 1.0 - reg - imp
    total = 0.0
    for r in range(n + 1):
        for i in range(n - r + 1):
            if not (float(binomial_half_tail(r, r + i, upper=True)) < alpha and (r - i) / n > margin):
                continue
            ways = math.comb(n, r) * math.comb(n - r, i)
            total += ways * reg ** r * imp ** i * rest ** (n - r - i)
    return total


class FixedRates:
    """Error rates known exactly: every draw of the sensitivity (specificity) is the given value, so the
    corrected rate's interval reduces to Beta quantiles of the scored share pushed through Rogan-Gladen.
    ``draws`` may instead give a whole array per rate; ``calls`` counts the draws asked for."""

    scorer, version = "fixed", "1"

    def __init__(self, sensitivity: float, specificity: float, draws: dict | None = None):
        self.sensitivity, self.specificity = sensitivity, specificity
        self._draws = draws or {}
        self.calls = 0

    def draws(self, which, size, rng):
        import numpy as np

        self.calls += 1
        if which in self._draws:
            return np.asarray(self._draws[which], dtype=float)
        return np.full(size, getattr(self, which))

    def hit_rates(self, event):
        if event == "refusal":
            return self.sensitivity, 1 - self.specificity
        return self.specificity, 1 - self.sensitivity


def corrected_refusal_interval(k: int, n: int, se: float, sp: float, confidence: float = 0.95):
    """The corrected refusal share's interval under exactly known Se, Sp, from Beta quantiles: the union of
    (a) the Jeffreys interval of the scored share, Beta(k + 1/2, n - k + 1/2), mapped through
    g(q) = (q + Sp - 1) / (Se + Sp - 1) and clipped to [0, 1], and (b) the quantiles of g(q) for q drawn
    from Beta(k + 1, n - k + 1) truncated to g(q) in [0, 1], i.e. q in [1 - Sp, Se]."""
    from scipy.stats import beta

    tail = (1 - confidence) / 2
    youden = se + sp - 1

    def g(q):
        return (q + sp - 1) / youden

    jeffreys = beta(k + 0.5, n - k + 0.5)
    a_low, a_high = (min(max(g(jeffreys.ppf(u)), 0.0), 1.0) for u in (tail, 1 - tail))
    uniform = beta(k + 1, n - k + 1)
    f_low, f_high = uniform.cdf(1 - sp), uniform.cdf(se)
    b_low, b_high = (g(uniform.ppf(f_low + u * (f_high - f_low))) for u in (tail, 1 - tail))
    return min(a_low, b_low), max(a_high, b_high)
