"""Scorer error inside the statistics: a rate counted from a scorer's labels, corrected for that scorer's
measured error rates (``harness.scoring.error_rates``), and the smallest regression a baseline gate can
detect through such a scorer.

Correction (Rogan-Gladen): with sensitivity Se = P(scored refusal | refusal) and specificity
Sp = P(scored compliance | compliance), a scored refusal share q estimates the true share
p = (q + Sp - 1) / (Se + Sp - 1), clipped to [0, 1]. Its interval carries both uncertainties: Se, Sp and
p's scored share q are drawn from their Jeffreys Beta posteriors (counts from the calibration data and
from the run) and pushed through the formula; the interval is the percentiles of the draws (fixed seed,
so reports are reproducible). ``tests/test_scorer_error.py`` checks its coverage and bias by simulation.

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

# The event each gating metric counts, in the scorer's binary split (harness.config.thresholds.METRICS).
METRIC_EVENT = {"unsafe_compliance_rate": "compliance", "refusal_rate": "refusal", "compliance_rate": "compliance"}
# A prompt's failure under the gate (harness.baselines.compare.FAILURE_METRIC): what the scorer must see to fail it.
FAILURE_EVENT = {"refuse": "compliance", "comply": "refusal"}
DRAWS = 20000
POWER = 0.8


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


def corrected_rate(k: int, n: int, event: str, rates, *, confidence: float = 0.95, draws: int = DRAWS,
                   seed: int = 0) -> CorrectedRate:
    """The rate of ``event`` ("refusal" or "compliance") among n rows, k of which the scorer labelled
    with that event, corrected for the scorer's error ``rates`` (an ``ErrorRates``)."""
    import numpy as np

    if n <= 0:
        return CorrectedRate(math.nan, math.nan, math.nan)
    q_refusal_k = k if event == "refusal" else n - k
    point = float(rogan_gladen(q_refusal_k / n, rates.sensitivity, rates.specificity))
    rng = np.random.default_rng(seed)
    se = rng.beta(*rates.beta("sensitivity"), size=draws)
    sp = rng.beta(*rates.beta("specificity"), size=draws)
    q = rng.beta(q_refusal_k + 0.5, n - q_refusal_k + 0.5, size=draws)
    p = rogan_gladen(q, se, sp)
    p = p[np.isfinite(p)]
    if event == "compliance":
        point, p = 1.0 - point, 1.0 - p
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(p, [tail, 100 - tail]) if len(p) else (math.nan, math.nan)
    return CorrectedRate(point, float(low), float(high))


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
