"""The terminal summary table printed at the end of a pytest run."""

from __future__ import annotations


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


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return lines


def summary_lines(session, report_path=None) -> list[str]:
    header = ("suite", "n", "metric", "rate", "95% CI", "threshold", "verdict")
    lines = format_table(header, summary_rows(session)) if session.results else []
    from harness.engine.capability import summary_lines as capability_lines

    lines += capability_lines(session)
    from harness.backends.replicas import summary_lines as replica_lines

    lines += replica_lines(session)  # --replicas: shards, and every replica fault and what was done about it
    for name, why in sorted(session.missing.items()):
        lines.append(f"{name}: skipped, {why}")
    s = session.stats
    info = session.model_info
    if info:
        lines.append(
            f"model {info.get('model')} ({info.get('model_fingerprint', '')[:12]}), backend {info.get('backend')}, "
            f"template {info.get('template')}, scorer {info.get('scorer')}"
        )
    if info.get("judge_errors"):
        lines.append(f"judge_error: {info['judge_errors']} responses the judge could not classify, left out of every rate")
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


def write_run_summaries(subject, *, html=None, markdown=None) -> list[str]:
    """Write the HTML and/or Markdown summary of ``subject`` (a report path, a ``RunSummary`` or a
    ``Comparison``); returns "html: PATH" lines. One-line ``HarnessError`` when a file cannot be written."""
    from harness.baselines.compare import Comparison, RunSummary, summarize_run
    from harness.core.errors import HarnessError

    if not isinstance(subject, (Comparison, RunSummary)):
        subject = summarize_run(subject)
    lines = []
    try:
        if html:
            from harness.reports.html import write_html

            lines.append(f"html: {write_html(subject, html)}")
        if markdown:
            from harness.reports.markdown import write_markdown

            lines.append(f"markdown: {write_markdown(subject, markdown)}")
    except OSError as exc:
        raise HarnessError(f"cannot write {exc.filename or 'summary'}: {exc.strerror or exc}") from None
    return lines
