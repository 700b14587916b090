"""One self-contained HTML file summarising a comparison (``harness.baselines.compare.Comparison``) or a single run
(``harness.baselines.compare.RunSummary``): inline CSS, plots embedded as base64 PNG, every text from the
reports escaped. The data helpers and plots here are shared with ``harness.reports.markdown``."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

from harness.baselines.stats import Interval
from harness.scoring import check_summary
from harness.core.records import JUDGE_ERROR, is_refusal
from harness.baselines.compare import Comparison, Report, RunSummary

XSTEST = "xstest"
BASE_COLOR, CAND_COLOR = "#8c96a8", "#d9603b"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1f2328;max-width:1400px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
table{border-collapse:collapse;font-size:12px;margin:6px 0}th,td{border:1px solid #d0d7de;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.metric td:first-child{padding-left:22px}.wide{overflow-x:auto}
tr.suite td{font-weight:600}h3{font-size:14px;margin:14px 0 4px}tr.all td{font-weight:700;background:#f6f8fa}
.banner{padding:10px 14px;border-radius:6px;font-weight:600;margin:10px 0}
.pass{background:#dafbe1;color:#116329;border:1px solid #4ac26b}.fail{background:#ffebe9;color:#a40e26;border:1px solid #ff8182}
.warn{background:#fff8c5;color:#7d4e00;border:1px solid #d4a72c}
.warnline{color:#7d4e00}ul.notes{font-size:12px}
.bad{color:#a40e26;font-weight:700}.good{color:#116329;font-weight:600}
.resp{white-space:pre-wrap;max-height:220px;overflow:auto;font-family:ui-monospace,Menlo,monospace;font-size:12px;
max-width:420px}img{max-width:100%;border:1px solid #d0d7de;margin:6px 0}.muted{color:#656d76;font-size:12px}
"""


def fmt_rate(rate: Interval | None) -> str:
    if rate is None or math.isnan(rate.estimate):
        return "-"
    return f"{rate.estimate:.3f} ({rate.low:.3f}-{rate.high:.3f})"


def fmt_shift(shift: Interval | None) -> str:
    return "-" if shift is None else f"{shift.estimate:+.3f} [{shift.low:+.2f}, {shift.high:+.2f}]"


def rate_rows(obj: Comparison | RunSummary) -> list[dict]:
    """Uniform rows for the rate tables: name, level, n, base (None for a single run), cand, and for a
    comparison the flips, p-values, score shift and verdict."""
    rows = []
    if isinstance(obj, RunSummary):
        for g in obj.groups:
            rows.append({"name": g.name, "level": g.level, "n": g.n, "base": None, "cand": g.rate,
                         "failures": g.failures, "judge_errors": g.judge_errors})
        return rows
    for g in obj.groups:
        s = g.stats
        rows.append({"name": g.name, "level": g.level, "n": s.n, "base": s.base, "cand": s.cand, "delta": s.delta,
                     "regressions": s.test.regressions, "improvements": s.test.improvements,
                     "p_regression": s.test.p_regression, "p_two_sided": s.test.p_two_sided,
                     "shift": s.score_shift, "verdict": s.verdict, "failed": g.gated and s.failed,
                     "gated": g.gated})
    return rows


def _refused(row: dict) -> bool:
    label = row.get("refusal_label")
    if label == JUDGE_ERROR:  # fails closed, as in the gates: a refusal of a safe prompt, an answer to an unsafe one
        return row.get("expected") == "comply"
    if label is not None:
        return is_refusal(label)
    return bool(row["passed"]) == (row.get("expected") == "refuse")


def failures_text(row: dict) -> str:
    """A run group's failure count, with how many of them are judge_error rows."""
    errors = row.get("judge_errors") or 0
    return f"{row['failures']}" + (f" ({errors} {JUDGE_ERROR})" if errors else "")


def check_rows(report: Report) -> list[dict]:
    """The threshold checks a run recorded in its metadata, as text cells: suite, threshold (marked when a
    default), k/n (n=N for a statistic), judge_error count, rate (95% CI), corrected (95% CI, or the undecidable text), verified
    (95% CI; n labelled of N), verdict (``harness.scoring.check_summary`` writes the cells)."""
    return [_check_cells(suite, c, gated=check_summary.is_gated(info))
            for suite, info in sorted((report.meta.get("suites") or {}).items()) for c in info.get("checks", [])]


def category_check_rows(report: Report) -> list[dict]:
    """The checks of the categories each suite held (its ``SUITE[CATEGORY]`` test items, ``category_checks``),
    suite by suite and category by category as the terminal's ``summary`` lists them: the cells of
    ``check_rows`` and the category. The labels line counts them among the thresholds decided."""
    return [{**_check_cells(suite, c), "category": category}
            for suite, info in sorted((report.meta.get("suites") or {}).items())
            for category, checks in sorted((info.get("category_checks") or {}).items()) for c in checks or []]


def _check_cells(suite: str, c: dict, gated: bool = True) -> dict:
    """``gated``: a selected test held the check (a category's checks are recorded only for the items held)."""
    return {"suite": suite, "key": c["key"] + (" (default)" if c.get("default") else ""),
            "kn": check_summary.count_text(c), "judge_errors": c.get("judge_errors", c.get("judge_error_excluded", 0)),
            "rate": f"{check_summary.rate_text(c)} ({check_summary.interval_text(c)})",
            "corrected": check_summary.corrected_text(c), "verified": check_summary.verified_text(c),
            "threshold": f"{c['threshold']:g}", "passed": c["passed"], "gated": gated}


def check_notes(report: Report) -> list[str]:
    """The lines the terminal prints under its table: which rate was checked, the rates behind the corrected
    column, too-tight thresholds, undecidable corrections, people's labels; then the judge_error rows and the
    capability statistics."""
    meta, suites = report.meta, report.meta.get("suites") or {}
    if not any(info.get("checks") for info in suites.values()):
        return []
    return (check_summary.default_threshold_lines(suites)
            + check_summary.notes(suites, meta.get("model"), meta.get("labels"), report=report.name)
            + check_summary.judge_error_lines(suites) + check_summary.capability_lines(suites))


def with_labels(report: Report) -> bool:
    return check_summary.has_labels(report.meta.get("suites") or {})


def skipped_lines(obj) -> list[str]:
    """The selected suites a run skipped for missing data (``--allow-missing-data``), with the reason, as the
    terminal summary prints them: without them a summary of the suites that ran reads as the whole selection."""
    runs = _runs(obj)
    return [(f"{role}: " if len(runs) > 1 else "") + f"{name}: skipped, {why}"
            for role, report in runs for name, why in sorted((report.meta.get("missing_suites") or {}).items())]


def xstest_rows(report: Report, keys=None) -> list[tuple[str, str, int, int]]:
    """XSTest refusal counts by prompt type: (type, expected, refusals, n), safe types first."""
    from collections import defaultdict

    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for key, row in report.rows.items():
        if key[0] != XSTEST or (keys is not None and key not in keys):
            continue
        c = counts[(row.get("category") or "", row.get("expected") or "")]
        c[0] += _refused(row)
        c[1] += 1
    return [(cat, exp, k, n) for (cat, exp), (k, n) in sorted(counts.items(), key=lambda i: (i[0][1] != "comply", i[0][0]))]


def _runs(obj) -> list[tuple[str, Report]]:
    return [("baseline", obj.base), ("candidate", obj.cand)] if isinstance(obj, Comparison) else [("run", obj.report)]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _bars(title: str, xlabel: str, labels: list[str], series: list[tuple[str, str, list[Interval]]]) -> bytes:
    """Horizontal bars with interval whiskers, one bar per series for each label."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 1.2 + 0.32 * len(labels) * len(series)))
    ax = fig.subplots()
    height = 0.8 / len(series)
    for i, (name, color, rates) in enumerate(series):
        ys = [j + i * height for j in range(len(labels))]  # first series on top (the y axis is inverted)
        xs = [0 if math.isnan(r.estimate) else r.estimate for r in rates]
        err = [[max(x - r.low, 0) if not math.isnan(r.low) else 0 for x, r in zip(xs, rates)],
               [max(r.high - x, 0) if not math.isnan(r.high) else 0 for x, r in zip(xs, rates)]]
        ax.barh(ys, xs, height=height * 0.9, color=color, label=name, xerr=err, capsize=3,
                error_kw={"ecolor": "#333", "lw": 1})
        ax.plot(xs, ys, "o", color=color, markeredgecolor="#333", markersize=4, lw=0)  # a rate of 0 shows too
    # Names are the user's text (suites, categories): "$...$" in one is no mathtext (parse_math), nor a crash
    ax.set_yticks([j + (len(series) - 1) * height / 2 for j in range(len(labels))], labels, parse_math=False)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _png(fig)


def _changes(rows: list[dict]) -> bytes:
    """Baseline -> candidate failure rate for the categories that changed most (dumbbells), or for the suites
    when no category changed: red where the candidate fails more often, green where less."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 1.2 + 0.3 * len(rows)))
    ax = fig.subplots()
    for y, r in enumerate(rows):
        b, c = r["base"].estimate, r["cand"].estimate
        color = "#a40e26" if c > b else ("#116329" if c < b else "#8c96a8")
        ax.annotate("", xy=(c, y), xytext=(b, y), arrowprops={"arrowstyle": "->", "color": color, "lw": 1.6})
        ax.plot([b], [y], "o", color=BASE_COLOR, markeredgecolor="#333", markersize=6)
        ax.plot([c], [y], "o", color=CAND_COLOR, markeredgecolor="#333", markersize=6)
        stars = "*" if r["p_two_sided"] < 0.05 else ""
        ax.text(1.03, y, f"{c - b:+.2f}{stars} (n={r['n']})", va="center", fontsize=8, color=color)
    ax.set_yticks(range(len(rows)), [r["name"] for r in rows], parse_math=False)  # user's text: as in _bars
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("failure rate: baseline (grey) -> candidate (orange)")
    ax.set_title("Baseline vs candidate: what moved", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def plots(obj: Comparison | RunSummary) -> list[tuple[str, str, bytes]]:
    """(slug, caption, PNG bytes) of the rates plot and, when XSTest ran, the XSTest plot; empty without
    matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return []
    from harness.core.stats import wilson_interval

    runs = _runs(obj)
    colors = {"baseline": BASE_COLOR, "candidate": CAND_COLOR, "run": CAND_COLOR}
    suites = [r for r in rate_rows(obj) if r["level"] == "suite"]
    series = [("baseline", BASE_COLOR, [r["base"] for r in suites])] if isinstance(obj, Comparison) else []
    series.append((runs[-1][0], colors[runs[-1][0]], [r["cand"] for r in suites]))
    # every interval drawn names its n: a whisker over 3 prompts and one over 300 look alike otherwise
    out = [("rates", "Failure rate by suite (bars) with 95% Wilson intervals (whiskers)",
            _bars("Failure rate by suite", "failure rate (share of prompts not passed)",
                  [f"{r['name']} (n={r['n']})" for r in suites], series))]
    if isinstance(obj, Comparison):
        rows = rate_rows(obj)
        moved = sorted((r for r in rows if r["level"] == "category" and r["delta"]), key=lambda r: -abs(r["delta"]))
        shown = moved[:20] or [r for r in rows if r["level"] == "suite"]
        out.append(("changes", "Failure rate in the baseline and in the candidate, for the categories that changed "
                    f"({len(moved)}; the 20 largest shown), else for every suite. * two-sided McNemar p < 0.05",
                    _changes(shown)))
    keys = {k for k in obj.base.rows if k in obj.cand.rows} if isinstance(obj, Comparison) else None
    per_run = [(name, xstest_rows(report, keys)) for name, report in runs]
    if per_run[0][1]:
        labels = [f"{cat} ({'safe' if exp == 'comply' else 'unsafe'}, n={n})" for cat, exp, _, n in per_run[0][1]]
        series = [(name, colors[name], [Interval(k / n, *wilson_interval(k, n)) for _, _, k, n in rows])
                  for name, rows in per_run]
        out.append(("xstest", "XSTest refusal rate by prompt type: refusing a safe type is over-refusal, "
                    "refusing an unsafe (contrast) type is wanted",
                    _bars("XSTest refusal rate by type", "refusal rate (full or partial)", labels, series)))
    return out


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _run_info(obj) -> str:
    cells = []
    for role, report in _runs(obj):
        m, meta = report.model, report.meta
        sampling = ", ".join(_e(v) for v in report.values("sampling"))
        cells.append(f"<tr><th>{role}</th><td>{_e(report.name)}</td><td>{_e(meta.get('run_id', '-'))}</td>"
                     f"<td>{_e(m.get('model'))}<br><span class=muted>{_e(str(m.get('model_fingerprint') or '')[:16])}"
                     f"</span></td><td>{_e(m.get('backend'))}</td><td>{_e(m.get('template'))}</td>"
                     f"<td>{_e(m.get('scorer'))} v{_e(m.get('scorer_version'))}</td><td class=muted>{sampling}</td>"
                     f"<td class=num>{len(report.rows)}</td></tr>")
    return ("<table><tr><th></th><th>file</th><th>run</th><th>model</th><th>backend</th><th>template</th>"
            "<th>scorer</th><th>sampling</th><th>prompts</th></tr>" + "".join(cells) + "</table>")


def _rates_table(obj, rows: list[dict]) -> str:
    comparison = isinstance(obj, Comparison)
    if comparison:
        head = ("group", "n", "baseline failure rate (95% CI)", "candidate failure rate (95% CI)", "change",
                "regr&shy;essions", "impro&shy;vements", "McNemar p (regr&shy;ession)", "p (two-sided)",
                "refusal score shift [95% bootstrap CI]", "verdict")
    else:
        head = ("group", "n", f"failures (of which {JUDGE_ERROR})", "failure rate (95% CI)")
    mark_ungated = comparison and any(r["gated"] for r in rows)  # else the heading says so once
    out = ["<div class=wide><table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in rows:
        cls = r["level"] if r["level"] != "category" else ""
        # a metric row sits under its suite's row, so its metric alone names it (and keeps the table narrow)
        name = _e(r["name"].partition(":")[2]) if r["level"] == "metric" else _e(r["name"])
        if comparison:
            verdict = _e(r["verdict"]) + (" <span class=muted>(not gated)</span>" if mark_ungated and not r["gated"] else "")
            vcls = "bad" if r["failed"] else ("good" if r["verdict"] == "improved" else "")
            cells = [name, r["n"], fmt_rate(r["base"]), fmt_rate(r["cand"]), f"{r['delta']:+.3f}", r["regressions"],
                     r["improvements"], f"{r['p_regression']:.3g}", f"{r['p_two_sided']:.3g}", fmt_shift(r["shift"])]
            tds = "".join(f"<td class=num>{c}</td>" if i else f"<td>{c}</td>" for i, c in enumerate(cells))
            tds += f"<td class='{vcls} verdict'>{verdict}</td>"
        else:
            tds = (f"<td>{name}</td><td class=num>{r['n']}</td><td class=num>{_e(failures_text(r))}</td>"
                   f"<td class=num>{fmt_rate(r['cand'])}</td>")
        out.append(f"<tr class='{cls}'>{tds}</tr>")
    return "".join(out) + "</table></div>"


def human_cell(flip: dict) -> str:
    """A flip's people's labels, e.g. "confirmed (full_refusal -> full_compliance)"; "-" where none."""
    if not flip.get("human"):
        return "-"
    labels = [flip.get("baseline_human_label"), flip.get("candidate_human_label")]
    return flip["human"] + (f" ({labels[0] or '-'} -> {labels[1] or '-'})" if any(labels) else "")


def _flips_html(obj: Comparison) -> str:
    flips = obj.flips.to_pylist()
    if not flips:
        return "<p>No prompt changed outcome.</p>"
    out = []
    for direction, title in (("regression", "Regressions (passed in the baseline, failed now)"),
                             ("improvement", "Improvements (failed in the baseline, passed now)")):
        chosen = [f for f in flips if f["direction"] == direction]
        if not chosen:
            continue
        labelled = flip_label_text(obj) is not None  # a column of "unlabelled" says nothing
        out.append(f"<h3>{title}: {len(chosen)}</h3><table><tr><th>prompt</th><th>expected</th>"
                   "<th>baseline response</th><th>candidate response</th>"
                   + ("<th>people's labels</th>" if labelled else "") + "</tr>")
        for f in chosen:
            out.append(
                f"<tr><td><b>{_e(f['suite'])}/{_e(f['prompt_id'])}</b> <span class=muted>{_e(f['category'])}</span>"
                f"<div class=resp>{_e(f['prompt'])}</div></td><td>{_e(f['expected'])}</td>"
                f"<td><span class=muted>{_e(f['baseline_label'])}</span><div class=resp>{_e(f['baseline_response'])}</div></td>"
                f"<td><span class=muted>{_e(f['candidate_label'])}</span><div class=resp>{_e(f['candidate_response'])}</div></td>"
                + (f"<td>{_e(human_cell(f))}</td>" if labelled else "") + "</tr>")
        out.append("</table>")
    return "".join(out)


def flip_label_text(obj: Comparison) -> str | None:
    """What people's labels made of the flips, or None when no flip met a label."""
    from harness.baselines.flips import label_counts_text

    counts = obj.flip_labels
    if not any(counts.values()) or counts["unlabelled"] == sum(counts.values()):
        return None
    return f"Flips and people's labels: {label_counts_text(counts)}."


def _flip_labels_html(obj: Comparison) -> str:
    text = flip_label_text(obj)
    return "" if text is None else f"<p>{_e(text)}</p>"


def _check_cells_html(c: dict, labelled: bool) -> str:
    """A check's cells from its threshold on (``check_rows``), in either table."""
    verified = f"<td class=num>{_e(c['verified'])}</td>" if labelled else ""
    cls = "good" if c["passed"] else "bad"
    return (f"<td>{_e(c['key'])}</td><td class=num>{c['kn']}</td><td class=num>{c['judge_errors']}</td>"
            f"<td class=num>{c['rate']}</td><td class=num>{_e(c['corrected'])}</td>{verified}"
            f"<td class=num>{c['threshold']}</td>"
            f"<td class={cls}>{check_summary.verdict_text(c, gated=c['gated'])}</td>")


def _checks_head(labelled: bool, first: str) -> str:
    return (f"<tr>{first}<th>threshold</th><th>k/n</th><th>{JUDGE_ERROR} (counted as failures)</th><th>rate (95% CI)"
            "</th><th>corrected for scorer error (95% CI)</th>"
            + ("<th>verified by people's labels (95% CI; n labelled of N)</th>" if labelled else "")
            + "<th>bound</th><th>verdict</th></tr>")


def _category_checks_html(report: Report, labelled: bool) -> str:
    """The categories' checks in a table of their own under the suites': a row naming each suite, then its
    categories' rows indented under it, so that forty rows stay readable and no wider than the suites' table."""
    rows = category_check_rows(report)
    if not rows:
        return ""
    out, suite = [], None
    for c in rows:
        if c["suite"] != suite:
            suite = c["suite"]
            out.append(f"<tr class=suite><td colspan={8 + labelled}>{_e(suite)}</td></tr>")
        category = _e(c["category"]).replace("_", "_<wbr>")  # a long name may wrap: the table keeps to the page
        out.append(f"<tr class=metric><td>{category}</td>{_check_cells_html(c, labelled)}</tr>")
    return (f"<h3>The categories' checks ({len(rows)}: the SUITE[CATEGORY] test items)</h3><table>"
            + _checks_head(labelled, "<th>suite, category</th>") + "".join(out) + "</table>")


def _checks_html(report: Report, title: str = "Threshold checks recorded in the run") -> str:
    labelled = with_labels(report)
    rows = [f"<tr><td>{_e(c['suite'])}</td>{_check_cells_html(c, labelled)}</tr>" for c in check_rows(report)]
    if not rows:
        return ""
    notes = "".join(f"<li{' class=warnline' if line.startswith('warning') else ''}>{_e(line)}</li>"
                    for line in check_notes(report))
    return (f"<h2>{_e(title)}</h2><table>" + _checks_head(labelled, "<th>suite</th>") + "".join(rows) + "</table>"
            + _category_checks_html(report, labelled) + (f"<ul class=notes>{notes}</ul>" if notes else ""))


def render_html(obj: Comparison | RunSummary) -> str:
    comparison = isinstance(obj, Comparison)
    title = "safety-harness comparison" if comparison else "safety-harness run summary"
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
             f"<style>{CSS}</style></head><body><h1>{title}</h1>"]
    if comparison:
        if obj.passed:
            parts.append("<div class='banner pass'>Gate: PASS: no significant regression beyond the margin</div>")
        else:
            reasons = "".join(f"<li>{_e(g.name)}: {_e(g.stats.reason)}</li>" for g in obj.failures)
            parts.append(f"<div class='banner fail'>Gate: FAIL<ul>{reasons}</ul></div>")
        for w in obj.warnings:
            parts.append(f"<div class='banner warn'>Compared anyway although {_e(w)}</div>")
        for note in obj.notes:
            parts.append(f"<div class='banner warn'>{_e(note)}</div>")
    parts.append(_run_info(obj))
    skipped = skipped_lines(obj)
    if skipped:
        parts.append("<div class='banner warn'>Not run: selected suites skipped for missing data<ul>"
                     + "".join(f"<li>{_e(line)}</li>" for line in skipped) + "</ul></div>")
    parts.append("<p class=muted>Failure = the prompt did not get the expected behaviour (an unsafe request "
                 "answered, or a safe one refused). Intervals are 95% Wilson intervals"
                 + ("; p-values are exact McNemar tests on the prompts whose outcome flipped; the refusal "
                    "score shift is candidate minus baseline with a paired bootstrap interval." if comparison else ".")
                 + "</p>")
    figures = plots(obj)
    parts.append("<h2>Plots</h2>")
    if not figures:
        parts.append("<p class=muted>Plots need matplotlib (pip install matplotlib).</p>")
    for slug, caption, png in figures:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<figure><img alt='{_e(slug)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption class=muted>{_e(caption)}</figcaption></figure>")
    rows = rate_rows(obj)
    parts.append("<h2>Suites</h2>" + _rates_table(obj, [r for r in rows if r["level"] != "category"]))
    categories = [r for r in rows if r["level"] == "category"]
    ungated = comparison and not any(r["gated"] for r in categories)
    parts.append("<h2>Categories</h2>" + ("<p class=muted>Reported, not gated.</p>" if ungated else "")
                 + _rates_table(obj, categories))
    if comparison:
        parts.append("<h2>Flips</h2>" + _flip_labels_html(obj) + _flips_html(obj))
        parts.append(_checks_html(obj.cand, "Threshold checks recorded in the candidate run"))
    else:
        parts.append(_checks_html(obj.report))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(obj: Comparison | RunSummary, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(obj), encoding="utf-8")
    return path

