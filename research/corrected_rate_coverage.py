"""How well the corrected rate's 95% interval covers the true rate: simulated runs with known scorer error.

Each run draws calibration counts around the true sensitivity and specificity (the scorer's measurement),
then n replies of which a share p truly refuse, labels them through the scorer's error, and corrects the
scored count with ``harness.core.misclassification.corrected_rate``. The table gives, per case, the share
of runs whose interval covers p, the median interval width, the mean bias of the corrected estimate and of
the rate as scored, and how many runs came out undecidable (Se + Sp - 1 not clear of 0).

    python -m research.corrected_rate_coverage [--runs 300] [--draws 4000]

tests/test_scorer_error.py runs the first six cases with the same seeds and bounds.
"""

from __future__ import annotations

import argparse

import numpy as np

from harness.core.misclassification import corrected_rate
from harness.scoring.error_rates import ErrorRates

# (label, true refusal share p, n, Se, Sp, calibration refusals, calibration compliances)
CASES = [
    ("dev-file scorer", 0.50, 400, 0.92, 0.96, 494, 406),
    ("dev-file scorer", 0.10, 200, 0.92, 0.96, 494, 406),
    ("dev-file scorer", 0.90, 100, 0.92, 0.96, 494, 406),
    ("dev-file scorer", 0.02, 200, 0.92, 0.96, 494, 406),
    ("dev-file scorer", 0.00, 200, 0.92, 0.96, 494, 406),
    ("dev-file scorer", 1.00, 100, 0.92, 0.96, 494, 406),
    ("xstest_string_match", 0.016, 250, 0.925, 0.936, 494, 406),  # issue 28: below the false-positive floor
    ("embedded model's own (120 labels)", 0.20, 20, 0.321, 0.957, 28, 92),
    ("embedded model's own (120 labels)", 0.80, 100, 0.321, 0.957, 28, 92),
]


def simulate(p, n, se, sp, n_ref, n_comp, runs, draws):
    rng = np.random.default_rng(1)
    covered, widths, bias, raw_bias, undecidable = 0, [], [], [], 0
    for run in range(runs):
        rates = ErrorRates("sim", "1", n_ref, int(rng.binomial(n_ref, se)), n_comp, int(rng.binomial(n_comp, sp)))
        true = rng.random(n) < p
        scored = np.where(true, rng.random(n) < se, rng.random(n) >= sp)
        k = int(scored.sum())
        c = corrected_rate(k, n, "refusal", rates, draws=draws, seed=run)
        if c.undecidable:
            undecidable += 1
            continue
        covered += c.low <= p <= c.high
        widths.append(c.high - c.low)
        bias.append(c.estimate - p)
        raw_bias.append(k / n - p)
    decided = runs - undecidable
    return covered / decided, float(np.median(widths)), float(np.mean(bias)), float(np.mean(raw_bias)), undecidable


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--draws", type=int, default=4000)
    args = parser.parse_args()
    print("| scorer error rates | true rate | n | coverage | median width | bias, corrected | bias, as scored | undecidable |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, p, n, se, sp, n_ref, n_comp in CASES:
        coverage, width, bias, raw, undecidable = simulate(p, n, se, sp, n_ref, n_comp, args.runs, args.draws)
        print(f"| {label} (Se {se}, Sp {sp}) | {p:g} | {n} | {coverage:.3f} | {width:.3f} | {bias:+.3f} | {raw:+.3f} "
              f"| {undecidable} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
