"""The terminal summary of a finished session: one line per threshold check, then the capability lines,
the skipped suites, the model and the generation statistics."""

from __future__ import annotations

from harness.engine.capability import summary_lines as capability_lines
from harness.core.text import format_table
from harness.scoring.unseen import unseen_agreement_note


def summary_rows(session) -> list[tuple[str, ...]]:
    rows = []
    for name, result in sorted(session.results.items()):
        checks = result.checks()
        if not checks:
            rows.append((name, str(len(result.rows)), "-", "-", "-", "-", "-", "no threshold"))
        for check in checks:
            r = check.rate
            c = getattr(check, "corrected", None)
            rows.append((
                name,
                str(r.n),
                r.metric,
                f"{r.rate:.3f}",
                f"{r.low:.3f}-{r.high:.3f}",
                "-" if c is None else f"{c.estimate:.3f} ({c.low:.3f}-{c.high:.3f})",
                f"{check.bound} {check.threshold:g}",
                "PASS" if check.passed else "FAIL",
            ))
    return rows


THRESHOLD_ON_MEANING = {
    "estimate": "the rate as scored", "bound": "the far end of the rate's 95% Wilson interval, as scored",
    "corrected": "the rate corrected for scorer error", "corrected_bound": "the far end of the corrected rate's 95% interval",
}  # fmt: skip
SUMMARY_COLUMNS = ("suite", "n", "metric", "rate", "95% CI", "corrected (95% CI)", "threshold", "verdict")


def scorer_error_lines(session) -> list[str]:
    """Which rate the thresholds were held against, the scorer error rates behind the corrected column,
    and a warning for each threshold tighter than the scorer can decide."""
    from harness.config.thresholds import parse_threshold_key
    from harness.core.misclassification import unresolvable_threshold
    from harness.scoring.error_rates import correction_lines, rates_from_record

    info = session.model_info
    scorer, version = info.scorer or session.settings.scorer, info.scorer_version
    record = info.scorer_error_rates or {}
    rates = rates_from_record(record)
    on = session.settings.threshold_on
    what = THRESHOLD_ON_MEANING.get(on, on)
    lines = [f"thresholds checked on: {what} (threshold_on = {on})"] + correction_lines(record, scorer, version)
    if rates is None:
        return lines
    seen = set()
    for result in session.results.values():
        for check in result.checks():
            bound, metric = parse_threshold_key(check.key)
            why = unresolvable_threshold(bound, metric, check.threshold, rates)
            if why and why not in seen:
                seen.add(why)
                lines.append(f"warning: {result.name}: {why}")
    return lines


def summary_lines(session, report_path=None) -> list[str]:
    lines = format_table(SUMMARY_COLUMNS, summary_rows(session)) if session.results else []
    if any(result.checks() for result in session.results.values()):
        lines += scorer_error_lines(session)
    lines += capability_lines(session)
    from harness.engine.replica_run import summary_lines as replica_lines

    lines += replica_lines(session)  # --replicas: shards, and every replica fault and what was done about it
    for name, why in sorted(session.missing.items()):
        lines.append(f"{name}: skipped, {why}")
    s = session.stats
    info = session.model_info
    if info.as_dict():
        lines.append(
            f"model {info.model} ({(info.model_fingerprint or '')[:12]}), backend {info.backend}"
            + (f" ({info.dtype})" if info.dtype else "") + ", "
            f"template {info.template}, scorer {info.scorer}" + unseen_agreement_note(info.scorer_unseen_agreement)
        )
    sanity = session.extra_metadata.get("adapter_sanity") or {}
    if sanity.get("warning"):
        lines.append(f"warning: {sanity['warning']}")
    if info.judge_errors:
        lines.append(f"judge_error: {info.judge_errors} responses the judge could not classify, left out of every rate")
    if s.n_prompts:
        line = f"prompts {s.n_prompts}: generated {s.n_generated}, from cache {s.n_cached}"
        if s.n_generated == 0:
            line += " (nothing generated: every response came from the cache)"
        elif s.generation_seconds > 0:
            line += (f"; {s.n_response_tokens_generated} tokens in {s.generation_seconds:.1f} s "
                     f"({s.n_response_tokens_generated / s.generation_seconds:.1f} tokens/s)")
        lines.append(line)
    if report_path:
        lines.append(f"report: {report_path}")
    return lines
