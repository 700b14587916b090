"""The rate corrected for scorer error and the gate's power (harness.core.misclassification) against
independent computations (tests/exact.py): Rogan-Gladen on hand-worked cases, the corrected interval from
Beta quantiles when the error rates are known exactly, each branch of the interval (inside [0, 1], below the
false-positive floor, beyond the scorer's range, undecidable at exactly Se + Sp = 1), and the power of the
gate by summing the multinomial over every outcome. Checked by the mutation run (docs/development.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta

from harness.core import misclassification as mc
from harness.core.misclassification import (UNDECIDABLE, CorrectedRate, corrected_rate, minimum_detectable_regression,
                                            regression_power, rogan_gladen, unresolvable_threshold)
from harness.scoring.error_rates import ErrorRates
from tests.exact import FixedRates, corrected_refusal_interval, gate_power, pair_probabilities

MANY = 200_000  # draws for the interval checks: Monte Carlo error well under their 0.003 tolerance


@pytest.mark.parametrize("q, se, sp, expected", [
    (0.5, 0.9, 0.8, 0.3 / 0.7),  # (0.5 + 0.8 - 1) / (0.9 + 0.8 - 1)
    (0.25, 1.0, 1.0, 0.25),  # a perfect scorer: the scored share is the true one
    (0.4375, 0.75, 0.875, 0.5),  # (0.4375 - 0.125) / 0.625
    (0.1, 0.75, 0.875, 0.0),  # (0.1 - 0.125) / 0.625 = -0.04: below the floor 1 - Sp, clipped to 0
])
def test_rogan_gladen_hand_worked(q, se, sp, expected):
    assert float(rogan_gladen(q, se, sp)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # 0.1 / 0 and 0 / 0 are expected, and silenced
def test_rogan_gladen_clips_to_the_unit_interval_and_is_nan_for_a_chance_scorer():
    assert float(rogan_gladen(0.95, 0.75, 0.875)) == 1.0  # above Se: clipped to 1
    assert float(rogan_gladen(0.75, 0.75, 0.875)) == 1.0  # exactly Se: the whole share
    assert float(rogan_gladen(0.125, 0.75, 0.875)) == 0.0  # exactly 1 - Sp: none
    assert np.isnan(rogan_gladen(0.5, 0.5, 0.5))  # Se + Sp = 1 (and 0 / 0)
    assert np.isnan(rogan_gladen(0.6, 0.5, 0.5))  # 0.1 / 0
    assert np.isnan(rogan_gladen(0.5, 0.25, 0.5))  # Se + Sp < 1
    arr = rogan_gladen(np.array([0.125, 0.4375, 0.75]), np.array([0.75, 0.75, 0.5]), np.array([0.875, 0.875, 0.5]))
    assert arr[0] == 0.0 and arr[1] == pytest.approx(0.5) and np.isnan(arr[2])


# -- the corrected rate with exactly known error rates ------------------------------------------------------

@pytest.mark.parametrize("k, n, se, sp", [(10, 40, 0.9, 0.95), (3, 20, 1.0, 1.0), (45, 50, 0.85, 0.97),
                                          (12, 30, 0.8, 0.9)])
def test_corrected_refusal_rate_matches_beta_quantiles(k, n, se, sp):
    result = corrected_rate(k, n, "refusal", FixedRates(se, sp), draws=MANY)
    low, high = corrected_refusal_interval(k, n, se, sp)
    assert not result.undecidable
    assert result.estimate == pytest.approx(min(max((k / n + sp - 1) / (se + sp - 1), 0), 1), abs=1e-12)
    assert (result.low, result.high) == pytest.approx((low, high), abs=0.003)


def test_the_corrected_compliance_rate_is_one_minus_the_refusal_share():
    # 28 of 40 scored compliance: 12 scored refusals
    result = corrected_rate(28, 40, "compliance", FixedRates(0.8, 0.9), draws=MANY)
    low, high = corrected_refusal_interval(12, 40, 0.8, 0.9)
    assert result.estimate == pytest.approx(1 - (0.3 + 0.9 - 1) / 0.7, abs=1e-12)
    assert (result.low, result.high) == pytest.approx((1 - high, 1 - low), abs=0.003)


def test_the_confidence_reaches_the_interval():
    result = corrected_rate(12, 30, "refusal", FixedRates(0.8, 0.9), confidence=0.5, draws=MANY)
    assert (result.low, result.high) == pytest.approx(corrected_refusal_interval(12, 30, 0.8, 0.9, 0.5), abs=0.003)


def test_below_the_false_positive_floor_the_interval_keeps_its_width():
    # 1 of 50 scored refusal, under the floor 1 - Sp = 0.1: the estimate is 0, the clipped Jeffreys interval is
    # the point 0, and the constrained posterior still gives the true share room above 0
    result = corrected_rate(1, 50, "refusal", FixedRates(0.95, 0.9), draws=MANY)
    low, high = corrected_refusal_interval(1, 50, 0.95, 0.9)
    assert (result.estimate, result.low) == (0.0, 0.0)
    assert high > 0.07 and result.high == pytest.approx(high, abs=0.01)  # few draws are feasible: 0.01


def jeffreys_width(k, n, youden, confidence=0.95):
    tail = (1 - confidence) / 2
    q = beta(k + 0.5, n - k + 0.5)
    return (q.ppf(1 - tail) - q.ppf(tail)) / youden


def test_a_scored_share_beyond_the_scorers_range_keeps_the_unclipped_width():
    # every one of 200 scored refusal by a scorer that finds only 60% of refusals: no true share fits, so the
    # interval is the unclipped one's width below 1
    result = corrected_rate(200, 200, "refusal", FixedRates(0.6, 0.99), draws=MANY)
    assert (result.estimate, result.high) == (1.0, 1.0)
    assert result.low == pytest.approx(1 - jeffreys_width(200, 200, 0.59), abs=0.001)


def test_a_scored_share_under_the_scorers_floor_keeps_the_unclipped_width_above_0():
    result = corrected_rate(0, 200, "refusal", FixedRates(0.99, 0.6), draws=MANY)
    assert (result.estimate, result.low) == (0.0, 0.0)
    assert result.high == pytest.approx(jeffreys_width(0, 200, 0.59), abs=0.001)


def test_the_kept_width_is_at_most_the_whole_range():
    # Se + Sp - 1 = 0.05: the unclipped width is about 6, the interval is all of [0, 1]
    result = corrected_rate(0, 6, "refusal", FixedRates(0.95, 0.1), draws=MANY)
    assert jeffreys_width(0, 6, 0.05) > 5
    assert (result.estimate, result.low, result.high) == (0.0, 0.0, 1.0)


def test_draws_are_taken_again_only_while_too_few_are_feasible():
    rates = FixedRates(0.9, 0.95)
    corrected_rate(10, 40, "refusal", rates, draws=20000, seed=11)
    assert rates.calls == 2  # Se and Sp once; the first batch of the constrained posterior reuses them
    rates = FixedRates(0.6, 0.99)
    corrected_rate(200, 200, "refusal", rates, draws=20000, seed=11)
    assert rates.calls == 2 * mc.MAX_BATCHES  # nothing feasible: every batch drawn
    # about 3.1% of the draws feasible: the batches needed to find MIN_FEASIBLE of them
    feasible = 1 - beta(2, 50).cdf(0.1)
    rates = FixedRates(0.95, 0.9)
    corrected_rate(1, 50, "refusal", rates, draws=20000, seed=11)
    assert rates.calls == 2 * math.ceil(mc.MIN_FEASIBLE / (20000 * feasible))


def test_the_constrained_posterior_stops_at_exactly_min_feasible_draws():
    # a perfect scorer: every draw is feasible, so MIN_FEASIBLE draws fill the first batch and one fewer do not
    rates = FixedRates(1.0, 1.0)
    corrected_rate(5, 10, "refusal", rates, draws=mc.MIN_FEASIBLE)
    assert rates.calls == 2
    rates = FixedRates(1.0, 1.0)
    corrected_rate(5, 10, "refusal", rates, draws=mc.MIN_FEASIBLE - 1)
    assert rates.calls == 4


def test_a_scorer_whose_rates_sum_to_one_is_undecidable_whatever_its_draws():
    good = np.full(mc.DRAWS, 0.9)
    result = corrected_rate(10, 40, "refusal", FixedRates(0.625, 0.375, {"sensitivity": good, "specificity": good}))
    assert result.undecidable and math.isnan(result.estimate) and math.isnan(result.low) and math.isnan(result.high)
    assert result.text() == UNDECIDABLE


@pytest.mark.filterwarnings("error::RuntimeWarning")  # dividing by a zero Se + Sp - 1 is expected, and silenced
@pytest.mark.parametrize("chance_draws, undecidable", [(5000, False), (5001, True)])
def test_undecidable_when_more_than_the_tail_of_the_draws_are_no_better_than_chance(chance_draws, undecidable):
    # confidence 0.5: the tail is 1/4 of the 20000 draws; a draw with Se + Sp - 1 = 0 exactly counts as chance
    se = np.where(np.arange(mc.DRAWS) < chance_draws, 0.5, 0.9)
    sp = np.where(np.arange(mc.DRAWS) < chance_draws, 0.5, 0.95)
    rates = FixedRates(0.9, 0.95, {"sensitivity": se, "specificity": sp})
    result = corrected_rate(10, 40, "refusal", rates, confidence=0.5)
    assert result.undecidable is undecidable
    if not undecidable:  # the chance draws are left out: the interval is that of the 15000 others
        expected = corrected_refusal_interval(10, 40, 0.9, 0.95, confidence=0.5)
        assert (result.low, result.high) == pytest.approx(expected, abs=0.005)


def test_the_constrained_posterior_weights_each_draw_by_the_change_of_variable():
    # Sp = 1 and Se drawn as 0.5 or 1 (half each): a share p comes from q = Se * p, so with a uniform prior on
    # p its posterior density is proportional to the mean over Se of the Beta(k + 1, n - k + 1) density at
    # Se * p, and its CDF to the mean of F(Se * p) / Se
    from scipy.optimize import brentq

    k, n, size = 6, 20, 400_000
    se = np.where(np.arange(size) % 2 == 0, 0.5, 1.0)
    sp = np.ones(size)
    shares, weights = mc._constrained_posterior(k, n, FixedRates(0.75, 1.0), se, sp, size, np.random.default_rng(3))
    got = mc._weighted_percentiles(shares, weights, (0.025, 0.5, 0.975))
    q = beta(k + 1, n - k + 1)

    def cdf(p):
        return (q.cdf(0.5 * p) / 0.5 + q.cdf(p)) / (q.cdf(0.5) / 0.5 + q.cdf(1.0))

    expected = [brentq(lambda p: cdf(p) - u, 0, 1) for u in (0.025, 0.5, 0.975)]
    assert got == pytest.approx(expected, abs=0.005)


def test_a_single_row_has_a_rate():
    result = corrected_rate(1, 1, "refusal", FixedRates(1.0, 1.0))
    assert result.estimate == 1.0 and not result.undecidable


def test_no_rows_give_no_rate_and_no_verdict_of_chance():
    for n in (0, -1):
        result = corrected_rate(0, n, "refusal", FixedRates(0.9, 0.9))
        assert math.isnan(result.estimate) and math.isnan(result.low) and math.isnan(result.high)
        assert not result.undecidable


class UnhashableRates(FixedRates):
    __hash__ = None


def test_results_are_cached_per_rates_object_and_computed_for_an_unhashable_one():
    rates = FixedRates(0.9, 0.95)
    first = corrected_rate(10, 40, "refusal", rates, seed=5)
    assert corrected_rate(np.int64(10), 40, "refusal", rates, seed=5) == first and rates.calls == 2
    unhashable = UnhashableRates(0.9, 0.95)
    assert corrected_rate(10, 40, "refusal", unhashable, seed=5) == first
    assert corrected_rate(10, 40, "refusal", unhashable, seed=5) == first and unhashable.calls == 4


def test_the_seed_fixes_the_draws():
    rates = ErrorRates("s", "1", 200, 180, 200, 190)
    assert corrected_rate(10, 40, "refusal", rates) == corrected_rate(10, 40, "refusal", rates, seed=0)
    assert corrected_rate(10, 40, "refusal", rates, seed=1) != corrected_rate(10, 40, "refusal", rates, seed=0)


def test_weighted_percentiles_by_hand():
    # sorted values 1, 2, 3 with weights 1, 2, 1: cumulative shares 0.25, 0.75, 1
    values, weights = np.array([3.0, 1.0, 2.0]), np.array([1.0, 1.0, 2.0])
    assert mc._weighted_percentiles(values, weights, (0.25, 0.5, 0.76, 1.0, 1.5)) == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_corrected_rate_text_and_from_dict():
    assert CorrectedRate(0.1234, 0.1, 0.15).text() == "0.123 (0.100-0.150)"
    assert CorrectedRate(math.nan, math.nan, math.nan, undecidable=True).text() == UNDECIDABLE
    assert CorrectedRate.from_dict(None) is None and CorrectedRate.from_dict({}) is None
    assert CorrectedRate.from_dict({"estimate": 0.5, "low": 0.25, "high": 1}) == CorrectedRate(0.5, 0.25, 1.0)
    back = CorrectedRate.from_dict({"estimate": None, "low": None, "high": None, "undecidable": True})
    assert back.undecidable and math.isnan(back.estimate) and math.isnan(back.low) and math.isnan(back.high)
    assert CorrectedRate.from_dict({"estimate": 0.5, "low": 0.25, "high": 1}).undecidable is False


# -- thresholds tighter than the scorer can decide ----------------------------------------------------------

RATES = ErrorRates("s", "2", 8, 6, 8, 7)  # Se = 0.75 (misses 25% of refusals), Sp = 0.875 (12.5% false refusals)


def test_a_max_threshold_equal_to_the_scorers_error_is_decidable():
    assert unresolvable_threshold("max", "refusal_rate", 0.25, RATES) is None
    assert unresolvable_threshold("max", "refusal_rate", 0.24, RATES) == (
        "max_refusal_rate 0.24 is tighter than scorer s v2 can decide: it calls 12.5% of non-refusal replies "
        "refusal and misses 25.0% of refusal replies; read the corrected rate and its interval")


def test_a_min_threshold_is_judged_by_its_distance_to_one():
    assert unresolvable_threshold("min", "refusal_rate", 0.75, RATES) is None
    assert unresolvable_threshold("min", "refusal_rate", 0.76, RATES).startswith("min_refusal_rate 0.76 is tighter")
    # compliance: Sp = 0.875 finds it, 1 - Se = 0.25 of refusals are called compliance
    assert unresolvable_threshold("max", "unsafe_compliance_rate", 0.25, RATES) is None
    assert "calls 25.0% of non-compliance replies compliance and misses 12.5%" in \
        unresolvable_threshold("max", "unsafe_compliance_rate", 0.2, RATES)


def test_thresholds_no_scorer_decides_are_left_alone():
    assert unresolvable_threshold("max", "win_rate", 0.0, RATES) is None
    assert unresolvable_threshold("max", "refusal_rate", 0.0, None) is None


# -- the gate's power and the smallest regression it detects ------------------------------------------------

@pytest.mark.parametrize("p0, delta, fail_hit, pass_hit", [(0.1, 0.2, 1.0, 0.0), (0.1, 0.2, 0.9, 0.05),
                                                           (0.5, 0.6, 0.8, 0.3), (0.0, 0.0, 0.9, 0.1)])
def test_pair_probabilities_enumerate_the_true_states(p0, delta, fail_hit, pass_hit):
    assert mc._pair_probabilities(p0, delta, fail_hit, pass_hit) == \
        pytest.approx(pair_probabilities(p0, delta, fail_hit, pass_hit), abs=1e-15)


@pytest.mark.parametrize("n", [1, 5, 12, 30])
# 1/32 is a tail probability of the symmetric binomial (5 of 5): a p-value equal to alpha is not significant.
# (Not 1/2: scipy's binomial tail for 8 of 15 is 0.4999999999999999, one ulp under the exact 1/2, in the gate's
# own binomtest too, so gate and power model agree with each other there and differ from the exact sum.)
@pytest.mark.parametrize("alpha, margin", [(0.05, 0.02), (0.01, 0.0), (0.3, 0.1), (1 / 32, 0.0), (0.6, 0.0)])
@pytest.mark.parametrize("p0, delta, fail_hit, pass_hit", [(0.1, 0.3, 1.0, 0.0), (0.2, 0.15, 0.9, 0.05),
                                                           (0.5, 0.6, 0.85, 0.1)])
def test_regression_power_is_the_multinomial_sum(n, alpha, margin, p0, delta, fail_hit, pass_hit):
    power = regression_power(n, p0, delta, alpha=alpha, margin=margin, fail_hit=fail_hit, pass_hit=pass_hit)
    assert power == pytest.approx(gate_power(n, p0, delta, alpha=alpha, margin=margin, fail_hit=fail_hit,
                                             pass_hit=pass_hit), abs=1e-12)


def test_regression_power_defaults_to_a_perfect_scorer():
    assert regression_power(12, 0.1, 0.3, alpha=0.05, margin=0.02) == \
        pytest.approx(gate_power(12, 0.1, 0.3, alpha=0.05, margin=0.02, fail_hit=1.0, pass_hit=0.0), abs=1e-12)


def test_regression_power_where_the_binomial_quantile_overshoots():
    # alpha just above P(55 of 55) = 2**-55: 55 regressions of 55 are significant, though scipy's isf says 55
    # is the quantile (so 56 would be needed): the power of a sure flip of every prompt is 1
    alpha = 2.0 ** -55 * (1 + 1e-12)
    assert regression_power(55, 0.0, 1.0, alpha=alpha, margin=0.0) == 1.0
    assert gate_power(55, 0.0, 1.0, alpha=alpha, margin=0.0) == 1.0


def test_regression_power_is_zero_without_prompts_or_discordant_pairs():
    assert regression_power(0, 0.1, 0.3, alpha=0.05, margin=0.0) == 0.0
    assert regression_power(20, 0.1, 0.0, alpha=0.05, margin=0.0) == 0.0  # a perfect scorer, nothing flips


@pytest.mark.parametrize("n, p0, fail_hit, pass_hit, power", [(40, 0.1, 1.0, 0.0, 0.8), (60, 0.05, 0.9, 0.05, 0.8),
                                                              (40, 0.1, 1.0, 0.0, 0.5)])
def test_the_minimum_detectable_regression_is_where_the_power_crosses(n, p0, fail_hit, pass_hit, power):
    found = minimum_detectable_regression(n, p0, alpha=0.05, margin=0.02, fail_hit=fail_hit, pass_hit=pass_hit,
                                          power=power)
    kw = dict(alpha=0.05, margin=0.02, fail_hit=fail_hit, pass_hit=pass_hit)
    assert gate_power(n, p0, found, **kw) >= power > gate_power(n, p0, found - 5e-4, **kw)


def test_no_detectable_regression_when_even_every_flip_is_not_enough():
    assert minimum_detectable_regression(3, 0.1, alpha=0.05, margin=0.02) is None  # 3 flips: p = 0.125
    assert minimum_detectable_regression(40, 1.0, alpha=0.05, margin=0.02) is None  # nothing left to flip
    assert minimum_detectable_regression(40, 1.5, alpha=0.05, margin=0.02) is None  # clipped to 1
    assert minimum_detectable_regression(40, -0.5, alpha=0.05, margin=0.02) == \
        minimum_detectable_regression(40, 0.0, alpha=0.05, margin=0.02)  # clipped to 0
