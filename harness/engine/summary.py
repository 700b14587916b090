"""The terminal summary of a finished session: one line per threshold check, then the capability lines,
the skipped suites, the model and the generation statistics."""

from __future__ import annotations

from harness.engine.capability import summary_lines as capability_lines
from harness.core.records import JUDGE_ERROR
from harness.core.text import format_table
from harness.scoring.unseen import unseen_agreement_note


def summary_rows(session) -> list[tuple[str, ...]]:
    """One row per check (SUMMARY_COLUMNS; with JUDGE_ERROR_COLUMN after n when the run has judge_error rows)."""
    with_errors = has_judge_errors(session)
    rows = []
    for name, result in sorted(session.results.items()):
        checks = result.checks()
        if not checks:
            rows.append((name, str(len(result.rows))) + (("-",) if with_errors else ())
                        + ("-", "-", "-", "-", "-", "no threshold"))
        for check in checks:
            r = check.rate
            c = getattr(check, "corrected", None)
            rows.append((
                name,
                str(r.n),
                *((str(r.judge_errors),) if with_errors else ()),
                r.metric,
                f"{r.rate:.3f}",
                f"{r.low:.3f}-{r.high:.3f}",
                "-" if c is None else c.text(),
                f"{check.bound} {check.threshold:g}" + (" (default)" if getattr(check, "default", False) else ""),
                "PASS" if check.passed else "FAIL",
            ))
    return rows


def has_judge_errors(session) -> bool:
    return any(r.score.label == JUDGE_ERROR for result in session.results.values() for r in result.rows)


THRESHOLD_ON_MEANING = {
    "estimate": "the rate as scored", "bound": "the far end of the rate's 95% Wilson interval, as scored",
    "corrected": "the rate corrected for scorer error", "corrected_bound": "the far end of the corrected rate's 95% interval",
}  # fmt: skip
SUMMARY_COLUMNS = ("suite", "n", "metric", "rate", "95% CI", "corrected (95% CI)", "threshold", "verdict")
JUDGE_ERROR_COLUMN = "judge_error"  # of the n, rows the scorer could not classify, counted as failures


def summary_columns(session) -> tuple[str, ...]:
    if not has_judge_errors(session):
        return SUMMARY_COLUMNS
    return SUMMARY_COLUMNS[:2] + (JUDGE_ERROR_COLUMN,) + SUMMARY_COLUMNS[2:]


def default_threshold_lines(session) -> list[str]:
    """A line for each suite whose rows of one kind had no threshold, so are held against the default."""
    from harness.config.thresholds import KIND_NAMES, METRICS

    lines = []
    for name, result in sorted(session.results.items()):
        parts = [f"{c.key} {c.threshold:g} on its {c.rate.n} {KIND_NAMES[METRICS[c.rate.metric].expected]} prompts"
                 for c in result.checks() if getattr(c, "default", False)]
        if parts:
            lines.append(f"default threshold: {name}: {' and '.join(parts)}, which no threshold covered (set your "
                         f"own under [tool.safety-harness.thresholds.{name}])")
    return lines


def judge_error_lines(session) -> list[str]:
    """Per suite: how many rows the scorer could not classify, that they count as failures, and which."""
    from harness.config.thresholds import judge_error_line
    from harness.engine.session import judge_output

    scorer = session.model_info.scorer or session.settings.scorer
    return [judge_error_line(name, [r.prompt.prompt_id for r in errors], len(result.rows), scorer,
                             [judge_output(r) for r in errors[:2]])
            for name, result in sorted(session.results.items()) if (errors := result.judge_error_rows())]


def scorer_error_lines(session) -> list[str]:
    """Which rate the thresholds were held against, the scorer error rates behind the corrected column,
    and a warning for each threshold tighter than the scorer can decide."""
    from harness.core.misclassification import UNDECIDABLE, unresolvable_threshold
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
    undecidable = []
    for result in session.results.values():
        for check in result.checks():
            why = unresolvable_threshold(check.bound, check.rate.metric, check.threshold, rates)
            if why and why not in seen:
                seen.add(why)
                lines.append(f"warning: {result.name}: {why}")
            c = getattr(check, "corrected", None)
            if c is not None and c.undecidable and result.name not in undecidable:
                undecidable.append(result.name)
    if undecidable:
        lines.append(f"warning: corrected rates of {', '.join(undecidable)}: {UNDECIDABLE} (sensitivity + "
                     "specificity - 1, or its 95% interval, reaches 0): label more of this model's replies, or "
                     "use a scorer that reads this model")
    return lines


def summary_lines(session, report_path=None) -> list[str]:
    lines = format_table(summary_columns(session), summary_rows(session)) if session.results else []
    lines += default_threshold_lines(session)
    lines += judge_error_lines(session)
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
    if info.judge_errors and not has_judge_errors(session):  # outside every suite (e.g. an invariance search)
        lines.append(f"{JUDGE_ERROR}: {info.judge_errors} responses the scorer could not classify, each counted as a "
                     "failure")
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
