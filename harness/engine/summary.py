"""The terminal summary of a finished session: one line per threshold check, then the capability lines,
the skipped suites, the model and the generation statistics."""

from __future__ import annotations

from harness.engine.capability import summary_lines as capability_lines
from harness.core.text import format_table


def summary_rows(session) -> list[tuple[str, ...]]:
    rows = []
    for name, result in sorted(session.results.items()):
        checks = result.checks()
        if not checks:
            rows.append((name, str(len(result.rows)), "-", "-", "-", "-", "no threshold"))
        for check in checks:
            r = check.rate
            rows.append((
                name,
                str(r.n),
                r.metric,
                f"{r.rate:.3f}",
                f"{r.low:.3f}-{r.high:.3f}",
                f"{check.bound} {check.threshold:g}",
                "PASS" if check.passed else "FAIL",
            ))
    return rows


def summary_lines(session, report_path=None) -> list[str]:
    header = ("suite", "n", "metric", "rate", "95% CI", "threshold", "verdict")
    lines = format_table(header, summary_rows(session)) if session.results else []
    lines += capability_lines(session)
    for name, why in sorted(session.missing.items()):
        lines.append(f"{name}: skipped, {why}")
    s = session.stats
    info = session.model_info
    if info.as_dict():
        lines.append(
            f"model {info.model} ({(info.model_fingerprint or '')[:12]}), backend {info.backend}, "
            f"template {info.template}, scorer {info.scorer}"
        )
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
