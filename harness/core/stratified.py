"""A rate over a finite set of rows, some of them labelled by a person: the stratified estimator, its
interval, and the allocation of labels across strata that makes that interval narrowest.

The rows of a rate (one suite's should-refuse prompts, say) are split into strata; in ``harness.engine.
verification`` a stratum is the rows the scorer gave one verdict. In stratum h of N_h rows, n_h are
labelled, x_h of them with the event the rate counts. The rate is the share of events among all N rows:

    estimate = sum_h (x_h + (N_h - n_h) * x_h / n_h) / N

Labelled rows count with their label; unlabelled rows by their stratum's labelled share (a stratum with no
label counts its ``fallback`` share, the scorer's verdict). With labels drawn at random within each stratum
this is unbiased, and the finite-population correction (1 - n_h / N_h) is exact: a stratum labelled in full
has no uncertainty left.

The interval (``rate_interval``) carries only the sampling of the labels, never an assumption about the
scorer. Wald intervals fail here: a stratum labelled 0/n_h or n_h/n_h has a zero variance estimate, and such
strata are the common case (a scorer is mostly right). Two constructions by simulation
(``research/verify_simulation.py``, docs/verified-verdicts.md):

- ``bayes``: each stratum's share gets a Beta(x_h + a, n_h - x_h + a) posterior (a = 1/2: Jeffreys) and
  its N_h - n_h unlabelled rows a Beta-binomial from it; the interval is the quantiles of the total;
- ``bounds`` (the default): the same, with the Clopper-Pearson pair of posteriors: the lower end is the
  2.5% quantile with Beta(x_h, n_h - x_h + 1) (no event left unseen when none was seen), the upper end
  the 97.5% quantile with Beta(x_h + 1, n_h - x_h). In one stratum these are the exact hypergeometric
  bounds; each end is conservative, so the pair covers at small n where the symmetric posterior does not
  (a stratum of 16 holding one rare event, 1 of 2 labelled an event, is where Jeffreys fails).
The total's distribution is the convolution of the strata's Beta-binomials, computed exactly: no draws,
no seed, the same interval on every call.

Allocation (``allocate``): minimise sum_g Var(rate_g) over the gated rates g, where Var(rate_g) =
sum_{h in g} V_h(n_h) / N_g^2 and V_h is the expected posterior variance of the events among stratum h's
unlabelled rows (``unlabelled_variance``) at a guessed share of events. For a share away from 0 and 1
this is Neyman's allocation (n_h ~ N_h S_h); near 0 or 1, where Neyman's S_h vanishes but the interval's
ends still carry about (N_h - n_h) / n_h rows, it keeps labelling large strata. Separable in n_h, so one
label at a time where it cuts the objective most, subject to a floor per non-empty stratum and to labels
already known.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from fractions import Fraction

INTERVALS = ("bounds", "bayes", "wald")


@dataclass(frozen=True)
class Stratum:
    """One stratum of a rate: ``size`` rows, ``labelled`` of them labelled, ``events`` of those with the
    event the rate counts; ``fallback`` is the share assumed for its unlabelled rows when none is labelled."""

    size: int
    labelled: int
    events: int
    fallback: float = 0.0

    def __post_init__(self):
        if not (0 <= self.events <= self.labelled <= self.size):
            raise ValueError(f"stratum counts out of order: events {self.events}, labelled {self.labelled}, "
                             f"size {self.size}")


@dataclass(frozen=True)
class StratifiedRate:
    estimate: float
    low: float
    high: float
    labelled: int
    size: int


def stratified_estimate(strata: list[Stratum]) -> float:
    """The stratified estimator (module doc); NaN for no rows. Summed in exact arithmetic and rounded once:
    in floats, 4 of 5 labelled events over 8 rows beside 17 of 18 is 0.8999999999999999, not 0.9, and a
    verified rate shown as 0.900 would fail a min threshold of 0.9."""
    size = sum(s.size for s in strata)
    if size == 0:
        return math.nan
    total = Fraction(0)
    for s in strata:
        share = Fraction(s.events, s.labelled) if s.labelled else Fraction(float(s.fallback))
        total += s.events + (s.size - s.labelled) * share
    return float(total / size)


def unlabelled_events_pmf(strata: list[Stratum], a: float, b: float):
    """The exact distribution of the number of events among all unlabelled rows (index k: P(k events)):
    per stratum, share ~ Beta(x + a, n - x + b) and its N - n unlabelled rows ~ Binomial given the share (a
    Beta-binomial), independent across strata, so the total is their convolution. A Beta parameter at 0
    is a point mass (share 0 with a = 0 and no event seen, share 1 with b = 0 and every label an event)."""
    import numpy as np
    from scipy.stats import betabinom

    total = np.ones(1)
    for s in strata:
        rest = s.size - s.labelled
        if rest == 0:
            continue
        alpha, beta = s.events + a, s.labelled - s.events + b
        if alpha <= 0:
            pmf = np.eye(1, rest + 1, 0)[0]  # no event among the rest
        elif beta <= 0:
            pmf = np.eye(1, rest + 1, rest)[0]  # every one of the rest an event
        else:
            pmf = betabinom.pmf(np.arange(rest + 1), rest, alpha, beta)
        total = np.convolve(total, pmf)
    return total


def pmf_bounds(pmf, tail: float) -> tuple[int, int]:
    """The central interval of a count's distribution with at most ``tail`` outside on each side, ends
    included when their tail is exactly ``tail`` (the conservative convention of exact intervals): the
    smallest k with P(K <= k) >= tail and the smallest k with P(K <= k) > 1 - tail."""
    import numpy as np

    cdf = np.cumsum(pmf)
    last = len(pmf) - 1
    low = int(min(np.searchsorted(cdf, tail - 1e-12, side="left"), last))
    high = int(min(np.searchsorted(cdf, 1 - tail + 1e-12, side="right"), last))
    return low, high


def rate_interval(strata: list[Stratum], *, confidence: float = 0.95, method: str = "bounds",
                  prior: float = 0.5) -> StratifiedRate:
    """The stratified estimate and its interval by ``method`` (module doc), computed exactly (no draws).
    ``prior`` is the ``bayes`` method's Beta parameter (0.5: Jeffreys)."""
    if method not in INTERVALS:
        raise ValueError(f"interval method must be one of {', '.join(INTERVALS)}, got {method!r}")
    size = sum(s.size for s in strata)
    labelled = sum(s.labelled for s in strata)
    estimate = stratified_estimate(strata)
    if size == 0:
        return StratifiedRate(math.nan, math.nan, math.nan, 0, 0)
    tail = (1 - confidence) / 2
    known = sum(s.events for s in strata)
    if method == "wald":
        from scipy.stats import norm

        var = 0.0
        for s in strata:
            if s.labelled > 1:
                p = s.events / s.labelled
                var += s.size ** 2 * (1 - s.labelled / s.size) * p * (1 - p) / (s.labelled - 1)
            elif s.labelled < s.size:
                var += s.size ** 2 * 0.25  # one label or none: the widest a share can vary
        half = norm.ppf(1 - tail) * math.sqrt(var) / size
        return StratifiedRate(estimate, max(0.0, estimate - half), min(1.0, estimate + half), labelled, size)
    if method == "bayes":
        low, high = pmf_bounds(unlabelled_events_pmf(strata, prior, prior), tail)
    else:
        low = pmf_bounds(unlabelled_events_pmf(strata, 0.0, 1.0), tail)[0]
        high = pmf_bounds(unlabelled_events_pmf(strata, 1.0, 0.0), tail)[1]
    low, high = (known + low) / size, (known + high) / size
    # The estimate lies inside by construction except through a stratum with no label, whose fallback may
    # sit where the other strata's ends do not reach; keep the interval around it.
    return StratifiedRate(estimate, min(low, estimate), max(high, estimate), labelled, size)


def unlabelled_variance(size: int, labelled: int, share: float) -> float:
    """The expected variance of the number of events among a stratum's unlabelled rows once ``labelled``
    of its ``size`` rows are labelled, if about ``share`` of them are events: under the uniform prior the
    share's posterior is Beta(s n + 1, (1 - s) n + 1), and U = size - labelled rows are drawn from it, so
    Var = U E[theta (1 - theta)] + U^2 Var(theta). Unlike Neyman's S_h^2 / n_h it does not vanish for a
    share near 0 or 1: a stratum where no error was seen in n labels still leaves about U / n rows
    unknown, which is what the interval's ends carry."""
    rest = size - labelled
    if rest <= 0:
        return 0.0
    a, b = share * labelled + 1.0, (1.0 - share) * labelled + 1.0
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    return rest * (mean * (1 - mean) - var) + rest * rest * var


def allocate(total: int, sizes: list[int], cost, *, lower: list[int] | None = None, floor: int = 0,
             take_all: int = 0) -> list[int]:
    """Labels per stratum, summing to ``total`` (or to every row, when fewer), minimising
    sum_h cost(h, n_h) (the module doc's objective; ``cost`` is decreasing in n). Each non-empty stratum
    first gets min(floor, size) labels (as the budget allows, round-robin so that small budgets still reach
    every stratum) and never fewer than ``lower`` (labels it already has, which count toward ``total``).
    Then strata of at most ``take_all`` rows are labelled in full, smallest first, while the budget
    allows: a small stratum is cheap to rid of all uncertainty, and it is where the scorer's unusual
    verdicts (a rare refusal) are, whose spread a guess knows least. The rest goes one label at a time
    where it cuts the cost most (optimal for costs convex in n). Deterministic: ties go to the lower index."""
    k = len(sizes)
    lower = list(lower or [0] * k)
    if len(lower) != k:
        raise ValueError("sizes and lower must have one entry per stratum")
    if any(not 0 <= lo <= n for lo, n in zip(lower, sizes)):
        raise ValueError("a stratum's known labels must be between 0 and its size")
    alloc = list(lower)
    budget = min(total, sum(sizes)) - sum(alloc)
    for _ in range(floor):  # the floor, one round at a time: a budget short of it spreads as far as it goes
        for h in sorted(range(k), key=lambda i: (-cost(i, alloc[i]), i)):
            if budget <= 0:
                break
            if alloc[h] < min(floor, sizes[h]):
                alloc[h] += 1
                budget -= 1
    for h in sorted(range(k), key=lambda i: (sizes[i], i)):
        rest = sizes[h] - alloc[h]
        if 0 < sizes[h] <= take_all and 0 < rest <= budget:
            alloc[h] += rest
            budget -= rest

    def gain(h: int) -> float:  # how much one more label in h cuts the objective
        return cost(h, alloc[h]) - cost(h, alloc[h] + 1)

    heap = [(-gain(h), h) for h in range(k) if alloc[h] < sizes[h]]
    heapq.heapify(heap)
    while budget > 0 and heap:
        _, h = heapq.heappop(heap)
        alloc[h] += 1
        budget -= 1
        if alloc[h] < sizes[h]:
            heapq.heappush(heap, (-gain(h), h))
    return alloc
