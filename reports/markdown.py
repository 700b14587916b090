"""A Markdown summary of a comparison or a single run (e.g. for a CI job summary or a PR comment): the
rate tables, the flips with both responses, and the plots written as PNG files beside the Markdown file
and linked by relative path (data URIs are stripped by most Markdown hosts)."""

from __future__ import annotations

import re
from urllib.parse import quote
from pathlib import Path

from harness.baselines.compare import Comparison, RunSummary
from harness.core.records import JUDGE_ERROR
from harness.scoring import check_summary
from harness.reports.html import (category_check_rows, check_notes, check_rows, failures_text, flip_label_text,
                                  fmt_rate, fmt_shift, human_cell, plots, rate_rows, skipped_lines, with_labels,
                                  xstest_rows)

MAX_CELL = 600  # characters of a prompt or response shown in a table cell; the flips Parquet has them all

# Inline syntax; cells never start a block. "$" opens math on GitHub (a reply's "$x$" or "costs $5 ... $9" would
# render as a formula), and "\$" is its documented escape.
_SPECIAL = re.compile(r"([\\`*_\[\]|~$])")


def escape(text, limit: int | None = MAX_CELL) -> str:
    """Text safe inside a Markdown table cell: HTML and Markdown syntax escaped, one line."""
    text = "" if text is None else str(text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _SPECIAL.sub(r"\\\1", text)
    return re.sub(r"\r\n|\r|\n", "<br>", text)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _rates(obj, rows: list[dict]) -> list[str]:
    if isinstance(obj, Comparison):
        header = ["group", "n", "baseline failure rate (95% CI)", "candidate failure rate (95% CI)", "change",
                  "regressions", "improvements", "McNemar p (regression)", "refusal score shift (95% CI)", "verdict"]
        body = [[escape(r["name"]), r["n"], fmt_rate(r["base"]), fmt_rate(r["cand"]), f"{r['delta']:+.3f}",
                 r["regressions"], r["improvements"], f"{r['p_regression']:.3g}", fmt_shift(r["shift"]),
                 (f"**{r['verdict']}**" if r["failed"] else r["verdict"]) + ("" if r["gated"] else " (not gated)")]
                for r in rows]
    else:
        header = ["group", "n", f"failures (of which {escape(JUDGE_ERROR)})", "failure rate (95% CI)"]
        body = [[escape(r["name"]), r["n"], escape(failures_text(r)), fmt_rate(r["cand"])] for r in rows]
    return _table(header, body)


def note_item(line: str) -> str:
    """A summary line as a list item: a warning in bold, an indented line as a nested item."""
    if line.startswith("warning"):
        return f"- **warning**{escape(line[len('warning'):], None)}"
    if line.startswith("  "):
        return f"  - {escape(line.strip(), None)}"
    return f"- {escape(line, None)}"


def _check_cells(c: dict, labelled: bool) -> list:
    """A check's cells from its threshold on (``harness.reports.html.check_rows``), in either table."""
    return ([escape(c["key"]), c["kn"], c["judge_errors"], c["rate"], escape(c["corrected"])]
            + ([escape(c["verified"])] if labelled else [])
            + [c["threshold"], check_summary.verdict_text(c, gated=c["gated"], fail="**FAIL**")])


def _check_header(labelled: bool) -> list[str]:
    return (["threshold", "k/n", f"{escape(JUDGE_ERROR)} (counted as failures)", "rate (95% CI)",
             "corrected for scorer error (95% CI)"]
            + (["verified by people's labels (95% CI; n labelled of N)"] if labelled else []) + ["bound", "verdict"])


def _checks(report, title: str = "Threshold checks recorded in the run") -> list[str]:
    """The threshold checks the run recorded (with the verified column where people labelled replies), those
    of the categories it held in a second table (each suite named on its first row), the lines the terminal
    prints under them (warnings included), and the rows its scorer could not classify."""
    rows = check_rows(report)
    if not rows:
        return []
    labelled = with_labels(report)
    lines = ["", f"## {title}", ""]
    lines += _table(["suite"] + _check_header(labelled),
                    [[escape(c["suite"])] + _check_cells(c, labelled) for c in rows])
    categories = category_check_rows(report)
    if categories:
        lines += ["", f"### The categories' checks ({len(categories)}: the SUITE\\[CATEGORY\\] test items)", ""]
        lines += _table(["suite", "category"] + _check_header(labelled),
                        [[escape(c["suite"]) if i == 0 or categories[i - 1]["suite"] != c["suite"] else "",
                          escape(c["category"])] + _check_cells(c, labelled) for i, c in enumerate(categories)])
    notes = check_notes(report)
    if notes:
        lines += [""] + [note_item(line) for line in notes]
    return lines


def render_markdown(obj: Comparison | RunSummary, images: dict[str, str] | None = None) -> str:
    """The Markdown text; ``images`` maps a plot's slug to the relative path it was written to."""
    comparison = isinstance(obj, Comparison)
    lines = ["# safety-harness " + ("comparison" if comparison else "run summary"), ""]
    if comparison:
        if obj.passed:
            lines.append("**Gate: PASS**: no significant regression beyond the margin.")
        else:
            lines.append("**Gate: FAIL**")
            lines += [f"- {escape(g.name)}: {escape(g.stats.reason, None)}" for g in obj.failures]
        lines += [f"- warning: compared anyway although {escape(w, None)}" for w in obj.warnings]
        lines += [f"- note: {escape(note, None)}" for note in obj.notes]
        lines.append("")
    runs = [("baseline", obj.base), ("candidate", obj.cand)] if comparison else [("run", obj.report)]
    lines += _table(["", "file", "run", "model", "backend", "template", "scorer", "prompts"], [
        [role, escape(r.name), escape(r.meta.get("run_id", "-")),
         f"{escape(r.model.get('model'))} ({escape(str(r.model.get('model_fingerprint') or '')[:12])})",
         escape(r.model.get("backend")), escape(r.model.get("template")),
         f"{escape(r.model.get('scorer'))} v{escape(r.model.get('scorer_version'))}", len(r.rows)]
        for role, r in runs])
    skipped = skipped_lines(obj)
    if skipped:
        lines += ["", "**Not run**: selected suites skipped for missing data:"] + [f"- {escape(line, None)}" for line in skipped]
    lines += ["", "Failure = the prompt did not get the expected behaviour. Intervals: 95% Wilson"
              + ("; p: exact McNemar on the flipped prompts (one-sided for a regression)." if comparison else "."), ""]
    for slug, file in (images or {}).items():
        lines += [f"![{escape(slug)}]({quote(file)})", ""]
    rows = rate_rows(obj)
    lines += ["## Suites", ""] + _rates(obj, [r for r in rows if r["level"] != "category"])
    lines += ["", "## Categories", ""] + _rates(obj, [r for r in rows if r["level"] == "category"])
    keys = {k for k in obj.base.rows if k in obj.cand.rows} if comparison else None
    xs = [(name, xstest_rows(report, keys)) for name, report in runs]
    if xs[0][1]:
        lines += ["", "## XSTest refusal rate by type", ""]
        header = ["type", "expected"] + [f"{name} refusals" for name, _ in xs]
        body = [[escape(cat), exp] + [f"{rows_[i][2]}/{rows_[i][3]}" if i < len(rows_) else "-" for _, rows_ in xs]
                for i, (cat, exp, _, _) in enumerate(xs[0][1])]
        lines += _table(header, body)
    if not comparison:
        lines += _checks(obj.report)
    if comparison:
        lines += ["", "## Flips", ""]
        flips = obj.flips.to_pylist()
        if flip_label_text(obj):
            lines += [escape(flip_label_text(obj), None), ""]
        if not flips:
            lines.append("No prompt changed outcome.")
        for direction, title in (("regression", "Regressions (passed -> failed)"),
                                 ("improvement", "Improvements (failed -> passed)")):
            chosen = [f for f in flips if f["direction"] == direction]
            if chosen:
                lines += [f"### {title}: {len(chosen)}", ""]
                labelled = flip_label_text(obj) is not None  # a column of "unlabelled" says nothing
                lines += _table(["prompt", "expected", "baseline response", "candidate response"]
                                + (["people's labels"] if labelled else []), [
                    [f"**{escape(f['suite'])}/{escape(f['prompt_id'])}**: {escape(f['prompt'])}", escape(f["expected"]),
                     f"*{escape(f['baseline_label'])}*: {escape(f['baseline_response'])}",
                     f"*{escape(f['candidate_label'])}*: {escape(f['candidate_response'])}"]
                    + ([escape(human_cell(f))] if labelled else []) for f in chosen])
                lines.append("")
        lines += _checks(obj.cand, "Threshold checks recorded in the candidate run")
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(obj: Comparison | RunSummary, path, *, with_plots: bool = True) -> Path:
    """Write the Markdown file and its plots (``<stem>.<slug>.png`` beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = {}
    for slug, _caption, png in plots(obj) if with_plots else []:
        image = path.with_name(f"{path.stem}.{slug}.png")
        image.write_bytes(png)
        images[slug] = image.name
    path.write_text(render_markdown(obj, images), encoding="utf-8")
    return path
