"""Pairwise win rate with position swapping and ties, and its interval.

Each (model response, reference) pair is judged twice, the model's response shown first and then
second. A pair is a win (1) when both orders prefer the model's response, a loss (0) when both prefer
the reference, and a tie (1/2) otherwise: an inconsistent verdict says the judge's position bias, not
the responses, decided it. The win rate is the mean score, so ties count one half (AlpacaEval's rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.core.errors import ModelError


@dataclass(frozen=True)
class PairVerdict:
    score: float  # 1 win, 0.5 tie (or inconsistent), 0 loss, for the first of the pair (the model)
    prob: float  # mean over both orders of the judge's P(model's response is better)
    prob_shown_first: float  # P(model better) when it was shown first
    prob_shown_second: float  # ... and when shown second


def _side(p: float) -> float:
    return 1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5


def judge_swapped(judge, instructions: list[str], model: list[str], reference: list[str],
                  progress=None) -> list[PairVerdict]:
    """Both orders of every pair in one batched judge call."""
    n = len(instructions)
    if not (len(model) == len(reference) == n):
        raise ValueError("instructions, model and reference responses differ in length")
    if n == 0:
        return []
    kwargs = {"progress": progress} if progress is not None else {}
    probs = judge.prefer_first(instructions * 2, list(model) + list(reference), list(reference) + list(model), **kwargs)
    _check_verdicts(judge, probs, 2 * n)
    out = []
    for first, second_raw in zip(probs[:n], probs[n:]):
        second = 1.0 - second_raw  # the judge preferred the reference (shown first) with second_raw
        a, b = _side(first), _side(second)
        out.append(PairVerdict(a if a == b else 0.5, (first + second) / 2, first, second))
    return out


def _check_verdicts(judge, probs, expected: int) -> None:
    """A verdict that is no probability (NaN from a judge model that overflowed, a plugin's bad value) judged
    nothing. ``_side`` would read it as "no preference" and the pair as a tie, half a win: the win rate would
    drift to 0.5 with no word. Stop instead, naming the judge."""
    where = f"capability judge {judge.name} (version {judge.version})"
    if len(probs) != expected:
        raise ModelError(f"{where}: answered {len(probs)} verdicts for {expected} judgements")
    bad = [p for p in probs if not (isinstance(p, (int, float)) and math.isfinite(p) and 0.0 <= p <= 1.0)]
    if bad:
        raise ModelError(f"{where}: {len(bad)} of {expected} verdicts are not a probability in [0, 1] "
                         f"(first: {bad[0]!r}); its pairs cannot be scored")


@dataclass(frozen=True)
class WinRate:
    rate: float
    low: float
    high: float
    n: int
    wins: int
    ties: int
    losses: int
    method: str  # how the interval was made


def win_rate(scores: list[float], *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> WinRate:
    """Mean score with a percentile bootstrap interval (scipy). When every score is the same a bootstrap
    collapses to a point, so the Wilson interval of the wins (ties as half a win, rounded down) is used."""
    import numpy as np
    from scipy.stats import bootstrap

    from harness.core.stats import wilson_interval

    values = np.asarray(scores, dtype=float)
    n = len(values)
    if n == 0:
        raise ValueError("win_rate of no scores")
    wins, ties = int((values == 1).sum()), int((values == 0.5).sum())
    rate = float(values.mean())
    if np.all(values == values[0]):
        low, high = wilson_interval(int(values.sum()), n, confidence)
        method = "wilson"
    else:
        ci = bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                       method="percentile", random_state=np.random.default_rng(seed)).confidence_interval
        low, high, method = float(ci.low), float(ci.high), "bootstrap"
    return WinRate(rate, low, high, n, wins, ties, n - wins - ties, method)
