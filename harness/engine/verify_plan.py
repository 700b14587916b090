"""Which replies to ask a person to label, and in which order: flips first, then a stratified draw whose
allocation makes the verified rates' intervals narrowest (``harness.core.stratified.allocate``).

Why stratify by the scorer's verdict: the verified rate is uncertain only where the scorer may be wrong,
and how often it is wrong differs by verdict (a scorer that misses two thirds of a model's refusals is
wrong in its "compliance" pile and nearly never in its "refusal" pile). Neyman's allocation puts labels
where the standard deviation of the human label within the stratum is largest. That deviation is guessed
from the scorer's error rates for this behaviour (a model like those labelled, ``harness.scoring.
transport``) and the stratum's scored share, then moved by the labels the stratum already has
(``PRIOR_LABELS`` pseudo-labels of the guess). A floor of labels per non-empty stratum keeps a wrong guess
from leaving a stratum unlabelled, where only the widest interval is honest.

Rows already labelled (``known``, e.g. by the label store, from any earlier run) count toward their
stratum's allocation and are not offered again. Flips of a baseline gate decide its McNemar test, so they
come first, each once with both replies; they form strata of their own (a flip is likelier a scorer error
than its neighbours, so it must not stand for them). The rest are shuffled across strata with the seed, so
the order shows nothing of the scorer's verdicts.
"""

from __future__ import annotations

from typing import Mapping

from harness.core.records import JUDGE_ERROR, is_refusal
from harness.core.stratified import allocate, unlabelled_variance
from harness.engine.verify_rows import VerifyRow, gates_of, strata_of

FLOOR = 2  # labels per non-empty stratum, as the budget allows
PRIOR_LABELS = 4.0  # weight of the scorer-based guess of a stratum's error share, in labels
GENERIC_ERROR = 0.15  # the guess when no error rates are given: a scorer wrong on about one reply in seven
SHARE_CLIP = (0.001, 0.999)  # a stratum's guessed error share never quite 0: a guess is not a label
GUESS_DRAWS = 2000


def _clip(p: float) -> float:
    return min(max(p, SHARE_CLIP[0]), SHARE_CLIP[1])


def guessed_error_share(verdict: str, scored_refusal_share: float, rates) -> float:
    """P(the person disagrees with the scorer's verdict) in a stratum, from the scorer's sensitivity and
    specificity (``rates``, or None for a generic guess) and the scored refusal share of its rows. With
    rates that draw a new model's sensitivity and specificity (``TransportRates``), the share is averaged
    over those draws: a model unlike the labelled ones is then allowed for, not just the typical one."""
    import numpy as np

    if verdict == JUDGE_ERROR:
        return 0.5
    if rates is None:
        return GENERIC_ERROR
    if hasattr(rates, "draws"):
        rng = np.random.default_rng(0)
        se, sp = rates.draws("sensitivity", GUESS_DRAWS, rng), rates.draws("specificity", GUESS_DRAWS, rng)
    else:
        se, sp = np.asarray([float(rates.sensitivity)]), np.asarray([float(rates.specificity)])
    youden = se + sp - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(youden > 0, (scored_refusal_share + sp - 1) / youden, scored_refusal_share)
    p = np.clip(p, *SHARE_CLIP)
    if verdict == "refusal":
        wrong, right = (1 - sp) * (1 - p), se * p
    else:
        wrong, right = (1 - se) * p, sp * (1 - p)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(wrong + right > 0, wrong / (wrong + right), 0.5)
    return float(share.mean())


def human_disagrees(verdict: str, label: str) -> bool:
    return verdict == JUDGE_ERROR or (verdict == "refusal") != is_refusal(label)


def plan_review(rows: list[VerifyRow], thresholds: dict[str, dict[str, float]], n: int, *, seed: int = 0,
                known: Mapping[str, str] = {}, error_rates: Mapping[str, object] | None = None,
                floor: int = FLOOR) -> list[VerifyRow]:
    """The rows to offer, in order (module doc): flips first, then the allocated draw, at most ``n`` rows.
    ``error_rates`` maps an expected behaviour ("refuse", "comply") to the scorer's rates for it (an object
    with ``sensitivity`` and ``specificity``) to guess each stratum's spread; without it a generic guess.
    Deterministic for a seed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    gates = gates_of(thresholds)
    strata = strata_of(rows, gates)
    offered_keys: set[str] = set()

    flips, seen = [], set()
    for key in sorted(strata):
        for row in strata[key]:
            if row.is_flip and row.key not in seen and not (row.key in known and row.baseline_key in known):
                seen.add(row.key)
                flips.append(row)
    flips = [flips[i] for i in rng.permutation(len(flips))][: max(n, 0)]
    offered_keys.update(r.key for r in flips)

    # Gated row sets (suite, category, expected): a stratum's weight sums 1 / N_g^2 over those it is part of.
    groups = {(g.suite, g.category, g.expected): g for g in gates}
    group_sizes = {gk: sum(1 for rs in strata.values() for r in rs if g.holds(r)) for gk, g in groups.items()}
    scored_share = {}
    for rs in strata.values():
        for r in rs:
            tally = scored_share.setdefault((r.suite, r.expected), [0, 0])
            tally[0] += r.verdict == "refusal"
            tally[1] += 1

    keys, sizes, shares, scales, lower = list(strata), [], [], [], []
    for key in keys:
        members = strata[key]
        suite, _, expected, verdict, is_flip = key
        labelled = [r for r in members if r.key in known]
        taken = sum(1 for r in members if r.key in offered_keys and r.key not in known)
        low = len(labelled) + taken
        share = scored_share[(suite, expected)]
        guess = guessed_error_share(verdict, share[0] / share[1],
                                    (error_rates or {}).get(expected) if error_rates else None)
        wrong = sum(human_disagrees(verdict, known[r.key]) for r in labelled)
        shares.append(_clip((guess * PRIOR_LABELS + wrong) / (PRIOR_LABELS + len(labelled))))
        scales.append(sum(1.0 / group_sizes[gk] ** 2 for gk, g in groups.items() if members and g.holds(members[0])))
        sizes.append(low if is_flip else len(members))  # flips: only those offered above
        lower.append(low)

    def cost(h: int, labels: int) -> float:
        return scales[h] * unlabelled_variance(len(strata[keys[h]]), labels, shares[h])

    budget = max(n, 0) - len(flips)
    open_strata = sum(1 for key, size, low in zip(keys, sizes, lower) if not key[-1] and size > low)
    take_all = max(floor, budget // open_strata) if open_strata else 0  # a fair share of the budget, at least
    alloc = allocate(sum(lower) + budget, sizes, cost, lower=lower, floor=floor, take_all=take_all)

    drawn = []
    for key, target, low in zip(keys, alloc, lower):
        want = target - low
        if want <= 0:
            continue
        members = strata[key]
        for i in rng.permutation(len(members)):
            row = members[i]
            if want == 0:
                break
            if row.key in known or row.key in offered_keys:
                continue
            drawn.append(row)
            offered_keys.add(row.key)
            want -= 1
    drawn = [drawn[i] for i in rng.permutation(len(drawn))]
    return flips + drawn
