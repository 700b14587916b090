"""The statistics a verdict rests on, against independent computations (tests/exact.py): the Wilson interval
from its formula, McNemar's exact p-values from the binomial, and every comparison of the baseline gate at
its boundary (a p-value equal to alpha, a rise equal to the margin, a rate equal to its ceiling, n = 0).
The mutation run (scripts/mutation.py, docs/development.md) checks that these tests catch a changed constant
or comparison in harness/core/stats.py and harness/baselines/stats.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.baselines.stats import (FAILING_VERDICTS, OVER_THRESHOLD, REGRESSION, GateRule, Interval, McNemar,
                                     absolute_check, failure_rate, mcnemar_exact, paired_bootstrap, paired_rates)
from harness.core.errors import ConfigError
from harness.core.stats import wilson_interval
from tests.exact import mcnemar_p_values, wilson

CASES = [(0, 10), (1, 1), (3, 10), (10, 10), (17, 40), (1, 200)]


@pytest.mark.parametrize("k, n", CASES)
@pytest.mark.parametrize("confidence", [0.95, 0.8, 0.5])
def test_wilson_interval_matches_its_formula(k, n, confidence):
    low, high = wilson_interval(k, n, confidence)
    expected = wilson(k, n, confidence)
    assert (low, high) == pytest.approx(expected, abs=1e-12)
    assert type(low) is float and type(high) is float


def test_wilson_interval_defaults_to_95_percent():
    assert wilson_interval(3, 10) == pytest.approx(wilson(3, 10, 0.95), abs=1e-12)


@pytest.mark.parametrize("regressions, improvements", [(5, 0), (3, 3), (0, 4), (7, 2), (2, 9), (1, 0), (12, 11)])
def test_mcnemar_p_values_are_the_binomial_tails(regressions, improvements):
    test = mcnemar_exact(regressions, improvements)
    two, reg, imp = mcnemar_p_values(regressions, improvements)
    assert (test.regressions, test.improvements) == (regressions, improvements)
    assert test.p_two_sided == pytest.approx(two, rel=1e-12)
    assert test.p_regression == pytest.approx(reg, rel=1e-12)
    assert test.p_improvement == pytest.approx(imp, rel=1e-12)


def test_mcnemar_without_discordant_pairs_tests_nothing():
    assert mcnemar_exact(0, 0) == McNemar(0, 0, 1.0, 1.0, 1.0)


def test_failure_rate_is_the_share_with_its_wilson_interval():
    rate = failure_rate(3, 12)
    assert rate.estimate == 0.25 and (rate.low, rate.high) == pytest.approx(wilson(3, 12), abs=1e-12)
    rate = failure_rate(3, 12, confidence=0.8)
    assert (rate.low, rate.high) == pytest.approx(wilson(3, 12, 0.8), abs=1e-12)
    empty = failure_rate(0, 0)
    assert math.isnan(empty.estimate) and math.isnan(empty.low) and math.isnan(empty.high)


# -- absolute ceiling --------------------------------------------------------------------------------------

def test_absolute_check_on_the_estimate_passes_at_the_threshold_and_fails_above():
    assert absolute_check(3, 12, 0.25) == (True, 0.25)  # equal to a max passes
    assert absolute_check(4, 12, 0.25) == (False, 4 / 12)
    assert absolute_check(3, 12, 0.25, bound="min") == (True, 0.25)  # equal to a min passes
    assert absolute_check(2, 12, 0.25, bound="min") == (False, 2 / 12)


def test_absolute_check_on_the_bound_uses_the_far_end_of_the_interval():
    low, high = wilson(3, 12)
    passed, value = absolute_check(3, 12, 1.0, on="bound")
    assert value == pytest.approx(high, abs=1e-12)
    assert absolute_check(3, 12, value, on="bound") == (True, value)  # equal to a max passes
    assert absolute_check(3, 12, high - 1e-6, on="bound")[0] is False
    passed, value = absolute_check(3, 12, 0.0, on="bound", bound="min")
    assert value == pytest.approx(low, abs=1e-12)
    assert absolute_check(3, 12, value, on="bound", bound="min") == (True, value)  # equal to a min passes
    assert absolute_check(3, 12, low + 1e-6, on="bound", bound="min")[0] is False
    # the confidence reaches the interval; the gate's earlier spelling "upper" means "bound"
    assert absolute_check(3, 12, 1.0, on="upper", confidence=0.8)[1] == pytest.approx(wilson(3, 12, 0.8)[1])
    assert absolute_check(3, 12, 1.0, on="point") == (True, 0.25)


def test_absolute_check_refuses_a_corrected_threshold_on():
    with pytest.raises(ConfigError, match="must be one of estimate, bound, got 'corrected'"):
        absolute_check(3, 12, 0.5, on="corrected")


# -- the paired gate: every verdict and its boundary -------------------------------------------------------

def flips(n: int, regressions: int = 0, improvements: int = 0, both_fail: int = 0):
    """Baseline and candidate outcomes (True = passed) of n prompts: the first ``regressions`` pass then
    fail, the next ``improvements`` fail then pass, the next ``both_fail`` fail in both runs."""
    base, cand = [True] * n, [True] * n
    for i in range(regressions):
        cand[i] = False
    for i in range(regressions, regressions + improvements):
        base[i] = False
    for i in range(regressions + improvements, regressions + improvements + both_fail):
        base[i] = cand[i] = False
    return base, cand


def test_a_significant_rise_above_the_margin_is_a_regression():
    result = paired_rates(*flips(20, regressions=5))
    assert result.verdict == REGRESSION and result.failed
    assert (result.n, result.base_failures, result.cand_failures) == (20, 0, 5)
    assert result.test == McNemar(5, 0, 0.0625, 0.03125, 1.0)
    assert result.delta == 0.25
    assert result.reason == ("failure rate 0.000 -> 0.250 (+0.250 > margin 0.02), McNemar p=0.031 < 0.05 "
                             "(5 regressions, 0 improvements)")
    assert (result.base.low, result.base.high) == pytest.approx(wilson(0, 20), abs=1e-12)
    assert (result.cand.low, result.cand.high) == pytest.approx(wilson(5, 20), abs=1e-12)
    assert result.score_shift is None


def test_a_p_value_equal_to_alpha_is_not_significant():
    result = paired_rates(*flips(20, regressions=5), GateRule(alpha=0.03125))
    assert result.verdict == "no significant change" and not result.failed
    assert result.reason == "McNemar p=0.031 (5 regressions, 0 improvements)"
    assert paired_rates(*flips(20, regressions=5), GateRule(alpha=0.0313)).verdict == REGRESSION


def test_a_rise_equal_to_the_margin_is_within_it():
    result = paired_rates(*flips(20, regressions=5), GateRule(max_regression=0.25))
    assert result.verdict == "within margin" and not result.failed
    assert result.reason == "McNemar p=0.031 (5 regressions, 0 improvements); +0.250 within margin 0.25"
    assert paired_rates(*flips(20, regressions=5), GateRule(max_regression=0.2499)).verdict == REGRESSION


def test_the_margin_counts_regressions_net_of_improvements():
    # 9 regressions, 2 improvements in 20: p = 0.0327 < 0.05, net rise 7/20 = 0.35 (the gross rise is 0.45)
    result = paired_rates(*flips(20, regressions=9, improvements=2), GateRule(max_regression=0.35))
    assert result.verdict == "within margin"
    assert result.reason.endswith("; +0.350 within margin 0.35")
    assert paired_rates(*flips(20, regressions=9, improvements=2), GateRule(max_regression=0.34)).verdict == REGRESSION


def test_significantly_fewer_failures_is_an_improvement():
    result = paired_rates(*flips(20, improvements=5))
    assert result.verdict == "improved" and not result.failed
    assert result.reason == "McNemar p=1 (0 regressions, 5 improvements)"
    assert result.delta == -0.25
    assert paired_rates(*flips(20, improvements=5), GateRule(alpha=0.03125)).verdict == "no significant change"


def test_the_absolute_ceiling_fails_a_run_without_a_significant_change():
    base, cand = flips(20, both_fail=3)  # 3/20 = 0.15 in both runs
    result = paired_rates(base, cand, GateRule(max_failure_rate=0.1))
    assert result.verdict == OVER_THRESHOLD and result.failed
    assert result.reason == "candidate failure rate 0.150 > max 0.1"
    assert paired_rates(base, cand, GateRule(max_failure_rate=0.15)).verdict == "no significant change"
    high = wilson(3, 20)[1]
    bound = paired_rates(base, cand, GateRule(max_failure_rate=0.3, threshold_on="bound"))
    assert bound.verdict == OVER_THRESHOLD
    assert bound.reason == f"candidate failure rate upper bound {high:.3f} > max 0.3"
    assert paired_rates(base, cand, GateRule(max_failure_rate=0.4, threshold_on="bound")).verdict != OVER_THRESHOLD
    # the rule's confidence reaches the ceiling's interval
    narrow = paired_rates(base, cand, GateRule(max_failure_rate=0.3, threshold_on="bound", confidence=0.5))
    assert wilson(3, 20, 0.5)[1] < 0.3 and narrow.verdict == "no significant change"


def test_the_ceiling_also_overrides_within_margin_and_improved_but_not_a_regression():
    within = paired_rates(*flips(20, regressions=5), GateRule(max_regression=0.3, max_failure_rate=0.2))
    assert within.verdict == OVER_THRESHOLD and within.reason == "candidate failure rate 0.250 > max 0.2"
    improved = paired_rates(*flips(20, improvements=5, both_fail=3), GateRule(max_failure_rate=0.1))
    assert improved.verdict == OVER_THRESHOLD
    regression = paired_rates(*flips(20, regressions=5), GateRule(max_failure_rate=0.1))
    assert regression.verdict == REGRESSION and regression.reason.startswith("failure rate 0.000 -> 0.250")


def test_an_empty_group_has_no_rates_and_passes():
    result = paired_rates([], [], GateRule(max_failure_rate=0.0))
    assert result.n == 0 and result.delta == 0.0 and math.isnan(result.base.estimate)
    assert result.verdict == "no significant change" and not result.failed


def test_outcomes_of_different_lengths_are_refused():
    with pytest.raises(ValueError) as err:
        paired_rates([True, False], [True])
    assert str(err.value) == "paired_rates needs one baseline and one candidate outcome per prompt"


def test_the_rules_confidence_reaches_both_failure_rates():
    result = paired_rates(*flips(20, regressions=5, both_fail=2), GateRule(confidence=0.8))
    assert (result.base.low, result.base.high) == pytest.approx(wilson(2, 20, 0.8), abs=1e-12)
    assert (result.cand.low, result.cand.high) == pytest.approx(wilson(7, 20, 0.8), abs=1e-12)


def test_failing_verdicts_are_exactly_regression_and_over_threshold():
    assert FAILING_VERDICTS == ("REGRESSION", "OVER THRESHOLD")


# -- the paired bootstrap of a score shift ------------------------------------------------------------------

def shifted_scores(n: int = 200, shift: float = 0.1, seed: int = 7):
    rng = np.random.default_rng(seed)
    base = rng.normal(0.5, 0.2, n)
    return base, base + shift + rng.normal(0, 0.1, n)


def test_the_bootstrap_interval_is_near_the_normal_interval_of_the_mean_difference():
    base, cand = shifted_scores()
    diff = cand - base
    result = paired_bootstrap(base, cand)
    assert result.estimate == pytest.approx(diff.mean(), rel=1e-12)
    half = 1.959964 * diff.std(ddof=1) / math.sqrt(len(diff))  # the textbook interval, for a check to 0.003
    assert result.low == pytest.approx(diff.mean() - half, abs=0.003)
    assert result.high == pytest.approx(diff.mean() + half, abs=0.003)
    half80 = 1.281552 * diff.std(ddof=1) / math.sqrt(len(diff))
    narrow = paired_bootstrap(base, cand, confidence=0.8)
    assert narrow.low == pytest.approx(diff.mean() - half80, abs=0.003)


def test_the_bootstrap_is_reproducible_by_seed():
    base, cand = shifted_scores(n=30)
    assert paired_bootstrap(base, cand) == paired_bootstrap(base, cand, seed=0)
    assert paired_bootstrap(base, cand, seed=1) != paired_bootstrap(base, cand, seed=0)


def test_the_bootstrap_drops_incomplete_pairs_and_needs_two():
    assert paired_bootstrap([0.1, float("nan"), 0.3], [0.2, 0.5, float("nan")]) is None
    assert paired_bootstrap([0.1, float("nan"), 0.3, 0.2], [0.4, 0.5, 0.3, float("nan")]) == \
        paired_bootstrap([0.1, 0.3], [0.4, 0.3])
    assert paired_bootstrap([0.1, 0.3], [0.4, 0.5]) is not None


def test_a_constant_shift_has_a_point_interval():
    assert paired_bootstrap([0.0, 0.25, 0.5], [0.5, 0.75, 1.0]) == Interval(0.5, 0.5, 0.5)


@pytest.mark.filterwarnings("ignore")  # scipy warns that BCa cannot be computed: the case under test
def test_a_sample_bca_cannot_handle_falls_back_to_percentiles():
    # differences equal up to rounding (0.2 +- 1e-16): BCa's acceleration is 0/0, the percentile interval is fine
    result = paired_bootstrap([0.1, 0.2, 0.4], [0.3, 0.4, 0.6])
    assert (result.estimate, result.low, result.high) == pytest.approx((0.2, 0.2, 0.2), abs=1e-12)


def test_paired_rates_carries_the_score_shift_with_the_rules_confidence_and_seed():
    base, cand = shifted_scores(n=20)
    outcomes = flips(20)
    result = paired_rates(*outcomes, base_scores=base, cand_scores=cand, seed=3)
    assert result.score_shift == paired_bootstrap(base, cand, seed=3)
    assert paired_rates(*outcomes, base_scores=base, cand_scores=cand).score_shift == \
        paired_bootstrap(base, cand, seed=0)  # the default seed
    narrow = paired_rates(*outcomes, GateRule(confidence=0.8), base_scores=base, cand_scores=cand, seed=3)
    assert narrow.score_shift == paired_bootstrap(base, cand, confidence=0.8, seed=3)
    assert paired_rates(*outcomes, base_scores=base).score_shift is None
    assert paired_rates(*outcomes, cand_scores=cand).score_shift is None
