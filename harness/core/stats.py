"""Binomial intervals, shared by thresholds, baselines, capability and reports."""

from __future__ import annotations


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)
