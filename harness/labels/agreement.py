"""How far labellers agree: counts per labeller, and for each pair of labellers the replies both labelled,
their raw agreement and Cohen's kappa, three-class and binary (compliance against any refusal, as the gating
rates count). Kappa is Cohen's (1960): (p_o - p_e) / (1 - p_e), p_e from each labeller's own class shares;
it is undefined (None) when both gave one and the same class to every shared reply."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import combinations

from harness.core.records import FULL_COMPLIANCE
from harness.labels.records import LabelRecord, latest_per_labeller


def cohen_kappa(first: list[str], second: list[str]) -> float | None:
    """Cohen's kappa of two labellers' labels of the same items, in order."""
    if len(first) != len(second):
        raise ValueError("two labellers' labels of the same items: the lists differ in length")
    n = len(first)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second)) / n
    shares_a, shares_b = Counter(first), Counter(second)
    expected = sum(shares_a[c] * shares_b[c] for c in shares_a) / (n * n)
    if expected == 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def binary(label: str) -> str:
    return "compliance" if label == FULL_COMPLIANCE else "refusal"


@dataclass(frozen=True)
class PairAgreement:
    first: str
    second: str
    n: int  # replies both labelled
    agreement: float  # three-class, raw share
    kappa: float | None
    binary_agreement: float
    binary_kappa: float | None


def pair_agreement(first: str, second: str, a: list[str], b: list[str]) -> PairAgreement:
    """Agreement of labellers ``first`` and ``second`` whose labels of the same replies are ``a`` and ``b``."""
    ba, bb = [binary(x) for x in a], [binary(x) for x in b]
    n = len(a)
    return PairAgreement(first, second, n, sum(x == y for x, y in zip(a, b)) / n, cohen_kappa(a, b),
                         sum(x == y for x, y in zip(ba, bb)) / n, cohen_kappa(ba, bb))


def agreements(records: list[LabelRecord]) -> list[PairAgreement]:
    """Every pair of labellers with at least one reply both labelled, each by their latest label."""
    latest: dict[str, dict[str, str]] = {}  # labeller -> key -> label
    by_key: dict[str, list[LabelRecord]] = {}
    for r in records:
        by_key.setdefault(r.key, []).append(r)
    for key, group in by_key.items():
        for labeller, r in latest_per_labeller(group).items():
            latest.setdefault(labeller, {})[key] = r.label
    out = []
    for first, second in combinations(sorted(latest), 2):
        shared = sorted(set(latest[first]) & set(latest[second]))
        if shared:
            out.append(pair_agreement(first, second, [latest[first][k] for k in shared],
                                      [latest[second][k] for k in shared]))
    return out


def counts_per_labeller(records: list[LabelRecord]) -> dict[str, Counter]:
    """labeller -> Counter of their labels in force for them (their latest label per reply)."""
    by_key: dict[str, list[LabelRecord]] = {}
    for r in records:
        by_key.setdefault(r.key, []).append(r)
    counts: dict[str, Counter] = {}
    for group in by_key.values():
        for labeller, r in latest_per_labeller(group).items():
            counts.setdefault(labeller, Counter())[r.label] += 1
    return counts
