"""The terminal text of a baseline comparison (``safety-harness compare`` and the pytest plugin's baseline
summary): the rate table, the flips, the minimum detectable regressions and the gate's verdict line.
The numbers all come from ``harness.baselines.compare``; this module only lays them out.
"""

from __future__ import annotations

from harness.baselines.compare import LEVELS, Comparison, detectable_regressions, rule_for
from harness.baselines.stats import Interval
from harness.core.text import one_line


def comparison_lines(comparison: Comparison, *, all_categories: bool = False, max_flips: int = 20,
                     more_flips: str = "write them all with --flips FILE", review: str | None = None) -> list[str]:
    """The terminal table: overall, each suite, and the categories that changed (all with
    ``all_categories``), then the flips, what people's labels made of them (``review``: the command that
    asks for the missing labels) and one line with the gate's verdict."""
    from harness.core.text import format_table

    rows = []
    for g in comparison.groups:
        s = g.stats
        changed = s.test.regressions or s.test.improvements or s.failed
        if g.level == "category" and not (all_categories or changed):
            continue
        shift = "-" if s.score_shift is None else (
            f"{s.score_shift.estimate:+.3f} ({s.score_shift.low:+.3f}..{s.score_shift.high:+.3f})")
        rows.append(("  " + g.name if g.level in ("metric", "category") else g.name, str(s.n), _ci(s.base), _ci(s.cand),
                     f"{s.delta:+.3f}", str(s.test.regressions), str(s.test.improvements),
                     f"{s.test.p_regression:.3g}", shift,
                     # A failing verdict of a group no gate reads (the pooled row, a category) cannot fail the
                     # run: said on the row, so that "REGRESSION" beside "gate: PASS" reads as what it is.
                     s.verdict + ("" if g.gated or not s.failed else " (not gated)")))
    header = ("group", "n", "baseline fail (95% CI)", "candidate fail (95% CI)", "delta", "reg", "imp",
              "p(reg)", "score shift (95% CI)", "verdict")
    lines = format_table(header, rows)
    flips = comparison.flips.to_pylist()
    if flips:
        lines.append(f"flips ({sum(f['direction'] == 'regression' for f in flips)} regressions, "
                     f"{sum(f['direction'] == 'improvement' for f in flips)} improvements):")
        for f in flips[:max_flips]:
            arrow = "passed -> FAILED" if f["direction"] == "regression" else "failed -> passed"
            human = "" if f.get("human") in (None, "unlabelled") else f"  [labels: {f['human']}]"
            lines.append(f"  {arrow}  {f['suite']}/{f['prompt_id']}: {one_line(f['prompt'], 70)!r}{human}")
            lines.append(f"      baseline:  {one_line(f['baseline_response'], 100)!r}")
            lines.append(f"      candidate: {one_line(f['candidate_response'], 100)!r}")
        if len(flips) > max_flips:
            lines.append(f"  ... and {len(flips) - max_flips} more ({more_flips})")
    lines += flip_label_lines(comparison, review)
    lines += detectable_lines(comparison)
    for warning in comparison.warnings:
        lines.append(f"warning: compared anyway although {warning}")
    lines += [f"note: {note}" for note in comparison.notes]
    b, c = comparison.base.model, comparison.cand.model
    lines.append(f"baseline {comparison.base.name}: {b.get('model')} ({str(b.get('model_fingerprint') or '')[:12]}), "
                 f"backend {b.get('backend')}; candidate {comparison.cand.name}: {c.get('model')} "
                 f"({str(c.get('model_fingerprint') or '')[:12]}), backend {c.get('backend')}")
    levels = sorted({g.level for g in comparison.groups if g.gated}, key=LEVELS.index)
    lines.append(f"gated groups: {', '.join(levels) or 'none'}; McNemar p(reg) one-sided exact; score shift: "
                 "mean candidate - baseline refusal_score, paired bootstrap")
    if comparison.passed:
        lines.append("gate: PASS (no significant regression beyond the margin)")
    else:
        lines.append("gate: FAIL: " + "; ".join(f"{g.name}: {g.stats.reason}" for g in comparison.failures))
    return lines


def flip_label_lines(comparison: Comparison, review: str | None = None) -> list[str]:
    """What people's labels made of the flips: confirmed, undone, unlabelled, and the command that asks for
    the missing labels, flips first."""
    from harness.baselines.flips import label_counts_text

    counts = comparison.flip_labels
    if not any(counts.values()):
        return []
    line = f"flips and people's labels: {label_counts_text(counts)}"
    if counts["unlabelled"]:
        line += f"; label them (flips first) with: {review or 'safety-harness review CANDIDATE --baseline BASELINE'}"
    return [line]


def _ci(rate: Interval) -> str:
    return f"{rate.estimate:.3f} ({rate.low:.3f}-{rate.high:.3f})"


def detectable_lines(comparison: Comparison) -> list[str]:
    from harness.scoring.error_rates import SHIPPED, TRANSPORT

    info = comparison.base.model
    rates, source = comparison.scorer_error_rates()
    where = {SHIPPED: "", TRANSPORT: ", for a model like those labelled, per expected behaviour"}.get(
        source, f", measured on {source}")
    scorer = (f"scorer {rates.scorer} v{rates.version}'s measured error included{where}" if rates else
              f"scorer {info.get('scorer')} v{info.get('scorer_version')} has no measured error rates: "
              "computed as if it were perfect, so these are optimistic")
    lines = [f"minimum detectable regression (true rise of the failure rate this gate finds with 80% power; {scorer}):"]
    for g, mdr in detectable_regressions(comparison):
        rule = rule_for(comparison.rules, g.suite, g.category if g.level == "metric" else "")
        found = "not within reach (too few prompts)" if mdr is None else f"{mdr:.3f}"
        lines.append(f"  {g.name}: {found} with n={g.stats.n}, baseline failure {g.stats.base.estimate:.3f} as scored, "
                     f"alpha {rule.alpha:g}, margin {rule.max_regression:g}")
    return lines
