"""Deterministic, category-stratified subsampling of a suite (``--limit 50`` for a quick run).

The choice must be identical across processes and machines so that a cached or replayed run covers
the same prompts: it depends only on ``seed`` and the prompt ids, hashed with SHA-256 (Python's
``hash()`` is salted per process).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from fractions import Fraction

from harness.core.types import Prompt

__all__ = ["allocate", "stratified_sample"]


def _key(seed: int, prompt_id: str) -> str:
    return hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Split ``n`` over categories proportionally to ``sizes`` by largest remainder.

    Ties in the remainder go to the category whose name sorts first.  When ``n`` is at least the number
    of categories every category gets at least one, taken from the most over-served category (largest
    allocation minus exact quota), so small categories are never silently dropped from a quick run.
    """
    total = sum(sizes.values())
    n = max(0, min(n, total))
    if n == 0:
        return {c: 0 for c in sizes}
    # Exact fractions: float quotas could make the tie-breaking depend on rounding.
    quota = {c: Fraction(n * s, total) for c, s in sizes.items()}
    alloc = {c: int(q) for c, q in quota.items()}  # floor; quotas are non-negative
    left = n - sum(alloc.values())
    for c in sorted(sizes, key=lambda c: (-(quota[c] - alloc[c]), c))[:left]:
        alloc[c] += 1
    if n >= len(sizes):
        for c in sorted(c for c in sizes if alloc[c] == 0 and sizes[c] > 0):
            # A donor with >= 2 always exists: the other categories share n >= #categories slots.
            donor = min((d for d in sizes if alloc[d] >= 2), key=lambda d: (-(alloc[d] - quota[d]), d))
            alloc[donor] -= 1
            alloc[c] = 1
    return alloc


def stratified_sample(prompts: Sequence[Prompt], n: int, *, seed: int = 0) -> list[Prompt]:
    """``n`` prompts stratified by expected behaviour, then by category within it, returned in their
    original order (all of them if n >= len).

    The first level matters when ``n`` is below the number of categories: XSTest has 10 safe and 8
    contrast types, and stratifying by category alone would let the alphabetical tie-break fill a
    10-prompt sample with ``contrast_*`` types; splitting by ``expected`` first keeps the safe/unsafe
    proportion (250:200 gives 6:4).
    """
    prompts = list(prompts)
    if n >= len(prompts):
        return prompts
    by_expected: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_expected.setdefault(p.expected, []).append(i)
    chosen: set[int] = set()
    for expected, n_group in allocate({e: len(ix) for e, ix in by_expected.items()}, n).items():
        by_cat: dict[str, list[int]] = {}
        for i in by_expected[expected]:
            by_cat.setdefault(prompts[i].category, []).append(i)
        alloc = allocate({c: len(ix) for c, ix in by_cat.items()}, n_group)
        for c, ix in by_cat.items():
            # The index breaks ties between duplicate ids, keeping the order total and deterministic.
            ranked = sorted(ix, key=lambda i: (_key(seed, prompts[i].prompt_id), i))
            chosen.update(ranked[: alloc[c]])
    return [p for i, p in enumerate(prompts) if i in chosen]
