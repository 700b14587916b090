"""Run and comparison summaries written as HTML or Markdown files beside the report."""

from __future__ import annotations

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
