"""`summary` and `compare`: read finished Parquet reports."""

from __future__ import annotations

from pathlib import Path

from harness.cli.registry import command
from harness.core.errors import HarnessError


@command("summary", help="print the per-suite summary of a Parquet report (and write it as HTML or Markdown)")
def _summary_args(p):
    p.add_argument("report", type=Path, help="a Parquet report written by a run (--report, or reports/runs/)")
    p.add_argument("--html", type=Path, default=None, help="write a self-contained HTML summary here")
    p.add_argument("--markdown", type=Path, default=None, help="write a Markdown summary here (plots beside it)")


@_summary_args.run
def _summary(args) -> int:
    from harness.core.misclassification import CorrectedRate
    from harness.core.report_file import read_run_report
    from harness.core.text import format_table
    from harness.engine.summary import JUDGE_ERROR_COLUMN, SUMMARY_COLUMNS, THRESHOLD_ON_MEANING
    from harness.reports.html import judge_error_lines
    from harness.scoring.error_rates import correction_lines

    table, meta = read_run_report(args.report)
    rows, on = [], set()
    suites = sorted(meta.get("suites", {}).items())
    with_errors = any(info.get("judge_errors") for _, info in suites)
    for suite, info in suites:
        for c in info["checks"]:
            bound, _, metric = c["key"].partition("_")
            corrected = CorrectedRate.from_dict(c.get("corrected"))
            errors = (str(c.get("judge_errors", c.get("judge_error_excluded", 0))),) if with_errors else ()
            rows.append((suite, str(c["n"]), *errors, metric, f"{c['rate']:.3f}",
                         f"{c['ci_low']:.3f}-{c['ci_high']:.3f}", "-" if corrected is None else corrected.text(),
                         f"{bound} {c['threshold']:g}" + (" (default)" if c.get("default") else ""),
                         "PASS" if c["passed"] else "FAIL"))
            on.add(c.get("threshold_on", "estimate"))
    # The same columns and notes as the terminal summary of the run (harness.engine.summary).
    columns = SUMMARY_COLUMNS[:2] + (JUDGE_ERROR_COLUMN,) + SUMMARY_COLUMNS[2:] if with_errors else SUMMARY_COLUMNS
    for line in format_table(columns, rows):
        print(line)
    for line in judge_error_lines(meta):
        print(line)
    model = meta.get("model", {})
    if rows:
        print("thresholds checked on: " + ", ".join(f"{THRESHOLD_ON_MEANING.get(o, o)} (threshold_on = {o})" for o in sorted(on)))
        for line in correction_lines(model.get("scorer_error_rates"), model.get("scorer"), model.get("scorer_version")):
            print(line)
    print(f"{table.num_rows} rows; model {model.get('model')}; run {meta.get('run_id')}")
    if args.html or args.markdown:
        from harness.reports.summary import write_run_summaries

        for line in write_run_summaries(args.report, html=args.html, markdown=args.markdown):
            print(line)
    return 0


@command("compare", help="compare a candidate report with a baseline: paired statistics and flips; "
                          "exit 0 (no significant regression), 1 (regression) or 2 (unusable input)")
def _compare_args(p):
    p.add_argument("baseline", type=Path, help="the baseline report (Parquet, from --report)")
    p.add_argument("candidate", type=Path, help="the candidate report, on the same prompts")
    p.add_argument("--html", type=Path, default=None, help="write a self-contained HTML summary here")
    p.add_argument("--markdown", type=Path, default=None, help="write a Markdown summary here (plots beside it)")
    p.add_argument("--flips", type=Path, default=None, help="write the prompts whose outcome changed (Parquet)")
    p.add_argument("--max-regression", type=float, default=0.02,
                   help="tolerated rise of a suite's failure rate (default 0.02)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the McNemar test (default 0.05)")
    p.add_argument("--max-failure-rate", type=float, default=None,
                   help="also fail a suite whose candidate failure rate exceeds this")
    p.add_argument("--threshold-on", choices=("estimate", "bound", "point", "upper"), default="estimate",
                   help="check --max-failure-rate on the observed rate (estimate) or the upper end of its 95%% interval "
                        "(bound); point and upper are the earlier spellings")
    p.add_argument("--gate-categories", action="store_true",
                   help="let each category fail the gate too (default: suites only)")
    p.add_argument("--all-categories", action="store_true", help="print every category, not only those that changed")
    p.add_argument("--error-rates", type=Path, default=None,
                   help="the scorer's error rates measured on the baseline model's own labelled replies (safety-harness "
                        "calibrate fit), for the minimum detectable regression (default: those the baseline run used)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="compare the shared prompts even if prompts, template, sampling or scorer differ")


@_compare_args.run
def _compare(args) -> int:
    from harness.config.gate import GateRule
    from harness.baselines.compare import compare_reports, write_flips
    from harness.baselines.comparison_text import comparison_lines

    rule = GateRule(max_regression=args.max_regression, alpha=args.alpha, max_failure_rate=args.max_failure_rate,
                    threshold_on=args.threshold_on)
    levels = ("suite", "category") if args.gate_categories else ("suite",)
    comparison = compare_reports(args.baseline, args.candidate, rules=rule, allow_mismatch=args.allow_mismatch,
                                 gate_levels=levels, error_rates=args.error_rates)
    for line in comparison_lines(comparison, all_categories=args.all_categories):
        print(line)
    try:
        if args.flips:
            print(f"flips: {write_flips(comparison, args.flips)}")
        if args.html:
            from harness.reports.html import write_html

            print(f"html: {write_html(comparison, args.html)}")
        if args.markdown:
            from harness.reports.markdown import write_markdown

            print(f"markdown: {write_markdown(comparison, args.markdown)}")
    except OSError as exc:
        raise HarnessError(f"cannot write {exc.filename or 'output'}: {exc.strerror or exc}") from None
    return 0 if comparison.passed else 1
