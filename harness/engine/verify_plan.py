"""Which replies to ask a person to label, and in which order: flips first, then a stratified draw whose
allocation makes the verified rates' intervals narrowest (``harness.core.stratified.allocate``).

Why stratify by the scorer's verdict: the verified rate is uncertain only where the scorer may be wrong,
and how often it is wrong differs by verdict (a scorer that misses two thirds of a model's refusals is
wrong in its "compliance" pile and nearly never in its "refusal" pile). The allocation puts labels where
they cut the gated rates' posterior variance most (``harness.core.stratified``), which needs each
stratum's share of scorer errors. That share is guessed from the scorer's error rates for this behaviour
(a model like those labelled, ``harness.scoring.transport``, averaged over their spread) and the scored
share of the stratum's rows, then moved by the labels the stratum already has (``PRIOR_LABELS``
pseudo-labels of the guess). A floor of labels per non-empty stratum keeps a wrong guess from leaving a
stratum unlabelled, where only the widest interval is honest, and small strata are taken whole.

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


def flips_to_offer(strata: dict, known: Mapping[str, str], n: int, rng) -> list[VerifyRow]:
    """Every flip not labelled on both sides, once, in a seeded order, at most n."""
    flips, seen = [], set()
    for members in strata.values():
        for row in members:
            if row.is_flip and row.key not in seen and not (row.key in known and row.baseline_key in known):
                seen.add(row.key)
                flips.append(row)
    return [flips[i] for i in rng.permutation(len(flips))][: max(n, 0)]


def stratum_costs(strata: dict, gates, known: Mapping[str, str], error_rates, error_share=None):
    """Per stratum (in ``strata``'s order): its guessed share of scorer errors, moved by the labels it has,
    and its weight in the objective (sum of 1 / N_g^2 over the gated rates g it is part of).
    ``error_share(verdict, members)``, when given, replaces the guess (research: an oracle that knows every
    label measures the best any allocation could do)."""
    groups = {(g.suite, g.category, g.expected): g for g in gates}  # rates over the same rows count once
    group_sizes = {gk: sum(1 for rs in strata.values() for r in rs if g.holds(r)) for gk, g in groups.items()}
    scored = {}  # (suite, expected) -> [scored refusals, rows]: its rows also weigh a category against its suite
    for rs in strata.values():
        for r in rs:
            tally = scored.setdefault((r.suite, r.expected), [0, 0])
            tally[0] += r.verdict == "refusal"
            tally[1] += 1
    shares, scales = [], []
    for (suite, _, expected, verdict, _), members in strata.items():
        refused, total = scored[(suite, expected)]
        if error_share is not None:
            shares.append(_clip(error_share(verdict, members)))
        else:
            guess = guessed_error_share(verdict, refused / total, (error_rates or {}).get(expected))
            labelled = [known[r.key] for r in members if r.key in known]
            wrong = sum(human_disagrees(verdict, label) for label in labelled)
            shares.append(_clip((guess * PRIOR_LABELS + wrong) / (PRIOR_LABELS + len(labelled))))
        scales.append(sum(_weight(gk, group_sizes, scored) / group_sizes[gk] ** 2
                          for gk, g in groups.items() if g.holds(members[0])))
    return shares, scales


def _weight(group: tuple, group_sizes: dict, scored: dict) -> float:
    """A gated rate's weight in the objective: 1 for a suite's; for a category's, its share of the suite's
    rows of that behaviour (``scored``: (suite, expected) -> [scored refusals, rows]), so that a suite's
    categories together weigh as the suite does. Unweighted, the many one- and two-row categories of a small
    run (1 / N_g^2 = 1 each) took the whole budget from the suites' large strata."""
    suite, category, expected = group
    if category is None:
        return 1.0
    return group_sizes[group] / max(scored.get((suite, expected), (0, 0))[1], group_sizes[group])


def plan_review(rows: list[VerifyRow], thresholds: dict[str, dict[str, float]], n: int, *, seed: int = 0,
                known: Mapping[str, str] = {}, error_rates: Mapping[str, object] | None = None,
                floor: int = FLOOR, error_share=None) -> list[VerifyRow]:
    """The rows to offer, in order (module doc): flips first, then the allocated draw, at most ``n`` rows.
    ``error_rates`` maps an expected behaviour ("refuse", "comply") to the scorer's rates for it (an object
    with ``sensitivity`` and ``specificity``, e.g. ``harness.scoring.transport.transport_by_expected``) to
    guess each stratum's spread; without it a generic guess. ``error_share``: see ``stratum_costs``.
    Deterministic for a seed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    gates = gates_of(thresholds)
    strata = strata_of(rows, gates)
    flips = flips_to_offer(strata, known, n, rng)
    offered = {r.key for r in flips}
    keys = list(strata)
    shares, scales = stratum_costs(strata, gates, known, error_rates, error_share)
    # A stratum's labels so far: known ones and the flips offered above. A flip stratum gets no more.
    lower = [sum(1 for r in strata[k] if r.key in known or r.key in offered) for k in keys]
    sizes = [low if k[-1] else len(strata[k]) for k, low in zip(keys, lower)]

    def cost(h: int, labels: int) -> float:
        return scales[h] * unlabelled_variance(len(strata[keys[h]]), labels, shares[h])

    budget = max(n, 0) - len(flips)
    open_strata = sum(1 for k, size, low in zip(keys, sizes, lower) if not k[-1] and size > low)
    if sum(max(min(floor, size) - low, 0) for size, low in zip(sizes, lower)) > budget:
        # Many small strata (per-category gates split a suite's): the full floor would take the whole budget
        # from the large strata the suites' rates rest on. One label each still leaves none unlabelled.
        floor = min(floor, 1)
    take_all = max(floor, budget // open_strata) if open_strata else 0  # a fair share of the budget, at least
    alloc = allocate(sum(lower) + budget, sizes, cost, lower=lower, floor=floor, take_all=take_all)

    drawn = []
    for key, target, low in zip(keys, alloc, lower):
        if target <= low:
            continue
        fresh = [strata[key][i] for i in rng.permutation(len(strata[key]))]
        for row in [r for r in fresh if r.key not in known and r.key not in offered][: target - low]:
            drawn.append(row)
            offered.add(row.key)
    return flips + [drawn[i] for i in rng.permutation(len(drawn))]
