"""`summary` and `compare`: read finished Parquet reports."""

from __future__ import annotations

import importlib
from pathlib import Path

from harness.cli.registry import command
from harness.core.errors import HarnessError


@command("summary", help="print the per-suite summary of a Parquet report (and write it as HTML or Markdown), with "
                          "the rates verified by people's labels where the label store holds some")
def _summary_args(p):
    from harness.cli.labels import add_store_args

    p.add_argument("report", type=Path, help="a Parquet report written by a run (--report, or reports/runs/)")
    p.add_argument("--html", type=Path, default=None, help="write a self-contained HTML summary here")
    p.add_argument("--markdown", type=Path, default=None, help="write a Markdown summary here (plots beside it)")
    add_store_args(p)


def existing_store(args, settings=None):
    """The label store the settings name (--labels, TOML ``labels``, else the one beside the cache), or None
    when that file does not exist: reading a report never creates a store. ``settings``: those already read
    (``harness.cli.labels.store_settings``)."""
    from harness.cli.labels import store_location
    from harness.labels import LabelStore

    path = store_location(args, settings)
    if not path.is_file():
        if args.labels is not None:
            raise HarnessError(f"label store {path} not found (label a report's replies into it with: "
                               f"safety-harness review REPORT --labels {path})")
        return None
    return LabelStore(path)


def with_todays_labels(report: Path, meta: dict, store) -> dict:
    """``meta`` with every check's verified rate recomputed from the labels the store holds now (a report
    records those it had when it ran), and the verdict of a check held against a verified rate with it."""
    import copy

    from harness.engine.verification import rows_from_report, verified_checks
    from harness.engine.verify_rows import thresholds_from_metadata

    rows = rows_from_report(report)
    labels = store.labels({r.key for r in rows})
    meta = copy.deepcopy(meta)
    # Every check of the run (the suites' and the categories' it held) over one set of strata, as the run and
    # review count them; a check held against the verified bound passes or fails on it, every other on the estimate.
    thresholds = thresholds_from_metadata(meta, f"report {report}")
    found = {(v.suite, v.category, v.key, kind): v for kind in ("verified", "verified_bound")
             for v in verified_checks(rows, labels, thresholds, on=kind)}
    for suite, category, checks in _recorded_checks(meta.get("suites") or {}):
        for c in checks:
            kind = "verified_bound" if c.get("threshold_on") == "verified_bound" else "verified"
            v = found.get((suite, category, c["key"], kind))
            if v is None:
                continue
            c["verified"] = {"estimate": v.estimate, "low": v.low, "high": v.high, "n_labelled": v.n_labelled,
                             "N": v.N, "decided": v.decided}
            if str(c.get("threshold_on", "")).startswith("verified"):
                c["passed"] = bool(v.passed and v.n_labelled > 0)
    meta["labels"] = {"store": str(store.path), "labelled_rows": sum(r.key in labels for r in rows)}
    return meta


def _recorded_checks(suites: dict):
    """(suite, category or None, its check records) for each suite's checks and each held category's."""
    for suite, info in sorted(suites.items()):
        yield suite, None, (info or {}).get("checks") or []
        for category, checks in sorted(((info or {}).get("category_checks") or {}).items()):
            yield suite, category, checks or []


def _require_check_fields(report: Path, suites: dict) -> None:
    """One line naming the report, suite and field when a recorded check lacks what the table shows (a report
    written by hand or by another tool), instead of a traceback halfway through the table."""
    from harness.scoring.check_summary import CHECK_FIELDS

    for suite, category, checks in _recorded_checks(suites):
        for check in checks:
            missing = [f for f in CHECK_FIELDS if f not in check]
            if missing:
                suite = suite if category is None else f"{suite}[{category}]"
                raise HarnessError(f"{report}: suite {suite}: check {check.get('key', '?')} in the report's metadata "
                                   f"lacks {', '.join(missing)} (was it written by safety-harness?)")


@_summary_args.run
def _summary(args) -> int:
    from harness.baselines.compare import load_report, summarize_run
    from harness.scoring import check_summary
    from harness.core.report_file import read_run_report
    from harness.core.text import format_table
    from harness.reports.html import skipped_lines

    read_run_report(args.report)  # a missing file, or one without the run's metadata: its one line
    report = load_report(args.report, "the")  # its messages say "<role> report NAME": "the report NAME ..."
    store = existing_store(args)
    if store is not None:
        report.meta = with_todays_labels(args.report, report.meta, store)
    meta = report.meta
    suites = meta.get("suites") or {}
    _require_check_fields(args.report, suites)
    # The same table and notes as the terminal summary of the run (harness.scoring.check_summary).
    # With each suite's rows, those of the categories it held checks of (its SUITE[CATEGORY] test items).
    for line in format_table(check_summary.columns(suites), check_summary.table_rows(suites, categories=True)):
        print(line)
    for line in check_summary.default_threshold_lines(suites) + check_summary.judge_error_lines(suites):
        print(line)
    model = meta.get("model", {})
    if any(info.get("checks") for info in suites.values()):
        for line in check_summary.notes(suites, model, meta.get("labels"), report=str(args.report)):
            print(line)
    # Then, as the run's own summary: the capability statistics and the selected suites it skipped (without
    # them a summary of the suites that ran reads as the whole selection).
    run = summarize_run(report)
    for line in check_summary.capability_lines(suites) + skipped_lines(run):
        print(line)
    from harness.engine.summary import recorded_time_line

    timing = recorded_time_line(meta)  # absent from reports written before the run's phases were timed
    if timing:
        print(timing)
    print(f"{report.table.num_rows} rows; model {model.get('model')}; run {meta.get('run_id')}")
    if args.html or args.markdown:
        from harness.reports.summary import write_run_summaries

        for line in write_run_summaries(run, html=args.html, markdown=args.markdown):
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
    p.add_argument("--max-regression", type=float, default=None,
                   help="tolerated rise of a suite's failure rate (default: the project's [tool.safety-harness.gate] "
                        "rules, as --baseline-compare reads them, else 0.02)")
    p.add_argument("--alpha", type=float, default=None,
                   help="significance level of the McNemar test (default: the project's gate rules, else 0.05)")
    p.add_argument("--max-failure-rate", type=float, default=None,
                   help="also fail a suite whose candidate failure rate exceeds this (default: the project's gate "
                        "rules, else none)")
    p.add_argument("--threshold-on", choices=("estimate", "bound", "point", "upper"), default=None,
                   help="check --max-failure-rate on the observed rate (estimate) or the upper end of its 95%% interval "
                        "(bound); point and upper are the earlier spellings (default: the project's gate rules, else "
                        "estimate)")
    p.add_argument("--gate-categories", action="store_true",
                   help="let each category fail the gate too (default: suites only)")
    p.add_argument("--all-categories", action="store_true", help="print every category, not only those that changed")
    p.add_argument("--error-rates", type=Path, default=None,
                   help="the scorer's error rates measured on the baseline model's own labelled replies (safety-harness "
                        "calibrate fit), for the minimum detectable regression (default: those the baseline run used)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="compare the shared prompts even if prompts, template, sampling or scorer differ")
    from harness.cli.labels import add_store_args

    add_store_args(p)  # --labels: a pair whose two replies people labelled counts by their labels


@_compare_args.run
def _compare(args) -> int:
    from harness.baselines.compare import compare_reports, load_report, only_suites, scored_suites
    from harness.baselines.comparison_text import comparison_lines
    from harness.baselines.flips import row_key
    from harness.cli.labels import store_settings

    levels = ("suite", "category") if args.gate_categories else ("suite",)
    base, cand = load_report(args.baseline, "baseline"), load_report(args.candidate, "candidate")
    scored = scored_suites(base) | scored_suites(cand)  # as the pytest gate: no invariance rows
    base, cand = only_suites(base, scored), only_suites(cand, scored)
    settings = store_settings(args)  # one read of the project's TOML: its gate rules and its label store
    rule, source = gate_rules(settings, args, {suite for rep in (base, cand) for suite, _ in rep.rows})
    if source:
        print(f"gate rules: {source}")
    store = existing_store(args, settings)
    labels = {} if store is None else store.labels({row_key(r) for rep in (base, cand) for r in rep.rows.values()})
    comparison = compare_reports(base, cand, rules=rule, allow_mismatch=args.allow_mismatch,
                                 gate_levels=levels, error_rates=args.error_rates, labels=labels)
    review = f"safety-harness review {args.candidate} --baseline {args.baseline}"
    for line in comparison_lines(comparison, all_categories=args.all_categories, review=review):
        print(line)
    for option, path, module, writer in (("--flips", args.flips, "harness.baselines.compare", "write_flips"),
                                         ("--html", args.html, "harness.reports.html", "write_html"),
                                         ("--markdown", args.markdown, "harness.reports.markdown", "write_markdown")):
        if path is None:
            continue
        write = getattr(importlib.import_module(module), writer)  # imported only when asked for: plots are slow
        try:
            print(f"{option[2:]}: {write(comparison, path)}")
        except OSError as exc:  # pyarrow's errors name no file: the option and its path do
            why = exc.strerror or " ".join(str(exc).split())
            raise HarnessError(f"cannot write {option} {exc.filename or path}: {why}") from None
    return 0 if comparison.passed else 1


GATE_OPTIONS = ("max_regression", "alpha", "max_failure_rate", "threshold_on")


def gate_rules(settings, args, suites) -> tuple:
    """The rules ``compare`` gates by, and where they came from (None: the defaults). The project's
    ``[tool.safety-harness.gate]`` tables (``settings``, ``harness.cli.labels.store_settings``) are the ones
    ``--baseline-compare`` reads: without them, the same two reports could pass one and fail the other. An
    option given on the command line wins over them, for every suite."""
    from dataclasses import replace

    from harness.baselines.store import build_rules
    from harness.config.gate import GateRule

    given = {k: getattr(args, k) for k in GATE_OPTIONS if getattr(args, k) is not None}
    if not settings.gate:
        return GateRule(**given), None
    rules = {key: replace(rule, **given) for key, rule in build_rules(settings.gate, sorted(suites)).items()}
    tables = ", ".join(dict.fromkeys(str(src) for src in settings.sources)) or "[tool.safety-harness.gate]"
    return rules, f"[tool.safety-harness.gate] of {tables}" + (
        f", with {', '.join('--' + k.replace('_', '-') for k in given)} from the command line" if given else "")
