"""The verified rates' statistics (harness.core.stratified), each figure against a value computed here
another way: the Wald branch by hand, the Bayes interval and the planning variance from scipy's
Beta-binomial, the allocation rules on costs chosen so that each rule decides the outcome. The mutation run
(scripts/mutation.py) holds these tests against changed copies of the module."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import betabinom, norm

from harness.core.stratified import (
    Stratum,
    allocate,
    pmf_bounds,
    rate_interval,
    stratified_estimate,
    unlabelled_events_pmf,
    unlabelled_variance,
)


def test_a_stratum_out_of_order_is_refused_naming_its_counts():
    with pytest.raises(ValueError, match=r"^stratum counts out of order: events 3, labelled 2, size 5$"):
        Stratum(5, 2, 3)


def test_an_unknown_interval_method_is_refused_naming_the_methods():
    with pytest.raises(ValueError, match=r"^interval method must be one of bounds, bayes, wald, got 'exact'$"):
        rate_interval([Stratum(4, 2, 1)], method="exact")


def test_no_rows_give_nan_and_zero_counts_and_one_row_gives_its_label():
    empty = rate_interval([])
    assert all(math.isnan(x) for x in (empty.estimate, empty.low, empty.high))
    assert (empty.labelled, empty.size) == (0, 0) and type(empty.labelled) is int and type(empty.size) is int
    one = rate_interval([Stratum(1, 1, 1)])
    assert (one.estimate, one.low, one.high, one.labelled, one.size) == (1.0, 1.0, 1.0, 1, 1)
    assert stratified_estimate([Stratum(1, 0, 0, fallback=0.3)]) == 0.3


def test_wald_by_hand():
    """Var = sum N_h^2 (1 - n_h/N_h) p_h (1 - p_h) / (n_h - 1) for n_h > 1, N_h^2 / 4 for an unfinished stratum
    with one label or none, 0 for a stratum labelled in full."""
    strata = [Stratum(20, 5, 2), Stratum(8, 2, 1), Stratum(10, 1, 0), Stratum(1, 1, 0), Stratum(4, 4, 1)]
    var = 400 * 0.75 * 0.4 * 0.6 / 4 + 64 * 0.75 * 0.25 / 1 + 100 / 4 + 0 + 0
    size = 43
    estimate = (2 + 15 * 0.4 + 1 + 6 * 0.5 + 0 + 0 + 1) / size
    half = norm.ppf(0.975) * math.sqrt(var) / size
    r = rate_interval(strata, method="wald")
    assert r.estimate == pytest.approx(estimate, abs=1e-12) and (r.labelled, r.size) == (13, 43)
    assert r.low == 0.0 and r.high == pytest.approx(estimate + half, abs=1e-12)  # the low end clipped at 0

    mid = rate_interval([Stratum(100, 50, 25)], method="wald")  # neither end clipped
    half = norm.ppf(0.975) * math.sqrt(10000 * (1 - 50 / 100) * 0.5 * 0.5 / 49) / 100
    assert (mid.low, mid.high) == (pytest.approx(0.5 - half, abs=1e-12), pytest.approx(0.5 + half, abs=1e-12))
    top = rate_interval([Stratum(10, 1, 1)], method="wald")  # one label, an event: the high end clipped at 1
    assert top.estimate == 1.0 and top.high == 1.0 and top.low == pytest.approx(1 - norm.ppf(0.975) * 5 / 10)


@pytest.mark.parametrize("prior", [None, 1.0])
def test_bayes_interval_is_the_beta_binomial_quantiles_of_the_unlabelled_rows(prior):
    """One stratum, 50 rows, 6 labelled, 2 events: the 44 unlabelled rows hold BetaBinom(44, 2 + a, 4 + a)
    events (a = 1/2 by default, where the ends differ from a = 1 or 3/2); the ends are its 2.5% and 97.5%
    quantiles, plus the 2 seen."""
    a = 0.5 if prior is None else prior
    r = rate_interval([Stratum(50, 6, 2)], method="bayes", **({} if prior is None else {"prior": prior}))
    dist = betabinom(44, 2 + a, 4 + a)
    assert r.low == (2 + dist.ppf(0.025)) / 50 and r.high == (2 + dist.ppf(0.975)) / 50
    assert r.estimate == pytest.approx((2 + 44 * 2 / 6) / 50) and (r.labelled, r.size) == (6, 50)


def test_the_point_masses_and_a_stratum_with_one_unlabelled_row():
    assert unlabelled_events_pmf([Stratum(10, 4, 0)], 0.0, 1.0).tolist() == [1, 0, 0, 0, 0, 0, 0]  # none seen
    assert unlabelled_events_pmf([Stratum(10, 4, 4)], 1.0, 0.0).tolist() == [0, 0, 0, 0, 0, 0, 1]  # all events
    one = unlabelled_events_pmf([Stratum(2, 1, 1)], 0.5, 0.5)  # one unlabelled row: P(0), P(1)
    assert one.tolist() == pytest.approx([betabinom.pmf(0, 1, 1.5, 0.5), betabinom.pmf(1, 1, 1.5, 0.5)])


def test_pmf_bounds_clamps_to_the_last_count_and_takes_an_exact_upper_tail_as_inside():
    short = np.array([0.5, 0.47])  # a total short of 1 - tail (a truncated pmf): the high end is the last count
    assert pmf_bounds(short, 0.025) == (0, 1)
    edge = np.array([1 - 0.025 + 1e-12, 0.025 - 1e-12])  # P(K <= 0) is the threshold itself: not above it
    assert pmf_bounds(edge, 0.025)[1] == 1


@pytest.mark.parametrize("size,labelled,share", [(50, 10, 0.2), (7, 3, 0.9), (12, 11, 0.5), (5, 0, 0.1)])
def test_planning_variance_is_the_beta_binomial_variance(size, labelled, share):
    rest = size - labelled
    expected = betabinom(rest, share * labelled + 1, (1 - share) * labelled + 1).var()
    assert unlabelled_variance(size, labelled, share) == pytest.approx(expected, rel=1e-12)


def test_planning_variance_of_a_finished_stratum_is_zero():
    assert unlabelled_variance(6, 6, 0.3) == 0.0 and unlabelled_variance(6, 7, 0.3) == 0.0


def weighted(weights):
    return lambda h, n: weights[h] / (n + 1)


def test_allocate_refuses_bad_lower_bounds_in_one_line():
    with pytest.raises(ValueError, match=r"^sizes and lower must have one entry per stratum$"):
        allocate(3, [2, 2], weighted([1, 1]), lower=[0])
    with pytest.raises(ValueError, match=r"^a stratum's known labels must be between 0 and its size$"):
        allocate(3, [2, 2], weighted([1, 1]), lower=[3, 0])


def test_a_floor_short_of_the_strata_goes_to_the_costliest_first():
    assert allocate(2, [5, 5, 5], weighted([1, 3, 2]), floor=1) == [0, 1, 1]


def test_small_strata_are_labelled_in_full_smallest_first_while_the_budget_allows():
    big_first = weighted([1, 100])
    assert allocate(2, [2, 1], weighted([1, 1]), take_all=2) == [1, 1]  # the 1-row stratum first, then greedy
    assert allocate(1, [1, 10], big_first, take_all=1) == [1, 0]  # a 1-row stratum, its one row = the budget
    assert allocate(2, [2, 10], big_first, take_all=2) == [2, 0]  # size = take_all, rest = budget
    assert allocate(1, [1, 10], big_first) == [0, 1]  # by default no stratum is taken whole


def test_no_stratum_gets_more_labels_than_rows():
    assert allocate(6, [1, 5], weighted([100, 1])) == [1, 5]
    assert allocate(6, [1, 5], weighted([100, 1]), lower=[1, 0]) == [1, 5]


@pytest.mark.parametrize("strata, exact", [
    ([Stratum(8, 5, 4), Stratum(18, 18, 17)], 0.9),  # (4 + 3 * 4/5 + 17) / 26: 0.8999999999999999 in floats
    ([Stratum(6, 1, 0), Stratum(6, 5, 1)], 0.1),  # (0 + 1 + 1/5) / 12
    ([Stratum(7, 3, 1), Stratum(7, 3, 2)], 0.5),
])
def test_an_estimate_equal_to_a_threshold_is_that_threshold(strata, exact):
    # summed in exact arithmetic and rounded once, so a verified rate of exactly 0.9 meets min 0.9
    assert stratified_estimate(strata) == exact
    assert rate_interval(strata).estimate == exact
