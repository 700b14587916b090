"""Agreement of a pairwise judge with reference preferences (AlpacaEval's GPT-4 annotations).

Preferences and verdicts are coded as in AlpacaEval: 1.0 = output_1 better, 2.0 = output_2 better,
1.5 = tie. Two agreements are reported:

- ties excluded: over the pairs where both the reference annotator and the judge pick a side, the share
  where they pick the same one (with the share of pairs that count, ``coverage``);
- ties included: over all pairs, 1 for the same verdict (tie = tie included), 1/2 when exactly one of the
  two is a tie, 0 for opposite sides.

Both carry a percentile bootstrap interval over pairs (scipy).
"""

from __future__ import annotations

from dataclasses import dataclass


def verdict_from_score(score: float) -> float:
    """A swapped-judging score for output_1 (1 win, 0.5 tie, 0 loss) as a preference code."""
    return 1.0 if score == 1 else 2.0 if score == 0 else 1.5


@dataclass(frozen=True)
class Agreement:
    value: float
    low: float
    high: float
    n: int  # pairs counted

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


def _with_interval(values, confidence=0.95, seed=0) -> Agreement:
    import numpy as np
    from scipy.stats import bootstrap

    arr = np.asarray(values, dtype=float)
    if len(arr) == 0:
        return Agreement(float("nan"), float("nan"), float("nan"), 0)
    mean = float(arr.mean())
    if len(arr) < 2 or np.all(arr == arr[0]):
        return Agreement(mean, mean, mean, len(arr))
    ci = bootstrap((arr,), np.mean, confidence_level=confidence, n_resamples=2000, method="percentile",
                   random_state=np.random.default_rng(seed)).confidence_interval
    return Agreement(mean, float(ci.low), float(ci.high), len(arr))


def agreement(reference: list[float], judged: list[float]) -> dict:
    """``{"ties_excluded", "ties_included", "coverage"}`` for two lists of preference codes."""
    if len(reference) != len(judged):
        raise ValueError("reference and judged preferences differ in length")
    decisive = [(r, j) for r, j in zip(reference, judged) if r != 1.5 and j != 1.5]
    excluded = [1.0 if r == j else 0.0 for r, j in decisive]
    included = [1.0 if r == j else 0.5 if 1.5 in (r, j) else 0.0 for r, j in zip(reference, judged)]
    strict_reference = sum(1 for r in reference if r != 1.5)
    return {
        "ties_excluded": _with_interval(excluded),
        "ties_included": _with_interval(included),
        "coverage": len(decisive) / strict_reference if strict_reference else float("nan"),
    }
