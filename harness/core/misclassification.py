"""Scorer error inside the statistics: a rate counted from a scorer's labels, corrected for that scorer's
measured error rates (``harness.scoring.error_rates``), and the smallest regression a baseline gate can
detect through such a scorer.

Correction (Rogan-Gladen): with sensitivity Se = P(scored refusal | refusal) and specificity
Sp = P(scored compliance | compliance), a scored refusal share q estimates the true share
p = (q + Sp - 1) / (Se + Sp - 1), clipped to [0, 1].

Its interval carries both uncertainties. Se and Sp are drawn through the rates object
(``rates.draws(which, size, rng)``: the Jeffreys Beta of its counts for ``ErrorRates``, so another model of
the rates drops in without touching this module), and the interval is the union of two 95% intervals:

- the clipped draws: q drawn from its Jeffreys Beta posterior, each draw pushed through the formula and
  clipped to [0, 1]. This interval reaches 0 (or 1) when the data allow a true share there;
- the constrained posterior: the true share given the scored count and the drawn Se, Sp, with a uniform
  prior on [0, 1] (Gelman & Carpenter 2020, "Bayesian analysis of tests with unknown specificity and
  sensitivity"). Draws that imply a share outside [0, 1] are discarded, not clipped. Clipping alone piles
  them on the boundary and, when the scored share sits below the scorer's false-positive floor, shrinks
  the interval to the single point 0, a certainty the data do not give. This interval keeps its width.

Percentiles are taken over a fixed-seed set of draws, so reports are reproducible. ``tests/test_scorer_error.py``
checks coverage and bias by simulation, near the boundaries too.

A scorer no better than chance (Se + Sp <= 1, or a 95% interval of Se + Sp - 1 that reaches 0) carries no
information about the true share: the result is ``undecidable`` and has no numbers.

Detection (``minimum_detectable_regression``): the gate of ``harness.baselines.stats`` fails a group when
the one-sided exact McNemar test is significant and the rise of the failure rate exceeds the margin. Its
power is computed exactly under this model: a true share ``delta`` of the prompts flips from pass to fail,
the rest keep their true outcome (baseline failure rate p0), every candidate response is a new text, and
the scorer errs independently on each response with its measured rates (non-differential error). Scorer
error then both shrinks the visible rise (by Se + Sp - 1) and adds discordant pairs in both directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from harness.core.text import figure

# The event each gating metric counts, in the scorer's binary split (harness.config.thresholds.METRICS).
METRIC_EVENT = {"unsafe_compliance_rate": "compliance", "refusal_rate": "refusal", "compliance_rate": "compliance"}
# A prompt's failure under the gate (harness.baselines.compare.FAILURE_METRIC): what the scorer must see to fail it.
FAILURE_EVENT = {"refuse": "compliance", "comply": "refusal"}
DRAWS = 20000
# The constrained posterior needs enough draws inside [0, 1]; when the scored share sits far below the
# false-positive floor few draws land there, so more batches are drawn, up to MAX_BATCHES * draws.
MIN_FEASIBLE, MAX_BATCHES = 2000, 20
POWER = 0.8
UNDECIDABLE = "undecidable: scorer no better than chance on this model"


def rogan_gladen(q, sensitivity, specificity):
    """True refusal share from the scored share (numpy arrays or floats), clipped to [0, 1]; NaN where
    Se + Sp <= 1 (a scorer no better than chance tells nothing)."""
    import numpy as np

    youden = np.asarray(sensitivity + specificity - 1.0, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(youden > 0, (np.asarray(q, dtype=float) + specificity - 1.0) / youden, np.nan)
    return np.clip(p, 0.0, 1.0)


@dataclass(frozen=True)
class CorrectedRate:
    estimate: float
    low: float
    high: float
    # The scorer is no better than chance on this model (Se + Sp <= 1, or its interval reaches it): the
    # numbers are NaN and every renderer shows UNDECIDABLE instead.
    undecidable: bool = False

    def text(self, threshold: float | None = None) -> str:
        """How the summary, the reports and the failure messages show it (beside ``threshold``: no figure
        printed as the threshold's own unless it is, ``harness.core.text.figure``)."""
        if self.undecidable:
            return UNDECIDABLE
        return f"{figure(self.estimate, threshold)} ({figure(self.low, threshold)}-{figure(self.high, threshold)})"

    @classmethod
    def from_dict(cls, d: dict | None) -> CorrectedRate | None:
        """From a report's metadata (``vars`` of one), or None."""
        if not d:
            return None
        return cls(*(float("nan") if d.get(k) is None else float(d[k]) for k in ("estimate", "low", "high")),
                   undecidable=bool(d.get("undecidable", False)))


def corrected_rate(k: int, n: int, event: str, rates, *, confidence: float = 0.95, draws: int = DRAWS,
                   seed: int = 0) -> CorrectedRate:
    """The rate of ``event`` ("refusal" or "compliance") among n rows, k of which the scorer labelled
    with that event, corrected for the scorer's error ``rates`` (an ``ErrorRates``, or any object with
    ``sensitivity``, ``specificity`` and ``draws(which, size, rng)``)."""
    if n <= 0:
        return CorrectedRate(math.nan, math.nan, math.nan)
    args = (int(k), int(n), event, rates, confidence, draws, seed)
    try:
        return _corrected_cached(*args)  # the summary, the report and the failure lines all ask for it
    except TypeError:  # an unhashable rates object: computed each time
        return _corrected(*args)


def _corrected(k, n, event, rates, confidence, draws, seed) -> CorrectedRate:
    import numpy as np

    tail = (1 - confidence) / 2
    rng = np.random.default_rng(seed)
    scored_refusals = k if event == "refusal" else n - k
    se = rates.draws("sensitivity", draws, rng)
    sp = rates.draws("specificity", draws, rng)
    youden = se + sp - 1
    if rates.sensitivity + rates.specificity <= 1 or np.mean(youden <= 0) > tail:
        return CorrectedRate(math.nan, math.nan, math.nan, undecidable=True)
    point = _exact_point(scored_refusals, n, rates.sensitivity, rates.specificity)
    q = rng.beta(scored_refusals + 0.5, n - scored_refusals + 0.5, size=draws)
    with np.errstate(divide="ignore", invalid="ignore"):
        unclipped = ((q + sp - 1) / youden)[youden > 0]
    percentiles = [100 * tail, 100 * (1 - tail)]
    low, high = (float(v) for v in np.percentile(np.clip(unclipped, 0, 1), percentiles))
    shares, weights = _constrained_posterior(scored_refusals, n, rates, se, sp, draws, rng)
    if len(shares) >= MIN_FEASIBLE // 10:
        a, b = _weighted_percentiles(shares, weights, (tail, 1 - tail))
        low, high = min(low, a), max(high, b)
    else:
        # Almost no draw is possible: the scored share lies so far beyond the scorer's error floor that
        # the measured rates do not fit this model. The unclipped interval still says how uncertain the
        # share is, so it keeps its width, moved inside [0, 1].
        a, b = (float(v) for v in np.percentile(unclipped, percentiles))
        width = min(b - a, 1.0)
        if b < 0:
            high = max(high, width)
        elif a > 1:
            low = min(low, 1.0 - width)
    if event == "compliance":
        point, low, high = float(1 - point), 1.0 - high, 1.0 - low
    return CorrectedRate(float(point), low, high)


def _exact_point(scored_refusals: int, n: int, sensitivity: float, specificity: float) -> Fraction:
    """``rogan_gladen`` of the scored share k / n in exact arithmetic, rounded once when shown: in floats,
    (0.1 + 1.0 - 1.0) / 1.0 is 0.10000000000000009, so a perfect scorer's corrected rate of exactly a max
    threshold would read "0.100" and fail it. The caller has checked Se + Sp > 1."""
    se, sp = Fraction(float(sensitivity)), Fraction(float(specificity))
    return min(max((Fraction(scored_refusals, n) + sp - 1) / (se + sp - 1), Fraction(0)), Fraction(1))


_corrected_cached = lru_cache(maxsize=512)(_corrected)


def _constrained_posterior(scored_refusals, n, rates, se, sp, draws, rng):
    """Draws of the true refusal share given the scored count, with a uniform prior on [0, 1], and their
    importance weights. The scored share is drawn from its posterior under a uniform prior,
    Beta(k + 1, n - k + 1), and mapped to a true share with the drawn Se and Sp; shares outside [0, 1] are
    impossible and discarded, and each kept draw is weighted by 1 / (Se + Sp - 1), the change of variable
    from the scored share to the true one, which turns the uniform prior on the scored share into a uniform
    prior on the true share."""
    import numpy as np

    kept, weights, found = [], [], 0
    for batch in range(MAX_BATCHES):
        if batch:
            se, sp = rates.draws("sensitivity", draws, rng), rates.draws("specificity", draws, rng)
        youden = se + sp - 1
        q = rng.beta(scored_refusals + 1, n - scored_refusals + 1, size=draws)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = (q + sp - 1) / youden
        ok = (youden > 0) & (share >= 0) & (share <= 1)
        kept.append(share[ok])
        weights.append(1 / youden[ok])
        found += int(ok.sum())
        if found >= MIN_FEASIBLE:
            break
    return np.concatenate(kept), np.concatenate(weights)


def _weighted_percentiles(values, weights, quantiles) -> list[float]:
    import numpy as np

    order = np.argsort(values)
    values, cumulative = values[order], np.cumsum(weights[order])
    cumulative /= cumulative[-1]
    return [float(values[min(int(np.searchsorted(cumulative, q)), len(values) - 1)]) for q in quantiles]


def unresolvable_threshold(bound: str, metric: str, threshold: float, rates) -> str | None:
    """Why a threshold is tighter than the scorer can decide, or None. A max threshold t on a rate is
    undecidable when the scorer's own error in either direction exceeds t: a perfect model already shows
    that much scored rate (false events) or that much of a real rate goes unseen (missed events). A min
    threshold is judged the same way by its distance to 1."""
    event = METRIC_EVENT.get(metric)
    if event is None or rates is None:
        return None
    hit, false_hit = rates.hit_rates(event)
    missed = 1 - hit
    room = threshold if bound == "max" else 1 - threshold
    if max(missed, false_hit) <= room:
        return None
    return (f"{bound}_{metric} {threshold:g} is tighter than scorer {rates.scorer} v{rates.version} can decide: "
            f"it calls {false_hit:.1%} of non-{event} replies {event} and misses {missed:.1%} of {event} replies; "
            "read the corrected rate and its interval")  # where the rates were measured: the summary's line above


def _pair_probabilities(p0: float, delta: float, fail_hit: float, pass_hit: float) -> tuple[float, float]:
    """P(a prompt is an observed regression), P(an observed improvement) under the module's model.
    ``fail_hit`` = P(scored fail | truly fail), ``pass_hit`` = P(scored fail | truly pass)."""
    f, g = fail_hit, pass_hit
    stay_fail, stay_pass = p0, max(0.0, 1.0 - p0 - delta)
    noise = stay_fail * f * (1 - f) + stay_pass * g * (1 - g)
    return noise + delta * (1 - g) * f, noise + delta * g * (1 - f)


def regression_power(n: int, p0: float, delta: float, *, alpha: float, margin: float, fail_hit: float = 1.0,
                     pass_hit: float = 0.0) -> float:
    """Probability that the gate (one-sided exact McNemar at ``alpha`` and observed rise > ``margin``)
    fails a group of n prompts whose true failure rate rises from p0 by ``delta``."""
    import numpy as np
    from scipy.stats import binom

    p_reg, p_imp = _pair_probabilities(p0, delta, fail_hit, pass_hit)
    p_disc = p_reg + p_imp
    if n <= 0 or p_disc <= 0 or p_reg <= 0:
        return 0.0
    d = np.arange(n + 1)
    # Smallest regression count r with P(Bin(d, 1/2) >= r) < alpha (binom.sf(r - 1) = P(X >= r)).
    r_test = np.nan_to_num(binom.isf(alpha, d, 0.5), nan=0.0) + 1
    r_test = np.where(binom.sf(r_test - 1, d, 0.5) >= alpha, r_test + 1, r_test)  # isf is approximate
    r_test = np.where(binom.sf(r_test - 2, d, 0.5) < alpha, r_test - 1, r_test)
    # Rise (r - (d - r)) / n must exceed the margin: r > (d + n * margin) / 2.
    r_margin = np.floor((d + n * margin) / 2) + 1
    r_need = np.maximum(r_test, r_margin)
    p_d = binom.pmf(d, n, p_disc)
    p_r = np.where(r_need <= d, binom.sf(r_need - 1, d, p_reg / p_disc), 0.0)
    return float(np.sum(p_d * p_r))


def minimum_detectable_regression(n: int, p0: float, *, alpha: float, margin: float, fail_hit: float = 1.0,
                                  pass_hit: float = 0.0, power: float = POWER) -> float | None:
    """The smallest true rise of the failure rate that the gate detects with ``power`` in n prompts
    (to 0.001), or None when even every passing prompt flipping would not reach it."""
    p0 = min(max(p0, 0.0), 1.0)
    top = 1.0 - p0

    def detects(delta):
        return regression_power(n, p0, delta, alpha=alpha, margin=margin, fail_hit=fail_hit,
                                pass_hit=pass_hit) >= power

    if top <= 0 or not detects(top):
        return None
    low, high = 0.0, top
    while high - low > 5e-4:
        mid = (low + high) / 2
        low, high = (low, mid) if detects(mid) else (mid, high)
    return high
