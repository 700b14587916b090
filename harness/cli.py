"""``safety-harness`` command line. Subcommands register with ``@command``; later tools (score,
compare, train) add theirs the same way. User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from harness.core.errors import HarnessError

_COMMANDS: dict[str, tuple[Callable, Callable, str]] = {}


def command(name: str, help: str):
    """Register ``configure(parser)`` as the arguments of subcommand ``name``; its ``run`` is attached."""

    def wrap(configure):
        def attach(run):
            _COMMANDS[name] = (configure, run, help)
            return run

        configure.run = attach
        return configure

    return wrap


@command("prepare", help="prepare a model alias (e.g. the embedded default) and print its folder and fingerprint")
def _prepare_args(p):
    p.add_argument("model", nargs="?", default=None, help="alias, model folder or adapter folder")
    p.add_argument("--base-model", default=None)
    p.add_argument("--cache-dir", type=Path, default=None)


@_prepare_args.run
def _prepare(args) -> int:
    from harness.models.resolve import DEFAULT_MODEL, resolve_model
    from harness.config.settings import default_cache_dir

    model = resolve_model(args.model or DEFAULT_MODEL, base_model=args.base_model,
                          cache_dir=args.cache_dir or default_cache_dir())
    print(f"{model.name}: {model.path}" + (f" + adapter {model.adapter_path}" if model.adapter_path else ""))
    print(f"fingerprint {model.fingerprint}")
    return 0


@command("suites", help="list the built-in suites, their sizes and default thresholds")
def _suites_args(p):
    p.add_argument("--data-dir", type=Path, default=None)


@_suites_args.run
def _suites(args) -> int:
    import os

    from harness.config.settings import RunSettings
    from harness.data.suites import SuiteDataMissing, all_suites

    data_dir = args.data_dir or (Path(os.environ["SAFETY_HARNESS_DATA"]) if "SAFETY_HARNESS_DATA" in os.environ else None)
    for name, spec in sorted(all_suites().items()):
        try:
            size = f"{len(spec.load(data_dir))} prompts"
        except SuiteDataMissing as exc:
            size = f"data missing ({exc})"
        thresholds = ", ".join(f"{k}={v:g}" for k, v in sorted(spec.thresholds.items()))
        print(f"{name:24} {size:14} {thresholds}\n    {spec.description}")
    print(f"refusal scorer by default: {RunSettings().scorer} (--scorer; agreement on unseen models: docs/experiments/refusal-scorer-protocol.md)")
    return 0


@command("summary", help="print the per-suite summary of a Parquet report (and write it as HTML or Markdown)")
def _summary_args(p):
    p.add_argument("report", type=Path)
    p.add_argument("--html", type=Path, default=None, help="write a self-contained HTML summary here")
    p.add_argument("--markdown", type=Path, default=None, help="write a Markdown summary here (plots beside it)")


@_summary_args.run
def _summary(args) -> int:
    from harness.reports.parquet import read_report
    from harness.reports.summary import format_table

    if not args.report.is_file():
        raise HarnessError(f"report {args.report} not found")
    table, meta = read_report(args.report)
    rows = []
    for suite, info in sorted(meta.get("suites", {}).items()):
        for c in info["checks"]:
            rows.append((suite, str(c["n"]), c["key"], f"{c['rate']:.3f}", f"{c['ci_low']:.3f}-{c['ci_high']:.3f}",
                         f"{c['threshold']:g}", "PASS" if c["passed"] else "FAIL"))
    for line in format_table(("suite", "n", "threshold", "rate", "95% CI", "bound", "verdict"), rows):
        print(line)
    print(f"{table.num_rows} rows; model {meta.get('model', {}).get('model')}; run {meta.get('run_id')}")
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
    p.add_argument("--threshold-on", choices=("point", "upper"), default="point",
                   help="check --max-failure-rate on the observed rate or the upper end of its 95%% interval")
    p.add_argument("--gate-categories", action="store_true",
                   help="let each category fail the gate too (default: suites only)")
    p.add_argument("--all-categories", action="store_true", help="print every category, not only those that changed")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="compare the shared prompts even if prompts, template, sampling or scorer differ")


@_compare_args.run
def _compare(args) -> int:
    from harness.baselines.stats import GateRule
    from harness.baselines.compare import comparison_lines, compare_reports, write_flips

    rule = GateRule(max_regression=args.max_regression, alpha=args.alpha, max_failure_rate=args.max_failure_rate,
                    threshold_on=args.threshold_on)
    levels = ("suite", "category") if args.gate_categories else ("suite",)
    comparison = compare_reports(args.baseline, args.candidate, rules=rule, allow_mismatch=args.allow_mismatch,
                                 gate_levels=levels)
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


from harness import score_cli  # noqa: E402,F401  registers `score` (needs `command` above)
import harness.cli.train  # noqa: E402,F401  registers `train` (after `command` exists: it imports it)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safety-harness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (configure, run, help_text) in sorted(_COMMANDS.items()):
        p = sub.add_parser(name, help=help_text)
        configure(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HarnessError as exc:
        print(f"safety-harness: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Under `python -m harness.cli.main` this file is __main__, but command modules register into the importable
    # harness.cli.main, so run that one's main.
    from harness.cli.main import main as _registered_main

    sys.exit(_registered_main())
